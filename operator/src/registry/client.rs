//! The registry client: HTTP transport with auth, budget and retries, and the
//! operations built on it (digest by `HEAD`, index/platform selection, tag listing,
//! inspection, tag selection).
//!
//! Why not `oci_client::Client` for the transport: it has no retry or `429`
//! handling, no request budget, ignores the `Link` header when listing tags, cannot
//! report how many requests it issued, and its TLS settings (`accept_invalid_certificates`,
//! extra roots) apply to every registry at once. We keep its manifest types
//! (`OciImageIndex`, `OciImageManifest`) and media-type constants, and speak the OCI
//! distribution spec ourselves over `reqwest` — the same HTTP stack `oci-client` uses.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use oci_client::manifest::{
    OciImageIndex, OciImageManifest, IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LINK, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use tokio::sync::Mutex as AsyncMutex;
use tracing::{debug, warn};

use super::auth::{self, CachedToken, Challenge, CredentialStore, Credentials, TokenResponse};
use super::cache::{ContentCache, ScanCache};
use super::digest;
use super::inspect::{self, BaseAnnotations, ImageConfig, Inspection, PlatformManifest};
use super::limit::{self, Budget};
use super::platform::Platform;
use super::select::{CompiledSelection, SelectionStrategy};
use super::settings::{ClientSettings, RegistrySettings};
use super::tags::{self, TagPage};
use super::RegistryError;
use crate::reference::Reference;

/// The `Accept` header for manifests: OCI and Docker, index and image (OCI distribution
/// spec "Pulling manifests": clients SHOULD list every type they understand).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Number of requests issued, by kind, since the client was built. Retries count as
/// requests and are also counted in `retries`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestStats {
    /// `HEAD /v2/<name>/manifests/<ref>`.
    pub manifest_heads: u64,
    /// `GET /v2/<name>/manifests/<ref>`.
    pub manifest_gets: u64,
    /// `GET /v2/<name>/blobs/<digest>` (configs).
    pub blob_gets: u64,
    /// `GET /v2/<name>/tags/list` pages.
    pub tag_list_gets: u64,
    /// Token endpoint requests.
    pub token_gets: u64,
    /// `GET /v2/<name>/referrers/<digest>` pages (OCI distribution spec v1.1).
    pub referrers_gets: u64,
    /// Repeated attempts after a `429`, `5xx`, timeout or cut response.
    pub retries: u64,
}

