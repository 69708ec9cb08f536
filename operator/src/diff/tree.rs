//! The base side of a diff: `images.yaml` and the Dockerfiles of its local sources as
//! they are at a git ref, written from the repository's object database (git2) into a
//! folder, so the same analysis can read them as it reads the working tree.
//!
//! Only what the analysis reads is written: the enrollment file and, for each local
//! (`source.path`) image, its Dockerfile, at the same paths relative to the repository
//! root. Git sources are fetched by the analysis itself.

use std::path::{Component, Path, PathBuf};

use crate::enrollment::{self, Source};

/// Why the base side could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The enrollment file is not inside a git working tree.
    #[error("{file} is not in a git working tree ({message}); `diff` compares it with a commit of its repository")]
    NoRepository {
        /// The enrollment file.
        file: PathBuf,
        /// libgit2's message.
        message: String,
    },
    /// The ref names no commit.
    #[error("--base {reference:?} names no commit of {repository} ({message}); use a branch, tag or commit such as HEAD, main or origin/main (fetch it first in CI)")]
    UnknownRef {
        /// The ref as given.
        reference: String,
        /// The repository's working tree.
        repository: PathBuf,
        /// libgit2's message.
        message: String,
    },
    /// Reading an object of the repository failed.
    #[error("cannot read {path} at {commit}: {message}")]
    Object {
        /// The path inside the repository.
        path: String,
        /// The commit.
        commit: String,
        /// libgit2's message.
        message: String,
    },
    /// The enrollment file at the ref is not a valid enrollment.
    #[error("{file} at {reference} is not a valid enrollment ({errors} error(s)), so there is nothing to compare with: pass a --base where it is valid, or check {reference} out and run `image-factory validate`")]
    InvalidBase {
        /// The file's path in the repository.
        file: String,
        /// The ref.
        reference: String,
        /// How many errors.
        errors: usize,
    },
    /// A folder or file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The enrollment file of the working tree, located in its repository.
#[derive(Debug, Clone)]
pub struct Located {
    /// The working tree's root (canonical).
    pub root: PathBuf,
    /// The enrollment file relative to `root`, with `/` separators.
    pub file: String,
}

/// Finds the repository holding `file` (which must exist) by walking up from it.
///
/// # Errors
///
/// [`TreeError::NoRepository`] when it is in none (or in a bare one).
pub fn locate(file: &Path) -> Result<Located, TreeError> {
    let no_repo = |message: String| TreeError::NoRepository {
        file: file.to_path_buf(),
        message,
    };
    let abs = std::fs::canonicalize(file).map_err(|e| no_repo(e.to_string()))?;
    let dir = abs.parent().unwrap_or(Path::new("/"));
    let repo = git2::Repository::discover(dir).map_err(|e| no_repo(e.message().to_string()))?;
    let root = repo
        .workdir()
        .ok_or_else(|| no_repo("a bare repository has no working tree".to_string()))?;
    let root = std::fs::canonicalize(root).map_err(|e| no_repo(e.to_string()))?;
    let rel = abs
        .strip_prefix(&root)
        .map_err(|_| no_repo(format!("not under {}", root.display())))?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Ok(Located {
        root,
        file: parts.join("/"),
    })
}

/// What [`materialize`] wrote.
#[derive(Debug, Clone)]
pub struct Materialized {
    /// The commit the ref resolved to (40 hex digits).
    pub commit: String,
    /// The enrollment file inside the destination; `None` when the ref has no such file
    /// (the change adds it: everything is new).
    pub enrollment: Option<PathBuf>,
}

