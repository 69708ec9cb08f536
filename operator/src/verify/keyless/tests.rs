//! Keyless verification on recorded, real Sigstore signatures (tests/testdata/sigstore,
//! see its NOTICE): no network.

use base64::Engine as _;
use serde_json::{json, Value};

use super::*;
use crate::verify::PUBLIC_GOOD_TRUSTED_ROOT;

/// cosign v3 keyless bundle of kubewarden-controller v1.34.0.
const V3: &str = include_str!("../../../../tests/testdata/sigstore/cosign_v3_keyless_bundle.json");
const V3_DIGEST: &str = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
const V3_IDENTITY: &str = "^https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0$";
const GITHUB_ISSUER: &str = "^https://token.actions.githubusercontent.com$";

/// `cosign sign-blob --bundle` output of 2022: the three parts cosign v2 annotates.
const V2: &str =
    include_str!("../../../../tests/testdata/sigstore/cosign_v2_sign_blob_bundle.json");
const V2_PAYLOAD_SHA256: &str = "4bc453b53cb3d914b45f4b250294236adba2c0e09ff6f03793949e7e39fd4cc1";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn keyless(identity: &str, issuer: &str) -> Keyless {
    Keyless {
        identity: identity.into(),
        issuer: issuer.into(),
        rekor: true,
        trusted_root: None,
    }
}

fn check(policy: &Keyless) -> KeylessCheck {
    KeylessCheck::new(policy, PUBLIC_GOOD_TRUSTED_ROOT).unwrap()
}

