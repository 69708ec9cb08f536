//! `githubWorkflow`: a `workflow_dispatch`, then that run's status.
//!
//! ```text
//! credentials ─▶ POST …/actions/workflows/{workflow}/dispatches  {ref, inputs{…, rebuild_id, bases}}
//!   token: the secret        200 {workflow_run_id, html_url}  ─┐
//!   App: JWT ─▶ POST         204 ─▶ GET …/workflows/{workflow}/runs?event=workflow_dispatch&created=>=T
//!   /app/installations/         until a run's title carries the rebuild id ─┤
//!   {id}/access_tokens                                                      ▼
//!                            GET …/actions/runs/{id} every 15 s (backing off to 60 s)
//!                            until status = completed: conclusion success ─▶ Report, else Failure
//! ```
//!
//! REST API version `2022-11-28` (GitHub docs: "Create a workflow dispatch event",
//! "List workflow runs for a workflow", "Get a workflow run", "Create an installation
//! access token for an app", "Rate limits for the REST API").
//!
//! **The workflow must put the rebuild id in its run name** —
//! `run-name: "image-factory rebuild ${{ inputs.rebuild_id }}"` — when GitHub answers the
//! dispatch without the run's id (older GitHub Enterprise Server): the run is then found
//! by listing the workflow's recent `workflow_dispatch` runs and matching the id in
//! `display_title`. `examples/github-actions/build-image.yml` is a complete workflow.
//!
//! Inputs sent: the enrollment's `inputs`, `rebuild_id` (the rebuild's id) and `bases`
//! (the pins as JSON, [`Request::bases_json`]).
//!
//! Errors: 401 (bad credentials), 403 without a rate limit (no access), 404 (no such
//! repository or workflow, or no access) and 422 (GitHub's message: unknown inputs, no
//! `workflow_dispatch` trigger, unknown ref) are permanent. A rate limit (403/429 with
//! `x-ratelimit-remaining: 0`, `retry-after`, or a secondary limit) waits as GitHub's
//! headers say — never past the trigger's deadline — and retries; 5xx answers and
//! network errors are retried [`MAX_TRANSIENT_ATTEMPTS`] times with backoff. A retried
//! dispatch may start a second run (GitHub dispatches have no idempotency key); the
//! newest run carrying the rebuild id is followed.
//!
//! Tokens live in [`Secret`]s: never in a [`Failure`], a log line or a [`Report`]; text
//! echoed from GitHub is redacted with them first.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use super::{Backend, Context, Failure, Report, Request, RunFuture, Secret};
use crate::enrollment::{GithubAuth, Trigger};

