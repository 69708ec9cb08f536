//! The registry seam of the long-running modes: what a tag points at now, and what an
//! image was built on.
//!
//! The engine and controller take a [`DigestResolver`] instead of a [`RegistryClient`],
//! so their tests run against [`super::fake::FakeRegistry`] (digests set by the test,
//! no network) while production uses the real client. This follows the kube-rs testing
//! guide and Kargo's overridable seams: the real I/O sits behind a small trait and the
//! fake is a map.

use std::future::Future;

use super::client::{RegistryClient, ResolvedImage};
use super::inspect::BaseAnnotations;
use super::platform::Platform;
use super::RegistryError;
use crate::reference::Reference;

/// What an image's manifest says about the base it was built on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseInfo {
    /// Digest of the image manifest read (the platform's entry of an index, else the
    /// manifest the reference names).
    pub manifest_digest: String,
    /// `org.opencontainers.image.base.name` / `.base.digest` (OCI image spec
    /// `annotations.md`); empty when the builder did not write them.
    pub base: BaseAnnotations,
    /// Layer digests, bottom first (OCI image spec `manifest.md`).
    pub layers: Vec<String>,
}

/// Resolves references against a registry. Futures are `Send`, so implementations can
/// be used from `tokio::spawn`ed tasks.
pub trait DigestResolver: Send + Sync {
    /// What `reference` points at now: the index digest of a multi-platform image (with
    /// its platform manifests) or the manifest digest of a single-platform one. A
    /// reference pinned by digest resolves to that digest.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown tag or digest; the transport, auth
    /// and document errors of [`RegistryClient::resolve`].
    fn resolve(
        &self,
        reference: &Reference,
    ) -> impl Future<Output = Result<ResolvedImage, RegistryError>> + Send;

    /// The base annotations and layers of `image` for `platform` (an index's entry for
    /// that platform; a single manifest whatever its platform). `image` is usually
    /// pinned (`name@sha256:…`), so the answer is immutable.
    ///
    /// # Errors
    /// Those of [`Self::resolve`], and [`RegistryError::PlatformNotFound`] when an
    /// index lacks `platform`.
    fn base_of(
        &self,
        image: &Reference,
        platform: &Platform,
    ) -> impl Future<Output = Result<BaseInfo, RegistryError>> + Send;
}

impl DigestResolver for RegistryClient {
    async fn resolve(&self, reference: &Reference) -> Result<ResolvedImage, RegistryError> {
        RegistryClient::resolve(self, reference).await
    }

    async fn base_of(
        &self,
        image: &Reference,
        platform: &Platform,
    ) -> Result<BaseInfo, RegistryError> {
        let inspection = self.inspect(image, Some(platform)).await?;
        Ok(BaseInfo {
            manifest_digest: inspection.manifest_digest,
            base: inspection.base,
            layers: inspection.layers,
        })
    }
}
