//! Completion, verified rather than assumed: after a trigger reports success, the
//! registry must show a new digest for the image's tag, built on the rebuild's pinned
//! base; then the image's optional `test` runs against that digest. Only then is the
//! rebuild `Succeeded` (and its dependents cascaded).
//!
//! Evidence, per platform (OCI image spec `annotations.md`, `manifest.md`):
//! 1. the manifest's `org.opencontainers.image.base.digest` annotation (buildah and
//!    BuildKit write it) names a pinned base: its index digest or the manifest of the
//!    same platform;
//! 2. without the annotation, a pinned base's layers (same platform) are a prefix of
//!    the image's layers.
//!
//! A multi-platform image is checked platform by platform (attestation manifests
//! skipped); each must pass.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::engine::Outcome;
use crate::enrollment::Command;
use crate::reference::Reference;
use crate::registry::inspect::is_attestation_platform;
use crate::registry::{Platform, RegistryClient, RegistryError, ResolvedImage};
use crate::runtime::{Digest, PinnedBase};
use crate::trigger::{self, Context, Failure, Report, Request};

/// How one platform was shown to be built on a pinned base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// `org.opencontainers.image.base.digest` names the pinned base.
    BaseDigestAnnotation,
    /// The pinned base's layers are a prefix of the image's.
    LayerPrefix,
    /// No pinned base has a digest (nothing to compare with): accepted on the new digest
    /// alone.
    Unchecked,
}

/// A verified build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// What the tag points at now (index digest for a multi-platform image).
    pub digest: Digest,
    /// Per-platform manifest digests (empty for a single manifest).
    pub platforms: BTreeMap<String, Digest>,
    /// The pinned base digests the platforms were found built on (a platform manifest
    /// named by an annotation is reported as its pinned index digest), sorted.
    pub base_digests: Vec<Digest>,
    /// Evidence per platform (`""` for a single manifest).
    pub evidence: BTreeMap<String, Evidence>,
}

/// What to verify.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The image's tag reference (`registry/repository:tag`).
    pub reference: &'a Reference,
    /// The digest the tag had before the build, if any: the new digest must differ.
    pub previous: Option<&'a Digest>,
    /// The rebuild's pinned bases.
    pub bases: &'a [PinnedBase],
}

/// How long and how often to look for the new digest.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// Longest wait for the tag to move off `previous` (0: look once).
    pub up_to: Duration,
    /// Between looks.
    pub every: Duration,
}

impl Wait {
    /// Look once.
    pub const ONCE: Self = Self {
        up_to: Duration::ZERO,
        every: Duration::from_secs(1),
    };
}

/// Checks that `expected.reference` points at a new digest built on a pinned base.
///
/// # Errors
///
/// A [`Failure`] saying what was found: the tag still at the previous digest (nothing
/// pushed), a platform built on another base (with the digest it names), or the
/// registry unreachable (transient).
pub async fn verify(
    client: &RegistryClient,
    expected: &Expected<'_>,
    wait: Wait,
) -> Result<Verified, Failure> {
    let reference = expected.reference;
    let deadline = Instant::now() + wait.up_to;
    let resolved = loop {
        client.new_scan();
        let looked = client.resolve(reference).await;
        match looked {
            Ok(r) if Some(r.digest.as_str()) != expected.previous.map(Digest::as_str) => break r,
            Ok(_) | Err(RegistryError::NotFound { .. }) if Instant::now() + wait.every <= deadline => {}
            Ok(r) => {
                return Err(Failure::permanent(format!(
                    "the trigger reported success but {reference} still points at {} (no new image was pushed)",
                    r.digest
                )))
            }
            Err(e) => return Err(registry_failure(reference, &e)),
        }
        tokio::time::sleep(wait.every).await;
    };
    let digest = parse_digest(&resolved.digest)?;

    let mut pinned: Vec<(Reference, ResolvedImage)> = Vec::new();
    for base in expected.bases {
        let Some(d) = base.digest() else { continue };
        let base_ref = Reference::parse(&base.pinned)
            .map_err(|e| Failure::permanent(format!("pinned base {}: {e}", base.pinned)))?;
        let r = client
            .resolve(&base_ref)
            .await
            .map_err(|e| registry_failure(&base_ref, &e))?;
        if r.digest != d {
            return Err(Failure::permanent(format!(
                "pinned base {} resolves to {}",
                base.pinned, r.digest
            )));
        }
        pinned.push((base_ref, r));
    }

    let platforms: Vec<(String, String)> = if resolved.is_index() {
        resolved
            .platforms
            .iter()
            .filter(|p| !is_attestation_platform(&p.platform))
            .map(|p| (p.platform.clone(), p.digest.clone()))
            .collect()
    } else {
        vec![(String::new(), resolved.digest.clone())]
    };
    let image_ref = reference.with_digest(resolved.digest.clone());
    let mut verified = Verified {
        digest,
        platforms: BTreeMap::new(),
        base_digests: Vec::new(),
        evidence: BTreeMap::new(),
    };
    for (platform_name, manifest) in &platforms {
        if !platform_name.is_empty() {
            verified
                .platforms
                .insert(platform_name.clone(), parse_digest(manifest)?);
        }
        let platform = if platform_name.is_empty() {
            None
        } else {
            Some(Platform::parse(platform_name).map_err(|e| {
                Failure::permanent(format!("{reference}: platform {platform_name}: {e}"))
            })?)
        };
        let (evidence, base) = check_platform(client, &image_ref, platform.as_ref(), &pinned)
            .await
            .map_err(|reason| {
                let on = if platform_name.is_empty() {
                    String::new()
                } else {
                    format!(" ({platform_name})")
                };
                Failure::permanent(format!("{reference}@{}{on}: {reason}", resolved.digest))
            })?;
        if let Some(b) = base {
            verified.base_digests.push(parse_digest(&b)?);
        }
        verified.evidence.insert(platform_name.clone(), evidence);
    }
    verified.base_digests.sort();
    verified.base_digests.dedup();
    Ok(verified)
}