/// Default wait between two looks at a running workflow run: 15 s.
pub const DEFAULT_POLL: Duration = Duration::from_secs(15);
/// Longest wait between two looks at a run once polling has backed off: 60 s.
pub const MAX_POLL: Duration = Duration::from_secs(60);
/// Default first wait between two searches for a dispatched run (and between two tries
/// of a call that failed with a 5xx or a network error): 2 s, doubling each time.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(2);
/// Most tries of one call answered with a 5xx or lost to a network error.
pub const MAX_TRANSIENT_ATTEMPTS: u32 = 5;
/// Most waits for a rate limit within one call.
pub const MAX_RATE_LIMIT_WAITS: u32 = 10;
/// The REST API version sent as `X-GitHub-Api-Version`.
pub const API_VERSION: &str = "2022-11-28";
/// An installation token is renewed when less than this is left of it: 5 min.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How far before the dispatch the run search starts, for clock skew between this
/// machine and GitHub: 30 s.
const LOOKUP_SKEW: i64 = 30;
/// A secondary rate limit without `retry-after`: GitHub says wait at least a minute.
const SECONDARY_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Per-request limit (connect, send, read the answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most characters of a message echoed from GitHub kept in a failure.
const MESSAGE_MAX: usize = 300;

/// Dispatches a GitHub Actions workflow and follows its run.
pub struct GithubBackend {
    repository: String,
    workflow: String,
    reference: String,
    inputs: BTreeMap<String, String>,
    auth: GithubAuth,
    api_url: String,
    timeout: Duration,
    poll: Duration,
    max_poll: Duration,
    retry: Duration,
    http: reqwest::Client,
    /// The App installation token and when it expires (App auth only).
    installation_token: tokio::sync::Mutex<Option<(Secret, Timestamp)>>,
}

impl std::fmt::Debug for GithubBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubBackend")
            .field("repository", &self.repository)
            .field("workflow", &self.workflow)
            .field("reference", &self.reference)
            .field("api_url", &self.api_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl GithubBackend {
    /// A backend for a `githubWorkflow` trigger, polling every [`DEFAULT_POLL`] (backing
    /// off to [`MAX_POLL`]). Credentials are read on each run, not here.
    ///
    /// # Errors
    ///
    /// A permanent [`Failure`] when `trigger` is not `githubWorkflow` or the HTTP client
    /// cannot be built.
    pub fn new(trigger: &Trigger) -> Result<Self, Failure> {
        let Trigger::GithubWorkflow {
            repository,
            workflow,
            reference,
            inputs,
            auth,
            api_url,
            timeout,
        } = trigger
        else {
            return Err(Failure::permanent(
                "the githubWorkflow backend was given another kind of trigger",
            ));
        };
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Failure::permanent(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            repository: repository.clone(),
            workflow: workflow.clone(),
            reference: reference.clone(),
            inputs: inputs.clone(),
            auth: auth.clone(),
            api_url: api_url.trim_end_matches('/').to_string(),
            timeout: *timeout,
            poll: DEFAULT_POLL,
            max_poll: MAX_POLL,
            retry: DEFAULT_RETRY,
            http,
            installation_token: tokio::sync::Mutex::new(None),
        })
    }

    /// The same backend polling every `interval`: the run's status every `interval`
    /// backing off to 4 × `interval`, run searches and retries after 5xx answers from
    /// `interval` doubling (tests use milliseconds).
    pub fn with_poll(mut self, interval: Duration) -> Self {
        self.poll = interval;
        self.max_poll = interval * 4;
        self.retry = interval;
        self
    }

    /// `{api_url}/repos/{owner}/{repo}/actions/{rest}`.
    fn actions_url(&self, rest: &str) -> String {
        format!("{}/repos/{}/actions/{rest}", self.api_url, self.repository)
    }

    /// The bearer token for the next call: the secret, or a (cached) installation token.
    async fn bearer(&self, deadline: Instant) -> Result<Secret, Failure> {
        match &self.auth {
            GithubAuth::Token(reference) => Secret::read(reference),
            GithubAuth::App {
                app_id,
                installation_id,
                private_key,
            } => {
                let mut cached = self.installation_token.lock().await;
                if let Some((token, expires_at)) = cached.as_ref() {
                    if !needs_refresh(*expires_at, Timestamp::now()) {
                        return Ok(token.clone());
                    }
                }
                let key = Secret::read(private_key)?;
                let jwt = Secret::new(app_jwt(*app_id, &key, Timestamp::now().as_second())?);
                let (token, expires_at) = self
                    .installation_token(*app_id, *installation_id, &jwt, deadline)
                    .await?;
                *cached = Some((token.clone(), expires_at));
                Ok(token)
            }
        }
    }

    /// `POST /app/installations/{installation_id}/access_tokens` with the App's JWT.
    async fn installation_token(
        &self,
        app_id: u64,
        installation_id: u64,
        jwt: &Secret,
        deadline: Instant,
    ) -> Result<(Secret, Timestamp), Failure> {
        let url = format!(
            "{}/app/installations/{installation_id}/access_tokens",
            self.api_url
        );
        let what = format!("an installation token for GitHub App {app_id}");
        let reply = self
            .send(Method::POST, &url, &[], None, jwt, deadline, &what)
            .await?;
        match reply.status {
            StatusCode::CREATED | StatusCode::OK => {
                let token: InstallationToken = reply.json(jwt, &what)?;
                tracing::debug!(app_id, installation_id, expires_at = %token.expires_at, "installation token issued");
                Ok((Secret::new(token.token), token.expires_at))
            }
            StatusCode::UNAUTHORIZED => Err(Failure::permanent(format!(
                "GitHub rejected the JWT of App {app_id} (401: {}): check app.appId and that \
                 app.privateKeySecret holds a current private key of that App",
                reply.message(jwt)
            ))),
            StatusCode::NOT_FOUND => Err(Failure::permanent(format!(
                "GitHub App {app_id} has no installation {installation_id} (404): check \
                 app.installationId (Settings → Integrations → GitHub Apps → Configure: the \
                 number at the end of the URL)"
            ))),
            status => Err(unexpected(&what, status, &reply.message(jwt))),
        }
    }

    /// Sends one call, retrying 5xx answers and network errors (bounded) and waiting out
    /// rate limits (never past `deadline`). Returns any other answer for the caller to
    /// read. `what` names the call in failures ("the dispatch of build.yml").
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        bearer: &Secret,
        deadline: Instant,
        what: &str,
    ) -> Result<Reply, Failure> {
        let mut transient_attempts = 0;
        let mut rate_limit_waits = 0;
        let mut backoff = self.retry;
        loop {
            let mut call = self
                .http
                .request(method.clone(), url)
                .headers(github_headers(bearer)?);
            if !query.is_empty() {
                call = call.query(query);
            }
            if let Some(body) = body {
                call = call.json(body);
            }
            let problem = match call.send().await {
                Err(e) => format!("cannot reach GitHub: {}", bearer.redact(&e.to_string())),
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let text = response.text().await.unwrap_or_default();
                    let reply = Reply { status, body: text };
                    if let Some(wait) =
                        rate_limit_wait(status, &headers, &reply.body, Timestamp::now().as_second())
                    {
                        rate_limit_waits += 1;
                        if rate_limit_waits > MAX_RATE_LIMIT_WAITS {
                            return Err(Failure::transient(format!(
                                "{what}: still rate limited by GitHub after {MAX_RATE_LIMIT_WAITS} waits"
                            )));
                        }
                        if Instant::now() + wait > deadline {
                            return Err(Failure::transient(format!(
                                "{what}: rate limited by GitHub for {} more, past the trigger's timeout",
                                humantime::format_duration(wait)
                            )));
                        }
                        tracing::warn!(wait = %humantime::format_duration(wait), %status, "GitHub rate limit: waiting");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if !status.is_server_error() {
                        return Ok(reply);
                    }
                    format!("GitHub answered {status}: {}", reply.message(bearer))
                }
            };
            transient_attempts += 1;
            if transient_attempts >= MAX_TRANSIENT_ATTEMPTS {
                return Err(Failure::transient(format!(
                    "{what} failed {MAX_TRANSIENT_ATTEMPTS} times; last: {problem}"
                )));
            }
            tracing::warn!(attempt = transient_attempts, %problem, "GitHub call failed: retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.max_poll);
        }
    }

    /// Dispatches the workflow; the run, when GitHub tells it (`return_run_details`).
    async fn dispatch(
        &self,
        request: &Request,
        deadline: Instant,
    ) -> Result<Option<RunRef>, Failure> {
        let url = self.actions_url(&format!("workflows/{}/dispatches", self.workflow));
        let what = format!("the dispatch of workflow {}", self.workflow);
        let mut body = dispatch_body(&self.reference, &self.inputs, request);
        loop {
            let bearer = self.bearer(deadline).await?;
            let reply = self
                .send(
                    Method::POST,
                    &url,
                    &[],
                    Some(&body),
                    &bearer,
                    deadline,
                    &what,
                )
                .await?;
            let message = reply.message(&bearer);
            return match reply.status {
                StatusCode::OK => {
                    let details: DispatchDetails =
                        serde_json::from_str(&reply.body).unwrap_or_default();
                    Ok(details.workflow_run_id.map(|id| RunRef {
                        id,
                        html_url: details.html_url,
                    }))
                }
                StatusCode::NO_CONTENT | StatusCode::CREATED | StatusCode::ACCEPTED => Ok(None),
                StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST
                    if message.contains("return_run_details")
                        && body.get("return_run_details").is_some() =>
                {
                    // GitHub Enterprise Server before the parameter existed: dispatch
                    // without it and find the run by its title.
                    if let Some(map) = body.as_object_mut() {
                        map.remove("return_run_details");
                    }
                    continue;
                }
                StatusCode::UNAUTHORIZED => Err(self.bad_credentials(&message).await),
                StatusCode::NOT_FOUND => Err(Failure::permanent(format!(
                    "workflow {} in {} not found (404): check trigger.githubWorkflow.repository \
                     and .workflow (a file in .github/workflows on the default branch, or its \
                     numeric ID), and that the token can see the repository and has \
                     actions: write",
                    self.workflow, self.repository
                ))),
                StatusCode::UNPROCESSABLE_ENTITY => Err(Failure::permanent(format!(
                    "GitHub refused the dispatch of {} on {} (422: {message}): check that the \
                     workflow has an `on: workflow_dispatch` trigger on ref {:?}, declares the \
                     inputs rebuild_id, bases and each of trigger.githubWorkflow.inputs, and \
                     that the ref exists",
                    self.workflow, self.repository, self.reference
                ))),
                StatusCode::FORBIDDEN => Err(Failure::permanent(format!(
                    "GitHub refused the dispatch of {} on {} (403: {message}): the token needs \
                     actions: write on the repository",
                    self.workflow, self.repository
                ))),
                status => Err(unexpected(&what, status, &message)),
            };
        }
    }

    /// Searches the workflow's recent `workflow_dispatch` runs for the one carrying
    /// `rebuild_id` in its title, again and again (backing off) until it appears.
    async fn find_run(
        &self,
        rebuild_id: &str,
        dispatched_at: Timestamp,
        deadline: Instant,
    ) -> Result<RunRef, Failure> {
        let url = self.actions_url(&format!("workflows/{}/runs", self.workflow));
        let since = Timestamp::from_second(dispatched_at.as_second() - LOOKUP_SKEW)
            .unwrap_or(dispatched_at);
        let query = [
            ("event", "workflow_dispatch".to_string()),
            ("created", format!(">={since}")),
            ("per_page", "100".to_string()),
        ];
        let what = format!("the search for the run of workflow {}", self.workflow);
        let mut wait = self.retry;
        loop {
            let bearer = self.bearer(deadline).await?;
            let reply = self
                .send(Method::GET, &url, &query, None, &bearer, deadline, &what)
                .await?;
            match reply.status {
                StatusCode::OK => {
                    let list: RunList = reply.json(&bearer, &what)?;
                    if let Some(run) = matching_run(&list.workflow_runs, rebuild_id) {
                        return Ok(RunRef {
                            id: run.id,
                            html_url: Some(run.html_url.clone()),
                        });
                    }
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(self.bad_credentials(&reply.message(&bearer)).await)
                }
                status => return Err(unexpected(&what, status, &reply.message(&bearer))),
            }
            tracing::debug!(rebuild_id, "dispatched run not listed yet");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.max_poll);
        }
    }

    /// `GET /repos/{owner}/{repo}/actions/runs/{id}`.
    async fn get_run(&self, id: u64, deadline: Instant) -> Result<Run, Failure> {
        let url = self.actions_url(&format!("runs/{id}"));
        let what = format!("the status of workflow run {id}");
        let bearer = self.bearer(deadline).await?;
        let reply = self
            .send(Method::GET, &url, &[], None, &bearer, deadline, &what)
            .await?;
        match reply.status {
            StatusCode::OK => reply.json(&bearer, &what),
            StatusCode::UNAUTHORIZED => Err(self.bad_credentials(&reply.message(&bearer)).await),
            status => Err(unexpected(&what, status, &reply.message(&bearer))),
        }
    }

    /// Dispatch, find the run, and poll it to its end, recording progress in `progress`.
    async fn follow(
        &self,
        request: &Request,
        ctx: &Context,
        progress: &Mutex<Progress>,
        deadline: Instant,
    ) -> Result<Report, Failure> {
        let dispatched_at = Timestamp::now();
        let known = self.dispatch(request, deadline).await?;
        tracing::info!(
            repository = %self.repository,
            workflow = %self.workflow,
            rebuild = %request.id,
            "workflow dispatched"
        );
        set(progress, Progress::Searching);
        let run = match known {
            Some(run) => run,
            None => {
                self.find_run(request.id.as_str(), dispatched_at, deadline)
                    .await?
            }
        };
        let mut started = false;
        if let Some(url) = &run.html_url {
            ctx.started(url.clone());
            started = true;
        }
        set(
            progress,
            Progress::Running {
                id: run.id,
                html_url: run.html_url.clone(),
                status: None,
            },
        );
        let mut wait = self.poll;
        loop {
            let current = self.get_run(run.id, deadline).await?;
            if !started {
                ctx.started(current.html_url.clone());
                started = true;
                tracing::info!(rebuild = %request.id, run = %current.html_url, "workflow run started");
            }
            set(
                progress,
                Progress::Running {
                    id: current.id,
                    html_url: Some(current.html_url.clone()),
                    status: current.status.clone(),
                },
            );
            if current.status.as_deref() == Some("completed") {
                return concluded(&current);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.max_poll);
        }
    }

    /// Best effort: `POST /repos/{owner}/{repo}/actions/runs/{id}/cancel`, once.
    async fn cancel_run(&self, id: u64) {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let Ok(bearer) = self.bearer(deadline).await else {
            return;
        };
        let url = self.actions_url(&format!("runs/{id}/cancel"));
        let call = self
            .http
            .post(url)
            .headers(github_headers(&bearer).unwrap_or_default())
            .send();
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(Ok(r)) if r.status().is_success() => {
                tracing::info!(run = id, "workflow run cancelled")
            }
            _ => tracing::warn!(run = id, "could not cancel the workflow run"),
        }
    }

    /// The failure for a 401; forgets a cached installation token, so the next run asks
    /// for a new one instead of repeating a revoked one.
    async fn bad_credentials(&self, message: &str) -> Failure {
        *self.installation_token.lock().await = None;
        let fix = match &self.auth {
            GithubAuth::Token(reference) => {
                format!("check that {reference} holds a valid, unexpired token")
            }
            GithubAuth::App { app_id, .. } => {
                format!("the installation token of GitHub App {app_id} was refused; check the App's installation")
            }
        };
        Failure::permanent(format!(
            "GitHub rejected the credentials (401: {message}): {fix}"
        ))
    }
}

