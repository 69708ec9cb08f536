//! `image-factory controller` end to end against the real API server: Kargo Freight
//! created as Kargo would (named by its Freight ID) drives a held, expedited-by-annotation,
//! really built (buildah, real registry) cascade whose every rebuild shows as an
//! `ImageFactoryRebuild` with Events; a restart mid-cascade loses and duplicates nothing,
//! and surviving Freight re-triggers nothing.
//!
//! The fleet is `tests/factory.rs`'s: external `base` → `platform` → `app1`.

use std::time::Duration;

use image_factory::kargo::{Freight, FreightImage, FreightOrigin};
use image_factory::runtime::{Digest, Phase};
use serde_json::{json, Value};

use crate::crds::crds_applied;
use crate::factory::{pushed_once, stop, Fleet, Site};
use crate::support::k8s::{self, kubeconfig, kubectl, namespace};

/// A Freight of Warehouse `warehouse` carrying `repo_url:tag@digest`, named by Kargo's
/// Freight ID rule, as JSON for `kubectl create`.
fn freight(
    ns: &str,
    warehouse: &str,
    alias: &str,
    repo_url: &str,
    digest: &Digest,
) -> (String, String) {
    let mut f = Freight::new(ns, "");
    f.alias = Some(alias.to_string());
    f.origin = FreightOrigin {
        kind: "Warehouse".to_string(),
        name: warehouse.to_string(),
    };
    f.images = vec![FreightImage {
        repo_url: Some(repo_url.to_string()),
        tag: Some("1".to_string()),
        digest: Some(digest.to_string()),
    }];
    let id = f.generate_id();
    f.metadata.name = Some(id.clone());
    (id, serde_json::to_string(&f).unwrap())
}

fn create(json: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), json).unwrap();
    let (ok, out) = kubectl(&["create", "-f", &file.path().display().to_string()]);
    assert!(ok, "{out}");
}

/// The rebuild objects of `ns`, as JSON.
fn rebuilds(ns: &str) -> Vec<Value> {
    let (ok, out) = kubectl(&[
        "get",
        "ifr",
        "-n",
        ns,
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn rebuild_object(ns: &str, name: &str) -> Option<Value> {
    rebuilds(ns)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
}

/// Reasons of the Events in `ns` about `name`.
fn event_reasons(ns: &str, name: &str) -> Vec<String> {
    let (ok, out) = kubectl(&["get", "events.events.k8s.io", "-n", ns, "-o", "json"]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name)
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect()
}

/// Who holds the controller's Lease in `ns`.
fn lease_holder(ns: &str) -> Option<String> {
    let (ok, out) = kubectl(&["get", "lease", "image-factory", "-n", ns, "-o", "json"]);
    if !ok {
        return None;
    }
    let v: Value = serde_json::from_str(&out).ok()?;
    v["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// A Deployment → ReplicaSet → Pod `web-1` in `ns` running `image` at `digest`.
fn workload_on(ns: &str, image: &str, digest: &Digest) {
    let owner = |kind: &str, name: &str, uid: &str| json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true}]);
    let spec = json!({"containers": [{"name": "web", "image": image}]});
    let selector = json!({"matchLabels": {"app": "web"}});
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": spec});
    let deploy = k8s::create(
        ns,
        &json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"selector": selector, "template": template}}),
    );
    let rs = k8s::create(
        ns,
        &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "ownerReferences": owner("Deployment", "web", &deploy)},
        "spec": {"selector": selector, "template": template}}),
    );
    k8s::create(
        ns,
        &json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "labels": {"app": "web"},
            "ownerReferences": owner("ReplicaSet", "web-1", &rs)},
        "spec": spec}),
    );
    k8s::set_running(ns, "web-1", "web", image, digest.as_str());
}

