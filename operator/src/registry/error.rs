//! The one error type of the registry module.

/// Everything that can go wrong talking to an OCI registry.
///
/// Messages name the registry (host\[:port\]) and never contain credentials: the
/// variants carry no secret, and URLs are logged without userinfo or query tokens.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered `401`/`403` even after the configured credentials (or a
    /// token obtained with them) were presented.
    #[error("registry {registry} refused access to {repository} (HTTP {status}): check the credentials configured for this registry")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Repository path the request was for.
        repository: String,
        /// HTTP status code (401 or 403).
        status: u16,
    },
    /// The registry kept answering `429 Too Many Requests` until the retry budget ran out.
    #[error("registry {registry} rate-limited us (HTTP 429) on {attempts} attempts; limit: at most {max_attempts} attempts per request — lower `requestsPerSecond` for this registry or retry later")]
    RateLimited {
        /// Registry host.
        registry: String,
        /// Attempts made (equals `max_attempts`).
        attempts: u32,
        /// The configured attempt limit.
        max_attempts: u32,
    },
    /// The registry kept failing with `5xx` or timing out until the retry budget ran out.
    #[error(
        "registry {registry} unavailable after {attempts} attempts (limit {max_attempts}): {last}"
    )]
    Unavailable {
        /// Registry host.
        registry: String,
        /// Attempts made.
        attempts: u32,
        /// The configured attempt limit.
        max_attempts: u32,
        /// What the last attempt saw (status code or transport failure, no body).
        last: String,
    },
    /// The manifest or blob does not exist (`404`, OCI distribution spec error
    /// `MANIFEST_UNKNOWN` / `BLOB_UNKNOWN` / `NAME_UNKNOWN`).
    #[error("{what} not found on registry {registry}")]
    NotFound {
        /// Registry host.
        registry: String,
        /// What was asked for (`manifest library/alpine:3.19`, `blob sha256:…`).
        what: String,
    },
    /// An unexpected HTTP status that is not retried.
    #[error("registry {registry} answered HTTP {status} to {method} {path}")]
    UnexpectedStatus {
        /// Registry host.
        registry: String,
        /// Request method.
        method: String,
        /// Request path (no query string).
        path: String,
        /// HTTP status code.
        status: u16,
    },
    /// Connecting or TLS failed in a way that is not worth retrying, or building the
    /// HTTP client from the per-registry TLS settings failed.
    #[error("cannot reach registry {registry}: {reason}")]
    Transport {
        /// Registry host.
        registry: String,
        /// The transport error's text (reqwest errors carry no credentials).
        reason: String,
    },
    /// A manifest, index, config or tag list did not parse.
    #[error("registry {registry} sent an invalid {what}: {reason}")]
    InvalidDocument {
        /// Registry host.
        registry: String,
        /// `manifest`, `index`, `config`, `tag list`, `token response`.
        what: &'static str,
        /// Parser message.
        reason: String,
    },
    /// Content hashed to a different digest than the one asked for (OCI distribution
    /// spec: clients MUST verify digests of content fetched by digest).
    #[error("registry {registry} served {actual} for {expected}")]
    DigestMismatch {
        /// Registry host.
        registry: String,
        /// Digest that was requested.
        expected: String,
        /// Digest of the bytes received.
        actual: String,
    },
    /// A `401` challenge could not be understood (no `WWW-Authenticate`, unknown scheme).
    #[error("registry {registry} sent an authentication challenge we cannot answer: {challenge}")]
    UnsupportedChallenge {
        /// Registry host.
        registry: String,
        /// The scheme or header fragment (never a token).
        challenge: String,
    },
    /// The index has no manifest for the requested platform.
    #[error("{reference} has no manifest for platform {platform}; available: {available}")]
    PlatformNotFound {
        /// The image reference.
        reference: String,
        /// Requested platform, normalized (`linux/arm64/v8`).
        platform: String,
        /// Comma-separated platforms the index offers.
        available: String,
    },
    /// The image reference does not parse.
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    /// A platform string does not parse.
    #[error(transparent)]
    Platform(#[from] super::platform::PlatformError),
    /// Credentials could not be loaded.
    #[error(transparent)]
    Credentials(#[from] super::auth::CredentialsError),
    /// Tag selection was configured wrongly.
    #[error(transparent)]
    Selection(#[from] super::select::SelectionError),
    /// Reading the settings file failed.
    #[error("cannot read registry settings {path}: {reason}")]
    Settings {
        /// Path of the settings file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}
