//! Writes seed corpora for the fuzz targets: files Myelin itself writes (segments, index and
//! bloom files of events and snapshots, a sealed backup manifest) and cut-down copies of Axon
//! Server's fixture files. Run by `fuzz/seed.sh`; compiles on stable:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example write_seeds -- <fixtures dir> <corpus dir>
//! ```
//!
//! Writes `<corpus dir>/<target>/<name>` and nothing else. Segment seeds are kept to a few KiB
//! (whole blocks only) so the fuzzers run fast; a segment's zero-filled tail carries nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use myelin_backup::manifest::{
    ContextEntry, FORMAT, FamilyEntry, FileEntry, Manifest, PreviousEntry, SegmentEntry, ServerEntry, hex, manifest_key,
};
use myelin_format::segment::{FILE_HEADER_BYTES, SegmentKind, decode_block};
use myelin_proto::grpc::SerializedObject;
use myelin_proto::grpc::event::Event;
use myelin_store::{ContextStore, StoreConfig};
use prost::Message;
use sha2::{Digest, Sha256};

/// Segment seeds end at the last whole block that fits in this many bytes.
const SEED_BYTES_MAX: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [fixtures, out] = args.as_slice() else {
        return Err("usage: write_seeds <fixtures dir> <corpus dir>".into());
    };
    let seeds = Seeds { out: out.clone() };
    myelin_written(&seeds)?;
    axon_written(&seeds, fixtures)?;
    Ok(())
}

struct Seeds {
    out: PathBuf,
}

impl Seeds {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)
    }
}

/// A small store with rolled segments of events and snapshots, then its files as seeds.
fn myelin_written(seeds: &Seeds) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = StoreConfig {
        segment_size_bytes: 1024,
        seek_interval_bytes: 256,
        ..StoreConfig::default()
    };
    let store = ContextStore::open(
        "default",
        dir.path().to_path_buf(),
        dir.path().to_path_buf(),
        config.clone(),
        config,
    )?;
    let mut sequences: BTreeMap<String, i64> = BTreeMap::new();
    for round in 0..20u8 {
        let mut transaction = Vec::new();
        for i in 0..=(round % 4) {
            let aggregate = match (round + i) % 5 {
                0 => String::new(), // an event of no aggregate: not indexed
                n => format!("order-{n}"),
            };
            let sequence = sequences.entry(aggregate.clone()).or_insert(0);
            transaction.push(event(&aggregate, *sequence, round));
            *sequence += 1;
        }
        store.append(transaction)?.wait()?;
        if round % 2 == 1 || round > 8 {
            let mut snapshot = Event::decode(event("order-1", sequences["order-1"] - 1, round).as_ref())?;
            snapshot.snapshot = true;
            store.append_snapshot(snapshot.encode_to_vec().into())?.wait()?;
        }
    }
    store.shutdown()?;
    drop(store);

    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir.path())? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let bytes = std::fs::read(&path)?;
        let seed_name = format!("myelin-{name}");
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
        match extension {
            "events" | "snapshots" => {
                let cut = whole_blocks(&bytes, SEED_BYTES_MAX);
                seeds.write("segment_block", &seed_name, cut)?;
                seeds.write("backup_scan", &seed_name, cut)?;
                seeds.write("recovery", &seed_name, cut)?;
            }
            "mindex" | "msindex" => seeds.write("index_file", &seed_name, &bytes)?,
            "mbloom" | "msbloom" => seeds.write("bloom_file", &seed_name, &bytes)?,
            _ => {}
        }
        files.push((name, bytes));
    }
    files.sort();
    seeds.write("backup_manifest", "myelin-000001.json", &manifest_of(&files, None)?)?;
    // A second run's manifest over a store of one segment per family: small, with every
    // optional field set.
    let first: Vec<(String, Vec<u8>)> = files
        .iter()
        .filter(|(name, _)| name.starts_with(&format!("{:020}.", 0)))
        .cloned()
        .collect();
    seeds.write(
        "backup_manifest",
        "myelin-000002.json",
        &manifest_of(&first, Some(&files))?,
    )?;
    seeds.write("backup_manifest", "manifest-key", manifest_key(1).as_bytes())?;

    // What recovery meets after crashes: a torn last block, a header only, nothing at all.
    if let Some((_, active)) = files.iter().rev().find(|(name, _)| name.ends_with(".events")) {
        let cut = whole_blocks(active, SEED_BYTES_MAX);
        let torn = &active[..(cut.len() + 9).min(active.len())];
        seeds.write("recovery", "myelin-torn-tail.events", torn)?;
    }
    seeds.write("recovery", "header-only.events", &[2, 0, 0, 0, 0])?;
    seeds.write("recovery", "empty.events", &[])?;
    Ok(())
}

fn event(aggregate: &str, sequence: i64, round: u8) -> bytes::Bytes {
    Event {
        message_identifier: format!("{aggregate}-{sequence}"),
        aggregate_identifier: aggregate.to_string(),
        aggregate_sequence_number: sequence,
        aggregate_type: if aggregate.is_empty() {
            String::new()
        } else {
            "Order".into()
        },
        timestamp: 1_700_000_000_000 + i64::from(round),
        payload: Some(SerializedObject {
            r#type: "OrderPlaced".into(),
            revision: "1".into(),
            data: vec![round; usize::from(round) * 7],
        }),
        meta_data: Default::default(),
        snapshot: false,
    }
    .encode_to_vec()
    .into()
}

