//! Hostile input on the REST API (issue 6): path traversal on the file endpoints, sent over a
//! real socket exactly as written (no client normalizes or re-encodes anything), symbolic links
//! and FIFOs where files are expected, and malformed or oversized bodies on the admin
//! endpoints. Every refusal is a 4xx with the JSON error body, nothing outside the data
//! directory is served, and nothing changes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use myelin_store::{ContextStore, SegmentKind};
use myelin_testkit::rest::{Answer, Rest, rest};
use myelin_testkit::store::append_sized as append;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest any request may take before the test calls it a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// What the file outside the data directories holds: no answer may ever contain it.
const SECRET: &[u8] = b"TOP SECRET: outside every data directory";

/// The router on a real socket (127.0.0.1, any port), stopped by [`Served::stop`].
struct Served {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn serve(rest: &Rest) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let router = rest.router.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Served { address, stop, task }
}

impl Served {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(CALL_TIMEOUT, self.task)
            .await
            .expect("the listener stops")
            .expect("listener task")
            .expect("listener ends cleanly");
    }
}

/// An answer read off the socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn json_error(&self) -> String {
        let value: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not a JSON error ({e}): {} {}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        });
        value["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no 'error' in {value}"))
            .to_string()
    }
}

/// Sends `request` (a whole HTTP/1.1 request, bytes as given) on a fresh connection and reads
/// the answer to the connection's end.
async fn raw_request(address: SocketAddr, request: &[u8]) -> Raw {
    let exchange = async {
        let mut tcp = TcpStream::connect(address).await.expect("connect");
        tcp.write_all(request).await.expect("send");
        let mut answer = Vec::new();
        // The server may close before reading everything of a request it refuses.
        let _ = tcp.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(CALL_TIMEOUT, exchange).await.unwrap_or_else(|_| {
        panic!(
            "no answer within {CALL_TIMEOUT:?} to {}",
            String::from_utf8_lossy(request)
        )
    });
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&answer)));
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    Raw {
        status,
        head,
        body: answer[split + 4..].to_vec(),
    }
}

