//! What an image is made of, and whether it is built on a base's current digest.
//!
//! Sources: OCI image spec `annotations.md` (`org.opencontainers.image.base.name`,
//! `org.opencontainers.image.base.digest`, written by buildah and BuildKit into the
//! manifest's annotations), `config.md` (`created`, `config.Labels`), `manifest.md`
//! (`layers`, in application order).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// OCI annotation naming the base image an image was built from.
pub const BASE_NAME_ANNOTATION: &str = "org.opencontainers.image.base.name";
/// OCI annotation holding the digest of that base image.
pub const BASE_DIGEST_ANNOTATION: &str = "org.opencontainers.image.base.digest";

/// One platform-specific manifest of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformManifest {
    /// Normalized `os/arch[/variant]` (`linux/arm64`, `linux/arm/v7`).
    pub platform: String,
    /// Digest of that platform's image manifest (not the index).
    pub digest: String,
}

/// The base annotations of an image manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BaseAnnotations {
    /// `org.opencontainers.image.base.name`, e.g. `docker.io/library/alpine:3.19`.
    pub name: Option<String>,
    /// `org.opencontainers.image.base.digest`, e.g. `sha256:…`.
    pub digest: Option<String>,
}

/// The inspection of one image reference. Serializes to the `inspect --output json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    /// Normalized reference as given (`docker.io/library/alpine:3.19`).
    pub reference: String,
    /// What the tag points at: the index digest for multi-arch images, else the
    /// manifest digest.
    pub digest: String,
    /// Media type of what `digest` names (index or manifest).
    pub media_type: String,
    /// For an index: every platform manifest; empty for a single manifest.
    pub platforms: Vec<PlatformManifest>,
    /// The platform whose manifest was inspected (`linux/amd64`); `None` for a single
    /// manifest (the manifest itself was inspected).
    pub platform: Option<String>,
    /// Digest of the image manifest inspected (equals `digest` for a single manifest).
    pub manifest_digest: String,
    /// Config `created` (RFC 3339) as written by the builder, `None` when absent.
    pub created: Option<String>,
    /// Config `config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// Base annotations of the inspected manifest.
    pub base: BaseAnnotations,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
    /// With a base given: whether the image is not built on the base's current digest.
    pub stale: Option<bool>,
    /// With `inspect --verify`: the signature verdict of `digest` (omitted otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::runtime::SignatureCheck>,
}

/// The platform BuildKit writes on the attestation manifests (SBOM, provenance) it adds
/// to an index: `unknown/unknown`, with the annotation
/// `vnd.docker.reference.type: attestation-manifest` (BuildKit
/// `docs/attestations/attestation-storage.md`). They are not images anyone runs.
pub const ATTESTATION_PLATFORM: &str = "unknown/unknown";

/// Whether an index entry's normalized platform is that of an attestation manifest
/// ([`ATTESTATION_PLATFORM`]) rather than of a runnable image.
pub fn is_attestation_platform(platform: &str) -> bool {
    platform == ATTESTATION_PLATFORM
}

/// The inspection without the index's attestation manifests in `platforms`, so that
/// `inspect` lists only the platforms an image can be pulled for.
pub fn without_attestation_manifests(mut inspection: Inspection) -> Inspection {
    inspection
        .platforms
        .retain(|p| !is_attestation_platform(&p.platform));
    inspection
}

/// How staleness was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StalenessEvidence {
    /// From `org.opencontainers.image.base.digest`.
    BaseDigestAnnotation,
    /// The base's layers are (not) a prefix of the image's layers.
    LayerPrefix,
}

/// Whether `image` is built on the current content of `base` (both inspected now).
///
/// With a `base.digest` annotation on the image, it is fresh when that digest is the
/// base's current tag digest, the inspected base manifest, or any platform manifest of
/// the base's current index. Without it, fresh when the base's layers are a prefix of
/// the image's layers (the builder adds layers on top of the base's).
pub fn staleness(image: &Inspection, base: &Inspection) -> (bool, StalenessEvidence) {
    if let Some(built_on) = &image.base.digest {
        let current = std::iter::once(&base.digest)
            .chain(std::iter::once(&base.manifest_digest))
            .chain(base.platforms.iter().map(|p| &p.digest));
        let fresh = current.into_iter().any(|d| d == built_on);
        return (!fresh, StalenessEvidence::BaseDigestAnnotation);
    }
    let fresh = image.layers.len() >= base.layers.len()
        && image.layers.iter().zip(&base.layers).all(|(a, b)| a == b);
    (!fresh, StalenessEvidence::LayerPrefix)
}

/// The parts of an image config we read (OCI image spec `config.md`).
#[derive(Debug, Deserialize)]
pub(crate) struct ImageConfig {
    #[serde(default)]
    pub(crate) created: Option<String>,
    #[serde(default)]
    pub(crate) config: Option<ImageConfigSection>,
    #[serde(default)]
    pub(crate) os: Option<String>,
    #[serde(default)]
    pub(crate) architecture: Option<String>,
    #[serde(default)]
    pub(crate) variant: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ImageConfigSection {
    #[serde(rename = "Labels", default)]
    pub(crate) labels: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(layers: &[&str], base_digest: Option<&str>) -> Inspection {
        Inspection {
            reference: "r/x:1".into(),
            digest: "sha256:img".into(),
            media_type: String::new(),
            platforms: vec![],
            platform: None,
            manifest_digest: "sha256:img".into(),
            created: None,
            labels: BTreeMap::new(),
            base: BaseAnnotations {
                name: None,
                digest: base_digest.map(str::to_owned),
            },
            layers: layers.iter().map(|l| (*l).to_owned()).collect(),
            stale: None,
            signature: None,
        }
    }

    #[test]
    fn annotation_decides_when_present() {
        let mut base = image(&["a"], None);
        base.digest = "sha256:index".into();
        base.platforms = vec![PlatformManifest {
            platform: "linux/arm64".into(),
            digest: "sha256:arm".into(),
        }];
        assert_eq!(
            staleness(&image(&["z"], Some("sha256:index")), &base),
            (false, StalenessEvidence::BaseDigestAnnotation)
        );
        assert_eq!(
            staleness(&image(&["z"], Some("sha256:arm")), &base),
            (false, StalenessEvidence::BaseDigestAnnotation)
        );
        assert_eq!(
            staleness(&image(&["a", "b"], Some("sha256:old")), &base),
            (true, StalenessEvidence::BaseDigestAnnotation)
        );
    }

    #[test]
    fn layer_prefix_decides_without_annotation() {
        let base = image(&["a", "b"], None);
        assert_eq!(
            staleness(&image(&["a", "b", "c"], None), &base),
            (false, StalenessEvidence::LayerPrefix)
        );
        assert_eq!(
            staleness(&image(&["a", "x", "c"], None), &base),
            (true, StalenessEvidence::LayerPrefix)
        );
        assert_eq!(
            staleness(&image(&["a"], None), &base),
            (true, StalenessEvidence::LayerPrefix)
        );
    }
}
