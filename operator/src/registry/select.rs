//! Tag selection strategies with Kargo's names and semantics (pure, no I/O).
//!
//! Source: Kargo `ImageSubscription` (`pkg/subscription/schemas/image.json`, the schema
//! Kargo's admission webhook checks Warehouse subscriptions against; Kargo docs "Image
//! Selection Strategies"): `imageSelectionStrategy` is one of `Digest` (follow one mutable
//! tag named by `constraint`), `SemVer` (newest semantic version satisfying `constraint`,
//! Masterminds constraint syntax; `strictSemvers` admits only tags with major, minor and
//! patch), `Lexical` (lexically greatest tag) and `NewestBuild` (most recent image
//! `created`). `allowTagsRegexes` / `ignoreTagsRegexes` filter tags first; `platform`
//! drops images that do not offer it; `discoveryLimit` caps how many are reported.
//!
//! Kargo's defaults for omitted fields live here and only here ([`KARGO_DEFAULT_STRATEGY`],
//! [`KARGO_DEFAULT_STRICT_SEMVERS`], [`KARGO_DEFAULT_DISCOVERY_LIMIT`],
//! [`KARGO_MAX_DISCOVERY_LIMIT`]); the enrollment, the Warehouse we write and our own
//! watcher all take them from these constants, and [`TagSelection`] is the one model of
//! the selection part of a subscription (`kargo::ImageSubscription` is a `repoURL` plus a
//! flattened [`TagSelection`]).

use std::cmp::Ordering;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::platform::{Platform, PlatformError};

/// Tag selection was configured wrongly.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectionError {
    /// A tag regex does not compile.
    #[error("invalid tag regex {pattern:?}: {reason}")]
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// The regex crate's message.
        reason: String,
    },
    /// The SemVer constraint does not parse.
    #[error("invalid semver constraint {constraint:?}: {reason} (Masterminds syntax, e.g. \">=1.2, <2\" or \"~3.19\")")]
    InvalidConstraint {
        /// The constraint.
        constraint: String,
        /// Which part is wrong.
        reason: String,
    },
    /// `Digest` needs the tag to follow in `constraint`.
    #[error("imageSelectionStrategy Digest needs the tag to follow in `constraint`")]
    MissingDigestTag,
    /// `discoveryLimit` outside Kargo's range.
    #[error("discoveryLimit {limit} is outside 1..=100")]
    DiscoveryLimitOutOfRange {
        /// The value given.
        limit: u32,
    },
    /// `platform` is not `os/arch[/variant]`.
    #[error(transparent)]
    InvalidPlatform(#[from] PlatformError),
}

/// Kargo's `imageSelectionStrategy` when the field is omitted (`image.json`:
/// `"default": "SemVer"`). Our enrollment deliberately writes `Digest` instead (follow the
/// image's own tag), but always writes the field, so this default only applies to
/// subscriptions read back without one.
pub const KARGO_DEFAULT_STRATEGY: SelectionStrategy = SelectionStrategy::SemVer;
/// Kargo's `strictSemvers` when omitted (`image.json`: `"default": true`).
pub const KARGO_DEFAULT_STRICT_SEMVERS: bool = true;
/// Kargo's `discoveryLimit` when omitted (`image.json`: `"default": 20`).
pub const KARGO_DEFAULT_DISCOVERY_LIMIT: u32 = 20;
/// Largest `discoveryLimit` Kargo accepts (`image.json`: `"minimum": 1, "maximum": 100`).
pub const KARGO_MAX_DISCOVERY_LIMIT: u32 = 100;

/// Kargo's `imageSelectionStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectionStrategy {
    /// Follow the digest of one mutable tag (`constraint` names the tag).
    Digest,
    /// Newest semantic version satisfying `constraint`.
    SemVer,
    /// Lexically greatest tag.
    Lexical,
    /// Most recently built image (config `created`).
    NewestBuild,
}

impl Default for SelectionStrategy {
    /// [`KARGO_DEFAULT_STRATEGY`].
    fn default() -> Self {
        KARGO_DEFAULT_STRATEGY
    }
}

impl SelectionStrategy {
    /// Parses Kargo's spelling (`Digest`, `SemVer`, `Lexical`, `NewestBuild`; case-sensitive,
    /// as Kargo's CRD enum is).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Digest" => Some(Self::Digest),
            "SemVer" => Some(Self::SemVer),
            "Lexical" => Some(Self::Lexical),
            "NewestBuild" => Some(Self::NewestBuild),
            _ => None,
        }
    }
}