/// `GET target` with the target exactly as given.
async fn get_raw(address: SocketAddr, target: &str) -> Raw {
    raw_request(
        address,
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// Refused with a 4xx (or, for a context that does not exist, Axon's 503 with AXONIQ-6000,
/// as the backup listings answer it), never a byte of a file.
#[track_caller]
fn assert_refused(answer: &Raw, target: &str, forbidden: &[&[u8]]) {
    let no_event_store = answer.status == 503
        && answer
            .head
            .to_ascii_lowercase()
            .contains("axoniq-errorcode: axoniq-6000");
    assert!(
        (400..500).contains(&answer.status) || no_event_store,
        "{target}: {} {}",
        answer.head,
        String::from_utf8_lossy(&answer.body)
    );
    for bytes in forbidden {
        assert!(
            !answer.body.windows(bytes.len().max(1)).any(|w| w == *bytes),
            "{target}: the answer holds file bytes"
        );
    }
}

fn name(path: &Path) -> String {
    path.file_name().expect("file name").to_string_lossy().into_owned()
}

/// Percent-encodes every byte.
fn encode_all(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02x}")).collect()
}

async fn wait_for_closed(store: &ContextStore, count: usize) -> Vec<PathBuf> {
    for _ in 0..400 {
        let (closed, _) = store.segment_files(SegmentKind::Events);
        if closed.len() >= count && closed.len() == store.closed_segment_count(SegmentKind::Events) {
            return closed.into_iter().flat_map(|(_, files)| files).collect();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {count} closed segments after 10 s");
}

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    let result = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(result, 0, "mkfifo {}", path.display());
}

/// Traversal, encodings, NUL bytes, overlong names, unlisted files that exist, and symbolic
/// links, on `GET /v1/backup/files/{context}/{type}/{file}`, over a real socket: all refused,
/// nothing outside the listing served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_download_refuses_every_traversal() {
    let rest = rest();
    let store = rest.store("default");
    append(&store, "a", 0, 200, 200);
    let files = wait_for_closed(&store, 2).await;
    let root = rest.dir.path().canonicalize().expect("root");
    let (events_dir, _) = rest.provisioner.dirs("default");
    let secret = root.join("secret.txt");
    std::fs::write(&secret, SECRET).expect("secret");
    std::fs::write(events_dir.join("notes.txt"), SECRET).expect("unlisted file");
    // Names the store might list one day, planted as links to the secret and as a FIFO.
    std::os::unix::fs::symlink(&secret, events_dir.join("00000000000099999999.events")).expect("symlink");
    std::os::unix::fs::symlink(&secret, events_dir.join("00000000000099999999.index")).expect("symlink");
    mkfifo(&events_dir.join("00000000000088888888.events"));
    // A listed file replaced by a link to the secret: still listed, never followed.
    // Each closed segment is listed as its data, index and bloom files.
    let bloom = files[2].clone();
    assert_eq!(name(&bloom), SegmentKind::Events.bloom_file_name(0));
    std::fs::rename(&bloom, bloom.with_extension("bloom-original")).expect("move aside");
    std::os::unix::fs::symlink(&secret, &bloom).expect("symlink in place of a listed file");
    let listed = name(&files[0]);
    let listed_bytes = std::fs::read(&files[0]).expect("listed file");
    let served = serve(&rest).await;
    let address = served.address;

    // The listed file itself is served (so the refusals below are about the names).
    let base = "/v1/backup/files/default/EVENT";
    let answer = get_raw(address, &format!("{base}/{listed}")).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(answer.body, listed_bytes);

    let secret_abs = secret.to_string_lossy().into_owned();
    let listed_abs = files[0].to_string_lossy().into_owned();
    let long_name = "a".repeat(4096);
    let longer_name = format!("{}.events", "9".repeat(60_000));
    let targets = [
        format!("{base}/.."),
        format!("{base}/."),
        format!("{base}/%2e%2e"),
        format!("{base}/%2E%2E"),
        format!("{base}/%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt"),
        format!("{base}/..%2f..%2f..%2fsecret.txt"),
        format!("{base}/..%2F..%2Fcontrol%2Fmyelin-controldb.sqlite3"),
        format!("{base}/{}", encode_all("../../../secret.txt")),
        format!("{base}/%252e%252e%252fsecret.txt"),
        format!("{base}/..%5c..%5csecret.txt"),
        format!("{base}/%c0%ae%c0%ae%c0%afsecret.txt"),
        format!("{base}/%2F{}", secret_abs.trim_start_matches('/').replace('/', "%2F")),
        format!("{base}/{}", encode_all(&secret_abs)),
        format!("{base}/{}", encode_all(&listed_abs)),
        format!("{base}/%00"),
        format!("{base}/{listed}%00"),
        format!("{base}/{listed}%00.txt"),
        format!("{base}/{listed}%2f"),
        format!("{base}/{listed}%2f.."),
        format!("{base}/{listed}/"),
        format!("{base}/{listed}/.."),
        format!("{base}/./{listed}"),
        format!("{base}/../EVENT/{listed}"),
        format!("{base}//{listed}"),
        format!("{base}/notes.txt"),
        format!("{base}/00000000000099999999.events"),
        format!("{base}/00000000000099999999.index"),
        format!("{base}/00000000000088888888.events"),
        format!("{base}/{}", name(&bloom)),
        format!("{base}/{}", name(&bloom.with_extension("bloom-original"))),
        format!("{base}/{long_name}"),
        format!("{base}/{longer_name}"),
        format!("/v1/backup/files/%2e%2e/EVENT/{listed}"),
        format!("/v1/backup/files/../default/EVENT/{listed}"),
        format!("/v1/backup/files/default/..%2fEVENT/{listed}"),
        format!("/v1/backup/files/default/EVENT%00/{listed}"),
        format!(
            "/v1/backup/files/{}/EVENT/{listed}",
            encode_all(&root.to_string_lossy())
        ),
        "/v1/backup/files/default/EVENT/../../../../secret.txt".to_string(),
        "/../../../../etc/passwd".to_string(),
        "/v1/backup/files/%2e%2e/%2e%2e/%2e%2e/secret.txt".to_string(),
    ];
    let forbidden: [&[u8]; 2] = [SECRET, &listed_bytes[..64]];
    let mut json_errors = 0;
    for target in &targets {
        let answer = get_raw(address, target).await;
        assert_refused(&answer, target, &forbidden);
        // The router's answers carry the JSON error; only HTTP-level refusals of hyper itself
        // (a request line it cannot take) may not.
        if answer.status != 414 && answer.status != 431 {
            assert!(!answer.json_error().is_empty(), "{target}");
            json_errors += 1;
        }
    }
    assert!(json_errors >= targets.len() - 1, "{json_errors} of {}", targets.len());
    // Bytes no URL may carry, raw on the request line: hyper refuses them before any route.
    for raw in [
        &b"GET /v1/backup/files/default/EVENT/..\0/secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET /v1/backup/files/default/EVENT/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /v1/backup/files/default/EVENT/a b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET ../../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET http://localhost/../../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw_request(address, raw).await;
        assert_refused(&answer, &String::from_utf8_lossy(raw), &forbidden);
    }
    // A query or fragment is not part of the name: the listed file, and only it, is served.
    for target in [
        format!("{base}/{listed}?file=../../secret.txt"),
        format!("{base}/{listed}?context=..&type=../../"),
    ] {
        let answer = get_raw(address, &target).await;
        assert_eq!(answer.status, 200, "{target}: {}", answer.head);
        assert_eq!(answer.body, listed_bytes, "{target}");
    }
    // Still serving; nothing changed in the listing.
    let answer = get_raw(address, &format!("{base}/{listed}")).await;
    assert_eq!(answer.status, 200);
    let (closed, _) = store.segment_files(SegmentKind::Events);
    assert_eq!(
        closed.into_iter().flat_map(|(_, f)| f).collect::<Vec<_>>(),
        files,
        "the listing is what it was"
    );
    assert_eq!(std::fs::read(&secret).expect("secret"), SECRET);
    served.stop().await;
    rest.shutdown();
}

/// `GET /v1/backup/controldb/{file}`: only `controldb<digits>.zip` files of the backup
/// location, never through a link, never a FIFO (which would block the read forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_db_download_refuses_links_fifos_and_traversal() {
    let rest = rest();
    let created = rest.post("/v1/backup/createControlDbBackup", None).await;
    assert_eq!(created.status, StatusCode::OK);
    let zip = PathBuf::from(created.text());
    let zip_bytes = std::fs::read(&zip).expect("zip");
    let location = zip.parent().expect("backup location").to_path_buf();
    let root = rest.dir.path().canonicalize().expect("root");
    let secret = root.join("secret.txt");
    std::fs::write(&secret, SECRET).expect("secret");
    std::os::unix::fs::symlink(&secret, location.join("controldb1000000000001.zip")).expect("symlink");
    std::os::unix::fs::symlink(&zip, location.join("controldb1000000000002.zip")).expect("symlink to a zip");
    mkfifo(&location.join("controldb1000000000003.zip"));
    std::fs::create_dir(location.join("controldb1000000000004.zip")).expect("a directory");
    let served = serve(&rest).await;
    let address = served.address;
    let base = "/v1/backup/controldb";
    let answer = get_raw(address, &format!("{base}/{}", name(&zip))).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(answer.body, zip_bytes);

    let control_db = myelin_control::DB_FILE_NAME;
    let targets = [
        format!("{base}/controldb1000000000001.zip"),
        format!("{base}/controldb1000000000002.zip"),
        format!("{base}/controldb1000000000003.zip"),
        format!("{base}/controldb1000000000004.zip"),
        format!("{base}/controldb1000000000005.zip"),
        format!("{base}/..%2Fcontrol%2F{control_db}"),
        format!("{base}/%2e%2e%2fsecret.txt"),
        format!("{base}/{}", encode_all(&secret.to_string_lossy())),
        format!("{base}/controldb1%2F..%2F..%2Fsecret.txt"),
        format!("{base}/controldb..%2F..%2Fsecret.zip"),
        format!("{base}/controldb1.zip%00"),
        format!("{base}/controldb{}.zip", "1".repeat(21)),
        format!("{base}/controldb{}.zip", "1".repeat(10_000)),
        format!("{base}/%c0%ae%c0%ae"),
        format!("{base}/.."),
        format!("{base}/../secret.txt"),
        format!("{base}/"),
    ];
    let forbidden: [&[u8]; 2] = [SECRET, &zip_bytes[..32]];
    for target in &targets {
        let answer = get_raw(address, target).await;
        assert_refused(&answer, target, &forbidden);
        assert!(!answer.json_error().is_empty(), "{target}");
    }
    served.stop().await;
}

