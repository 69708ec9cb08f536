//! Credentials for the remote, and keeping them out of logs and messages.
//!
//! Three kinds, tried in this order for what the remote asks: an SSH key file (with
//! `known_hosts` checking, like OpenSSH's `StrictHostKeyChecking`), an HTTPS user +
//! token/password from a file, the environment or a value, and git's credential helper
//! (`credential.helper` in the repository's or the user's git config).

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::GitError;

/// A secret string (token, password, passphrase). `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to libgit2 only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from. Read at each connection, so a rotated Kubernetes Secret
/// mounted as a file is picked up without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file whose content (trailing newline trimmed) is the secret — a mounted Secret.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// The value itself.
    Value(Secret),
}

impl SecretSource {
    /// Reads the secret.
    ///
    /// # Errors
    ///
    /// [`GitError::Credential`] naming the file or variable (never the content) when it
    /// cannot be read or is empty.
    pub fn load(&self) -> Result<Secret, GitError> {
        let (location, value) = match self {
            Self::File(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|e| GitError::Credential {
                    location: path.display().to_string(),
                    reason: e.kind().to_string(),
                })?,
            ),
            Self::Env(name) => (
                format!("${name}"),
                std::env::var(name).map_err(|_| GitError::Credential {
                    location: format!("${name}"),
                    reason: "not set".into(),
                })?,
            ),
            Self::Value(secret) => return Ok(secret.clone()),
        };
        let value = value.trim_end_matches(['\n', '\r']).to_string();
        if value.is_empty() {
            return Err(GitError::Credential {
                location,
                reason: "empty".into(),
            });
        }
        Ok(Secret(value))
    }
}

impl std::str::FromStr for SecretSource {
    type Err = String;

    /// `env:NAME` or a bare `NAME` (an environment variable), or `file:PATH` (a mounted
    /// Secret) — the same forms as secret references in `images.yaml`. Never the value
    /// itself, so a secret never sits on a command line.
    ///
    /// # Errors
    ///
    /// A message saying which forms are accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("file:") {
            if !path.is_empty() {
                return Ok(Self::File(PathBuf::from(path)));
            }
        } else {
            let name = s.strip_prefix("env:").unwrap_or(s);
            if !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Ok(Self::Env(name.to_string()));
            }
        }
        Err(format!(
            "invalid secret reference {s:?}: write env:NAME (an environment variable), file:PATH (a mounted Secret) or a bare variable name; never the secret itself"
        ))
    }
}

/// How an SSH host key is checked against `known_hosts` (OpenSSH's
/// `StrictHostKeyChecking`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostKeyChecking {
    /// The host must be listed with this key (default).
    #[default]
    Yes,
    /// An unlisted host is accepted and appended; a listed host must match.
    AcceptNew,
    /// Any host key is accepted (tests only: this allows a man in the middle).
    No,
}

/// An SSH private key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKey {
    /// SSH user; `None`: the URL's, else `git`.
    pub user: Option<String>,
    /// Private key file (a mounted Secret).
    pub private_key: PathBuf,
    /// Public key file; `None`: derived by libssh2.
    pub public_key: Option<PathBuf>,
    /// Passphrase of an encrypted key.
    pub passphrase: Option<SecretSource>,
    /// `known_hosts` file; `None`: `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// How the host key is checked.
    pub host_key_checking: HostKeyChecking,
}

/// An HTTPS user and token (or password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsCredentials {
    /// User name (GitHub accepts any with a token, e.g. `x-access-token`).
    pub username: String,
    /// The token or password.
    pub password: SecretSource,
}

/// How to authenticate to the remote. Empty (the default): anonymous, or whatever user
/// info the URL carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// For `ssh://` and `user@host:path` remotes.
    pub ssh_key: Option<SshKey>,
    /// For `https://` remotes.
    pub https: Option<HttpsCredentials>,
    /// Ask git's credential helper (`credential.helper`) when nothing else answers.
    pub credential_helper: bool,
}

