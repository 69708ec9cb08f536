//! Pinned Dockerfiles: a copy of a Dockerfile whose external base references name the
//! exact digests a rebuild must be built on (DESIGN.md, "The soak holds for the build
//! itself"). `FROM python:3.12-slim` pulls whatever the tag points to when the build
//! runs; `FROM docker.io/library/python:3.12-slim@sha256:…` pulls the matured digest.
//!
//! The rule: every external image named by a `FROM`, a `COPY`/`ADD --from=` or a
//! `RUN --mount=…,from=` (never a stage reference, never `scratch`) whose reference,
//! after ARG expansion and Docker normalization, has a pin's registry, repository and
//! tag is replaced by that pin, written in its normalized form. A digest already in the
//! Dockerfile is ignored for the match, so an older pin is replaced (and reported). A
//! word built from ARGs (`FROM ${BASE}`, `FROM python:${PY}`) is replaced as a whole
//! by the pinned literal: the ARGs are left declared, and the stage no longer reads
//! them. Every other byte (comments, whitespace, line continuations, CRLF, `--platform`,
//! `AS name`, heredocs) is kept; a word split by a line continuation is replaced with
//! the continuation.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::{analyze_located, Via};
use crate::enrollment::Severity;
use crate::reference::Reference;

/// A pinned copy of a Dockerfile and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// The display name given to [`pin`].
    pub file: String,
    /// The new Dockerfile text.
    pub content: String,
    /// Every replaced word, in file order.
    pub replacements: Vec<Replacement>,
    /// The pins that matched no reference of the file, in the order given (a pin that
    /// matched a reference already carrying its digest counts as matched).
    pub unmatched: Vec<Reference>,
}

impl Pinned {
    /// One `file:line: …` line per replacement, by [`Replacement::message`].
    #[must_use]
    pub fn messages(&self) -> Vec<String> {
        self.replacements
            .iter()
            .map(|r| r.message(&self.file))
            .collect()
    }
}

/// One replaced image word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// 1-based line where the word starts.
    pub line: usize,
    /// `FROM`, `COPY --from`, `ADD --from` or `RUN --mount from`.
    pub instruction: String,
    /// How the image is used.
    pub via: Via,
    /// Byte range of the word in the *original* content.
    pub span: Range<usize>,
    /// The word as written (quotes and `$VARS` included).
    pub old: String,
    /// The pin written in its place (`registry/repository:tag@digest`).
    pub new: String,
    /// The reference the word stood for, after ARG expansion and normalization.
    pub reference: Reference,
    /// Whether the word used ARGs (`${BASE}`, `python:${PY}`): replacing it fixes the
    /// reference whatever the ARGs are set to at build time.
    pub from_arg: bool,
}

impl Replacement {
    /// `Dockerfile:3: FROM python:3.12-slim → docker.io/library/python:3.12-slim@sha256:…`,
    /// with a note when the word was an ARG expression or pinned another digest.
    #[must_use]
    pub fn message(&self, file: &str) -> String {
        let mut text = format!(
            "{file}:{}: {} {} → {}",
            self.line, self.instruction, self.old, self.new
        );
        if self.from_arg {
            text.push_str(&format!(
                " (replaces an ARG expression, now {})",
                self.reference
            ));
        }
        if let Some(digest) = self.reference.digest() {
            text.push_str(&format!(" (was pinned to {digest})"));
        }
        text
    }
}

/// Why a Dockerfile cannot be pinned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// A pin names no digest, so it would pin nothing.
    #[error("{pin}: a base must be pinned to a digest, as REF@sha256:<64 hex digits> (`image-factory inspect {pin}` shows its digest)")]
    MissingDigest {
        /// The pin as given.
        pin: String,
    },
    /// A pin names no tag, so no `FROM` can be matched to it.
    #[error("{pin}: a base needs its tag to be matched, as REPO:TAG@DIGEST")]
    MissingTag {
        /// The pin as given.
        pin: String,
    },
    /// A pin is not an image reference.
    #[error("{pin}: {error}")]
    InvalidPin {
        /// The pin as given.
        pin: String,
        /// Why it is not a reference.
        error: crate::reference::ReferenceError,
    },
    /// Two pins of one `repository:tag` name different digests.
    #[error("{first} and {second} pin the same image to different digests; give one")]
    ConflictingPins {
        /// The first pin.
        first: String,
        /// The second.
        second: String,
    },
    /// The Dockerfile has errors, so its base references are not all known: pinning
    /// it could leave an unpinned base in the build.
    #[error("cannot pin {file}: fix these errors first (give unset ARGs with --build-arg)\n  {}", problems.join("\n  "))]
    InvalidDockerfile {
        /// The display name.
        file: String,
        /// `file:line: message` for each error.
        problems: Vec<String>,
    },
    /// The analyzer found a reference but lost track of where it is written (a bug).
    #[error("{file}:{line}: cannot locate the image of {instruction} in the text; please report this Dockerfile")]
    Unlocated {
        /// The display name.
        file: String,
        /// 1-based line of the instruction.
        line: usize,
        /// The instruction.
        instruction: String,
    },
}

