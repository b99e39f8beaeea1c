//! Axon Server's own files (segments, indexes, snapshots it wrote), which tests open to prove
//! Myelin reads what upstream writes. They stay outside the repository: by default in the
//! sibling directory `<workspace>/../shared/fixtures/axon-server-se`, elsewhere when the
//! environment variable [`FIXTURES_VAR`] names their directory. Every test finds them here.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// Names the directory of Axon Server's fixture files when it is not the default one.
pub const FIXTURES_VAR: &str = "MYELIN_AXON_FIXTURES";

/// The directory of Axon Server's fixture files. Panics, naming the path it expected and how to
/// point it elsewhere, when the directory is missing.
#[track_caller]
pub fn axon_fixtures() -> PathBuf {
    match locate(std::env::var_os(FIXTURES_VAR)) {
        Ok(dir) => dir,
        Err(missing) => panic!("{missing}"),
    }
}

/// One fixture, `relative` to [`axon_fixtures`]; panics naming the path when it is missing.
#[track_caller]
pub fn axon_fixture(relative: &str) -> PathBuf {
    let path = axon_fixtures().join(relative);
    assert!(
        path.exists(),
        "Axon Server fixture {relative} is missing: expected {}",
        path.display()
    );
    path
}

/// A writable copy of a fixture directory in a fresh temporary directory: the fixtures are
/// read-only, and a store writes index files next to its segments.
#[track_caller]
pub fn copy_axon_fixture(relative: &str) -> TempDir {
    let dir = tempfile::tempdir().expect("temporary directory for a fixture copy");
    copy_axon_fixture_into(relative, dir.path());
    dir
}

/// Copies a fixture directory (with its subdirectories) into `target`, creating it, every file
/// writable.
#[track_caller]
pub fn copy_axon_fixture_into(relative: &str, target: &Path) {
    copy_writable(&axon_fixture(relative), target);
}

/// The default place of the fixtures: next to the workspace, in `shared/`.
pub fn default_axon_fixtures() -> PathBuf {
    let root = crate::workspace_root();
    root.parent()
        .unwrap_or(&root)
        .join("shared")
        .join("fixtures")
        .join("axon-server-se")
}

/// The fixture directory was not found.
#[derive(Debug)]
pub struct MissingFixtures {
    expected: PathBuf,
    from_variable: bool,
}

impl fmt::Display for MissingFixtures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = if self.from_variable {
            format!("the directory {FIXTURES_VAR} names")
        } else {
            "the default place".to_string()
        };
        write!(
            f,
            "Axon Server's fixture files are not in {}, {source}; they are kept outside the \
             repository: put them there, or set {FIXTURES_VAR} to the directory that holds them \
             (its subdirectories are data/, token-at/, ...)",
            self.expected.display()
        )
    }
}

/// Where the fixtures are, given the value of [`FIXTURES_VAR`] (if set).
fn locate(variable: Option<OsString>) -> Result<PathBuf, MissingFixtures> {
    let from_variable = variable.as_ref().is_some_and(|value| !value.is_empty());
    let expected = match variable {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => default_axon_fixtures(),
    };
    if expected.is_dir() {
        Ok(expected)
    } else {
        Err(MissingFixtures {
            expected,
            from_variable,
        })
    }
}

fn copy_writable(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|error| panic!("create {}: {error}", to.display()));
    let entries = std::fs::read_dir(from).unwrap_or_else(|error| panic!("read {}: {error}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|error| panic!("read {}: {error}", from.display()));
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if source.is_dir() {
            copy_writable(&source, &target);
            continue;
        }
        std::fs::copy(&source, &target)
            .unwrap_or_else(|error| panic!("copy {} to {}: {error}", source.display(), target.display()));
        let mut permissions = std::fs::metadata(&target)
            .expect("metadata of a copied fixture")
            .permissions();
        // Only the copy's owner matters here, and it is this test.
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
        std::fs::set_permissions(&target, permissions).expect("a copied fixture made writable");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_named_with_the_variable_that_moves_it() {
        let nowhere = std::env::temp_dir().join("myelin-no-such-fixtures-dir");
        let missing = locate(Some(nowhere.clone().into_os_string())).expect_err("no such directory");
        let message = missing.to_string();
        assert!(message.contains(&nowhere.display().to_string()), "{message}");
        assert!(message.contains(FIXTURES_VAR), "{message}");
        assert!(message.contains("names"), "{message}");
    }

    #[test]
    fn without_the_variable_the_default_place_is_next_to_the_workspace() {
        let default = default_axon_fixtures();
        assert!(
            default.ends_with("shared/fixtures/axon-server-se"),
            "{}",
            default.display()
        );
        assert_eq!(
            default.parent().and_then(Path::parent).and_then(Path::parent),
            crate::workspace_root().parent()
        );
        match locate(None) {
            Ok(found) => assert_eq!(found, default),
            Err(missing) => {
                let message = missing.to_string();
                assert!(message.contains(&default.display().to_string()), "{message}");
                assert!(message.contains(FIXTURES_VAR), "{message}");
            }
        }
    }

    #[test]
    fn an_empty_variable_means_the_default_place() {
        let located = locate(Some(OsString::new())).map_err(|missing| missing.expected);
        let either = located.unwrap_or_else(|expected| expected);
        assert_eq!(either, default_axon_fixtures());
    }
}
