//! Installing on a real cluster (issue 13): `deploy/` renders, the API server accepts
//! what it serves, the built-in kinds it only stores are checked against the upstream
//! types, the operator image builds offline with buildah and its binary runs, and the
//! controller — run for real against an API server that writes an audit log — makes no
//! request the RBAC in `deploy/` does not grant, while that RBAC grants nothing the code
//! does not do (except the listed, explained extras).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use image_factory::kargo::{Freight, FreightImage, FreightOrigin};
use image_factory::runtime::Digest;
use serde_json::Value;

use crate::factory::stop;
use crate::rebuilds::{push_base, registry, run};
use crate::support::k8s::{apply_crd, kubectl};
use crate::support::registry::free_port;
use crate::support::{repo_root, shared_dir};

const BIN: &str = env!("CARGO_BIN_EXE_image-factory");

/// `kubectl kustomize DIR` (relative to the repository) as one JSON value per object.
fn render(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", &repo_root().join(dir).display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split("\n---\n")
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap())
        .collect()
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or_default()
}

fn find<'a>(objects: &'a [Value], kind_name: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind(o) == kind_name && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind_name} {name}"))
}

/// Writes objects as one `v1` `List` for kubectl.
fn write_stream(path: &Path, objects: &[&Value]) {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(path, serde_json::to_string(&list).unwrap()).unwrap();
}

#[test]
fn deploy_renders_the_operator_with_crds_warehouses_and_a_hardened_deployment() {
    let base = render("deploy");
    let overlay = render("deploy/overlays/example");
    for objects in [&base, &overlay] {
        // The CRDs come from crds/ (every file `image-factory crds` writes).
        let crds: Vec<&str> = objects
            .iter()
            .filter(|o| kind(o) == "CustomResourceDefinition")
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(crds, ["imagefactoryrebuilds.imagefactory.dev"]);
        // The generated Warehouses stay included for Argo CD.
        let warehouses = objects.iter().filter(|o| kind(o) == "Warehouse").count();
        let files = std::fs::read_dir(repo_root().join("state/warehouses"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "kustomization.yaml")
            .count();
        assert_eq!(warehouses, files);
        // Credentials are never committed: no Secret objects at all.
        assert!(objects.iter().all(|o| kind(o) != "Secret"));
    }
    // crds/kustomization.yaml lists every generated CRD file.
    let listed = std::fs::read_to_string(repo_root().join("crds/kustomization.yaml")).unwrap();
    for entry in std::fs::read_dir(repo_root().join("crds")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name != "kustomization.yaml" {
            assert!(
                listed.contains(&name),
                "crds/kustomization.yaml misses {name}"
            );
        }
    }

    let deployment = find(&overlay, "Deployment", "image-factory");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["serviceAccountName"], "image-factory");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(
        c["image"],
        "registry.example.com/platform/image-factory:0.1.0"
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "controller");
    assert!(args.contains(&"--lease=image-factory"), "{args:?}");
    assert!(args.contains(&"--listen=0.0.0.0:9090"), "{args:?}");
    // The flags parse: the binary accepts exactly these arguments.
    let mut help = args.clone();
    help.push("--help");
    let out = Command::new(BIN).args(&help).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = |name: &str| -> Value {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no env {name}"))
    };
    assert_eq!(
        env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    // Every path the controller writes is on an emptyDir (the root is read-only).
    let mounts = c["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    let empty_dir_mount = |path: &str| {
        mounts.iter().any(|m| {
            path.starts_with(m["mountPath"].as_str().unwrap())
                && volumes
                    .iter()
                    .any(|v| v["name"] == m["name"] && v.get("emptyDir").is_some())
        })
    };
    for var in ["IMAGE_FACTORY_CACHE", "IMAGE_FACTORY_CHECKOUT", "HOME"] {
        let path = env(var)["value"].as_str().unwrap().to_string();
        assert!(empty_dir_mount(&path), "{var}={path} is not on an emptyDir");
    }
    for m in mounts {
        assert!(volumes.iter().any(|v| v["name"] == m["name"]), "{m}");
    }
    // Secrets by reference: the files the environment names are mounted Secrets.
    for (var, secret) in [
        ("IMAGE_FACTORY_GIT_TOKEN", "image-factory-git"),
        ("REGISTRY_AUTH_FILE", "image-factory-registry"),
    ] {
        let value = env(var)["value"].as_str().unwrap().to_string();
        let path = value.trim_start_matches("file:");
        let mount = mounts
            .iter()
            .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("{var}: {path} is not mounted"));
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        assert_eq!(volume["secret"]["secretName"], secret);
    }
    // Probes and the metrics Service reach the --listen port, by its name.
    let port = &c["ports"][0];
    assert_eq!(port["containerPort"], 9090);
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], port["name"], "{probe}");
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
    }
    let service = find(&overlay, "Service", "image-factory-metrics");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port["name"]);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service selects the pods");
    }
    let monitor = find(&overlay, "ServiceMonitor", "image-factory");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][k], v);
    }
    let pdb = find(&overlay, "PodDisruptionBudget", "image-factory");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    // The overlay's config reaches the ConfigMap the Deployment reads.
    let config = find(&overlay, "ConfigMap", "image-factory");
    assert_eq!(
        config["data"]["IMAGE_FACTORY_REPO"],
        "https://github.com/example-org/image-factory-config.git"
    );
    assert_eq!(c["envFrom"][0]["configMapRef"]["name"], "image-factory");
}

