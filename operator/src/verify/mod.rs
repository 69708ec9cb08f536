//! Signature verification of base-image updates (cosign / Sigstore, issue 14).
//!
//! ```text
//! update name@digest ──policy (images.yaml `verify:`)──▶ Verifier ──cache hit?──▶ verdict
//!        │ miss
//!        ├─ referrers API  GET /v2/<name>/referrers/<digest>   (cosign signatures and
//!        │                 Sigstore bundles; other artifact types are not fetched)
//!        ├─ tag scheme     HEAD /v2/<name>/manifests/sha256-<hex>.sig
//!        └─ without the referrers API: the referrers tag sha256-<hex> (an index)
//!             ──▶ signature manifest ──▶ simple-signing / bundle layers (blobs, by digest)
//!             ──▶ names <digest>? signature verifies with the key, or keyless? (sigstore)
//!             ──▶ SignatureCheck { verified | unsigned | invalid, mode } ──▶ Event::Update
//! ```
//!
//! Every request goes through the [`RegistryClient`] (same credentials, request budget,
//! retries and mirrors as the watcher). The cryptography is the `sigstore` crate's; we
//! only fetch the layers (its own registry client would bypass our auth, budget and
//! accounting) and check that what is signed names the update's digest:
//!
//! - **key** (`cosign sign --key`): a simple-signing payload
//!   (`critical.image.docker-manifest-digest`) whose signature verifies with sigstore's
//!   `PublicKeyVerifier`; or a cosign v3 Sigstore bundle whose DSSE signature verifies
//!   with the key ([`bundle`]).
//! - **keyless** (Fulcio certificate + Rekor entry, [`keyless`]): a cosign v3 bundle, or
//!   a cosign v2 simple-signing layer with certificate and Rekor bundle annotations,
//!   verified offline by sigstore's bundle `Verifier` (Fulcio chain, SCT, identity and
//!   issuer, signature, log-entry consistency, signing time) against a trusted root
//!   ([`PUBLIC_GOOD_TRUSTED_ROOT`] or `keyless.trustedRoot`), plus the Rekor
//!   SignedEntryTimestamp, which that `Verifier` skips, checked here with the log's key.
//!   Not checked: the Merkle inclusion proof, an online Rekor lookup, RFC 3161
//!   timestamps (so Rekor v2 entries, which carry no SET, fail closed).
//!
//! Verdicts are cached per (policy material, repository, digest): a digest's content
//! never changes, so a verified or invalid digest is checked once. "Unsigned" is not
//! cached (a publisher may sign after pushing); the running factory still checks each
//! update only once, when it is recorded.

pub mod bundle;
mod cache;
mod cosign;
pub mod keyless;
mod trust;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryError};
pub use crate::runtime::{SignatureCheck, SignatureVerdict, VerifyMode};
use cache::VerdictCache;
use cosign::Check;
pub use keyless::KeylessCheck;
pub use trust::{TrustedRoot, PUBLIC_GOOD_TRUSTED_ROOT};

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

/// Keyless (Fulcio certificate) requirements, checked by [`KeylessCheck`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyless {
    /// Regular expression the certificate's identity (SAN: e-mail, URI or Sigstore
    /// otherName) must match; unanchored, like cosign's `--certificate-identity-regexp`.
    pub identity: String,
    /// Regular expression the OIDC issuer (Fulcio extension 1.3.6.1.4.1.57264.1.8, else
    /// the legacy 1.3.6.1.4.1.57264.1.1) must match; unanchored.
    pub issuer: String,
    /// Whether the Rekor SignedEntryTimestamp must verify (default `true`). `false`
    /// skips only that check: a log entry is still needed (see [`keyless`]).
    pub rekor: bool,
    /// A Sigstore `trusted_root.json` (`keyless.trustedRoot:`, relative to the directory
    /// of `images.yaml`), read when a digest is verified; `None`: the embedded
    /// [`PUBLIC_GOOD_TRUSTED_ROOT`].
    pub trusted_root: Option<PathBuf>,
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
    /// A keyless policy could not be used: its trusted root cannot be read or parsed,
    /// or a pattern does not compile.
    #[error("cannot use the keyless policy ({source_of}): {reason}")]
    Keyless {
        /// The trusted root used (`embedded public-good trusted root` or its path).
        source_of: String,
        /// What went wrong.
        reason: String,
    },
}