/// The evidence for one platform, and the pinned digest it matched; `Err(reason)` when the
/// platform is built on no pinned base.
async fn check_platform(
    client: &RegistryClient,
    image: &Reference,
    platform: Option<&Platform>,
    pinned: &[(Reference, ResolvedImage)],
) -> Result<(Evidence, Option<String>), String> {
    if pinned.is_empty() {
        return Ok((Evidence::Unchecked, None));
    }
    let inspected = client
        .inspect(image, platform)
        .await
        .map_err(|e| format!("cannot be inspected: {e}"))?;
    if let Some(on) = &inspected.base.digest {
        let known = pinned
            .iter()
            .find(|(_, r)| r.digest == *on || r.platforms.iter().any(|p| p.digest == *on));
        if let Some((_, r)) = known {
            return Ok((Evidence::BaseDigestAnnotation, Some(r.digest.clone())));
        }
        let name = inspected.base.name.as_deref().unwrap_or("an unknown base");
        return Err(format!(
            "built on {name}@{on}, not on the pinned {}",
            pins(pinned)
        ));
    }
    for (base_ref, resolved) in pinned {
        let base = client
            .inspect(base_ref, platform)
            .await
            .map_err(|e| format!("pinned base {base_ref} cannot be inspected: {e}"))?;
        let prefix = inspected.layers.len() >= base.layers.len()
            && inspected
                .layers
                .iter()
                .zip(&base.layers)
                .all(|(a, b)| a == b);
        if prefix {
            return Ok((Evidence::LayerPrefix, Some(resolved.digest.clone())));
        }
    }
    Err(format!(
        "has no base annotation and none of the pinned bases' layers ({}) are a prefix of its layers: built on another base",
        pins(pinned)
    ))
}

fn pins(pinned: &[(Reference, ResolvedImage)]) -> String {
    pinned
        .iter()
        .map(|(r, _)| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_digest(text: &str) -> Result<Digest, Failure> {
    Digest::parse(text).map_err(|e| Failure::permanent(format!("registry digest {text:?}: {e}")))
}

fn registry_failure(reference: &Reference, e: &RegistryError) -> Failure {
    Failure::transient(format!("cannot check {reference} in the registry: {e}"))
}

/// Runs `test` against the verified image: the trigger's environment plus
/// `IMAGE_FACTORY_IMAGE_DIGEST` (`sha256:…`) and `IMAGE_FACTORY_IMAGE_PINNED`
/// (`registry/repository:tag@sha256:…`).
///
/// # Errors
///
/// The test's [`Failure`], its reason prefixed with `test:` and its output tail kept.
pub async fn run_test(
    test: &Command,
    request: &Request,
    verified: &Verified,
    ctx: &Context,
) -> Result<Report, Failure> {
    let mut env = request.env();
    env.push((
        "IMAGE_FACTORY_IMAGE_DIGEST".into(),
        verified.digest.to_string(),
    ));
    env.push((
        "IMAGE_FACTORY_IMAGE_PINNED".into(),
        format!("{}@{}", request.reference, verified.digest),
    ));
    let cwd = request.local.as_ref().map(|l| l.root.as_path());
    trigger::command::run_program(test, &env, cwd, ctx, "test").await
}

/// What one rebuild attempt came to: the engine's [`Outcome`], and the output tail
/// kept for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// For [`crate::engine::Event::Outcome`].
    pub outcome: Outcome,
    /// Trigger (or test) output tail.
    pub log_tail: Option<String>,
    /// The verification, when it got that far.
    pub verified: Option<Verified>,
}

/// Runs one attempt end to end: the backend, then [`verify`] (waiting up to `wait` for
/// the digest: a webhook without status URL only says the build was accepted), then
/// the `test`. Every failure becomes `Outcome::Failure` with its reason.
pub async fn attempt(
    backend: &dyn trigger::Backend,
    request: &Request,
    client: &RegistryClient,
    previous: Option<&Digest>,
    test: Option<&Command>,
    wait: Wait,
    ctx: &Context,
) -> Completed {
    let failed = |f: Failure, verified: Option<Verified>| Completed {
        outcome: Outcome::Failure {
            reason: f.reason,
            log: f.log_tail.clone(),
        },
        log_tail: f.log_tail,
        verified,
    };
    let report = match backend.run(request, ctx).await {
        Ok(r) => r,
        Err(f) => return failed(f, None),
    };
    let reference = match Reference::parse(&request.reference) {
        Ok(r) => r,
        Err(e) => return failed(Failure::permanent(e.to_string()), None),
    };
    let expected = Expected {
        reference: &reference,
        previous,
        bases: &request.bases,
    };
    let verified = match verify(client, &expected, wait).await {
        Ok(v) => v,
        Err(f) => return failed(f.with_log(report.log_tail), None),
    };
    let mut log_tail = report.log_tail;
    if let Some(test) = test {
        match run_test(test, request, &verified, ctx).await {
            Ok(r) => log_tail = r.log_tail.or(log_tail),
            Err(f) => {
                let f = Failure {
                    reason: format!(
                        "{} (image {}@{})",
                        f.reason, request.reference, verified.digest
                    ),
                    ..f
                };
                return failed(f, Some(verified));
            }
        }
    }
    Completed {
        outcome: Outcome::Success {
            digest: verified.digest.clone(),
            base_digests: verified.base_digests.clone(),
        },
        log_tail,
        verified: Some(verified),
    }
}