/// Built-in kinds the test API server only stores (its validation covers `metadata`)
/// or does not serve: each object must survive a round trip through the upstream
/// Kubernetes types unchanged — a misspelt or misplaced field is dropped by the round
/// trip, a wrong type fails it. Returns the problems.
fn typed_round_trip_problems(objects: &[Value]) -> Vec<String> {
    fn check<T: serde::de::DeserializeOwned + serde::Serialize>(o: &Value) -> Option<String> {
        match serde_json::from_value::<T>(o.clone()) {
            Err(e) => Some(e.to_string()),
            Ok(typed) => {
                let back = serde_json::to_value(&typed).unwrap();
                (back != *o).then(|| format!("fields lost: {}", diff(o, &back, "")))
            }
        }
    }
    fn diff(want: &Value, got: &Value, at: &str) -> String {
        match (want, got) {
            (Value::Object(a), Value::Object(b)) => a
                .iter()
                .filter(|(k, v)| b.get(*k) != Some(v))
                .map(|(k, v)| diff(v, b.get(k).unwrap_or(&Value::Null), &format!("{at}.{k}")))
                .collect::<Vec<_>>()
                .join(", "),
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
                .iter()
                .zip(b)
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .map(|(i, (x, y))| diff(x, y, &format!("{at}[{i}]")))
                .collect::<Vec<_>>()
                .join(", "),
            _ => at.to_string(),
        }
    }
    use k8s_openapi::api::{apps, core, policy, rbac};
    objects
        .iter()
        .filter_map(|o| {
            let problem = match kind(o) {
                "Namespace" => check::<core::v1::Namespace>(o),
                "ServiceAccount" => check::<core::v1::ServiceAccount>(o),
                "ConfigMap" => check::<core::v1::ConfigMap>(o),
                "Service" => check::<core::v1::Service>(o),
                "Deployment" => check::<apps::v1::Deployment>(o),
                "PodDisruptionBudget" => check::<policy::v1::PodDisruptionBudget>(o),
                "Role" => check::<rbac::v1::Role>(o),
                "RoleBinding" => check::<rbac::v1::RoleBinding>(o),
                _ => None,
            }?;
            Some(format!("{} {}: {problem}", kind(o), o["metadata"]["name"]))
        })
        .collect()
}

