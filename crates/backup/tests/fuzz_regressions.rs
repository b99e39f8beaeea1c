//! The backup crate's fuzz targets (manifest, segment scan), replayed on their committed
//! inputs: every crash the fuzzers found (kept after its fix) and small files Myelin wrote.
//! The bodies are the fuzz targets' own code, included from `fuzz/src/`; docs/FUZZING.md says
//! how to fuzz.

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/backup_manifest.rs"]
mod backup_manifest;
#[path = "../../../fuzz/src/backup_scan.rs"]
mod backup_scan;
#[path = "../../../fuzz/src/committed.rs"]
mod committed;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn backup_manifest_inputs() {
    committed::replay(&fuzz_dir(), "backup_manifest", backup_manifest::run);
}

#[test]
fn backup_scan_inputs() {
    committed::replay(&fuzz_dir(), "backup_scan", backup_scan::run);
}
