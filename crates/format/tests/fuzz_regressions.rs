//! The fuzz targets of this crate's decoders, replayed on their committed inputs: every crash
//! the fuzzers found (kept after its fix) and small seed files Myelin wrote. The bodies are the
//! fuzz targets' own code, included from `fuzz/src/`; docs/FUZZING.md says how to fuzz.

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/bloom_file.rs"]
mod bloom_file;
#[path = "../../../fuzz/src/committed.rs"]
mod committed;
#[path = "../../../fuzz/src/index_file.rs"]
mod index_file;
#[path = "../../../fuzz/src/raft_log.rs"]
mod raft_log;
#[path = "../../../fuzz/src/segment_block.rs"]
mod segment_block;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn segment_block_inputs() {
    committed::replay(&fuzz_dir(), "segment_block", segment_block::run);
}

#[test]
fn index_file_inputs() {
    committed::replay(&fuzz_dir(), "index_file", index_file::run);
}

#[test]
fn bloom_file_inputs() {
    committed::replay(&fuzz_dir(), "bloom_file", bloom_file::run);
}

#[test]
fn raft_log_inputs() {
    committed::replay(&fuzz_dir(), "raft_log", raft_log::run);
}