#[test]
fn the_api_server_accepts_deploy_and_the_upstream_types_accept_every_built_in_object() {
    let objects = render("deploy/overlays/example");
    let problems = typed_round_trip_problems(&objects);
    assert!(problems.is_empty(), "{problems:#?}");
    // The check can fail: a misspelt field in the Deployment is reported.
    let mut bad = find(&objects, "Deployment", "image-factory").clone();
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] =
        Value::Bool(true);
    let problems = typed_round_trip_problems(&[bad]);
    assert!(
        problems.len() == 1 && problems[0].contains("readOnlyRootFS"),
        "{problems:?}"
    );

    // Server-side dry run of everything the API server serves (CRDs, core kinds,
    // RBAC, workloads, Kargo's kinds); Services, PDBs and ServiceMonitors it does not
    // serve are covered by the round trip above (ServiceMonitor: by its references).
    for (file, name) in [
        (
            "kargo.akuity.io_warehouses.yaml",
            "warehouses.kargo.akuity.io",
        ),
        ("kargo.akuity.io_projects.yaml", "projects.kargo.akuity.io"),
    ] {
        apply_crd(&shared_dir().join("kargo/crds").join(file), name);
    }
    let unserved = ["Service", "PodDisruptionBudget", "ServiceMonitor"];
    let served: Vec<&Value> = objects
        .iter()
        .filter(|o| !unserved.contains(&kind(o)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("served.yaml");
    write_stream(&file, &served);
    let (ok, out) = kubectl(&[
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        &file.display().to_string(),
    ]);
    assert!(ok, "{out}");
    assert_eq!(
        out.matches("(server dry run)").count(),
        served.len(),
        "{out}"
    );
    // A CRD-served object with an unknown field is refused, so the check can fail.
    let mut bad = find(&objects, "Warehouse", "node-22").clone();
    bad["spec"]["intervalz"] = Value::String("1m".into());
    write_stream(&file, &[&bad]);
    let (ok, out) = kubectl(&[
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        &file.display().to_string(),
    ]);
    assert!(!ok && out.contains("intervalz"), "{out}");
}

#[test]
fn the_operator_image_builds_offline_with_buildah_and_its_binary_runs() {
    let root = repo_root();
    // Our own analysis reads the Dockerfile: the stages and the two external bases.
    let out = Command::new(BIN)
        .args(["dockerfile", "Dockerfile", "--output", "json"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let analysis: Value = serde_json::from_slice(&out.stdout).unwrap();
    let df = &analysis[0];
    assert_eq!(df["errors"], serde_json::json!([]));
    let stages: Vec<(&str, &str)> = df["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["from"]["reference"]
                    .as_str()
                    .or(s["from"]["raw"].as_str())
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        [
            ("runtime-base", "gcr.io/distroless/cc-debian12:nonroot"),
            ("runtime-prebuilt", "runtime-base"),
            ("build", "docker.io/library/rust:1.95-bookworm"),
            ("runtime", "runtime-base"),
        ]
    );

    // A runtime base made from the host: the binary's shared libraries (ldd), CA
    // certificates, a passwd entry for 65532; pushed to the real registry.
    let r = registry();
    let scratch = r.scratch("deploy-image");
    let layout = scratch.join("layout");
    let bundle = scratch.join("bundle");
    let _ = std::fs::remove_dir_all(&layout);
    let _ = std::fs::remove_dir_all(&bundle);
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:cc", layout.display())));
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:cc", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let ldd = Command::new("ldd").arg(BIN).output().unwrap();
    assert!(ldd.status.success());
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let target = rootfs.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(lib, &target).unwrap();
    }
    std::fs::create_dir_all(rootfs.join("etc/ssl/certs")).unwrap();
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        rootfs.join("etc/ssl/certs/ca-certificates.crt"),
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnonroot:x:65532:\n").unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image"])
        .arg(format!("{}:cc", layout.display()))
        .arg(&bundle));
    let base = format!("{}/deploy/cc:host", r.host);
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:cc", layout.display()))
        .arg(format!("docker://{base}")));

    // The build context of the offline path: the binary where BINARY says (stripped
    // of debug info, the image needs none); the repository's Dockerfile.
    let context = scratch.join("context");
    std::fs::create_dir_all(context.join("target/debug")).unwrap();
    run(Command::new("strip")
        .arg("-o")
        .arg(context.join("target/debug/image-factory"))
        .arg(BIN));
    let storage = scratch.join("storage");
    let buildah = || {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args(["--storage-driver", "vfs"]);
        cmd
    };
    let tag = "localhost/image-factory:offline";
    let started = Instant::now();
    run(buildah()
        .args(["bud", "--isolation", "chroot", "--tls-verify=false"])
        .args(["--target", "runtime-prebuilt"])
        .args(["--build-arg", &format!("RUNTIME_BASE={base}")])
        .args(["--build-arg", "BINARY=target/debug/image-factory"])
        .args(["--build-arg", "VERSION=1.2.3"])
        .args(["--build-arg", "REVISION=0123abc"])
        .arg("-f")
        .arg(root.join("Dockerfile"))
        .args(["-t", tag])
        .arg(&context));
    eprintln!("offline image built in {:?}", started.elapsed());

    let inspect = buildah()
        .args(["inspect", "--type", "image", tag])
        .output()
        .unwrap();
    assert!(inspect.status.success());
    let image: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let config = &image["OCIv1"]["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/image-factory"])
    );
    assert_eq!(config["Cmd"], serde_json::json!(["controller"]));
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], "1.2.3");
    assert_eq!(labels["org.opencontainers.image.revision"], "0123abc");
    assert!(labels["org.opencontainers.image.source"]
        .as_str()
        .unwrap()
        .starts_with("https://"));

    // The image runs its binary, with only the image's own loader and libraries.
    let container = buildah().args(["from", tag]).output().unwrap();
    assert!(container.status.success());
    let container = String::from_utf8(container.stdout).unwrap();
    let version = buildah()
        .args(["run", "--isolation", "chroot", container.trim(), "--"])
        .args(["/usr/local/bin/image-factory", "--version"])
        .output()
        .unwrap();
    assert!(
        version.status.success(),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("image-factory {}", env!("CARGO_PKG_VERSION"))
    );
    // It can fail: the run uses the image's filesystem, not the host's — the bare
    // runtime base has no binary.
    let bare = buildah()
        .args(["from", "--tls-verify=false", &base])
        .output()
        .unwrap();
    assert!(
        bare.status.success(),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );
    let bare = String::from_utf8(bare.stdout).unwrap();
    let missing = buildah()
        .args(["run", "--isolation", "chroot", bare.trim(), "--"])
        .args(["/usr/local/bin/image-factory", "--version"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let _ = buildah().args(["rm", bare.trim()]).output();
    let _ = buildah().args(["rm", container.trim()]).output();
}

/// One `(namespace, apiGroup, resource[/subresource], verb, name)` request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Request {
    namespace: String,
    group: String,
    resource: String,
    verb: String,
    name: String,
}

