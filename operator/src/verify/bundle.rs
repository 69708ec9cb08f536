//! Sigstore bundles as cosign v3 stores image signatures: an OCI 1.1 referrer of the
//! image (artifact type [`BUNDLE_MEDIA_TYPE`]) whose one layer is the bundle JSON, a DSSE
//! envelope of an in-toto statement (predicate type [`COSIGN_SIGN_PREDICATE`]) naming the
//! image digest as its subject.
//!
//! Sources: Sigstore protobuf-specs `protos/sigstore_bundle.proto` (bundle v0.3), the
//! DSSE protocol (`secure-systems-lab/dsse` `protocol.md`, PAE), in-toto Statement v1,
//! cosign `specs/BUNDLE_SPEC.md`.
//!
//! Keyless bundles are checked by [`super::keyless`]; this module holds what both kinds
//! share (parsing, the statement's predicate and subject) and the key-based check: sigstore
//! 0.15's bundle `Verifier` only takes certificate bundles, so a bundle made with
//! `cosign sign --key` is checked here — the DSSE signature over the PAE with the policy's
//! key (sigstore's `CosignVerificationKey`), like a key-based simple-signing layer; its
//! transparency-log entry, if any, is not checked (as for the `.sig` tag scheme).

use serde::Deserialize;
use sigstore::bundle::Bundle;
use sigstore::crypto::{CosignVerificationKey, Signature};
use sigstore_protobuf_specs::dev::sigstore::bundle::v1::bundle::Content;
use sigstore_protobuf_specs::io::intoto::Envelope;

/// Media type (and OCI artifact type) of a Sigstore bundle v0.3, cosign v3's default.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Prefix shared by every Sigstore bundle media type (`…bundle+json;version=0.1/0.2`,
/// `…bundle.v0.3+json`).
pub const BUNDLE_MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// The in-toto predicate type of a cosign image signature (cosign v3 `sign`).
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// Annotation of a bundle referrer naming its statement's predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
/// DSSE payload type of an in-toto statement.
const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Whether `media_type` is a Sigstore bundle.
pub fn is_bundle(media_type: &str) -> bool {
    media_type.starts_with(BUNDLE_MEDIA_TYPE_PREFIX)
}

/// Parses bundle JSON.
///
/// # Errors
/// The parser's message when `bytes` is not a Sigstore bundle.
pub fn parse(bytes: &[u8]) -> Result<Bundle, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a Sigstore bundle ({e})"))
}

#[derive(Deserialize)]
struct Statement {
    #[serde(rename = "predicateType")]
    predicate_type: String,
    #[serde(default)]
    subject: Vec<Subject>,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// The DSSE envelope of `bundle` when it is a cosign image signature of `digest`
/// (`sha256:<hex>`): an in-toto statement with predicate type
/// [`COSIGN_SIGN_PREDICATE`] and `digest` among its subjects. Nothing is verified
/// cryptographically here.
///
/// # Errors
/// Why the bundle is not such a signature, in words for the verdict's detail.
pub fn cosign_statement<'b>(bundle: &'b Bundle, digest: &str) -> Result<&'b Envelope, String> {
    let envelope = match &bundle.content {
        Some(Content::DsseEnvelope(e)) => e,
        Some(Content::MessageSignature(_)) => return Err(
            "the bundle holds a message signature, not the DSSE statement cosign signs images with"
                .into(),
        ),
        None => return Err("the bundle holds no signature".into()),
    };
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(format!(
            "the DSSE payload is {:?}, not an in-toto statement",
            envelope.payload_type
        ));
    }
    let statement: Statement = serde_json::from_slice(&envelope.payload)
        .map_err(|e| format!("the DSSE payload is not an in-toto statement ({e})"))?;
    if statement.predicate_type != COSIGN_SIGN_PREDICATE {
        return Err(format!(
            "an attestation of {}, not a cosign signature ({COSIGN_SIGN_PREDICATE})",
            statement.predicate_type
        ));
    }
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("", digest));
    let named: Vec<String> = statement
        .subject
        .iter()
        .flat_map(|s| s.digest.iter())
        .map(|(a, h)| format!("{a}:{h}"))
        .collect();
    if !statement.subject.iter().any(|s| {
        s.digest
            .get(algorithm)
            .is_some_and(|h| h.eq_ignore_ascii_case(hex))
    }) {
        return Err(format!(
            "the statement signs {}, not this digest",
            if named.is_empty() {
                "no digest".to_owned()
            } else {
                named.join(", ")
            }
        ));
    }
    Ok(envelope)
}

/// DSSE's pre-authentication encoding: what a DSSE signature is computed over
/// (`DSSEv1 <len type> <type> <len payload> <payload>`, DSSE `protocol.md`).
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Checks a key-based cosign bundle: a cosign signature statement of `digest` whose one
/// DSSE signature verifies with `key`.
///
/// # Errors
/// Why it does not, in words for the verdict's detail.
pub fn check_with_key(
    bundle: &Bundle,
    digest: &str,
    key: &CosignVerificationKey,
) -> Result<(), String> {
    let envelope = cosign_statement(bundle, digest)?;
    let [signature] = envelope.signatures.as_slice() else {
        return Err(format!(
            "the DSSE envelope has {} signatures, not 1",
            envelope.signatures.len()
        ));
    };
    key.verify_signature(
        Signature::Raw(&signature.sig),
        &pae(&envelope.payload_type, &envelope.payload),
    )
    .map_err(|_| {
        "signature does not verify with the policy's key (another key, or a changed statement)"
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDED: &str =
        include_str!("../../../tests/testdata/sigstore/cosign_v3_keyless_bundle.json");
    const SUBJECT: &str = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";

    #[test]
    fn the_recorded_bundle_is_a_cosign_signature_of_its_subject_only() {
        let bundle = parse(RECORDED.as_bytes()).unwrap();
        assert!(cosign_statement(&bundle, SUBJECT).is_ok());
        let e = cosign_statement(&bundle, &format!("sha256:{}", "0".repeat(64))).unwrap_err();
        assert!(
            e.contains(&format!("signs {SUBJECT}, not this digest")),
            "{e}"
        );
    }

    #[test]
    fn an_attestation_is_not_a_signature() {
        let mut bundle = parse(RECORDED.as_bytes()).unwrap();
        if let Some(Content::DsseEnvelope(e)) = &mut bundle.content {
            e.payload = serde_json::to_vec(&serde_json::json!({
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{"digest": {"sha256": SUBJECT.trim_start_matches("sha256:")}}],
                "predicateType": "https://slsa.dev/provenance/v1"
            }))
            .unwrap();
        }
        let e = cosign_statement(&bundle, SUBJECT).unwrap_err();
        assert!(
            e.contains("an attestation of https://slsa.dev/provenance/v1"),
            "{e}"
        );
    }

    #[test]
    fn a_key_based_bundle_verifies_with_its_key_only() {
        use sigstore::crypto::SigningScheme;
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .unwrap();
        let key = signer.to_verification_key().unwrap();
        let other = SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .unwrap()
            .to_verification_key()
            .unwrap();
        let mut bundle = parse(RECORDED.as_bytes()).unwrap();
        if let Some(Content::DsseEnvelope(e)) = &mut bundle.content {
            e.signatures[0].sig = signer.sign(&pae(&e.payload_type, &e.payload)).unwrap();
        }
        check_with_key(&bundle, SUBJECT, &key).unwrap();
        let e = check_with_key(&bundle, SUBJECT, &other).unwrap_err();
        assert!(e.contains("does not verify with the policy's key"), "{e}");
    }
}
