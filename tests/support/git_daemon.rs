//! Git remotes for tests: bare repositories, `git daemon` on 127.0.0.1 (stoppable and
//! restartable on the same port), a git CLI helper, and an HTTP remote that refuses every
//! credential.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::free_port;

/// Runs `git` in `dir` with a fixed identity; panics with its output when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_output(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `git` in `dir`, returning its output whatever the status.
pub fn git_output(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Pat Person")
        .env("GIT_AUTHOR_EMAIL", "pat@example.com")
        .env("GIT_COMMITTER_NAME", "Pat Person")
        .env("GIT_COMMITTER_EMAIL", "pat@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap()
}

/// Creates a bare repository `NAME.git` under `dir` whose `main` holds one commit with
/// `images.yaml`, as a configuration repository would. Returns its path.
pub fn config_repo(dir: &Path, name: &str) -> PathBuf {
    let bare = dir.join(format!("{name}.git"));
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "--bare", "-q", "-b", "main"]);
    let seed = dir.join(format!("{name}-seed"));
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("images.yaml"), "images: []\n").unwrap();
    git(&seed, &["add", "images.yaml"]);
    git(&seed, &["commit", "-q", "-m", "enroll nothing yet"]);
    git(&seed, &["push", "-q", bare.to_str().unwrap(), "main"]);
    bare
}

/// A running `git daemon` serving a base folder with receive-pack enabled; killed on drop.
pub struct GitDaemon {
    child: Option<Child>,
    base: PathBuf,
    /// The port on 127.0.0.1.
    pub port: u16,
}

impl GitDaemon {
    /// Serves `base` on a free port and waits until it accepts connections.
    pub fn start(base: &Path) -> Self {
        let mut daemon = Self {
            child: None,
            base: base.to_path_buf(),
            port: free_port(),
        };
        daemon.resume();
        daemon
    }

    /// `git://127.0.0.1:PORT/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the daemon (the port stops answering).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "git daemon on {} did not stop",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon again on the same port.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        // `git daemon` runs `git-daemon` as a child it does not stop when killed, so start
        // `git-daemon` itself: killing it closes the port.
        let exec_path = git(&self.base, &["--exec-path"]);
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args([
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--base-path={}", self.base.display()))
            .arg(format!("--port={}", self.port))
            .arg(&self.base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP server on 127.0.0.1 that answers every request `401 Unauthorized` with a Basic
/// challenge, so every credential is refused. Stops on drop.
pub struct Unauthorized {
    /// The port.
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Unauthorized {
    /// Starts it.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Unauthorized {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