/// A request with a raw body and content type, through the router in-process.
async fn send(rest: &Rest, method: Method, uri: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
    use tower::ServiceExt;
    let mut request = axum::http::Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let request = request.body(axum::body::Body::from(body)).expect("request");
    let response = tokio::time::timeout(CALL_TIMEOUT, rest.router.clone().oneshot(request))
        .await
        .unwrap_or_else(|_| panic!("{uri}: no answer within {CALL_TIMEOUT:?}"))
        .expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .expect("body");
    Answer { status, headers, body }
}

/// What the admin state looks like, to compare before and after.
async fn admin_state(
    rest: &Rest,
) -> (
    Vec<String>,
    serde_json::Value,
    serde_json::Value,
    Vec<String>,
    Vec<String>,
) {
    let contexts = rest.state.node.contexts().names();
    let users = rest.get("/v1/users").await.json();
    let applications = rest.get("/v1/applications").await.json();
    let leases = rest
        .state
        .deletion_holds
        .live(std::time::Instant::now())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut dirs: Vec<String> = std::fs::read_dir(rest.dir.path())
        .expect("root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for kind in ["events", "snapshots"] {
        for entry in std::fs::read_dir(rest.dir.path().join(kind)).expect("store dirs") {
            dirs.push(format!(
                "{kind}/{}",
                entry.expect("entry").file_name().to_string_lossy()
            ));
        }
    }
    dirs.sort();
    (contexts, users, applications, leases, dirs)
}