/// Parses one pin (`python:3.12-slim@sha256:…`, normalized as Docker does).
///
/// # Errors
///
/// [`PinError::InvalidPin`] for a malformed reference, [`PinError::MissingDigest`]
/// without `@digest`, [`PinError::MissingTag`] without `:tag`.
pub fn parse_pin(text: &str) -> Result<Reference, PinError> {
    let reference = Reference::parse(text).map_err(|error| PinError::InvalidPin {
        pin: text.to_owned(),
        error,
    })?;
    if reference.digest().is_none() {
        return Err(PinError::MissingDigest {
            pin: text.to_owned(),
        });
    }
    if reference.tag().is_none() {
        return Err(PinError::MissingTag {
            pin: text.to_owned(),
        });
    }
    Ok(reference)
}

/// Pins the external base references of Dockerfile `content` (display name `file`) to
/// `pins` (each `repo:tag@digest`, as [`crate::runtime::PinnedBase::pinned`] holds them),
/// by the rule in the module docs. `build_args` are those of the build (as for
/// [`super::analyze`]): they decide what ARG-built references expand to.
///
/// Pure and panic-free. Pinning the result again with the same pins changes nothing.
///
/// # Errors
///
/// [`PinError::MissingDigest`] / [`PinError::MissingTag`] for an incomplete pin,
/// [`PinError::ConflictingPins`] for two digests of one image,
/// [`PinError::InvalidDockerfile`] (every error as `file:line: …`) when the Dockerfile
/// has errors — a `FROM` whose ARG has no value among them.
pub fn pin(
    file: &str,
    content: &str,
    build_args: &BTreeMap<String, String>,
    pins: &[Reference],
) -> Result<Pinned, PinError> {
    let by_image = index_pins(pins)?;
    let (analysis, located) = analyze_located(file, content, build_args);
    if analysis.has_errors() {
        return Err(PinError::InvalidDockerfile {
            file: file.to_owned(),
            problems: analysis.messages_of(Severity::Error),
        });
    }
    let mut matched = BTreeSet::new();
    let mut replacements = Vec::new();
    for (dependency, located) in analysis.dependencies.iter().zip(located) {
        let reference = &dependency.reference;
        let Some(tag) = reference.tag() else { continue };
        let key = (reference.repo_url(), tag.to_owned());
        let Some(&index) = by_image.get(&key) else {
            continue;
        };
        matched.insert(key);
        let wanted = &pins[index];
        if reference.digest() == wanted.digest() {
            continue;
        }
        let Some(span) = located.span else {
            return Err(PinError::Unlocated {
                file: file.to_owned(),
                line: dependency.line,
                instruction: located.instruction,
            });
        };
        let old = content.get(span.clone()).unwrap_or_default().to_owned();
        replacements.push(Replacement {
            line: content
                .get(..span.start)
                .unwrap_or_default()
                .matches('\n')
                .count()
                + 1,
            instruction: located.instruction,
            via: dependency.via,
            from_arg: old.contains('$'),
            old,
            new: wanted.to_string(),
            reference: reference.clone(),
            span,
        });
    }
    replacements.sort_by_key(|r| r.span.start);
    let mut unmatched: Vec<Reference> = Vec::new();
    for p in pins {
        let key = (p.repo_url(), p.tag().unwrap_or_default().to_owned());
        if !matched.contains(&key) && !unmatched.contains(p) {
            unmatched.push(p.clone());
        }
    }
    Ok(Pinned {
        file: file.to_owned(),
        content: splice(content, &replacements),
        replacements,
        unmatched,
    })
}

/// Pin index by `(repo_url, tag)`; the same pin given twice is one pin.
fn index_pins(pins: &[Reference]) -> Result<BTreeMap<(String, String), usize>, PinError> {
    let mut by_image: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (index, pin) in pins.iter().enumerate() {
        let (Some(tag), Some(digest)) = (pin.tag(), pin.digest()) else {
            let pin = pin.to_string();
            return Err(if pin.contains('@') {
                PinError::MissingTag { pin }
            } else {
                PinError::MissingDigest { pin }
            });
        };
        let key = (pin.repo_url(), tag.to_owned());
        match by_image.get(&key) {
            Some(&first) if pins[first].digest() != Some(digest) => {
                return Err(PinError::ConflictingPins {
                    first: pins[first].to_string(),
                    second: pin.to_string(),
                });
            }
            Some(_) => {}
            None => {
                by_image.insert(key, index);
            }
        }
    }
    Ok(by_image)
}

/// `content` with each replacement's span (sorted, disjoint) replaced by its `new`.
fn splice(content: &str, replacements: &[Replacement]) -> String {
    let mut out = String::with_capacity(content.len() + replacements.len() * 80);
    let mut at = 0;
    for r in replacements {
        out.push_str(content.get(at..r.span.start).unwrap_or_default());
        out.push_str(&r.new);
        at = r.span.end;
    }
    out.push_str(content.get(at..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests;
