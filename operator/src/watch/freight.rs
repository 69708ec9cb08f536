//! TEMP stub (replaced by the helper's implementation).
#![allow(missing_docs)]
use super::{EventSource, PollFuture, Polled};
use jiff::Timestamp;
use std::path::PathBuf;
pub struct ImageKey {
    pub name: String,
    pub repo_url: String,
    pub tag: Option<String>,
}
pub struct FreightReplay {
    _dir: PathBuf,
    _images: Vec<ImageKey>,
}
impl FreightReplay {
    pub fn new(dir: PathBuf, images: Vec<ImageKey>) -> Self {
        Self {
            _dir: dir,
            _images: images,
        }
    }
}
impl EventSource for FreightReplay {
    fn name(&self) -> &str {
        "freight"
    }
    fn poll(&mut self, _now: Timestamp) -> PollFuture<'_> {
        Box::pin(async { Polled::default() })
    }
    fn next_due(&self) -> Option<Timestamp> {
        None
    }
}
