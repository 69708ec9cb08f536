//! Commit messages: a subject a person reads in `git log --oneline`, a body listing each
//! change, and `Image-Factory-*` trailers a tool parses (git-interpret-trailers(1) format:
//! the last paragraph, one `Key: value` per line, a key repeated for several values).

use std::collections::BTreeSet;
use std::fmt;

/// Prefix of every trailer key the writer emits.
pub const TRAILER_PREFIX: &str = "Image-Factory-";

const BATCH: &str = "Image-Factory-Batch";
const CHANGES: &str = "Image-Factory-Changes";
const IMAGES: &str = "Image-Factory-Images";
const BASES: &str = "Image-Factory-Bases";
const SOURCE: &str = "Image-Factory-Source";
const REBUILDS: &str = "Image-Factory-Rebuilds";

/// Longest subject, in characters; longer ones end in `…`.
const SUBJECT_MAX: usize = 100;

/// What triggered a state change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeSource {
    /// A Kargo Freight (`freight/NAMESPACE/NAME`).
    Freight {
        /// Kubernetes namespace (the Kargo project).
        namespace: String,
        /// Freight name.
        name: String,
    },
    /// The built-in registry watcher (`watcher`).
    Watcher,
    /// `image-factory analyze` (`analyze`).
    Analyze,
    /// A person's decision: expedite, block, retry (`person/WHO`).
    Person(String),
}

impl fmt::Display for ChangeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Freight { namespace, name } => write!(f, "freight/{namespace}/{name}"),
            Self::Watcher => f.write_str("watcher"),
            Self::Analyze => f.write_str("analyze"),
            Self::Person(who) => write!(f, "person/{who}"),
        }
    }
}

impl ChangeSource {
    /// Parses the [`Display`](fmt::Display) form; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "watcher" => Some(Self::Watcher),
            "analyze" => Some(Self::Analyze),
            _ => {
                if let Some(rest) = s.strip_prefix("freight/") {
                    let (namespace, name) = rest.split_once('/')?;
                    return Some(Self::Freight {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                    });
                }
                s.strip_prefix("person/")
                    .filter(|w| !w.is_empty())
                    .map(|w| Self::Person(w.to_string()))
            }
        }
    }
}

/// Why a state change is made: what a person reads in the body, what a tool reads in the
/// trailers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reason {
    /// One line, e.g. `rebuild platform-python on python:3.12-slim@sha256:ab12…`.
    pub summary: String,
    /// Managed images concerned (normalized references or enrollment names).
    pub images: Vec<String>,
    /// Base image references, pinned (`repo:tag@sha256:…`).
    pub bases: Vec<String>,
    /// Digests concerned that are not part of a base reference.
    pub digests: Vec<String>,
    /// What triggered it.
    pub source: Option<ChangeSource>,
    /// `ImageFactoryRebuild` names (rebuild ids).
    pub rebuilds: Vec<String>,
}

impl Reason {
    /// A reason with only a summary.
    pub fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            ..Self::default()
        }
    }
}

