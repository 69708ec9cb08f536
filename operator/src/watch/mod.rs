//! Event sources: where the running factory learns that an image's tag has a new digest
//! (issue 11). Two implement [`EventSource`]: the [`registry`] watcher (`run`'s default:
//! every watched image at its Warehouse `interval`, through the registry module) and the
//! [`freight`] replay (Kargo Freight files from a folder, for users and tests without a
//! cluster). The controller's Freight watch is a third, later.
//!
//! A source only *reports* digests; the factory turns each [`Observation`] into an
//! engine event — `Observe` for the first digest of an image (the baseline), `Update`
//! for a digest the image's runtime record does not know yet — so a replayed or
//! repeated observation changes nothing.

pub mod freight;
pub mod registry;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use jiff::Timestamp;

use crate::runtime::{Digest, UpdateSource};

/// One image's tag seen at a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Graph name of the image.
    pub image: String,
    /// The tag (for `SemVer`/`Lexical`/`NewestBuild` selections, the selected tag).
    pub tag: String,
    /// What the tag points at: the index digest for a multi-platform image.
    pub digest: Digest,
    /// Per-platform manifest digests (`linux/amd64` → digest); empty when unknown.
    pub platforms: BTreeMap<String, Digest>,
    /// When it was discovered: Freight `discoveredAt` (else `creationTimestamp`);
    /// `None` for the watcher, whose discovery time is its first sighting (`now`).
    pub discovered_at: Option<Timestamp>,
    /// Where it came from.
    pub source: UpdateSource,
}

/// What one [`EventSource::poll`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Polled {
    /// Digests seen, in the order found.
    pub observations: Vec<Observation>,
    /// Problems that did not stop the poll (one image's registry unreachable, one
    /// unreadable Freight file), one line each, for logs and `status`.
    pub problems: Vec<String>,
}

/// The boxed future of [`EventSource::poll`].
pub type PollFuture<'a> = Pin<Box<dyn Future<Output = Polled> + Send + 'a>>;

/// Something that reports digests of images.
///
/// The factory calls [`poll`](Self::poll) when [`next_due`](Self::next_due) has come
/// (and once at start-up); between polls it sleeps until the earliest of every source's
/// `next_due`, the engine's next wake-up and build completions — it never polls on a
/// fixed tick of its own.
pub trait EventSource: Send {
    /// A short name for logs and metrics (`registry`, `freight`).
    fn name(&self) -> &str;

    /// Checks what is due at `now` (a source with per-image intervals checks only the
    /// images whose interval has passed). Never fails as a whole: per-image problems are
    /// in [`Polled::problems`].
    fn poll(&mut self, now: Timestamp) -> PollFuture<'_>;

    /// When this source next has something to check; `None` when only an outside
    /// event (a new file) can change what it reports.
    fn next_due(&self) -> Option<Timestamp>;
}
