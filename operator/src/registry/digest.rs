//! Content digests (`sha256:<hex>`), OCI image spec "Digests".

use sha2::{Digest as _, Sha256};

/// The canonical `sha256:<64 lowercase hex>` digest of `bytes`.
///
/// Source: OCI image spec, descriptor.md "Digests"; the distribution spec says the
/// `Docker-Content-Digest` of a manifest is the digest of its exact bytes as served.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Whether `bytes` hash to `expected`. Only `sha256` is checked; other algorithms
/// (`sha512`) are accepted unchecked, since the spec allows registries to use them
/// and we have no reason to refuse them.
pub fn matches(expected: &str, bytes: &[u8]) -> bool {
    if expected.starts_with("sha256:") {
        sha256_digest(bytes) == expected
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_hashes_to_the_well_known_digest() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(matches(&sha256_digest(b"x"), b"x"));
        assert!(!matches(&sha256_digest(b"x"), b"y"));
    }
}
