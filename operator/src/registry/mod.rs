//! OCI registry client: digests, platforms, tags, tag selection, inspection, staleness.
//!
//! ```text
//! Reference ──HEAD──▶ digest (scan cache) ──index?──▶ platform manifests (digest cache)
//!           ──GET manifest/config by digest (digest cache)──▶ Inspection ──▶ staleness
//! repository ──tags/list (n, Link)──▶ tags ──TagSelection (Kargo)──▶ SelectedImage
//! ```
//!
//! The long-running modes see the registry through [`DigestResolver`] (implemented by
//! [`RegistryClient`] and by the in-memory [`fake::FakeRegistry`]).
//!
//! Built on `oci-client`'s manifest types; the transport is our own (see `client`) for
//! retries, rate limits, request accounting and per-registry TLS. Specs: OCI
//! distribution spec v1.1 (pull, tag listing), OCI image spec (index, manifest, config,
//! annotations), Docker registry token authentication, Kargo image subscriptions.

pub mod auth;
mod cache;
pub mod client;
pub mod digest;
mod error;
pub mod fake;
pub mod inspect;
mod limit;
pub mod platform;
pub mod resolver;
pub mod select;
pub mod settings;
mod tags;

pub use auth::{CredentialStore, Credentials, CredentialsError};
pub use client::{ManifestHead, RegistryClient, RequestStats, ResolvedImage, SelectedImage};
pub use error::RegistryError;
pub use inspect::{Inspection, PlatformManifest};
pub use platform::{Platform, PlatformError};
pub use resolver::{BaseInfo, DigestResolver};
pub use select::{
    check_semver_constraint, CompiledSelection, SelectionError, SelectionStrategy, TagSelection,
};
pub use settings::{ClientSettings, RegistrySettings};
