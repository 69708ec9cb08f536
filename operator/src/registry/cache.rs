//! Caches: immutable content by digest (shared across scans), tag answers per scan.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Content addressed by digest never changes, so it is kept across scans. Bounded by
/// `max_entries`; when full, an arbitrary half is dropped (cheap, and a scan refills
/// what it uses).
#[derive(Debug)]
pub(crate) struct ContentCache {
    entries: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    max_entries: usize,
}

impl ContentCache {
    pub(crate) fn new(max_entries: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(2),
        }
    }

    pub(crate) fn get(&self, digest: &str) -> Option<Arc<Vec<u8>>> {
        self.entries.lock().ok()?.get(digest).cloned()
    }

    pub(crate) fn put(&self, digest: &str, bytes: Arc<Vec<u8>>) {
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
}
