//! The state runtime contract: what the running factory records about one image —
//! the digest it last observed, every update (history), blocked digests and rebuilds.
//!
//! One file per image, written by one owner (`run` or the controller), keyed by the
//! image's normalized reference so a rename never hands one image's digests to another
//! (DESIGN.md, "One owner per file"). Analysis files (`crate::state`) never hold these
//! sections.
//!
//! ```yaml
//! version: 1
//! reference: docker.io/library/python:3.12-slim
//! current: {tag: 3.12-slim, digest: 'sha256:…', platforms: {linux/amd64: 'sha256:…'}, firstSeen: …}
//! updates: [{digest, tag, platforms, discoveredAt, source, supersededBy, expedited}]
//! blocks: [{digest, by, reason, at}]
//! rebuilds: [{id, cause, bases, phase, reason, createdAt, dueAt, attempts, trigger, digest, …}]
//! ```
//!
//! Deterministic: maps are `BTreeMap`, lists keep a defined order (updates oldest first,
//! blocks by digest, rebuilds oldest first), timestamps are RFC 3339 to the second, so
//! the same records give byte-identical files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The `version:` this build reads and writes.
pub const VERSION: u32 = 1;

/// Updates kept per image by default ([`ImageRuntime::trim`]).
pub const DEFAULT_HISTORY_LIMIT: usize = 50;

/// The header written at the top of every runtime file.
pub const HEADER: &str = "# Written by image-factory at run time. Do not edit: use `image-factory expedite|block|unblock|retry`.\n";

/// Longest rebuild id: a Kubernetes label value (and DNS-1123 label) is at most 63.
pub const REBUILD_ID_MAX: usize = 63;

/// Runtime record errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// A digest is not `algorithm:hex` with a known algorithm and the right length.
    #[error("invalid digest {digest:?}: {problem}; expected sha256:<64 hex>, sha384:<96 hex> or sha512:<128 hex>, lower case (OCI image-spec descriptor digests)")]
    InvalidDigest {
        /// The text given.
        digest: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A rebuild id is not a valid Kubernetes object name of at most 63 characters.
    #[error("invalid rebuild id {id:?}: use lower-case letters, digits and '-', at most 63 characters, as `image-factory status` prints them")]
    InvalidRebuildId {
        /// The text given.
        id: String,
    },
    /// The file was written by another version of the runtime contract.
    #[error("{file}: runtime state version {found} is not supported (this image-factory reads version {VERSION}); upgrade image-factory, or restore the file from git")]
    UnsupportedVersion {
        /// The file.
        file: String,
        /// The version found.
        found: u32,
    },
    /// The file is not valid YAML of the runtime shape (hand-edited or corrupt).
    #[error("{file}:{line}:{column}: {message}; runtime files are machine-written — restore it from git, or delete it to start the image's history afresh")]
    Corrupt {
        /// The file.
        file: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The same rebuild id appears twice in one file.
    #[error("{file}: rebuild {id} is recorded twice; restore the file from git")]
    DuplicateRebuild {
        /// The file.
        file: String,
        /// The repeated id.
        id: String,
    },
    /// The records could not be rendered as YAML.
    #[error("cannot render the runtime state of {reference}: {message}")]
    Render {
        /// The image reference.
        reference: String,
        /// The serializer's message.
        message: String,
    },
}

/// A content digest `algorithm:hex`, validated: `sha256` with 64, `sha384` with 96 or
/// `sha512` with 128 lower-case hex digits.
///
/// Source: OCI image spec, descriptor.md "Digests" and go-digest's registered algorithms.
/// Serialized as its text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Parses `text`.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::InvalidDigest`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, RuntimeError> {
        let bad = |problem| RuntimeError::InvalidDigest {
            digest: text.to_string(),
            problem,
        };
        let (algorithm, hex) = text.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let want = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(bad("unknown algorithm")),
        };
        if hex.len() != want {
            return Err(bad("wrong length for the algorithm"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("not lower-case hex"));
        }
        Ok(Self(text.to_string()))
    }

    /// The `sha256:` digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", hex_of(&Sha256::digest(bytes))))
    }

    /// `sha256`, `sha384` or `sha512`.
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }

    /// The whole text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `bytes` as lower-case hex, two digits per byte.
pub(crate) fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = RuntimeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> Self {
        d.0
    }
}

/// The stable id of a rebuild: `<image>-<first 10 hex of sha256(reference, pinned bases)>`.
///
/// The same image built on the same pinned bases always gets the same id, so a crash
/// between recording `Triggered` and starting the build re-triggers idempotently. A
/// valid Kubernetes object name (DNS-1123 label) and label value: at most 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RebuildId(String);

