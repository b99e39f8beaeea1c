//! The catalogue ([`myelin_node::codes`]) is the only production source file that spells an
//! Axon error code: every other file names codes through `ErrorCode`, so a code can never be
//! mistyped, and changing one means changing one line. Test code may spell codes (it checks
//! what clients see on the wire).

use std::path::{Path, PathBuf};

/// The text every Axon error code starts with.
const CODE_PREFIX: &str = concat!("AXONIQ", "-");

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

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

/// The file without its unit-test module (`#[cfg(test)] mod ... { ... }`, last in a file by
/// this workspace's habit).
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

/// Every `src/` directory of the workspace's crates and of the fuzz targets.
fn source_dirs() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut dirs = vec![root.join("fuzz/src"), root.join("fuzz/fuzz_targets")];
    if let Ok(crates) = std::fs::read_dir(root.join("crates")) {
        for krate in crates.flatten() {
            dirs.push(krate.path().join("src"));
        }
    }
    dirs
}

#[test]
fn only_the_catalogue_spells_an_axon_error_code() {
    let catalogue = workspace_root().join("crates/node/src/codes.rs");
    let mut files = Vec::new();
    for dir in source_dirs() {
        rust_files(&dir, &mut files);
    }
    assert!(files.len() > 50, "the walk found too few files: {}", files.len());
    let mut offenders = Vec::new();
    for file in files {
        if file.ends_with("crates/node/src/codes.rs") || file == catalogue {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (number, line) in production_part(&text).lines().enumerate() {
            if line.contains(CODE_PREFIX) {
                offenders.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "Axon error codes spelled outside crates/node/src/codes.rs (use myelin_node::ErrorCode):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_catalogue_does_spell_the_codes() {
    let text = std::fs::read_to_string(workspace_root().join("crates/node/src/codes.rs")).unwrap_or_default();
    assert!(text.contains(&format!("{CODE_PREFIX}6000")));
}

#[test]
fn a_unit_test_module_is_not_production_code() {
    let text = "fn a() {}\n\n#[cfg(test)]\nmod tests {\n    const X: &str = \"code\";\n}\n";
    assert_eq!(production_part(text), "fn a() {}\n\n");
    assert_eq!(production_part("fn b() {}\n"), "fn b() {}\n");
}