/// Checks a `SemVer` constraint with the same (Masterminds) parser tag selection uses, so
/// `validate` accepts exactly what the watcher will apply.
///
/// # Errors
///
/// [`SelectionError::InvalidConstraint`] naming the part that does not parse.
pub fn check_semver_constraint(constraint: &str) -> Result<(), SelectionError> {
    Constraint::parse(constraint).map(|_| ())
}

/// The selection part of a Kargo image subscription (everything but `repoURL` and
/// Kargo-side caching), with Kargo's field names and Kargo's defaults for omitted fields.
///
/// Field order is the order written into Warehouses (`kargo::ImageSubscription`
/// flattens this struct after `repoURL`); optional fields are omitted when unset, so a
/// Warehouse carries exactly what was configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagSelection {
    /// Strategy; [`KARGO_DEFAULT_STRATEGY`] (`SemVer`) when omitted.
    #[serde(default = "default_strategy")]
    pub image_selection_strategy: SelectionStrategy,
    /// Strategy-specific: the tag for `Digest`, a semver range for `SemVer`; ignored by
    /// `Lexical` and `NewestBuild`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// A tag must match at least one of these (when any are given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_tags_regexes: Vec<String>,
    /// A tag matching any of these is ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_tags_regexes: Vec<String>,
    /// `os/arch` an image must offer to be selected. Unset, Kargo uses its controller's
    /// platform and our watcher keeps images of any platform, which is why the
    /// enrollment always sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// At most this many candidates are reported, best first, 1–100;
    /// [`KARGO_DEFAULT_DISCOVERY_LIMIT`] when omitted.
    #[serde(default = "default_discovery_limit")]
    pub discovery_limit: u32,
    /// `SemVer` only: admit only `major.minor.patch` tags. `None` (omitted) means
    /// [`KARGO_DEFAULT_STRICT_SEMVERS`]; see [`Self::strict_semvers`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_semvers: Option<bool>,
}

fn default_strategy() -> SelectionStrategy {
    KARGO_DEFAULT_STRATEGY
}

fn default_discovery_limit() -> u32 {
    KARGO_DEFAULT_DISCOVERY_LIMIT
}

impl Default for TagSelection {
    /// What Kargo applies to a subscription that sets nothing but `repoURL`.
    fn default() -> Self {
        Self {
            image_selection_strategy: KARGO_DEFAULT_STRATEGY,
            constraint: None,
            allow_tags_regexes: Vec::new(),
            ignore_tags_regexes: Vec::new(),
            platform: None,
            discovery_limit: KARGO_DEFAULT_DISCOVERY_LIMIT,
            strict_semvers: None,
        }
    }
}

/// A [`TagSelection`] with regexes and constraint compiled.
#[derive(Debug, Clone)]
pub struct CompiledSelection {
    strategy: SelectionStrategy,
    digest_tag: Option<String>,
    /// The `SemVer` range as written, with its parsed form.
    constraint: Option<(String, Constraint)>,
    strict_semvers: bool,
    allow: Vec<Regex>,
    ignore: Vec<Regex>,
    platform: Option<Platform>,
    limit: usize,
}

impl TagSelection {
    /// `strictSemvers` as Kargo applies it: the configured value, else
    /// [`KARGO_DEFAULT_STRICT_SEMVERS`].
    pub fn strict_semvers(&self) -> bool {
        self.strict_semvers.unwrap_or(KARGO_DEFAULT_STRICT_SEMVERS)
    }