impl RebuildId {
    /// The id of a rebuild of image `name` (reference `reference`) on `pinned` (the
    /// `repo:tag@digest` of each base, any order: they are sorted first).
    pub fn derive(name: &str, reference: &str, pinned: &[String]) -> Self {
        let mut sorted: Vec<&str> = pinned.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut hasher = Sha256::new();
        hasher.update(reference.as_bytes());
        for p in sorted {
            hasher.update(b"\n");
            hasher.update(p.as_bytes());
        }
        let hash = hex_of(&hasher.finalize());
        let mut slug = crate::reference::slug(name);
        slug.truncate(REBUILD_ID_MAX - 11);
        let slug = slug.trim_end_matches('-');
        if slug.is_empty() {
            Self(format!("rebuild-{}", &hash[..10]))
        } else {
            Self(format!("{slug}-{}", &hash[..10]))
        }
    }

    /// Parses an id as printed by `status`.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::InvalidRebuildId`] unless it is a DNS-1123 label of ≤ 63 characters.
    pub fn parse(text: &str) -> Result<Self, RuntimeError> {
        let ok = !text.is_empty()
            && text.len() <= REBUILD_ID_MAX
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if ok {
            Ok(Self(text.to_string()))
        } else {
            Err(RuntimeError::InvalidRebuildId {
                id: text.to_string(),
            })
        }
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RebuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RebuildId {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for RebuildId {
    type Error = RuntimeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<RebuildId> for String {
    fn from(id: RebuildId) -> Self {
        id.0
    }
}

/// Timestamps as RFC 3339 in UTC to the second (`2026-11-22T10:00:00Z`).
pub mod rfc3339 {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `t` to the second.
    ///
    /// # Errors
    ///
    /// The serializer's.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{t:.0}"))
    }

    /// Reads any RFC 3339 timestamp.
    ///
    /// # Errors
    ///
    /// A custom error for text that is not RFC 3339.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }

    /// The same for optional timestamps.
    pub mod option {
        use jiff::Timestamp;
        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes `Some(t)` to the second.
        ///
        /// # Errors
        ///
        /// The serializer's.
        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.collect_str(&format_args!("{t:.0}")),
                None => s.serialize_none(),
            }
        }

        /// Reads an optional RFC 3339 timestamp.
        ///
        /// # Errors
        ///
        /// A custom error for text that is not RFC 3339.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            let text = Option::<String>::deserialize(d)?;
            text.map(|t| t.parse().map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// `t` without its fractional second, as it will read back from a file: the engine
/// stores every time through this so a replay from files decides the same.
pub fn to_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// A rebuild's phase, in the `ImageFactoryRebuild` CRD's vocabulary (DESIGN.md,
/// "Kubernetes surface"). Serialized exactly as named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Held: its delay (or a retry backoff) has not passed, or an ancestor is rebuilding.
    Waiting,
    /// Recorded as started before the trigger is called; the trigger has not reported.
    Triggered,
    /// The trigger reported the build running.
    Running,
    /// Built, and the new digest observed.
    Succeeded,
    /// Every attempt failed; dependents are held back.
    Failed,
    /// Replaced by a rebuild on newer bases before it started.
    Superseded,
    /// Will not start on its own: waiting for approval (`autoRebuild: false`), or a base
    /// digest it was planned on was blocked.
    Skipped,
}

impl Phase {
    /// Whether the rebuild has ended (Succeeded, Failed, Superseded).
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Superseded)
    }

    /// Whether a build is in flight (Triggered, Running).
    pub fn is_in_flight(self) -> bool {
        matches!(self, Phase::Triggered | Phase::Running)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A person's decision: who, why, when (expedite, block, approve, retry).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    /// Who (git author or `$USER`).
    pub by: String,
    /// Why, as they wrote it.
    pub reason: String,
    /// When it was recorded.
    #[serde(with = "rfc3339")]
    pub at: Timestamp,
}

/// The digest last observed for the image's tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// The tag followed.
    pub tag: String,
    /// The tag's digest: the index digest for a multi-platform image.
    pub digest: Digest,
    /// Per-platform manifest digests (`linux/amd64` → digest), where known.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<String, Digest>,
    /// When this digest was first seen.
    #[serde(with = "rfc3339")]
    pub first_seen: Timestamp,
}

/// Where an update was discovered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum UpdateSource {
    /// A Kargo Freight (`kargo.akuity.io/v1alpha1`), by name.
    Freight {
        /// `metadata.name` of the Freight (Kargo's Freight ID).
        name: String,
        /// Kargo's alias of the Freight (`brave-otter`), when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alias: Option<String>,
        /// The Warehouse it came from (`origin.name`), when named.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warehouse: Option<String>,
    },
    /// The standalone registry watcher (`run`).
    Watcher,
    /// Recorded by a person (`plan --update`, tests).
    Manual,
    /// Our own rebuild of a managed image produced it (a cascade).
    Rebuild {
        /// The rebuild.
        id: RebuildId,
    },
}

