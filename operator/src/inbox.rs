//! One owner for the runtime records: while `image-factory run` runs on a state
//! folder, it alone writes `state/runtime/`, and a person's decisions (`block`,
//! `expedite`, `retry`, `approve`, `unblock`, `rollback`) reach it through an inbox
//! instead of being written beside it (where the factory's next write of the same
//! record would silently undo them).
//!
//! Layout, inside the state folder (never committed: the folder holds a `.gitignore`
//! of `*`, and the git writer stages only the files it is given):
//!
//! ```text
//! .factory/lock                   held (flock, exclusive) by the owner; holds its pid
//! .factory/inbox/ID.request.json  a decision for the owner (written whole: temp + rename)
//! .factory/inbox/ID.reply.json    the owner's answer, read and removed by the sender
//! ```
//!
//! The lock is an advisory `flock` ([`std::fs::File::try_lock`]): the kernel drops it
//! when its process dies, so a crashed factory never blocks the next start. A CLI
//! decision first tries to take the lock itself: when it can, no factory runs and it
//! writes the records under the lock; when it cannot, it sends the decision to the
//! owner and waits for the reply. The owner applies a request, persists the records,
//! writes the reply and only then removes the request: a crash in between applies the
//! request again on the next start, where the engine ignores the repeat.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cli::decide::Action;
use crate::runtime::Digest;

/// The owner's folder inside the state folder.
pub const DIR: &str = ".factory";
const LOCK: &str = "lock";
const INBOX: &str = "inbox";
const REQUEST: &str = ".request.json";
const REPLY: &str = ".reply.json";

