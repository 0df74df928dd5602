//! Which files a list of `-f` arguments names, where the lock file lives and
//! what the project is called by default. Reads directories, never files'
//! contents.

use std::path::{Path, PathBuf};

use super::diagnostic::Diagnostic;

/// The files a list of `-f` arguments names, in order: a directory means its
/// `*.yaml` and `*.yml` files, sorted by name; a file named twice counts once.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Diagnostic> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| {
            Diagnostic::new(
                format!("cannot read manifest `{}`: {e}", path.display()),
                None,
            )
            .help("pass the manifest with `-f FILE` or `-f DIR`, or create `agentform.yaml` here")
        })?;
        if meta.is_dir() {
            out.extend(yaml_files_in(path)?);
        } else {
            out.push(path.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    Ok(out)
}

/// The manifest files of one directory, sorted; none is an error.
fn yaml_files_in(dir: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Diagnostic::new(format!("cannot list `{}`: {e}", dir.display()), None))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(Diagnostic::new(
            format!(
                "directory `{}` holds no `*.yaml` manifest files",
                dir.display()
            ),
            None,
        ));
    }
    Ok(found)
}

/// The directory that holds the lock file: the first `-f` argument if it is a
/// directory, else the directory of that file.
pub(super) fn root_dir(first: &Path) -> PathBuf {
    if first.is_dir() {
        first.to_path_buf()
    } else {
        match first.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// The project name when no file sets `name`: the root directory's name.
pub(super) fn default_project(root: &Path) -> String {
    std::fs::canonicalize(root)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "agentform".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "version: 1\n").unwrap();
        p
    }

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_directory_means_its_yaml_files_sorted_by_name() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "b.yml");
        touch(dir.path(), "a.yaml");
        touch(dir.path(), "c.yaml");
        touch(dir.path(), "notes.txt");
        touch(dir.path(), "yaml");
        std::fs::create_dir(dir.path().join("d.yaml")).unwrap();
        let found = discover(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(names(&found), ["a.yaml", "b.yml", "c.yaml"]);
    }

    #[test]
    fn files_keep_the_order_given_and_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let z = touch(dir.path(), "z.yaml");
        let a = touch(dir.path(), "a.yaml");
        let again = dir.path().join(".").join("z.yaml");
        let found = discover(&[z.clone(), a.clone(), again, dir.path().to_path_buf()]).unwrap();
        assert_eq!(found, [z, a]);
    }

    #[test]
    fn a_missing_path_is_refused_with_help() {
        let dir = tempfile::tempdir().unwrap();
        let d = discover(&[dir.path().join("agentform.yaml")]).unwrap_err();
        assert!(
            d.message.starts_with("cannot read manifest `"),
            "{}",
            d.message
        );
        assert!(d.span.is_none());
        assert!(d.help.unwrap().contains("-f FILE"));
    }

    #[test]
    fn a_directory_without_manifests_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "readme.md");
        let d = discover(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(
            d.message.ends_with("holds no `*.yaml` manifest files"),
            "{}",
            d.message
        );
    }

    #[test]
    fn the_root_is_the_first_argument_or_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = touch(dir.path(), "agentform.yaml");
        assert_eq!(root_dir(dir.path()), dir.path());
        assert_eq!(root_dir(&file), dir.path());
        assert_eq!(root_dir(Path::new("agentform.yaml")), Path::new("."));
        let project = dir.path().file_name().unwrap().to_string_lossy();
        assert_eq!(default_project(dir.path()), project);
    }
}
