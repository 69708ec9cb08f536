//! A stat cache of local Dockerfiles' source fingerprints, kept under the cache folder
//! (`CACHE_DIR/dockerfile-stat-cache`), never in `state/`: when a file's size,
//! modification time, change time, inode and device are what they were when its
//! fingerprint was computed, incremental analysis takes the fingerprint from here
//! instead of reading and hashing the file (git's index does the same for `git status`).
//!
//! Safety:
//! - the change time (`ctime`) cannot be set by a user and moves on every write, so an
//!   edit that keeps the size and restores the modification time is still seen;
//! - an entry is only recorded for a file last changed more than [`SETTLE`] before it is
//!   recorded ("racily clean" files, changed again within one timestamp tick, are hashed
//!   every time, as git does);
//! - the fingerprint's other inputs (analyzer version, Dockerfile path, build args) are
//!   part of the key, so a changed build arg never takes an old fingerprint;
//! - the file is a cache: one that is missing, unreadable or malformed is ignored (and
//!   rewritten), and it is replaced atomically (a temporary file and a rename).
//!
//! Format: one line per file, tab-separated: absolute path, key (the fingerprint of the
//! non-content inputs), size, mtime (ns), ctime (ns), inode, device, fingerprint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The cache's file name under the cache folder.
pub const FILE: &str = "dockerfile-stat-cache";

/// How long a file must be unchanged before its fingerprint is cached (2 s: coarser than
/// any file system's timestamp granularity we run on, FAT's 2 s included).
pub const SETTLE: Duration = Duration::from_secs(2);

/// What identifies one version of a file, as `stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    device: u64,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }

    /// The later of the two change times, as a `SystemTime`.
    fn changed(&self) -> SystemTime {
        let ns = self.mtime_ns.max(self.ctime_ns).max(0);
        let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
        let nanos = u32::try_from(ns % 1_000_000_000).unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: String,
    stat: Stat,
    fingerprint: String,
}

/// The cache: read once per analysis, consulted and fed from many threads, written once.
#[derive(Debug, Default)]
pub struct StatCache {
    path: Option<PathBuf>,
    entries: HashMap<PathBuf, Entry>,
    recorded: Mutex<Vec<(PathBuf, Entry)>>,
}

impl StatCache {
    /// The cache in `cache_dir` (empty when the file is missing or unreadable).
    pub fn load(cache_dir: &Path) -> Self {
        let path = cache_dir.join(FILE);
        let entries = std::fs::read_to_string(&path)
            .map(|text| text.lines().filter_map(parse_line).collect())
            .unwrap_or_default();
        Self {
            path: Some(path),
            entries,
            recorded: Mutex::new(Vec::new()),
        }
    }

    /// The cached fingerprint of `file` for `key` (the fingerprint of the non-content
    /// inputs), when the file's `stat` is unchanged since it was recorded; `None` when
    /// it must be read (not cached, changed, or `stat` failed).
    pub fn lookup(&self, file: &Path, key: &str) -> Option<String> {
        let entry = self.entries.get(file).filter(|e| e.key == key)?;
        let stat = Stat::of(&std::fs::metadata(file).ok()?);
        (stat == entry.stat).then(|| entry.fingerprint.clone())
    }

