//! Pieces shared by the benchmarks that need a real registry: a local `docker-registry`
//! (CNCF distribution 2.8) on 127.0.0.1, a keep-alive HTTP/1.1 connection to fill it
//! quickly, one tiny seed image whose blobs are mounted into many repositories, and
//! CPU and memory readings from `/proc`.
//!
//! Included with `#[path = "support/mod.rs"] mod support;`; each benchmark uses a part
//! of it, hence `dead_code` is allowed here.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A `docker-registry serve` child on a free port of 127.0.0.1, with its storage in a
/// temporary folder; killed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to completion; its stdout, or an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// Starts a registry and waits (up to 20 s) until it accepts connections. With
/// `BENCH_REGISTRY_LOG=FILE` in the environment its access log goes to FILE (diagnosis:
/// how many requests of which kind a run makes; not `REGISTRY_…`: the registry reads
/// those as configuration).
pub fn start_registry() -> Result<Registry> {
    let dir = tempfile::tempdir()?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let host = format!("127.0.0.1:{port}");
    let log = std::env::var_os("BENCH_REGISTRY_LOG");
    let level = if log.is_some() { "info" } else { "error" };
    let config = format!(
        "version: 0.1\nlog: {{level: {level}}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: {host}\n",
        dir.path().join("data").display()
    );
    std::fs::write(dir.path().join("config.yml"), config)?;
    let stderr = match &log {
        Some(path) => Stdio::from(std::fs::File::create(path)?),
        None => Stdio::null(),
    };
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("docker-registry")?;
    let registry = Registry {
        child,
        host,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(&registry.host).is_ok() {
            return Ok(registry);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("registry did not start")
}

/// One keep-alive HTTP/1.1 connection for filling the registry quickly.
pub struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    /// Connects to `host` (`127.0.0.1:PORT`).
    pub fn new(host: &str) -> Result<Self> {
        let stream = TcpStream::connect(host)?;
        // Header and body in one segment, no Nagle: otherwise every request waits
        // for a delayed ACK (40 ms).
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Self {
            stream,
            reader,
            host: host.to_owned(),
        })
    }

    /// Sends one request and reads the whole response; its HTTP status.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<u16> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request)?;
        let mut status = 0;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            if status == 0 {
                status = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut sink = vec![0; length];
        self.reader.read_exact(&mut sink)?;
        Ok(status)
    }
}

/// The repository the seed image is pushed to; other repositories mount its blobs.
pub const SEED_REPOSITORY: &str = "seed/img";

/// One tiny image (a single file `hello`) in [`SEED_REPOSITORY`]`:1`, whose manifest can
/// be put into any number of repositories after mounting its blobs there: a few
/// requests per repository instead of a `skopeo copy` each.
pub struct Seed {
    /// The manifest as the registry serves it.
    pub manifest: Vec<u8>,
    /// Its media type.
    pub media_type: String,
    /// Config and layer digests.
    blobs: Vec<String>,
}

impl Seed {
    /// Builds the image with `umoci`, pushes it with `skopeo` and reads its manifest back.
    pub fn push(registry: &Registry) -> Result<Self> {
        let work = tempfile::tempdir()?;
        let layout = work.path().join("layout");
        let image = format!("{}:base", layout.display());
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout))?;
        run(Command::new("umoci").args(["new", "--image", &image]))?;
        let bundle = work.path().join("bundle");
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image", &image])
            .arg(&bundle))?;
        std::fs::write(bundle.join("rootfs/hello"), "hello")?;
        run(Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle))?;
        run(Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{image}"))
            .arg(format!("docker://{}/{SEED_REPOSITORY}:1", registry.host)))?;
        let manifest = run(Command::new("curl").args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{}/v2/{SEED_REPOSITORY}/manifests/1", registry.host),
        ]))?;
        let doc: serde_json::Value = serde_json::from_slice(&manifest)?;
        let media_type = doc["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .to_owned();
        let mut blobs = vec![doc["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned()];
        blobs.extend(
            doc["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["digest"].as_str().map(str::to_owned)),
        );
        Ok(Self {
            manifest,
            media_type,
            blobs,
        })
    }

    /// Mounts the seed's blobs into `repo` (cross-repository blob mount).
    pub fn mount(&self, conn: &mut Conn, repo: &str) -> Result<()> {
        for blob in &self.blobs {
            let status = conn.send(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?mount={blob}&from={SEED_REPOSITORY}"),
                "application/octet-stream",
                b"",
            )?;
            if status != 201 {
                bail!("mount {blob} into {repo}: HTTP {status}");
            }
        }
        Ok(())
    }

    /// Puts the seed's manifest at `repo:tag` (its blobs must be mounted there).
    pub fn put(&self, conn: &mut Conn, repo: &str, tag: &str) -> Result<()> {
        self.put_manifest(conn, repo, tag, &self.manifest)
    }

    /// Puts `manifest` (the seed's, or one with the same blobs, e.g. another
    /// annotation: another digest) at `repo:tag`.
    pub fn put_manifest(
        &self,
        conn: &mut Conn,
        repo: &str,
        tag: &str,
        manifest: &[u8],
    ) -> Result<()> {
        let status = conn.send(
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &self.media_type,
            manifest,
        )?;
        if status != 201 {
            bail!("PUT {repo}:{tag}: HTTP {status}");
        }
        Ok(())
    }
}

/// Runs `work(conn, worker, workers)` on `workers` threads, each with its own
/// keep-alive connection to `host` (the registry writes files per request, so
/// parallel connections fill it faster); the first error.
pub fn in_parallel<F>(host: &str, workers: usize, work: F) -> Result<()>
where
    F: Fn(&mut Conn, usize, usize) -> Result<()> + Sync,
{
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let work = &work;
                scope.spawn(move || -> Result<()> {
                    let mut conn = Conn::new(host)?;
                    work(&mut conn, w, workers)
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("fill thread panicked"))??;
        }
        Ok(())
    })
}

/// User + system CPU seconds of this process so far (`/proc/self/stat`, clock ticks of 100 Hz).
pub fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// User + system CPU seconds of process `pid` (a number or `self`) so far; 0 when it
/// cannot be read.
pub fn cpu_seconds_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of this process, MB (`VmHWM` of `/proc/self/status`).
pub fn peak_rss_mb() -> u64 {
    status_kb("self", "VmHWM:").map_or(0, |kb| kb / 1024)
}

/// A `kB` field (`VmRSS:`, `VmHWM:`) of `/proc/<pid>/status`.
pub fn status_kb(pid: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
}