/// The file header and the whole blocks that fit in `max` bytes, with the marker that ended
/// them (zero or roll) when it fits too.
fn whole_blocks(bytes: &[u8], max: usize) -> &[u8] {
    let mut end = FILE_HEADER_BYTES.min(bytes.len());
    while let Some(rest) = bytes.get(end..) {
        match decode_block(rest) {
            Ok(Some(block)) if end + block.total_bytes() <= max => end += block.total_bytes(),
            Ok(None) if end + 4 <= max => return &bytes[..end + 4],
            _ => break,
        }
    }
    &bytes[..end]
}

/// A sealed manifest listing `files` the way a backup of this store would; with `previous`,
/// the second run's, chained to the first and with a control database and a log file.
fn manifest_of(
    files: &[(String, Vec<u8>)],
    previous: Option<&[(String, Vec<u8>)]>,
) -> Result<Vec<u8>, serde_json::Error> {
    let entry = |name: &str, bytes: &[u8], family: &str| FileEntry {
        path: format!("contexts/default/{family}/{name}"),
        size: bytes.len() as u64,
        sha256: hex(&Sha256::digest(bytes)),
    };
    let family = |kind: SegmentKind| {
        let family_name = kind.data_suffix();
        let mut segments: Vec<SegmentEntry> = files
            .iter()
            .filter_map(|(name, _)| kind.parse_file_name(name))
            .map(|first| SegmentEntry {
                segment: first,
                first_token: first,
                last_token: None,
                files: files
                    .iter()
                    .filter(|(name, _)| name.starts_with(&format!("{first:020}.")))
                    .filter(|(name, _)| {
                        [kind.data_suffix(), kind.index_suffix(), kind.bloom_suffix()]
                            .iter()
                            .any(|suffix| name.ends_with(suffix))
                    })
                    .map(|(name, bytes)| entry(name, bytes, family_name))
                    .collect(),
            })
            .collect();
        segments.sort_by_key(|s| s.segment);
        let active = segments.pop();
        FamilyEntry {
            last_closed_segment: segments.last().map_or(-1, |s| s.segment as i64),
            closed: segments,
            active,
        }
    };
    let mut contexts = BTreeMap::new();
    contexts.insert(
        "default".to_string(),
        ContextEntry {
            last_token: 25,
            events: family(SegmentKind::Events),
            snapshots: family(SegmentKind::Snapshots),
        },
    );
    let mut manifest = Manifest {
        format: FORMAT,
        run: 1,
        created_at: 1_700_000_000_000,
        tool_version: "0.1.0".into(),
        server: ServerEntry {
            url: "http://127.0.0.1:8024".into(),
            version: Some("2025.1".into()),
            node: Some("myelin".into()),
        },
        previous: None,
        control_db: None,
        log: Vec::new(),
        cluster: None,
        contexts,
        sha256: None,
    };
    if let Some(previous) = previous {
        manifest.run = 2;
        manifest.previous = Some(PreviousEntry {
            path: manifest_key(1),
            sha256: hex(&Sha256::digest(manifest_of(previous, None)?)),
        });
        manifest.control_db = Some(FileEntry {
            path: "control/controldb.zip".into(),
            size: 3,
            sha256: hex(&Sha256::digest(b"zip")),
        });
        manifest.log = vec![FileEntry {
            path: "log/default/00000000000000000001.log".into(),
            size: 0,
            sha256: hex(&Sha256::digest(b"")),
        }];
    }
    manifest.seal()
}

/// Axon Server's fixture files, cut down: segments to their first few KiB of whole blocks
/// (and single blocks from their middle), the small foreign `.bloom` files whole (Myelin never
/// reads them, but they are real files with the wrong magic), a MapDB `.index` prefix.
fn axon_written(seeds: &Seeds, fixtures: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut stack = vec![fixtures.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(fixtures)?.to_string_lossy().replace('/', "-");
            let name = format!("axon-{relative}");
            let bytes = std::fs::read(&path)?;
            match path.extension().and_then(|e| e.to_str()).unwrap_or_default() {
                "events" | "snapshots" => {
                    let cut = whole_blocks(&bytes, SEED_BYTES_MAX);
                    seeds.write("segment_block", &name, cut)?;
                    seeds.write("backup_scan", &name, cut)?;
                    seeds.write("recovery", &name, cut)?;
                    if let Some(block) = middle_block(&bytes) {
                        seeds.write("segment_block", &format!("{name}-middle-block"), block)?;
                    }
                }
                "bloom" | "sbloom" => seeds.write("bloom_file", &name, &bytes)?,
                "index" | "sindex" => seeds.write("index_file", &name, &bytes[..bytes.len().min(SEED_BYTES_MAX)])?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// A block from the middle of a segment, alone (the decoder also meets blocks without a file
/// header in front: every read through an index starts at one).
fn middle_block(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = FILE_HEADER_BYTES;
    let mut blocks = Vec::new();
    while let Ok(Some(block)) = decode_block(bytes.get(at..)?) {
        blocks.push(at..at + block.total_bytes());
        at += block.total_bytes();
    }
    let middle = blocks.get(blocks.len() / 2)?.clone();
    (middle.len() <= SEED_BYTES_MAX).then(|| &bytes[middle])
}
