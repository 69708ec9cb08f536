//! Verdicts by (key, repository, digest): in memory, and optionally one small file
//! each in a folder (`DIR/<64 hex>`, `verified|invalid` on the first line, the detail
//! on the second), written to a temporary file and renamed so a crash leaves no
//! partial entry.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing::debug;

use super::SignatureVerdict;

/// Entries kept in memory at most; when full, the map is cleared (a verdict is cheap
/// to recompute and the folder keeps it).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
pub(super) struct VerdictCache {
    entries: Mutex<HashMap<String, (SignatureVerdict, String)>>,
    dir: Option<PathBuf>,
}

impl VerdictCache {
    pub(super) fn new(dir: Option<PathBuf>) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            dir,
        }
    }

    /// `key` is 64 lowercase hex digits (a SHA-256), so it never names a path outside
    /// the folder.
    fn path(&self, key: &str) -> Option<PathBuf> {
        let ok = key.len() == 64
            && key
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| self.dir.as_ref().map(|d| d.join(key))).flatten()
    }

    pub(super) fn get(&self, key: &str) -> Option<(SignatureVerdict, String)> {
        if let Some(hit) = self.entries.lock().ok()?.get(key).cloned() {
            return Some(hit);
        }
        let text = std::fs::read_to_string(self.path(key)?).ok()?;
        let (verdict, detail) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let verdict = match verdict {
            "verified" => SignatureVerdict::Verified,
            "invalid" => SignatureVerdict::Invalid,
            _ => return None,
        };
        let hit = (verdict, detail.trim_end().to_owned());
        self.remember(key, hit.clone());
        Some(hit)
    }

    pub(super) fn put(&self, key: &str, verdict: SignatureVerdict, detail: &str) {
        if let Some(path) = self.path(key) {
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    let dir = path.parent().unwrap_or(std::path::Path::new("."));
                    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
                    writeln!(tmp, "{verdict}\n{detail}")?;
                    tmp.persist(&path).map_err(|e| e.error)?;
                    Ok(())
                });
            if let Err(e) = written {
                debug!(path = %path.display(), error = %e, "verdict cache not written");
            }
        }
        self.remember(key, (verdict, detail.to_owned()));
    }

    fn remember(&self, key: &str, value: (SignatureVerdict, String)) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key.to_owned(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_survive_a_new_cache_and_odd_keys_name_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = "a".repeat(64);
        VerdictCache::new(Some(dir.path().into())).put(
            &key,
            SignatureVerdict::Invalid,
            "payload names sha256:00",
        );
        let again = VerdictCache::new(Some(dir.path().into()));
        assert_eq!(
            again.get(&key),
            Some((SignatureVerdict::Invalid, "payload names sha256:00".into()))
        );
        assert!(again.path("../../etc/passwd").is_none());
        assert!(again.get(&"b".repeat(64)).is_none());
    }
}
