//! Per-registry settings: TLS, mirrors, request budget, retries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Settings of one registry host. Every field has a default; YAML/JSON keys are camelCase.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// Mirror / pull-through-cache hosts (`mirror.internal:5000`) tried first for
    /// manifest and blob reads, in order, falling back to the registry itself on any
    /// failure. Tag listings always go to the registry (a pull-through cache only knows
    /// the tags it has pulled).
    pub mirrors: Vec<String>,
    /// PEM file with extra CA certificates trusted for this registry, in addition to
    /// the system roots.
    pub ca_bundle: Option<PathBuf>,
    /// Skip TLS certificate verification. Only ever set per registry, never globally.
    pub insecure: bool,
    /// Force plain HTTP (`true`) or HTTPS (`false`). Unset: plain HTTP for loopback
    /// hosts (`localhost`, `127.0.0.0/8`, `[::1]`) without `caBundle`/`insecure`,
    /// HTTPS otherwise.
    pub plain_http: Option<bool>,
    /// Request rate limit in requests per second (all kinds of request). `None` = no
    /// pacing. Default 100.
    pub requests_per_second: Option<f64>,
    /// Requests in flight at once to this registry. Default 16.
    pub max_concurrency: usize,
    /// Attempts per request, first one included, for `429`, `5xx`, timeouts and cut
    /// responses. Default 5.
    pub max_attempts: u32,
    /// First backoff delay in milliseconds, doubled each attempt, with ±50 % jitter.
    /// Default 200 ms.
    pub backoff_base_ms: u64,
    /// Backoff and `Retry-After` cap in milliseconds. Default 30 000 ms.
    pub backoff_max_ms: u64,
    /// Per-request timeout in milliseconds (connect + headers + body). Default 30 000 ms.
    pub timeout_ms: u64,
    /// Tag list page size (`n`). Default 1 000.
    pub page_size: usize,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            mirrors: Vec::new(),
            ca_bundle: None,
            insecure: false,
            plain_http: None,
            requests_per_second: Some(100.0),
            max_concurrency: 16,
            max_attempts: 5,
            backoff_base_ms: 200,
            backoff_max_ms: 30_000,
            timeout_ms: 30_000,
            page_size: 1000,
        }
    }
}

impl RegistrySettings {
    /// Per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Whether `host` is spoken to over plain HTTP under these settings.
    pub fn uses_plain_http(&self, host: &str) -> bool {
        match self.plain_http {
            Some(plain) => plain,
            None => is_loopback(host) && self.ca_bundle.is_none() && !self.insecure,
        }
    }
}

/// Settings for all registries: a default and overrides by host (`ghcr.io`,
/// `127.0.0.1:5000`). An override replaces the default wholesale.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ClientSettings {
    /// Settings for hosts without an override.
    pub default: RegistrySettings,
    /// Overrides by registry host.
    pub registries: BTreeMap<String, RegistrySettings>,
}

impl ClientSettings {
    /// The settings in force for `host`.
    pub fn for_host(&self, host: &str) -> &RegistrySettings {
        self.registries.get(host).unwrap_or(&self.default)
    }

    /// Reads YAML (or JSON) settings.
    ///
    /// # Errors
    /// [`super::RegistryError::Settings`] when the file cannot be read or parsed.
    pub fn from_file(path: &std::path::Path) -> Result<Self, super::RegistryError> {
        let err = |reason: String| super::RegistryError::Settings {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        serde_saphyr::from_str(&text).map_err(|e| err(e.to_string()))
    }
}

/// `localhost`, `127.0.0.0/8` and `[::1]`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("localhost:5000", true)]
    #[case("127.0.0.1:5000", true)]
    #[case("127.8.9.10", true)]
    #[case("[::1]:5000", true)]
    #[case("ghcr.io", false)]
    #[case("10.0.0.1:5000", false)]
    #[case("localhost.example.com", false)]
    fn loopback_hosts(#[case] host: &str, #[case] expected: bool) {
        assert_eq!(is_loopback(host), expected);
    }

    #[test]
    fn loopback_speaks_http_unless_tls_is_configured() {
        let d = RegistrySettings::default();
        assert!(d.uses_plain_http("127.0.0.1:5000"));
        assert!(!d.uses_plain_http("ghcr.io"));
        let tls = RegistrySettings {
            ca_bundle: Some("ca.pem".into()),
            ..RegistrySettings::default()
        };
        assert!(!tls.uses_plain_http("127.0.0.1:5000"));
    }

    #[test]
    fn settings_parse_from_yaml() {
        let s: ClientSettings = serde_saphyr::from_str(
            "registries:\n  ghcr.io:\n    requestsPerSecond: 5\n    maxAttempts: 2\n    mirrors: [mirror.local]\n",
        )
        .unwrap();
        let g = s.for_host("ghcr.io");
        assert_eq!(g.max_attempts, 2);
        assert_eq!(g.mirrors, vec!["mirror.local".to_owned()]);
        assert_eq!(s.for_host("quay.io").max_attempts, 5);
    }
}