/// Where signatures were looked for, for the benchmark and `inspect --verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The verdict came from the cache: no request.
    Cached,
    /// The referrers API answered (and, when it listed no valid signature, the `.sig`
    /// tag was tried too).
    Referrers,
    /// The registry has no referrers API: only tags were used — the `.sig` tag, then
    /// the referrers tag `sha256-<hex>` (where cosign v3 lists its bundles there).
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
    /// Keyless checks built so far, by the hash of their policy material: a trusted
    /// root is parsed (and sigstore's verifier built) once per policy, not per digest.
    keyless: Arc<Mutex<HashMap<String, Arc<KeylessCheck>>>>,
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
    /// Reads Secrets with `client`; a `secret:` key source without a namespace is looked up in
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
                        "a `secret:` key is read by the controller; `run` outside a cluster needs key or keyFile".into(),
                    ));
                };
                let ns = namespace.as_deref().unwrap_or(default_ns);
                let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                    kube::Api::namespaced(client.clone(), ns);
                let secret = api.get(name).await.map_err(|e| match &e {
                    kube::Error::Api(s) if s.code == 403 => fail(format!(
                        "{e}; grant the controller's service account `get` on Secret {ns}/{name} (a Role with resourceNames: [{name}]; README \"RBAC\"), or mount it and use keyFile"
                    )),
                    _ => fail(e.to_string()),
                })?;
                secret
                    .data
                    .and_then(|mut d| d.remove(key))
                    .map(|b| b.0)
                    .ok_or_else(|| fail(format!("the Secret has no key {key:?}")))
            }
        }
    }
}

impl KeyReader {
    /// The `trusted_root.json` bytes of `keyless`: its `trustedRoot` file, else the
    /// embedded public-good root.
    ///
    /// # Errors
    /// [`VerifyError::Keyless`] when the file cannot be read.
    pub async fn read_trusted_root(&self, keyless: &Keyless) -> Result<Vec<u8>, VerifyError> {
        match &keyless.trusted_root {
            None => Ok(PUBLIC_GOOD_TRUSTED_ROOT.to_vec()),
            Some(path) => tokio::fs::read(path)
                .await
                .map_err(|e| VerifyError::Keyless {
                    source_of: trusted_root_name(keyless),
                    reason: e.to_string(),
                }),
        }
    }
}

/// How a keyless policy's trusted root is named in messages.
fn trusted_root_name(keyless: &Keyless) -> String {
    match &keyless.trusted_root {
        None => "embedded public-good trusted root".into(),
        Some(p) => format!("trusted root {}", p.display()),
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
            keyless: Arc::default(),
        }
    }

    /// Also keeps verdicts in `dir` (`dir/<sha256 of key and digest>`), so a restarted
    /// process checks no digest twice.
    #[must_use]
    pub fn persisted(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = Arc::new(VerdictCache::new(Some(dir.into())));
        self
    }

    /// Reads `secret:` keys (and key files) through `keys`.
    #[must_use]
    pub fn with_keys(mut self, keys: KeyReader) -> Self {
        self.keys = keys;
        self
    }

    /// The registry client (for request counts).
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// Judges `digest` of `image`'s repository under `policy`: verified when one
    /// signature found through the referrers API or the `sha256-<hex>.sig` tag names
    /// `digest` and verifies as the policy requires (key or keyless, see the module
    /// docs); unsigned when none is found; invalid otherwise. Keyless checks are offline:
    /// the only requests are the registry's.
    ///
    /// # Errors
    /// [`VerifyError`] when the registry fails (other than a missing signature), the key
    /// or trusted root cannot be read, or the keyless policy cannot be used; nothing is
    /// cached then.
    pub async fn verify(
        &self,
        image: &Reference,
        digest: &str,
        policy: &VerifyPolicy,
    ) -> Result<Judged, VerifyError> {
        let (material, trusted_root) = match &policy.requirement {
            Requirement::Key(source) => (self.keys.read(source).await?, Vec::new()),
            Requirement::Keyless(k) => {
                let root = self.keys.read_trusted_root(k).await?;
                (keyless_material(k, &root), root)
            }
        };
        let cache_key = cache_key(&material, image, digest);
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
        let check = match &policy.requirement {
            Requirement::Key(_) => Check::key(&material)?,
            Requirement::Keyless(k) => {
                Check::Keyless(self.keyless_check(k, &material, &trusted_root)?)
            }
        };
        let (verdict, detail, lookup) = cosign::judge(self, image, digest, &check).await?;
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

    /// The check of keyless policy `k` whose material is `material`: built once.
    fn keyless_check(
        &self,
        k: &Keyless,
        material: &[u8],
        trusted_root: &[u8],
    ) -> Result<Arc<KeylessCheck>, VerifyError> {
        let id: String = Sha256::digest(material)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(built) = self.keyless.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(built);
        }
        let built = Arc::new(KeylessCheck::new(k, trusted_root).map_err(|reason| {
            VerifyError::Keyless {
                source_of: trusted_root_name(k),
                reason,
            }
        })?);
        if let Ok(mut m) = self.keyless.lock() {
            m.insert(id, Arc::clone(&built));
        }
        Ok(built)
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

/// What a keyless verdict depends on, for its cache key: the patterns, `rekor` and the
/// trusted root's bytes (a changed root or policy is judged again).
fn keyless_material(keyless: &Keyless, trusted_root: &[u8]) -> Vec<u8> {
    let mut m = b"keyless\0".to_vec();
    for part in [keyless.identity.as_bytes(), keyless.issuer.as_bytes()] {
        m.extend_from_slice(part);
        m.push(0);
    }
    m.push(u8::from(keyless.rekor));
    m.push(0);
    m.extend_from_slice(trusted_root);
    m
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
