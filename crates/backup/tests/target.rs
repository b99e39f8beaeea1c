//! The backup targets: the same behaviour checks against a local directory and against a real
//! S3-compatible server (moto, started by `scripts/s3-test-server`), plus what only one of them
//! has (the local directory's temporary files, S3's multipart uploads and environment settings).

use std::fmt::Debug;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use myelin_backup::target::{
    MULTIPART_PART_BYTES, MULTIPART_THRESHOLD_BYTES, ObjectInfo, Target, TargetError, dir_target, open_target,
    s3_target,
};
use myelin_testkit::s3::{S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, S3TestServer};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;
const BUCKET: &str = "myelin-test";
const PREFIX: &str = "backups/prod";

/// Keys that must never reach the storage: escaping, absolute, empty or dot components,
/// backslashes, NUL, a trailing '/', and the reserved shape of temporary file names.
const INVALID_KEYS: &[&str] = &[
    "",
    "../x",
    "a/../../x",
    "..",
    "/abs",
    "a//b",
    "a/./b",
    "./a",
    "a/",
    "a\\b",
    "..\\x",
    "a\0b",
    "a/.b.0123456789abcdef.tmp",
];
const INVALID_PREFIXES: &[&str] = &["../", "..", "/abs", "a//", "a/./", "a\\b", "a\0"];

// --- helpers -----------------------------------------------------------------------------------

/// Deterministic, incompressible bytes (xorshift64*).
fn pattern(size_bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(size_bytes + 8);
    while bytes.len() < size_bytes {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    bytes.truncate(size_bytes);
    bytes
}

/// Writes a pattern file a mebibyte at a time; answers its SHA-256.
fn write_pattern_file(path: &Path, size_bytes: usize, seed: u64) -> [u8; 32] {
    let mut file = std::fs::File::create(path).expect("create pattern file");
    let mut digest = Sha256::new();
    let mut written = 0;
    let mut round = 0;
    while written < size_bytes {
        let chunk = pattern((size_bytes - written).min(MIB), seed + round);
        file.write_all(&chunk).expect("write pattern file");
        digest.update(&chunk);
        written += chunk.len();
        round += 1;
    }
    file.sync_all().expect("sync pattern file");
    digest.finalize().into()
}

fn sha256_file(path: &Path) -> [u8; 32] {
    let mut file = std::fs::File::open(path).expect("open file to digest");
    let mut digest = Sha256::new();
    let mut buffer = vec![0u8; MIB];
    loop {
        let read = file.read(&mut buffer).expect("read file to digest");
        if read == 0 {
            return digest.finalize().into();
        }
        digest.update(&buffer[..read]);
    }
}

fn assert_invalid_key<T: Debug>(result: Result<T, TargetError>, key: &str, what: &str) {
    match result {
        Err(TargetError::InvalidKey { key: rejected, reason }) => {
            assert_eq!(rejected, key, "{what}");
            assert!(!reason.is_empty());
        }
        other => panic!("{what}({key:?}): expected InvalidKey, got {other:?}"),
    }
}

fn keys(objects: &[ObjectInfo]) -> Vec<&str> {
    objects.iter().map(|object| object.key.as_str()).collect()
}

fn info(key: &str, size: usize) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size: size as u64,
    }
}

/// Every file (not directory) below `root`, relative, sorted: what is really on disk.
fn files_on_disk(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory).expect("read_dir") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(root).expect("below root");
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    files
}

async fn s3_test_target(server: &S3TestServer, prefix: &str) -> Box<dyn Target> {
    s3_target(
        BUCKET,
        prefix,
        Some(&server.endpoint),
        S3_REGION,
        S3_ACCESS_KEY,
        S3_SECRET_KEY,
    )
    .expect("S3 target")
}

async fn started_s3() -> (S3TestServer, Box<dyn Target>) {
    let server = S3TestServer::start().await;
    server.create_bucket(BUCKET).await;
    let target = s3_test_target(&server, PREFIX).await;
    (server, target)
}

// --- checks shared by both targets -------------------------------------------------------------

