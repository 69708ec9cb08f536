//! `webhook`: a signed JSON POST. (Being written.)

use std::time::Duration;

use super::{Backend, Context, Failure, Request, RunFuture};
use crate::enrollment::SecretRef;

/// POSTs the [`super::Payload`] to a URL.
#[derive(Debug)]
pub struct WebhookBackend {
    url: String,
    token_secret: Option<SecretRef>,
    signing_secret: Option<SecretRef>,
    timeout: Duration,
}

impl WebhookBackend {
    /// A backend POSTing to `url`.
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
        Ok(Self {
            url,
            token_secret,
            signing_secret,
            timeout,
        })
    }
}

impl Backend for WebhookBackend {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn run<'a>(&'a self, _request: &'a Request, _ctx: &'a Context) -> RunFuture<'a> {
        let _ = (&self.url, &self.token_secret, &self.signing_secret, self.timeout);
        Box::pin(async { Err(Failure::permanent("webhook is not implemented yet")) })
    }
}