/// One discovered update of the image: a new digest of its tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Update {
    /// The new digest (index digest for multi-platform images).
    pub digest: Digest,
    /// The tag it was seen under.
    pub tag: String,
    /// Per-platform digests, where known.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<String, Digest>,
    /// Freight `discoveredAt` (else its creation time) or the watcher's first sighting;
    /// the hold runs from here (DESIGN.md, "Hold semantics").
    #[serde(with = "rfc3339")]
    pub discovered_at: Timestamp,
    /// Where it came from.
    pub source: UpdateSource,
    /// The newer update that arrived while this one was still held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<Digest>,
    /// Who skipped the remaining delay of this update, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expedited: Option<Mark>,
    /// The signature check of this digest, when the image has a `verify:` policy
    /// (issue 14). An update it [rejects](SignatureCheck::rejects) is never used as a
    /// base, like a blocked one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureCheck>,
}

impl Update {
    /// Whether the update's signature check keeps it from being used as a base.
    pub fn is_rejected(&self) -> bool {
        self.signature.as_ref().is_some_and(SignatureCheck::rejects)
    }
}

/// What a `verify:` policy does with a digest that is not verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VerifyMode {
    /// The update is skipped: never used as a base (the default).
    #[default]
    Enforce,
    /// The update is used; the verdict is recorded and logged.
    Warn,
}

impl fmt::Display for VerifyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enforce => "enforce",
            Self::Warn => "warn",
        })
    }
}

/// The outcome of checking a digest's cosign signatures against a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SignatureVerdict {
    /// A signature by the policy's key (or identity) binds this digest.
    Verified,
    /// No signature was found (no `sha256-<hex>.sig` tag, no referrer).
    Unsigned,
    /// Signatures exist, but none verifies: another key, a tampered payload, a payload
    /// naming another digest.
    Invalid,
}

impl fmt::Display for SignatureVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Verified => "verified",
            Self::Unsigned => "unsigned",
            Self::Invalid => "invalid",
        })
    }
}

/// A recorded signature check: the verdict, the policy mode it was judged under, and a
/// one-line detail (where the signature was found, or why it failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureCheck {
    /// The verdict.
    pub verdict: SignatureVerdict,
    /// The policy's mode.
    pub mode: VerifyMode,
    /// Where the signature was found, or why none verified.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl SignatureCheck {
    /// Whether the update may not be used: not verified under `mode: enforce`.
    pub fn rejects(&self) -> bool {
        self.verdict != SignatureVerdict::Verified && self.mode == VerifyMode::Enforce
    }
}

/// A digest of the image marked bad: never used as a base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    /// The blocked digest (need not have been seen yet).
    pub digest: Digest,
    /// Who blocked it.
    pub by: String,
    /// Why (a broken release, a CVE).
    pub reason: String,
    /// When.
    #[serde(with = "rfc3339")]
    pub at: Timestamp,
}

/// One update that caused a rebuild.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRef {
    /// The updated image's graph name.
    pub image: String,
    /// Its normalized reference (`docker.io/library/python:3.12-slim`).
    pub reference: String,
    /// The update's digest.
    pub digest: Digest,
}

/// Why a rebuild exists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cause {
    /// The base updates it picks up, sorted by image.
    pub updates: Vec<UpdateRef>,
    /// For a cascade, the rebuilds of managed parents that produced those updates, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<RebuildId>,
}

/// One base the Dockerfile uses, pinned for the build.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PinnedBase {
    /// The base's graph name.
    pub image: String,
    /// `repo:tag@sha256:…`, or `repo:tag` when no digest of the base is known yet.
    pub pinned: String,
}

impl PinnedBase {
    /// `reference` (`repo:tag`, without digest) pinned to `digest`.
    pub fn new(image: &str, reference: &str, digest: Option<&Digest>) -> Self {
        let pinned = match digest {
            Some(d) => format!("{reference}@{d}"),
            None => reference.to_string(),
        };
        Self {
            image: image.to_string(),
            pinned,
        }
    }