/// What the trailers of a commit message say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trailers {
    /// The batch id (idempotency key of one writer batch).
    pub batch: Option<String>,
    /// Number of changes in the batch.
    pub changes: Option<usize>,
    /// `Image-Factory-Images` values, in order.
    pub images: Vec<String>,
    /// `Image-Factory-Bases` values, in order.
    pub bases: Vec<String>,
    /// `Image-Factory-Source` values that parse.
    pub sources: Vec<ChangeSource>,
    /// `Image-Factory-Rebuilds` values, in order.
    pub rebuilds: Vec<String>,
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Composes the message of one commit holding `reasons` (one per change, in submission
/// order) with batch id `batch`.
///
/// Subject: the summary when every change shares it, else the first summary and
/// `(+N more)`; then the number of distinct images when more than one, e.g.
/// `rebuild platform-python on python:3.12-slim@sha256:ab12… (3 images)`. Body: one
/// `- summary` line per change. Trailers: `Image-Factory-Batch`, `-Changes`, then each
/// distinct image, base, source and rebuild id, sorted.
pub fn compose_message(reasons: &[&Reason], batch: &str) -> String {
    let summaries: Vec<String> = reasons
        .iter()
        .map(|r| one_line(&r.summary))
        .map(|s| {
            if s.is_empty() {
                "update state".to_string()
            } else {
                s
            }
        })
        .collect();
    let distinct: BTreeSet<&String> = summaries.iter().collect();
    let images: BTreeSet<String> = reasons
        .iter()
        .flat_map(|r| r.images.iter().map(|i| one_line(i)))
        .collect();
    let bases: BTreeSet<String> = reasons
        .iter()
        .flat_map(|r| r.bases.iter().map(|i| one_line(i)))
        .collect();
    let rebuilds: BTreeSet<String> = reasons
        .iter()
        .flat_map(|r| r.rebuilds.iter().map(|i| one_line(i)))
        .collect();
    let sources: BTreeSet<String> = reasons
        .iter()
        .filter_map(|r| r.source.as_ref())
        .map(|s| one_line(&s.to_string()))
        .collect();
    let first = summaries
        .first()
        .cloned()
        .unwrap_or_else(|| "update state".into());
    let mut counts = Vec::new();
    if distinct.len() > 1 {
        counts.push(format!("+{} more", distinct.len() - 1));
    }
    if images.len() > 1 {
        counts.push(format!("{} images", images.len()));
    }
    let suffix = if counts.is_empty() {
        String::new()
    } else {
        format!(" ({})", counts.join(", "))
    };
    let room = SUBJECT_MAX.saturating_sub(suffix.chars().count()).max(20);
    let mut message = format!("{}{suffix}\n\n", truncate(&first, room));
    for (summary, reason) in summaries.iter().zip(reasons) {
        message.push_str("- ");
        message.push_str(summary);
        let digests: Vec<String> = reason.digests.iter().map(|d| one_line(d)).collect();
        if !digests.is_empty() {
            message.push_str(&format!(" [{}]", digests.join(", ")));
        }
        message.push('\n');
    }
    message.push('\n');
    message.push_str(&format!("{BATCH}: {batch}\n{CHANGES}: {}\n", reasons.len()));
    for (key, values) in [
        (IMAGES, &images),
        (BASES, &bases),
        (SOURCE, &sources),
        (REBUILDS, &rebuilds),
    ] {
        for value in values.iter().filter(|v| !v.is_empty()) {
            message.push_str(&format!("{key}: {value}\n"));
        }
    }
    message
}

/// Reads the `Image-Factory-*` trailers of a commit message: the last paragraph, when
/// every line of it is `Key: value` (continuation lines starting with a space are joined,
/// as git-interpret-trailers does). Unknown keys are ignored; a message without trailers
/// gives [`Trailers::default`].
pub fn parse_trailers(message: &str) -> Trailers {
    let mut out = Trailers::default();
    let trimmed = message.trim_end();
    let last = trimmed.rsplit("\n\n").next().unwrap_or("");
    if last.len() == trimmed.len() && !trimmed.contains('\n') {
        return out; // a subject alone has no trailers
    }
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in last.lines() {
        if line.starts_with([' ', '\t']) {
            match entries.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                None => return Trailers::default(),
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Trailers::default();
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Trailers::default();
        }
        entries.push((key.to_string(), value.trim().to_string()));
    }
    for (key, value) in entries {
        match key.as_str() {
            BATCH => out.batch = Some(value),
            CHANGES => out.changes = value.parse().ok(),
            IMAGES => out.images.push(value),
            BASES => out.bases.push(value),
            SOURCE => out.sources.extend(ChangeSource::parse(&value)),
            REBUILDS => out.rebuilds.push(value),
            _ => {}
        }
    }
    out
}

/// A fresh batch id: 16 hex digits (64 random bits).
pub(crate) fn new_batch_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}