    /// Records `fingerprint` for `file` (read and hashed now) under `key`, when the file
    /// was last changed more than [`SETTLE`] ago.
    pub fn record(&self, file: &Path, key: &str, fingerprint: &str) {
        let Ok(meta) = std::fs::metadata(file) else {
            return;
        };
        let stat = Stat::of(&meta);
        let settled = SystemTime::now()
            .duration_since(stat.changed())
            .is_ok_and(|age| age > SETTLE);
        let known = self
            .entries
            .get(file)
            .is_some_and(|e| e.key == key && e.stat == stat && e.fingerprint == fingerprint);
        if !settled || known {
            return;
        }
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.push((
                file.to_path_buf(),
                Entry {
                    key: key.to_string(),
                    stat,
                    fingerprint: fingerprint.to_string(),
                },
            ));
        }
    }

    /// Writes the cache back when something was recorded, keeping only the entries of
    /// `files` (the local Dockerfiles of this enrollment) so removed images drop out.
    /// Failures are logged, never returned: the cache is an optimization.
    pub fn save(self, files: &std::collections::HashSet<PathBuf>) {
        let Some(path) = self.path else { return };
        let recorded = self.recorded.into_inner().unwrap_or_default();
        let stale = self.entries.keys().any(|p| !files.contains(p));
        if recorded.is_empty() && !stale {
            return;
        }
        let mut entries = self.entries;
        entries.extend(recorded);
        entries.retain(|p, _| files.contains(p));
        let mut lines: Vec<String> = entries
            .iter()
            .filter_map(|(p, e)| {
                let p = p.to_str().filter(|p| !p.contains(['\t', '\n']))?;
                Some(format!(
                    "{p}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                    e.key,
                    e.stat.size,
                    e.stat.mtime_ns,
                    e.stat.ctime_ns,
                    e.stat.inode,
                    e.stat.device,
                    e.fingerprint
                ))
            })
            .collect();
        lines.sort();
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            std::fs::write(&tmp, lines.concat())?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::debug!(path = %path.display(), error = %e, "cannot write the stat cache");
        }
    }
}

fn parse_line(line: &str) -> Option<(PathBuf, Entry)> {
    let mut f = line.split('\t');
    let path = PathBuf::from(f.next()?);
    let key = f.next()?.to_string();
    let stat = Stat {
        size: f.next()?.parse().ok()?,
        mtime_ns: f.next()?.parse().ok()?,
        ctime_ns: f.next()?.parse().ok()?,
        inode: f.next()?.parse().ok()?,
        device: f.next()?.parse().ok()?,
    };
    let fingerprint = f.next()?.to_string();
    if f.next().is_some() || !path.is_absolute() {
        return None;
    }
    Some((
        path,
        Entry {
            key,
            stat,
            fingerprint,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn write(file: &Path, text: &str) {
        std::fs::write(file, text).unwrap();
    }

    fn entries(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join(FILE))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_fresh_file_is_not_cached_and_a_settled_one_is_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Dockerfile");
        write(&file, "FROM a\n");
        // Just written: racily clean, not recorded.
        let cache = StatCache::load(dir.path());
        cache.record(&file, "k", "sha256:1");
        cache.save(&HashSet::from([file.clone()]));
        assert!(entries(dir.path()).is_empty());

        // Settled (recorded as if the stat were SETTLE old: write the line directly).
        let stat = Stat::of(&std::fs::metadata(&file).unwrap());
        let line = format!(
            "{}\tk\t{}\t{}\t{}\t{}\t{}\tsha256:1\n",
            file.display(),
            stat.size,
            stat.mtime_ns,
            stat.ctime_ns,
            stat.inode,
            stat.device
        );
        std::fs::write(dir.path().join(FILE), &line).unwrap();
        let cache = StatCache::load(dir.path());
        assert_eq!(cache.lookup(&file, "k").as_deref(), Some("sha256:1"));
        assert_eq!(cache.lookup(&file, "other build args"), None);

        // Same size, modification time put back: the change time still moves.
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        write(&file, "FROM b\n");
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(cache.lookup(&file, "k"), None);
    }

    #[test]
    fn malformed_lines_are_ignored_and_removed_files_drop_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Dockerfile");
        write(&file, "FROM a\n");
        let stat = Stat::of(&std::fs::metadata(&file).unwrap());
        let good = format!(
            "{}\tk\t{}\t{}\t{}\t{}\t{}\tsha256:1",
            file.display(),
            stat.size,
            stat.mtime_ns,
            stat.ctime_ns,
            stat.inode,
            stat.device
        );
        let text = format!("garbage\nrelative\tk\t1\t2\t3\t4\t5\tx\n{good}\n{good}\textra\n");
        std::fs::write(dir.path().join(FILE), text).unwrap();
        let cache = StatCache::load(dir.path());
        assert_eq!(cache.entries.len(), 1);
        assert_eq!(cache.lookup(&file, "k").as_deref(), Some("sha256:1"));
        // The image is gone from the enrollment: its entry is dropped on save.
        cache.save(&HashSet::new());
        assert!(entries(dir.path()).is_empty());
    }
}
