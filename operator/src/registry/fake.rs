//! An in-memory [`DigestResolver`] for tests of the long-running modes: a map from
//! references to digests that the test sets and changes, with no network.
//!
//! Answers follow the real client's shapes: a multi-platform image resolves to an
//! OCI index digest with its platform manifests, a single-platform image to its
//! manifest digest, a pinned reference to its digest, and unknown references to
//! [`RegistryError::NotFound`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use oci_client::manifest::{OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE};

use super::client::ResolvedImage;
use super::inspect::PlatformManifest;
use super::platform::Platform;
use super::resolver::{BaseInfo, DigestResolver};
use super::RegistryError;
use crate::reference::Reference;

/// What one digest is: its media type and, for an index, its platform manifests.
#[derive(Debug, Clone)]
struct Content {
    media_type: &'static str,
    platforms: Vec<PlatformManifest>,
}

#[derive(Debug, Default)]
struct State {
    /// Tagged reference (normalized, no digest) → digest it points at.
    tags: HashMap<String, String>,
    /// Digest → what it is.
    contents: HashMap<String, Content>,
    /// Image-manifest digest → its base annotations and layers.
    bases: HashMap<String, BaseInfo>,
    /// Resolutions answered, in order (normalized references as asked).
    asked: Vec<String>,
}

/// A fake registry. Cloning shares the map, so a test can keep a handle and change
/// digests while the code under test holds another.
#[derive(Debug, Clone, Default)]
pub struct FakeRegistry {
    state: Arc<Mutex<State>>,
}

impl FakeRegistry {
    /// An empty registry: every reference is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; keep answering.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Points the tag of `reference` at a single-platform image manifest `digest`
    /// (replacing what it pointed at: a base update).
    pub fn set_digest(&self, reference: &Reference, digest: &str) {
        let mut state = self.state();
        state.tags.insert(tag_key(reference), digest.to_owned());
        state.contents.insert(
            digest.to_owned(),
            Content {
                media_type: OCI_IMAGE_MEDIA_TYPE,
                platforms: Vec::new(),
            },
        );
    }

    /// Points the tag of `reference` at an OCI index `digest` listing `platforms` as
    /// `(os/arch[/variant], manifest digest)`; platforms are normalized as the real
    /// client normalizes an index's entries.
    ///
    /// # Errors
    /// [`RegistryError::Platform`] when a platform is not `os/arch[/variant]`.
    pub fn set_index(
        &self,
        reference: &Reference,
        digest: &str,
        platforms: &[(&str, &str)],
    ) -> Result<(), RegistryError> {
        let platforms = platforms
            .iter()
            .map(|(platform, manifest)| {
                Ok(PlatformManifest {
                    platform: Platform::parse(platform)?.to_string(),
                    digest: (*manifest).to_owned(),
                })
            })
            .collect::<Result<Vec<_>, RegistryError>>()?;
        let mut state = self.state();
        state.tags.insert(tag_key(reference), digest.to_owned());
        state.contents.insert(
            digest.to_owned(),
            Content {
                media_type: OCI_IMAGE_INDEX_MEDIA_TYPE,
                platforms,
            },
        );
        Ok(())
    }

    /// Records what the image manifest `manifest_digest` was built on (its
    /// `manifest_digest` field is set to `manifest_digest`).
    pub fn set_base(&self, manifest_digest: &str, base: BaseInfo) {
        self.state().bases.insert(
            manifest_digest.to_owned(),
            BaseInfo {
                manifest_digest: manifest_digest.to_owned(),
                ..base
            },
        );
    }

    /// Deletes the tag of `reference`: later resolutions fail with `NotFound`.
    pub fn remove_tag(&self, reference: &Reference) {
        self.state().tags.remove(&tag_key(reference));
    }

    /// The references resolved so far, in order (normalized).
    pub fn asked(&self) -> Vec<String> {
        self.state().asked.clone()
    }

    fn lookup(&self, reference: &Reference) -> Result<ResolvedImage, RegistryError> {
        let mut state = self.state();
        state.asked.push(reference.to_string());
        let not_found = || RegistryError::NotFound {
            registry: reference.registry().to_owned(),
            what: format!("manifest {reference}"),
        };
        let digest = match reference.digest() {
            Some(d) => d.to_owned(),
            None => state
                .tags
                .get(&tag_key(reference))
                .cloned()
                .ok_or_else(not_found)?,
        };
        let content = state.contents.get(&digest).cloned().ok_or_else(not_found)?;
        Ok(ResolvedImage {
            reference: reference.clone(),
            digest,
            media_type: content.media_type.to_owned(),
            platforms: content.platforms,
        })
    }
}

/// The map key of a tag: the normalized reference without digest.
fn tag_key(reference: &Reference) -> String {
    reference.without_digest().to_string()
}

impl DigestResolver for FakeRegistry {
    async fn resolve(&self, reference: &Reference) -> Result<ResolvedImage, RegistryError> {
        self.lookup(reference)
    }

