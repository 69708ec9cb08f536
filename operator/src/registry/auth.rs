//! Credentials and the Docker registry token-auth flow.
//!
//! Sources: Docker registry "Token Authentication Specification" (a `401` carries
//! `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`; the client GETs the realm
//! with `service` and `scope`, using basic auth when it has credentials, and receives
//! `{"token"|"access_token", "expires_in", "issued_at"}`; `expires_in` defaults to 60 s),
//! RFC 7617 (basic), and the Docker CLI `config.json` format (`auths.<host>.auth` is
//! base64 `user:password`; `identitytoken` is an OAuth refresh token).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

/// Credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The Docker config file could not be read.
    #[error("cannot read Docker config {path}: {reason}")]
    Unreadable {
        /// Path of the file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The Docker config JSON is malformed. The message never quotes the content.
    #[error("Docker config {source_name} is not valid JSON of the config.json shape: {reason}")]
    Malformed {
        /// Where it came from (`/root/.docker/config.json`, `Secret data .dockerconfigjson`).
        source_name: String,
        /// serde's message (positions, not values).
        reason: String,
    },
    /// An `auth` entry is not base64 `user:password`.
    #[error(
        "Docker config {source_name}: the auth entry for {registry} is not base64 of user:password"
    )]
    BadAuthEntry {
        /// Where it came from.
        source_name: String,
        /// Registry whose entry is broken.
        registry: String,
    },
    /// A `kubernetes.io/dockerconfigjson` Secret lacks the `.dockerconfigjson` key.
    #[error("Secret data has no .dockerconfigjson key (type kubernetes.io/dockerconfigjson)")]
    MissingSecretKey,
}

/// Credentials for one registry. `Debug` redacts every secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials: anonymous pulls (a token is still fetched when challenged).
    Anonymous,
    /// Username and password (RFC 7617), used directly for `Basic` challenges and to
    /// obtain tokens for `Bearer` challenges.
    Basic {
        /// User name.
        username: String,
        /// Password or personal access token.
        password: String,
    },
    /// A Docker `identitytoken` (OAuth2 refresh token), exchanged at the token realm
    /// by `POST grant_type=refresh_token` (Docker "OAuth2 Token Authentication").
    IdentityToken {
        /// The refresh token.
        token: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::IdentityToken { .. } => f
                .debug_struct("IdentityToken")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

impl Credentials {
    /// The `Authorization` header value for a basic challenge or a token request,
    /// `None` when anonymous.
    pub(crate) fn basic_header(&self) -> Option<String> {
        let (user, pass) = match self {
            Self::Anonymous => return None,
            Self::Basic { username, password } => (username.as_str(), password.as_str()),
            // Only used if a registry asks for Basic while we hold a refresh token.
            Self::IdentityToken { token } => ("<token>", token.as_str()),
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        Some(format!("Basic {encoded}"))
    }
}

#[derive(Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuthEntry>,
}

#[derive(Deserialize)]
struct DockerAuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Credentials per registry host, as read from Docker `config.json` documents.
/// `Debug` shows hosts only.
#[derive(Clone, Default)]
pub struct CredentialStore {
    by_registry: HashMap<String, Credentials>,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hosts: Vec<&String> = self.by_registry.keys().collect();
        hosts.sort();
        f.debug_struct("CredentialStore")
            .field("registries", &hosts)
            .finish()
    }
}

/// Environment variable holding a whole Docker `config.json` document.
pub const DOCKER_CONFIG_JSON_ENV: &str = "IMAGE_FACTORY_DOCKERCONFIGJSON";

impl CredentialStore {
    /// An empty store: every registry anonymous.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the credentials of one registry host (`ghcr.io`, `127.0.0.1:5000`);
    /// `docker.io` aliases (`index.docker.io`, `registry-1.docker.io`) are folded.
    pub fn insert(&mut self, registry: &str, credentials: Credentials) {
        self.by_registry
            .insert(canonical_host(registry), credentials);
    }

    /// The credentials for `registry`, [`Credentials::Anonymous`] when none.
    pub fn get(&self, registry: &str) -> Credentials {
        self.by_registry
            .get(&canonical_host(registry))
            .cloned()
            .unwrap_or(Credentials::Anonymous)
    }