/// An API server with an audit log (every request, Metadata level) for this test.
struct AuditedServer {
    kubeconfig: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl AuditedServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("audit-policy.yaml");
        std::fs::write(
            &policy,
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
        )
        .unwrap();
        let log = dir.path().join("audit.log");
        let kubeconfig = dir.path().join("kubeconfig");
        let out = Command::new(shared_dir().join("k8s/run.sh"))
            .arg("start")
            .arg(&kubeconfig)
            .env("K8S_RUN_DIR", dir.path().join("run"))
            .env("K8S_OWNER_PID", std::process::id().to_string())
            .env(
                "K8S_APISERVER_ARGS",
                format!(
                    "--audit-log-path={} --audit-policy-file={} --audit-log-mode=blocking",
                    log.display(),
                    policy.display()
                ),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "run.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            kubeconfig,
            log,
            _dir: dir,
        }
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn must(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args);
        assert!(ok, "kubectl {args:?}: {out}");
        out
    }

    fn apply_crd(&self, path: &Path, name: &str) {
        self.must(&["apply", "--server-side", "-f", &path.display().to_string()]);
        self.must(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            &format!("crd/{name}"),
        ]);
    }

    /// The controller's resource requests (every client but the server itself,
    /// kubectl and run.sh's probes), and its non-resource URLs.
    fn requests(&self) -> (BTreeSet<Request>, BTreeSet<String>) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut resources = BTreeSet::new();
        let mut urls = BTreeSet::new();
        for line in text.lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            // The server's own loopback client is system:apiserver; the kubeconfig's
            // user is shared by kubectl (this test), run.sh's curl and the controller.
            let agent = event["userAgent"].as_str().unwrap_or_default();
            if event["user"]["username"] != "admin"
                || agent.starts_with("kubectl")
                || agent.starts_with("curl")
            {
                continue;
            }
            let Some(object) = event.get("objectRef") else {
                urls.insert(event["requestURI"].as_str().unwrap().to_string());
                continue;
            };
            let field = |k: &str| object[k].as_str().unwrap_or_default().to_string();
            let mut resource = field("resource");
            if let Some(sub) = object["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            resources.insert(Request {
                namespace: field("namespace"),
                group: field("apiGroup"),
                resource,
                verb: event["verb"].as_str().unwrap().to_string(),
                name: field("name"),
            });
        }
        (resources, urls)
    }
}

