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
/// Longest full name (`registry/repository`) the grammar accepts, in bytes.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

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
    Regex::new(r"^[\w][\w.-]{0,127}$").expect("valid tag regex")
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
    /// The digest is not `algorithm:hex` with at least 32 hex digits.
    #[error("invalid image reference {raw:?}: bad digest {digest:?} (expected e.g. sha256:<64 hex digits>)")]
    BadDigest {
        /// The reference as given.
        raw: String,
        /// The digest part.
        digest: String,
    },
    /// `registry/repository` is longer than [`NAME_TOTAL_LENGTH_MAX`] bytes.
    #[error("invalid image reference {raw:?}: name longer than 255 characters")]
    NameTooLong {
        /// The reference as given.
        raw: String,
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
        if registry.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong { raw: err_raw() });
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
            if !DIGEST.is_match(d) {
                return Err(ReferenceError::BadDigest {
                    raw: err_raw(),
                    digest: d.to_string(),
                });
            }
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

    #[test]
    fn rejects_too_long_names() {
        let raw = format!("example.com/{}", "a".repeat(250));
        assert!(matches!(
            Reference::parse(&raw),
            Err(ReferenceError::NameTooLong { .. })
        ));
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