    /// Merges the `auths` of a Docker `config.json` document. Later documents win.
    ///
    /// # Errors
    /// [`CredentialsError::Malformed`] / [`CredentialsError::BadAuthEntry`].
    pub fn add_docker_config_json(
        &mut self,
        json: &[u8],
        source_name: &str,
    ) -> Result<(), CredentialsError> {
        let file: DockerConfigFile =
            serde_json::from_slice(json).map_err(|e| CredentialsError::Malformed {
                source_name: source_name.to_owned(),
                reason: format!("line {} column {}", e.line(), e.column()),
            })?;
        for (key, entry) in file.auths {
            let host = host_of_auth_key(&key);
            let credentials = entry_credentials(&entry, source_name, &host)?;
            self.insert(&host, credentials);
        }
        Ok(())
    }

    /// Reads a Docker `config.json` file (`~/.docker/config.json`, `$DOCKER_CONFIG/config.json`,
    /// `$REGISTRY_AUTH_FILE`).
    ///
    /// # Errors
    /// [`CredentialsError::Unreadable`] and the errors of [`Self::add_docker_config_json`].
    pub fn add_docker_config_file(
        &mut self,
        path: &std::path::Path,
    ) -> Result<(), CredentialsError> {
        let bytes = std::fs::read(path).map_err(|e| CredentialsError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.add_docker_config_json(&bytes, &path.display().to_string())
    }

    /// Reads the `data` of a `kubernetes.io/dockerconfigjson` Secret: the key
    /// `.dockerconfigjson` holding the (already base64-decoded) config JSON.
    ///
    /// # Errors
    /// [`CredentialsError::MissingSecretKey`] and the errors of [`Self::add_docker_config_json`].
    pub fn add_secret_data(
        &mut self,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), CredentialsError> {
        let json = data
            .get(".dockerconfigjson")
            .ok_or(CredentialsError::MissingSecretKey)?;
        self.add_docker_config_json(json, "Secret data .dockerconfigjson")
    }

    /// Loads from the environment: `$REGISTRY_AUTH_FILE`, then `$DOCKER_CONFIG/config.json`
    /// (else `$HOME/.docker/config.json`) when the file exists, then the JSON document in
    /// [`DOCKER_CONFIG_JSON_ENV`]. Missing files are skipped.
    ///
    /// # Errors
    /// The errors of [`Self::add_docker_config_json`] for files or variables that exist
    /// but do not parse.
    pub fn from_environment() -> Result<Self, CredentialsError> {
        let mut store = Self::new();
        let docker_config = std::env::var_os("DOCKER_CONFIG")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker"))
            })
            .map(|dir| dir.join("config.json"));
        let auth_file = std::env::var_os("REGISTRY_AUTH_FILE").map(std::path::PathBuf::from);
        for path in [docker_config, auth_file].into_iter().flatten() {
            if path.is_file() {
                store.add_docker_config_file(&path)?;
            }
        }
        if let Ok(json) = std::env::var(DOCKER_CONFIG_JSON_ENV) {
            store.add_docker_config_json(json.as_bytes(), DOCKER_CONFIG_JSON_ENV)?;
        }
        Ok(store)
    }
}