/// A Freight of Warehouse `warehouse` carrying `repo_url:1@digest`, named by Kargo's
/// Freight ID rule.
fn freight_json(ns: &str, warehouse: &str, repo_url: &str, digest: &Digest) -> String {
    let mut f = Freight::new(ns, "");
    f.origin = FreightOrigin {
        kind: "Warehouse".to_string(),
        name: warehouse.to_string(),
    };
    f.images = vec![FreightImage {
        repo_url: Some(repo_url.to_string()),
        tag: Some("1".to_string()),
        digest: Some(digest.to_string()),
    }];
    f.metadata.name = Some(f.generate_id());
    serde_json::to_string(&f).unwrap()
}

/// The rules the rendered `deploy/` grants the controller's ServiceAccount, per
/// namespace: `(namespace, rule)` of every Role bound to it, and `("*", rule)` of the
/// one ClusterRole it may have: workload tracking's, `list`/`watch` only.
fn granted_rules(objects: &[Value]) -> Vec<(String, Value)> {
    let deployment = find(objects, "Deployment", "image-factory");
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"].clone();
    let sa_ns = deployment["metadata"]["namespace"].clone();
    let ours =
        |binding: &Value| {
            binding["subjects"].as_array().unwrap().iter().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == sa_ns
            })
        };
    let mut out = Vec::new();
    for binding in objects.iter().filter(|o| kind(o) == "RoleBinding") {
        if !ours(binding) {
            continue;
        }
        let ns = binding["metadata"]["namespace"].as_str().unwrap();
        assert_eq!(binding["roleRef"]["kind"], "Role", "{binding}");
        let role = objects
            .iter()
            .find(|o| {
                kind(o) == "Role"
                    && o["metadata"]["name"] == binding["roleRef"]["name"]
                    && o["metadata"]["namespace"] == ns
            })
            .unwrap_or_else(|| panic!("RoleBinding {binding} names a missing Role"));
        for rule in role["rules"].as_array().unwrap() {
            out.push((ns.to_string(), rule.clone()));
        }
    }
    // Least privilege: cluster-wide, only workload tracking's reads (list + watch of
    // the workload kinds: no get, no Secrets, no writes).
    for binding in objects.iter().filter(|o| kind(o) == "ClusterRoleBinding") {
        assert!(
            ours(binding),
            "a ClusterRoleBinding for someone else: {binding}"
        );
        assert_eq!(binding["roleRef"]["name"], "image-factory-workloads");
    }
    for role in objects.iter().filter(|o| kind(o) == "ClusterRole") {
        assert_eq!(
            role["metadata"]["name"], "image-factory-workloads",
            "{role}"
        );
        for rule in role["rules"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                assert!(verb == "list" || verb == "watch", "{rule}");
            }
            for resource in rule["resources"].as_array().unwrap() {
                let r = resource.as_str().unwrap();
                assert!(
                    [
                        "pods",
                        "deployments",
                        "replicasets",
                        "statefulsets",
                        "daemonsets",
                        "jobs",
                        "cronjobs"
                    ]
                    .contains(&r),
                    "{rule}"
                );
            }
            out.push(("*".to_string(), rule.clone()));
        }
    }
    out
}

fn contains(list: &Value, item: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == item || v == "*"))
}

/// Whether `rule` (in `ns`) allows `r`, as the RBAC authorizer decides: group,
/// resource (with subresource), verb, and — when the rule names objects — the name
/// (a create has no name yet, so a rule with names never allows it).
fn allows(ns: &str, rule: &Value, r: &Request) -> bool {
    (ns == "*" || ns == r.namespace)
        && contains(&rule["apiGroups"], &r.group)
        && contains(&rule["resources"], &r.resource)
        && contains(&rule["verbs"], &r.verb)
        && match rule.get("resourceNames") {
            None => true,
            // The audit log names a created object; the authorizer sees no name.
            Some(names) => r.verb != "create" && !r.name.is_empty() && contains(names, &r.name),
        }
}