impl RequestStats {
    /// All requests issued (retries are already included in the per-kind counts).
    pub fn total(&self) -> u64 {
        self.manifest_heads
            + self.manifest_gets
            + self.blob_gets
            + self.tag_list_gets
            + self.token_gets
            + self.referrers_gets
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    ManifestHead,
    ManifestGet,
    BlobGet,
    TagList,
    Token,
    Referrers,
}

#[derive(Debug, Default)]
struct Counters {
    by_kind: [AtomicU64; 6],
    retries: AtomicU64,
}

impl Counters {
    fn count(&self, kind: Kind) {
        self.by_kind[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RequestStats {
        let get = |k: Kind| self.by_kind[k as usize].load(Ordering::Relaxed);
        RequestStats {
            manifest_heads: get(Kind::ManifestHead),
            manifest_gets: get(Kind::ManifestGet),
            blob_gets: get(Kind::BlobGet),
            tag_list_gets: get(Kind::TagList),
            token_gets: get(Kind::Token),
            referrers_gets: get(Kind::Referrers),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// What a manifest `HEAD` told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// `Docker-Content-Digest` (or the hash of the body when the registry omits it).
    pub digest: String,
    /// `Content-Type`, without parameters.
    pub media_type: String,
}

/// A tag resolved to what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The reference asked for (normalized).
    pub reference: Reference,
    /// What the tag points at: index digest for multi-arch images, else manifest digest.
    pub digest: String,
    /// Media type of `digest`.
    pub media_type: String,
    /// For an index: the platform manifests (normalized platform, manifest digest).
    /// Empty for a single manifest.
    pub platforms: Vec<PlatformManifest>,
}

impl ResolvedImage {
    /// Whether `digest` names an index (OCI image index or Docker manifest list).
    pub fn is_index(&self) -> bool {
        is_index_media_type(&self.media_type)
    }

    /// The image-manifest digest for `platform`: the platform entry of an index, or
    /// the manifest itself for a single-manifest image (whatever its platform).
    ///
    /// # Errors
    /// [`RegistryError::PlatformNotFound`] when the index has no such platform.
    pub fn manifest_digest_for(&self, platform: &Platform) -> Result<&str, RegistryError> {
        if !self.is_index() {
            return Ok(&self.digest);
        }
        let wanted = platform.to_string();
        self.platforms
            .iter()
            .find(|p| p.platform == wanted)
            .map(|p| p.digest.as_str())
            .ok_or_else(|| RegistryError::PlatformNotFound {
                reference: self.reference.to_string(),
                platform: wanted,
                available: self
                    .platforms
                    .iter()
                    .map(|p| p.platform.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// One image found by a tag selection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelectedImage {
    /// The tag.
    pub tag: String,
    /// What the tag points at now (index or manifest digest).
    pub digest: String,
    /// For `NewestBuild`: the config `created` of the selected platform's manifest.
    pub created: Option<String>,
}

fn is_index_media_type(media_type: &str) -> bool {
    media_type == OCI_IMAGE_INDEX_MEDIA_TYPE || media_type == IMAGE_MANIFEST_LIST_MEDIA_TYPE
}

fn is_manifest_media_type(media_type: &str) -> bool {
    is_index_media_type(media_type)
        || media_type == OCI_IMAGE_MEDIA_TYPE
        || media_type == IMAGE_MANIFEST_MEDIA_TYPE
}

/// A fully read response.
struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The media type of `Content-Type`, parameters (`; charset=…`) dropped
    /// (RFC 9110 §8.3.1: `type/subtype *( OWS ";" OWS parameter )`).
    fn media_type(&self) -> Option<String> {
        self.header(CONTENT_TYPE)
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
    }
}

#[derive(Debug, Default)]
struct AuthState {
    /// The registry asked for basic auth.
    basic: bool,
    /// The registry asked for bearer tokens from this realm and service.
    bearer: Option<(String, Option<String>)>,
    /// Tokens by scope (`repository:a/b:pull`).
    tokens: HashMap<String, CachedToken>,
}

/// One host requests go to (a registry or a mirror).
#[derive(Debug)]
struct Host {
    name: String,
    base: String,
    settings: RegistrySettings,
    http: reqwest::Client,
    budget: Budget,
    credentials: Credentials,
    auth: AsyncMutex<AuthState>,
}

#[derive(Debug)]
struct Inner {
    settings: ClientSettings,
    credentials: CredentialStore,
    hosts: std::sync::Mutex<HashMap<String, Arc<Host>>>,
    content: ContentCache,
    tags: ScanCache<ManifestHead>,
    counters: Counters,
}

/// An OCI distribution client with per-registry settings, credentials, request budget,
/// retries, a digest-keyed content cache and a per-scan tag cache. Cheap to clone
/// (shared state behind an `Arc`).
#[derive(Debug, Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

/// Tag list pages followed at most (a guard against registries whose `Link` loops).
const MAX_TAG_PAGES: usize = 10_000;

/// Referrers pages followed at most (a guard against a `Link` that loops).
const MAX_REFERRER_PAGES: usize = 100;

/// Entries kept in the digest-keyed content cache (manifests and configs, each a few KiB).
const CONTENT_CACHE_ENTRIES: usize = 100_000;

impl RegistryClient {
    /// A client with these settings and credentials.
    pub fn new(settings: ClientSettings, credentials: CredentialStore) -> Self {
        Self::with_cache(
            settings,
            credentials,
            ContentCache::new(CONTENT_CACHE_ENTRIES),
        )
    }

    /// A client whose digest-keyed content cache (manifests, configs) is also kept in
    /// `dir` (`dir/sha256/<hex>`, verified against the digest when read), so a
    /// restarted process costs no `GET` of a manifest it read before — only the `HEAD`
    /// that tells the tag still points at it.
    pub fn with_content_dir(
        settings: ClientSettings,
        credentials: CredentialStore,
        dir: impl Into<std::path::PathBuf>,
    ) -> Self {
        Self::with_cache(
            settings,
            credentials,
            ContentCache::persisted(CONTENT_CACHE_ENTRIES, dir.into()),
        )
    }

    fn with_cache(
        settings: ClientSettings,
        credentials: CredentialStore,
        content: ContentCache,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                credentials,
                hosts: std::sync::Mutex::new(HashMap::new()),
                content,
                tags: ScanCache::default(),
                counters: Counters::default(),
            }),
        }
    }

    /// Starts a new scan: forgets tag → digest answers (tags are mutable), keeps
    /// content by digest and tokens.
    pub fn new_scan(&self) {
        self.inner.tags.clear();
    }

    /// Requests issued so far.
    pub fn stats(&self) -> RequestStats {
        self.inner.counters.snapshot()
    }

    fn host(&self, name: &str) -> Result<Arc<Host>, RegistryError> {
        let mut hosts = self
            .inner
            .hosts
            .lock()
            .map_err(|_| RegistryError::Transport {
                registry: name.to_owned(),
                reason: "client state poisoned by a panicked task".to_owned(),
            })?;
        if let Some(host) = hosts.get(name) {
            return Ok(host.clone());
        }
        let settings = self.inner.settings.for_host(name).clone();
        let host = Arc::new(build_host(
            name,
            settings,
            self.inner.credentials.get(name),
        )?);
        hosts.insert(name.to_owned(), host.clone());
        Ok(host)
    }

    /// Mirrors first, then the registry itself.
    fn read_hosts(&self, registry: &str) -> Result<Vec<Arc<Host>>, RegistryError> {
        let mirrors = self.inner.settings.for_host(registry).mirrors.clone();
        let mut hosts = Vec::with_capacity(mirrors.len() + 1);
        for mirror in &mirrors {
            hosts.push(self.host(mirror)?);
        }
        hosts.push(self.host(registry)?);
        Ok(hosts)
    }

    /// Sends one request with retries: waits for the budget, retries `429` (honouring
    /// `Retry-After`), `5xx`, timeouts and cut bodies with jittered exponential backoff,
    /// up to `maxAttempts`. Returns any other response, fully read.
    /// Runs `attempt` against the hosts serving reads of `reference`'s registry, mirrors
    /// first, and returns the first success. A failing mirror is logged and the next
    /// host tried; when every host fails, the last (the registry's own) error is
    /// returned, so a mirror outage never hides what the registry itself said.
    ///
    /// Source: containerd/Docker `registry-mirrors` semantics (mirrors are tried in
    /// order, the upstream registry last).
    async fn on_read_hosts<T, F, Fut>(
        &self,
        reference: &Reference,
        mut attempt: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut(Arc<Host>) -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let hosts = self.read_hosts(reference.registry())?;
        let count = hosts.len();
        let mut last = None;
        for (i, host) in hosts.into_iter().enumerate() {
            let name = host.name.clone();
            match attempt(host).await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    if i + 1 < count {
                        warn!(mirror = %name, registry = %reference.registry(), error = %e, "mirror failed, falling back");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::NotFound {
            registry: reference.registry().to_owned(),
            what: format!("repository {}", reference.repository()),
        }))
    }

    async fn execute(
        &self,
        host: &Host,
        kind: Kind,
        build: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
    ) -> Result<Fetched, RegistryError> {
        let max_attempts = host.settings.max_attempts.max(1);
        let base = Duration::from_millis(host.settings.backoff_base_ms);
        let cap = Duration::from_millis(host.settings.backoff_max_ms);
        let mut last = String::new();
        let mut last_was_429 = false;
        for attempt in 1..=max_attempts {
            if attempt > 1 {
                self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            let permit = host.budget.acquire().await;
            self.inner.counters.count(kind);
            let outcome = read_response(build()).await;
            drop(permit);
            let wait = match outcome {
                Ok(fetched) if fetched.status == StatusCode::TOO_MANY_REQUESTS => {
                    last_was_429 = true;
                    last = "HTTP 429".to_owned();
                    limit::retry_after(fetched.header(RETRY_AFTER))
                        .map_or_else(|| limit::backoff(attempt, base, cap), |d| d.min(cap))
                }
                Ok(fetched) if fetched.status.is_server_error() => {
                    last_was_429 = false;
                    last = format!("HTTP {}", fetched.status.as_u16());
                    limit::backoff(attempt, base, cap)
                }
                Ok(fetched) => return Ok(fetched),
                Err(e) if e.is_builder() => {
                    return Err(RegistryError::Transport {
                        registry: host.name.clone(),
                        reason: error_chain(&e),
                    })
                }
                Err(e) => {
                    last_was_429 = false;
                    last = if e.is_timeout() {
                        format!("timed out after {} ms", host.settings.timeout_ms)
                    } else {
                        error_chain(&e)
                    };
                    limit::backoff(attempt, base, cap)
                }
            };
            if attempt < max_attempts {
                warn!(registry = %host.name, attempt, max_attempts, wait_ms = wait.as_millis() as u64, reason = %last, "retrying registry request");
                tokio::time::sleep(wait).await;
            }
        }
        if last_was_429 {
            Err(RegistryError::RateLimited {
                registry: host.name.clone(),
                attempts: max_attempts,
                max_attempts,
            })
        } else {
            Err(RegistryError::Unavailable {
                registry: host.name.clone(),
                attempts: max_attempts,
                max_attempts,
                last,
            })
        }
    }

    /// [`Self::execute`] plus authentication: presents a cached token or basic
    /// credentials, and on a `401` answers the challenge once (Docker token auth spec).
    async fn request(
        &self,
        host: &Host,
        repository: &str,
        kind: Kind,
        method: Method,
        url: &str,
        accept: Option<&str>,
    ) -> Result<Fetched, RegistryError> {
        self.request_with(host, repository, kind, method, url, accept, None)
            .await
    }

    /// [`Self::request`] with a body (`Content-Type`, bytes); a request with a body asks
    /// for a `pull,push` token.
    #[allow(clippy::too_many_arguments)]
    async fn request_with(
        &self,
        host: &Host,
        repository: &str,
        kind: Kind,
        method: Method,
        url: &str,
        accept: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> Result<Fetched, RegistryError> {
        let scope = if body.is_some() {
            format!("repository:{repository}:pull,push")
        } else {
            format!("repository:{repository}:pull")
        };
        for round in 0..2 {
            let authorization = self.authorization(host, &scope).await?;
            let build = || {
                let mut rb = host.http.request(method.clone(), url);
                if let Some(accept) = accept {
                    rb = rb.header(ACCEPT, accept);
                }
                if let Some((content_type, bytes)) = body {
                    rb = rb
                        .header(reqwest::header::CONTENT_TYPE, content_type)
                        .body(bytes.to_vec());
                }
                if let Some(value) = &authorization {
                    rb = rb.header(AUTHORIZATION, value);
                }
                rb
            };
            let fetched = self.execute(host, kind, &build).await?;
            let status = fetched.status;
            if status == StatusCode::UNAUTHORIZED && round == 0 {
                self.answer_challenge(
                    host,
                    &scope,
                    fetched.header(WWW_AUTHENTICATE),
                    authorization.as_deref(),
                )
                .await?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(RegistryError::Unauthorized {
                    registry: host.name.clone(),
                    repository: repository.to_owned(),
                    status: status.as_u16(),
                });
            }
            return Ok(fetched);
        }
        Err(RegistryError::Unauthorized {
            registry: host.name.clone(),
            repository: repository.to_owned(),
            status: StatusCode::UNAUTHORIZED.as_u16(),
        })
    }

    /// The `Authorization` value to send, fetching a token first when the registry
    /// uses bearer auth and we hold no fresh token for `scope`. The lock is held while
    /// fetching so concurrent requests share one token request.
    async fn authorization(
        &self,
        host: &Host,
        scope: &str,
    ) -> Result<Option<String>, RegistryError> {
        let mut state = host.auth.lock().await;
        let now = std::time::Instant::now();
        if let Some(token) = state.tokens.get(scope).filter(|t| t.is_fresh(now)) {
            return Ok(Some(format!("Bearer {}", token.token)));
        }
        if let Some((realm, service)) = state.bearer.clone() {
            let token = self
                .fetch_token(host, &realm, service.as_deref(), scope)
                .await?;
            let value = format!("Bearer {}", token.token);
            state.tokens.insert(scope.to_owned(), token);
            return Ok(Some(value));
        }
        Ok(if state.basic {
            host.credentials.basic_header()
        } else {
            None
        })
    }

    async fn answer_challenge(
        &self,
        host: &Host,
        scope: &str,
        header: Option<&str>,
        sent: Option<&str>,
    ) -> Result<(), RegistryError> {
        let challenge = header.and_then(auth::parse_challenge).ok_or_else(|| {
            RegistryError::UnsupportedChallenge {
                registry: host.name.clone(),
                challenge: header
                    .map(|h| h.split_whitespace().next().unwrap_or_default().to_owned())
                    .unwrap_or_else(|| "no WWW-Authenticate header".to_owned()),
            }
        })?;
        let mut state = host.auth.lock().await;
        match challenge {
            Challenge::Basic => {
                if host.credentials == Credentials::Anonymous {
                    return Err(RegistryError::Unauthorized {
                        registry: host.name.clone(),
                        repository: repository_of_scope(scope).to_owned(),
                        status: StatusCode::UNAUTHORIZED.as_u16(),
                    });
                }
                state.basic = true;
            }
            Challenge::Bearer { realm, service, .. } => {
                // The challenge's own scope may be narrower or broader; ours is what
                // this request needs, which the token spec lets the client choose.
                // Drop the cached token only if it is the one just rejected: a
                // concurrent request may already have fetched a fresh one.
                let rejected = state
                    .tokens
                    .get(scope)
                    .is_some_and(|t| sent == Some(format!("Bearer {}", t.token).as_str()));
                if rejected {
                    state.tokens.remove(scope);
                }
                state.bearer = Some((realm, service));
                debug!(registry = %host.name, scope, "registry asked for a bearer token");
            }
        }
        Ok(())
    }

    async fn fetch_token(
        &self,
        host: &Host,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<CachedToken, RegistryError> {
        let mut url =
            reqwest::Url::parse(realm).map_err(|e| RegistryError::UnsupportedChallenge {
                registry: host.name.clone(),
                challenge: format!("realm is not a URL: {e}"),
            })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let basic = host.credentials.basic_header();
        // An identity token is an OAuth2 refresh token: Docker's "OAuth2 Token
        // Authentication" exchanges it by POST (grant_type=refresh_token).
        let refresh_form = match &host.credentials {
            Credentials::IdentityToken { token } => {
                let mut form = reqwest::Url::parse("http://form.invalid/").map_err(|e| {
                    RegistryError::Transport {
                        registry: host.name.clone(),
                        reason: e.to_string(),
                    }
                })?;
                {
                    let mut pairs = form.query_pairs_mut();
                    pairs
                        .append_pair("grant_type", "refresh_token")
                        .append_pair("refresh_token", token)
                        .append_pair("client_id", "image-factory")
                        .append_pair("scope", scope);
                    if let Some(service) = service {
                        pairs.append_pair("service", service);
                    }
                }
                Some(form.query().unwrap_or_default().to_owned())
            }
            _ => None,
        };
        let build = || match &refresh_form {
            Some(form) => host
                .http
                .post(realm)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.clone()),
            None => {
                let rb = host.http.get(url.clone());
                match &basic {
                    Some(value) => rb.header(AUTHORIZATION, value),
                    None => rb,
                }
            }
        };
        let fetched = self.execute(host, Kind::Token, &build).await?;
        if !fetched.status.is_success() {
            let status = fetched.status.as_u16();
            return Err(if status == 401 || status == 403 {
                RegistryError::Unauthorized {
                    registry: host.name.clone(),
                    repository: repository_of_scope(scope).to_owned(),
                    status,
                }
            } else {
                RegistryError::UnexpectedStatus {
                    registry: host.name.clone(),
                    method: "GET".to_owned(),
                    path: url.path().to_owned(),
                    status,
                }
            });
        }
        let response: TokenResponse =
            serde_json::from_slice(&fetched.body).map_err(|e| RegistryError::InvalidDocument {
                registry: host.name.clone(),
                what: "token response",
                reason: e.to_string(),
            })?;
        let token = response
            .token
            .or(response.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::InvalidDocument {
                registry: host.name.clone(),
                what: "token response",
                reason: "neither token nor access_token".to_owned(),
            })?;
        let lifetime = response
            .expires_in
            .map_or(auth::DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        Ok(CachedToken::new(token, lifetime, std::time::Instant::now()))
    }

    /// The digest a reference points at, by `HEAD` on the manifest
    /// (`Docker-Content-Digest`), falling back to `GET` and hashing when the registry
    /// omits the header. Answers are reused until [`Self::new_scan`]. A reference
    /// pinned by digest sends no `HEAD`: its manifest is read once by digest and cached.
    ///
    /// Source: OCI distribution spec "Checking if content exists in the registry" and
    /// "Pulling manifests" (`Docker-Content-Digest`).
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown tag; transport, auth and retry errors.
    pub async fn head_manifest(
        &self,
        reference: &Reference,
    ) -> Result<ManifestHead, RegistryError> {
        let key = reference.to_string();
        if let Some(cached) = self.inner.tags.get(&key) {
            return Ok(cached);
        }
        if let Some(digest) = reference.digest() {
            // Pinned: the content is immutable, so read it (cached across scans) instead
            // of asking the registry what the digest is.
            let bytes = self.content(reference, digest, Kind::ManifestGet).await?;
            return Ok(ManifestHead {
                digest: digest.to_owned(),
                media_type: sniff_media_type(&bytes),
            });
        }
        let target = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_owned();
        let target = &target;
        let head = self
            .on_read_hosts(reference, |host| async move {
                let url = format!(
                    "{}/v2/{}/manifests/{}",
                    host.base,
                    reference.repository(),
                    target
                );
                let f = self
                    .request(
                        &host,
                        reference.repository(),
                        Kind::ManifestHead,
                        Method::HEAD,
                        &url,
                        Some(MANIFEST_ACCEPT),
                    )
                    .await?;
                if f.status.is_success() {
                    self.head_answer(&host, reference, &url, &f).await
                } else if f.status == StatusCode::NOT_FOUND {
                    Err(RegistryError::NotFound {
                        registry: host.name.clone(),
                        what: format!("manifest {}:{}", reference.repository(), target),
                    })
                } else {
                    Err(RegistryError::UnexpectedStatus {
                        registry: host.name.clone(),
                        method: "HEAD".to_owned(),
                        path: format!("/v2/{}/manifests/{}", reference.repository(), target),
                        status: f.status.as_u16(),
                    })
                }
            })
            .await?;
        self.inner.tags.put(key, head.clone());
        Ok(head)
    }

    async fn head_answer(
        &self,
        host: &Host,
        reference: &Reference,
        url: &str,
        fetched: &Fetched,
    ) -> Result<ManifestHead, RegistryError> {
        let media_type = fetched.media_type().unwrap_or_default();
        if let Some(digest) = fetched.header("docker-content-digest") {
            return Ok(ManifestHead {
                digest: digest.trim().to_owned(),
                media_type,
            });
        }
        if let Some(digest) = reference.digest() {
            return Ok(ManifestHead {
                digest: digest.to_owned(),
                media_type,
            });
        }
        debug!(registry = %host.name, "no Docker-Content-Digest on HEAD; hashing the manifest");
        let got = self
            .request(
                host,
                reference.repository(),
                Kind::ManifestGet,
                Method::GET,
                url,
                Some(MANIFEST_ACCEPT),
            )
            .await?;
        if !got.status.is_success() {
            return Err(RegistryError::UnexpectedStatus {
                registry: host.name.clone(),
                method: "GET".to_owned(),
                path: url.to_owned(),
                status: got.status.as_u16(),
            });
        }
        let digest = digest::sha256_digest(&got.body);
        let media_type = got.media_type().unwrap_or(media_type);
        self.inner.content.put(&digest, Arc::new(got.body));
        Ok(ManifestHead { digest, media_type })
    }

    /// Immutable content (`manifests/<digest>` or `blobs/<digest>`), from the cache or
    /// fetched (mirrors first) and verified against its digest.
    async fn content(
        &self,
        reference: &Reference,
        digest: &str,
        kind: Kind,
    ) -> Result<Arc<Vec<u8>>, RegistryError> {
        if let Some(bytes) = self.inner.content.get(digest) {
            return Ok(bytes);
        }
        let (segment, accept) = match kind {
            Kind::BlobGet => ("blobs", None),
            _ => ("manifests", Some(MANIFEST_ACCEPT)),
        };
        let bytes = self
            .on_read_hosts(reference, |host| async move {
                let url = format!(
                    "{}/v2/{}/{segment}/{digest}",
                    host.base,
                    reference.repository()
                );
                let f = self
                    .request(
                        &host,
                        reference.repository(),
                        kind,
                        Method::GET,
                        &url,
                        accept,
                    )
                    .await?;
                if f.status.is_success() {
                    if digest::matches(digest, &f.body) {
                        Ok(f.body)
                    } else {
                        Err(RegistryError::DigestMismatch {
                            registry: host.name.clone(),
                            expected: digest.to_owned(),
                            actual: digest::sha256_digest(&f.body),
                        })
                    }
                } else if f.status == StatusCode::NOT_FOUND {
                    Err(RegistryError::NotFound {
                        registry: host.name.clone(),
                        what: format!("{segment} {}@{digest}", reference.repository()),
                    })
                } else {
                    Err(RegistryError::UnexpectedStatus {
                        registry: host.name.clone(),
                        method: "GET".to_owned(),
                        path: format!("/v2/{}/{segment}/{digest}", reference.repository()),
                        status: f.status.as_u16(),
                    })
                }
            })
            .await?;
        let bytes = Arc::new(bytes);
        self.inner.content.put(digest, bytes.clone());
        Ok(bytes)
    }

    /// The manifest (or index) `digest` of `reference`'s repository, as stored: its bytes
    /// (verified against the digest) and media type (from the document's `mediaType`).
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::DigestMismatch`], transport and
    /// auth errors.
    pub async fn manifest(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<(Arc<Vec<u8>>, String), RegistryError> {
        let bytes = self.content(reference, digest, Kind::ManifestGet).await?;
        let media_type = sniff_media_type(&bytes);
        Ok((bytes, media_type))
    }

    /// Points `reference`'s tag at the manifest `digest` already in its repository: the
    /// manifest is read by digest and `PUT` to `/v2/<repository>/manifests/<tag>`
    /// unchanged, so the tag's digest becomes exactly `digest` (OCI distribution spec
    /// "Pushing Manifests"; a push token, `pull,push`, is requested).
    ///
    /// # Errors
    /// Those of [`Self::manifest`]; [`RegistryError::Unauthorized`] without push rights;
    /// [`RegistryError::UnexpectedStatus`] when the registry refuses the manifest;
    /// [`RegistryError::DigestMismatch`] when it stored other bytes than sent.
    pub async fn tag_manifest(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<(), RegistryError> {
        let tag = reference.tag().unwrap_or("latest");
        let (bytes, media_type) = self.manifest(reference, digest).await?;
        let host = self.host(reference.registry())?;
        let url = format!(
            "{}/v2/{}/manifests/{}",
            host.base,
            reference.repository(),
            tag
        );
        let f = self
            .request_with(
                &host,
                reference.repository(),
                Kind::ManifestGet,
                Method::PUT,
                &url,
                None,
                Some((media_type.as_str(), bytes.as_slice())),
            )
            .await?;
        if !f.status.is_success() {
            return Err(RegistryError::UnexpectedStatus {
                registry: host.name.clone(),
                method: "PUT".to_owned(),
                path: format!("/v2/{}/manifests/{tag}", reference.repository()),
                status: f.status.as_u16(),
            });
        }
        if let Some(stored) = f.header("docker-content-digest") {
            if stored.trim() != digest {
                return Err(RegistryError::DigestMismatch {
                    registry: host.name.clone(),
                    expected: digest.to_owned(),
                    actual: stored.trim().to_owned(),
                });
            }
        }
        self.inner.tags.clear();
        Ok(())
    }

    /// The blob `digest` of `reference`'s repository (a config, a signature payload):
    /// its bytes, verified against the digest and cached by it, so a blob is fetched
    /// once per process (or once ever, with [`Self::with_content_dir`]).
    ///
    /// Source: OCI distribution spec "Pulling blobs".
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::DigestMismatch`], transport and
    /// auth errors.
    pub async fn blob(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<Arc<Vec<u8>>, RegistryError> {
        self.content(reference, digest, Kind::BlobGet).await
    }

    /// The manifests that name `digest` as their `subject`, from the OCI 1.1 referrers
    /// API (`GET /v2/<name>/referrers/<digest>[?artifactType=…]`), every page (`Link`)
    /// merged into one index; `None` when the registry does not offer the API
    /// (`404`/`405`: the spec forbids a `404` from a registry that supports it).
    /// `artifact_type` is sent as the filter; a registry that ignores it is filtered
    /// here too, so the answer only holds descriptors of that type.
    ///
    /// Not cached: the set of referrers of a digest grows.
    ///
    /// Source: OCI distribution spec v1.1 "Listing Referrers".
    ///
    /// # Errors
    /// [`RegistryError::InvalidDocument`] for a body that is not an image index;
    /// [`RegistryError::UnexpectedStatus`], transport and auth errors.
    pub async fn referrers(
        &self,
        reference: &Reference,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<oci_client::manifest::ImageIndexEntry>>, RegistryError> {
        let host = self.host(reference.registry())?;
        let repo = reference.repository();
        let mut url = format!("{}/v2/{repo}/referrers/{digest}", host.base);
        if let Some(t) = artifact_type {
            url.push_str("?artifactType=");
            url.push_str(&t.replace('+', "%2B"));
        }
        let mut entries = Vec::new();
        for _ in 0..MAX_REFERRER_PAGES {
            let f = self
                .request(
                    &host,
                    repo,
                    Kind::Referrers,
                    Method::GET,
                    &url,
                    Some(OCI_IMAGE_INDEX_MEDIA_TYPE),
                )
                .await?;
            if f.status == StatusCode::NOT_FOUND || f.status == StatusCode::METHOD_NOT_ALLOWED {
                return Ok(None);
            }
            if !f.status.is_success() {
                return Err(RegistryError::UnexpectedStatus {
                    registry: host.name.clone(),
                    method: "GET".to_owned(),
                    path: format!("/v2/{repo}/referrers/{digest}"),
                    status: f.status.as_u16(),
                });
            }
            let index: OciImageIndex = serde_json::from_slice(&f.body)
                .map_err(|e| invalid(reference, "referrers index", &e))?;
            entries.extend(
                index.manifests.into_iter().filter(|e| {
                    artifact_type.is_none_or(|t| e.artifact_type.as_deref() == Some(t))
                }),
            );
            match f.header(LINK).and_then(tags::next_link) {
                Some(next) if next.starts_with('/') => url = format!("{}{next}", host.base),
                Some(next) => url = next,
                None => return Ok(Some(entries)),
            }
        }
        warn!(registry = %host.name, repository = repo, "referrers listing stopped at the page limit");
        Ok(Some(entries))
    }

    /// Resolves a reference: the digest it points at (one `HEAD`), and for an index its
    /// platform manifests (the index is fetched by digest once and then cached, so a
    /// warm scan costs exactly one `HEAD`).
    ///
    /// # Errors
    /// As [`Self::head_manifest`], plus [`RegistryError::InvalidDocument`] for a bad index.
    pub async fn resolve(&self, reference: &Reference) -> Result<ResolvedImage, RegistryError> {
        let head = self.head_manifest(reference).await?;
        let mut media_type = head.media_type.clone();
        if !is_manifest_media_type(&media_type) {
            // Unknown or missing Content-Type: read the manifest (cached by digest).
            let bytes = self
                .content(reference, &head.digest, Kind::ManifestGet)
                .await?;
            media_type = sniff_media_type(&bytes);
        }
        let platforms = if is_index_media_type(&media_type) {
            let bytes = self
                .content(reference, &head.digest, Kind::ManifestGet)
                .await?;
            let index: OciImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| invalid(reference, "index", &e))?;
            index
                .manifests
                .iter()
                .filter_map(|entry| {
                    let p = entry.platform.as_ref()?;
                    let platform = Platform::new(
                        &p.os.to_string(),
                        &p.architecture.to_string(),
                        p.variant.as_deref(),
                    );
                    Some(PlatformManifest {
                        platform: platform.to_string(),
                        digest: entry.digest.clone(),
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(ResolvedImage {
            reference: reference.clone(),
            digest: head.digest,
            media_type,
            platforms,
        })
    }

    /// Resolves many references concurrently (bounded per registry by
    /// `maxConcurrency`), answers in input order.
    pub async fn resolve_all(
        &self,
        references: &[Reference],
    ) -> Vec<Result<ResolvedImage, RegistryError>> {
        let mut set = tokio::task::JoinSet::new();
        for (i, reference) in references.iter().cloned().enumerate() {
            let client = self.clone();
            set.spawn(async move { (i, client.resolve(&reference).await) });
        }
        let mut out: Vec<Option<Result<ResolvedImage, RegistryError>>> =
            (0..references.len()).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            if let Ok((i, result)) = joined {
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(result);
                }
            }
        }
        out.into_iter()
            .zip(references)
            .map(|(r, reference)| {
                r.unwrap_or_else(|| {
                    Err(RegistryError::Transport {
                        registry: reference.registry().to_owned(),
                        reason: "resolve task panicked".to_owned(),
                    })
                })
            })
            .collect()
    }

    /// The image manifest for `platform` (index entry, or the manifest itself).
    async fn image_manifest(
        &self,
        resolved: &ResolvedImage,
        platform: &Platform,
    ) -> Result<(String, OciImageManifest), RegistryError> {
        let digest = resolved.manifest_digest_for(platform)?.to_owned();
        let bytes = self
            .content(&resolved.reference, &digest, Kind::ManifestGet)
            .await?;
        let manifest: OciImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(&resolved.reference, "manifest", &e))?;
        Ok((digest, manifest))
    }

    /// Inspects an image: digest, platforms, and for `platform` (default `linux/amd64`)
    /// the config `created` and labels, base annotations and layers. Manifests and
    /// configs come from the digest cache when seen before.
    ///
    /// # Errors
    /// Those of [`Self::resolve`], [`RegistryError::PlatformNotFound`], and
    /// [`RegistryError::InvalidDocument`] for unparsable manifests or configs.
    pub async fn inspect(
        &self,
        reference: &Reference,
        platform: Option<&Platform>,
    ) -> Result<Inspection, RegistryError> {
        let resolved = self.resolve(reference).await?;
        let platform = platform.cloned().unwrap_or_else(Platform::linux_amd64);
        let (manifest_digest, manifest) = self.image_manifest(&resolved, &platform).await?;
        let config_bytes = self
            .content(reference, &manifest.config.digest, Kind::BlobGet)
            .await?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| invalid(reference, "config", &e))?;
        let annotations = manifest.annotations.clone().unwrap_or_default();
        Ok(Inspection {
            reference: reference.to_string(),
            digest: resolved.digest.clone(),
            media_type: resolved.media_type.clone(),
            platform: resolved.is_index().then(|| platform.to_string()),
            platforms: resolved.platforms,
            manifest_digest,
            created: config.created,
            labels: config
                .config
                .and_then(|c| c.labels)
                .unwrap_or_default()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            base: BaseAnnotations {
                name: annotations.get(inspect::BASE_NAME_ANNOTATION).cloned(),
                digest: annotations.get(inspect::BASE_DIGEST_ANNOTATION).cloned(),
            },
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            stale: None,
            signature: None,
        })
    }

    /// Whether `image` is built on the current digest of `base` (see
    /// [`inspect::staleness`]); sets `stale` on the returned image inspection.
    ///
    /// # Errors
    /// Those of [`Self::inspect`] for either reference.
    pub async fn inspect_against_base(
        &self,
        image: &Reference,
        base: &Reference,
        platform: Option<&Platform>,
    ) -> Result<(Inspection, Inspection), RegistryError> {
        let mut image = self.inspect(image, platform).await?;
        let base = self.inspect(base, platform).await?;
        let (stale, evidence) = inspect::staleness(&image, &base);
        debug!(image = %image.reference, base = %base.reference, stale, ?evidence, "staleness decided");
        image.stale = Some(stale);
        Ok((image, base))
    }

    /// All tags of a repository, following pagination: `?n=<pageSize>`, then the
    /// `Link: <…>; rel="next"` header, or `last=<last tag>` when a full page came
    /// without a `Link` (OCI distribution spec "Listing Tags").
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown repository; transport, auth and retry errors.
    pub async fn list_tags(&self, repository: &Reference) -> Result<Vec<String>, RegistryError> {
        let host = self.host(repository.registry())?;
        let page_size = host.settings.page_size.max(1);
        let repo = repository.repository();
        let mut url = format!("{}/v2/{repo}/tags/list?n={page_size}", host.base);
        let mut all = Vec::new();
        let mut pages = 0usize;
        loop {
            let fetched = self
                .request(&host, repo, Kind::TagList, Method::GET, &url, None)
                .await?;
            if fetched.status == StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound {
                    registry: host.name.clone(),
                    what: format!("repository {repo}"),
                });
            }
            if !fetched.status.is_success() {
                return Err(RegistryError::UnexpectedStatus {
                    registry: host.name.clone(),
                    method: "GET".to_owned(),
                    path: format!("/v2/{repo}/tags/list"),
                    status: fetched.status.as_u16(),
                });
            }
            let page: TagPage = serde_json::from_slice(&fetched.body)
                .map_err(|e| invalid(repository, "tag list", &e))?;
            let page_tags = page.tags.unwrap_or_default();
            let count = page_tags.len();
            let last = page_tags.last().cloned();
            let previous_last = all.last().cloned();
            all.extend(page_tags);
            let next = fetched.header(LINK).and_then(tags::next_link);
            url = match (next, last) {
                (Some(next), _) if next.starts_with('/') => format!("{}{next}", host.base),
                (Some(next), _) => next,
                // No Link but a full page: ask for the rest with `last`, unless the
                // registry ignored `n` (distribution 2.x sends every tag at once) or
                // made no progress.
                (None, Some(last))
                    if count == page_size && previous_last.as_ref() != Some(&last) =>
                {
                    let mut u = reqwest::Url::parse(&format!("{}/v2/{repo}/tags/list", host.base))
                        .map_err(|e| RegistryError::Transport {
                            registry: host.name.clone(),
                            reason: e.to_string(),
                        })?;
                    u.query_pairs_mut()
                        .append_pair("n", &page_size.to_string())
                        .append_pair("last", &last);
                    u.to_string()
                }
                _ => break,
            };
            pages += 1;
            if pages > MAX_TAG_PAGES {
                warn!(registry = %host.name, repository = repo, pages, "tag listing stopped at the page limit");
                break;
            }
        }
        Ok(all)
    }

    /// Applies a Kargo tag selection to a repository and returns the discovered images,
    /// best first, at most `discoveryLimit`, each with the digest its tag points at now.
    ///
    /// - `Digest`: one `HEAD` of the followed tag (`constraint`); no listing.
    /// - `SemVer` / `Lexical`: list tags, order them, `HEAD` them a `discoveryLimit`
    ///   chunk at a time until enough are found.
    /// - `NewestBuild`: list tags, `HEAD` each admitted tag, then read `created` once per
    ///   distinct digest (manifest and config by digest, cached across scans), so a
    ///   warm scan costs the listing plus one `HEAD` per admitted tag.
    ///
    /// With the selection's `platform` (Kargo's `platform`, `os/arch[/variant]`), images
    /// that do not offer it are skipped: an index must list it, a single manifest's
    /// config must name it. Without it, every image is kept and `NewestBuild` reads
    /// `created` from the `linux/amd64` manifest of an index. The platform is part of
    /// the selection (not a separate argument) so the watcher applies exactly the
    /// subscription written into the Warehouse.
    ///
    /// # Errors
    /// Those of [`Self::list_tags`] and [`Self::resolve`].
    pub async fn select(
        &self,
        repository: &Reference,
        selection: &CompiledSelection,
    ) -> Result<Vec<SelectedImage>, RegistryError> {
        let platform = selection.platform();
        let tagged = |tag: &str| repository.without_digest().with_tag(tag);
        let limit = selection.limit();
        let ordered: Vec<String> = match selection.strategy() {
            SelectionStrategy::Digest => {
                vec![selection.digest_tag().unwrap_or("latest").to_owned()]
            }
            SelectionStrategy::SemVer => {
                selection.ordered_semver(&self.list_tags(repository).await?)
            }
            SelectionStrategy::Lexical => {
                selection.ordered_lexical(&self.list_tags(repository).await?)
            }
            SelectionStrategy::NewestBuild => {
                let all = self.list_tags(repository).await?;
                return self
                    .select_newest_build(repository, selection, &all, platform)
                    .await;
            }
        };
        // Resolve in chunks of `discoveryLimit`, dropping images without the platform,
        // until enough are found: the usual case costs one chunk of HEADs.
        let mut found = Vec::with_capacity(limit.min(ordered.len()));
        for chunk in ordered.chunks(limit.max(1)) {
            let references: Vec<Reference> = chunk.iter().map(|t| tagged(t)).collect();
            for (tag, result) in chunk.iter().zip(self.resolve_all(&references).await) {
                let image = result?;
                if let Some(platform) = platform {
                    if !self.offers_platform(&image, platform).await? {
                        debug!(image = %image.reference, %platform, "skipped: platform not offered");
                        continue;
                    }
                }
                found.push(SelectedImage {
                    tag: tag.clone(),
                    digest: image.digest,
                    created: None,
                });
                if found.len() == limit {
                    return Ok(found);
                }
            }
        }
        Ok(found)
    }

    async fn select_newest_build(
        &self,
        repository: &Reference,
        selection: &CompiledSelection,
        all: &[String],
        platform: Option<&Platform>,
    ) -> Result<Vec<SelectedImage>, RegistryError> {
        let admitted: Vec<Reference> = selection
            .admitted(all)
            .into_iter()
            .map(|t| repository.without_digest().with_tag(t))
            .collect();
        let wanted = platform.cloned().unwrap_or_else(Platform::linux_amd64);
        let resolved = self.resolve_all(&admitted).await;
        // One metadata read per distinct digest; None = platform not offered.
        let mut by_digest: HashMap<String, Option<Option<String>>> = HashMap::new();
        let mut dated = Vec::with_capacity(resolved.len());
        let mut digests = HashMap::new();
        for (reference, result) in admitted.iter().zip(resolved) {
            let image = result?;
            let info = match by_digest.get(&image.digest) {
                Some(info) => info.clone(),
                None => {
                    let info = match self.platform_config(&image, &wanted).await? {
                        Some(config) if platform.is_none() || config_matches(&config, &wanted) => {
                            Some(config.created)
                        }
                        // Without an explicit platform, keep images of any platform, undated.
                        _ if platform.is_none() => Some(None),
                        _ => None,
                    };
                    by_digest.insert(image.digest.clone(), info.clone());
                    info
                }
            };
            if let Some(created) = info {
                let tag = reference.tag().unwrap_or_default().to_owned();
                digests.insert(tag.clone(), (image.digest.clone(), created.clone()));
                dated.push((tag, created));
            }
        }
        Ok(selection
            .rank_newest_build(dated)
            .into_iter()
            .filter_map(|tag| {
                let (digest, created) = digests.remove(&tag)?;
                Some(SelectedImage {
                    tag,
                    digest,
                    created,
                })
            })
            .collect())
    }

    /// The config of `image` for `platform`; `None` when an index lacks the platform.
    async fn platform_config(
        &self,
        image: &ResolvedImage,
        platform: &Platform,
    ) -> Result<Option<ImageConfig>, RegistryError> {
        let (_, manifest) = match self.image_manifest(image, platform).await {
            Ok(m) => m,
            Err(RegistryError::PlatformNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = self
            .content(&image.reference, &manifest.config.digest, Kind::BlobGet)
            .await?;
        let config: ImageConfig =
            serde_json::from_slice(&bytes).map_err(|e| invalid(&image.reference, "config", &e))?;
        Ok(Some(config))
    }

    /// Kargo's `platform` filter: an index must list the platform; a single manifest's
    /// config `os`/`architecture`/`variant` must match it.
    async fn offers_platform(
        &self,
        image: &ResolvedImage,
        platform: &Platform,
    ) -> Result<bool, RegistryError> {
        if image.is_index() {
            return Ok(image.manifest_digest_for(platform).is_ok());
        }
        Ok(self
            .platform_config(image, platform)
            .await?
            .is_some_and(|config| config_matches(&config, platform)))
    }
}

/// Whether a config's `os`/`architecture`/`variant` name `platform` (configs without
/// them match anything).
fn config_matches(config: &ImageConfig, platform: &Platform) -> bool {
    match (&config.os, &config.architecture) {
        (Some(os), Some(arch)) => Platform::new(os, arch, config.variant.as_deref()) == *platform,
        _ => true,
    }
}

fn invalid(reference: &Reference, what: &'static str, e: &serde_json::Error) -> RegistryError {
    RegistryError::InvalidDocument {
        registry: reference.registry().to_owned(),
        what,
        reason: e.to_string(),
    }
}

/// `repository:a/b:pull` → `a/b`.
fn repository_of_scope(scope: &str) -> &str {
    scope
        .strip_prefix("repository:")
        .and_then(|rest| rest.rsplit_once(':'))
        .map_or(scope, |(repo, _)| repo)
}

fn sniff_media_type(bytes: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    if let Some(mt) = value.get("mediaType").and_then(|m| m.as_str()) {
        return mt.to_owned();
    }
    if value.get("manifests").is_some() {
        OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned()
    } else {
        OCI_IMAGE_MEDIA_TYPE.to_owned()
    }
}

async fn read_response(rb: reqwest::RequestBuilder) -> Result<Fetched, reqwest::Error> {
    let response = rb.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await?.to_vec();
    Ok(Fetched {
        status,
        headers,
        body,
    })
}

/// The error and its sources, for messages (reqwest's top-level text is vague).
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.without_url_ref();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        match self.url() {
            Some(url) => self.to_string().replace(&format!(" ({url})"), ""),
            None => self.to_string(),
        }
    }
}

fn build_host(
    name: &str,
    settings: RegistrySettings,
    credentials: Credentials,
) -> Result<Host, RegistryError> {
    let transport = |reason: String| RegistryError::Transport {
        registry: name.to_owned(),
        reason,
    };
    // Docker Hub's API lives on registry-1.docker.io (Docker reference grammar).
    let api_host = if name == "docker.io" {
        "registry-1.docker.io"
    } else {
        name
    };
    let scheme = if settings.uses_plain_http(name) {
        "http"
    } else {
        "https"
    };
    let mut builder = reqwest::Client::builder()
        .timeout(settings.timeout())
        .connect_timeout(settings.timeout().min(Duration::from_secs(10)))
        .user_agent(concat!("image-factory/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(settings.max_concurrency.max(1));
    if let Some(path) = &settings.ca_bundle {
        let pem = std::fs::read(path)
            .map_err(|e| transport(format!("cannot read CA bundle {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| transport(format!("CA bundle {} is not PEM: {e}", path.display())))?;
        builder = builder.tls_certs_merge(certs);
    }
    if settings.insecure {
        warn!(registry = %name, "TLS verification disabled for this registry (insecure: true)");
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    let http = builder.build().map_err(|e| transport(error_chain(&e)))?;
    Ok(Host {
        name: name.to_owned(),
        base: format!("{scheme}://{api_host}"),
        budget: Budget::new(settings.max_concurrency, settings.requests_per_second),
        settings,
        http,
        credentials,
        auth: AsyncMutex::new(AuthState::default()),
    })
}
