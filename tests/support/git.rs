//! Git remotes for tests: bare repositories served by path (`file://`) or by a real
//! `git daemon` on 127.0.0.1, and a working clone that commits, tags and (force-)pushes.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::registry::free_port;

/// Runs `git` in `dir` with a fixed identity and `main` as the default branch; returns
/// stdout, trimmed. Panics with git's stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_with(dir, args, &[])
}

/// As [`git`], with `env` set (e.g. fixed `GIT_AUTHOR_DATE`/`GIT_COMMITTER_DATE` for
/// reproducible commit ids).
pub fn git_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("git {args:?}: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running `git daemon` serving every repository under its base folder, on a loopback
/// port the harness picked; stopped on drop.
pub struct GitDaemon {
    child: Child,
    base: tempfile::TempDir,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl GitDaemon {
    /// Starts `git daemon --reuseaddr --export-all --enable=receive-pack` on a free port and
    /// waits until the port accepts connections.
    pub fn start() -> Self {
        let base = tempfile::tempdir().unwrap();
        // A free port can be taken between the probe and the bind: try a few.
        for _ in 0..5 {
            let port = free_port();
            let dir = base.path().display().to_string();
            // A watchdog shell stops the daemon when the test process exits, even when the
            // test is killed before Drop runs.
            let script = format!(
                "git daemon --reuseaddr --export-all --enable=receive-pack --base-path='{dir}' \
                 --listen=127.0.0.1 --port={port} '{dir}' & d=$!; \
                 trap 'kill $d' TERM INT; \
                 while kill -0 {} 2>/dev/null && kill -0 $d 2>/dev/null; do sleep 0.5; done; \
                 kill $d 2>/dev/null; wait $d",
                std::process::id()
            );
            let mut child = Command::new("sh")
                .args(["-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if wait_for_port(port, &mut child) {
                return Self { child, base, port };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("git daemon did not start");
    }

    /// The folder it serves; `git://127.0.0.1:PORT/NAME` is `base()/NAME`.
    pub fn base(&self) -> &Path {
        self.base.path()
    }

    /// `git://127.0.0.1:PORT/name`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        // SIGTERM to the watchdog shell, whose trap stops the daemon.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Whether `port` accepts connections within 10 s while `child` is alive.
fn wait_for_port(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// An upstream repository: a bare remote and a working clone that pushes to it by path.
pub struct Upstream {
    /// The working clone.
    pub work: PathBuf,
    /// The bare repository the sources fetch from.
    pub bare: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Upstream {
    /// An empty bare repository at `bare` (created), with a working clone in a temp dir.
    pub fn new(bare: PathBuf) -> Self {
        let scratch = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare"]);
        let work = scratch.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q"]);
        git(
            &work,
            &["remote", "add", "origin", &bare.display().to_string()],
        );
        Self {
            work,
            bare,
            _scratch: scratch,
        }
    }

    /// Writes `path` = `content` in the working clone and commits it; returns the commit.
    pub fn commit(&self, path: &str, content: &str) -> String {
        let file = self.work.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-qm", &format!("{path}: {content}")],
        );
        self.head()
    }

    /// The working clone's `HEAD` commit.
    pub fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Runs git in the working clone.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.work, args)
    }

    /// `git push --force origin REFSPEC…` (branches, tags, `:deleted`).
    pub fn push(&self, refspecs: &[&str]) {
        let mut args = vec!["push", "-q", "--force", "origin"];
        args.extend_from_slice(refspecs);
        git(&self.work, &args);
    }
}
