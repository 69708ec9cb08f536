//! Keyless (Fulcio certificate + Rekor) verification of cosign signatures, offline.
//!
//! The cryptography is sigstore 0.15's bundle `Verifier`: the certificate chains to a
//! Fulcio CA of the trusted root at its issue time, its embedded SCT verifies with a CT
//! log key of the root, the certificate satisfies our [`IdentityPolicy`], the signature
//! verifies with the certificate's key (for DSSE: over the PAE, and a statement subject is
//! the digest), the transparency-log entry's body is consistent with the signature and
//! certificate, and the entry's `integratedTime` lies within the certificate's validity.
//! The `Verifier` does not check the Rekor SignedEntryTimestamp (sigstore-rs#285), so
//! [`check_set`] does: the RFC 8785 canonical JSON of `{body, integratedTime, logIndex,
//! logID}` must verify with the key the trusted root lists for that log id (at that
//! time). Not checked: the Merkle inclusion proof and checkpoint, an online Rekor
//! lookup, RFC 3161 timestamps.
//!
//! Two formats reach here:
//! - a Sigstore bundle (cosign v3; [`super::bundle`]) — verified as it is;
//! - a cosign v2 simple-signing layer of the `.sig` tag (or a signature referrer) with
//!   the annotations `dev.cosignproject.cosign/signature`, `dev.sigstore.cosign/certificate`
//!   (PEM) and `dev.sigstore.cosign/bundle` (the Rekor bundle: `SignedEntryTimestamp` and
//!   `Payload{body, integratedTime, logIndex, logID}`) — converted to a bundle v0.1
//!   (message signature over the payload's SHA-256, the leaf certificate, one
//!   `hashedrekord` entry with the SET as its inclusion promise). The
//!   `dev.sigstore.cosign/chain` annotation is not used: trust comes only from the
//!   trusted root.
//!
//! `rekor: false` skips only the SET: sigstore's `Verifier` still needs one log entry,
//! since it takes the signing time (`integratedTime`) from it. So a signature made
//! without a log entry (`--tlog-upload=false`) cannot be verified by this build; and
//! with `rekor: false` that time is not authenticated by the log's signature.

use base64::Engine as _;
use regex::Regex;
use sha2::{Digest as _, Sha256};
use sigstore::bundle::verify::{
    ArtifactDigest, BundleErrorKind, CertificateErrorKind, PolicyError, SignatureErrorKind,
    VerificationError, VerificationPolicy, Verifier,
};
use sigstore::bundle::Bundle;
use sigstore::crypto::Signature;
use sigstore_protobuf_specs::dev::sigstore::bundle::v1::{
    bundle::Content, verification_material, VerificationMaterial,
};
use sigstore_protobuf_specs::dev::sigstore::common::v1::{
    HashAlgorithm, HashOutput, LogId, MessageSignature, X509Certificate,
};
use sigstore_protobuf_specs::dev::sigstore::rekor::v1::{
    InclusionPromise, KindVersion, TransparencyLogEntry,
};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::Decode as _;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

use super::trust::{hex, TrustedRoot};
use super::{bundle, Keyless};

/// Media type of the bundle a cosign v2 layer is converted to (v0.1: an inclusion
/// promise without an inclusion proof is allowed).
const BUNDLE_V01: &str = "application/vnd.dev.sigstore.bundle+json;version=0.1";
/// Annotation of a cosign v2 signature layer holding the Fulcio certificate (PEM).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Annotation of a cosign v2 signature layer holding the Rekor bundle (JSON).
pub const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// Fulcio's OIDC issuer extension (v2, a DER UTF8String). Source: Fulcio
/// `docs/oid-info.md`.
const ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio's legacy OIDC issuer extension (v1, the raw string, deprecated).
const ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Sigstore's otherName SAN type (a username identity).
const OTHERNAME_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.7");

/// The certificate requirements of a keyless policy: its identity and issuer regular
/// expressions, unanchored like cosign's `--certificate-identity-regexp` (write `^…$`).
#[derive(Debug, Clone)]
pub struct IdentityPolicy {
    identity: Regex,
    issuer: Regex,
}

impl IdentityPolicy {
    /// The policy of `identity` and `issuer` patterns.
    ///
    /// # Errors
    /// The regex parser's message when one does not compile.
    pub fn new(identity: &str, issuer: &str) -> Result<Self, String> {
        let compile = |what: &str, p: &str| {
            Regex::new(p).map_err(|e| format!("invalid keyless.{what} regular expression: {e}"))
        };
        Ok(Self {
            identity: compile("identity", identity)?,
            issuer: compile("issuer", issuer)?,
        })
    }
}

