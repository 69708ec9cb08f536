//! A real Kubernetes API server (shared/k8s: apiextensions-apiserver + etcd) per test binary.
//!
//! Set `IMAGE_FACTORY_KUBECONFIG` to run against another cluster (for example kind)
//! instead; the tests only create namespaced objects with dry-run and CRDs.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The kubeconfig of this test binary's API server, started on first use on 127.0.0.1.
/// run.sh's watchdog stops it when the test process exits.
pub fn kubeconfig() -> &'static PathBuf {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        if let Some(path) = std::env::var_os("IMAGE_FACTORY_KUBECONFIG") {
            return PathBuf::from(path);
        }
        let run_sh = super::shared_dir().join("k8s/run.sh");
        let dir = std::env::temp_dir().join(format!("image-factory-k8s-{}", std::process::id()));
        let kubeconfig = dir.join("kubeconfig");
        let out = Command::new(run_sh)
            .arg("start")
            .arg(&kubeconfig)
            .env("K8S_RUN_DIR", &dir)
            .env("K8S_OWNER_PID", std::process::id().to_string())
            .output()
            .expect("run.sh");
        assert!(
            out.status.success(),
            "run.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        kubeconfig
    })
}

/// Runs kubectl against the test API server; returns (success, stdout + stderr).
pub fn kubectl(args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("kubectl is installed (.ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A kube client for this test binary's API server (or `IMAGE_FACTORY_KUBECONFIG`'s).
pub async fn client() -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("kubeconfig is usable");
    kube::Client::try_from(config).expect("client")
}

/// Applies a CRD file (server-side, idempotent) and waits until it is Established.
pub fn apply_crd(path: &std::path::Path, name: &str) {
    let (ok, out) = kubectl(&["apply", "--server-side", "-f", &path.display().to_string()]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        &format!("crd/{name}"),
    ]);
    assert!(ok, "{out}");
}

/// Creates a uniquely named namespace for one test and returns its name.
pub fn namespace(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("{prefix}-{}-{n}", std::process::id());
    let (ok, out) = kubectl(&["create", "namespace", &name]);
    assert!(ok, "{out}");
    name
}

/// Creates `object` (JSON) in namespace `ns` with `kubectl create`; returns its uid.
pub fn create(ns: &str, object: &serde_json::Value) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), object.to_string()).unwrap();
    let path = file.path().display().to_string();
    let (ok, out) = kubectl(&[
        "-n",
        ns,
        "create",
        "-f",
        &path,
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert!(ok, "{out}");
    out
}

/// Plays the kubelet: container `container` of Pod `pod` in `ns` runs `image` at
/// `digest` (`status.containerStatuses[].imageID`).
pub fn set_running(ns: &str, pod: &str, container: &str, image: &str, digest: &str) {
    let repository = image_factory::reference::Reference::parse(image)
        .unwrap()
        .repo_url();
    let status = serde_json::json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": container, "image": image, "imageID": format!("{repository}@{digest}"),
        "ready": true, "restartCount": 0}]}});
    let (ok, out) = kubectl(&[
        "-n",
        ns,
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    assert!(ok, "{out}");
}
