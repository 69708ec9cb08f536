//! Caches: immutable content by digest (shared across scans, optionally persisted in a
//! folder so a restarted watcher reads no unchanged manifest again), tag answers per
//! scan.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};
use tracing::debug;

/// Content addressed by digest never changes, so it is kept across scans. Bounded by
/// `max_entries` in memory; when full, an arbitrary half is dropped (cheap, and a scan
/// refills what it uses). With a folder, every `sha256:` entry is also a file
/// `DIR/sha256/<hex>` (written to a temporary file and renamed, so a crash leaves no
/// partial entry); a file is used only when its bytes hash to its name.
#[derive(Debug)]
pub(crate) struct ContentCache {
    entries: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    max_entries: usize,
    dir: Option<PathBuf>,
}

/// The file of `digest` under `dir`: only `sha256:` + 64 lowercase hex digits (so a
/// digest from a registry can never name a path outside the folder).
fn entry_path(dir: &Path, digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| dir.join("sha256").join(hex))
}

fn hashes_to(bytes: &[u8], digest: &str) -> bool {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    digest.strip_prefix("sha256:") == Some(hex.as_str())
}

impl ContentCache {
    pub(crate) fn new(max_entries: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(2),
            dir: None,
        }
    }

    /// Also persisted under `dir` (created on first write).
    pub(crate) fn persisted(max_entries: usize, dir: PathBuf) -> Self {
        Self {
            dir: Some(dir),
            ..Self::new(max_entries)
        }
    }

    pub(crate) fn get(&self, digest: &str) -> Option<Arc<Vec<u8>>> {
        if let Some(hit) = self.entries.lock().ok()?.get(digest).cloned() {
            return Some(hit);
        }
        let path = entry_path(self.dir.as_deref()?, digest)?;
        let bytes = std::fs::read(&path).ok()?;
        if !hashes_to(&bytes, digest) {
            debug!(path = %path.display(), "cached content does not match its digest; ignored");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let bytes = Arc::new(bytes);
        self.remember(digest, bytes.clone());
        Some(bytes)
    }

    pub(crate) fn put(&self, digest: &str, bytes: Arc<Vec<u8>>) {
        if let Some(path) = self.dir.as_deref().and_then(|d| entry_path(d, digest)) {
            if !path.exists() && hashes_to(&bytes, digest) {
                if let Err(e) = write_atomically(&path, &bytes) {
                    debug!(path = %path.display(), error = %e, "content cache not written");
                }
            }
        }
        self.remember(digest, bytes);
    }

    fn remember(&self, digest: &str, bytes: Arc<Vec<u8>>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= self.max_entries {
                let drop: Vec<String> =
                    entries.keys().take(self.max_entries / 2).cloned().collect();
                for key in drop {
                    entries.remove(&key);
                }
            }
            entries.insert(digest.to_owned(), bytes);
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Tag → answer, valid for one scan only (tags are mutable).
#[derive(Debug)]
pub(crate) struct ScanCache<T: Clone> {
    entries: Mutex<HashMap<String, T>>,
}

impl<T: Clone> Default for ScanCache<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> ScanCache<T> {
    pub(crate) fn get(&self, key: &str) -> Option<T> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    pub(crate) fn put(&self, key: String, value: T) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(key, value);
        }
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_cache_stays_bounded() {
        let cache = ContentCache::new(4);
        for i in 0..10 {
            cache.put(&format!("sha256:{i}"), Arc::new(vec![i]));
        }
        assert!(cache.entries.lock().unwrap().len() <= 4);
        assert_eq!(cache.get("sha256:9").as_deref(), Some(&vec![9]));
    }

    fn digest_of(bytes: &[u8]) -> String {
        let hash = Sha256::digest(bytes);
        format!(
            "sha256:{}",
            hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    #[test]
    fn persisted_content_survives_a_new_cache_and_rejects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let body = br#"{"schemaVersion":2}"#.to_vec();
        let digest = digest_of(&body);
        ContentCache::persisted(8, dir.path().into()).put(&digest, Arc::new(body.clone()));
        let again = ContentCache::persisted(8, dir.path().into());
        assert_eq!(again.get(&digest).as_deref(), Some(&body));

        // A file whose bytes do not hash to its name is ignored and removed.
        let path = entry_path(dir.path(), &digest).unwrap();
        std::fs::write(&path, b"tampered").unwrap();
        let third = ContentCache::persisted(8, dir.path().into());
        assert!(third.get(&digest).is_none());
        assert!(!path.exists());
    }

    #[test]
    fn only_sha256_digests_name_files() {
        let dir = Path::new("/cache");
        assert!(entry_path(dir, "sha256:../../etc/passwd").is_none());
        assert!(entry_path(dir, &format!("sha512:{}", "a".repeat(128))).is_none());
        assert!(entry_path(dir, &format!("sha256:{}", "A".repeat(64))).is_none());
        assert_eq!(
            entry_path(dir, &format!("sha256:{}", "0".repeat(64))),
            Some(dir.join("sha256").join("0".repeat(64)))
        );
        // Content whose bytes do not match the digest is never persisted.
        let tmp = tempfile::tempdir().unwrap();
        let cache = ContentCache::persisted(8, tmp.path().into());
        cache.put(
            &format!("sha256:{}", "0".repeat(64)),
            Arc::new(b"x".to_vec()),
        );
        assert!(!tmp.path().join("sha256").exists());
    }
}
