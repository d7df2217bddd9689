//! A file the user names on the command line (`simulate --events FILE`,
//! `send-events FILE`): checked before any work starts, so a typo in a
//! path gets one sentence naming the path and what is wrong with it, not
//! an OS error code.

use std::path::Path;

/// Why an I/O operation failed, in words: the OS's text without its
/// `(os error N)` suffix, and plain sentences for the common cases.
pub fn reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "no such file or directory".to_owned(),
        K::PermissionDenied => "permission denied".to_owned(),
        K::IsADirectory => "it is a directory".to_owned(),
        _ => {
            let bare = engine::os::reason(e);
            let mut chars = bare.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => bare,
            }
        }
    }
}

/// `Err(message)` when `path` is not a file that can be read: missing, a
/// directory, unreadable. `what` names the file's role (`the events
/// file`). Pipes and devices (`/dev/stdin`, `<(…)`) are accepted.
pub fn check(what: &str, path: &Path) -> Result<(), String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(e) => Err(format!("cannot read {what} `{shown}`: {}", reason(&e))),
        Ok(m) if m.is_dir() => Err(format!(
            "cannot read {what} `{shown}`: it is a directory, not a JSON lines file"
        )),
        Ok(_) => std::fs::File::open(path)
            .map(drop)
            .map_err(|e| format!("cannot read {what} `{shown}`: {}", reason(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named_without_an_os_error_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("events.jsonl");
        let message = check("the events file", &missing).expect_err("missing");
        assert!(
            message.starts_with("cannot read the events file `"),
            "{message}"
        );
        assert!(
            message.ends_with("events.jsonl`: no such file or directory"),
            "{message}"
        );
    }

    #[test]
    fn a_directory_is_not_an_events_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let message = check("the events file", dir.path()).expect_err("a directory");
        assert!(message.contains("it is a directory"), "{message}");
        assert!(!message.contains("os error"), "{message}");
    }

    #[test]
    fn a_regular_file_passes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("events.jsonl");
        std::fs::write(&file, "").expect("write");
        assert_eq!(check("the events file", &file), Ok(()));
    }

    #[test]
    fn other_reasons_lose_their_os_error_code() {
        let e = std::io::Error::from_raw_os_error(98);
        let r = reason(&e);
        assert!(!r.contains("os error"), "{r}");
        assert!(r.starts_with(|c: char| c.is_lowercase()), "{r}");
    }
}