fn v3_json() -> Value {
    serde_json::from_str(V3).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// `json` pointer's base64 string with one byte flipped.
fn flip(v: &mut Value, pointer: &str) {
    let field = v.pointer_mut(pointer).unwrap();
    let mut raw = B64.decode(field.as_str().unwrap()).unwrap();
    raw[10] ^= 1;
    *field = Value::String(B64.encode(raw));
}

async fn v3_error(policy: &Keyless, bundle: &Value, digest: &str) -> String {
    check(policy)
        .check_bundle(&bytes(bundle), digest)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn the_recorded_cosign_v3_bundle_verifies_for_its_digest_and_identity() {
    check(&keyless(V3_IDENTITY, GITHUB_ISSUER))
        .check_bundle(V3.as_bytes(), V3_DIGEST)
        .await
        .unwrap();
    // Looser patterns match too (unanchored, like cosign's --certificate-identity-regexp).
    check(&keyless("github.com/kubewarden/", "githubusercontent"))
        .check_bundle(V3.as_bytes(), V3_DIGEST)
        .await
        .unwrap();
}

#[tokio::test]
async fn another_digest_fails() {
    let other = format!("sha256:{}", "ab".repeat(32));
    let e = v3_error(&keyless(V3_IDENTITY, GITHUB_ISSUER), &v3_json(), &other).await;
    assert!(
        e.contains(&format!("the statement signs {V3_DIGEST}, not this digest")),
        "{e}"
    );
}

#[tokio::test]
async fn another_identity_or_issuer_fails_and_names_what_the_certificate_carries() {
    let e = v3_error(
        &keyless("^https://github.com/acme/", GITHUB_ISSUER),
        &v3_json(),
        V3_DIGEST,
    )
    .await;
    assert!(
        e.contains("identity (SAN) is https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0, which does not match ^https://github.com/acme/"),
        "{e}"
    );
    let e = v3_error(
        &keyless(V3_IDENTITY, "^https://accounts.google.com$"),
        &v3_json(),
        V3_DIGEST,
    )
    .await;
    assert!(
        e.contains("OIDC issuer is https://token.actions.githubusercontent.com, which does not match ^https://accounts.google.com$"),
        "{e}"
    );
}

#[tokio::test]
async fn a_tampered_statement_or_signature_fails() {
    let policy = keyless(V3_IDENTITY, GITHUB_ISSUER);
    // The statement gains an annotation; its subject still names the digest.
    let mut bundle = v3_json();
    let payload = bundle.pointer_mut("/dsseEnvelope/payload").unwrap();
    let mut statement: Value =
        serde_json::from_slice(&B64.decode(payload.as_str().unwrap()).unwrap()).unwrap();
    statement["subject"][0]["annotations"] = json!({"creator": "mallory"});
    *payload = Value::String(B64.encode(bytes(&statement)));
    let e = v3_error(&policy, &bundle, V3_DIGEST).await;
    assert!(
        e.contains("signature does not verify with the certificate's key"),
        "{e}"
    );

    let mut bundle = v3_json();
    flip(&mut bundle, "/dsseEnvelope/signatures/0/sig");
    let e = v3_error(&policy, &bundle, V3_DIGEST).await;
    assert!(e.contains("signature does not verify"), "{e}");
}

#[tokio::test]
async fn a_tampered_set_or_integrated_time_fails_unless_rekor_is_false() {
    let policy = keyless(V3_IDENTITY, GITHUB_ISSUER);
    let mut bundle = v3_json();
    flip(
        &mut bundle,
        "/verificationMaterial/tlogEntries/0/inclusionPromise/signedEntryTimestamp",
    );
    let e = v3_error(&policy, &bundle, V3_DIGEST).await;
    assert!(e.contains("SignedEntryTimestamp does not verify"), "{e}");
    // rekor: false skips exactly this check.
    let lax = Keyless {
        rekor: false,
        ..policy.clone()
    };
    check(&lax)
        .check_bundle(&bytes(&bundle), V3_DIGEST)
        .await
        .unwrap();

    // The signing time is covered by the SET only (sigstore's Verifier trusts it).
    let mut bundle = v3_json();
    bundle["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = json!("1775719410");
    let e = v3_error(&policy, &bundle, V3_DIGEST).await;
    assert!(e.contains("SignedEntryTimestamp does not verify"), "{e}");
}

#[tokio::test]
async fn a_trust_root_without_the_fulcio_ca_or_the_rekor_log_fails() {
    let policy = keyless(V3_IDENTITY, GITHUB_ISSUER);
    let mut root: Value = serde_json::from_slice(PUBLIC_GOOD_TRUSTED_ROOT).unwrap();
    // Keep only the 2021 CA: the 2022 intermediate that issued the certificate is gone.
    root["certificateAuthorities"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    let e = KeylessCheck::new(&policy, &bytes(&root))
        .unwrap()
        .check_bundle(V3.as_bytes(), V3_DIGEST)
        .await
        .unwrap_err();
    assert!(
        e.contains("does not chain to a Fulcio CA of the trusted root"),
        "{e}"
    );

    let mut root: Value = serde_json::from_slice(PUBLIC_GOOD_TRUSTED_ROOT).unwrap();
    root["tlogs"] = json!([]);
    let e = KeylessCheck::new(&policy, &bytes(&root))
        .unwrap()
        .check_bundle(V3.as_bytes(), V3_DIGEST)
        .await
        .unwrap_err();
    assert!(
        e.contains("Rekor log c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d of the entry is not in the trusted root"),
        "{e}"
    );

    let mut root: Value = serde_json::from_slice(PUBLIC_GOOD_TRUSTED_ROOT).unwrap();
    root["ctlogs"] = json!([]);
    let e = KeylessCheck::new(&policy, &bytes(&root))
        .unwrap()
        .check_bundle(V3.as_bytes(), V3_DIGEST)
        .await
        .unwrap_err();
    assert!(e.contains("SCT does not verify"), "{e}");
}

/// The cosign v2 annotations of the recorded sign-blob bundle: signature, certificate
/// PEM, Rekor bundle JSON.
fn v2_parts() -> (String, String, Value) {
    let v: Value = serde_json::from_str(V2).unwrap();
    let pem = String::from_utf8(B64.decode(v["cert"].as_str().unwrap()).unwrap()).unwrap();
    (
        v["base64Signature"].as_str().unwrap().to_owned(),
        pem,
        v["rekorBundle"].clone(),
    )
}

fn v2_digest() -> [u8; 32] {
    unhex(V2_PAYLOAD_SHA256).unwrap().try_into().unwrap()
}

async fn v2_check(policy: &Keyless, digest: [u8; 32], rekor: Option<&Value>) -> Result<(), String> {
    let (signature, pem, _) = v2_parts();
    let rekor = rekor.map(|r| serde_json::to_string(r).unwrap());
    check(policy)
        .check_message_signature(digest, &signature, &pem, rekor.as_deref())
        .await
}

#[tokio::test]
async fn a_recorded_cosign_v2_keyless_signature_verifies_through_its_annotations() {
    // A 2022 certificate: e-mail identity, issuer in the legacy extension .1.1.
    let policy = keyless(
        "^daniel.bevenius@gmail.com$",
        "^https://github.com/login/oauth$",
    );
    let (_, _, rekor) = v2_parts();
    v2_check(&policy, v2_digest(), Some(&rekor)).await.unwrap();

    // Another payload: the signature is not over it.
    let e = v2_check(&policy, [7; 32], Some(&rekor)).await.unwrap_err();
    assert!(e.contains("signature does not verify"), "{e}");

    // Another identity.
    let e = v2_check(&keyless("^someone@else$", ".*"), v2_digest(), Some(&rekor))
        .await
        .unwrap_err();
    assert!(
        e.contains("identity (SAN) is daniel.bevenius@gmail.com"),
        "{e}"
    );

    // A tampered SET.
    let mut tampered = rekor.clone();
    flip(&mut tampered, "/SignedEntryTimestamp");
    let e = v2_check(&policy, v2_digest(), Some(&tampered))
        .await
        .unwrap_err();
    assert!(e.contains("SignedEntryTimestamp does not verify"), "{e}");

    // An entry for another signature (the body no longer matches).
    let mut moved = rekor.clone();
    let mut body: Value = serde_json::from_slice(
        &B64.decode(moved["Payload"]["body"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    body["spec"]["data"]["hash"]["value"] = json!("00".repeat(32));
    moved["Payload"]["body"] = json!(B64.encode(bytes(&body)));
    let lax = Keyless {
        rekor: false,
        ..policy.clone()
    };
    let e = v2_check(&lax, v2_digest(), Some(&moved)).await.unwrap_err();
    assert!(e.contains("transparency-log entry does not match"), "{e}");

    // No Rekor bundle at all: fails closed even with rekor: false.
    let e = v2_check(&lax, v2_digest(), None).await.unwrap_err();
    assert!(e.contains("no transparency-log (Rekor) entry"), "{e}");
}

#[test]
fn a_bad_pattern_or_root_is_refused_when_the_check_is_built() {
    let e = KeylessCheck::new(&keyless("(", ".*"), PUBLIC_GOOD_TRUSTED_ROOT).unwrap_err();
    assert!(
        e.contains("invalid keyless.identity regular expression"),
        "{e}"
    );
    let e = KeylessCheck::new(&keyless(".*", ".*"), b"[]").unwrap_err();
    assert!(e.contains("not a Sigstore trusted root"), "{e}");
}
