//! Fuzz body: bytes as a backup manifest (`manifests/NNNNNN.json`), through
//! `myelin_backup::manifest`.
//!
//! * `Manifest::open` (parse, format check, self-checksum) must never panic; a manifest it
//!   accepts lists its files and seals again to the same checksum.
//! * Any JSON that has the manifest's shape, sealed, must open to the same manifest (or be
//!   refused for its format number only): the checksum's canonical form is stable.
//! * A manifest key parsed from the bytes formats back to the same key.

use myelin_backup::manifest::{FORMAT, Manifest, ManifestError, manifest_key, parse_manifest_key};

pub fn run(data: &[u8]) {
    if let Ok(manifest) = Manifest::open(data) {
        opened(&manifest);
    }
    if let Ok(mut manifest) = serde_json::from_slice::<Manifest>(data) {
        let sealed = manifest.seal().expect("a parsed manifest serialises");
        match Manifest::open(&sealed) {
            Ok(opened) => assert_eq!(opened, manifest, "sealed manifest reopens unchanged"),
            Err(ManifestError::Format(format)) => assert_ne!(format, FORMAT),
            Err(e) => panic!("a freshly sealed manifest is refused: {e}"),
        }
    }
    if let Ok(key) = std::str::from_utf8(data)
        && let Some(run) = parse_manifest_key(key)
    {
        assert_eq!(manifest_key(run), key);
    }
}

fn opened(manifest: &Manifest) {
    assert_eq!(manifest.format, FORMAT);
    let files = manifest.files();
    let listed = usize::from(manifest.control_db.is_some())
        + manifest.log.len()
        + manifest
            .contexts
            .values()
            .flat_map(|c| [&c.events, &c.snapshots])
            .flat_map(|f| f.closed.iter().chain(f.active.iter()))
            .map(|s| s.files.len())
            .sum::<usize>();
    assert_eq!(files.len(), listed);
    for context in manifest.contexts.values() {
        let _ = (context.events.last_token(), context.snapshots.last_token());
    }
    let mut resealed = manifest.clone();
    resealed.seal().expect("an opened manifest serialises");
    assert_eq!(&resealed, manifest, "sealing again gives the recorded checksum");
}