    /// The digest part, when pinned.
    pub fn digest(&self) -> Option<&str> {
        self.pinned.rsplit_once('@').map(|(_, d)| d)
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    /// Built and verified.
    Succeeded,
    /// The trigger reported failure, or the result was not built on the pinned bases.
    Failed,
}

/// One trigger of a rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1 for the first.
    pub number: u32,
    /// When the trigger was recorded (before it was called).
    #[serde(with = "rfc3339")]
    pub triggered_at: Timestamp,
    /// When the outcome arrived.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    pub finished_at: Option<Timestamp>,
    /// Its outcome, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AttemptOutcome>,
    /// The failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The end of a failed attempt's output (at most 2 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// One rebuild of this (managed) image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rebuild {
    /// Stable id (see [`RebuildId::derive`]).
    pub id: RebuildId,
    /// The updates and parent rebuilds that caused it.
    pub cause: Cause,
    /// Every base the Dockerfile uses, pinned, sorted by image.
    pub bases: Vec<PinnedBase>,
    /// Current phase.
    pub phase: Phase,
    /// Why it is in that phase (held until, failed because, superseded by…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was planned.
    #[serde(with = "rfc3339")]
    pub created_at: Timestamp,
    /// When it may start (end of the hold, or of a retry backoff).
    #[serde(with = "rfc3339")]
    pub due_at: Timestamp,
    /// `autoRebuild: false`: it starts only once approved.
    #[serde(default, skip_serializing_if = "is_false")]
    pub needs_approval: bool,
    /// Who approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<Mark>,
    /// Manual retries after it failed (each restores the attempt budget).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<Mark>,
    /// Every trigger, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// What the trigger backend reported it started (Job name, workflow run URL…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The image digest it produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Rebuild {
    /// Whether it still counts as the image's pending rebuild: Waiting, Triggered,
    /// Running, or Skipped waiting for approval.
    pub fn is_open(&self) -> bool {
        match self.phase {
            Phase::Waiting | Phase::Triggered | Phase::Running => true,
            Phase::Skipped => self.needs_approval && self.approved.is_none(),
            Phase::Succeeded | Phase::Failed | Phase::Superseded => false,
        }
    }

    /// Attempts since the last manual retry: the ones that count against `maxAttempts`.
    pub fn attempts_in_budget(&self) -> u32 {
        let since = self.retried.last().map(|m| m.at);
        let n = self
            .attempts
            .iter()
            .filter(|a| since.is_none_or(|s| a.triggered_at >= s))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// The whole runtime file of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRuntime {
    /// [`VERSION`].
    pub version: u32,
    /// The image's normalized reference: the key of the file.
    pub reference: String,
    /// The digest last observed for its tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Observed>,
    /// Updates, oldest first (by discovery time), at most the history limit.
    #[serde(default)]
    pub updates: Vec<Update>,
    /// Blocked digests, sorted by digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Block>,
    /// Rebuilds of this image, oldest first.
    #[serde(default)]
    pub rebuilds: Vec<Rebuild>,
    /// Tags pointed back at an earlier digest (`image-factory rollback`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollbacks: Vec<Rollback>,
}

/// The image's tag was pointed back at an earlier digest, without a rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    /// The digest the tag had.
    pub from: Digest,
    /// The digest it points at now.
    pub to: Digest,
    /// Who, why, when.
    #[serde(flatten)]
    pub mark: Mark,
}

#[derive(Deserialize)]
struct VersionProbe {
    #[serde(default)]
    version: Option<u32>,
}

