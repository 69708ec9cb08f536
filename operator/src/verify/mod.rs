//! Signature verification of base-image updates (cosign / Sigstore, issue 14).
//!
//! ```text
//! update name@digest ──policy (images.yaml `verify:`)──▶ Verifier ──cache hit?──▶ verdict
//!        │ miss
//!        ├─ referrers API  GET /v2/<name>/referrers/<digest>?artifactType=cosign sig
//!        └─ tag scheme     HEAD /v2/<name>/manifests/sha256-<hex>.sig
//!             ──▶ signature manifest ──▶ simple-signing layers (blobs, by digest)
//!             ──▶ payload names <digest>? signature verifies with the key? (sigstore)
//!             ──▶ SignatureCheck { verified | unsigned | invalid, mode } ──▶ Event::Update
//! ```
//!
//! Every request goes through the [`RegistryClient`] (same credentials, request budget,
//! retries and mirrors as the watcher). The cryptography is the `sigstore` crate's:
//! a `PublicKeyVerifier` constraint checks each signature layer; we only fetch the
//! layers (its own registry client would bypass our auth, budget and accounting) and
//! check that the simple-signing payload binds the update's digest
//! (`critical.image.docker-manifest-digest`, cosign's "simple signing" format).
//!
//! Verdicts are cached per (policy key, digest): a digest's content never changes, so a
//! verified or invalid digest is checked once. "Unsigned" is not cached (a publisher
//! may sign after pushing); the running factory still checks each update only once,
//! when it is recorded.
//!
//! Not supported (see the README): keyless verification (a Fulcio certificate chain
//! and Rekor entry) — `sigstore` 0.15 builds its certificate checks only through its
//! own registry client (`SignatureLayer::new` and `CertificateSignature::from_certificate`
//! are crate-private), so a keyless policy fails closed with a clear detail; and
//! Sigstore bundle referrers (`application/vnd.dev.sigstore.bundle.v0.3+json`, cosign
//! v3's default), whose parser is crate-private too.

mod cache;
mod cosign;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryError};
pub use crate::runtime::{SignatureCheck, SignatureVerdict, VerifyMode};
use cache::VerdictCache;

/// Where a cosign public key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// PEM written in `images.yaml` (`key:`), checked when the file is loaded.
    Pem(String),
    /// A PEM file (`keyFile:`, relative to the directory of `images.yaml`), read when a
    /// digest is verified.
    File(PathBuf),
    /// A key of a Kubernetes Secret (`secret:`), read by the controller when a digest
    /// is verified; `namespace` defaults to the controller's namespace.
    Secret {
        /// Namespace; `None`: the controller's own.
        namespace: Option<String>,
        /// Secret name.
        name: String,
        /// Key in the Secret's `data`.
        key: String,
    },
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pem(_) => f.write_str("inline key"),
            Self::File(p) => write!(f, "key file {}", p.display()),
            Self::Secret {
                namespace,
                name,
                key,
            } => match namespace {
                Some(ns) => write!(f, "Secret {ns}/{name} key {key}"),
                None => write!(f, "Secret {name} key {key}"),
            },
        }
    }
}

/// Keyless (Fulcio certificate) requirements. Accepted and validated in `images.yaml`;
/// not verifiable with this build (see the module docs): such a policy fails closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyless {
    /// Regular expression the certificate's identity (SAN) must match.
    pub identity: String,
    /// Regular expression the OIDC issuer must match.
    pub issuer: String,
    /// Whether a Rekor transparency-log entry is required (default `true`).
    pub rekor: bool,
}

/// What a signature must be made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// A cosign key pair: the public key.
    Key(KeySource),
    /// Keyless signing.
    Keyless(Keyless),
}

/// A validated `verify:` block of `images.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// What a signature must be made with.
    pub requirement: Requirement,
    /// What an unverified digest means (default `enforce`).
    pub mode: VerifyMode,
}

/// Why a digest could not be judged (the verdict is retried later, nothing recorded).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Talking to the registry failed (other than "no such signature").
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The policy's key could not be read.
    #[error("cannot read the cosign public key ({source_of}): {reason}")]
    Key {
        /// Where it was looked for.
        source_of: String,
        /// What went wrong (never key material).
        reason: String,
    },
}

/// Where signatures were looked for, for the benchmark and `inspect --verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The verdict came from the cache: no request.
    Cached,
    /// The referrers API answered (and, when it listed no valid signature, the tag
    /// scheme was tried too).
    Referrers,
    /// The registry has no referrers API: only the tag scheme was used.
    TagScheme,
}

/// A verdict and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// The recorded check.
    pub check: SignatureCheck,
    /// Where signatures were looked for.
    pub lookup: Lookup,
}

/// Checks digests against `verify:` policies, through one registry client, with a
/// verdict cache. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    client: RegistryClient,
    cache: Arc<VerdictCache>,
    keys: KeyReader,
    /// Registries known to lack the referrers API: asked once per process.
    no_referrers: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

/// Reads key material: files from disk, Secrets through the cluster client.
#[derive(Clone, Default)]
pub struct KeyReader {
    cluster: Option<(kube::Client, String)>,
}

