//! `webhook`: POSTs the rebuild as signed JSON, then follows its status when the
//! receiver gives a status URL.
//!
//! The request (documented in the README, "Webhook payload"):
//! - body: [`super::Payload`] as JSON;
//! - `Idempotency-Key: <rebuildId>.<attempt>` (the same on every retry of one attempt);
//! - `X-Image-Factory-Signature: sha256=<hex>`: HMAC-SHA256 of the exact body bytes
//!   with the `signingSecret` (GitHub's `X-Hub-Signature-256` scheme), when one is set;
//! - `Authorization: Bearer <token>` when a `tokenSecret` is set.
//!
//! Any 2xx accepts the build. 5xx, 408, 429 and network errors are retried with
//! exponential backoff ([`RETRIES`] times, `Retry-After` honoured); other statuses fail
//! the attempt. A 2xx body `{"statusUrl": "…"}` is polled with GET (same token) until it
//! answers `{"status": "succeeded" | "failed", "message": "…", "log": "…"}`
//! (`queued`/`running` mean wait); without one the build counts as started and the
//! registry check that follows waits for its digest.

use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use serde::Deserialize;

use super::{tail, Backend, Context, Failure, Report, Request, RunFuture, Secret, LOG_TAIL_BYTES};
use crate::enrollment::SecretRef;

/// Attempts at delivering one payload before the trigger fails.
pub const RETRIES: u32 = 5;
/// Timeout of one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// POSTs the [`super::Payload`] to a URL.
#[derive(Debug)]
pub struct WebhookBackend {
    url: String,
    token_secret: Option<SecretRef>,
    signing_secret: Option<SecretRef>,
    timeout: Duration,
    backoff: Duration,
    poll: Duration,
    client: reqwest::Client,
}

/// A receiver's answer to the POST (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    status_url: Option<String>,
    handle: Option<String>,
}

/// A status document.
#[derive(Debug, Deserialize)]
struct Status {
    status: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    log: Option<String>,
}

impl WebhookBackend {
    /// A backend POSTing to `url`; `timeout` bounds delivery and status polling together.
    ///
    /// # Errors
    ///
    /// A permanent [`Failure`] when the HTTP client cannot be built.
    pub fn new(
        url: String,
        token_secret: Option<SecretRef>,
        signing_secret: Option<SecretRef>,
        timeout: Duration,
    ) -> Result<Self, Failure> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("image-factory/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::permanent(format!("webhook client: {e}")))?;
        Ok(Self {
            url,
            token_secret,
            signing_secret,
            timeout,
            backoff: Duration::from_secs(1),
            poll: Duration::from_secs(10),
            client,
        })
    }

    /// The same backend with another first retry delay (doubling per retry) and status
    /// poll interval (tests use milliseconds).
    pub fn with_intervals(mut self, backoff: Duration, poll: Duration) -> Self {
        self.backoff = backoff;
        self.poll = poll;
        self
    }