async fn check_bytes_roundtrip(target: &dyn Target) {
    let key = "manifests/000001.json";
    assert_eq!(target.get_bytes(key).await.expect("get absent"), None);

    let first = Bytes::from_static(br#"{"format":1,"run":1}"#);
    target.put_bytes(key, first.clone()).await.expect("put");
    assert_eq!(target.get_bytes(key).await.expect("get"), Some(first));

    // Replacement by a shorter object leaves nothing of the longer one.
    let second = Bytes::from_static(b"{}");
    target.put_bytes(key, second.clone()).await.expect("replace");
    assert_eq!(target.get_bytes(key).await.expect("get replaced"), Some(second.clone()));
    assert_eq!(target.list("").await.expect("list"), vec![info(key, 2)]);

    // Empty objects exist and are not absent.
    target.put_bytes("empty", Bytes::new()).await.expect("put empty");
    assert_eq!(target.get_bytes("empty").await.expect("get empty"), Some(Bytes::new()));
    assert_eq!(
        target.list("").await.expect("list"),
        vec![info("empty", 0), info(key, 2)]
    );
}

async fn check_delete(target: &dyn Target) {
    let key = "controldb/controldb1795562300106.zip";
    assert!(!target.delete(key).await.expect("delete absent"));
    target.put_bytes(key, Bytes::from_static(b"zip")).await.expect("put");
    target
        .put_bytes("controldb/other.zip", Bytes::from_static(b"other"))
        .await
        .expect("put other");
    assert!(target.delete(key).await.expect("delete"));
    assert_eq!(target.get_bytes(key).await.expect("get deleted"), None);
    assert!(!target.delete(key).await.expect("delete again"));
    assert_eq!(
        target.list("").await.expect("list"),
        vec![info("controldb/other.zip", 5)]
    );
    // The object can come back.
    target
        .put_bytes(key, Bytes::from_static(b"again"))
        .await
        .expect("put again");
    assert_eq!(
        target.get_bytes(key).await.expect("get"),
        Some(Bytes::from_static(b"again"))
    );
}

async fn check_list(target: &dyn Target) {
    assert_eq!(target.list("").await.expect("list empty target"), vec![]);
    let objects = [
        ("manifests/000002.json", 2),
        ("contexts/default/events/00000000000000000000.events", 20),
        ("contexts/default/events/active.events", 7),
        ("contexts/default/snapshots/00000000000000000000.snapshots", 5),
        ("contexts/default2/events/active.events", 3),
        ("contexts/other/events/active.events", 1),
        ("manifests/000001.json", 1),
        ("top", 4),
    ];
    for (key, size) in objects {
        target.put_bytes(key, Bytes::from(vec![b'x'; size])).await.expect("put");
    }
    let mut all: Vec<ObjectInfo> = objects.iter().map(|&(key, size)| info(key, size)).collect();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(target.list("").await.expect("list all"), all);

    let listed = |prefix: &'static str| async move { target.list(prefix).await.expect("list") };
    assert_eq!(
        keys(&listed("contexts/default/").await),
        [
            "contexts/default/events/00000000000000000000.events",
            "contexts/default/events/active.events",
            "contexts/default/snapshots/00000000000000000000.snapshots",
        ]
    );
    // A prefix is a string prefix, not a directory: "default" also matches "default2".
    assert_eq!(listed("contexts/default").await.len(), 4);
    assert_eq!(
        keys(&listed("contexts/default/events/active").await),
        ["contexts/default/events/active.events"]
    );
    assert_eq!(
        keys(&listed("manifests/00000").await),
        ["manifests/000001.json", "manifests/000002.json"]
    );
    assert_eq!(keys(&listed("t").await), ["top"]);
    assert_eq!(keys(&listed("top").await), ["top"]);
    assert!(listed("top/").await.is_empty());
    assert!(listed("nothing/").await.is_empty());
    assert!(listed("contexts/nothing/deeper/").await.is_empty());
    assert!(listed("zzz").await.is_empty());
}

async fn check_not_found(target: &dyn Target, scratch: &Path) {
    let key = "contexts/default/events/00000000000000000042.events";
    let local = scratch.join("absent.events");
    match target.get_to_file(key, &local).await {
        Err(TargetError::NotFound {
            key: missing,
            target: described,
        }) => {
            assert_eq!(missing, key);
            assert_eq!(described, target.describe());
        }
        other => panic!("get_to_file of an absent key: expected NotFound, got {other:?}"),
    }
    assert!(!local.exists(), "get_to_file of an absent key created the local file");

    // A local file already there is left alone.
    std::fs::write(&local, b"keep me").expect("write local");
    assert!(matches!(
        target.get_to_file(key, &local).await,
        Err(TargetError::NotFound { .. })
    ));
    assert_eq!(std::fs::read(&local).expect("read local"), b"keep me");

    assert_eq!(target.get_bytes(key).await.expect("get_bytes absent"), None);
    assert!(!target.delete(key).await.expect("delete absent"));

    // A "directory" (a prefix of other keys) is not an object.
    target
        .put_bytes("contexts/default/events/x", Bytes::from_static(b"x"))
        .await
        .expect("put");
    assert_eq!(target.get_bytes("contexts/default").await.expect("get directory"), None);
    assert!(!target.delete("contexts/default").await.expect("delete directory"));
    assert!(matches!(
        target.get_to_file("contexts/default", &scratch.join("dir")).await,
        Err(TargetError::NotFound { .. })
    ));
    assert_eq!(
        target.get_bytes("contexts/default/events/x").await.expect("get"),
        Some(Bytes::from_static(b"x"))
    );
}

async fn check_invalid_keys(target: &dyn Target, scratch: &Path) {
    let local = scratch.join("source");
    std::fs::write(&local, b"must not be stored").expect("write source");
    let destination = scratch.join("destination");
    for &key in INVALID_KEYS {
        assert_invalid_key(target.put_bytes(key, Bytes::from_static(b"x")).await, key, "put_bytes");
        assert_invalid_key(target.put_file(key, &local).await, key, "put_file");
        assert_invalid_key(target.get_bytes(key).await, key, "get_bytes");
        assert_invalid_key(target.get_to_file(key, &destination).await, key, "get_to_file");
        assert_invalid_key(target.delete(key).await, key, "delete");
    }
    for &prefix in INVALID_PREFIXES {
        assert_invalid_key(target.list(prefix).await, prefix, "list");
    }
    assert!(!destination.exists());
    assert_eq!(
        target.list("").await.expect("list"),
        vec![],
        "an invalid key stored something"
    );
}

/// put_file then get_to_file, byte-equal; then a smaller replacement read into the longer file.
async fn check_file_roundtrip(target: &dyn Target, scratch: &Path, size_bytes: usize) {
    let key = "contexts/default/events/00000000000000000000.events";
    let local = scratch.join("upload.events");
    let digest = write_pattern_file(&local, size_bytes, 7);
    target.put_file(key, &local).await.expect("put_file");
    assert_eq!(
        target.list("contexts/").await.expect("list"),
        vec![info(key, size_bytes)]
    );

    let downloaded = scratch.join("download.events");
    let received = target.get_to_file(key, &downloaded).await.expect("get_to_file");
    assert_eq!(received, size_bytes as u64);
    assert_eq!(
        std::fs::metadata(&downloaded).expect("downloaded").len(),
        size_bytes as u64
    );
    assert!(
        sha256_file(&downloaded) == digest,
        "downloaded bytes differ from the uploaded file"
    );

    // Replaced by a smaller file; downloading over the longer local file truncates it.
    let smaller = size_bytes / 3;
    let smaller_digest = write_pattern_file(&local, smaller, 8);
    target.put_file(key, &local).await.expect("put_file replacement");
    let received = target
        .get_to_file(key, &downloaded)
        .await
        .expect("get_to_file replacement");
    assert_eq!(received, smaller as u64);
    assert_eq!(
        std::fs::metadata(&downloaded).expect("downloaded").len(),
        smaller as u64
    );
    assert!(
        sha256_file(&downloaded) == smaller_digest,
        "downloaded replacement differs"
    );
    assert_eq!(target.list("").await.expect("list"), vec![info(key, smaller)]);
}

/// While one object is replaced again and again, by two contents of different sizes, readers
/// only ever see one of them whole, and listings show only the key.
async fn check_atomic_replace(target: &dyn Target, scratch: &Path, sizes_bytes: (usize, usize), rounds: usize) {
    let key = "contexts/default/events/active.events";
    let contents = [pattern(sizes_bytes.0, 1), pattern(sizes_bytes.1, 2)];
    let files = [scratch.join("a"), scratch.join("b")];
    for (file, content) in files.iter().zip(&contents) {
        std::fs::write(file, content).expect("write content file");
    }
    target.put_file(key, &files[0]).await.expect("first put");

    let done = AtomicBool::new(false);
    let writer = async {
        for round in 0..rounds {
            target
                .put_file(key, &files[(round + 1) % 2])
                .await
                .expect("replacing put");
        }
        done.store(true, Ordering::SeqCst);
    };
    let reader = async {
        let mut reads = 0usize;
        while !done.load(Ordering::SeqCst) {
            let bytes = target
                .get_bytes(key)
                .await
                .expect("read during puts")
                .expect("never absent");
            assert!(
                bytes[..] == contents[0][..] || bytes[..] == contents[1][..],
                "read {} bytes that are neither version (a partial object was visible)",
                bytes.len()
            );
            let listed = target.list("").await.expect("list during puts");
            assert_eq!(keys(&listed), [key], "a temporary object was listed");
            let size = listed[0].size as usize;
            assert!(
                size == sizes_bytes.0 || size == sizes_bytes.1,
                "listed a partial size {size}"
            );
            reads += 1;
        }
        reads
    };
    let ((), reads) = tokio::join!(writer, reader);
    assert!(reads > 0);
    let last = &contents[rounds % 2];
    assert_eq!(
        target.get_bytes(key).await.expect("final read").as_deref(),
        Some(&last[..])
    );
}

// --- local directory ---------------------------------------------------------------------------

struct DirFixture {
    scratch: tempfile::TempDir,
    root: PathBuf,
    target: Box<dyn Target>,
}

fn dir_fixture() -> DirFixture {
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path().join("backups/prod");
    let target = dir_target(&root).expect("dir target");
    DirFixture { scratch, root, target }
}

impl DirFixture {
    /// Scratch space for local files, outside the target.
    fn local(&self) -> PathBuf {
        let local = self.scratch.path().join("local");
        std::fs::create_dir_all(&local).expect("local scratch");
        local
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_bytes_roundtrip() {
    let fixture = dir_fixture();
    check_bytes_roundtrip(&*fixture.target).await;
    // Objects are plain files at their key's path.
    assert_eq!(files_on_disk(&fixture.root), ["empty", "manifests/000001.json"]);
    assert_eq!(
        std::fs::read(fixture.root.join("manifests/000001.json")).expect("file"),
        b"{}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_delete() {
    let fixture = dir_fixture();
    check_delete(&*fixture.target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_list() {
    let fixture = dir_fixture();
    check_list(&*fixture.target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_not_found() {
    let fixture = dir_fixture();
    check_not_found(&*fixture.target, &fixture.local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_invalid_keys_are_rejected_and_nothing_escapes() {
    let fixture = dir_fixture();
    let local = fixture.local();
    check_invalid_keys(&*fixture.target, &local).await;
    assert_eq!(files_on_disk(&fixture.root), Vec::<String>::new());
    // Nothing was written beside the target either ("../x" from backups/prod is backups/x).
    assert_eq!(files_on_disk(fixture.scratch.path()), ["local/source"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_put_file_and_get_to_file_20_mib() {
    let fixture = dir_fixture();
    check_file_roundtrip(&*fixture.target, &fixture.local(), 20 * MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_readers_never_see_a_partial_object() {
    let fixture = dir_fixture();
    check_atomic_replace(&*fixture.target, &fixture.local(), (24 * MIB, 16 * MIB), 8).await;
    // No temporary file left behind.
    assert_eq!(files_on_disk(&fixture.root), ["contexts/default/events/active.events"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_failed_put_leaves_the_old_object_and_no_temporary_file() {
    let fixture = dir_fixture();
    let target = &*fixture.target;
    let key = "contexts/default/events/active.events";
    target.put_bytes(key, Bytes::from_static(b"old")).await.expect("put");

    // A directory opens but cannot be read: the failure comes after the temporary file exists.
    let unreadable = fixture.local();
    match target.put_file(key, &unreadable).await {
        Err(TargetError::Io { path, .. }) => assert_eq!(path, unreadable),
        other => panic!("put_file of a directory: expected Io, got {other:?}"),
    }
    let missing = fixture.scratch.path().join("missing");
    match target.put_file("contexts/default/events/new.events", &missing).await {
        Err(error @ TargetError::Io { .. }) => {
            assert!(
                error.to_string().contains("missing"),
                "the error names the file: {error}"
            )
        }
        other => panic!("put_file of a missing file: expected Io, got {other:?}"),
    }
    assert_eq!(
        target.get_bytes(key).await.expect("get"),
        Some(Bytes::from_static(b"old"))
    );
    assert_eq!(files_on_disk(&fixture.root), [key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_get_to_file_refuses_to_overwrite_the_object_itself() {
    let fixture = dir_fixture();
    let key = "contexts/default/events/active.events";
    fixture
        .target
        .put_bytes(key, Bytes::from_static(b"precious"))
        .await
        .expect("put");
    let own_file = fixture.root.join(key);
    match fixture.target.get_to_file(key, &own_file).await {
        Err(TargetError::Io { path, .. }) => assert_eq!(path, own_file),
        other => panic!("get_to_file onto the object's own file: expected Io, got {other:?}"),
    }
    assert_eq!(
        fixture.target.get_bytes(key).await.expect("get"),
        Some(Bytes::from_static(b"precious"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_temporary_files_are_hidden_and_their_names_reserved() {
    let fixture = dir_fixture();
    let events = fixture.root.join("contexts/default/events");
    std::fs::create_dir_all(&events).expect("mkdir");
    // What a crash in the middle of a put leaves.
    std::fs::write(events.join(".active.events.0123456789abcdef.tmp"), b"partial").expect("write");
    std::fs::write(events.join(".keep"), b"").expect("write");
    assert_eq!(
        keys(&fixture.target.list("").await.expect("list")),
        ["contexts/default/events/.keep"]
    );
    let temp_key = "contexts/default/events/.active.events.0123456789abcdef.tmp";
    assert_invalid_key(fixture.target.get_bytes(temp_key).await, temp_key, "get_bytes");
    assert_invalid_key(fixture.target.delete(temp_key).await, temp_key, "delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_target_is_created_and_described_by_its_absolute_path() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path().join("a/b/c");
    let target = open_target(root.to_str().expect("UTF-8 path")).expect("open");
    assert!(root.is_dir());
    assert_eq!(target.describe(), root.display().to_string());
    target.put_bytes("k", Bytes::from_static(b"v")).await.expect("put");
    assert_eq!(std::fs::read(root.join("k")).expect("read"), b"v");

    // Reopening an existing directory sees what is there.
    let again = dir_target(&root).expect("reopen");
    assert_eq!(keys(&again.list("").await.expect("list")), ["k"]);

    let file = scratch.path().join("file");
    std::fs::write(&file, b"").expect("write");
    assert!(matches!(dir_target(&file), Err(TargetError::InvalidSpec { .. })));
}

#[test]
fn open_target_rejects_bad_specs() {
    for spec in [
        "",
        "s3://",
        "s3:///prefix",
        "s3://bad bucket",
        "s3://user@bucket/p",
        "s3://b/../x",
        "s3://b/a//b",
        "gs://b/p",
        "file:///x",
    ] {
        match open_target(spec) {
            Err(error @ TargetError::InvalidSpec { .. }) => {
                assert!(error.to_string().contains(&format!("{spec:?}")), "{error}")
            }
            other => panic!("{spec:?}: expected InvalidSpec, got {other:?}"),
        }
    }
}

#[test]
fn open_target_s3_is_described_by_its_url() {
    let target = open_target("s3://bucket/some/prefix/").expect("open");
    assert_eq!(target.describe(), "s3://bucket/some/prefix");
    assert_eq!(open_target("s3://bucket").expect("open").describe(), "s3://bucket");
    assert!(!format!("{target:?}").contains("secret"));
}

// --- S3 (moto) ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_bytes_roundtrip() {
    let (_server, target) = started_s3().await;
    assert_eq!(target.describe(), format!("s3://{BUCKET}/{PREFIX}"));
    check_bytes_roundtrip(&*target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_delete() {
    let (_server, target) = started_s3().await;
    check_delete(&*target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_list() {
    let (server, target) = started_s3().await;
    // Objects beside the prefix, one of them sharing it as a string, are not the target's.
    let neighbour = s3_test_target(&server, "backups/prod2").await;
    neighbour
        .put_bytes("manifests/000001.json", Bytes::from_static(b"{}"))
        .await
        .expect("put");
    let bucket = s3_test_target(&server, "").await;
    bucket
        .put_bytes("top-level", Bytes::from_static(b"x"))
        .await
        .expect("put");

    check_list(&*target).await;

    assert_eq!(
        keys(&neighbour.list("").await.expect("list")),
        ["manifests/000001.json"]
    );
    let whole_bucket = bucket.list("").await.expect("list bucket");
    assert!(whole_bucket.contains(&info("backups/prod/top", 4)), "{whole_bucket:?}");
    assert!(whole_bucket.contains(&info("top-level", 1)), "{whole_bucket:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_not_found() {
    let (_server, target) = started_s3().await;
    let scratch = tempfile::tempdir().expect("tempdir");
    check_not_found(&*target, scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_invalid_keys_are_rejected() {
    let (server, target) = started_s3().await;
    let scratch = tempfile::tempdir().expect("tempdir");
    check_invalid_keys(&*target, scratch.path()).await;
    let bucket = s3_test_target(&server, "").await;
    assert_eq!(bucket.list("").await.expect("list bucket"), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_put_file_and_get_to_file_20_mib() {
    let (_server, target) = started_s3().await;
    let scratch = tempfile::tempdir().expect("tempdir");
    check_file_roundtrip(&*target, scratch.path(), 20 * MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_readers_never_see_a_partial_object() {
    let (_server, target) = started_s3().await;
    let scratch = tempfile::tempdir().expect("tempdir");
    check_atomic_replace(&*target, scratch.path(), (6 * MIB, 4 * MIB), 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_multipart_upload_of_70_mib() {
    let (server, target) = started_s3().await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let size_bytes = 70 * MIB;
    assert!(size_bytes as u64 > MULTIPART_THRESHOLD_BYTES);
    let key = "contexts/default/events/00000000000000000000.events";
    let old = Bytes::from(pattern(1024, 3));
    target.put_bytes(key, old.clone()).await.expect("put old");

    let local = scratch.path().join("big.events");
    let digest = write_pattern_file(&local, size_bytes, 9);
    // Until the upload completes, the old object is the one there.
    let done = AtomicBool::new(false);
    let upload = async {
        target.put_file(key, &local).await.expect("multipart put_file");
        done.store(true, Ordering::SeqCst);
    };
    let observer = async {
        while !done.load(Ordering::SeqCst) {
            let listed = target.list("").await.expect("list during upload");
            assert_eq!(keys(&listed), [key]);
            assert!(
                listed[0].size == 1024 || listed[0].size == size_bytes as u64,
                "partial size {}",
                listed[0].size
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::join!(upload, observer);

    // It was a multipart upload: S3 ETags of those end in "-<parts>".
    let parts = size_bytes.div_ceil(MULTIPART_PART_BYTES);
    let etag = server.etag(BUCKET, &format!("{PREFIX}/{key}")).await;
    assert!(
        etag.ends_with(&format!("-{parts}")),
        "ETag {etag} is not that of a {parts}-part upload"
    );

    assert_eq!(target.list("").await.expect("list"), vec![info(key, size_bytes)]);
    let downloaded = scratch.path().join("download.events");
    assert_eq!(
        target.get_to_file(key, &downloaded).await.expect("get_to_file"),
        size_bytes as u64
    );
    assert!(
        sha256_file(&downloaded) == digest,
        "downloaded bytes differ from the uploaded file"
    );
}

// `open_target` configured from AWS_* variables is exercised end to end by the CLI's S3
// restore drill (crates/cli/tests/backup_drill.rs), which runs `myelin backup --to s3://…` with
// those variables set for the child process only.
