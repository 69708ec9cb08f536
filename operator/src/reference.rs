//! Image references, parsed and normalized exactly as Docker does.
//!
//! The grammar is the one of the distribution project's `reference` package
//! (`github.com/distribution/reference`, `reference.go` and `normalize.go`):
//!
//! ```text
//! reference     := name [ ":" tag ] [ "@" digest ]
//! name          := [domain '/'] remote-name
//! domain        := host [':' port-number]
//! host          := domain-name | IPv4address | '[' IPv6address ']'
//! remote-name   := path-component ['/' path-component]*
//! path-component:= alpha-numeric [separator alpha-numeric]*
//! alpha-numeric := /[a-z0-9]+/
//! separator     := /[_.]|__|[-]+/
//! tag           := /[\w][\w.-]{0,127}/
//! digest        := algorithm ":" hex   (algorithm /[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*/, hex /[0-9a-fA-F]{32,}/)
//! ```
//!
//! The grammar's digest shape is only the first gate: `reference.Parse` then hands the
//! digest to go-digest's `digest.Parse`, which accepts only registered algorithms with
//! their exact lower-case hex length (`algorithm.go`: `sha256` 64, `sha384` 96, `sha512`
//! 128). So `sha256:` with 34 digits, `foo:<64 hex>` and upper-case hex are rejected
//! here as `docker pull` rejects them. The 255-character limit
//! (`RepositoryNameTotalLengthMax`) applies to the repository path without the registry,
//! as distribution/reference does since v0.6.0 (`example.com/` + 255 × `a` is valid).
//!
//! Normalization (`ParseNormalizedNamed` + `TagNameOnly`): the first path element is a
//! registry only when it contains `.` or `:` or is `localhost` (and is not upper case);
//! otherwise the registry is `docker.io`. `index.docker.io` is rewritten to `docker.io`,
//! single-element Docker Hub names get `library/`, and a reference with neither tag nor
//! digest gets the tag `latest`.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// The namespace Docker Hub gives to single-element ("official") repository names.
pub const OFFICIAL_NAMESPACE: &str = "library";
/// The tag Docker adds when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository path (without the registry, after Docker Hub's `library/` is
/// added) the grammar accepts, in bytes: distribution/reference's
/// `RepositoryNameTotalLengthMax`.
pub const REPOSITORY_NAME_TOTAL_LENGTH_MAX: usize = 255;

/// The digest algorithms go-digest registers, with the exact number of lower-case hex
/// digits of each (go-digest `algorithm.go`, `anchoredEncodedRegexps`).
pub const DIGEST_ALGORITHMS: [(&str, usize); 3] = [("sha256", 64), ("sha384", 96), ("sha512", 128)];

static DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    // host: domain-name | IPv4 | [IPv6], optional :port (distribution/reference regexp.go).
    #[allow(clippy::expect_used)] // a constant pattern; covered by tests
    Regex::new(
        r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[(?:[a-fA-F0-9:]+)\])(?::[0-9]+)?$",
    )
    .expect("valid domain regex")
});
static PATH: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(
        r"^[a-z0-9]+(?:(?:[_.]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[_.]|__|[-]+)[a-z0-9]+)*)*$",
    )
    .expect("valid path regex")
});
static TAG: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    // distribution/reference's `[\w][\w.-]{0,127}` in Go's RE2, where `\w` is ASCII
    // `[0-9A-Za-z_]`: spelled out, so a Unicode letter is no tag character (and the
    // pattern does not compile to a multi-megabyte Unicode automaton).
    Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("valid tag regex")
});
static DIGEST: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
        .expect("valid digest regex")
});
static HEX64: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(r"^[a-f0-9]{64}$").expect("valid hex regex")
});

