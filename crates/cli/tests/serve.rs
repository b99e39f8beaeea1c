//! `myelin serve` as an operator runs it: a real process, real signals, real directories.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use myelin_testkit::binary::{Binary, Process, run_to_end};

/// `myelin <args>` in `cwd` with a clean environment (the test kit's operator command line).
fn myelin(cwd: &Path, args: &[&str]) -> Command {
    Binary::new(env!("CARGO_BIN_EXE_myelin")).command(cwd, args)
}

#[test]
fn opens_every_context_and_stops_cleanly_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().expect("temp dir");
    for signal in ["TERM", "INT"] {
        let mut server = Process::start(myelin(
            dir.path(),
            &["serve", "--data", "store", "--set", "myelin.contexts=default,orders"],
        ));
        server.wait_for("last token", 2);
        server.wait_for("HTTP listening on", 1);
        server.signal(signal);
        let (status, log) = server.finish();
        assert!(status.success(), "exit {status} after SIG{signal}; log:\n{log}");
        assert!(log.contains(&format!("received SIG{signal}")), "{log}");
        assert!(log.contains("context default: closed"), "{log}");
        assert!(log.contains("context orders: closed"), "{log}");
        assert!(log.contains("stopped cleanly"), "{log}");
    }
    assert!(dir.path().join("store/default").is_dir());
    assert!(dir.path().join("store/orders").is_dir());
}

#[test]
fn serve_is_the_default_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Process::start(myelin(dir.path(), &["--data", "d"]));
    server.wait_for("HTTP listening on", 1);
    server.signal("TERM");
    let (status, log) = server.finish();
    assert!(status.success(), "exit {status}; log:\n{log}");
    assert!(log.contains("contexts: default"), "{log}");
}

/// A context that cannot open is reported and left out; the others serve (and close cleanly).
/// tests/damaged_context.rs checks what its callers are told.
#[test]
fn a_context_that_cannot_open_leaves_the_others_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("store")).expect("mkdir");
    // A plain file where the context's directory should be.
    std::fs::write(dir.path().join("store/broken"), b"not a directory").expect("write");
    let mut server = Process::start(myelin(
        dir.path(),
        &["serve", "--data", "store", "--set", "myelin.contexts=default,broken"],
    ));
    server.wait_for("context broken is unavailable: cannot open context broken", 1);
    server.wait_for("HTTP listening on", 1);
    server.signal("TERM");
    let (status, log) = server.finish();
    assert!(status.success(), "exit {status}; log:\n{log}");
    assert!(log.contains("context default: closed"), "{log}");
    assert!(!log.contains("context broken: closed"), "{log}");
    assert_eq!(
        std::fs::read(dir.path().join("store/broken")).expect("still there"),
        b"not a directory",
        "nothing of the broken context is touched"
    );
}

/// Runs `myelin` with only the given arguments (no harness settings) to its end.
fn run_bare(cwd: &Path, args: &[&str]) -> (ExitStatus, String) {
    run_to_end(
        Command::new(env!("CARGO_BIN_EXE_myelin"))
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .stdin(Stdio::null()),
    )
}

#[test]
fn bad_configuration_fails_the_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("axonserver.properties"),
        "# sizes\naxoniq.axonserver.event.segment-size=huge\n",
    )
    .expect("write");
    let (status, log) = run_bare(dir.path(), &["serve"]);
    assert!(!status.success(), "started anyway; log:\n{log}");
    assert!(log.contains("axonserver.properties:2"), "{log}");
    assert!(log.contains("`axoniq.axonserver.event.segment-size`"), "{log}");
    assert!(log.contains("`huge`"), "{log}");

    let empty = tempfile::tempdir().expect("temp dir");
    let (status, log) = run_bare(empty.path(), &["serve", "--set", "myelin.durabilty=fsync"]);
    assert!(!status.success(), "started anyway; log:\n{log}");
    assert!(log.contains("unknown property `myelin.durabilty`"), "{log}");
}

#[test]
fn listens_on_the_logged_ports_and_answers_http() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Process::start(myelin(dir.path(), &["serve", "--data", "d"]));
    server.wait_for("HTTP listening on", 1);
    server.wait_for("gRPC listening on", 1);
    let address = |prefix: &str| {
        let line = server
            .seen()
            .iter()
            .find(|l| l.contains(prefix))
            .expect("logged")
            .clone();
        line.rsplit(' ').next().expect("address").to_string()
    };
    let (http, grpc) = (address("HTTP listening on"), address("gRPC listening on"));
    assert!(
        http.starts_with("127.0.0.1:") && grpc.starts_with("127.0.0.1:"),
        "{http} {grpc}"
    );
    let mut stream = std::net::TcpStream::connect(&http).expect("HTTP port open");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    std::net::TcpStream::connect(&grpc).expect("gRPC port open");
    server.signal("TERM");
    let (status, log) = server.finish();
    assert!(status.success(), "exit {status}; log:\n{log}");
}
