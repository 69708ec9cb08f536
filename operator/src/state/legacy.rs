//! The first state shape (version 1, unversioned): analysis and runtime sections in one
//! file `state/images/<name>.yaml`. Reading such a file gives its analysis part as an
//! [`super::ImageState`] and its runtime sections as a [`LegacyRuntime`], which
//! `analyze` moves into the image's runtime record once (the only time `analyze` writes
//! a runtime record, and only when none exists yet).

use serde::Deserialize;

use crate::runtime::{Digest, ImageRuntime, Observed, Update, UpdateSource};

/// The runtime sections of a version-1 state file, as they were written (strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyRuntime {
    /// The image's normalized reference.
    #[serde(default)]
    pub reference: String,
    /// The last observed digest.
    #[serde(default)]
    pub current: LegacyObserved,
    /// Discovered updates, oldest first.
    #[serde(default)]
    pub history: Vec<LegacyUpdate>,
    /// Rebuild attempts, oldest first.
    #[serde(default)]
    pub rebuilds: Vec<LegacyRebuild>,
}

impl LegacyRuntime {
    /// Whether the sections hold nothing (the only shape version 1 ever wrote).
    pub fn is_empty(&self) -> bool {
        self.current == LegacyObserved::default()
            && self.history.is_empty()
            && self.rebuilds.is_empty()
    }
}

/// Version 1 `current`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyObserved {
    /// Tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Digest (`sha256:…`).
    #[serde(default)]
    pub digest: Option<String>,
    /// RFC 3339 time it was observed.
    #[serde(default)]
    pub observed_at: Option<String>,
}

/// Version 1 `history[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyUpdate {
    /// The new digest.
    pub digest: String,
    /// The tag it was seen under.
    #[serde(default)]
    pub tag: Option<String>,
    /// RFC 3339 discovery time.
    pub discovered_at: String,
    /// `freight/<name>` or `watcher`.
    #[serde(default)]
    pub origin: Option<String>,
}

/// Version 1 `rebuilds[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyRebuild {
    /// `reference@digest` of the cause.
    pub cause: String,
    /// Phase name.
    pub phase: String,
    /// Attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// RFC 3339 due time.
    #[serde(default)]
    pub due: Option<String>,
    /// Resulting digest.
    #[serde(default)]
    pub digest: Option<String>,
}

/// The runtime record holding `legacy`'s sections for `reference`: `current` and
/// `history` become `current` and `updates` (origin `freight/<name>` → a Freight source,
/// `watcher` → the watcher, anything else → manual). Entries whose digest or time does
/// not parse are left out with a warning; version 1 never recorded rebuilds (no release
/// wrote them), so `rebuilds` is not carried over.
pub fn migrate(reference: &crate::reference::Reference, legacy: &LegacyRuntime) -> ImageRuntime {
    let mut record = ImageRuntime::new(reference.to_string());
    let default_tag = reference
        .tag()
        .unwrap_or(crate::reference::DEFAULT_TAG)
        .to_string();
    for old in &legacy.history {
        let (Ok(digest), Ok(discovered_at)) = (
            Digest::parse(&old.digest),
            old.discovered_at.parse::<jiff::Timestamp>(),
        ) else {
            tracing::warn!(%reference, digest = %old.digest, "version-1 update left out of the migration: digest or time does not parse");
            continue;
        };
        let source = match old.origin.as_deref() {
            Some(origin) if origin.starts_with("freight/") => UpdateSource::Freight {
                name: origin.trim_start_matches("freight/").to_string(),
                alias: None,
                warehouse: None,
            },
            Some("watcher") => UpdateSource::Watcher,
            _ => UpdateSource::Manual,
        };
        record.insert_update(Update {
            digest,
            tag: old.tag.clone().unwrap_or_else(|| default_tag.clone()),
            platforms: Default::default(),
            discovered_at: crate::runtime::to_second(discovered_at),
            source,
            superseded_by: None,
            expedited: None,
            signature: None,
        });
    }
    if let (Some(digest), Some(at)) = (&legacy.current.digest, &legacy.current.observed_at) {
        if let (Ok(digest), Ok(at)) = (Digest::parse(digest), at.parse::<jiff::Timestamp>()) {
            record.current = Some(Observed {
                tag: legacy
                    .current
                    .tag
                    .clone()
                    .unwrap_or_else(|| default_tag.clone()),
                digest,
                platforms: Default::default(),
                first_seen: crate::runtime::to_second(at),
            });
        }
    }
    record
}
