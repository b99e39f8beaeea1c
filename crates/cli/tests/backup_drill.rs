//! The restore drill, on the real binary: writers append over gRPC while segments roll and
//! incremental backups run; the backup is verified, restored into a fresh directory, served,
//! and compared with the live history — to the end and to a token. Then `verify` must catch
//! each injected defect.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use myelin_proto::grpc::event::{Event, GetLastTokenRequest};
use myelin_testkit::binary::{Binary, Node, output_text as text};
use myelin_testkit::client::history;
use myelin_testkit::events::drill_event as event;
use myelin_testkit::fixtures::copy_axon_fixture_into;
use myelin_testkit::s3::{S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, S3TestServer};
use parking_lot::Mutex;

/// The binary under test (or the one `MYELIN_BIN` names).
fn myelin() -> Binary {
    Binary::new(env!("CARGO_BIN_EXE_myelin"))
}

/// Runs one of the binary's tools to its end.
fn tool(args: &[&str]) -> Output {
    myelin().run(args)
}

fn tool_with(args: &[&str], env: &[(String, String)]) -> Output {
    myelin().run_with_env(args, env)
}

/// Writers append 1–3 event transactions to their own aggregates and record what was
/// acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, i64)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_load(server: &Node, writers: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut client = server.client().await;
        let (stop, acked) = (stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let aggregate = format!("writer-{w}");
            let mut sequence = 0i64;
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let count = 1 + (round % 3) as i64;
                let events: Vec<Event> = (sequence..sequence + count)
                    .map(|s| event(&aggregate, s, false))
                    .collect();
                client.append_event(tokio_stream::iter(events)).await.expect("append");
                acked
                    .lock()
                    .extend((sequence..sequence + count).map(|s| (aggregate.clone(), s)));
                if round % 10 == 9 {
                    client
                        .append_snapshot(event(&aggregate, sequence + count - 1, true))
                        .await
                        .expect("snapshot");
                }
                sequence += count;
                round += 1;
            }
        }));
    }
    Load { stop, acked, tasks }
}

impl Load {
    async fn finish(self) -> Vec<(String, i64)> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("writer");
        }
        self.acked.lock().clone()
    }
}

fn verify(target: &str) -> Output {
    tool(&["verify", target])
}

/// Where a drill's backups go, and how the tool reaches it and the server.
struct Drill {
    target: String,
    env: Vec<(String, String)>,
    fetch: &'static str,
    /// Small enough that segments roll during the drill, large enough for the target to keep
    /// up (every closed segment is three objects; moto takes milliseconds per request).
    segment_size: &'static str,
}

impl Drill {
    /// The target as the test itself reads it (without touching this process's environment).
    fn open(&self) -> Box<dyn myelin_backup::target::Target> {
        let setting = |name: &str| {
            self.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        match self.target.strip_prefix("s3://") {
            Some(location) => {
                let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
                myelin_backup::target::s3_target(
                    bucket,
                    prefix,
                    Some(&setting("AWS_ENDPOINT_URL")),
                    &setting("AWS_REGION"),
                    &setting("AWS_ACCESS_KEY_ID"),
                    &setting("AWS_SECRET_ACCESS_KEY"),
                )
                .expect("S3 target")
            }
            None => myelin_backup::target::dir_target(Path::new(&self.target)).expect("directory target"),
        }
    }
}

fn same(restored: &[(i64, Event)], live: &[(i64, Event)]) {
    assert!(
        restored.len() <= live.len(),
        "restored {} events, live has {}",
        restored.len(),
        live.len()
    );
    for (i, (token, event)) in restored.iter().enumerate() {
        assert_eq!(*token, i as i64, "restored tokens are contiguous from 0");
        assert_eq!(
            (token, event),
            (&live[i].0, &live[i].1),
            "restored token {token} differs from the live history"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy");
        }
    }
}

fn files_under(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(files_under(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// A named way to damage a copy of a backup.
type Defect = (&'static str, fn(&Path));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill() {
    let root = tempfile::tempdir().expect("temp dir");
    let target_dir = root.path().join("backup");
    let drill = Drill {
        target: target_dir.to_string_lossy().to_string(),
        env: Vec::new(),
        fetch: "auto",
        segment_size: "16KB",
    };
    run_drill(root.path(), &drill).await;

    // verify catches each injected defect.
    let defects: [Defect; 4] = DEFECTS;
    for (i, (name, inject)) in defects.iter().enumerate() {
        let copy = root.path().join(format!("defect-{i}"));
        copy_dir(&target_dir, &copy);
        inject(&copy);
        let output = verify(&copy.to_string_lossy());
        assert!(!output.status.success(), "verify missed the {name}: {}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("PROBLEM"),
            "{name}: {}",
            text(&output)
        );
    }
}

/// The drill with S3-compatible storage (moto, on 127.0.0.1) as the target, every file
/// streamed from the server over HTTP rather than read by path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_s3_streaming() {
    let s3 = S3TestServer::start().await;
    s3.create_bucket("drill").await;
    let root = tempfile::tempdir().expect("temp dir");
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), S3_ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), S3_SECRET_KEY.to_string()),
        ("AWS_REGION".to_string(), S3_REGION.to_string()),
        ("AWS_ENDPOINT_URL".to_string(), s3.endpoint.clone()),
    ];
    let drill = Drill {
        target: "s3://drill/backups/prod".to_string(),
        env,
        fetch: "stream",
        segment_size: "128KB",
    };
    run_drill(root.path(), &drill).await;
}