/// What `deploy/` grants that this test's run does not exercise, and why it is there.
const UNEXERCISED: &[(&str, &str, &str, &str)] = &[
    (
        "kargo.akuity.io",
        "stages",
        "get",
        "the kargoPromotion trigger reads its Stage (tests/kargo_promotion.rs; this run uses kubernetesJob)",
    ),
    (
        "kargo.akuity.io",
        "stages",
        "promote",
        "Kargo's admission webhook authorizes a Promotion's creator for `promote` on the Stage (no webhook here)",
    ),
    (
        "kargo.akuity.io",
        "promotions",
        "create",
        "the kargoPromotion trigger creates a Promotion (tests/kargo_promotion.rs; this run uses kubernetesJob)",
    ),
    (
        "kargo.akuity.io",
        "promotions",
        "get",
        "the kargoPromotion trigger follows its Promotion (tests/kargo_promotion.rs; this run uses kubernetesJob)",
    ),
    (
        "events.k8s.io",
        "events",
        "patch",
        "kube-runtime's Recorder patches an Event that repeats within its cache (a series)",
    ),
];

#[test]
fn the_controller_makes_only_requests_the_rbac_in_deploy_grants() {
    let objects = render("deploy/overlays/example");
    let rules = granted_rules(&objects);
    let server = AuditedServer::start();
    server.apply_crd(
        &repo_root().join("crds/imagefactory.dev_imagefactoryrebuilds.yaml"),
        "imagefactoryrebuilds.imagefactory.dev",
    );
    server.apply_crd(
        &shared_dir().join("kargo/crds/kargo.akuity.io_freights.yaml"),
        "freights.kargo.akuity.io",
    );
    // The namespaces and names deploy/ grants in: the operator's, the Kargo Project's,
    // the builds' (images.yaml's kubernetesJob trigger) and the Job template.
    let deployment = find(&objects, "Deployment", "image-factory");
    let operator_ns = deployment["metadata"]["namespace"].as_str().unwrap();
    let config = find(&objects, "ConfigMap", "image-factory");
    let project = config["data"]["IMAGE_FACTORY_FREIGHT_NAMESPACE"]
        .as_str()
        .unwrap();
    for ns in [operator_ns, project, "ci-builds"] {
        server.must(&["create", "namespace", ns]);
    }
    let template = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: build}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {name: build, image: quay.io/buildah/stable, command: [buildah, bud, /src]}\n";
    server.must(&[
        "create",
        "configmap",
        "kaniko-build-template",
        "-n",
        "ci-builds",
        &format!("--from-literal=job.yaml={template}"),
    ]);

    // The fleet: external `base` (no hold) → managed `app`, built by a Job.
    let r = registry();
    let scratch = r.scratch("deploy-rbac");
    let repo = format!("deploy-rbac-{}", std::process::id());
    let v1 = push_base(r, &scratch, &format!("{repo}/base"), "deploy base 1");
    push_base(r, &scratch, &format!("{repo}/app"), "deploy app 1");
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("app")).unwrap();
    std::fs::write(
        work.path().join("app/Dockerfile"),
        format!("FROM {}/{repo}/base:1\nCOPY a.txt /a.txt\n", r.host),
    )
    .unwrap();
    std::fs::write(work.path().join("app/a.txt"), "a\n").unwrap();
    std::fs::write(
        work.path().join("images.yaml"),
        format!(
            "version: 1\nkargo: {{project: {project}}}\nimages:\n  - name: base\n    image: {host}/{repo}/base:1\n    rebuild: {{delay: 0s}}\n  - name: app\n    image: {host}/{repo}/app:1\n    source: {{path: app}}\n    trigger:\n      kubernetesJob: {{namespace: ci-builds, templateConfigMap: kaniko-build-template}}\n",
            host = r.host
        ),
    )
    .unwrap();

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Workload tracking as deploy/ turns it on (components/workloads), evaluated often.
    let container_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    assert!(
        container_args.iter().any(|a| a == "--workloads"),
        "{container_args:?}"
    );
    let mut controller: Child = Command::new(BIN)
        .args(["controller", "--listen", &listen, "--lease=image-factory"])
        .args(["--namespace", operator_ns, "--freight-namespace", project])
        .args(["--workloads", "--workload-interval", "1s"])
        .current_dir(work.path())
        .env("KUBECONFIG", &server.kubeconfig)
        .env("POD_NAME", "image-factory-0")
        .env("IMAGE_FACTORY_CACHE", work.path().join(".cache"))
        .stdout(std::fs::File::create(work.path().join("controller.log")).unwrap())
        .stderr(std::fs::File::create(work.path().join("controller.err")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(work.path().join("controller.err")).unwrap_or_default();
    let wait = |what: &str, mut done: Box<dyn FnMut() -> bool + '_>| {
        let deadline = Instant::now() + Duration::from_secs(45);
        while !done() {
            assert!(Instant::now() < deadline, "timed out: {what}\n{}", log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait(
        "the controller leads",
        Box::new(|| {
            server
                .kubectl(&["get", "lease", "image-factory", "-n", operator_ns])
                .0
        }),
    );
    // Kargo's Freight: the first digest is the baseline, the second an update.
    let create_freight = |digest: &Digest| {
        let file = work.path().join("freight.json");
        std::fs::write(
            &file,
            freight_json(project, "base", &format!("{}/{repo}/base", r.host), digest),
        )
        .unwrap();
        server.must(&["create", "-f", &file.display().to_string()]);
    };
    create_freight(&v1);
    wait(
        "the baseline recorded from the first Freight",
        Box::new(|| {
            crate::support::snapshot(&work.path().join("state"))
                .values()
                .any(|text| String::from_utf8_lossy(text).contains(v1.as_str()))
        }),
    );
    let v2 = push_base(r, &scratch, &format!("{repo}/base"), "deploy base 2");
    create_freight(&v2);
    wait(
        "the Job of app's rebuild",
        Box::new(|| {
            server
                .kubectl(&["get", "jobs", "-n", "ci-builds", "-o", "name"])
                .1
                .contains("job")
        }),
    );
    wait(
        "the rebuild object, an Event, a poll of the Job, the workload watches",
        Box::new(|| {
            let (requests, _) = server.requests();
            let seen = |resource: &str, verb: &str| {
                requests
                    .iter()
                    .any(|q| q.resource == resource && q.verb == verb)
            };
            seen("imagefactoryrebuilds/status", "patch")
                && seen("events", "create")
                && seen("jobs", "get")
                && ["pods", "deployments", "replicasets", "statefulsets"]
                    .iter()
                    .chain(&["daemonsets", "jobs", "cronjobs"])
                    .all(|r| seen(r, "list") && seen(r, "watch"))
        }),
    );
    let status = stop(&mut controller);
    assert!(status.success(), "controller: {status:?}\n{}", log());

    let (requests, urls) = server.requests();
    let summary: BTreeSet<String> = requests
        .iter()
        .map(|q| format!("{} {}/{} {}", q.namespace, q.group, q.resource, q.verb))
        .collect();
    eprintln!("the controller's requests: {summary:#?}\nnon-resource: {urls:?}");
    // Every request the controller made is granted by deploy/.
    let denied: Vec<&Request> = requests
        .iter()
        .filter(|q| !rules.iter().any(|(ns, rule)| allows(ns, rule, q)))
        .collect();
    assert!(
        denied.is_empty(),
        "requests deploy/ does not grant: {denied:#?}"
    );
    // Non-resource URLs only from what every authenticated user may read (discovery).
    assert!(
        urls.iter().all(|u| ["/api", "/apis", "/version"]
            .iter()
            .any(|p| u == p || u.starts_with(&format!("{p}?")) || u.starts_with(&format!("{p}/")))),
        "{urls:?}"
    );
    // Every (group, resource, verb) granted was used, or is listed with its reason.
    let mut unused = Vec::new();
    for (ns, rule) in &rules {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let (g, res, v) = (
                        group.as_str().unwrap(),
                        resource.as_str().unwrap(),
                        verb.as_str().unwrap(),
                    );
                    assert!(g != "*" && res != "*" && v != "*", "a wildcard in {rule}");
                    let used = requests.iter().any(|q| {
                        (ns == "*" || &q.namespace == ns)
                            && q.group == g
                            && q.resource == res
                            && q.verb == v
                    });
                    let listed = UNEXERCISED
                        .iter()
                        .any(|(lg, lr, lv, _)| (*lg, *lr, *lv) == (g, res, v));
                    if !used && !listed {
                        unused.push(format!("{ns}: {g}/{res} {v}"));
                    }
                }
            }
        }
    }
    assert!(
        unused.is_empty(),
        "deploy/ grants what the controller never did: {unused:?}\nrequests: {requests:#?}"
    );
    // The list of extras stays true: each is granted and none was in fact used.
    for (g, res, v, why) in UNEXERCISED {
        assert!(
            rules.iter().any(|(_, rule)| contains(&rule["apiGroups"], g)
                && contains(&rule["resources"], res)
                && contains(&rule["verbs"], v)),
            "listed but not granted: {g}/{res} {v} ({why})"
        );
        assert!(
            !requests
                .iter()
                .any(|q| (q.group.as_str(), q.resource.as_str(), q.verb.as_str()) == (*g, *res, *v)),
            "{g}/{res} {v} is exercised now: drop it from UNEXERCISED ({why})"
        );
    }
    // The run covered the paths the table in README.md names.
    for (resource, verb) in [
        ("freights", "list"),
        ("freights", "watch"),
        ("imagefactoryrebuilds", "list"),
        ("imagefactoryrebuilds", "watch"),
        ("imagefactoryrebuilds", "patch"),
        ("imagefactoryrebuilds/status", "patch"),
        ("events", "create"),
        ("leases", "get"),
        ("leases", "create"),
        ("leases", "update"),
        ("configmaps", "get"),
        ("jobs", "create"),
        ("jobs", "get"),
        ("pods", "list"),
        ("pods", "watch"),
        ("cronjobs", "watch"),
    ] {
        assert!(
            requests
                .iter()
                .any(|q| q.resource == resource && q.verb == verb),
            "{resource} {verb} not exercised: {requests:#?}"
        );
    }
}

