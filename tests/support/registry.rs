//! Starts the CNCF distribution registry on 127.0.0.1 for tests, builds real images
//! with umoci/skopeo/buildah, and puts a fault-injecting proxy in front of it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the registry is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain HTTP, anonymous.
    Open,
    /// Plain HTTP, htpasswd basic auth with `USER`/`PASSWORD`.
    Basic,
    /// HTTPS with a certificate signed by a throwaway CA (`ca_pem()`), anonymous.
    Tls,
}

/// Basic-auth user of [`Mode::Basic`].
pub const USER: &str = "tester";
/// Basic-auth password of [`Mode::Basic`].
pub const PASSWORD: &str = "s3cret-pa55";

/// A running `docker-registry serve`, killed on drop.
pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The mode it runs in.
    pub mode: Mode,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        // SIGTERM to the watchdog shell, whose trap stops the registry.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestRegistry {
    /// Starts a registry and waits until `/v2/` answers.
    pub fn start(mode: Mode) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let d = dir.path();
        let mut config = format!(
            "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\n",
            d.join("data").display()
        );
        if mode == Mode::Basic {
            run(Command::new("htpasswd")
                .args(["-Bbc"])
                .arg(d.join("htpasswd"))
                .args([USER, PASSWORD]));
            config.push_str(&format!(
                "auth:\n  htpasswd: {{realm: test, path: {}}}\n",
                d.join("htpasswd").display()
            ));
        }
        config.push_str(&format!("http:\n  addr: {host}\n"));
        if mode == Mode::Tls {
            make_certs(d);
            config.push_str(&format!(
                "  tls: {{certificate: {}, key: {}}}\n",
                d.join("server.pem").display(),
                d.join("server.key").display()
            ));
        }
        std::fs::write(d.join("config.yml"), config).unwrap();
        // A watchdog shell stops the registry when the test process exits, so the
        // shared fixture (a static, never dropped) does not outlive `cargo test`.
        let script = format!(
            "docker-registry serve '{}' & r=$!; trap 'kill $r' TERM INT; while kill -0 {} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.5; done; kill $r 2>/dev/null; wait $r",
            d.join("config.yml").display(),
            std::process::id()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Self {
            child,
            dir,
            host,
            mode,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let mut cmd = Command::new("curl");
            cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
            if self.mode == Mode::Tls {
                cmd.arg("--cacert").arg(self.ca_path());
            }
            cmd.arg(format!("{}/v2/", self.base_url()));
            if let Ok(out) = cmd.output() {
                let code = String::from_utf8_lossy(&out.stdout).to_string();
                if code == "200" || code == "401" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("registry on {} did not become ready", self.host);
    }

    /// `http://127.0.0.1:PORT` or `https://…`.
    pub fn base_url(&self) -> String {
        let scheme = if self.mode == Mode::Tls {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.host)
    }

    /// The CA certificate (PEM file) of a [`Mode::Tls`] registry.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A scratch directory that lives as long as the registry.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn skopeo_dest_args(&self) -> Vec<String> {
        let mut args = vec!["--dest-tls-verify=false".to_owned()];
        if self.mode == Mode::Basic {
            args.push(format!("--dest-creds={USER}:{PASSWORD}"));
        }
        args
    }

    /// Pushes an OCI layout image `layout:tag` to `repo:dest_tag` with skopeo.
    pub fn push_layout(&self, layout: &Path, tag: &str, repo_tag: &str) {
        run(Command::new("skopeo")
            .args(["copy", "-q"])
            .args(self.skopeo_dest_args())
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host)));
    }

    /// `curl` to the registry (with credentials / CA as the mode needs); returns the body.
    pub fn curl(&self, args: &[&str]) -> Vec<u8> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sf"]);
        if self.mode == Mode::Basic {
            cmd.args(["-u", &format!("{USER}:{PASSWORD}")]);
        }
        if self.mode == Mode::Tls {
            cmd.arg("--cacert").arg(self.ca_path());
        }
        cmd.args(args);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The raw manifest (and its media type) at `repo:reference`.
    pub fn manifest(&self, repo: &str, reference: &str) -> (Vec<u8>, String) {
        let dir = self.scratch("curl");
        let headers = dir.join(format!("h-{}", fastrand_name()));
        let body = self.curl(&[
            "-D",
            headers.to_str().unwrap(),
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            &format!("{}/v2/{repo}/manifests/{reference}", self.base_url()),
        ]);
        let h = std::fs::read_to_string(headers).unwrap();
        let ct = h
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type:")
                    .map(|v| v.trim().to_owned())
            })
            .unwrap();
        (body, ct)
    }

    /// PUTs a manifest under each of `tags` over one keep-alive connection (plain HTTP,
    /// open mode only): the fast way to make a repository with thousands of tags.
    pub fn put_manifest_tags(
        &self,
        repo: &str,
        manifest: &[u8],
        media_type: &str,
        tags: &[String],
    ) {
        assert_eq!(self.mode, Mode::Open);
        let mut stream = TcpStream::connect(&self.host).unwrap();
        // No Nagle, one write per request: else each PUT waits for a delayed ACK.
        stream.set_nodelay(true).unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        for tag in tags {
            let head = format!(
                "PUT /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {}\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\n\r\n",
                self.host,
                manifest.len()
            );
            let mut request = head.into_bytes();
            request.extend_from_slice(manifest);
            stream.write_all(&request).unwrap();
            let (status, _) = read_http_response(&mut reader, false);
            assert_eq!(status, 201, "PUT {repo}:{tag}");
        }
    }

    /// PUTs a manifest document (index or image) under `reference` with curl.
    pub fn put_manifest(&self, repo: &str, reference: &str, manifest: &[u8], media_type: &str) {
        let file = self.scratch("put").join(fastrand_name());
        std::fs::write(&file, manifest).unwrap();
        self.curl(&[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {media_type}"),
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{}/v2/{repo}/manifests/{reference}", self.base_url()),
        ]);
    }
}