/// Writers append while segments roll and three incremental backups run; then verify,
/// restore (to the end and to a token), serve the restored data and compare.
async fn run_drill(root: &Path, drill: &Drill) {
    let live_dir = root.join("live");
    let target = drill.target.clone();
    let server = myelin()
        .node()
        .data_dir(&live_dir)
        .log_file(root.join("live.log"))
        .segment_size(drill.segment_size)
        .start();

    // Several incremental backups while writers append and segments roll.
    let load = start_load(&server, 4).await;
    let mut acked_before_last_backup = Vec::new();
    for run in 1..=3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        acked_before_last_backup = load.acked.lock().clone();
        let summary = tokio::task::spawn_blocking({
            let (http, target, env, fetch) = (server.http_url(), target.clone(), drill.env.clone(), drill.fetch);
            move || {
                let output = tool_with(&["backup", "--server", &http, "--to", &target, "--fetch", fetch], &env);
                assert!(output.status.success(), "backup {run} failed: {}", text(&output));
                text(&output)
            }
        })
        .await
        .expect("backup task");
        assert!(summary.contains(&format!("backup run {run}")), "{summary}");
    }
    let acked = load.finish().await;
    assert!(
        acked.len() > acked_before_last_backup.len(),
        "writers kept writing during the backups"
    );
    let mut client = server.client().await;
    let live = history(&mut client).await;
    assert_eq!(
        live.len(),
        acked.len(),
        "the live server holds every acknowledged event"
    );
    let verified = tool_with(&["verify", &target], &drill.env);
    assert!(verified.status.success(), "verify: {}", text(&verified));
    assert!(text(&verified).contains("OK: backup run 3"), "{}", text(&verified));

    // Restore to the end of the backup and serve it.
    let restored_dir = root.join("restored");
    let output = tool_with(
        &["restore", &target, "--data", &restored_dir.to_string_lossy()],
        &drill.env,
    );
    assert!(output.status.success(), "restore: {}", text(&output));
    let refused = tool_with(
        &["restore", &target, "--data", &restored_dir.to_string_lossy()],
        &drill.env,
    );
    assert!(!refused.status.success(), "a non-empty directory needs --force");
    // The restore holds exactly what the newest manifest says the backup covers.
    let backed_up_last = {
        let target = drill.open();
        let (_, manifest, _) = myelin_backup::run::latest_manifest(target.as_ref())
            .await
            .expect("manifest")
            .expect("a manifest");
        assert_eq!(manifest.run, 3);
        let events = &manifest.contexts["default"].events;
        assert!(
            events.closed.len() > 3,
            "segments rolled and were copied: {}",
            events.closed.len()
        );
        manifest.contexts["default"].last_token
    };
    assert!(
        text(&output).contains(&format!("context default: last token {backed_up_last}")),
        "restore reports the manifest's last token {backed_up_last}: {}",
        text(&output)
    );
    let restored_server = myelin()
        .node()
        .data_dir(&restored_dir)
        .log_file(root.join("restored.log"))
        .start();
    let mut restored_client = restored_server.client().await;
    let restored = history(&mut restored_client).await;
    same(&restored, &live);
    let present: HashSet<(String, i64)> = restored
        .iter()
        .map(|(_, e)| (e.aggregate_identifier.clone(), e.aggregate_sequence_number))
        .collect();
    for event in &acked_before_last_backup {
        assert!(
            present.contains(event),
            "{event:?} was acknowledged before the last backup began but is missing"
        );
    }
    let log = std::fs::read_to_string(root.join("restored.log")).expect("log");
    let last = restored.len() as i64 - 1;
    assert_eq!(last, backed_up_last, "the restored store ends where the backup does");
    assert!(
        log.contains(&format!("last token {last}")),
        "the restored server logs its last token {last}:\n{log}"
    );
    // New appends work, continuing an aggregate and starting one.
    let (_, newest) = restored.last().expect("events").clone();
    let next = event(
        &newest.aggregate_identifier,
        newest.aggregate_sequence_number + 1,
        false,
    );
    restored_client
        .append_event(tokio_stream::iter(vec![next, event("fresh", 0, false)]))
        .await
        .expect("appends after restore");
    restored_server.stop();

    // Point in time: to a token in the middle of what the backup holds. (Half of the live
    // store, as this was, lies past the backup whenever the writers outrun the last copy: the
    // restore then rightly stops at the backup's end, and the check below failed.)
    let token = last as u64 / 2;
    let pit_dir = root.join("pit");
    let output = tool_with(
        &[
            "restore",
            &target,
            "--data",
            &pit_dir.to_string_lossy(),
            "--to-token",
            &token.to_string(),
        ],
        &drill.env,
    );
    assert!(output.status.success(), "restore --to-token: {}", text(&output));
    assert!(
        text(&output).contains(&format!("asked for token {token}")),
        "{}",
        text(&output)
    );
    let pit_server = myelin()
        .node()
        .data_dir(&pit_dir)
        .log_file(root.join("pit.log"))
        .start();
    let mut pit_client = pit_server.client().await;
    let pit = history(&mut pit_client).await;
    same(&pit, &live);
    let pit_last = pit.len() as i64 - 1;
    assert!(pit_last <= token as i64, "restored up to {pit_last}, asked for {token}");
    assert!(
        pit_last > token as i64 - 4,
        "stops at the last transaction boundary (3 events at most) before {token}: {pit_last}"
    );
    pit_client
        .append_event(tokio_stream::iter(vec![event("after-pit", 0, false)]))
        .await
        .expect("appends after a point-in-time restore");
    pit_server.stop();
    drop(client);
    server.stop();
}