impl KeyReader {
    /// Reads Secrets with `client`; a `keySecret` without a namespace is looked up in
    /// `namespace` (the controller's own).
    pub fn with_cluster(client: kube::Client, namespace: impl Into<String>) -> Self {
        Self {
            cluster: Some((client, namespace.into())),
        }
    }

    /// The PEM bytes of `source`.
    ///
    /// # Errors
    /// [`VerifyError::Key`] when the file or Secret cannot be read, or a Secret is named
    /// without a cluster (`run` outside Kubernetes).
    pub async fn read(&self, source: &KeySource) -> Result<Vec<u8>, VerifyError> {
        let fail = |reason: String| VerifyError::Key {
            source_of: source.to_string(),
            reason,
        };
        match source {
            KeySource::Pem(pem) => Ok(pem.as_bytes().to_vec()),
            KeySource::File(path) => tokio::fs::read(path).await.map_err(|e| fail(e.to_string())),
            KeySource::Secret {
                namespace,
                name,
                key,
            } => {
                let Some((client, default_ns)) = &self.cluster else {
                    return Err(fail(
                        "a keySecret is read by the controller; `run` outside a cluster needs key or keyFile".into(),
                    ));
                };
                let ns = namespace.as_deref().unwrap_or(default_ns);
                let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                    kube::Api::namespaced(client.clone(), ns);
                let secret = api.get(name).await.map_err(|e| fail(e.to_string()))?;
                secret
                    .data
                    .and_then(|mut d| d.remove(key))
                    .map(|b| b.0)
                    .ok_or_else(|| fail(format!("the Secret has no key {key:?}")))
            }
        }
    }
}

impl Verifier {
    /// A verifier using `client` for every request, with an in-memory verdict cache.
    pub fn new(client: RegistryClient) -> Self {
        Self {
            client,
            cache: Arc::new(VerdictCache::new(None)),
            keys: KeyReader::default(),
            no_referrers: Arc::default(),
        }
    }

    /// Also keeps verdicts in `dir` (`dir/<sha256 of key and digest>`), so a restarted
    /// process checks no digest twice.
    #[must_use]
    pub fn persisted(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = Arc::new(VerdictCache::new(Some(dir.into())));
        self
    }

    /// Reads `keySecret`s through `keys`.
    #[must_use]
    pub fn with_keys(mut self, keys: KeyReader) -> Self {
        self.keys = keys;
        self
    }

    /// The registry client (for request counts).
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// Judges `digest` of `image`'s repository under `policy`: verified when one cosign
    /// signature found through the referrers API or the `sha256-<hex>.sig` tag has a
    /// simple-signing payload naming `digest` and verifies with the policy's key;
    /// unsigned when none is found; invalid otherwise.
    ///
    /// # Errors
    /// [`VerifyError`] when the registry fails (other than a missing signature) or the
    /// key cannot be read; nothing is cached then.
    pub async fn verify(
        &self,
        image: &Reference,
        digest: &str,
        policy: &VerifyPolicy,
    ) -> Result<Judged, VerifyError> {
        let key = match &policy.requirement {
            Requirement::Key(source) => self.keys.read(source).await?,
            Requirement::Keyless(k) => {
                return Ok(Judged {
                    check: SignatureCheck {
                        verdict: SignatureVerdict::Invalid,
                        mode: policy.mode,
                        detail: format!(
                            "keyless verification (identity {:?}, issuer {:?}) is not supported by this build; use a cosign public key",
                            k.identity, k.issuer
                        ),
                    },
                    lookup: Lookup::Cached,
                })
            }
        };
        let cache_key = cache_key(&key, image, digest);
        if let Some((verdict, detail)) = self.cache.get(&cache_key) {
            return Ok(Judged {
                check: SignatureCheck {
                    verdict,
                    mode: policy.mode,
                    detail,
                },
                lookup: Lookup::Cached,
            });
        }
        let (verdict, detail, lookup) = cosign::judge(self, image, digest, &key).await?;
        if verdict != SignatureVerdict::Unsigned {
            self.cache.put(&cache_key, verdict, &detail);
        }
        Ok(Judged {
            check: SignatureCheck {
                verdict,
                mode: policy.mode,
                detail,
            },
            lookup,
        })
    }

    fn lacks_referrers(&self, registry: &str) -> bool {
        self.no_referrers
            .lock()
            .is_ok_and(|set| set.contains(registry))
    }

    fn note_no_referrers(&self, registry: &str) {
        if let Ok(mut set) = self.no_referrers.lock() {
            set.insert(registry.to_owned());
        }
    }
}

/// The cache key of a verdict: the key material, the repository and the digest (a
/// rotated key or a copy in another repository is judged again).
fn cache_key(key: &[u8], image: &Reference, digest: &str) -> String {
    let mut h = Sha256::new();
    h.update(key);
    h.update([0]);
    h.update(image.registry().as_bytes());
    h.update(b"/");
    h.update(image.repository().as_bytes());
    h.update([0]);
    h.update(digest.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `pem` is a public key cosign can verify with (ECDSA P-256/P-384, RSA,
/// Ed25519), for the loader of `images.yaml`.
///
/// # Errors
/// The parser's message when it is not.
pub fn check_public_key(pem: &str) -> Result<(), String> {
    sigstore::crypto::CosignVerificationKey::try_from_pem(pem.as_bytes())
        .map(|_| ())
        .map_err(|e| e.to_string())
}