/// The probes of deploy/'s Deployment answer 200 on a standby replica too (a probe on
/// a leader-only endpoint would keep the standby unready and stall every rollout).
#[test]
fn the_deployments_probes_answer_on_a_standby_replica() {
    let objects = render("deploy");
    let c =
        &find(&objects, "Deployment", "image-factory")["spec"]["template"]["spec"]["containers"][0];
    crate::crds::crds_applied();
    let ns = crate::support::k8s::namespace("deploy-probes");
    // Someone else holds the Lease: this replica stands by.
    let lease = format!(
        "{{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":{{\"name\":\"image-factory\",\"namespace\":\"{ns}\"}},\"spec\":{{\"holderIdentity\":\"other\",\"leaseDurationSeconds\":3600,\"renewTime\":\"{}\"}}}}",
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lease.json"), lease).unwrap();
    let (ok, out) = kubectl(&[
        "create",
        "-f",
        &dir.path().join("lease.json").display().to_string(),
    ]);
    assert!(ok, "{out}");
    std::fs::write(dir.path().join("images.yaml"), "version: 1\nimages: []\n").unwrap();
    let port = free_port();
    let mut replica = Command::new(BIN)
        .args(["controller", "--namespace", &ns, "--lease=image-factory"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env("KUBECONFIG", crate::support::k8s::kubeconfig())
        .env("IMAGE_FACTORY_CACHE", dir.path().join(".cache"))
        .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let get = |path: &str| -> Option<u16> {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .parse()
            .ok()
            .filter(|c| *c != 0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while get("/healthz").is_none() {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(dir.path().join("err")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap();
        assert_eq!(get(path), Some(200), "{probe} {path} on a standby");
    }
    // The check can fail: /readyz is leader-only, so it answers 503 here.
    assert_eq!(get("/readyz"), Some(503));
    stop(&mut replica);
}