impl Backend for GithubBackend {
    fn kind(&self) -> &'static str {
        "githubWorkflow"
    }

    fn run<'a>(&'a self, request: &'a Request, ctx: &'a Context) -> RunFuture<'a> {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let progress = Mutex::new(Progress::Dispatching);
            let outcome = tokio::select! {
                biased;
                () = ctx.cancel.cancelled() => Err(Stop::Cancelled),
                result = tokio::time::timeout_at(deadline, self.follow(request, ctx, &progress, deadline)) => {
                    match result {
                        Ok(Ok(report)) => Ok(report),
                        Ok(Err(failure)) => Err(Stop::Failed(failure)),
                        Err(_) => Err(Stop::TimedOut),
                    }
                }
            };
            let progress = progress
                .lock()
                .map(|p| p.clone())
                .unwrap_or(Progress::Dispatching);
            match outcome {
                Ok(report) => Ok(report),
                Err(Stop::Failed(failure)) => Err(failure),
                Err(stop) => {
                    if let Progress::Running { id, .. } = &progress {
                        self.cancel_run(*id).await;
                    }
                    Err(stop.failure(&progress, self.timeout, request.id.as_str()))
                }
            }
        })
    }
}

/// Why [`Backend::run`] stopped before the run ended.
enum Stop {
    Cancelled,
    TimedOut,
    Failed(Failure),
}

