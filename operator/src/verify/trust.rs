//! A Sigstore trusted root (`trusted_root.json`): the Fulcio CA certificates, Rekor log
//! keys and certificate-transparency log keys a keyless signature is checked against.
//!
//! Format: Sigstore's `TrustedRoot` message (protobuf-specs
//! `protos/sigstore_trustroot.proto`, media type
//! `application/vnd.dev.sigstore.trustedroot+json;version=0.1`) in its JSON form: bytes
//! are standard base64, times RFC 3339. Only the fields verification reads are parsed;
//! timestamp authorities are ignored (RFC 3161 timestamps are not verified by this build).
//!
//! The default is the public-good instance's root as pinned in sigstore-rs 0.15.0
//! (`public_good_trusted_root.json`, embedded); `keyless.trustedRoot` replaces it. No
//! TUF update happens: a rotated public-good key needs a newer copy (see the README).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use sigstore::crypto::CosignVerificationKey;
use sigstore::trust::ManualTrustRoot;

/// The public-good instance's `trusted_root.json` embedded in the binary: the copy
/// pinned in sigstore-rs 0.15.0 (newest entries: Rekor `log2025-1`, valid from
/// 2025-09-23; the timestamp authority from 2025-07-04). Source and licence:
/// `tests/testdata/sigstore/NOTICE`.
pub const PUBLIC_GOOD_TRUSTED_ROOT: &[u8] = include_bytes!("public_good_trusted_root.json");

/// The media type of a trusted root, without its `+json;version=` suffix.
const TRUSTED_ROOT_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.trustedroot";

/// A parsed trusted root.
pub struct TrustedRoot {
    /// DER certificates of every Fulcio CA chain (roots and intermediates, all trust
    /// anchors, as sigstore's own TUF trust root hands them to its verifier).
    fulcio: Vec<Vec<u8>>,
    /// CT log keys (DER SubjectPublicKeyInfo) by hex log id.
    ctfe: BTreeMap<String, Vec<u8>>,
    /// Rekor log keys.
    rekor: Vec<RekorLog>,
}

/// One Rekor log's key and when it signs.
pub(super) struct RekorLog {
    /// The log id (SHA-256 of the key's DER), as raw bytes.
    pub(super) key_id: Vec<u8>,
    /// The key.
    pub(super) key: CosignVerificationKey,
    /// Unix seconds the key is valid from / until (inclusive); `None`: unbounded.
    pub(super) valid: (Option<i64>, Option<i64>),
}