fn fastrand_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "f{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Reads one HTTP/1.1 response (status, full bytes) from a keep-alive stream.
pub fn read_http_response<R: std::io::BufRead>(reader: &mut R, head_only: bool) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    let mut content_length = 0usize;
    let mut status = 0u16;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        raw.extend_from_slice(line.as_bytes());
        if status == 0 {
            status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    if !head_only {
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).unwrap();
        raw.extend_from_slice(&body);
    }
    (status, raw)
}

fn make_certs(d: &Path) {
    let p = |n: &str| d.join(n).display().to_string();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]));
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]));
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &p("server.pem"),
        "-extfile",
        &p("ext.cnf"),
    ]));
}

/// An OCI layout with one image built by umoci: a file layer, a config with
/// `created`, labels, os and architecture.
pub struct Layout {
    /// Layout directory.
    pub path: PathBuf,
}

impl Layout {
    /// `umoci init` + `umoci new --image L:tag`, adds `files` (path, content) as one
    /// layer, sets config fields.
    pub fn build(
        dir: &Path,
        tag: &str,
        files: &[(&str, &str)],
        arch: &str,
        created: &str,
        labels: &[(&str, &str)],
    ) -> Self {
        let path = dir.join("layout");
        if !path.exists() {
            run(Command::new("umoci").args(["init", "--layout"]).arg(&path));
        }
        let image = format!("{}:{tag}", path.display());
        run(Command::new("umoci").args(["new", "--image", &image]));
        if !files.is_empty() {
            let bundle = dir.join(format!("bundle-{tag}"));
            run(Command::new("umoci")
                .args(["unpack", "--rootless", "--image", &image])
                .arg(&bundle));
            for (name, content) in files {
                std::fs::write(bundle.join("rootfs").join(name), content).unwrap();
            }
            run(Command::new("umoci")
                .args(["repack", "--image", &image])
                .arg(&bundle));
            std::fs::remove_dir_all(&bundle).unwrap();
        }
        let mut cmd = Command::new("umoci");
        cmd.args([
            "config",
            "--image",
            &image,
            "--architecture",
            arch,
            "--os",
            "linux",
            "--created",
            created,
        ]);
        for (k, v) in labels {
            cmd.args(["--config.label", &format!("{k}={v}")]);
        }
        run(&mut cmd);
        Self { path }
    }
}

/// `buildah bud` of a Dockerfile `FROM base` with a COPY and LABEL, pushed to `target`
/// (`repo:tag` on the registry). buildah writes the base annotations.
pub fn buildah_build(registry: &TestRegistry, base: &str, target: &str) {
    let work = registry.scratch(&format!("build-{}", fastrand_name()));
    let root = registry.scratch("buildah-root");
    let runroot = registry.scratch("buildah-runroot");
    std::fs::write(work.join("hello.txt"), format!("built for {target}\n")).unwrap();
    std::fs::write(
        work.join("Dockerfile"),
        format!(
            "FROM {}/{base}\nCOPY hello.txt /hello.txt\nLABEL org.example.team=platform\n",
            registry.host
        ),
    )
    .unwrap();
    let image = format!("{}/{target}", registry.host);
    let common = |cmd: &mut Command| {
        cmd.arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(["--storage-driver", "vfs"]);
    };
    let mut bud = Command::new("buildah");
    common(&mut bud);
    bud.args([
        "bud",
        "-q",
        "--isolation",
        "chroot",
        "--tls-verify=false",
        "--pull-always",
        "-t",
        &image,
    ])
    .arg(&work);
    run(&mut bud);
    let mut push = Command::new("buildah");
    common(&mut push);
    push.args(["push", "-q", "--tls-verify=false", &image]);
    run(&mut push);
}