/// Why a string is not a valid image reference. Each variant carries the raw input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The input is empty (after trimming whitespace).
    #[error("empty image reference")]
    Empty,
    /// The repository part has upper-case letters; Docker requires lower case.
    #[error("invalid image reference {raw:?}: repository name must be lowercase")]
    Uppercase {
        /// The reference as given.
        raw: String,
    },
    /// The registry (domain) part does not match the host[:port] grammar.
    #[error("invalid image reference {raw:?}: bad registry {registry:?}")]
    BadRegistry {
        /// The reference as given.
        raw: String,
        /// The registry part.
        registry: String,
    },
    /// The repository path does not match the path-component grammar.
    #[error("invalid image reference {raw:?}: bad repository {repository:?} (lowercase letters, digits and separators . _ __ - only)")]
    BadRepository {
        /// The reference as given.
        raw: String,
        /// The repository part.
        repository: String,
    },
    /// The tag does not match `[\w][\w.-]{0,127}`.
    #[error("invalid image reference {raw:?}: bad tag {tag:?}")]
    BadTag {
        /// The reference as given.
        raw: String,
        /// The tag part.
        tag: String,
    },
    /// The digest is not `algorithm:hex`, or its hex part is not exactly as long as the
    /// algorithm's or not lower case (go-digest `Algorithm.Validate`).
    #[error("invalid image reference {raw:?}: bad digest {digest:?}: {reason}")]
    BadDigest {
        /// The reference as given.
        raw: String,
        /// The digest part.
        digest: String,
        /// What is wrong with it, e.g. `sha256 needs 64 lower-case hex digits, got 34`.
        reason: String,
    },
    /// The digest's algorithm is not one go-digest registers ([`DIGEST_ALGORITHMS`]).
    #[error("invalid image reference {raw:?}: unsupported digest algorithm {algorithm:?} (use sha256, sha384 or sha512)")]
    UnsupportedDigestAlgorithm {
        /// The reference as given.
        raw: String,
        /// The algorithm part, before the `:`.
        algorithm: String,
    },
    /// The repository path is longer than [`REPOSITORY_NAME_TOTAL_LENGTH_MAX`] bytes.
    #[error(
        "invalid image reference {raw:?}: repository path is {length} characters, longer than 255"
    )]
    NameTooLong {
        /// The reference as given.
        raw: String,
        /// Length of the repository path, in bytes.
        length: usize,
    },
    /// A bare 64-hex string is an image ID, not a repository name (Docker rejects it too).
    #[error("invalid image reference {raw:?}: a 64-character hex string is an image ID, not a repository name")]
    ImageId {
        /// The reference as given.
        raw: String,
    },
}

/// A normalized image reference: `registry/repository[:tag][@digest]`.
///
/// Equality and ordering are on the normalized form, so `python`,
/// `docker.io/library/python` and `index.docker.io/library/python:latest` are equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes `raw` the way `docker pull` does.
    ///
    /// A reference with neither tag nor digest gets the tag `latest`; a reference with a
    /// digest and no tag keeps no tag.
    ///
    /// # Errors
    ///
    /// A [`ReferenceError`] naming the part that breaks the Docker reference grammar.
    pub fn parse(raw: &str) -> Result<Self, ReferenceError> {
        let input = raw.trim();
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let err_raw = || input.to_string();
        if HEX64.is_match(input) {
            return Err(ReferenceError::ImageId { raw: err_raw() });
        }
        let (name_and_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (input, None),
        };
        // The tag separator is the last ':' after the last '/', so registry ports survive.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_and_tag[..last_slash + i],
                Some(&name_and_tag[last_slash + i + 1..]),
            ),
            None => (name_and_tag, None),
        };
        let (registry, repository) = split_registry(name);
        if !DOMAIN.is_match(registry) {
            return Err(ReferenceError::BadRegistry {
                raw: err_raw(),
                registry: registry.to_string(),
            });
        }
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase { raw: err_raw() });
        }
        if !PATH.is_match(repository) {
            return Err(ReferenceError::BadRepository {
                raw: err_raw(),
                repository: repository.to_string(),
            });
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{repository}")
        } else {
            repository.to_string()
        };
        if repository.len() > REPOSITORY_NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong {
                raw: err_raw(),
                length: repository.len(),
            });
        }
        if let Some(t) = tag {
            if !TAG.is_match(t) {
                return Err(ReferenceError::BadTag {
                    raw: err_raw(),
                    tag: t.to_string(),
                });
            }
        }
        if let Some(d) = digest {
            check_digest(d).map_err(|e| e.for_reference(input))?;
        }
        let tag = match (tag, digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Self {
            registry: registry.to_string(),
            repository,
            tag,
            digest: digest.map(str::to_string),
        })
    }

    /// The registry host, with port if any (`docker.io`, `localhost:5000`, `ghcr.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/python`, `team/app`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one (always `Some` unless a digest was given alone).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:<hex>`), if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`, without tag or digest: Kargo's `repoURL` for this image.
    pub fn repo_url(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same reference without its digest: what a tag-following watcher tracks.
    ///
    /// A digest-only reference (`python@sha256:…`) keeps its digest, since without it
    /// nothing would identify the image.
    pub fn without_digest(&self) -> Self {
        if self.tag.is_none() {
            return self.clone();
        }
        Self {
            digest: None,
            ..self.clone()
        }
    }

    /// The same reference pinned to `digest` (replacing any digest it had).
    pub fn with_digest(&self, digest: impl Into<String>) -> Self {
        Self {
            digest: Some(digest.into()),
            ..self.clone()
        }
    }

    /// The same repository with `tag` and no digest.
    pub fn with_tag(&self, tag: impl Into<String>) -> Self {
        Self {
            tag: Some(tag.into()),
            digest: None,
            ..self.clone()
        }
    }
}

