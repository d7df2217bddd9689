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

/// Checks the format of the store in `dir`. Returns `true` for a new store
/// (an empty directory, or one whose creation was interrupted before its
/// `FORMAT` file was written: nothing can have been committed in it, so
/// what is there is removed). Call [`create`] once the new store is set up.
pub fn check(dir: &Path) -> Result<bool, Error> {
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
            let mut interrupted: Vec<std::path::PathBuf> = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, "read", e))? {
                let entry = entry.map_err(|e| Error::io(dir, "read", e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("values.") {
                    return Err(older(dir, 1));
                }
                let empty_segment = name.starts_with("log.")
                    && entry.metadata().map(|m| m.len() == 0).unwrap_or(false);
                match name.as_str() {
                    "LOCK" => {}
                    "sled" | "CHECKPOINT" | "CHECKPOINT.tmp" | "FORMAT.tmp" | "SECRET" => {
                        interrupted.push(entry.path())
                    }
                    _ if empty_segment => interrupted.push(entry.path()),
                    _ => {
                        return Err(Error::corrupt(
                            dir,
                            format!(
                                "the directory holds `{name}` but no FORMAT file: it is not a sluice store (or its FORMAT file was deleted)"
                            ),
                        ))
                    }
                }
            }
            for p in interrupted {
                if p.ends_with("SECRET") {
                    continue;
                }
                let r = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                r.map_err(|e| Error::io(&p, "remove", e))?;
            }
            Ok(true)
        }
        Err(e) => Err(Error::io(&path, "read", e)),
    }
}

/// Writes the `FORMAT` file of a new store: the last step of creating it.
pub fn create(dir: &Path) -> Result<(), Error> {
    let path = dir.join(FILE);
    let tmp = dir.join("FORMAT.tmp");
    std::fs::write(&tmp, format!("{MAGIC} {CURRENT}\n"))
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .map_err(|e| Error::io(&tmp, "write", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, "create", e))?;
    sync_dir(dir)
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
        assert!(check(dir.path()).expect("new"));
        create(dir.path()).expect("create");
        assert!(!check(dir.path()).expect("current"));
        std::fs::write(dir.path().join(FILE), "sluice-store 3\n").expect("write");
        let e = check(dir.path()).expect_err("newer");
        assert!(e.to_string().contains("version 3") && e.to_string().contains("reads version 2"));
        std::fs::write(dir.path().join(FILE), "hello").expect("write");
        let e = check(dir.path()).expect_err("garbage");
        assert!(e.to_string().contains("FORMAT"), "{e}");

        // A creation cut short (sled and a checkpoint, no FORMAT yet) is
        // made again.
        let cut = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(cut.path().join("sled")).expect("mkdir");
        std::fs::write(cut.path().join("CHECKPOINT"), b"x").expect("write");
        std::fs::write(cut.path().join("log.0.seg"), b"").expect("write");
        assert!(check(cut.path()).expect("interrupted creation"));
        assert!(!cut.path().join("sled").exists());
        // Anything else without FORMAT is not a store.
        std::fs::write(cut.path().join("notes.txt"), b"hello").expect("write");
        let e = check(cut.path()).expect_err("not a store");
        assert!(e.to_string().contains("notes.txt"), "{e}");

        let old = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(old.path().join("sled")).expect("mkdir");
        std::fs::write(old.path().join("values.0.log"), b"").expect("write");
        let e = check(old.path()).expect_err("older");
        assert!(e.to_string().contains("version 1"), "{e}");
    }
}