/// Malformed, mistyped, oversized and hostile bodies on every endpoint that reads one: a 4xx
/// with the JSON error (400 malformed, 413 too large, 415 not JSON), never a 5xx or a hang,
/// and nothing created, changed or deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_bodies_are_refused_and_change_nothing() {
    let rest = rest();
    let lease = rest.post("/v1/backup/lease", None).await;
    assert_eq!(lease.status, StatusCode::OK);
    let lease_id = lease.json()["id"].as_str().expect("id").to_string();
    let before = admin_state(&rest).await;

    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    let too_large = {
        let mut body = b"{\"context\": \"".to_vec();
        body.extend(std::iter::repeat_n(b'x', 3 * 1024 * 1024));
        body.extend(b"\"}");
        body
    };
    let long_string = |field: &str| format!("{{\"{field}\": \"{}\"}}", "y".repeat(1024 * 1024)).into_bytes();
    let json = Some("application/json");
    let renew = format!("/v1/backup/lease/{lease_id}");
    // (uri, content type, body, expected status)
    let mut cases: Vec<(&str, Option<&str>, Vec<u8>, StatusCode)> = Vec::new();
    for uri in ["/v1/context", "/v1/users", "/v1/applications"] {
        cases.extend([
            (uri, None, b"{}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            (
                uri,
                Some("text/plain"),
                b"{}".to_vec(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                uri,
                Some("application/xml"),
                b"<context/>".to_vec(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (uri, json, Vec::new(), StatusCode::BAD_REQUEST),
            (uri, json, b"not json".to_vec(), StatusCode::BAD_REQUEST),
            (uri, json, b"{\"context\": ".to_vec(), StatusCode::BAD_REQUEST),
            (uri, json, b"[]".to_vec(), StatusCode::BAD_REQUEST),
            (uri, json, b"null".to_vec(), StatusCode::BAD_REQUEST),
            (uri, json, b"\"default\"".to_vec(), StatusCode::BAD_REQUEST),
            (uri, json, b"{}".to_vec(), StatusCode::BAD_REQUEST),
            (uri, json, b"\xff\xfe{}".to_vec(), StatusCode::BAD_REQUEST),
            (
                uri,
                json,
                b"{\"context\": \"\xff\xfe\"}".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (uri, json, nested(100_000), StatusCode::BAD_REQUEST),
            (uri, json, too_large.clone(), StatusCode::PAYLOAD_TOO_LARGE),
        ]);
    }
    cases.extend([
        (
            "/v1/context",
            json,
            br#"{"context": 42}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/context",
            json,
            br#"{"context": ["a"]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/context",
            json,
            br#"{"context": "a", "context": "b"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/context",
            json,
            br#"{"context": "x", "metaData": {"k": 1}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/context",
            json,
            br#"{"context": "x", "metaData": []}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/context",
            json,
            br#"{"context": ""}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/context",
            json,
            br#"{"context": "."}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/context",
            json,
            br#"{"context": ".."}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/context",
            json,
            br#"{"context": "../escape"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/context",
            json,
            br#"{"context": "a/b"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/context",
            json,
            br#"{"context": "/tmp/x"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/context",
            json,
            br#"{"context": "x\u0000"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/context",
            json,
            br#"{"context": "_admin"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/context", json, long_string("context"), StatusCode::BAD_REQUEST),
        (
            "/v1/users",
            json,
            br#"{"userName": "u"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/users",
            json,
            br#"{"userName": "u", "password": ""}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/users",
            json,
            br#"{"userName": "", "password": "p"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/users",
            json,
            br#"{"userName": "a\u0000b", "password": "p"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/users",
            json,
            br#"{"userName": "u", "password": "p", "roles": ["SUPERUSER"]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/users",
            json,
            br#"{"userName": "u", "password": "p", "roles": ["READ@../x"]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/users",
            json,
            br#"{"userName": "u", "password": "p", "roles": [7]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/users", json, long_string("userName"), StatusCode::BAD_REQUEST),
        (
            "/v1/applications",
            json,
            br#"{"name": "a", "token": "mine"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/applications",
            json,
            br#"{"name": ""}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/applications",
            json,
            br#"{"name": "a", "roles": [{"context": "*", "roles": ["ROOT"]}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/applications",
            json,
            br#"{"name": "a", "roles": [{"context": "a/b", "roles": ["READ"]}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/applications",
            json,
            br#"{"name": "a", "roles": "READ"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
    ]);
    for uri in ["/v1/backup/lease", renew.as_str()] {
        cases.extend([
            (uri, json, b"not json".to_vec(), StatusCode::BAD_REQUEST),
            (uri, json, b"[300]".to_vec(), StatusCode::BAD_REQUEST),
            (uri, json, br#"{"ttlSeconds": 1e400}"#.to_vec(), StatusCode::BAD_REQUEST),
            (
                uri,
                json,
                br#"{"ttlSeconds": 18446744073709551616}"#.to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (
                uri,
                json,
                br#"{"ttlSeconds": -9223372036854775808}"#.to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (uri, json, br#"{"ttlSeconds": 300.5}"#.to_vec(), StatusCode::BAD_REQUEST),
            (uri, json, br#"{"ttlSeconds": 1e300}"#.to_vec(), StatusCode::BAD_REQUEST),
            (uri, json, nested(100_000), StatusCode::BAD_REQUEST),
            (uri, None, b"\xff\xfe".to_vec(), StatusCode::BAD_REQUEST),
            (uri, json, too_large.clone(), StatusCode::PAYLOAD_TOO_LARGE),
        ]);
    }
    let mut checked = 0;
    for (uri, content_type, body, expected) in &cases {
        let context = format!(
            "POST {uri} ({content_type:?}, {} bytes: {:?})",
            body.len(),
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
        let answer = send(&rest, Method::POST, uri, *content_type, body.clone()).await;
        assert_eq!(
            answer.status,
            *expected,
            "{context}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.header("content-type"), Some("application/json"), "{context}");
        assert!(answer.json()["error"].is_string(), "{context}");
        checked += 1;
    }
    assert!(checked > 70, "{checked}");
    // Query strings and paths that do not parse: the same JSON 400.
    for uri in [
        "/v1/context/default?force=maybe",
        "/v1/context/default?preserveEventStore=2",
        "/v1/context/%ff%fe",
        "/v1/users/%ff",
        "/v1/applications/%c0%ae",
        "/v1/backup/eventstore?type=EVENT&lastClosedVersionBackedUp=2147483648",
        "/v1/backup/filenames?type=EVENT&lastVersionBackedUp=-2147483649",
        "/v1/backup/filenames?type=EVENT&lastSegmentBackedUp=9223372036854775808",
    ] {
        let method = if uri.starts_with("/v1/backup/") {
            Method::GET
        } else {
            Method::DELETE
        };
        let answer = send(&rest, method.clone(), uri, None, Vec::new()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{method} {uri}: {}",
            answer.text()
        );
        assert!(answer.json()["error"].is_string(), "{uri}");
    }
    let after = admin_state(&rest).await;
    assert_eq!(before, after, "nothing changed");
    assert_eq!(rest.store("default").last_token(), -1);
    // Well-formed requests still work, including the documented forms of a lease body.
    for body in [&b"null"[..], br#"{"ttlSeconds": 60.0}"#, b"", b"{}"] {
        let answer = send(&rest, Method::POST, &renew, json, body.to_vec()).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}: {}", body, answer.text());
    }
    let created = rest.post("/v1/context", Some(json!({"context": "a..b"}))).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    assert!(rest.provisioner.dirs("a..b").0.is_dir());
    rest.shutdown();
}

/// The context names `.` and `..` would put a context's files in the storage directory itself
/// or in its parent, and deleting them would delete that directory: refused, before anything
/// is created; nothing appears outside the storage directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_names_that_are_path_components_are_refused() {
    let rest = rest();
    let root = rest.dir.path().to_path_buf();
    let listing = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = (
        listing(&root),
        listing(&root.join("events")),
        listing(&root.join("snapshots")),
    );
    for name in [".", ".."] {
        let answer = rest.post("/v1/context", Some(json!({ "context": name }))).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{name}: {}", answer.text());
        assert!(answer.json()["error"].as_str().expect("error").contains("not allowed"));
        // Deleting one (there is none) deletes nothing either.
        let encoded = encode_all(name);
        let answer = rest.delete(&format!("/v1/context/{encoded}")).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{name}");
        assert!(answer.json()["error"].is_string());
    }
    assert_eq!(rest.state.node.contexts().names(), vec!["default".to_string()]);
    let records = rest.state.node.control().contexts().expect("control contexts");
    assert_eq!(
        records.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["default"]
    );
    let after = (
        listing(&root),
        listing(&root.join("events")),
        listing(&root.join("snapshots")),
    );
    assert_eq!(before, after);
    assert!(
        !root
            .parent()
            .expect("parent")
            .join("00000000000000000000.events")
            .exists()
    );
    rest.shutdown();
}