/// Checks `digest` (`algorithm:hex`) the way go-digest's `digest.Parse` does: the
/// grammar's shape, then a registered algorithm ([`DIGEST_ALGORITHMS`]) with exactly its
/// number of lower-case hex digits.
///
/// # Errors
///
/// [`ReferenceError::BadDigest`] or [`ReferenceError::UnsupportedDigestAlgorithm`], with
/// `raw` set to the digest itself.
pub fn check_digest(digest: &str) -> Result<(), ReferenceError> {
    let bad = |reason: String| ReferenceError::BadDigest {
        raw: digest.to_string(),
        digest: digest.to_string(),
        reason,
    };
    if !DIGEST.is_match(digest) {
        return Err(bad(
            "expected algorithm:hex, e.g. sha256:<64 hex digits>".to_string()
        ));
    }
    let (algorithm, hex) = digest.split_once(':').unwrap_or((digest, ""));
    let Some((_, length)) = DIGEST_ALGORITHMS.iter().find(|(a, _)| *a == algorithm) else {
        return Err(ReferenceError::UnsupportedDigestAlgorithm {
            raw: digest.to_string(),
            algorithm: algorithm.to_string(),
        });
    };
    if hex.len() != *length {
        return Err(bad(format!(
            "{algorithm} needs {length} hex digits, got {}",
            hex.len()
        )));
    }
    if hex.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad(format!("{algorithm} hex digits must be lower case")));
    }
    Ok(())
}

impl ReferenceError {
    /// The same error naming `raw` as the reference given (digest checks name the digest).
    fn for_reference(self, raw: &str) -> Self {
        let raw = raw.to_string();
        match self {
            Self::BadDigest { digest, reason, .. } => Self::BadDigest {
                raw,
                digest,
                reason,
            },
            Self::UnsupportedDigestAlgorithm { algorithm, .. } => {
                Self::UnsupportedDigestAlgorithm { raw, algorithm }
            }
            other => other,
        }
    }
}