    async fn base_of(
        &self,
        image: &Reference,
        platform: &Platform,
    ) -> Result<BaseInfo, RegistryError> {
        let resolved = self.lookup(image)?;
        let manifest = resolved.manifest_digest_for(platform)?.to_owned();
        Ok(self
            .state()
            .bases
            .get(&manifest)
            .cloned()
            .unwrap_or(BaseInfo {
                manifest_digest: manifest,
                ..BaseInfo::default()
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::inspect::BaseAnnotations;

    const INDEX: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const AMD64: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const ARM64: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
    const NEXT: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    /// Code under test sees the resolver only through the trait, from a spawned task.
    async fn digest_via_task<R: DigestResolver + Clone + 'static>(
        resolver: R,
        reference: Reference,
    ) -> Result<String, RegistryError> {
        tokio::spawn(async move { resolver.resolve(&reference).await.map(|r| r.digest) })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_changed_digest_is_seen_on_the_next_resolution() {
        let fake = FakeRegistry::new();
        let python = r("python:3.12-slim");
        fake.set_digest(&python, AMD64);
        assert_eq!(
            digest_via_task(fake.clone(), python.clone()).await.unwrap(),
            AMD64
        );
        fake.set_digest(&python, NEXT);
        assert_eq!(
            digest_via_task(fake.clone(), python.clone()).await.unwrap(),
            NEXT
        );
        assert_eq!(
            fake.asked(),
            [
                "docker.io/library/python:3.12-slim",
                "docker.io/library/python:3.12-slim"
            ]
        );
    }

    #[tokio::test]
    async fn unknown_and_removed_tags_are_not_found() {
        let fake = FakeRegistry::new();
        let alpine = r("alpine:3.19");
        assert!(matches!(
            fake.resolve(&alpine).await,
            Err(RegistryError::NotFound { .. })
        ));
        fake.set_digest(&alpine, AMD64);
        fake.remove_tag(&alpine);
        assert!(matches!(
            fake.resolve(&alpine).await,
            Err(RegistryError::NotFound { .. })
        ));
        assert!(
            matches!(
                fake.resolve(&r(&format!("alpine@{NEXT}"))).await,
                Err(RegistryError::NotFound { .. })
            ),
            "a digest nobody pushed is unknown"
        );
    }

    #[tokio::test]
    async fn an_index_resolves_with_normalized_platforms_and_pins_resolve_to_themselves() {
        let fake = FakeRegistry::new();
        let tool = r("ghcr.io/acme/tool:1");
        fake.set_index(
            &tool,
            INDEX,
            &[("linux/amd64", AMD64), ("linux/arm64/v8", ARM64)],
        )
        .unwrap();
        let resolved = fake.resolve(&tool).await.unwrap();
        assert!(resolved.is_index());
        assert_eq!(resolved.digest, INDEX);
        assert_eq!(
            resolved
                .platforms
                .iter()
                .map(|p| (p.platform.as_str(), p.digest.as_str()))
                .collect::<Vec<_>>(),
            [("linux/amd64", AMD64), ("linux/arm64", ARM64)]
        );
        let pinned = fake.resolve(&tool.with_digest(INDEX)).await.unwrap();
        assert_eq!((pinned.digest.as_str(), pinned.platforms.len()), (INDEX, 2));
        assert!(matches!(
            fake.set_index(&tool, INDEX, &[("linux", AMD64)]),
            Err(RegistryError::Platform(_))
        ));
    }

    #[tokio::test]
    async fn base_of_reads_the_platform_manifest_of_an_index() {
        let fake = FakeRegistry::new();
        let app = r("registry.example.com/team/app:1.0");
        fake.set_index(
            &app,
            INDEX,
            &[("linux/amd64", AMD64), ("linux/arm64", ARM64)],
        )
        .unwrap();
        let base = BaseAnnotations {
            name: Some("docker.io/library/python:3.12-slim".into()),
            digest: Some(NEXT.into()),
        };
        fake.set_base(
            ARM64,
            BaseInfo {
                base: base.clone(),
                layers: vec![NEXT.into()],
                ..BaseInfo::default()
            },
        );
        let pinned = app.with_digest(INDEX);
        let arm = fake
            .base_of(&pinned, &Platform::parse("linux/arm64").unwrap())
            .await
            .unwrap();
        assert_eq!(arm.manifest_digest, ARM64);
        assert_eq!(arm.base, base);
        assert_eq!(arm.layers, [NEXT]);
        let amd = fake
            .base_of(&pinned, &Platform::linux_amd64())
            .await
            .unwrap();
        assert_eq!(amd.manifest_digest, AMD64);
        assert_eq!(
            amd.base,
            BaseAnnotations::default(),
            "no annotations recorded"
        );
        assert!(matches!(
            fake.base_of(&pinned, &Platform::parse("linux/s390x").unwrap())
                .await,
            Err(RegistryError::PlatformNotFound { .. })
        ));
    }
}
