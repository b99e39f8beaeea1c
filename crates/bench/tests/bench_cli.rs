//! `myelin-bench` subcommands that need no disk or server, run at tiny sizes: they run and
//! report. Figures are not checked here; they belong in benchmarks.

use std::process::Command;

#[test]
fn validate_reports_a_time_per_event() {
    let output = Command::new(env!("CARGO_BIN_EXE_myelin-bench"))
        .args(["validate", "--events", "2000", "--payload-bytes", "64"])
        .output()
        .expect("runs myelin-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.starts_with("validate_event: ") && stdout.contains(" ns per event of "),
        "{stdout}"
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_myelin-bench"))
        .args(["validate", "--events", "0"])
        .output()
        .expect("runs myelin-bench");
    assert!(!refused.status.success(), "--events 0 is refused");
}
