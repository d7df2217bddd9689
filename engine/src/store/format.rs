//! The store's format version, in the file `FORMAT` of the store directory
//! (`sluice-store <version>`), written when the store is created and
//! checked every time it is opened.
//!
//! | version | what changed |
//! |---|---|
//! | 1 | sluice 0.1 before the commit log: sled plus `values.<n>.log`, no `FORMAT` file; never crash-atomic |
//! | 2 | the commit log (`log.<n>.seg`, [`super::log`]), a `CHECKPOINT` file, and a version byte in front of every record ([`super::codec`]) |
//!
//! A store of an older version is refused with both versions named (a
//! version 1 store cannot be upgraded: it may hold a torn commit that
//! cannot be told apart from a whole one); a newer one is refused too,
//! since this sluice cannot know what it changed.

use std::path::Path;

use super::log::sync_dir;
use super::Error;

/// The version this sluice writes and reads.
pub const CURRENT: u32 = 2;

const FILE: &str = "FORMAT";
const MAGIC: &str = "sluice-store";

/// Checks the format of the store in `dir`, creating the file for a new
/// store. Returns whether the store is new.
pub fn check_or_create(dir: &Path) -> Result<bool, Error> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let version = text
                .trim()
                .strip_prefix(MAGIC)
                .and_then(|v| v.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    Error::corrupt(
                        &path,
                        format!("expected `{MAGIC} <version>`, found {:?}", clip(&text)),
                    )
                })?;
            if version < CURRENT {
                return Err(older(dir, version));
            }
            if version > CURRENT {
                return Err(Error::Format {
                    path: dir.to_owned(),
                    found: version,
                    expected: CURRENT,
                    advice:
                        "it was written by a newer sluice; run that version (or a newer one) on it",
                });
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let legacy = dir.join("sled").exists()
                || std::fs::read_dir(dir)
                    .map_err(|e| Error::io(dir, "read", e))?
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().starts_with("values."));
            if legacy {
                return Err(older(dir, 1));
            }
            let any = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, "read", e))?
                .filter_map(Result::ok)
                .any(|e| e.file_name() != "LOCK");
            if any {
                return Err(Error::corrupt(
                    dir,
                    "the directory holds files but no FORMAT file: it is not a sluice store (or its FORMAT file was deleted)",
                ));
            }
            let tmp = dir.join("FORMAT.tmp");
            std::fs::write(&tmp, format!("{MAGIC} {CURRENT}\n"))
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .map_err(|e| Error::io(&tmp, "write", e))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, "create", e))?;
            sync_dir(dir)?;
            Ok(true)
        }
        Err(e) => Err(Error::io(&path, "read", e)),
    }
}

fn older(dir: &Path, found: u32) -> Error {
    Error::Format {
        path: dir.to_owned(),
        found,
        expected: CURRENT,
        advice: "it was written by an older sluice and cannot be upgraded in place; keep it for that version, and simulate or deploy again into a new store",
    }
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_current_older_newer_and_garbage() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(check_or_create(dir.path()).expect("new"));
        assert!(!check_or_create(dir.path()).expect("current"));
        std::fs::write(dir.path().join(FILE), "sluice-store 3\n").expect("write");
        let e = check_or_create(dir.path()).expect_err("newer");
        assert!(e.to_string().contains("version 3") && e.to_string().contains("reads version 2"));
        std::fs::write(dir.path().join(FILE), "hello").expect("write");
        let e = check_or_create(dir.path()).expect_err("garbage");
        assert!(e.to_string().contains("FORMAT"), "{e}");

        let old = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(old.path().join("sled")).expect("mkdir");
        std::fs::write(old.path().join("values.0.log"), b"").expect("write");
        let e = check_or_create(old.path()).expect_err("older");
        assert!(e.to_string().contains("version 1"), "{e}");
    }
}