/// The OIDC issuer a Fulcio certificate names: the v2 extension (DER UTF8String), else
/// the legacy v1 extension (raw bytes).
fn certificate_issuer(cert: &x509_cert::Certificate) -> Option<String> {
    let extensions = cert.tbs_certificate().extensions()?;
    let find = |oid| extensions.iter().find(|e| e.extn_id == oid);
    if let Some(ext) = find(ISSUER_V2) {
        return String::from_der(ext.extn_value.as_bytes()).ok();
    }
    find(ISSUER_V1).and_then(|ext| String::from_utf8(ext.extn_value.as_bytes().to_vec()).ok())
}

/// The identities a certificate's SAN carries: e-mail addresses, URIs and Sigstore
/// otherName usernames.
fn certificate_identities(cert: &x509_cert::Certificate) -> Vec<String> {
    let Ok(Some((_, san))) = cert.tbs_certificate().get_extension::<SubjectAltName>() else {
        return Vec::new();
    };
    san.0
        .iter()
        .filter_map(|name| match name {
            GeneralName::Rfc822Name(n) => Some(n.to_string()),
            GeneralName::UniformResourceIdentifier(n) => Some(n.to_string()),
            GeneralName::OtherName(n) if n.type_id == OTHERNAME_OID => {
                std::str::from_utf8(n.value.value()).ok().map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

impl VerificationPolicy for IdentityPolicy {
    fn verify(&self, cert: &x509_cert::Certificate) -> Result<(), PolicyError> {
        let issuer = certificate_issuer(cert);
        if !issuer.as_deref().is_some_and(|i| self.issuer.is_match(i)) {
            return Err(PolicyError::ExtensionCheckFailed {
                extension: "OIDC issuer".into(),
                expected: self.issuer.as_str().to_owned(),
                actual: issuer.unwrap_or_else(|| "none".into()),
            });
        }
        let names = certificate_identities(cert);
        if !names.iter().any(|n| self.identity.is_match(n)) {
            return Err(PolicyError::ExtensionCheckFailed {
                extension: "identity (SAN)".into(),
                expected: self.identity.as_str().to_owned(),
                actual: if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
            });
        }
        Ok(())
    }
}

/// A keyless policy ready to judge signatures: sigstore's `Verifier` over the trusted
/// root, the identity policy, and whether the SET is required (`rekor`).
pub struct KeylessCheck {
    verifier: Verifier,
    root: TrustedRoot,
    policy: IdentityPolicy,
    require_set: bool,
}

impl std::fmt::Debug for KeylessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeylessCheck")
            .field("root", &self.root)
            .field("policy", &self.policy)
            .field("require_set", &self.require_set)
            .finish_non_exhaustive()
    }
}

impl KeylessCheck {
    /// The check of `keyless` against `trusted_root` (`trusted_root.json` bytes; see
    /// [`super::PUBLIC_GOOD_TRUSTED_ROOT`]).
    ///
    /// # Errors
    /// Why the trusted root or a pattern cannot be used.
    pub fn new(keyless: &Keyless, trusted_root: &[u8]) -> Result<Self, String> {
        let root = TrustedRoot::from_json(trusted_root)?;
        let verifier = Verifier::new(Default::default(), root.manual())
            .map_err(|e| format!("the trusted root's certificates or keys are unusable: {e}"))?;
        Ok(Self {
            verifier,
            root,
            policy: IdentityPolicy::new(&keyless.identity, &keyless.issuer)?,
            require_set: keyless.rekor,
        })
    }

    /// Checks a Sigstore bundle (JSON) as a cosign signature of `digest`
    /// (`sha256:<hex>`): the statement names `digest`, then everything the module docs
    /// list. Offline: no request is made.
    ///
    /// # Errors
    /// Why it is not a valid signature under this policy, in words for the verdict.
    pub async fn check_bundle(&self, json: &[u8], digest: &str) -> Result<(), String> {
        let bundle = bundle::parse(json)?;
        bundle::cosign_statement(&bundle, digest)?;
        let artifact = ArtifactDigest::Sha256(sha256_of(digest)?);
        self.check(bundle, artifact).await
    }

    /// Checks a cosign v2 keyless signature: `signature` (base64) over `payload`, made
    /// with the certificate `certificate_pem`, logged as `rekor_bundle` (the
    /// `dev.sigstore.cosign/bundle` annotation; `None` when the layer has none).
    /// `payload_sha256` is the SHA-256 of the signed payload bytes; that the payload
    /// names the right image digest is the caller's check.
    ///
    /// # Errors
    /// Why it is not a valid signature under this policy, in words for the verdict.
    pub async fn check_message_signature(
        &self,
        payload_sha256: [u8; 32],
        signature: &str,
        certificate_pem: &str,
        rekor_bundle: Option<&str>,
    ) -> Result<(), String> {
        let bundle = cosign_v2_bundle(payload_sha256, signature, certificate_pem, rekor_bundle)?;
        self.check(bundle, ArtifactDigest::Sha256(payload_sha256))
            .await
    }

    async fn check(&self, bundle: Bundle, artifact: ArtifactDigest) -> Result<(), String> {
        let entry = single_entry(&bundle)?.clone();
        self.verifier
            .verify_digest_with(artifact, bundle, &self.policy, true)
            .await
            .map_err(|e| explain(&e))?;
        if self.require_set {
            check_set(&entry, &self.root)?;
        }
        Ok(())
    }
}

/// The one transparency-log entry sigstore's verifier needs.
fn single_entry(bundle: &Bundle) -> Result<&TransparencyLogEntry, String> {
    match bundle
        .verification_material
        .as_ref()
        .map(|m| m.tlog_entries.as_slice())
        .unwrap_or_default()
    {
        [entry] => Ok(entry),
        [] => Err("the signature has no transparency-log (Rekor) entry; keyless verification needs one for the signing time, even with rekor: false".into()),
        more => Err(format!("the bundle has {} transparency-log entries, not 1", more.len())),
    }
}

/// `sha256:<hex>` as bytes.
fn sha256_of(digest: &str) -> Result<[u8; 32], String> {
    digest
        .strip_prefix("sha256:")
        .and_then(unhex)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| format!("{digest} is not a sha256 digest"))
}

/// Verifies the entry's SignedEntryTimestamp (Rekor's inclusion promise): the RFC 8785
/// canonical JSON of `{body, integratedTime, logIndex, logID}` signed by the log's key
/// from `root`, valid at `integratedTime`. Source: Rekor `pkg/api/entries.go`
/// (`SET`), cosign `pkg/cosign/verify.go` (`VerifySET`).
///
/// # Errors
/// Why the SET does not verify, in words for the verdict.
pub(super) fn check_set(entry: &TransparencyLogEntry, root: &TrustedRoot) -> Result<(), String> {
    let promise = entry.inclusion_promise.as_ref().ok_or(
        "the Rekor entry has no SignedEntryTimestamp (a Rekor v2 entry, proven only by its inclusion proof, which this build does not verify; or set rekor: false)",
    )?;
    let log_id = entry
        .log_id
        .as_ref()
        .map(|l| l.key_id.as_slice())
        .unwrap_or_default();
    let Some(log) = root.rekor_log(log_id, entry.integrated_time) else {
        return Err(if root.knows_rekor_log(log_id) {
            format!(
                "the Rekor log {} of the entry was not valid at its integratedTime {}",
                hex(log_id),
                entry.integrated_time
            )
        } else {
            format!(
                "the Rekor log {} of the entry is not in the trusted root",
                hex(log_id)
            )
        });
    };
    let payload = sigstore::cosign::bundle::Payload {
        body: base64::engine::general_purpose::STANDARD.encode(&entry.canonicalized_body),
        integrated_time: entry.integrated_time,
        log_index: entry.log_index,
        log_id: hex(log_id),
    };
    let signed = serde_json_canonicalizer::to_vec(&payload)
        .map_err(|e| format!("cannot canonicalize the Rekor entry: {e}"))?;
    log.key
        .verify_signature(Signature::Raw(&promise.signed_entry_timestamp), &signed)
        .map_err(|_| {
            format!(
                "the Rekor SignedEntryTimestamp does not verify with the key of log {} (a changed entry or SET)",
                hex(log_id)
            )
        })
}

/// The cosign v2 Rekor bundle annotation (`dev.sigstore.cosign/bundle`).
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RekorBundle {
    signed_entry_timestamp: String,
    payload: sigstore::cosign::bundle::Payload,
}

/// A cosign v2 keyless signature as a Sigstore bundle v0.1 (see the module docs).
fn cosign_v2_bundle(
    payload_sha256: [u8; 32],
    signature: &str,
    certificate_pem: &str,
    rekor_bundle: Option<&str>,
) -> Result<Bundle, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let signature = b64
        .decode(signature.trim())
        .map_err(|e| format!("the signature annotation is not base64 ({e})"))?;
    let (label, der) = x509_cert::der::pem::decode_vec(certificate_pem.trim().as_bytes())
        .map_err(|e| format!("the {CERTIFICATE_ANNOTATION} annotation is not PEM ({e})"))?;
    if label != "CERTIFICATE" {
        return Err(format!(
            "the {CERTIFICATE_ANNOTATION} annotation holds a {label}, not a CERTIFICATE"
        ));
    }
    let mut tlog_entries = Vec::new();
    if let Some(text) = rekor_bundle {
        let rekor: RekorBundle = serde_json::from_str(text).map_err(|e| {
            format!("the {REKOR_BUNDLE_ANNOTATION} annotation is not a Rekor bundle ({e})")
        })?;
        let body = b64
            .decode(&rekor.payload.body)
            .map_err(|e| format!("the Rekor entry body is not base64 ({e})"))?;
        let kind: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("the Rekor entry body is not JSON ({e})"))?;
        let field = |k: &str| {
            kind.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        tlog_entries.push(TransparencyLogEntry {
            log_index: rekor.payload.log_index,
            log_id: Some(LogId {
                key_id: unhex(&rekor.payload.log_id).ok_or_else(|| {
                    format!("the Rekor logID {:?} is not hex", rekor.payload.log_id)
                })?,
            }),
            kind_version: Some(KindVersion {
                kind: field("kind"),
                version: field("apiVersion"),
            }),
            integrated_time: rekor.payload.integrated_time,
            inclusion_promise: Some(InclusionPromise {
                signed_entry_timestamp: b64
                    .decode(&rekor.signed_entry_timestamp)
                    .map_err(|e| format!("the Rekor SignedEntryTimestamp is not base64 ({e})"))?,
            }),
            inclusion_proof: None,
            canonicalized_body: body,
        });
    }
    Ok(Bundle {
        media_type: BUNDLE_V01.to_owned(),
        verification_material: Some(VerificationMaterial {
            tlog_entries,
            timestamp_verification_data: None,
            content: Some(verification_material::Content::Certificate(
                X509Certificate { raw_bytes: der },
            )),
        }),
        content: Some(Content::MessageSignature(MessageSignature {
            message_digest: Some(HashOutput {
                algorithm: HashAlgorithm::Sha2256 as i32,
                digest: payload_sha256.to_vec(),
            }),
            signature,
        })),
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// sigstore's verification error in words for a verdict's detail.
fn explain(e: &VerificationError) -> String {
    match e {
        VerificationError::Policy(p) => match p {
            PolicyError::ExtensionCheckFailed {
                extension,
                expected,
                actual,
            } => format!("the certificate's {extension} is {actual}, which does not match {expected}"),
            other => format!("the certificate does not satisfy the policy: {other}"),
        },
        VerificationError::Certificate(c) => match c {
            CertificateErrorKind::VerificationFailed(why) => format!(
                "the certificate does not chain to a Fulcio CA of the trusted root ({why:?})"
            ),
            CertificateErrorKind::Sct(why) => format!(
                "the certificate's SCT does not verify with a CT log key of the trusted root ({why})"
            ),
            CertificateErrorKind::Expired => {
                "the certificate was not valid at the log entry's integratedTime".into()
            }
            other => format!("unusable certificate: {other}"),
        },
        VerificationError::Signature(s) => match s {
            SignatureErrorKind::VerificationFailed(_) => {
                "the signature does not verify with the certificate's key (a changed payload or signature)".into()
            }
            SignatureErrorKind::SubjectDigestMismatch => {
                "no statement subject is this digest".into()
            }
            SignatureErrorKind::Transparency => {
                "the transparency-log entry does not match the signature and certificate (a changed entry, signature or certificate)".into()
            }
            other => format!("signature: {other}"),
        },
        VerificationError::Bundle(b) => match b {
            BundleErrorKind::BundleProfile(p) => format!("incomplete bundle: {p}"),
            other => format!("malformed bundle: {other}"),
        },
        other => other.to_string(),
    }
}

/// SHA-256 of `bytes`.
pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests;
