//! The recovery fuzz target, replayed on its committed inputs: every crash the fuzzer found
//! (kept after its fix) and small segment files Myelin wrote, each written as the active
//! segment of a fresh store. The body is the fuzz target's own code, included from
//! `fuzz/src/`; docs/FUZZING.md says how to fuzz.

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/committed.rs"]
mod committed;
#[path = "../../../fuzz/src/recovery.rs"]
mod recovery;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn recovery_inputs() {
    committed::replay(&fuzz_dir(), "recovery", recovery::run);
}

/// The first crash the recovery fuzzer found: a roll marker right after the file header. The
/// "successor" of a segment rolled before its first event has the segment's own name, so the
/// store reopened the same file as active and appended over the marker and the bytes after
/// it. Such a file is refused now, naming the marker's offset, and left as it was.
#[test]
fn a_roll_marker_before_the_first_event_refuses_to_start() {
    for tail in [&[][..], &[0x55; 100][..]] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.events");
        let mut bytes = vec![2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        bytes.extend_from_slice(tail);
        bytes.resize(4096, 0);
        std::fs::write(&path, &bytes).expect("write");
        let config = recovery::config();
        let opened = myelin_store::ContextStore::open(
            "default",
            dir.path().to_path_buf(),
            dir.path().to_path_buf(),
            config.clone(),
            config,
        );
        match opened {
            Err(myelin_store::StoreError::Corrupt { file, offset, reason }) => {
                assert_eq!(file, path);
                assert_eq!(offset, 5);
                assert!(reason.contains("roll marker"), "{reason}");
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("opened a segment rolled before its first event"),
        }
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "the file is left as it was");
    }
}
