//! A node's log (its stderr) outlives a failed test: the test's temporary directories are
//! deleted as it unwinds, so the log is copied to a directory that is not, and its path printed.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// How much of the end of a log an assertion message quotes.
const TAIL_BYTES: usize = 16 * 1024;

/// Where failed tests' logs are kept: `<temp>/myelin-test-logs`.
pub fn kept_logs_dir() -> PathBuf {
    std::env::temp_dir().join("myelin-test-logs")
}

/// Copies `log` into [`kept_logs_dir`] under a name no other node uses, prints where, and
/// returns the copy's path (or the original's, when it could not be copied).
pub fn keep(log: &Path, pid: u32) -> PathBuf {
    let dir = kept_logs_dir();
    let stem = log.file_stem().and_then(|s| s.to_str()).unwrap_or("myelin");
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    let kept = dir.join(format!("{stem}-{pid}-{millis}.log"));
    let copied = std::fs::create_dir_all(&dir).and_then(|()| std::fs::copy(log, &kept));
    match copied {
        Ok(_) => {
            eprintln!("myelin (pid {pid}) log kept at {}", kept.display());
            kept
        }
        Err(error) => {
            eprintln!("myelin (pid {pid}) log at {} could not be kept: {error}", log.display());
            log.to_path_buf()
        }
    }
}

/// The last [`TAIL_BYTES`] of a log, or what reading it failed with.
pub fn tail(log: &Path) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let from = bytes.len().saturating_sub(TAIL_BYTES);
            String::from_utf8_lossy(bytes.get(from..).unwrap_or_default()).into_owned()
        }
        Err(error) => format!("(cannot read {}: {error})", log.display()),
    }
}