/// `url` without user info (`https://user:token@host/x` → `https://host/x`), for messages.
pub fn display_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // scp-like `user@host:path`: the user is not secret, keep it.
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// The secret parts of `url`'s user info (user and password of `scheme://user:pw@host`),
/// percent-decoded and raw, for scrubbing.
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some(scheme_end) = url.find("://") else {
        return Vec::new();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for part in rest[..at].split(':') {
        if part.len() >= 4 {
            out.push(part.to_string());
            let decoded = percent_decode(part);
            if decoded != part {
                out.push(decoded);
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `message` with every secret replaced by `***` and every URL with user info shown
/// without it.
pub fn scrub(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_string();
    for secret in secrets {
        if !secret.is_empty() {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// Everything needed to answer libgit2's credential and certificate callbacks for one
/// connection, secrets loaded.
pub(crate) struct Session {
    url: String,
    credentials: Credentials,
    https_password: Option<Secret>,
    ssh_passphrase: Option<Secret>,
    /// Every secret this session knows, for [`scrub`].
    pub secrets: Vec<String>,
    attempts: u32,
    /// Set when the host key check failed, for a precise error.
    pub host_key_error: Option<(String, String)>,
}

impl Session {
    /// Loads the secrets `credentials` names for `url`.
    ///
    /// # Errors
    ///
    /// [`GitError::Credential`] when a configured secret cannot be read.
    pub fn new(url: &str, credentials: &Credentials) -> Result<Self, GitError> {
        let https_password = match &credentials.https {
            Some(https) => Some(https.password.load()?),
            None => None,
        };
        let ssh_passphrase = match credentials
            .ssh_key
            .as_ref()
            .and_then(|k| k.passphrase.as_ref())
        {
            Some(source) => Some(source.load()?),
            None => None,
        };
        let mut secrets = url_secrets(url);
        secrets.extend(https_password.iter().map(|s| s.0.clone()));
        secrets.extend(ssh_passphrase.iter().map(|s| s.0.clone()));
        Ok(Self {
            url: url.to_string(),
            credentials: credentials.clone(),
            https_password,
            ssh_passphrase,
            secrets,
            attempts: 0,
            host_key_error: None,
        })
    }

    /// Starts a new connection: the credential callback may try again.
    pub fn reset_attempts(&mut self) {
        self.attempts = 0;
    }

    /// Scrubs a libgit2 message.
    pub fn scrub(&self, message: &str) -> String {
        scrub(message, &self.secrets)
    }

    /// Answers libgit2's credential callback. libgit2 asks again after a rejected
    /// credential, so after two tries the answer is an error (otherwise it loops).
    pub fn credential(
        &mut self,
        url: &str,
        username: Option<&str>,
        allowed: git2::CredentialType,
    ) -> Result<git2::Cred, git2::Error> {
        self.attempts += 1;
        if self.attempts > 2 {
            return Err(git2::Error::new(
                git2::ErrorCode::Auth,
                git2::ErrorClass::Net,
                "the remote rejected the configured credentials",
            ));
        }
        if let Some(key) = &self.credentials.ssh_key {
            let user = key.user.as_deref().or(username).unwrap_or("git");
            if allowed.contains(git2::CredentialType::USERNAME) {
                return git2::Cred::username(user);
            }
            if allowed.contains(git2::CredentialType::SSH_KEY) {
                return git2::Cred::ssh_key(
                    user,
                    key.public_key.as_deref(),
                    &key.private_key,
                    self.ssh_passphrase.as_ref().map(Secret::expose),
                );
            }
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            if let (Some(https), Some(password)) = (&self.credentials.https, &self.https_password) {
                return git2::Cred::userpass_plaintext(&https.username, password.expose());
            }
            if self.credentials.credential_helper {
                if let Ok(config) = git2::Config::open_default() {
                    if let Ok(cred) = git2::Cred::credential_helper(&config, url, username) {
                        return Ok(cred);
                    }
                }
            }
        }
        Err(git2::Error::new(
            git2::ErrorCode::Auth,
            git2::ErrorClass::Net,
            "no configured credential fits what the remote asks for",
        ))
    }

    /// Answers libgit2's certificate callback: SSH host keys against `known_hosts`;
    /// TLS certificates are left to libgit2's own (OpenSSL) verification.
    pub fn certificate(
        &mut self,
        cert: &git2::cert::Cert<'_>,
        host: &str,
    ) -> Result<git2::CertificateCheckStatus, git2::Error> {
        let Some(hostkey) = cert.as_hostkey() else {
            return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(key) = &self.credentials.ssh_key else {
            return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
        };
        if key.host_key_checking == HostKeyChecking::No {
            return Ok(git2::CertificateCheckStatus::CertificateOk);
        }
        let (Some(raw), Some(kind)) = (hostkey.hostkey(), hostkey.hostkey_type()) else {
            return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
        };
        let file = key
            .known_hosts
            .clone()
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/known_hosts")))
            .unwrap_or_else(|| PathBuf::from("known_hosts"));
        let port = ssh_port(&self.url);
        let name = known_hosts_name(host, port);
        let content = std::fs::read_to_string(&file).unwrap_or_default();
        let verdict = check_host_key(&content, &name, kind.name(), raw);
        let reject = |this: &mut Self, reason: String| {
            this.host_key_error = Some((name.clone(), reason.clone()));
            Err(git2::Error::new(
                git2::ErrorCode::Certificate,
                git2::ErrorClass::Ssh,
                format!("host key of {name} rejected: {reason}"),
            ))
        };
        match verdict {
            HostKeyVerdict::Match => Ok(git2::CertificateCheckStatus::CertificateOk),
            HostKeyVerdict::Mismatch => reject(
                self,
                format!("it does not match the key listed in {}; if the host key really changed, replace that line", file.display()),
            ),
            HostKeyVerdict::Unknown if key.host_key_checking == HostKeyChecking::AcceptNew => {
                let line = format!(
                    "{name} {} {}\n",
                    kind.name(),
                    base64::engine::general_purpose::STANDARD.encode(raw)
                );
                append(&file, &line).map_err(|e| {
                    git2::Error::new(git2::ErrorCode::Certificate, git2::ErrorClass::Ssh, e.to_string())
                })?;
                Ok(git2::CertificateCheckStatus::CertificateOk)
            }
            HostKeyVerdict::Unknown => reject(
                self,
                format!("{name} is not listed in {}; add it (`ssh-keyscan {host}`) or use accept-new", file.display()),
            ),
        }
    }
}

fn append(file: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?
        .write_all(line.as_bytes())
}

/// The port of an `ssh://host:port/…` URL (22 otherwise).
fn ssh_port(url: &str) -> u16 {
    let Some(rest) = url.strip_prefix("ssh://") else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    host_port
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(22)
}

/// How OpenSSH names a host in `known_hosts`: `host`, or `[host]:port` off port 22.
pub(crate) fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// What `known_hosts` says about a host key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HostKeyVerdict {
    /// Listed with this key.
    Match,
    /// Listed with keys of this type, none of them this one.
    Mismatch,
    /// Not listed (hashed `|1|` entries are not read).
    Unknown,
}

/// Checks a raw host key of type `kind` (`ssh-ed25519`, …) for host `name` against the
/// lines of a `known_hosts` file (OpenSSH sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"; markers
/// and hashed names are skipped).
pub(crate) fn check_host_key(
    known_hosts: &str,
    name: &str,
    kind: &str,
    raw: &[u8],
) -> HostKeyVerdict {
    let wanted = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut listed = false;
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(key_type), Some(key)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !hosts.split(',').any(|h| h == name) || key_type != kind {
            continue;
        }
        if key == wanted {
            return HostKeyVerdict::Match;
        }
        listed = true;
    }
    if listed {
        HostKeyVerdict::Mismatch
    } else {
        HostKeyVerdict::Unknown
    }
}