/// Splits `name` into registry and remote name, following `splitDockerDomain`.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `text` as lower-case ASCII letters, digits and `-`: every other character becomes
/// `-`, runs of `-` collapse to one, and there is no leading `-` (a trailing one may
/// remain; callers trim after truncating). The basis of DNS-label names for discovered
/// images and rebuild ids (Kubernetes object names, RFC 1123 labels).
pub fn slug(text: &str) -> String {
    let mut slug = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if !(c == '-' && (slug.is_empty() || slug.ends_with('-'))) {
            slug.push(c);
        }
    }
    slug
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const D: &str = "sha256:5616185fa2dbb10d12d3cf2b0e0ca81a55b1bd7b13a0e1a8a0d8f2c1f2e3a4b5";

    #[rstest]
    #[case("python", "docker.io/library/python:latest")]
    #[case("python:3.12-slim", "docker.io/library/python:3.12-slim")]
    #[case("library/python", "docker.io/library/python:latest")]
    #[case("docker.io/python", "docker.io/library/python:latest")]
    #[case("index.docker.io/library/python:3", "docker.io/library/python:3")]
    #[case("bitnami/redis:7", "docker.io/bitnami/redis:7")]
    #[case("ghcr.io/a/b:v1", "ghcr.io/a/b:v1")]
    #[case("localhost/x", "localhost/x:latest")]
    #[case("localhost:5000/x", "localhost:5000/x:latest")]
    #[case("localhost:5000/x:1.0", "localhost:5000/x:1.0")]
    #[case("127.0.0.1:5000/team/app:1", "127.0.0.1:5000/team/app:1")]
    #[case("[::1]:5000/team/app", "[::1]:5000/team/app:latest")]
    #[case(
        "quay.io/jupyter/base-notebook",
        "quay.io/jupyter/base-notebook:latest"
    )]
    #[case(
        "registry.k8s.io/build-image/debian-base:bookworm-v1.0.4",
        "registry.k8s.io/build-image/debian-base:bookworm-v1.0.4"
    )]
    #[case(
        "my-registry.example.com:443/a__b/c--d.e:tag_1.0-x",
        "my-registry.example.com:443/a__b/c--d.e:tag_1.0-x"
    )]
    #[case("  ubuntu:24.04  ", "docker.io/library/ubuntu:24.04")]
    fn normalizes_like_docker(#[case] raw: &str, #[case] normalized: &str) {
        assert_eq!(Reference::parse(raw).unwrap().to_string(), normalized);
    }

    #[test]
    fn digest_only_keeps_no_tag_and_tag_plus_digest_keeps_both() {
        let only = Reference::parse(&format!("python@{D}")).unwrap();
        assert_eq!(only.to_string(), format!("docker.io/library/python@{D}"));
        assert_eq!(only.tag(), None);
        assert_eq!(only.without_digest(), only);
        let both = Reference::parse(&format!("ghcr.io/a/b:1@{D}")).unwrap();
        assert_eq!(both.tag(), Some("1"));
        assert_eq!(both.digest(), Some(D));
        assert_eq!(both.without_digest().to_string(), "ghcr.io/a/b:1");
        assert_eq!(both.repo_url(), "ghcr.io/a/b");
    }

    #[rstest]
    #[case("", "empty")]
    #[case("Python", "lowercase")]
    #[case("docker.io/Library/python", "lowercase")]
    #[case("python:", "bad tag")]
    #[case("python:-x", "bad tag")]
    #[case("python@sha256:abc", "bad digest")]
    #[case("python@md5", "bad digest")]
    #[case("a//b", "bad repository")]
    #[case("-a/b", "bad repository")]
    #[case("a/b_", "bad repository")]
    #[case("foo$bar", "bad repository")]
    #[case("exa mple.com/a", "bad registry")]
    #[case("-bad.com/a", "bad registry")]
    #[case(
        "0123456789012345678901234567890123456789012345678901234567890123",
        "image ID"
    )]
    fn rejects_what_docker_rejects(#[case] raw: &str, #[case] message: &str) {
        let err = Reference::parse(raw).unwrap_err().to_string();
        assert!(err.contains(message), "{raw:?}: {err}");
    }

    /// go-digest's `digest.Parse`: registered algorithms only, each with its exact
    /// length of lower-case hex (`algorithm.go`); `docker pull` rejects the rest.
    #[rstest]
    #[case::sha256(format!("sha256:{}", "a".repeat(64)))]
    #[case::sha384(format!("sha384:{}", "0".repeat(96)))]
    #[case::sha512(format!("sha512:{}", "f".repeat(128)))]
    fn accepts_registered_digest_algorithms_at_their_length(#[case] digest: String) {
        let r = Reference::parse(&format!("python@{digest}")).unwrap();
        assert_eq!(r.digest(), Some(digest.as_str()));
    }

    #[rstest]
    #[case::sha256_34_digits(format!("sha256:{}", "a".repeat(34)), "sha256 needs 64 hex digits, got 34")]
    #[case::sha256_65_digits(format!("sha256:{}", "a".repeat(65)), "sha256 needs 64 hex digits, got 65")]
    #[case::sha256_as_long_as_sha512(format!("sha256:{}", "a".repeat(128)), "got 128")]
    #[case::sha512_64_digits(format!("sha512:{}", "a".repeat(64)), "sha512 needs 128 hex digits, got 64")]
    #[case::upper_case_hex(format!("sha256:{}", "A".repeat(64)), "must be lower case")]
    #[case::mixed_case_hex(format!("sha256:{}B", "b".repeat(63)), "must be lower case")]
    #[case::unknown_algorithm(format!("foo:{}", "a".repeat(64)), "unsupported digest algorithm \"foo\"")]
    #[case::upper_case_algorithm(format!("SHA256:{}", "a".repeat(64)), "unsupported digest algorithm \"SHA256\"")]
    #[case::md5_shape(format!("md5:{}", "a".repeat(32)), "unsupported digest algorithm")]
    #[case::no_hex("sha256:".to_string(), "expected algorithm:hex")]
    #[case::not_hex(format!("sha256:{}", "g".repeat(64)), "expected algorithm:hex")]
    fn rejects_digests_go_digest_rejects(#[case] digest: String, #[case] message: &str) {
        let raw = format!("ghcr.io/a/b:1@{digest}");
        let err = Reference::parse(&raw).unwrap_err();
        assert!(err.to_string().contains(message), "{digest}: {err}");
        assert!(err.to_string().contains(&raw), "names the reference: {err}");
    }

    /// distribution/reference ≥ v0.6.0 counts the repository path only
    /// (`reference_test.go`: `example.com/` + 255 × `a` is valid, 256 is not).
    #[rstest]
    #[case::path_of_255_behind_a_long_registry(format!("{}.example.com/{}", "r".repeat(60), "a".repeat(255)), true)]
    #[case::path_of_255(format!("example.com/{}", "a".repeat(255)), true)]
    #[case::path_of_256(format!("example.com/{}", "a".repeat(256)), false)]
    #[case::hub_name_with_library_prefix_of_255("a".repeat(247), true)]
    #[case::hub_name_with_library_prefix_of_256("a".repeat(248), false)]
    fn the_length_limit_applies_to_the_repository_path(#[case] raw: String, #[case] ok: bool) {
        let result = Reference::parse(&raw);
        if ok {
            assert!(result.is_ok(), "{result:?}");
        } else {
            assert!(
                matches!(result, Err(ReferenceError::NameTooLong { length: 256, .. })),
                "{result:?}"
            );
        }
    }

    #[test]
    fn tag_characters_are_ascii_as_in_gos_word_class() {
        for tag in ["v1.2_3-rc", "_x", &"a".repeat(128)] {
            assert!(Reference::parse(&format!("app:{tag}")).is_ok(), "{tag}");
        }
        for tag in ["é", "v1é", "１", ".x", "-x", &"a".repeat(129)] {
            let result = Reference::parse(&format!("app:{tag}"));
            assert!(
                matches!(result, Err(ReferenceError::BadTag { .. })),
                "{tag}: {result:?}"
            );
        }
    }

    #[test]
    fn uppercase_first_element_is_a_registry_as_docker_treats_it() {
        // splitDockerDomain treats an upper-case first element as a domain.
        let r = Reference::parse("Registry/app").unwrap();
        assert_eq!(r.registry(), "Registry");
        assert_eq!(r.repository(), "app");
    }

    #[test]
    fn serde_round_trips_through_the_normalized_string() {
        let r: Reference = serde_json::from_str("\"nginx:1.27\"").unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            "\"docker.io/library/nginx:1.27\""
        );
    }
}
