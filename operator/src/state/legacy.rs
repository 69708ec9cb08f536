//! The first state shape (version 1, unversioned): analysis and runtime sections in one
//! file `state/images/<name>.yaml`. Reading such a file gives its analysis part as an
//! [`super::ImageState`] and its runtime sections as a [`LegacyRuntime`], which
//! `analyze` moves into the image's runtime record once (the only time `analyze` writes
//! a runtime record, and only when none exists yet).

use serde::Deserialize;

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

/// PROVISIONAL until the runtime record lands.
#[derive(Debug, serde::Serialize)]
pub struct Provisional {
    reference: String,
}

/// The runtime record holding `legacy`'s sections for `reference`.
pub fn migrate(reference: &crate::reference::Reference, legacy: &LegacyRuntime) -> Provisional {
    let _ = legacy;
    Provisional {
        reference: reference.to_string(),
    }
}
