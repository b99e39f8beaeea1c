//! The committed inputs of a fuzz target: `regressions/<target>/` (every crash found, kept
//! after its fix) and `seeds/<target>/` (small files Myelin wrote). The crates'
//! `tests/fuzz_regressions.rs` include this file and replay them all through the target's body.

use std::path::{Path, PathBuf};

/// Every file under `<fuzz_dir>/regressions/<target>` and `<fuzz_dir>/seeds/<target>`, sorted.
pub fn inputs(fuzz_dir: &Path, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut inputs = Vec::new();
    for section in ["regressions", "seeds"] {
        let dir = fuzz_dir.join(section).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("committed fuzz input reads");
                inputs.push((path, bytes));
            }
        }
    }
    inputs.sort();
    inputs
}

/// Runs `body` on every committed input of `target`; fails naming each input that panics.
pub fn replay(fuzz_dir: &Path, target: &str, body: fn(&[u8])) {
    let inputs = inputs(fuzz_dir, target);
    assert!(
        !inputs.is_empty(),
        "no committed inputs for {target} under {}",
        fuzz_dir.display()
    );
    let failed: Vec<String> = inputs
        .iter()
        .filter(|(_, bytes)| std::panic::catch_unwind(|| body(bytes)).is_err())
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target} fails on {failed:?}");
}
