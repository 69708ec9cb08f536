//! `command`: a local program. (Being written.)

use super::{Backend, Context, Failure, Request, RunFuture};
use crate::enrollment::Command;

/// Runs a local program.
#[derive(Debug)]
pub struct CommandBackend {
    command: Command,
}

impl CommandBackend {
    /// A backend running `command`.
    pub fn new(command: Command) -> Self {
        Self { command }
    }
}

impl Backend for CommandBackend {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn run<'a>(&'a self, _request: &'a Request, _ctx: &'a Context) -> RunFuture<'a> {
        let _ = &self.command;
        Box::pin(async { Err(Failure::permanent("command is not implemented yet")) })
    }
}