/// What the fault proxy does with the next matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds when given), no body.
    Status(u16, Option<u64>),
    /// Send headers promising more body than is sent, then close.
    Cut,
    /// Wait this long before forwarding.
    Slow(Duration),
    /// Forward, but drop the `Docker-Content-Digest` response header.
    StripDigestHeader,
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `HEAD`, `GET`.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// When it arrived.
    pub at: Instant,
    /// The `Authorization` header's scheme (`Bearer`, `Basic`), if any.
    pub auth_scheme: Option<String>,
}

#[derive(Default)]
struct ProxyState {
    faults: Vec<(String, Fault)>,
    seen: Vec<Seen>,
    /// Bearer mode: token lifetime (s) and issued tokens with expiry.
    bearer: Option<u64>,
    /// Token endpoint requires these basic credentials.
    token_basic: Option<String>,
    /// Token endpoint accepts `POST grant_type=refresh_token` with this refresh token.
    refresh_token: Option<String>,
    tokens: Vec<(String, Instant)>,
    /// Paginate tag lists (`n`, `last`, `Link`) over the upstream's full answer, as
    /// distribution v3, Docker Hub and GHCR do (distribution 2.8 ignores `n`).
    paginate_tags: bool,
}

/// A fault-injecting HTTP proxy in front of an open (plain HTTP) registry. Serves one
/// request per connection (`Connection: close`).
#[derive(Clone)]
pub struct FaultProxy {
    /// `127.0.0.1:PORT` of the proxy.
    pub host: String,
    state: Arc<Mutex<ProxyState>>,
}

impl FaultProxy {
    /// Starts the proxy on a free port in front of `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let proxy = Self {
            host: host.clone(),
            state: state.clone(),
        };
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = state.clone();
                let upstream = upstream.clone();
                let host = host.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &state, &upstream, &host);
                });
            }
        });
        proxy
    }

    /// Injects `fault` into the next request whose path contains `path_part`.
    pub fn inject(&self, path_part: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .push((path_part.to_owned(), fault));
    }

    /// Requires bearer tokens (lifetime `expires_in` seconds) on `/v2/…`, served by the
    /// proxy's `/token`; with `basic`, the token endpoint requires `user:password`.
    pub fn require_bearer(&self, expires_in: u64, basic: Option<(&str, &str)>) {
        let mut s = self.state.lock().unwrap();
        s.bearer = Some(expires_in);
        s.token_basic = basic.map(|(u, p)| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        });
    }

    /// Makes the token endpoint accept only an OAuth2 refresh-token POST with `token`.
    pub fn require_refresh_token(&self, expires_in: u64, token: &str) {
        let mut s = self.state.lock().unwrap();
        s.bearer = Some(expires_in);
        s.refresh_token = Some(token.to_owned());
    }

    /// Serves tag lists in pages (`n`, `last`, `Link: <…>; rel="next"`).
    pub fn paginate_tags(&self) {
        self.state.lock().unwrap().paginate_tags = true;
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Forgets the requests seen so far.
    pub fn reset_seen(&self) {
        self.state.lock().unwrap().seen.clear();
    }

    /// Seen requests with this method whose path contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.contains(part))
            .count()
    }
}