/// Errors of the lock and the inbox.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// Another process owns the state folder.
    #[error("{} is owned by a running image-factory (pid {}); send decisions to it (the CLI does), or stop it first", path.display(), pid.map_or_else(|| "unknown".to_string(), |p| p.to_string()))]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The owner's process id, as it wrote it.
        pid: Option<u32>,
    },
    /// A file of the lock or the inbox could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The owner did not answer in time.
    #[error("the running image-factory did not answer within {}; the request stays in {} and is applied when it gets to it", humantime::format_duration(*waited), path.display())]
    NoReply {
        /// The request file.
        path: PathBuf,
        /// How long the sender waited.
        waited: Duration,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InboxError + '_ {
    move |source| InboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The exclusive lock of a state folder; released when dropped (or when the process
/// dies).
#[derive(Debug)]
pub struct OwnerLock {
    _file: File,
}

impl OwnerLock {
    /// Takes the lock of `state_dir` without waiting, creating `.factory/` as needed,
    /// and writes this process's id into it.
    ///
    /// # Errors
    /// [`InboxError::Held`] when another process holds it; [`InboxError::Io`] when the
    /// folder cannot be created or the file opened.
    pub fn acquire(state_dir: &Path) -> Result<Self, InboxError> {
        let dir = state_dir.join(DIR);
        std::fs::create_dir_all(dir.join(INBOX)).map_err(io(&dir))?;
        let ignore = dir.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(&ignore, "*\n").map_err(io(&ignore))?;
        }
        let path = dir.join(LOCK);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(InboxError::Held {
                    path,
                    pid: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        file.set_len(0).map_err(io(&path))?;
        file.rewind().map_err(io(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
        Ok(Self { _file: file })
    }
}

/// A decision sent to the running factory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Request {
    /// One of the engine decisions.
    Decide {
        /// What.
        action: Action,
        /// Who.
        by: String,
    },
    /// A rollback the sender already made in the registry: record it.
    Rollback {
        /// Graph name of the managed image.
        image: String,
        /// The tag moved.
        tag: String,
        /// The digest the tag pointed at.
        from: Digest,
        /// The digest it points at now.
        to: Digest,
        /// Per-platform digests of `to`.
        platforms: BTreeMap<String, Digest>,
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
}

/// The factory's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// What was recorded, one line each (printed by the sender).
    pub lines: Vec<String>,
    /// Why nothing was recorded, if so.
    pub error: Option<String>,
    /// The exit code the sender exits with (0 recorded, 1 refused, 2 error).
    pub exit: u8,
}

fn inbox(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR).join(INBOX)
}

/// Writes `request` into the inbox (whole: a temporary file renamed); returns its id.
///
/// # Errors
/// [`InboxError::Io`] when the inbox cannot be written.
pub fn submit(state_dir: &Path, request: &Request) -> Result<String, InboxError> {
    let dir = inbox(state_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let now = jiff::Timestamp::now();
    let id = format!(
        "{}-{}-{:09}",
        now.as_second(),
        std::process::id(),
        now.subsec_nanosecond()
    );
    let text = serde_json::to_vec_pretty(request).map_err(|e| io(&dir)(e.into()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io(&dir))?;
    tmp.write_all(&text).map_err(io(&dir))?;
    let path = dir.join(format!("{id}{REQUEST}"));
    tmp.persist(&path).map_err(|e| io(&path)(e.error))?;
    Ok(id)
}

/// Waits up to `timeout` for the reply to request `id`, polling every 100 ms; removes
/// it once read.
///
/// # Errors
/// [`InboxError::NoReply`] after `timeout`; [`InboxError::Io`] for an unreadable reply.
pub fn wait_reply(state_dir: &Path, id: &str, timeout: Duration) -> Result<Reply, InboxError> {
    let dir = inbox(state_dir);
    let path = dir.join(format!("{id}{REPLY}"));
    let started = Instant::now();
    loop {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let reply = serde_json::from_slice(&bytes).map_err(|e| io(&path)(e.into()))?;
                let _ = std::fs::remove_file(&path);
                return Ok(reply);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        if started.elapsed() >= timeout {
            return Err(InboxError::NoReply {
                path: dir.join(format!("{id}{REQUEST}")),
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The requests waiting in the inbox, oldest first: `(id, request or why it cannot be
/// read)`. Nothing is removed (see [`answer`]).
pub fn pending(state_dir: &Path) -> Vec<(String, Result<Request, String>)> {
    let dir = inbox(state_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(REQUEST))
                .map(str::to_string)
        })
        .collect();
    ids.sort();
    ids.into_iter()
        .map(|id| {
            let path = dir.join(format!("{id}{REQUEST}"));
            let request = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            (id, request)
        })
        .collect()
}

/// Writes the reply to request `id`, then removes the request.
///
/// # Errors
/// [`InboxError::Io`] when the reply cannot be written.
pub fn answer(state_dir: &Path, id: &str, reply: &Reply) -> Result<(), InboxError> {
    let dir = inbox(state_dir);
    let text = serde_json::to_vec_pretty(reply).map_err(|e| io(&dir)(e.into()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io(&dir))?;
    tmp.write_all(&text).map_err(io(&dir))?;
    let path = dir.join(format!("{id}{REPLY}"));
    tmp.persist(&path).map_err(|e| io(&path)(e.error))?;
    let request = dir.join(format!("{id}{REQUEST}"));
    std::fs::remove_file(&request).map_err(io(&request))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_at_a_time_and_requests_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let owner = OwnerLock::acquire(dir.path()).unwrap();
        match OwnerLock::acquire(dir.path()) {
            Err(InboxError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        let request = Request::Decide {
            action: Action::Block {
                target: "x@sha256:00".to_string(),
                reason: "bad".to_string(),
            },
            by: "pat".to_string(),
        };
        let id = submit(dir.path(), &request).unwrap();
        let waiting = pending(dir.path());
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].0, id);
        assert_eq!(waiting[0].1.as_ref().unwrap(), &request);
        let reply = Reply {
            lines: vec!["blocked".to_string()],
            error: None,
            exit: 0,
        };
        answer(dir.path(), &id, &reply).unwrap();
        assert!(pending(dir.path()).is_empty());
        assert_eq!(
            wait_reply(dir.path(), &id, Duration::from_secs(1)).unwrap(),
            reply
        );
        assert!(matches!(
            wait_reply(dir.path(), &id, Duration::from_millis(200)),
            Err(InboxError::NoReply { .. })
        ));
        drop(owner);
        let _again = OwnerLock::acquire(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".factory/.gitignore")).unwrap(),
            "*\n"
        );
    }
}