#[test]
fn freight_drives_held_expedited_cascades_visible_as_rebuild_objects_across_a_restart() {
    crds_applied();
    let ns = namespace("controller");
    let mut site = Site::new(
        "ctl-chain",
        &Fleet {
            base_rebuild: "{delay: 1h}",
            failing: &[],
            app2: false,
            external_host: None,
        },
    );
    // The state before: baselines of every image (one pass watching the registry).
    let out = site.cli(&["run", "--once", "--timeout", "5m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(site.baselines(&["base", "helper", "platform", "app1"]));

    let kube = kubeconfig().display().to_string();
    let env_a = [("KUBECONFIG", kube.as_str()), ("POD_NAME", "replica-a")];
    let env_b = [("KUBECONFIG", kube.as_str()), ("POD_NAME", "replica-b")];
    let args = ["--push", "--namespace", ns.as_str()];
    let mut controller = site.spawn_command("controller", &args, &env_a);
    site.wait("replica-a leads", Duration::from_secs(30), |_| {
        lease_holder(&ns).as_deref() == Some("replica-a")
    });
    // A second replica on the same working copy stands by: it must not even open it.
    let mut standby = site.spawn_command("controller", &args, &env_b);
    site.wait("replica-b stands by", Duration::from_secs(30), |s| {
        s.run_log().contains("another replica leads; standing by")
    });

    // Kargo finds a new base digest and creates Freight; another Warehouse's Freight of
    // the same repository is not ours and is ignored.
    let v2 = site.release("base");
    let repo_url = site.reference("base").repo_url();
    let (id, json) = freight(&ns, "base", "brave-otter", &repo_url, &v2);
    create(&json);
    let v3 = site.release("base");
    let (_, foreign) = freight(&ns, "someone-elses-warehouse", "odd-fox", &repo_url, &v3);
    create(&foreign);

    // The hold appears as a Waiting rebuild object with the Freight's names.
    site.wait("the held rebuild", Duration::from_secs(60), |s| {
        s.rebuild_on("platform", "base", &v2).is_some()
    });
    let held = site.rebuild_on("platform", "base", &v2).unwrap();
    assert_eq!(held.phase, Phase::Waiting);
    let name = held.id.to_string();
    site.wait("the rebuild object", Duration::from_secs(30), |_| {
        rebuild_object(&ns, &name).is_some_and(|o| o["status"]["phase"] == "Waiting")
    });
    let object = rebuild_object(&ns, &name).unwrap();
    assert_eq!(object["spec"]["image"], "platform");
    assert_eq!(object["spec"]["update"]["base"], "base");
    assert_eq!(object["spec"]["update"]["digest"], v2.as_str());
    assert_eq!(object["spec"]["update"]["freight"]["name"], id.as_str());
    assert_eq!(object["spec"]["update"]["freight"]["alias"], "brave-otter");
    assert_eq!(object["spec"]["update"]["freight"]["warehouse"], "base");
    assert_eq!(
        object["metadata"]["labels"]["imagefactory.dev/freight"],
        id.as_str()
    );
    assert_eq!(
        object["metadata"]["labels"]["imagefactory.dev/image"],
        "platform"
    );
    let due: jiff::Timestamp = object["status"]["dueAt"].as_str().unwrap().parse().unwrap();
    let discovered: jiff::Timestamp = object["spec"]["update"]["discoveredAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(due.duration_since(discovered).as_secs(), 3600);
    let managers: Vec<&str> = object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        managers.iter().all(|m| *m == "image-factory"),
        "{managers:?}"
    );
    let (ok, table) = kubectl(&["get", "ifr", "-n", &ns]);
    assert!(ok, "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("no row {name}:\n{table}"));
    assert!(
        row.contains("platform") && row.contains("Waiting"),
        "{table}"
    );
    assert!(row.contains(&site.reference("base").to_string()), "{table}");
    assert!(site.builds().is_empty(), "built during the hold");

    // A person expedites it on the object.
    let (ok, out) = kubectl(&[
        "annotate",
        "ifr",
        &name,
        "-n",
        &ns,
        "imagefactory.dev/expedite=CVE-2026-4242",
    ]);
    assert!(ok, "{out}");
    // The cascade reaches app1; stop the controller once app1's rebuild exists, before
    // it is verified, and start it again.
    site.wait("platform built", Duration::from_secs(180), |s| {
        s.succeeded_on("platform", "base", &v2).is_some()
    });
    let p2 = site.succeeded_on("platform", "base", &v2).unwrap();
    // The leader stops mid-cascade: it releases the Lease and the standby takes over.
    let status = stop(&mut controller);
    assert!(
        status.success(),
        "controller exit: {status:?}\n{}",
        site.run_log()
    );
    site.wait("replica-b takes over", Duration::from_secs(30), |_| {
        lease_holder(&ns).as_deref() == Some("replica-b")
    });
    site.wait(
        "app1 built on the new platform",
        Duration::from_secs(180),
        |s| s.succeeded_on("app1", "platform", &p2).is_some(),
    );
    let app1 = site.rebuild_on("app1", "platform", &p2).unwrap();
    let child = app1.id.to_string();
    site.wait("app1's object Succeeded", Duration::from_secs(30), |_| {
        rebuild_object(&ns, &child).is_some_and(|o| o["status"]["phase"] == "Succeeded")
    });
    site.wait(
        "platform's object Succeeded",
        Duration::from_secs(30),
        |_| rebuild_object(&ns, &name).is_some_and(|o| o["status"]["phase"] == "Succeeded"),
    );
    let parent = rebuild_object(&ns, &name).unwrap();
    assert_eq!(parent["spec"]["expedite"]["reason"], "CVE-2026-4242");
    assert_eq!(
        parent["spec"]["expedite"]["by"],
        "annotation:kubectl-annotate"
    );
    assert_eq!(parent["status"]["resultDigest"], p2.as_str());
    assert_eq!(
        parent["status"]["observedGeneration"],
        parent["metadata"]["generation"]
    );
    let ready = parent["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "True");
    let child_object = rebuild_object(&ns, &child).unwrap();
    assert_eq!(child_object["spec"]["parent"], name.as_str());
    assert_eq!(
        child_object["metadata"]["labels"]["imagefactory.dev/parent"],
        name.as_str()
    );
    assert_eq!(
        child_object["metadata"]["ownerReferences"][0]["uid"],
        parent["metadata"]["uid"]
    );
    assert_eq!(child_object["spec"]["update"]["digest"], p2.as_str());

    // Events tell the story on the objects.
    let reasons = event_reasons(&ns, &name);
    for r in [
        "RebuildHeld",
        "RebuildExpedited",
        "RebuildTriggered",
        "RebuildSucceeded",
    ] {
        assert!(
            reasons.iter().any(|x| x == r),
            "{r} missing from {reasons:?}"
        );
    }
    assert!(
        event_reasons(&ns, &child)
            .iter()
            .any(|x| x == "RebuildSucceeded"),
        "{:?}",
        event_reasons(&ns, &child)
    );

    // Every build reached the registry once; the foreign Freight triggered nothing; the
    // expedite is in git history with who did it.
    let builds = site.builds();
    assert_eq!(pushed_once(&builds).len(), 2, "{builds:?}");
    assert!(site.rebuild_on("platform", "base", &v3).is_none());
    let checkout = site.remote_checkout();
    let log = std::process::Command::new("git")
        .args(["log", "--format=%B"])
        .current_dir(checkout.path().join("c"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(log.contains("annotation:kubectl-annotate"), "{log}");

    // A Deployment still runs platform's previous digest (the test plays the
    // Deployment controller and the kubelet).
    let apps = namespace("controller-apps");
    let platform_ref = site.reference("platform").to_string();
    let old_platform = site
        .runtime("platform")
        .unwrap()
        .updates
        .iter()
        .map(|u| u.digest.clone())
        .chain(std::iter::once(
            Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap(),
        ))
        .find(|d| *d != p2)
        .unwrap();
    workload_on(&apps, &platform_ref, &old_platform);

    // Another restart with the Freight still there, now tracking workloads: nothing
    // new is built; platform's rebuild shows the stale Deployment until it rolls.
    let objects = rebuilds(&ns).len();
    let status = stop(&mut standby);
    assert!(status.success(), "{status:?}");
    let port = crate::support::registry::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut tracking = args.to_vec();
    tracking.extend([
        "--workloads",
        "--workload-namespace",
        apps.as_str(),
        "--workload-interval",
        "500ms",
        "--listen",
        listen.as_str(),
    ]);
    let mut controller = site.spawn_command("controller", &tracking, &env_a);
    site.wait("replica-a leads again", Duration::from_secs(30), |_| {
        lease_holder(&ns).as_deref() == Some("replica-a")
    });
    let stale_on = |object: &str| {
        rebuild_object(&ns, object).and_then(|o| o["status"]["staleWorkloads"].as_u64())
    };
    site.wait(
        "platform's stale workload counted",
        Duration::from_secs(30),
        |_| stale_on(&name) == Some(1),
    );
    assert_eq!(stale_on(&child), Some(0), "no workload runs app1");
    let (ok, table) = kubectl(&["get", "ifr", "-n", &ns, &name]);
    assert!(ok, "{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    let column = header.iter().position(|h| *h == "STALE").unwrap();
    assert_eq!(row[column], "1", "{table}");
    let metrics = || {
        std::process::Command::new("curl")
            .args(["-s", &format!("http://{listen}/metrics")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let gauge = |m: &str, image: &str| {
        let prefix = format!("image_factory_stale_workloads{{image=\"{image}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(str::to_string)
    };
    site.wait("the stale-workloads gauge", Duration::from_secs(10), |_| {
        gauge(&metrics(), "platform").as_deref() == Some("1")
    });
    // The Pod rolls to the rebuilt digest: the count drops with the watch event.
    k8s::set_running(&apps, "web-1", "web", &platform_ref, p2.as_str());
    site.wait(
        "the rolled Deployment no longer stale",
        Duration::from_secs(30),
        |_| stale_on(&name) == Some(0),
    );
    assert_eq!(gauge(&metrics(), "platform").as_deref(), Some("0"));
    assert_eq!(
        site.builds().len(),
        builds.len(),
        "rebuilt from surviving Freight"
    );
    assert_eq!(rebuilds(&ns).len(), objects);
    stop(&mut controller);
    let log = site.run_log();
    for bad in [
        "cannot write the rebuild object",
        "lost the leader Lease",
        "panicked",
        "reconcile failed",
    ] {
        assert!(!log.contains(bad), "{bad}:\n{log}");
    }
}

/// The Job template of the cluster build: what a buildah pod would run.
const JOB_TEMPLATE: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: ignored}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: build
        image: quay.io/buildah/stable
        command: [sh, -c, 'buildah bud --build-arg BASE=\"$IMAGE_FACTORY_BASE_BASE\" -t \"$IMAGE_FACTORY_REFERENCE\" . && buildah push \"$IMAGE_FACTORY_REFERENCE\"']
";

#[test]
fn a_kubernetes_job_trigger_builds_in_the_cluster_and_the_cascade_goes_on() {
    crds_applied();
    let ns = namespace("controller-job");
    let mut site = Site::new(
        "ctl-job",
        &Fleet {
            base_rebuild: "{delay: 0s}",
            failing: &[],
            app2: false,
            external_host: None,
        },
    );
    // platform is built by a Job in the cluster; app1 stays a command trigger.
    site.switch_trigger(
        "platform",
        &format!("{{kubernetesJob: {{namespace: {ns}, templateConfigMap: build}}}}"),
        "platform builds in the cluster",
    );
    let template = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(template.path(), JOB_TEMPLATE).unwrap();
    let (ok, out) = kubectl(&[
        "create",
        "configmap",
        "build",
        "-n",
        &ns,
        &format!("--from-file=job.yaml={}", template.path().display()),
    ]);
    assert!(ok, "{out}");

    let kube = kubeconfig().display().to_string();
    let env = [("KUBECONFIG", kube.as_str()), ("POD_NAME", "replica-a")];
    let mut controller = site.spawn_command("controller", &["--namespace", ns.as_str()], &env);
    let v2 = site.release("base");
    let (_, json) = freight(
        &ns,
        "base",
        "quick-hare",
        &site.reference("base").repo_url(),
        &v2,
    );
    create(&json);

    // The Job appears with the pins; the test is its pod and its Job controller.
    let mut job = Value::Null;
    site.wait("platform's Job", Duration::from_secs(60), |_| {
        let (ok, out) = kubectl(&[
            "get",
            "jobs",
            "-n",
            &ns,
            "-l",
            "imagefactory.dev/image=platform",
            "-o",
            "json",
        ]);
        job = serde_json::from_str::<Value>(&out)
            .map(|v| v["items"][0].clone())
            .unwrap_or(Value::Null);
        ok && !job.is_null()
    });
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    let env: std::collections::BTreeMap<String, String> = job["spec"]["template"]["spec"]
        ["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let pin = &env["IMAGE_FACTORY_BASE_BASE"];
    assert!(pin.ends_with(&format!("@{v2}")), "{pin}");
    let build = tempfile::tempdir().unwrap();
    let dockerfile = build.path().join("Dockerfile");
    std::fs::write(&dockerfile, format!("FROM {pin}\nCOPY p.txt /p.txt\n")).unwrap();
    let pod = std::process::Command::new("sh")
        .arg("-c")
        .arg(site.build_shell("platform"))
        .env(
            "IMAGE_FACTORY_IDEMPOTENCY_KEY",
            &env["IMAGE_FACTORY_IDEMPOTENCY_KEY"],
        )
        .env("IMAGE_FACTORY_IMAGE", "platform")
        .env("IMAGE_FACTORY_DOCKERFILE", &dockerfile)
        .env("IMAGE_FACTORY_CONTEXT", site.work.join("platform"))
        .env("IMAGE_FACTORY_REFERENCE", &env["IMAGE_FACTORY_REFERENCE"])
        .output()
        .unwrap();
    assert!(
        pod.status.success(),
        "{}",
        String::from_utf8_lossy(&pod.stderr)
    );
    let now = jiff::Timestamp::now().to_string();
    let status = serde_json::json!({"status": {"startTime": now, "completionTime": now, "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}]}});
    let (ok, out) = kubectl(&[
        "patch",
        "job",
        &name,
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    assert!(ok, "{out}");

    // Verified in the registry, recorded with the Job as its trigger, cascaded to app1.
    site.wait("platform built by the Job", Duration::from_secs(60), |s| {
        s.succeeded_on("platform", "base", &v2).is_some()
    });
    let p2 = site.succeeded_on("platform", "base", &v2).unwrap();
    let rebuild = site.rebuild_on("platform", "base", &v2).unwrap();
    assert_eq!(
        rebuild.trigger.as_deref(),
        Some(format!("job/{ns}/{name}").as_str())
    );
    site.wait("app1 built on it", Duration::from_secs(120), |s| {
        s.succeeded_on("app1", "platform", &p2).is_some()
    });
    let id = rebuild.id.to_string();
    site.wait("the object shows the Job", Duration::from_secs(30), |_| {
        rebuild_object(&ns, &id).is_some_and(|o| o["status"]["phase"] == "Succeeded")
    });
    let object = rebuild_object(&ns, &id).unwrap();
    assert_eq!(object["status"]["triggerRef"], format!("job/{ns}/{name}"));
    stop(&mut controller);
}

#[tokio::test]
async fn a_lease_whose_holder_stops_renewing_passes_to_the_next_candidate() {
    use image_factory::controller::lease::{Elector, LeaseConfig};
    use k8s_openapi::api::coordination::v1::Lease;
    let ns = namespace("lease");
    let client = crate::support::k8s::client().await;
    let candidate = |identity: &str| {
        let mut config = LeaseConfig::new("image-factory", identity);
        config.duration = Duration::from_secs(2);
        Elector::new(kube::Api::namespaced(client.clone(), &ns), config)
    };
    let (a, b) = (candidate("replica-a"), candidate("replica-b"));
    assert!(a.try_acquire().await.unwrap());
    assert!(!b.try_acquire().await.unwrap(), "held and fresh");
    assert!(a.try_acquire().await.unwrap(), "the holder renews");
    // A dies without releasing: after the lease duration B takes it, and A has lost it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(b.try_acquire().await.unwrap());
    assert!(!a.try_acquire().await.unwrap());
    let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), &ns);
    let spec = leases.get("image-factory").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(2));
    // B releases on a graceful stop: A takes it at once.
    b.release().await;
    assert!(a.try_acquire().await.unwrap());
}