/// The defects `verify` must catch, each applied to a copy of a good backup.
const DEFECTS: [Defect; 4] = [
    ("flipped bit", |dir| {
        let segment = &files_under(&dir.join("contexts/default/events"), ".events")[1];
        let mut bytes = std::fs::read(segment).expect("read");
        bytes[200] ^= 0x04;
        std::fs::write(segment, bytes).expect("write");
    }),
    ("truncated segment", |dir| {
        let segment = &files_under(&dir.join("contexts/default/events"), ".events")[1];
        let file = std::fs::OpenOptions::new().write(true).open(segment).expect("open");
        let len = file.metadata().expect("meta").len();
        file.set_len(len / 2).expect("truncate");
    }),
    ("missing middle segment", |dir| {
        let segments = files_under(&dir.join("contexts/default/events"), ".events");
        std::fs::remove_file(&segments[segments.len() / 2]).expect("remove");
    }),
    ("edited manifest", |dir| {
        let manifest = files_under(&dir.join("manifests"), ".json").pop().expect("manifest");
        let text = std::fs::read_to_string(&manifest).expect("read");
        let edited = text.replacen("\"lastToken\": ", "\"lastToken\": 1", 1);
        assert_ne!(text, edited);
        std::fs::write(&manifest, edited).expect("write");
    }),
];