/// Writes the enrollment file `located.file` as it is at `reference` (any revision git
/// understands: `HEAD`, `main`, `origin/main`, `HEAD^1`, a commit id) into `dest`, at
/// the same path relative to `dest` as to the repository root, and next to it the
/// folder and Dockerfile of every local source it enrolls. A local source outside the
/// repository, or a folder or Dockerfile missing at the ref, is not written (the
/// analysis then reports it).
///
/// # Errors
///
/// [`TreeError::UnknownRef`], [`TreeError::Object`], [`TreeError::InvalidBase`] when the
/// file at the ref is not a valid enrollment, [`TreeError::Write`].
pub fn materialize(
    located: &Located,
    reference: &str,
    dest: &Path,
) -> Result<Materialized, TreeError> {
    let repo = git2::Repository::open(&located.root).map_err(|e| TreeError::NoRepository {
        file: located.root.join(&located.file),
        message: e.message().to_string(),
    })?;
    let commit = repo
        .revparse_single(reference)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| TreeError::UnknownRef {
            reference: reference.to_string(),
            repository: located.root.clone(),
            message: e.message().to_string(),
        })?;
    let id = commit.id().to_string();
    let object = |path: &str, e: git2::Error| TreeError::Object {
        path: path.to_string(),
        commit: id.clone(),
        message: e.message().to_string(),
    };
    let tree = commit.tree().map_err(|e| object("/", e))?;
    let Some(text) =
        read_blob(&repo, &tree, &located.file).map_err(|e| object(&located.file, e))?
    else {
        return Ok(Materialized {
            commit: id,
            enrollment: None,
        });
    };
    let file = dest.join(&located.file);
    write(&file, &text)?;
    let parent = Path::new(&located.file)
        .parent()
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let base_dir = file.parent().unwrap_or(dest).to_path_buf();
    let enrollment = enrollment::parse(&located.file, &String::from_utf8_lossy(&text), &base_dir)
        .map_err(|e| TreeError::InvalidBase {
        file: located.file.clone(),
        reference: reference.to_string(),
        errors: match e {
            enrollment::EnrollmentError::Invalid { diagnostics, .. } => diagnostics
                .iter()
                .filter(|d| d.severity == enrollment::Severity::Error)
                .count(),
            enrollment::EnrollmentError::Read { .. } => 1,
        },
    })?;
    for image in &enrollment.images {
        let Some(build) = &image.build else { continue };
        let Source::Path { raw, .. } = &build.source else {
            continue;
        };
        let Some(source_dir) = inside_repository(&parent.join(raw)) else {
            continue;
        };
        let is_dir = source_dir.is_empty()
            || tree
                .get_path(Path::new(&source_dir))
                .is_ok_and(|e| e.kind() == Some(git2::ObjectType::Tree));
        if !is_dir {
            continue;
        }
        let made = dest.join(&source_dir);
        std::fs::create_dir_all(&made).map_err(|source| TreeError::Write { path: made, source })?;
        let Some(rel) = inside_repository(&Path::new(&source_dir).join(&build.dockerfile)) else {
            continue;
        };
        if let Some(content) = read_blob(&repo, &tree, &rel).map_err(|e| object(&rel, e))? {
            write(&dest.join(&rel), &content)?;
        }
    }
    Ok(Materialized {
        commit: id,
        enrollment: Some(file),
    })
}

/// `path` (relative to the repository root) with `.` and `..` resolved, `/`-separated
/// (empty for the root itself); `None` when it leaves the repository or is absolute.
fn inside_repository(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// The content of the blob at `path` in `tree`; `None` when there is none (or it is a
/// folder).
fn read_blob(
    repo: &git2::Repository,
    tree: &git2::Tree<'_>,
    path: &str,
) -> Result<Option<Vec<u8>>, git2::Error> {
    let entry = match tree.get_path(Path::new(path)) {
        Ok(entry) => entry,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if entry.kind() != Some(git2::ObjectType::Blob) {
        return Ok(None);
    }
    let blob = repo.find_blob(entry.id())?;
    Ok(Some(blob.content().to_vec()))
}

fn write(path: &Path, content: &[u8]) -> Result<(), TreeError> {
    let err = |source| TreeError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::write(path, content).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::inside_repository;
    use std::path::Path;

    #[test]
    fn paths_that_leave_the_repository_are_refused() {
        assert_eq!(
            inside_repository(Path::new("team/../examples/app/./Dockerfile")).as_deref(),
            Some("examples/app/Dockerfile")
        );
        assert_eq!(inside_repository(Path::new("./.")).as_deref(), Some(""));
        assert_eq!(inside_repository(Path::new("../outside/Dockerfile")), None);
        assert_eq!(inside_repository(Path::new("/etc/passwd")), None);
    }
}
