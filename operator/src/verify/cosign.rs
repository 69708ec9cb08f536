//! Finding and checking cosign signatures of one digest.
//!
//! Formats (cosign's `specs/SIGNATURE_SPEC.md`): a signature is an OCI image manifest
//! whose layers have media type `application/vnd.dev.cosign.simplesigning.v1+json`;
//! each layer's blob is the signed payload (simple signing JSON) and its descriptor's
//! annotation `dev.cosignproject.cosign/signature` holds the base64 signature over those
//! bytes. The manifest is found under the tag `sha256-<hex>.sig` of the image's
//! repository, or (OCI 1.1) as a referrer of the digest with artifact type
//! `application/vnd.dev.cosign.artifact.sig.v1+json`.

use oci_client::manifest::OciImageManifest;
use sigstore::cosign::payload::SimpleSigning;
use sigstore::cosign::signature_layers::SignatureLayer;
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraintVec};

use super::{Lookup, SignatureVerdict, Verifier, VerifyError};
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
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// What looking at the candidates found so far.
#[derive(Default)]
struct Findings {
    /// Signature layers seen (each a candidate).
    layers: usize,
    /// Why each candidate failed.
    problems: Vec<String>,
}

pub(super) async fn judge(
    verifier: &Verifier,
    image: &Reference,
    digest: &str,
    key: &[u8],
) -> Result<(SignatureVerdict, String, Lookup), VerifyError> {
    let constraint = PublicKeyVerifier::try_from(key).map_err(|e| VerifyError::Key {
        source_of: "policy key".into(),
        reason: e.to_string(),
    })?;
    let constraints: VerificationConstraintVec = vec![Box::new(constraint)];
    let client = verifier.client();
    let mut findings = Findings::default();
    let mut lookup = Lookup::TagScheme;

    if !verifier.lacks_referrers(image.registry()) {
        match client
            .referrers(image, digest, Some(SIGNATURE_ARTIFACT_TYPE))
            .await?
        {
            Some(entries) => {
                lookup = Lookup::Referrers;
                for entry in entries {
                    let place = format!("referrer {}", entry.digest);
                    if check_manifest(
                        verifier,
                        image,
                        digest,
                        &entry.digest,
                        &constraints,
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
                &constraints,
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

    if findings.layers == 0 && findings.problems.is_empty() {
        let looked = match lookup {
            Lookup::Referrers => format!("no cosign signature among the referrers or at tag {tag}"),
            _ => format!("no cosign signature at tag {tag} (the registry has no referrers API)"),
        };
        return Ok((SignatureVerdict::Unsigned, looked, lookup));
    }
    Ok((
        SignatureVerdict::Invalid,
        findings.problems.join("; "),
        lookup,
    ))
}

/// Checks every simple-signing layer of the signature manifest `manifest_digest`;
/// `true` as soon as one verifies.
async fn check_manifest(
    verifier: &Verifier,
    image: &Reference,
    digest: &str,
    manifest_digest: &str,
    constraints: &VerificationConstraintVec,
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
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
    {
        findings.layers += 1;
        let Some(signature) = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        else {
            findings
                .problems
                .push(format!("{place}: layer {} has no signature", layer.digest));
            continue;
        };
        let payload = client.blob(image, &layer.digest).await?;
        match check_layer(digest, &layer.digest, &payload, signature, constraints) {
            Ok(()) => return Ok(true),
            Err(why) => findings.problems.push(format!("{place}: {why}")),
        }
    }
    if findings.layers == 0 {
        findings
            .problems
            .push(format!("{place}: no simple-signing layer"));
    }
    Ok(false)
}

/// Checks one layer: the payload binds `digest`, and the signature over the payload
/// verifies with the policy's key (sigstore's `PublicKeyVerifier`).
fn check_layer(
    digest: &str,
    layer_digest: &str,
    payload: &[u8],
    signature: &str,
    constraints: &VerificationConstraintVec,
) -> Result<(), String> {
    let simple_signing: SimpleSigning = serde_json::from_slice(payload)
        .map_err(|e| format!("payload is not simple signing JSON ({e})"))?;
    if !simple_signing.satisfies_manifest_digest(digest) {
        return Err(format!(
            "payload signs {}, not this digest",
            simple_signing.critical.image.docker_manifest_digest
        ));
    }
    let layer = SignatureLayer {
        simple_signing,
        oci_digest: layer_digest.to_owned(),
        certificate_signature: None,
        bundle: None,
        signature: Some(signature.to_owned()),
        raw_data: payload.to_vec(),
    };
    sigstore::cosign::verify_constraints(std::slice::from_ref(&layer), constraints.iter()).map_err(
        |_| {
            "signature does not verify with the policy's key (another key, or a changed payload)"
                .to_owned()
        },
    )
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