    /// Validates and compiles.
    ///
    /// # Errors
    /// [`SelectionError`] for bad regexes, constraints, platforms, a `Digest` strategy
    /// without a tag, or a `discoveryLimit` outside 1–100.
    pub fn compile(&self) -> Result<CompiledSelection, SelectionError> {
        if !(1..=KARGO_MAX_DISCOVERY_LIMIT).contains(&self.discovery_limit) {
            return Err(SelectionError::DiscoveryLimitOutOfRange {
                limit: self.discovery_limit,
            });
        }
        let compile_all = |patterns: &[String]| -> Result<Vec<Regex>, SelectionError> {
            patterns
                .iter()
                .map(|p| {
                    Regex::new(p).map_err(|e| SelectionError::InvalidRegex {
                        pattern: p.clone(),
                        reason: e.to_string(),
                    })
                })
                .collect()
        };
        let constraint_text = self
            .constraint
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        let (digest_tag, constraint) = match self.image_selection_strategy {
            SelectionStrategy::Digest => (
                Some(
                    constraint_text
                        .ok_or(SelectionError::MissingDigestTag)?
                        .to_owned(),
                ),
                None,
            ),
            SelectionStrategy::SemVer => (
                None,
                constraint_text
                    .map(|c| Constraint::parse(c).map(|parsed| (c.to_owned(), parsed)))
                    .transpose()?,
            ),
            SelectionStrategy::Lexical | SelectionStrategy::NewestBuild => (None, None),
        };
        Ok(CompiledSelection {
            strategy: self.image_selection_strategy,
            digest_tag,
            constraint,
            strict_semvers: self.strict_semvers(),
            allow: compile_all(&self.allow_tags_regexes)?,
            ignore: compile_all(&self.ignore_tags_regexes)?,
            platform: self.platform.as_deref().map(Platform::parse).transpose()?,
            limit: self.discovery_limit as usize,
        })
    }
}

impl CompiledSelection {
    /// The strategy.
    pub fn strategy(&self) -> SelectionStrategy {
        self.strategy
    }

    /// For `SemVer`: the range applied, as written (`None`: any version).
    pub fn semver_constraint(&self) -> Option<&str> {
        self.constraint.as_ref().map(|(text, _)| text.as_str())
    }

    /// Whether `SemVer` admits only `major.minor.patch` tags (default applied).
    pub fn strict_semvers(&self) -> bool {
        self.strict_semvers
    }

    /// `allowTagsRegexes` as compiled.
    pub fn allow_patterns(&self) -> Vec<&str> {
        self.allow.iter().map(Regex::as_str).collect()
    }

    /// `ignoreTagsRegexes` as compiled.
    pub fn ignore_patterns(&self) -> Vec<&str> {
        self.ignore.iter().map(Regex::as_str).collect()
    }

    /// The platform an image must offer (`None`: any).
    pub fn platform(&self) -> Option<&Platform> {
        self.platform.as_ref()
    }

    /// For `Digest`: the mutable tag to follow.
    pub fn digest_tag(&self) -> Option<&str> {
        self.digest_tag.as_deref()
    }

    /// Whether the allow/ignore regexes admit `tag`.
    pub fn admits(&self, tag: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|r| r.is_match(tag)))
            && !self.ignore.iter().any(|r| r.is_match(tag))
    }

    /// `discoveryLimit` as a count.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Tags admitted by the regexes, in input order.
    pub fn admitted<'a>(&self, tags: &'a [String]) -> Vec<&'a str> {
        tags.iter()
            .map(String::as_str)
            .filter(|t| self.admits(t))
            .collect()
    }

    /// `SemVer`: admitted tags that parse as versions (strictly when `strictSemvers`)
    /// and satisfy the constraint, newest first, at most `discoveryLimit`.
    pub fn rank_semver(&self, tags: &[String]) -> Vec<String> {
        self.ordered_semver(tags)
            .into_iter()
            .take(self.limit)
            .collect()
    }

    /// [`Self::rank_semver`] without the limit (for filtering by platform afterwards).
    pub fn ordered_semver(&self, tags: &[String]) -> Vec<String> {
        let mut versions: Vec<(semver::Version, &str)> = self
            .admitted(tags)
            .into_iter()
            .filter_map(|t| parse_tag_version(t, self.strict_semvers).map(|v| (v, t)))
            .filter(|(v, _)| self.constraint.as_ref().is_none_or(|(_, c)| c.matches(v)))
            .collect();
        versions.sort_by(|(va, ta), (vb, tb)| vb.cmp(va).then_with(|| tb.cmp(ta)));
        versions.into_iter().map(|(_, t)| t.to_owned()).collect()
    }

    /// `Lexical`: admitted tags, lexically greatest first, at most `discoveryLimit`.
    pub fn rank_lexical(&self, tags: &[String]) -> Vec<String> {
        self.ordered_lexical(tags)
            .into_iter()
            .take(self.limit)
            .collect()
    }

    /// [`Self::rank_lexical`] without the limit.
    pub fn ordered_lexical(&self, tags: &[String]) -> Vec<String> {
        let mut admitted = self.admitted(tags);
        admitted.sort_by(|a, b| b.cmp(a));
        admitted.into_iter().map(str::to_owned).collect()
    }

    /// `NewestBuild`: `(tag, created)` pairs (RFC 3339 `created`, `None` when the
    /// config has none), newest first, undated last, at most `discoveryLimit`.
    pub fn rank_newest_build(&self, mut dated: Vec<(String, Option<String>)>) -> Vec<String> {
        dated.sort_by(|(ta, ca), (tb, cb)| match (ca, cb) {
            (Some(a), Some(b)) => compare_rfc3339(b, a).then_with(|| tb.cmp(ta)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => tb.cmp(ta),
        });
        dated.into_iter().take(self.limit).map(|(t, _)| t).collect()
    }
}