fn serve(
    mut client: TcpStream,
    state: &Mutex<ProxyState>,
    upstream: &str,
    own_host: &str,
) -> std::io::Result<()> {
    let mut reader = std::io::BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut request_line)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        headers.push(line.trim_end().to_owned());
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let authorization = headers.iter().find_map(|h| {
        h.to_ascii_lowercase()
            .starts_with("authorization:")
            .then(|| h["authorization:".len()..].trim().to_owned())
    });
    let fault: Option<Fault> = {
        let mut s = state.lock().unwrap();
        s.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            at: Instant::now(),
            auth_scheme: authorization
                .as_ref()
                .and_then(|a| a.split_whitespace().next().map(str::to_owned)),
        });
        let i = s.faults.iter().position(|(p, _)| path.contains(p.as_str()));
        i.map(|i| s.faults.remove(i).1)
    };
    let respond = |client: &mut TcpStream, status: u16, extra: &str, body: &str| {
        let msg = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        );
        client.write_all(msg.as_bytes())
    };
    match &fault {
        Some(Fault::Status(code, retry_after)) => {
            let (code, retry_after) = (*code, *retry_after);
            let extra = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            return respond(&mut client, code, &extra, "");
        }
        Some(Fault::Cut) => {
            client.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"tags\":[")?;
            return Ok(());
        }
        Some(Fault::Slow(d)) => std::thread::sleep(*d),
        Some(Fault::StripDigestHeader) | None => {}
    }
    // Token endpoint and bearer enforcement.
    let bearer = state.lock().unwrap().bearer;
    if let Some(lifetime) = bearer {
        if path.starts_with("/token") {
            let refresh = state.lock().unwrap().refresh_token.clone();
            if let Some(refresh) = refresh {
                let length: usize = headers
                    .iter()
                    .find_map(|h| {
                        h.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body)?;
                let form = String::from_utf8_lossy(&body).to_string();
                let ok = method == "POST"
                    && form.split('&').any(|p| p == "grant_type=refresh_token")
                    && form
                        .split('&')
                        .any(|p| p == format!("refresh_token={refresh}"));
                if !ok {
                    return respond(&mut client, 401, "", "");
                }
                let token = format!("tok-{}", fastrand_name());
                state.lock().unwrap().tokens.push((
                    token.clone(),
                    Instant::now() + Duration::from_secs(lifetime),
                ));
                let body = format!("{{\"access_token\":\"{token}\",\"expires_in\":{lifetime}}}");
                return respond(
                    &mut client,
                    200,
                    "Content-Type: application/json\r\n",
                    &body,
                );
            }
            let required = state.lock().unwrap().token_basic.clone();
            if let Some(required) = required {
                if authorization.as_deref() != Some(&format!("Basic {required}")) {
                    return respond(&mut client, 401, "", "");
                }
            }
            let token = format!("tok-{}", fastrand_name());
            state.lock().unwrap().tokens.push((
                token.clone(),
                Instant::now() + Duration::from_secs(lifetime),
            ));
            let body = format!("{{\"token\":\"{token}\",\"expires_in\":{lifetime}}}");
            return respond(
                &mut client,
                200,
                "Content-Type: application/json\r\n",
                &body,
            );
        }
        let valid = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| {
                state
                    .lock()
                    .unwrap()
                    .tokens
                    .iter()
                    .any(|(tok, exp)| tok == t && Instant::now() < *exp)
            });
        if !valid {
            let repo = path
                .trim_start_matches("/v2/")
                .split("/manifests/")
                .next()
                .unwrap_or("")
                .split("/tags/")
                .next()
                .unwrap_or("")
                .split("/blobs/")
                .next()
                .unwrap_or("");
            let extra = format!(
                "WWW-Authenticate: Bearer realm=\"http://{own_host}/token\",service=\"test-registry\",scope=\"repository:{repo}:pull\"\r\n"
            );
            return respond(&mut client, 401, &extra, "");
        }
    }
    // Forward to the upstream registry, one request per connection.
    let mut up = TcpStream::connect(upstream)?;
    // HTTP/1.0 for tag lists so the body comes unchunked and can be re-paged.
    let version = if path.contains("/tags/list") {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let mut forwarded =
        format!("{method} {path} {version}\r\nHost: {upstream}\r\nConnection: close\r\n");
    for h in &headers {
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("host:")
            || lower.starts_with("connection:")
            || lower.starts_with("authorization:")
        {
            continue;
        }
        forwarded.push_str(h);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("\r\n");
    up.write_all(forwarded.as_bytes())?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let paginate = state.lock().unwrap().paginate_tags;
    if paginate && path.contains("/tags/list") {
        response = paginate_tag_page(&response, &path);
    }
    if matches!(fault, Some(Fault::StripDigestHeader)) {
        let text = String::from_utf8_lossy(&response).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let kept: Vec<&str> = head
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("docker-content-digest"))
            .collect();
        response = format!("{}\r\n\r\n{body}", kept.join("\r\n")).into_bytes();
    }
    client.write_all(&response)?;
    Ok(())
}

/// Cuts a full tag-list response down to the page `n`/`last` of `path` asks for (tags in
/// lexical order, as the OCI distribution spec requires) and adds a `Link` to the next.
fn paginate_tag_page(response: &[u8], path: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(response).to_string();
    let Some((_, body)) = text.split_once("\r\n\r\n") else {
        return response.to_vec();
    };
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(body) else {
        return response.to_vec();
    };
    let mut tags: Vec<String> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    tags.sort();
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let mut n = usize::MAX;
    let mut last: Option<String> = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("n", v)) => n = v.parse().unwrap_or(usize::MAX),
            Some(("last", v)) => last = Some(v.to_owned()),
            _ => {}
        }
    }
    let start = last.map_or(0, |l| {
        tags.iter().position(|t| *t > l).unwrap_or(tags.len())
    });
    let page: Vec<String> = tags.iter().skip(start).take(n).cloned().collect();
    let more = start + page.len() < tags.len();
    let body = serde_json::json!({"name": doc["name"], "tags": page}).to_string();
    let mut head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    if more {
        head.push_str(&format!(
            "Link: <{route}?n={n}&last={}>; rel=\"next\"\r\n",
            page.last().cloned().unwrap_or_default()
        ));
    }
    format!("{head}\r\n{body}").into_bytes()
}
