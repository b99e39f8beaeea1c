//! This crate is the one place that renames a file into place or fsyncs one: a test fails if
//! any other crate's production code calls `std::fs::rename` or `File::sync_all` itself, so a
//! new crash-safe write cannot quietly bring back a private copy of the sequence without the
//! failpoints. (`sync_data`, the store's per-batch `fdatasync` of its active segment, is not a
//! crash-safe file replacement and stays the store's.)
//!
//! Exempt: the disk probe of the benchmark crate, whose job is to time a raw fsync.

use std::path::{Path, PathBuf};

const FORBIDDEN: &[&str] = &["fs::rename(", ".sync_all()"];
const EXEMPT: &[&str] = &["crates/fsutil/", "crates/bench/src/probe.rs"];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The file without its unit-test module (`#[cfg(test)] mod ...`, last in a file by this
/// workspace's habit).
fn production_part(text: &str) -> &str {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == "#[cfg(test)]" && text[offset + line.len()..].trim_start().starts_with("mod ") {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
}

#[test]
fn only_fsutil_renames_or_fsyncs_files_in_production_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).expect("crates/").flatten() {
        rust_files(&krate.path().join("src"), &mut files);
    }
    assert!(files.len() > 50, "the walk found too few files: {}", files.len());
    let mut offenders = Vec::new();
    for file in &files {
        let relative = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .to_string_lossy()
            .replace('\\', "/");
        if EXEMPT.iter().any(|exempt| relative.starts_with(exempt)) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (number, line) in production_part(&text).lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if FORBIDDEN.iter().any(|call| code.contains(call)) {
                offenders.push(format!("{relative}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "crash-safe file operations outside myelin-fsutil (use its AtomicFile, write_atomically, rename, sync_all):\n{}",
        offenders.join("\n")
    );
}