/// Compares RFC 3339 timestamps by instant; falls back to string order when one does
/// not parse (the format sorts lexically when offsets agree).
fn compare_rfc3339(a: &str, b: &str) -> Ordering {
    match (
        humantime::parse_rfc3339_weak(a),
        humantime::parse_rfc3339_weak(b),
    ) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Parses a tag as a semantic version the way Masterminds `NewVersion` does: optional
/// `v`, one to three numeric parts (missing ones are 0), optional `-pre` and `+build`.
/// With `strict`, all three parts are required.
pub fn parse_tag_version(tag: &str, strict: bool) -> Option<semver::Version> {
    let body = tag.strip_prefix('v').unwrap_or(tag);
    let (core, rest) = match body.find(['-', '+']) {
        Some(i) => body.split_at(i),
        None => (body, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 || (strict && parts.len() != 3) {
        return None;
    }
    let mut numbers = [0u64; 3];
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    let full = format!("{}.{}.{}{rest}", numbers[0], numbers[1], numbers[2]);
    semver::Version::parse(&full).ok()
}

/// A Masterminds-style constraint: `||`-separated groups of comma/space-separated
/// comparators.
#[derive(Debug, Clone)]
struct Constraint {
    groups: Vec<Vec<Range>>,
}

/// An interval end: the version and whether it is included.
type Bound = Option<(semver::Version, bool)>;

/// One comparator as an interval (or its complement for `!=`).
#[derive(Debug, Clone)]
struct Range {
    lower: Option<(semver::Version, bool)>,
    upper: Option<(semver::Version, bool)>,
    negate: bool,
    has_prerelease: bool,
}

/// A partial version from a constraint: `1`, `1.2`, `1.2.x`, `1.2.3-rc.1`.
struct Partial {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: semver::Prerelease,
}

impl Partial {
    fn parse(text: &str, constraint: &str) -> Result<Self, SelectionError> {
        let bad = |reason: &str| SelectionError::InvalidConstraint {
            constraint: constraint.to_owned(),
            reason: format!("{reason}: {text:?}"),
        };
        let body = text.strip_prefix('v').unwrap_or(text);
        let body = body.split('+').next().unwrap_or(body);
        let (core, pre) = body.split_once('-').unwrap_or((body, ""));
        let pre = semver::Prerelease::new(pre).map_err(|_| bad("bad prerelease"))?;
        let mut nums = [None; 3];
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() > 3 || core.is_empty() {
            return Err(bad("expected 1 to 3 version parts"));
        }
        for (slot, part) in nums.iter_mut().zip(parts) {
            *slot = match part {
                "x" | "X" | "*" => None,
                digits => Some(digits.parse::<u64>().map_err(|_| bad("not a number"))?),
            };
        }
        // A wildcard makes the following parts wildcards too.
        if nums[0].is_none() {
            nums[1] = None;
        }
        if nums[1].is_none() {
            nums[2] = None;
        }
        Ok(Self {
            major: nums[0],
            minor: nums[1],
            patch: nums[2],
            pre,
        })
    }

    fn floor(&self) -> semver::Version {
        let mut v = semver::Version::new(
            self.major.unwrap_or(0),
            self.minor.unwrap_or(0),
            self.patch.unwrap_or(0),
        );
        v.pre = self.pre.clone();
        v
    }

    /// The first version above every version this partial covers (`1.2` → `1.3.0`).
    fn ceiling(&self) -> Option<semver::Version> {
        match (self.major, self.minor, self.patch) {
            (None, _, _) => None,
            (Some(ma), None, _) => Some(semver::Version::new(ma + 1, 0, 0)),
            (Some(ma), Some(mi), None) => Some(semver::Version::new(ma, mi + 1, 0)),
            (Some(_), Some(_), Some(_)) => None,
        }
    }

    fn is_complete(&self) -> bool {
        self.patch.is_some()
    }
}

impl Constraint {
    fn parse(text: &str) -> Result<Self, SelectionError> {
        let mut groups = Vec::new();
        for group in text.split("||") {
            let tokens = tokenize(group);
            let mut ranges = Vec::new();
            let mut i = 0;
            while i < tokens.len() {
                if tokens.get(i + 1).map(String::as_str) == Some("-") {
                    let upper =
                        tokens
                            .get(i + 2)
                            .ok_or_else(|| SelectionError::InvalidConstraint {
                                constraint: text.to_owned(),
                                reason: "hyphen range without upper bound".to_owned(),
                            })?;
                    ranges.push(hyphen_range(&tokens[i], upper, text)?);
                    i += 3;
                } else {
                    ranges.push(comparator(&tokens[i], text)?);
                    i += 1;
                }
            }
            if ranges.is_empty() {
                return Err(SelectionError::InvalidConstraint {
                    constraint: text.to_owned(),
                    reason: "empty group".to_owned(),
                });
            }
            groups.push(ranges);
        }
        Ok(Self { groups })
    }

    fn matches(&self, v: &semver::Version) -> bool {
        self.groups.iter().any(|group| {
            // Masterminds: a prerelease only matches a group that mentions a prerelease.
            (v.pre.is_empty() || group.iter().any(|r| r.has_prerelease))
                && group.iter().all(|r| r.contains(v))
        })
    }
}

/// Splits on commas and spaces, gluing an operator to the version after it (`>= 1.2`).
fn tokenize(group: &str) -> Vec<String> {
    let raw: Vec<&str> = group
        .split([',', ' ', '\t'])
        .filter(|t| !t.is_empty())
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut pending_op = String::new();
    for token in raw {
        if token.chars().all(|c| "<>=!~^".contains(c)) && token != "-" {
            pending_op.push_str(token);
        } else {
            out.push(format!("{pending_op}{token}"));
            pending_op.clear();
        }
    }
    out
}

fn hyphen_range(low: &str, high: &str, text: &str) -> Result<Range, SelectionError> {
    let low = Partial::parse(low, text)?;
    let high = Partial::parse(high, text)?;
    let upper = match high.ceiling() {
        Some(c) => Some((c, false)),
        None if high.major.is_none() => None,
        None => Some((high.floor(), true)),
    };
    Ok(Range {
        has_prerelease: !low.pre.is_empty() || !high.pre.is_empty(),
        lower: Some((low.floor(), true)),
        upper,
        negate: false,
    })
}

fn comparator(token: &str, text: &str) -> Result<Range, SelectionError> {
    let op_len = token
        .find(|c: char| !"<>=!~^".contains(c))
        .unwrap_or(token.len());
    let (op, version) = token.split_at(op_len);
    let p = Partial::parse(version, text)?;
    let floor = p.floor();
    let has_prerelease = !p.pre.is_empty();
    let exact = |p: &Partial| -> (Bound, Bound) {
        if p.major.is_none() {
            (None, None)
        } else if let Some(c) = p.ceiling() {
            (Some((p.floor(), true)), Some((c, false)))
        } else {
            (Some((p.floor(), true)), Some((p.floor(), true)))
        }
    };
    let (lower, upper, negate) = match op {
        "" | "=" => {
            let (l, u) = exact(&p);
            (l, u, false)
        }
        "!=" => {
            let (l, u) = exact(&p);
            (l, u, true)
        }
        ">" => match p.ceiling() {
            Some(c) => (Some((c, true)), None, false),
            None if p.major.is_none() => (
                Some((floor, false)),
                Some((semver::Version::new(0, 0, 0), false)),
                false,
            ),
            None => (Some((floor, false)), None, false),
        },
        ">=" | "=>" => (Some((floor, true)), None, false),
        "<" => (None, Some((floor, false)), false),
        "<=" | "=<" => match p.ceiling() {
            Some(c) => (None, Some((c, false)), false),
            None if p.major.is_none() => (None, None, false),
            None => (None, Some((floor, true)), false),
        },
        "~" | "~>" => {
            let upper = match (p.major, p.minor) {
                (None, _) => None,
                (Some(ma), None) => Some(semver::Version::new(ma + 1, 0, 0)),
                (Some(ma), Some(mi)) => Some(semver::Version::new(ma, mi + 1, 0)),
            };
            (Some((floor, true)), upper.map(|u| (u, false)), false)
        }
        "^" => {
            let upper = match (p.major, p.minor, p.patch) {
                (None, _, _) => None,
                (Some(0), None, _) => Some(semver::Version::new(1, 0, 0)),
                (Some(0), Some(0), None) => Some(semver::Version::new(0, 1, 0)),
                (Some(0), Some(0), Some(pa)) if p.is_complete() => {
                    Some(semver::Version::new(0, 0, pa + 1))
                }
                (Some(0), Some(mi), _) => Some(semver::Version::new(0, mi + 1, 0)),
                (Some(ma), _, _) => Some(semver::Version::new(ma + 1, 0, 0)),
            };
            (Some((floor, true)), upper.map(|u| (u, false)), false)
        }
        other => {
            return Err(SelectionError::InvalidConstraint {
                constraint: text.to_owned(),
                reason: format!("unknown operator {other:?}"),
            })
        }
    };
    Ok(Range {
        lower,
        upper,
        negate,
        has_prerelease,
    })
}

impl Range {
    fn contains(&self, v: &semver::Version) -> bool {
        // Compare without build metadata, which semver ordering ignores for precedence.
        let above = match &self.lower {
            None => true,
            Some((l, true)) => cmp_precedence(v, l) != Ordering::Less,
            Some((l, false)) => cmp_precedence(v, l) == Ordering::Greater,
        };
        let below = match &self.upper {
            None => true,
            Some((u, true)) => cmp_precedence(v, u) != Ordering::Greater,
            Some((u, false)) => cmp_precedence(v, u) == Ordering::Less,
        };
        (above && below) != self.negate
    }
}

fn cmp_precedence(a: &semver::Version, b: &semver::Version) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn semver_sel(constraint: &str, strict: bool) -> CompiledSelection {
        TagSelection {
            constraint: Some(constraint.to_owned()).filter(|c| !c.is_empty()),
            strict_semvers: Some(strict),
            ..TagSelection::default()
        }
        .compile()
        .unwrap()
    }

    #[rstest]
    #[case("1.2.3", "1.2.3", true)]
    #[case("1.2.4", "1.2.3", false)]
    #[case("1.2.9", "1.2", true)]
    #[case("1.3.0", "1.2", false)]
    #[case("1.9.0", ">=1.2, <2", true)]
    #[case("2.0.0", ">=1.2, <2", false)]
    #[case("2.0.0", ">= 1.2 < 2", false)]
    #[case("1.2.9", "~1.2.3", true)]
    #[case("1.3.0", "~1.2.3", false)]
    #[case("1.9.9", "^1.2.3", true)]
    #[case("2.0.0", "^1.2.3", false)]
    #[case("0.2.9", "^0.2.3", true)]
    #[case("0.3.0", "^0.2.3", false)]
    #[case("1.4.5", "1.2 - 1.4.5", true)]
    #[case("1.4.6", "1.2 - 1.4.5", false)]
    #[case("3.0.0", "<2 || >=3", true)]
    #[case("2.5.0", "<2 || >=3", false)]
    #[case("1.2.3", "!=1.2.3", false)]
    #[case("1.2.4", "!=1.2.3", true)]
    #[case("1.3.0", ">1.2", true)]
    #[case("1.2.9", ">1.2", false)]
    #[case("1.2.9", "<=1.2", true)]
    #[case("1.2.0", "1.2.x", true)]
    #[case("9.0.0", "*", true)]
    #[case("1.3.0-rc.1", ">=1.2", false)]
    #[case("1.3.0-rc.1", ">=1.3.0-rc.0", true)]
    fn masterminds_constraints(
        #[case] version: &str,
        #[case] constraint: &str,
        #[case] expected: bool,
    ) {
        let c = Constraint::parse(constraint).unwrap();
        assert_eq!(
            c.matches(&semver::Version::parse(version).unwrap()),
            expected,
            "{version} {constraint}"
        );
    }

    #[rstest]
    #[case("1.2.3", true, Some("1.2.3"))]
    #[case("v1.2.3", true, Some("1.2.3"))]
    #[case("1.2", true, None)]
    #[case("1.2", false, Some("1.2.0"))]
    #[case("v3", false, Some("3.0.0"))]
    #[case("3.19-alpine", false, Some("3.19.0-alpine"))]
    #[case("latest", false, None)]
    #[case("1.2.3.4", false, None)]
    fn tag_versions(#[case] tag: &str, #[case] strict: bool, #[case] expected: Option<&str>) {
        assert_eq!(
            parse_tag_version(tag, strict)
                .map(|v| v.to_string())
                .as_deref(),
            expected
        );
    }

    #[test]
    fn semver_picks_newest_satisfying_tag_first() {
        let sel = semver_sel("<3.20", true);
        let ranked = sel.rank_semver(&tags(&[
            "3.18.1", "3.19.4", "3.19.10", "3.20.0", "latest", "3.19",
        ]));
        assert_eq!(ranked, tags(&["3.19.10", "3.19.4", "3.18.1"]));
        let lenient = semver_sel("<3.20", false).rank_semver(&tags(&["3.19", "3.18.1"]));
        assert_eq!(lenient, tags(&["3.19", "3.18.1"]));
    }

    #[test]
    fn regexes_filter_before_ranking_and_limit_applies_after() {
        let sel = TagSelection {
            image_selection_strategy: SelectionStrategy::Lexical,
            allow_tags_regexes: vec!["^nightly-".into()],
            ignore_tags_regexes: vec!["-broken$".into()],
            discovery_limit: 2,
            ..TagSelection::default()
        }
        .compile()
        .unwrap();
        let ranked = sel.rank_lexical(&tags(&[
            "nightly-20240101",
            "nightly-20240103-broken",
            "nightly-20240102",
            "nightly-20231231",
            "zzz",
        ]));
        assert_eq!(ranked, tags(&["nightly-20240102", "nightly-20240101"]));
    }

    #[test]
    fn newest_build_orders_by_created_with_undated_last() {
        let sel = TagSelection {
            image_selection_strategy: SelectionStrategy::NewestBuild,
            ..TagSelection::default()
        }
        .compile()
        .unwrap();
        let ranked = sel.rank_newest_build(vec![
            ("a".into(), Some("2024-01-01T00:00:00Z".into())),
            ("b".into(), None),
            ("c".into(), Some("2024-03-01T00:00:00+01:00".into())),
            ("d".into(), Some("2024-02-01T00:00:00.5Z".into())),
        ]);
        assert_eq!(ranked, tags(&["c", "d", "a", "b"]));
    }

    #[test]
    fn configuration_errors_are_reported() {
        let digest = TagSelection {
            image_selection_strategy: SelectionStrategy::Digest,
            ..TagSelection::default()
        };
        assert_eq!(
            digest.compile().unwrap_err(),
            SelectionError::MissingDigestTag
        );
        let bad_regex = TagSelection {
            allow_tags_regexes: vec!["(".into()],
            ..TagSelection::default()
        };
        assert!(matches!(
            bad_regex.compile(),
            Err(SelectionError::InvalidRegex { .. })
        ));
        let bad_limit = TagSelection {
            discovery_limit: 0,
            ..TagSelection::default()
        };
        assert!(matches!(
            bad_limit.compile(),
            Err(SelectionError::DiscoveryLimitOutOfRange { .. })
        ));
        let bad_constraint = TagSelection {
            constraint: Some("~>x.y.z.w".into()),
            ..TagSelection::default()
        };
        assert!(matches!(
            bad_constraint.compile(),
            Err(SelectionError::InvalidConstraint { .. })
        ));
    }

    #[test]
    fn kargo_field_names_round_trip() {
        let sel: TagSelection = serde_json::from_str(
            r#"{"imageSelectionStrategy":"NewestBuild","allowTagsRegexes":["^v"],"discoveryLimit":5}"#,
        )
        .unwrap();
        assert_eq!(sel.image_selection_strategy, SelectionStrategy::NewestBuild);
        assert_eq!(sel.strict_semvers, None);
        assert!(sel.strict_semvers(), "Kargo's default applies when omitted");
        assert_eq!(sel.discovery_limit, 5);
        assert_eq!(
            serde_json::to_string(&sel).unwrap(),
            r#"{"imageSelectionStrategy":"NewestBuild","allowTagsRegexes":["^v"],"discoveryLimit":5}"#,
            "only what was configured is written back"
        );
        let empty: TagSelection = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, TagSelection::default());
    }
}
