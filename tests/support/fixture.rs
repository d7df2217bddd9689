//! Paths into the workspace and copies of fixture repositories.
//!
//! Owns: where the workspace, `tests/fixtures/` and the example shop are,
//! and copying a fixture directory into a test's temporary directory (with
//! placeholders such as `__HOOK__` replaced by a port). Knows nothing of
//! the `sluice` binary, so `engine/tests` include it too.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of the crate running the test).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace")
        .to_path_buf()
}

/// `tests/fixtures/<name>` in the workspace.
pub fn fixture(name: &str) -> PathBuf {
    workspace().join("tests/fixtures").join(name)
}

/// The example shop, `examples/shop`.
pub fn shop() -> PathBuf {
    workspace().join("examples/shop")
}

/// A path as `&str`, for argument lists.
pub fn utf8(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A copy of `tests/fixtures/<name>` in a new temporary directory, with
/// `replace` applied as [`copy_replacing`] does: (the temporary directory,
/// which removes everything when dropped; the copy, `<tmp>/repo`).
pub fn temp_copy(name: &str, replace: &[(&str, String)]) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("a temporary directory");
    let repo = root.path().join("repo");
    copy_replacing(&fixture(name), &repo, replace);
    (root, repo)
}

/// Copies the directory `from` into `to` (created), recursively, byte for
/// byte. A `.sluice` directory (a local store or outbox left by a manual
/// run) is not copied: a copy starts without state.
pub fn copy_dir(from: &Path, to: &Path) {
    copy_replacing(from, to, &[]);
}

/// Like [`copy_dir`], with every `(placeholder, value)` replaced in each
/// file that is UTF-8 text (other files are copied as they are).
pub fn copy_replacing(from: &Path, to: &Path, replace: &[(&str, String)]) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("cannot create {}: {e}", to.display()));
    let entries = std::fs::read_dir(from)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.expect("a directory entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().expect("a file type");
        if kind.is_dir() {
            if entry.file_name() != ".sluice" {
                copy_replacing(&src, &dst, replace);
            }
            continue;
        }
        let bytes =
            std::fs::read(&src).unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
        let bytes = match String::from_utf8(bytes) {
            Ok(mut text) if !replace.is_empty() => {
                for (placeholder, value) in replace {
                    text = text.replace(placeholder, value);
                }
                text.into_bytes()
            }
            Ok(text) => text.into_bytes(),
            Err(e) => e.into_bytes(),
        };
        std::fs::write(&dst, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", dst.display()));
    }
}
