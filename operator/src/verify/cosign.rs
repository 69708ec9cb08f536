//! Finding and checking cosign signatures of one digest.
//!
//! Formats (cosign's `specs/SIGNATURE_SPEC.md`): a signature is an OCI image manifest
//! whose layers have media type `application/vnd.dev.cosign.simplesigning.v1+json`;
//! each layer's blob is the signed payload (simple signing JSON) and its descriptor's
//! annotation `dev.cosignproject.cosign/signature` holds the base64 signature over those
//! bytes. The manifest is found under the tag `sha256-<hex>.sig` of the image's
//! repository, or (OCI 1.1) as a referrer of the digest with artifact type
//! `application/vnd.dev.cosign.artifact.sig.v1+json`.

use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use sigstore::cosign::payload::SimpleSigning;
use sigstore::cosign::signature_layers::SignatureLayer;
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraintVec};
use sigstore::crypto::CosignVerificationKey;

use super::keyless::{self, KeylessCheck};
use super::{bundle, Lookup, SignatureVerdict, Verifier, VerifyError};
use crate::reference::Reference;
use crate::registry::RegistryError;

/// Media type of a cosign simple-signing layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Artifact type of a cosign signature manifest stored as an OCI 1.1 referrer.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Annotation holding a layer's base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The tag cosign stores the signatures of `digest` under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", referrers_tag(digest))
}

/// The fallback tag of `digest`'s referrers on a registry without the referrers API:
/// `sha256-<hex>` (OCI distribution spec v1.1, "Referrers Tag Schema").
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// How a signature is checked: with the policy's public key, or keyless.
pub(super) enum Check {
    /// A cosign public key: sigstore's constraint for simple-signing layers, the key
    /// itself for bundles.
    Key {
        constraints: VerificationConstraintVec,
        key: CosignVerificationKey,
    },
    /// Fulcio certificate + Rekor entry, against a trusted root.
    Keyless(std::sync::Arc<KeylessCheck>),
}

impl Check {
    /// The check of a PEM public key.
    pub(super) fn key(pem: &[u8]) -> Result<Self, VerifyError> {
        let fail = |reason: String| VerifyError::Key {
            source_of: "policy key".into(),
            reason,
        };
        let constraint = PublicKeyVerifier::try_from(pem).map_err(|e| fail(e.to_string()))?;
        let key = CosignVerificationKey::try_from_pem(pem).map_err(|e| fail(e.to_string()))?;
        Ok(Self::Key {
            constraints: vec![Box::new(constraint)],
            key,
        })
    }
}

/// What looking at the candidates found so far.
#[derive(Default)]
struct Findings {
    /// Signature layers seen (each a candidate).
    layers: usize,
    /// Why each candidate failed.
    problems: Vec<String>,
}

/// Whether a referrer listed for the digest may be a signature: a cosign signature
/// manifest, or a Sigstore bundle that does not announce another predicate type.
fn may_sign(entry: &oci_client::manifest::ImageIndexEntry) -> bool {
    match entry.artifact_type.as_deref() {
        Some(SIGNATURE_ARTIFACT_TYPE) => true,
        Some(t) if bundle::is_bundle(t) => entry
            .annotations
            .as_ref()
            .and_then(|a| a.get(bundle::PREDICATE_TYPE_ANNOTATION))
            .is_none_or(|p| p == bundle::COSIGN_SIGN_PREDICATE),
        _ => false,
    }
}

