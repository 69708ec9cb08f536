//! `command`: runs a local program for each rebuild.
//!
//! The program runs with the factory's environment plus [`Request::env`] (the image,
//! rebuild id, pinned bases, pinned Dockerfile path and target references), in the
//! source root when the source is checked out here. `args` are executed directly;
//! `shell` goes through `/bin/sh -c`. Its exit status is the trigger's result; the last
//! [`LOG_TAIL_BYTES`] of stdout and stderr (interleaved as read) are kept for the
//! record. The child leads its own process group; on timeout or cancellation the whole
//! group is killed (`SIGKILL`) and the run fails with that reason.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{tail, Backend, Context, Failure, Report, Request, RunFuture, LOG_TAIL_BYTES};
use crate::enrollment::{Command, Program};

/// How long output readers may go on after the child ended (a grandchild holding the
/// pipe open must not hold the rebuild).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Runs a local program.
#[derive(Debug, Clone)]
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

    fn run<'a>(&'a self, request: &'a Request, ctx: &'a Context) -> RunFuture<'a> {
        Box::pin(async move {
            let cwd = request.local.as_ref().map(|l| l.root.as_path());
            run_program(&self.command, &request.env(), cwd, ctx, "trigger").await
        })
    }
}

/// Runs `command` with `env` added to the factory's environment, in `cwd` (default the
/// working directory), until it exits, runs out of `command.timeout`, or `ctx` is
/// cancelled. `what` names the run in messages (`trigger`, `test`).
///
/// # Errors
///
/// A [`Failure`] (with the output tail) when the program cannot be started (not found,
/// not executable), exits non-zero or by a signal, times out (transient), or is
/// cancelled (transient).
pub async fn run_program(
    command: &Command,
    env: &[(String, String)],
    cwd: Option<&Path>,
    ctx: &Context,
    what: &str,
) -> Result<Report, Failure> {
    let (program, mut cmd) = match &command.program {
        Program::Args(args) => {
            let Some((first, rest)) = args.split_first() else {
                return Err(Failure::permanent(format!("{what} has no program")));
            };
            let mut cmd = tokio::process::Command::new(first);
            cmd.args(rest);
            (first.clone(), cmd)
        }
        Program::Shell(line) => {
            let mut cmd = tokio::process::Command::new("/bin/sh");
            cmd.arg("-c").arg(line);
            ("/bin/sh".to_string(), cmd)
        }
    };
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => ": is it installed and on PATH?",
            std::io::ErrorKind::PermissionDenied => ": is it executable?",
            _ => "",
        };
        Failure::permanent(format!(
            "{what} command {program:?} cannot start: {e}{hint}"
        ))
    })?;
    let pid = child.id().map_or_else(String::new, |p| format!("pid {p}"));
    ctx.started(format!("{program} {pid}").trim().to_string());

    let output = Arc::new(Mutex::new(Tail::default()));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(drain(out, Arc::clone(&output))));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(drain(err, Arc::clone(&output))));
    }

    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(status),
        () = tokio::time::sleep(command.timeout) => Ended::TimedOut,
        () = ctx.cancel.cancelled() => Ended::Cancelled,
    };
    if !matches!(ended, Ended::Exited(_)) {
        if let Some(pid) = child.id() {
            kill_group(pid).await;
        }
        let _ = child.kill().await;
    }
    for reader in readers {
        if tokio::time::timeout(DRAIN_GRACE, reader).await.is_err() {
            tracing::debug!(what, "output still open after exit; tail cut there");
        }
    }
    let log_tail = output
        .lock()
        .ok()
        .map(|t| tail(&t.bytes, LOG_TAIL_BYTES))
        .filter(|t| !t.is_empty());

    match ended {
        Ended::Exited(Ok(status)) if status.success() => Ok(Report {
            handle: Some(pid).filter(|p| !p.is_empty()),
            log_tail,
        }),
        Ended::Exited(Ok(status)) => {
            let how = match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => "was killed by a signal".to_string(),
            };
            Err(Failure::permanent(format!("{what} command {program:?} {how}")).with_log(log_tail))
        }
        Ended::Exited(Err(e)) => Err(Failure::transient(format!(
            "{what} command {program:?}: wait failed: {e}"
        ))
        .with_log(log_tail)),
        Ended::TimedOut => Err(Failure::transient(format!(
            "{what} command {program:?} timed out after {} and was killed",
            humantime::format_duration(command.timeout)
        ))
        .with_log(log_tail)),
        Ended::Cancelled => Err(Failure::transient(format!(
            "{what} command {program:?} was cancelled and killed"
        ))
        .with_log(log_tail)),
    }
}

/// `SIGKILL` to the child's process group (it leads its own, see `process_group(0)`),
/// so what a shell started dies with it. Uses `kill(1)`: the crate forbids `unsafe`.
async fn kill_group(pid: u32) {
    let status = tokio::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(e) = status {
        tracing::debug!(pid, error = %e, "kill of the process group failed");
    }
}

enum Ended {
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    Cancelled,
}

/// The last bytes of a stream, at most `2 × LOG_TAIL_BYTES` held at once.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * LOG_TAIL_BYTES {
            let cut = self.bytes.len() - LOG_TAIL_BYTES;
            self.bytes.drain(..cut);
        }
    }
}

async fn drain(mut stream: impl tokio::io::AsyncRead + Unpin, into: Arc<Mutex<Tail>>) {
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Ok(mut t) = into.lock() {
                    t.push(&buf[..n]);
                }
            }
        }
    }
}
