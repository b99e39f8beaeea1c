//! Walking the workspace's production sources, for the tidy tests that keep one job in one
//! place (Axon's codes in the node's catalogue, crash-safe writes in fsutil).

use std::path::{Path, PathBuf};

/// One production source file: its path relative to the workspace root (with `/`), and its
/// text without the unit-test module.
pub struct Source {
    pub path: String,
    pub text: String,
}

/// Every `.rs` file under each crate's `src/` (and under `extra` directories, relative to the
/// workspace root), without their unit-test modules.
pub fn production_sources(extra: &[&str]) -> Vec<Source> {
    let root = crate::workspace_root();
    let mut dirs: Vec<PathBuf> = extra.iter().map(|dir| root.join(dir)).collect();
    if let Ok(crates) = std::fs::read_dir(root.join("crates")) {
        dirs.extend(crates.flatten().map(|krate| krate.path().join("src")));
    }
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(&dir, &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            Source {
                path: file
                    .strip_prefix(&root)
                    .unwrap_or(&file)
                    .to_string_lossy()
                    .replace('\\', "/"),
                text: production_part(&text).to_string(),
            }
        })
        .collect()
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

/// The file without its unit-test module (`#[cfg(test)] mod ...`, last in a file by this
/// workspace's habit).
pub fn production_part(text: &str) -> &str {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == "#[cfg(test)]" && text[offset + line.len()..].trim_start().starts_with("mod ") {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_test_module_is_not_production_code() {
        let text = "fn a() {}\n\n#[cfg(test)]\nmod tests {\n    const X: &str = \"code\";\n}\n";
        assert_eq!(production_part(text), "fn a() {}\n\n");
        assert_eq!(production_part("fn b() {}\n"), "fn b() {}\n");
    }

    #[test]
    fn the_walk_finds_this_file() {
        let sources = production_sources(&[]);
        assert!(sources.iter().any(|source| source.path == "crates/testkit/src/tidy.rs"));
    }
}