impl Stop {
    fn failure(&self, progress: &Progress, timeout: Duration, rebuild_id: &str) -> Failure {
        let during = progress.describe(rebuild_id);
        match self {
            Self::Cancelled => Failure::transient(format!("cancelled {during}")),
            Self::TimedOut => Failure::transient(format!(
                "timed out after {} {during}",
                humantime::format_duration(timeout)
            )),
            Self::Failed(f) => f.clone(),
        }
    }
}

/// How far a run got, for the words of a timeout or a cancellation.
#[derive(Debug, Clone)]
enum Progress {
    Dispatching,
    Searching,
    Running {
        id: u64,
        html_url: Option<String>,
        status: Option<String>,
    },
}

impl Progress {
    fn describe(&self, rebuild_id: &str) -> String {
        match self {
            Self::Dispatching => "while dispatching the workflow".to_string(),
            Self::Searching => format!(
                "waiting for the dispatched run to be listed: no run's title contains \
                 {rebuild_id}; the workflow must set `run-name: … ${{{{ inputs.rebuild_id }}}}`"
            ),
            Self::Running {
                id,
                html_url,
                status,
            } => format!(
                "waiting for workflow run {} (status {}; cancelling the run)",
                html_url.clone().unwrap_or_else(|| id.to_string()),
                status.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

fn set(progress: &Mutex<Progress>, value: Progress) {
    if let Ok(mut p) = progress.lock() {
        *p = value;
    }
}

/// A run by id, with its page when known.
#[derive(Debug, Clone)]
struct RunRef {
    id: u64,
    html_url: Option<String>,
}

/// A status and body, after retries.
struct Reply {
    status: StatusCode,
    body: String,
}

impl Reply {
    /// GitHub's `message` (else the body), redacted with `secret`, shortened.
    fn message(&self, secret: &Secret) -> String {
        let message = serde_json::from_str::<ApiError>(&self.body)
            .map(|e| e.message)
            .unwrap_or_else(|_| self.body.trim().to_string());
        let message = secret.redact(&message);
        if message.chars().count() > MESSAGE_MAX {
            let cut: String = message.chars().take(MESSAGE_MAX).collect();
            format!("{cut}…")
        } else if message.is_empty() {
            "no message".to_string()
        } else {
            message
        }
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        secret: &Secret,
        what: &str,
    ) -> Result<T, Failure> {
        serde_json::from_str(&self.body).map_err(|e| {
            Failure::transient(format!(
                "{what}: unexpected answer from GitHub ({e}): {}",
                self.message(secret)
            ))
        })
    }
}

/// A failure for an answer the caller does not expect: 4xx permanent, else transient.
fn unexpected(what: &str, status: StatusCode, message: &str) -> Failure {
    let reason = format!("{what}: GitHub answered {status}: {message}");
    if status.is_client_error() {
        Failure::permanent(reason)
    } else {
        Failure::transient(reason)
    }
}

/// The headers of every call: `Accept: application/vnd.github+json`,
/// `X-GitHub-Api-Version`, `User-Agent: image-factory`, `Authorization: Bearer …`.
fn github_headers(bearer: &Secret) -> Result<HeaderMap, Failure> {
    let mut headers = HeaderMap::new();
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/vnd.github+json"),
    );
    headers.insert(
        "x-github-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    headers.insert(USER_AGENT, HeaderValue::from_static("image-factory"));
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", bearer.expose())).map_err(|_| {
        Failure::permanent("the GitHub token contains characters not allowed in an HTTP header")
    })?;
    auth.set_sensitive(true);
    headers.insert(AUTHORIZATION, auth);
    Ok(headers)
}

/// The dispatch body: `{"ref", "inputs": {…inputs, "rebuild_id", "bases"},
/// "return_run_details": true}`.
fn dispatch_body(
    reference: &str,
    inputs: &BTreeMap<String, String>,
    request: &Request,
) -> serde_json::Value {
    let mut all: BTreeMap<&str, String> = inputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    all.insert("rebuild_id", request.id.to_string());
    all.insert("bases", request.bases_json());
    json!({ "ref": reference, "inputs": all, "return_run_details": true })
}

/// Whether an installation token expiring at `expires_at` should be renewed at `now`
/// (less than [`TOKEN_REFRESH_MARGIN`] left).
pub fn needs_refresh(expires_at: Timestamp, now: Timestamp) -> bool {
    let margin = i64::try_from(TOKEN_REFRESH_MARGIN.as_secs()).unwrap_or(i64::MAX);
    expires_at.as_second() - now.as_second() < margin
}

/// The claims of a GitHub App JWT (GitHub docs: "Generating a JSON Web Token (JWT) for a
/// GitHub App").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppClaims {
    /// Issued at, Unix seconds: 60 s before now, against clock drift.
    pub iat: i64,
    /// Expires, Unix seconds: 9 min after now (GitHub allows at most 10).
    pub exp: i64,
    /// The App's ID, as a string.
    pub iss: String,
}

/// An RS256 JWT for GitHub App `app_id`, signed with `private_key` (PEM, PKCS#1 as
/// GitHub issues it, or PKCS#8), issued for Unix second `now`.
///
/// # Errors
///
/// A permanent [`Failure`] when the key is not an RSA PEM key or cannot sign (the key's
/// text is never included).
pub fn app_jwt(app_id: u64, private_key: &Secret, now: i64) -> Result<String, Failure> {
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose().as_bytes()).map_err(|e| {
            Failure::permanent(format!(
                "the private key of GitHub App {app_id} is not an RSA PEM key ({e}): store the \
             .pem file GitHub generated for the App"
            ))
        })?;
    let claims = AppClaims {
        iat: now - 60,
        exp: now + 9 * 60,
        iss: app_id.to_string(),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .map_err(|e| Failure::permanent(format!("cannot sign the JWT of GitHub App {app_id}: {e}")))
}

/// How long to wait before retrying an answer, when it is a rate limit (GitHub docs:
/// "Rate limits for the REST API" — exceeding the primary or a secondary limit):
/// `retry-after` seconds when present; else, with `x-ratelimit-remaining: 0`, until
/// `x-ratelimit-reset` (Unix seconds, compared with `now`, at least 1 s); else a 429, or
/// a 403 whose message says "rate limit", waits a minute. `None` for anything else (a
/// 403 without those is a permission problem).
pub fn rate_limit_wait(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    now: i64,
) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let number = |name: &str| -> Option<i64> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    };
    if let Some(seconds) = number("retry-after") {
        return Some(Duration::from_secs(seconds.max(1).unsigned_abs()));
    }
    if number("x-ratelimit-remaining") == Some(0) {
        let reset = number("x-ratelimit-reset").unwrap_or(now + 60);
        return Some(Duration::from_secs((reset - now).max(1).unsigned_abs()));
    }
    if status == StatusCode::TOO_MANY_REQUESTS || body.to_ascii_lowercase().contains("rate limit") {
        return Some(SECONDARY_RATE_LIMIT_WAIT);
    }
    None
}