    async fn deliver(&self, request: &Request, ctx: &Context) -> Result<Report, Failure> {
        let deadline = Instant::now() + self.timeout;
        let token = self.token_secret.as_ref().map(Secret::read).transpose()?;
        let signing = self.signing_secret.as_ref().map(Secret::read).transpose()?;
        let redact = |text: &str| {
            let text = token
                .as_ref()
                .map_or_else(|| text.to_string(), |t| t.redact(text));
            signing.as_ref().map_or(text.clone(), |s| s.redact(&text))
        };
        let body = serde_json::to_vec(&request.payload())
            .map_err(|e| Failure::permanent(format!("webhook payload: {e}")))?;
        let signature = signing.as_ref().map(|s| sign(s, &body)).transpose()?;

        let mut delay = self.backoff;
        let mut last = String::new();
        for attempt in 1..=RETRIES {
            let mut post = self
                .client
                .post(&self.url)
                .header("Content-Type", "application/json")
                .header("Idempotency-Key", request.idempotency_key())
                .header("X-Image-Factory-Rebuild", request.id.to_string())
                .body(body.clone());
            if let Some(sig) = &signature {
                post = post.header("X-Image-Factory-Signature", sig);
            }
            if let Some(t) = &token {
                post = post.bearer_auth(t.expose());
            }
            let sent = tokio::select! {
                r = post.send() => r,
                () = ctx.cancel.cancelled() => return Err(cancelled()),
            };
            let mut wait = delay;
            match sent {
                Ok(resp) if resp.status().is_success() => {
                    let text = resp.text().await.unwrap_or_default();
                    let accepted: Accepted = serde_json::from_str(&text).unwrap_or_default();
                    return self
                        .follow(accepted, token.as_ref(), ctx, deadline, &redact)
                        .await;
                }
                Ok(resp) if retryable(resp.status()) => {
                    if let Some(after) = retry_after(&resp) {
                        wait = after;
                    }
                    last = format!("HTTP {}", resp.status());
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    return Err(Failure::permanent(format!(
                        "webhook {} refused the rebuild: HTTP {status}: {}",
                        self.url,
                        redact(&short(&text))
                    )));
                }
                Err(e) => last = redact(&without_url(&e)),
            }
            if attempt == RETRIES || Instant::now() + wait > deadline {
                break;
            }
            tracing::debug!(url = %self.url, attempt, error = %last, "webhook retry");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = ctx.cancel.cancelled() => return Err(cancelled()),
            }
            delay = delay.saturating_mul(2);
        }
        Err(Failure::transient(format!(
            "webhook {} not delivered after {RETRIES} attempts: {last}",
            self.url
        )))
    }

    async fn follow(
        &self,
        accepted: Accepted,
        token: Option<&Secret>,
        ctx: &Context,
        deadline: Instant,
        redact: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<Report, Failure> {
        let Some(status_url) = accepted.status_url else {
            let handle = accepted.handle.unwrap_or_else(|| self.url.clone());
            ctx.started(handle.clone());
            return Ok(Report {
                handle: Some(handle),
                log_tail: None,
            });
        };
        ctx.started(status_url.clone());
        loop {
            let mut get = self.client.get(&status_url);
            if let Some(t) = token {
                get = get.bearer_auth(t.expose());
            }
            let answer = tokio::select! {
                r = get.send() => r,
                () = ctx.cancel.cancelled() => return Err(cancelled()),
            };
            if let Ok(resp) = answer {
                if resp.status().is_success() {
                    let text = resp.text().await.unwrap_or_default();
                    match serde_json::from_str::<Status>(&text) {
                        Ok(s) => {
                            let log_tail = s
                                .log
                                .as_deref()
                                .map(|l| tail(redact(l).as_bytes(), LOG_TAIL_BYTES));
                            match s.status.as_str() {
                                "succeeded" | "success" => {
                                    return Ok(Report {
                                        handle: Some(status_url),
                                        log_tail,
                                    })
                                }
                                "failed" | "failure" | "error" | "cancelled" => {
                                    let message = s.message.as_deref().map(redact);
                                    return Err(Failure::permanent(format!(
                                        "webhook build {}: {}",
                                        s.status,
                                        message.unwrap_or_else(|| status_url.clone())
                                    ))
                                    .with_log(log_tail));
                                }
                                _ => {}
                            }
                        }
                        Err(e) => {
                            tracing::debug!(url = %status_url, error = %e, "status not understood")
                        }
                    }
                } else if !retryable(resp.status()) {
                    return Err(Failure::permanent(format!(
                        "webhook status {status_url}: HTTP {}",
                        resp.status()
                    )));
                }
            }
            if Instant::now() + self.poll > deadline {
                return Err(Failure::transient(format!(
                    "webhook build not finished after {} ({status_url})",
                    humantime::format_duration(self.timeout)
                )));
            }
            tokio::select! {
                () = tokio::time::sleep(self.poll) => {}
                () = ctx.cancel.cancelled() => return Err(cancelled()),
            }
        }
    }
}

impl Backend for WebhookBackend {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn run<'a>(&'a self, request: &'a Request, ctx: &'a Context) -> RunFuture<'a> {
        Box::pin(self.deliver(request, ctx))
    }
}

/// `sha256=<lower-case hex HMAC-SHA256 of body keyed with secret>`.
///
/// # Errors
///
/// Never in practice (HMAC takes keys of any length); a permanent [`Failure`] otherwise.
pub fn sign(secret: &Secret, body: &[u8]) -> Result<String, Failure> {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| Failure::permanent("webhook signing key rejected"))?;
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256={hex}"))
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// `Retry-After` in seconds (RFC 9110 §10.2.3; the HTTP-date form is not used by the
/// receivers we know and is ignored).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn cancelled() -> Failure {
    Failure::transient("webhook trigger was cancelled")
}

/// An error's text without the URL reqwest appends (it may carry a query token).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

fn short(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}