impl ImageRuntime {
    /// An empty record for `reference`: the migration path from the analysis files'
    /// empty `current` / `history` / `rebuilds` sections, which never held data.
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            version: VERSION,
            reference: reference.into(),
            current: None,
            updates: Vec::new(),
            blocks: Vec::new(),
            rebuilds: Vec::new(),
            rollbacks: Vec::new(),
        }
    }

    /// The digest a rollback returns to: the newest digest a Succeeded rebuild produced
    /// that is not the current one (`None` when the record knows no such digest).
    pub fn previous_good(&self) -> Option<&Digest> {
        let current = self.current.as_ref().map(|c| &c.digest);
        self.rebuilds
            .iter()
            .rev()
            .filter(|r| r.phase == Phase::Succeeded)
            .filter_map(|r| r.digest.as_ref())
            .find(|d| Some(*d) != current)
    }

    /// Reads a runtime file; `file` names it in errors.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::UnsupportedVersion`] for another `version:`,
    /// [`RuntimeError::Corrupt`] (with line and column) for YAML of the wrong shape,
    /// [`RuntimeError::DuplicateRebuild`] when a rebuild id repeats.
    pub fn parse(file: &str, text: &str) -> Result<Self, RuntimeError> {
        let corrupt = |e: serde_saphyr::Error| {
            let (line, column) = e
                .location()
                .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
            RuntimeError::Corrupt {
                file: file.to_string(),
                line,
                column,
                message: e.to_string().lines().next().unwrap_or_default().to_string(),
            }
        };
        let probe: VersionProbe = serde_saphyr::from_str(text).map_err(corrupt)?;
        match probe.version {
            Some(VERSION) => {}
            Some(found) => {
                return Err(RuntimeError::UnsupportedVersion {
                    file: file.to_string(),
                    found,
                })
            }
            None => {
                return Err(RuntimeError::Corrupt {
                    file: file.to_string(),
                    line: 1,
                    column: 1,
                    message: "missing field `version`".to_string(),
                })
            }
        }
        let runtime: Self = serde_saphyr::from_str(text).map_err(corrupt)?;
        let mut seen = BTreeSet::new();
        for r in &runtime.rebuilds {
            if !seen.insert(&r.id) {
                return Err(RuntimeError::DuplicateRebuild {
                    file: file.to_string(),
                    id: r.id.to_string(),
                });
            }
        }
        Ok(runtime)
    }

    /// Renders the file: [`HEADER`] then the YAML document.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Render`] when the serializer fails.
    pub fn render(&self) -> Result<String, RuntimeError> {
        // Pinned references are long single tokens: keep them on one line, greppable.
        let mut options = serde_saphyr::SerializerOptions::default();
        options.prefer_block_scalars = false;
        let body = serde_saphyr::to_string_with_options(self, options).map_err(|e| {
            RuntimeError::Render {
                reference: self.reference.clone(),
                message: e.to_string(),
            }
        })?;
        Ok(format!("{HEADER}{body}"))
    }

    /// The update with `digest`, if recorded.
    pub fn update(&self, digest: &Digest) -> Option<&Update> {
        self.updates.iter().find(|u| &u.digest == digest)
    }

    /// The block on `digest`, if any.
    pub fn block(&self, digest: &Digest) -> Option<&Block> {
        self.blocks.iter().find(|b| &b.digest == digest)
    }

    /// Whether `digest` is blocked.
    pub fn is_blocked(&self, digest: &Digest) -> bool {
        self.block(digest).is_some()
    }

    /// The rebuild with `id`, if recorded.
    pub fn rebuild(&self, id: &RebuildId) -> Option<&Rebuild> {
        self.rebuilds.iter().find(|r| &r.id == id)
    }

    /// The rebuild with `id`, mutable.
    pub fn rebuild_mut(&mut self, id: &RebuildId) -> Option<&mut Rebuild> {
        self.rebuilds.iter_mut().find(|r| &r.id == id)
    }

    /// The image's pending rebuild ([`Rebuild::is_open`]), at most one.
    pub fn open_rebuild(&self) -> Option<&Rebuild> {
        self.rebuilds.iter().rev().find(|r| r.is_open())
    }

    /// The last rebuild that succeeded: what the image is built on now.
    pub fn last_success(&self) -> Option<&Rebuild> {
        self.rebuilds
            .iter()
            .rev()
            .find(|r| r.phase == Phase::Succeeded)
    }

    /// Inserts `update` in discovery order (after updates discovered at the same time).
    pub fn insert_update(&mut self, update: Update) {
        let at = self
            .updates
            .partition_point(|u| u.discovered_at <= update.discovered_at);
        self.updates.insert(at, update);
    }

    /// Bounds the history: keeps the newest `limit` updates, plus any older one whose
    /// digest is in `keep` (used by a rebuild still open); keeps every open rebuild and
    /// the newest `limit` finished ones. Returns the number of records dropped.
    pub fn trim(&mut self, limit: usize, keep: &BTreeSet<Digest>) -> usize {
        let mut dropped = 0;
        if self.updates.len() > limit {
            let cut = self.updates.len() - limit;
            let mut index = 0;
            self.updates.retain(|u| {
                index += 1;
                let kept = index > cut || keep.contains(&u.digest);
                dropped += usize::from(!kept);
                kept
            });
        }
        let finished = self.rebuilds.iter().filter(|r| !r.is_open()).count();
        if finished > limit {
            let mut cut = finished - limit;
            self.rebuilds.retain(|r| {
                if cut > 0 && !r.is_open() {
                    cut -= 1;
                    dropped += 1;
                    false
                } else {
                    true
                }
            });
        }
        dropped
    }
}

#[cfg(test)]
mod tests;