/// The newest run (highest id) whose `display_title` or `name` contains `rebuild_id` as a
/// whole word (not inside a longer id).
fn matching_run<'a>(runs: &'a [Run], rebuild_id: &str) -> Option<&'a Run> {
    runs.iter()
        .filter(|r| {
            [r.display_title.as_deref(), r.name.as_deref()]
                .into_iter()
                .flatten()
                .any(|title| contains_word(title, rebuild_id))
        })
        .max_by_key(|r| r.id)
}

/// Whether `needle` occurs in `text` with no id character (`a-z0-9-`) right before or after.
fn contains_word(text: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let id_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
    text.match_indices(needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        !before.is_some_and(id_char) && !after.is_some_and(id_char)
    })
}

/// The outcome of a completed run: `success` is a [`Report`], any other conclusion a
/// permanent [`Failure`].
fn concluded(run: &Run) -> Result<Report, Failure> {
    match run.conclusion.as_deref() {
        Some("success") => Ok(Report {
            handle: Some(run.html_url.clone()),
            log_tail: None,
        }),
        other => Err(Failure::permanent(format!(
            "workflow run {} concluded {}",
            run.html_url,
            other.unwrap_or("without a conclusion")
        ))),
    }
}

/// `200` of a dispatch with `return_run_details: true`.
#[derive(Debug, Default, Deserialize)]
struct DispatchDetails {
    workflow_run_id: Option<u64>,
    html_url: Option<String>,
}

/// "List workflow runs for a workflow".
#[derive(Debug, Deserialize)]
struct RunList {
    #[serde(default)]
    workflow_runs: Vec<Run>,
}

/// The fields of a workflow run the backend reads.
#[derive(Debug, Clone, Deserialize)]
struct Run {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    display_title: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    html_url: String,
}

/// "Create an installation access token for an app".
#[derive(Deserialize)]
struct InstallationToken {
    token: String,
    expires_at: Timestamp,
}

/// GitHub's error body.
#[derive(Deserialize)]
struct ApiError {
    message: String,
}

#[cfg(test)]
mod tests;