fn entry_credentials(
    entry: &DockerAuthEntry,
    source_name: &str,
    host: &str,
) -> Result<Credentials, CredentialsError> {
    if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Credentials::IdentityToken {
            token: token.clone(),
        });
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Credentials::Basic {
            username: username.clone(),
            password: password.clone(),
        });
    }
    let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) else {
        return Ok(Credentials::Anonymous);
    };
    let bad = || CredentialsError::BadAuthEntry {
        source_name: source_name.to_owned(),
        registry: host.to_owned(),
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (username, password) = text.split_once(':').ok_or_else(bad)?;
    Ok(Credentials::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// `https://index.docker.io/v1/` → `docker.io`; `ghcr.io/` → `ghcr.io`.
fn host_of_auth_key(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    canonical_host(host)
}

fn canonical_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        other => other.to_ascii_lowercase(),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`: send the credentials on every request.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`: fetch a token from `realm`.
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// `service` parameter, if given.
        service: Option<String>,
        /// `scope` parameter, if given (`repository:library/alpine:pull`).
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value. Returns `None` for schemes other than
/// Basic and Bearer, or a Bearer challenge without `realm`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_auth_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `key="value", key2=value2` with commas allowed inside quotes (scopes contain none,
/// but `scope="repository:a:pull,push"` does).
fn parse_auth_params(input: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => break,
                    other => value.push(other),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    out
}

/// A token endpoint's answer (Docker token auth spec "Token Response Fields").
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub(crate) token: Option<String>,
    #[serde(default)]
    pub(crate) access_token: Option<String>,
    /// Seconds; the spec's default is 60.
    #[serde(default)]
    pub(crate) expires_in: Option<u64>,
}

/// A bearer token and when to stop using it. `Debug` redacts the token.
#[derive(Clone)]
pub(crate) struct CachedToken {
    pub(crate) token: String,
    pub(crate) refresh_at: Instant,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &"<redacted>")
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

impl CachedToken {
    /// Refreshes 10 % (at most 30 s) before the server's expiry so a token never
    /// expires in flight.
    pub(crate) fn new(token: String, expires_in: Duration, now: Instant) -> Self {
        let margin = (expires_in / 10).min(Duration::from_secs(30));
        Self {
            token,
            refresh_at: now + expires_in.saturating_sub(margin),
        }
    }

    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        now < self.refresh_at
    }
}

/// Default token lifetime when `expires_in` is absent (token auth spec: 60 seconds).
pub(crate) const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_parameters_are_read() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
    }

    #[test]
    fn scope_with_commas_inside_quotes_is_kept_whole() {
        let c = parse_challenge(r#"Bearer realm="r", scope="repository:a:pull,push""#);
        assert!(
            matches!(c, Some(Challenge::Bearer { scope: Some(s), .. }) if s == "repository:a:pull,push")
        );
    }

    #[test]
    fn docker_config_auth_entries_are_decoded_and_hosts_folded() {
        let json = br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
            "ghcr.io":{"username":"u","password":"p"},"quay.io":{"identitytoken":"rt"}}}"#;
        let mut store = CredentialStore::new();
        store.add_docker_config_json(json, "test").unwrap();
        assert_eq!(
            store.get("docker.io"),
            Credentials::Basic {
                username: "user".into(),
                password: "pass".into()
            }
        );
        assert_eq!(
            store.get("ghcr.io"),
            Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            store.get("quay.io"),
            Credentials::IdentityToken { token: "rt".into() }
        );
        assert_eq!(store.get("example.com"), Credentials::Anonymous);
    }

    #[test]
    fn secret_data_is_read_from_dockerconfigjson_key() {
        let mut data = BTreeMap::new();
        data.insert(
            ".dockerconfigjson".to_owned(),
            br#"{"auths":{"r.example":{"auth":"YTpi"}}}"#.to_vec(),
        );
        let mut store = CredentialStore::new();
        store.add_secret_data(&data).unwrap();
        assert_eq!(
            store.get("r.example"),
            Credentials::Basic {
                username: "a".into(),
                password: "b".into()
            }
        );
        assert!(matches!(
            CredentialStore::new().add_secret_data(&BTreeMap::new()),
            Err(CredentialsError::MissingSecretKey)
        ));
    }

    #[test]
    fn secrets_never_appear_in_debug_or_errors() {
        let creds = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
        let token = Credentials::IdentityToken {
            token: "sekrit".into(),
        };
        assert!(!format!("{token:?}").contains("sekrit"));
        let bad = br#"{"auths":{"r":{"auth":"hunter2-not-base64!"}}}"#;
        let err = CredentialStore::new()
            .add_docker_config_json(bad, "t")
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let malformed = br#"{"auths":{"r":{"auth": hunter2}}}"#;
        let err = CredentialStore::new()
            .add_docker_config_json(malformed, "t")
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn token_is_refreshed_before_it_expires() {
        let now = Instant::now();
        let t = CachedToken::new("x".into(), Duration::from_secs(60), now);
        assert!(t.is_fresh(now + Duration::from_secs(50)));
        assert!(!t.is_fresh(now + Duration::from_secs(55)));
        assert!(!format!("{t:?}").contains('x') || !format!("{t:?}").contains("\"x\""));
    }
}