impl std::fmt::Debug for TrustedRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedRoot")
            .field("fulcio_certificates", &self.fulcio.len())
            .field("ct_logs", &self.ctfe.len())
            .field("rekor_logs", &self.rekor.len())
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootJson {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    tlogs: Vec<LogJson>,
    #[serde(default)]
    certificate_authorities: Vec<CaJson>,
    #[serde(default)]
    ctlogs: Vec<LogJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogJson {
    log_id: LogIdJson,
    public_key: PublicKeyJson,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogIdJson {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicKeyJson {
    raw_bytes: String,
    #[serde(default)]
    valid_for: Option<TimeRangeJson>,
}

#[derive(Deserialize)]
struct TimeRangeJson {
    #[serde(default)]
    start: Option<jiff::Timestamp>,
    #[serde(default)]
    end: Option<jiff::Timestamp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaJson {
    cert_chain: ChainJson,
}

#[derive(Deserialize)]
struct ChainJson {
    certificates: Vec<RawJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawJson {
    raw_bytes: String,
}

fn b64(what: &str, text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("{what} is not base64 ({e})"))
}

impl TrustedRoot {
    /// Parses `trusted_root.json` text.
    ///
    /// # Errors
    /// What is wrong, with the JSON line and column for a syntax or shape error; a root
    /// without any Fulcio certificate is refused (nothing could verify).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let json: RootJson = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a Sigstore trusted root: {e}"))?;
        if !json.media_type.starts_with(TRUSTED_ROOT_MEDIA_TYPE) {
            return Err(format!(
                "not a Sigstore trusted root: mediaType is {:?}, not {TRUSTED_ROOT_MEDIA_TYPE}+json;version=…",
                json.media_type
            ));
        }
        let mut fulcio = Vec::new();
        for (i, ca) in json.certificate_authorities.iter().enumerate() {
            for (j, cert) in ca.cert_chain.certificates.iter().enumerate() {
                fulcio.push(b64(
                    &format!("certificateAuthorities[{i}].certChain.certificates[{j}].rawBytes"),
                    &cert.raw_bytes,
                )?);
            }
        }
        if fulcio.is_empty() {
            return Err("the trusted root has no certificateAuthorities (Fulcio CA certificates): no keyless signature could verify".into());
        }
        let mut ctfe = BTreeMap::new();
        for (i, log) in json.ctlogs.iter().enumerate() {
            let id = b64(&format!("ctlogs[{i}].logId.keyId"), &log.log_id.key_id)?;
            let key = b64(
                &format!("ctlogs[{i}].publicKey.rawBytes"),
                &log.public_key.raw_bytes,
            )?;
            ctfe.insert(hex(&id), key);
        }
        let mut rekor = Vec::new();
        for (i, log) in json.tlogs.iter().enumerate() {
            let key_id = b64(&format!("tlogs[{i}].logId.keyId"), &log.log_id.key_id)?;
            let der = b64(
                &format!("tlogs[{i}].publicKey.rawBytes"),
                &log.public_key.raw_bytes,
            )?;
            // A key type sigstore cannot read is skipped, not fatal: its log's entries
            // then fail the SET check with "not in the trusted root".
            let Ok(key) = CosignVerificationKey::try_from_der(&der) else {
                continue;
            };
            let range = log.public_key.valid_for.as_ref();
            rekor.push(RekorLog {
                key_id,
                key,
                valid: (
                    range.and_then(|r| r.start).map(|t| t.as_second()),
                    range.and_then(|r| r.end).map(|t| t.as_second()),
                ),
            });
        }
        Ok(Self {
            fulcio,
            ctfe,
            rekor,
        })
    }

    /// The material sigstore's bundle `Verifier` takes: every Fulcio certificate as a
    /// trust anchor and the CT log keys (it does not use Rekor keys).
    pub(super) fn manual(&self) -> ManualTrustRoot<'static> {
        ManualTrustRoot {
            fulcio_certs: self
                .fulcio
                .iter()
                .map(|der| rustls_pki_types::CertificateDer::from(der.clone()))
                .collect(),
            rekor_keys: BTreeMap::new(),
            ctfe_keys: self.ctfe.clone(),
        }
    }

    /// The Rekor log `key_id` whose key was valid at `at` (Unix seconds).
    pub(super) fn rekor_log(&self, key_id: &[u8], at: i64) -> Option<&RekorLog> {
        self.rekor.iter().find(|log| {
            log.key_id == key_id
                && log.valid.0.is_none_or(|start| start <= at)
                && log.valid.1.is_none_or(|end| at <= end)
        })
    }

    /// Whether the log `key_id` is in the root at all (for a clearer detail).
    pub(super) fn knows_rekor_log(&self, key_id: &[u8]) -> bool {
        self.rekor.iter().any(|log| log.key_id == key_id)
    }
}

/// Lower-case hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_public_good_root_parses() {
        let root = TrustedRoot::from_json(PUBLIC_GOOD_TRUSTED_ROOT).unwrap();
        // 2 CAs: the 2021 root alone, then the 2022 intermediate + root.
        assert_eq!(root.fulcio.len(), 3, "{root:?}");
        assert_eq!(root.ctfe.len(), 2);
        // rekor.sigstore.dev (P-256) and log2025-1 (Ed25519).
        assert_eq!(root.rekor.len(), 2);
        let rekor_v1 = base64::engine::general_purpose::STANDARD
            .decode("wNI9atQGlz+VWfO6LRygH4QUfY/8W4RFwiT5i5WRgB0=")
            .unwrap();
        assert!(root.rekor_log(&rekor_v1, 1_700_000_000).is_some());
        // Before its validFor.start (2021-01-12).
        assert!(root.rekor_log(&rekor_v1, 1_600_000_000).is_none());
        assert!(root.knows_rekor_log(&rekor_v1));
    }

    #[test]
    fn a_broken_root_says_where() {
        let e = TrustedRoot::from_json(b"{\"tlogs\": [\n  {\"logId\": 3}\n]}").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = TrustedRoot::from_json(b"[]").unwrap_err();
        assert!(e.contains("mediaType"), "{e}");
        let e = TrustedRoot::from_json(
            br#"{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#,
        )
        .unwrap_err();
        assert!(e.contains("no certificateAuthorities"), "{e}");
    }
}