/// Axon Server's own data, served by Myelin, backed up by local copies (Axon's model),
/// restored into a fresh directory: it reads with upstream's expectations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axon_fixture_backup_restores_into_myelin() {
    let root = tempfile::tempdir().expect("temp dir");
    let live_dir = root.path().join("live");
    // Files written by the real Axon Server (AXON_COMPAT §6): one context's files; Axon's
    // layout is <storage>/<context>/.
    copy_axon_fixture_into("token-at", &live_dir.join("default"));
    let target = root.path().join("backup").to_string_lossy().to_string();
    let server = myelin()
        .node()
        .data_dir(&live_dir)
        .log_file(root.path().join("live.log"))
        .start();

    // A dry run prints the plan and writes nothing.
    let plan = tool(&["backup", "--server", &server.http_url(), "--to", &target, "--dry-run"]);
    assert!(plan.status.success(), "dry run: {}", text(&plan));
    let plan_text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(plan_text.contains("00000000000000000830.events"), "{plan_text}");
    assert!(plan_text.contains("active.events"), "{plan_text}");
    assert!(
        !root.path().join("backup/manifests").exists(),
        "a dry run stores nothing"
    );
    // An unreachable server is one clear line and exit code 1.
    let unreachable = tool(&["backup", "--server", "http://127.0.0.1:9", "--to", &target]);
    assert_eq!(unreachable.status.code(), Some(1), "{}", text(&unreachable));
    assert!(
        String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach the server at http://127.0.0.1:9"),
        "{}",
        text(&unreachable)
    );

    let output = tool(&[
        "backup",
        "--server",
        &server.http_url(),
        "--to",
        &target,
        "--fetch",
        "local",
    ]);
    assert!(output.status.success(), "backup: {}", text(&output));
    server.stop();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("backup/manifests/000001.json")).expect("manifest"))
            .expect("manifest JSON");
    assert_eq!(manifest["server"]["version"], env!("CARGO_PKG_VERSION"), "{manifest}");
    assert_eq!(manifest["contexts"]["default"]["lastToken"], 2485, "{manifest}");
    let verified = verify(&target);
    assert!(verified.status.success(), "verify: {}", text(&verified));

    let restored_dir = root.path().join("restored");
    let output = tool(&["restore", &target, "--data", &restored_dir.to_string_lossy()]);
    assert!(output.status.success(), "restore: {}", text(&output));
    assert!(
        text(&output).contains("context default: last token 2485"),
        "{}",
        text(&output)
    );
    let restored = myelin()
        .node()
        .data_dir(&restored_dir)
        .log_file(root.path().join("restored.log"))
        .start();
    let mut client = restored.client().await;
    let token_at = |instant| myelin_proto::grpc::event::GetTokenAtRequest { instant };
    for (instant, expected) in [(0, 0), (278, 834), (4062, 2000)] {
        let token = client
            .get_token_at(token_at(instant))
            .await
            .expect("GetTokenAt")
            .into_inner()
            .token;
        assert_eq!(token, expected, "GetTokenAt({instant})");
    }
    let last = client
        .get_last_token(GetLastTokenRequest {})
        .await
        .expect("last token")
        .into_inner()
        .token;
    assert_eq!(last + 1, 2486, "head");
    drop(client);
    restored.stop();
}

/// With access control on, a backup without an admin token is refused with one clear line;
/// with the admin token it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_needs_an_admin_token_when_access_control_is_on() {
    let root = tempfile::tempdir().expect("temp dir");
    let server = myelin()
        .node()
        .data_dir(root.path().join("live"))
        .log_file(root.path().join("live.log"))
        .segment_size("16KB")
        .settings([
            "axoniq.axonserver.accesscontrol.enabled=true",
            "axoniq.axonserver.accesscontrol.admin-token=drill-admin-secret",
            "axoniq.axonserver.accesscontrol.token=drill-app-secret",
        ])
        .start();
    let target = root.path().join("backup").to_string_lossy().to_string();
    let url = server.http_url();
    for token in [None, Some("drill-app-secret"), Some("wrong")] {
        let mut args = vec!["backup", "--server", url.as_str(), "--to", target.as_str()];
        if let Some(token) = token {
            args.extend(["--token", token]);
        }
        let refused = tool(&args);
        assert_eq!(refused.status.code(), Some(1), "token {token:?}: {}", text(&refused));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("refused the credentials"),
            "token {token:?}: {}",
            text(&refused)
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    let allowed = tool(&[
        "backup",
        "--server",
        &url,
        "--to",
        &target,
        "--token",
        "drill-admin-secret",
    ]);
    assert!(allowed.status.success(), "{}", text(&allowed));
    server.stop();
}