pub(super) async fn judge(
    verifier: &Verifier,
    image: &Reference,
    digest: &str,
    check: &Check,
) -> Result<(SignatureVerdict, String, Lookup), VerifyError> {
    let client = verifier.client();
    let mut findings = Findings::default();
    let mut lookup = Lookup::TagScheme;

    if !verifier.lacks_referrers(image.registry()) {
        match client.referrers(image, digest, None).await? {
            Some(entries) => {
                lookup = Lookup::Referrers;
                for entry in entries.iter().filter(|e| may_sign(e)) {
                    let place = format!("referrer {}", entry.digest);
                    if check_manifest(
                        verifier,
                        image,
                        digest,
                        &entry.digest,
                        check,
                        &place,
                        &mut findings,
                    )
                    .await?
                    {
                        return Ok((SignatureVerdict::Verified, place, lookup));
                    }
                }
            }
            None => verifier.note_no_referrers(image.registry()),
        }
    }

    let tag = signature_tag(digest);
    match client.head_manifest(&image.with_tag(&tag)).await {
        Ok(head) => {
            let place = format!("tag {tag}");
            if check_manifest(
                verifier,
                image,
                digest,
                &head.digest,
                check,
                &place,
                &mut findings,
            )
            .await?
            {
                return Ok((SignatureVerdict::Verified, place, lookup));
            }
        }
        Err(RegistryError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }

    let fallback = referrers_tag(digest);
    if lookup == Lookup::TagScheme {
        if let Some(place) =
            check_referrers_tag(verifier, image, digest, &fallback, check, &mut findings).await?
        {
            return Ok((SignatureVerdict::Verified, place, lookup));
        }
    }

    if findings.layers == 0 && findings.problems.is_empty() {
        let looked = match lookup {
            Lookup::Referrers => format!("no cosign signature among the referrers or at tag {tag}"),
            _ => format!(
                "no cosign signature at tag {tag} or in the referrers tag {fallback} (the registry has no referrers API)"
            ),
        };
        return Ok((SignatureVerdict::Unsigned, looked, lookup));
    }
    Ok((
        SignatureVerdict::Invalid,
        findings.problems.join("; "),
        lookup,
    ))
}

/// Checks the signature referrers listed by the index at the referrers tag `fallback`;
/// the place of the one that verifies, if any.
async fn check_referrers_tag(
    verifier: &Verifier,
    image: &Reference,
    digest: &str,
    fallback: &str,
    check: &Check,
    findings: &mut Findings,
) -> Result<Option<String>, VerifyError> {
    let client = verifier.client();
    let head = match client.head_manifest(&image.with_tag(fallback)).await {
        Ok(head) => head,
        Err(RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (bytes, _) = client.manifest(image, &head.digest).await?;
    let index: OciImageIndex = match serde_json::from_slice(&bytes) {
        Ok(index) => index,
        Err(e) => {
            findings
                .problems
                .push(format!("tag {fallback}: not an image index ({e})"));
            return Ok(None);
        }
    };
    for entry in index.manifests.iter().filter(|e| may_sign(e)) {
        let place = format!("referrer {} (tag {fallback})", entry.digest);
        if check_manifest(
            verifier,
            image,
            digest,
            &entry.digest,
            check,
            &place,
            findings,
        )
        .await?
        {
            return Ok(Some(place));
        }
    }
    Ok(None)
}

/// Checks every signature layer (simple signing or Sigstore bundle) of the manifest
/// `manifest_digest`; `true` as soon as one verifies.
async fn check_manifest(
    verifier: &Verifier,
    image: &Reference,
    digest: &str,
    manifest_digest: &str,
    check: &Check,
    place: &str,
    findings: &mut Findings,
) -> Result<bool, VerifyError> {
    let client = verifier.client();
    let (bytes, _) = client.manifest(image, manifest_digest).await?;
    let manifest: OciImageManifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            findings
                .problems
                .push(format!("{place}: not an image manifest ({e})"));
            return Ok(false);
        }
    };
    let mut candidates = 0;
    for layer in &manifest.layers {
        let is_simple_signing = layer.media_type == SIMPLE_SIGNING_MEDIA_TYPE;
        if !is_simple_signing && !bundle::is_bundle(&layer.media_type) {
            continue;
        }
        candidates += 1;
        findings.layers += 1;
        let blob = client.blob(image, &layer.digest).await?;
        let outcome = if is_simple_signing {
            check_simple_signing(digest, layer, &blob, check).await
        } else {
            check_bundle(digest, &blob, check).await
        };
        match outcome {
            Ok(()) => return Ok(true),
            Err(why) => findings.problems.push(format!("{place}: {why}")),
        }
    }
    if candidates == 0 {
        findings.problems.push(format!(
            "{place}: no simple-signing or Sigstore bundle layer"
        ));
    }
    Ok(false)
}

/// Checks a Sigstore bundle layer as a signature of `digest`.
async fn check_bundle(digest: &str, blob: &[u8], check: &Check) -> Result<(), String> {
    match check {
        Check::Key { key, .. } => bundle::check_with_key(&bundle::parse(blob)?, digest, key),
        Check::Keyless(keyless) => keyless.check_bundle(blob, digest).await,
    }
}

/// Checks one simple-signing layer: the payload binds `digest`, and its signature
/// verifies — with the policy's key (sigstore's `PublicKeyVerifier`), or keyless with
/// the layer's certificate and Rekor bundle annotations.
async fn check_simple_signing(
    digest: &str,
    layer: &OciDescriptor,
    payload: &[u8],
    check: &Check,
) -> Result<(), String> {
    let annotation = |name: &str| layer.annotations.as_ref().and_then(|a| a.get(name));
    let Some(signature) = annotation(SIGNATURE_ANNOTATION) else {
        return Err(format!("layer {} has no signature", layer.digest));
    };
    let simple_signing: SimpleSigning = serde_json::from_slice(payload)
        .map_err(|e| format!("payload is not simple signing JSON ({e})"))?;
    if !simple_signing.satisfies_manifest_digest(digest) {
        return Err(format!(
            "payload signs {}, not this digest",
            simple_signing.critical.image.docker_manifest_digest
        ));
    }
    match check {
        Check::Key { constraints, .. } => {
            let layer = SignatureLayer {
                simple_signing,
                oci_digest: layer.digest.clone(),
                certificate_signature: None,
                bundle: None,
                signature: Some(signature.to_owned()),
                raw_data: payload.to_vec(),
            };
            sigstore::cosign::verify_constraints(std::slice::from_ref(&layer), constraints.iter())
                .map_err(|_| {
                    "signature does not verify with the policy's key (another key, or a changed payload)"
                        .to_owned()
                })
        }
        Check::Keyless(keyless) => {
            let Some(certificate) = annotation(keyless::CERTIFICATE_ANNOTATION) else {
                return Err(format!(
                    "a key-based signature (no {} annotation); the policy wants keyless",
                    keyless::CERTIFICATE_ANNOTATION
                ));
            };
            keyless
                .check_message_signature(
                    keyless::sha256(payload),
                    signature,
                    certificate,
                    annotation(keyless::REKOR_BUNDLE_ANNOTATION).map(String::as_str),
                )
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_tag_is_the_digest_with_a_dash() {
        assert_eq!(
            signature_tag(&format!("sha256:{}", "ab".repeat(32))),
            format!("sha256-{}.sig", "ab".repeat(32))
        );
    }
}
