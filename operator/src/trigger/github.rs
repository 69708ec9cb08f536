//! `githubWorkflow`: a `workflow_dispatch`, then that run's status. (Being written.)

use super::{Backend, Context, Failure, Request, RunFuture};

/// Dispatches a GitHub Actions workflow and follows its run.
#[derive(Debug)]
pub struct GithubBackend {
    _trigger: crate::enrollment::Trigger,
}

impl GithubBackend {
    /// A backend for a `githubWorkflow` trigger.
    ///
    /// # Errors
    ///
    /// A permanent [`Failure`] when `trigger` is not `githubWorkflow`.
    pub fn new(trigger: &crate::enrollment::Trigger) -> Result<Self, Failure> {
        Ok(Self {
            _trigger: trigger.clone(),
        })
    }
}

impl Backend for GithubBackend {
    fn kind(&self) -> &'static str {
        "githubWorkflow"
    }

    fn run<'a>(&'a self, _request: &'a Request, _ctx: &'a Context) -> RunFuture<'a> {
        Box::pin(async { Err(Failure::permanent("githubWorkflow is not implemented yet")) })
    }
}
