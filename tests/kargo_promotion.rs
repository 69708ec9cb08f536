//! Kargo Stages and the `kargoPromotion` trigger against the real API server with Kargo's
//! own CRDs (Stage, Promotion, Freight): the Stages `analyze` generates are accepted;
//! the trigger finds the Freight Kargo would have made, creates the Promotion, and the
//! test plays Kargo's controller by writing the Promotion's `status.phase`.

use std::path::Path;
use std::time::Duration;

use image_factory::kargo::{
    ExpressionVariable, Freight, FreightImage, FreightOrigin, Promotion, Stage,
};
use image_factory::runtime::{Cause, Digest, PinnedBase, RebuildId, UpdateRef};
use image_factory::trigger::kargo::{promotion_name, PromotionBackend};
use image_factory::trigger::kubernetes::{LABEL_ATTEMPT, LABEL_REBUILD};
use image_factory::trigger::{Backend, Context, Failure, Report, Request, SourceInfo};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use crate::support::k8s::{apply_crd, client, kubectl, namespace};
use crate::support::{example, image_factory, shared_dir};

fn kargo_crds() {
    for (file, name) in [
        ("kargo.akuity.io_stages.yaml", "stages.kargo.akuity.io"),
        (
            "kargo.akuity.io_promotions.yaml",
            "promotions.kargo.akuity.io",
        ),
        ("kargo.akuity.io_freights.yaml", "freights.kargo.akuity.io"),
        (
            "kargo.akuity.io_warehouses.yaml",
            "warehouses.kargo.akuity.io",
        ),
    ] {
        apply_crd(&shared_dir().join("kargo/crds").join(file), name);
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

fn analyze(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["analyze"];
    args.extend_from_slice(extra);
    let out = image_factory(dir, &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn analyze_writes_stages_the_api_server_accepts_and_removes_them_when_turned_off() {
    kargo_crds();
    let dir = example();
    let images = dir.path().join("images.yaml");
    let stages = dir.path().join("state/stages");
    edit(
        &images,
        "  project: image-factory\n",
        "  project: image-factory\n  stages: true\n",
    );
    edit(
        &images,
        "        stage: frontend-build\n",
        "        stage: frontend-build\n        task: build-image\n",
    );

    // --dry-run computes the Stage but writes nothing.
    let out = analyze(dir.path(), &["--dry-run"]);
    assert!(out.contains("stages: 1"), "{out}");
    assert!(!stages.exists());

    let out = analyze(dir.path(), &[]);
    assert!(out.contains("stages: 1"), "{out}");
    let text = std::fs::read_to_string(stages.join("frontend-build.yaml")).unwrap();
    let stage: Stage = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(stage.metadata.namespace.as_deref(), Some("image-factory"));
    // The frontend is built FROM node and nginx: Freight of either Warehouse may be
    // promoted, straight from the Warehouse.
    assert_eq!(
        stage.warehouses().into_iter().collect::<Vec<_>>(),
        ["nginxinc-nginx-unprivileged-1-27-alpine", "node-22"]
    );
    assert!(stage
        .spec
        .requested_freight
        .iter()
        .all(|r| r.sources.direct));
    let json = serde_json::to_value(&stage).unwrap();
    assert_eq!(
        json["spec"]["promotionTemplate"]["spec"]["steps"],
        serde_json::json!([{"task": {"kind": "PromotionTask", "name": "build-image"}}])
    );
    assert_eq!(
        json["metadata"]["labels"]["imagefactory.dev/image"],
        "frontend"
    );
    assert_eq!(
        json["metadata"]["annotations"]["imagefactory.dev/reference"],
        "registry.example.com/web/frontend:3.1"
    );
    let kustomization = std::fs::read_to_string(stages.join("kustomization.yaml")).unwrap();
    assert!(kustomization.starts_with("# Written by image-factory."));
    assert!(
        kustomization.contains("- frontend-build.yaml"),
        "{kustomization}"
    );

    // Kargo's Stage CRD accepts what was written, through the kustomization.
    let _ = kubectl(&["create", "namespace", "image-factory"]);
    let (ok, out) = kubectl(&[
        "apply",
        "--dry-run=server",
        "-k",
        &stages.display().to_string(),
    ]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("created (server dry run)").count(), 1, "{out}");
    // …and refuses a Stage without Freight, so the check above can fail.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {name: bad, namespace: image-factory}\nspec: {requestedFreight: []}\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.yaml").display().to_string();
    let (ok, out) = kubectl(&["apply", "--dry-run=server", "-f", &bad]);
    assert!(!ok, "{out}");

    // A rerun writes nothing; stages off removes every generated Stage.
    let out = analyze(dir.path(), &[]);
    assert!(out.contains("state: 0 written"), "{out}");
    edit(&images, "  stages: true\n", "");
    let out = analyze(dir.path(), &[]);
    assert!(!out.lines().any(|l| l.starts_with("stages:")), "{out}");
    assert!(out.contains("2 removed"), "{out}");
    assert!(!stages.join("frontend-build.yaml").exists());
    assert!(!stages.join("kustomization.yaml").exists());
}

#[test]
fn analyze_refuses_a_stage_with_nothing_to_promote() {
    let dir = example();
    let images = dir.path().join("images.yaml");
    edit(
        &images,
        "  project: image-factory\n",
        "  project: image-factory\n  stages: true\n",
    );
    // python-web is built only on platform-python, a managed image: no Warehouse, so
    // no Freight to promote.
    edit(
        &images,
        "      githubWorkflow:\n        repository: example-corp/platform-images\n        workflow: build-image.yml\n        inputs: {image: python-web}\n",
        "      kargoPromotion: {stage: python-web-build, task: build-image}\n",
    );
    edit(
        &images,
        "        stage: frontend-build\n",
        "        stage: frontend-build\n        task: build-image\n",
    );
    let out = image_factory(dir.path(), &["analyze"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("python-web") && text.contains("built only on managed images"),
        "{text}"
    );
    assert!(!dir.path().join("state/stages").exists());
}

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

/// A rebuild of `app` on python (digest `e…`) and debian (`d…`), caused by python.
fn request(attempt: u32) -> Request {
    let bases = vec![
        PinnedBase::new(
            "debian-12",
            "docker.io/library/debian:12",
            Some(&digest('d')),
        ),
        PinnedBase::new(
            "python-3-12",
            "docker.io/library/python:3.12",
            Some(&digest('e')),
        ),
    ];
    let pins: Vec<String> = bases.iter().map(|b| b.pinned.clone()).collect();
    Request {
        id: RebuildId::derive("team/app", "ghcr.io/acme/app:1", &pins),
        attempt,
        image: "team/app".into(),
        reference: "ghcr.io/acme/app:1".into(),
        tags: vec!["ghcr.io/acme/app:1".into()],
        bases,
        build_args: Default::default(),
        source: SourceInfo {
            git: Some("https://git.example/acme/app.git".into()),
            reference: Some("main".into()),
            commit: None,
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
        },
        local: None,
        cause: Cause {
            updates: vec![UpdateRef {
                image: "python-3-12".into(),
                reference: "docker.io/library/python:3.12".into(),
                digest: digest('e'),
            }],
            parents: vec![],
        },
    }
}

/// A Stage as a person (or `analyze`) writes it, requesting Freight from `warehouses`,
/// with `steps` (JSON) in its promotion template.
fn stage(ns: &str, name: &str, warehouses: &[&str], steps: serde_json::Value) -> Stage {
    let mut value = serde_json::json!({
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "requestedFreight": warehouses.iter().map(|w| serde_json::json!({
                "origin": {"kind": "Warehouse", "name": w},
                "sources": {"direct": true},
            })).collect::<Vec<_>>(),
        },
    });
    if !steps.is_null() {
        value["spec"]["promotionTemplate"] = serde_json::json!({"spec": {
            "vars": [{"name": "registry", "value": "ghcr.io/acme"}],
            "steps": steps,
        }});
    }
    serde_json::from_value(value).unwrap()
}

/// Freight as a Warehouse makes it: named by its ID, carrying one image.
fn freight(ns: &str, warehouse: &str, repo: &str, d: char) -> Freight {
    let mut f = Freight::new(ns, "");
    f.origin = FreightOrigin {
        kind: "Warehouse".into(),
        name: warehouse.into(),
    };
    f.images = vec![FreightImage {
        repo_url: Some(repo.into()),
        tag: Some("1".into()),
        digest: Some(digest(d).to_string()),
    }];
    f.metadata.name = Some(f.generate_id());
    f
}

/// Waits for Promotion `name`, then writes `phase` (and `message`) into its status as
/// Kargo's controller does.
async fn finish(promotions: &Api<Promotion>, name: &str, phase: &str, message: &str) -> Promotion {
    let mut found = None;
    for _ in 0..100 {
        if let Some(p) = promotions.get_opt(name).await.unwrap() {
            found = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promotion = found.unwrap_or_else(|| panic!("Promotion {name} never appeared"));
    let status = serde_json::json!({"status": {"phase": phase, "message": message}});
    promotions
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    promotion
}

/// Runs the backend for `req` in a task; the test plays Kargo meanwhile.
fn spawn(
    backend: PromotionBackend,
    req: Request,
    ctx: Context,
) -> tokio::task::JoinHandle<Result<Report, Failure>> {
    tokio::spawn(async move { backend.run(&req, &ctx).await })
}

async fn ended(run: tokio::task::JoinHandle<Result<Report, Failure>>) -> Result<Report, Failure> {
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the trigger ends within 20 s")
        .unwrap()
}

#[tokio::test]
async fn a_promotion_of_the_pinned_freight_is_created_adopted_and_judged_by_its_phase() {
    kargo_crds();
    let ns = namespace("kargo");
    let client = client().await;
    let stages: Api<Stage> = Api::namespaced(client.clone(), &ns);
    let freights: Api<Freight> = Api::namespaced(client.clone(), &ns);
    let promotions: Api<Promotion> = Api::namespaced(client.clone(), &ns);
    let backend = || PromotionBackend::new(client.clone(), &ns, "app-build");

    // No Stage: permanent, and says how to get one.
    let failure = backend()
        .run(&request(1), &Context::detached())
        .await
        .unwrap_err();
    assert!(!failure.transient);
    assert!(
        failure
            .reason
            .contains(&format!("Stage {ns}/app-build does not exist"))
            && failure.reason.contains("kargo.stages: true"),
        "{}",
        failure.reason
    );

    // A Stage without promotion steps: permanent.
    stages
        .create(
            &PostParams::default(),
            &stage(&ns, "app-build", &["python-3-12"], serde_json::Value::Null),
        )
        .await
        .unwrap();
    let failure = backend()
        .run(&request(1), &Context::detached())
        .await
        .unwrap_err();
    assert!(!failure.transient);
    assert!(
        failure
            .reason
            .contains("no spec.promotionTemplate.spec.steps"),
        "{}",
        failure.reason
    );

    // Steps, but Kargo has not made the Freight yet: transient, naming what it looks for.
    stages
        .delete("app-build", &DeleteParams::default())
        .await
        .unwrap();
    let steps = serde_json::json!([
        {"uses": "git-clone", "as": "clone", "config": {"repoURL": "${{ vars.imageFactorySourceGit }}"}},
        {"uses": "http", "config": {"url": "https://ci.example/build", "method": "POST"}},
    ]);
    stages
        .create(
            &PostParams::default(),
            &stage(
                &ns,
                "app-build",
                &["python-3-12", "debian-12"],
                steps.clone(),
            ),
        )
        .await
        .unwrap();
    let failure = backend()
        .run(&request(1), &Context::detached())
        .await
        .unwrap_err();
    assert!(failure.transient, "{}", failure.reason);
    assert!(
        failure.reason.contains("debian-12, python-3-12")
            && failure.reason.contains(digest('e').as_str())
            && failure.reason.contains(digest('d').as_str()),
        "{}",
        failure.reason
    );

    // Kargo's Freight: debian's pinned digest (newest), python's pinned digest (the
    // triggering update), python's unmatured newer digest, and the pinned python digest
    // from a Warehouse the Stage does not request.
    let debian = freight(&ns, "debian-12", "docker.io/library/debian", 'd');
    let python = freight(&ns, "python-3-12", "docker.io/library/python", 'e');
    let unmatured = freight(&ns, "python-3-12", "docker.io/library/python", 'f');
    let mirror = freight(&ns, "python-mirror", "mirror.example/python", 'e');
    for f in [&python, &unmatured, &mirror] {
        freights.create(&PostParams::default(), f).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await; // a newer creationTimestamp
    freights
        .create(&PostParams::default(), &debian)
        .await
        .unwrap();

    // Attempt 1 succeeds.
    let req = request(1);
    let name = promotion_name("app-build", &req);
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Context::new(tokio_util::sync::CancellationToken::new(), Some(started_tx));
    let run = spawn(backend(), req.clone(), ctx);
    let created = finish(&promotions, &name, "Succeeded", "").await;
    let report = ended(run).await.unwrap();
    let handle = format!("promotion/{ns}/{name}");
    assert_eq!(report.handle.as_deref(), Some(handle.as_str()));
    assert_eq!(started_rx.recv().await.as_deref(), Some(handle.as_str()));

    // What the Promotion carries.
    assert_eq!(created.spec.stage, "app-build");
    assert_eq!(
        Some(created.spec.freight.as_str()),
        python.metadata.name.as_deref(),
        "the triggering base's Freight"
    );
    assert_eq!(
        serde_json::to_value(&created.spec.steps).unwrap(),
        steps,
        "the Stage's steps"
    );
    let labels = created.metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_REBUILD], req.id.as_str());
    assert_eq!(labels[LABEL_ATTEMPT], "1");
    assert_eq!(labels["imagefactory.dev/image"], "team-app");
    assert_eq!(
        created.metadata.annotations.clone().unwrap()["imagefactory.dev/idempotency-key"],
        format!("{}.1", req.id)
    );
    let var = |n: &str| {
        created
            .spec
            .vars
            .iter()
            .find(|v| v.name == n)
            .map(|v| v.value.clone())
            .unwrap_or_else(|| panic!("no var {n}: {:?}", created.spec.vars))
    };
    assert_eq!(
        created.spec.vars[0],
        ExpressionVariable::new("registry", "ghcr.io/acme")
    );
    assert_eq!(var("imageFactoryReference"), "ghcr.io/acme/app:1");
    assert_eq!(var("imageFactoryRebuildId"), req.id.as_str());
    assert_eq!(var("imageFactoryAttempt"), "1");
    assert_eq!(var("imageFactoryIdempotencyKey"), format!("{}.1", req.id));
    assert_eq!(var("imageFactoryBase_python_3_12"), req.bases[1].pinned);
    assert_eq!(var("imageFactoryBase_debian_12"), req.bases[0].pinned);
    let bases: Vec<PinnedBase> = serde_json::from_str(&var("imageFactoryBases")).unwrap();
    assert_eq!(bases, req.bases);

    // The same attempt again (a restart): the Promotion is adopted, not created twice.
    let again = backend().run(&req, &Context::detached()).await.unwrap();
    assert_eq!(again.handle.as_deref(), Some(handle.as_str()));
    let listed = promotions.list(&Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.uid, created.metadata.uid);

    // Attempt 2 fails in Kargo: the phase and message are the failure.
    let req2 = request(2);
    let name2 = promotion_name("app-build", &req2);
    let run = spawn(backend(), req2, Context::detached());
    finish(
        &promotions,
        &name2,
        "Failed",
        "step http: 500 from https://ci.example/build",
    )
    .await;
    let failure = ended(run).await.unwrap_err();
    assert!(!failure.transient);
    assert!(
        failure.reason.contains(&name2)
            && failure
                .reason
                .contains("Failed: step http: 500 from https://ci.example/build"),
        "{}",
        failure.reason
    );

    // Attempt 3's Promotion is deleted while it runs: transient.
    let req3 = request(3);
    let name3 = promotion_name("app-build", &req3);
    let run = spawn(backend(), req3, Context::detached());
    finish(&promotions, &name3, "Running", "").await;
    promotions
        .delete(&name3, &DeleteParams::default())
        .await
        .unwrap();
    let failure = ended(run).await.unwrap_err();
    assert!(
        failure.transient && failure.reason.contains("deleted"),
        "{}",
        failure.reason
    );
}

#[tokio::test]
async fn a_promotion_the_api_server_refuses_is_a_permanent_failure_with_its_message() {
    kargo_crds();
    let ns = namespace("kargo-task");
    let client = client().await;
    let stages: Api<Stage> = Api::namespaced(client.clone(), &ns);
    let freights: Api<Freight> = Api::namespaced(client.clone(), &ns);
    // The generated shape: one step referencing a PromotionTask. Kargo's admission
    // webhook inflates it when a Promotion is created; this server has no Kargo, so the
    // Promotion CRD's own rule refuses it.
    let steps = serde_json::json!([{"task": {"kind": "PromotionTask", "name": "build-image"}}]);
    stages
        .create(
            &PostParams::default(),
            &stage(&ns, "app-build", &["python-3-12"], steps),
        )
        .await
        .unwrap();
    freights
        .create(
            &PostParams::default(),
            &freight(&ns, "python-3-12", "docker.io/library/python", 'e'),
        )
        .await
        .unwrap();
    // Through the trigger factory, as the controller builds it from images.yaml; only
    // a process with a cluster client can start it.
    let trigger = image_factory::enrollment::Trigger::KargoPromotion {
        stage: "app-build".into(),
        project: ns.clone(),
        task: None,
    };
    assert!(image_factory::trigger::backend(&trigger, None)
        .unwrap()
        .is_none());
    let backend = image_factory::trigger::backend(&trigger, Some(&client))
        .unwrap()
        .expect("a backend with a cluster client");
    assert_eq!(backend.kind(), "kargoPromotion");
    let failure = backend
        .run(&request(1), &Context::detached())
        .await
        .unwrap_err();
    assert!(!failure.transient, "{}", failure.reason);
    assert!(
        failure.reason.contains("refused Promotion")
            && failure.reason.contains("must not reference a task")
            && failure.reason.contains("is Kargo installed"),
        "{}",
        failure.reason
    );
    let promotions: Api<Promotion> = Api::namespaced(client, &ns);
    assert!(promotions
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

/// `image-factory controller` with a `kargoPromotion` trigger, end to end: the Freight
/// Kargo made for the base both starts the hold and is what the Promotion promotes; the
/// test plays Kargo's controller (it runs the build the Stage's steps would run, then
/// writes `status.phase`); the rebuild is verified in the registry, recorded with the
/// Promotion as its trigger, and cascades.
#[test]
fn a_kargo_promotion_trigger_builds_through_the_controller_and_the_cascade_goes_on() {
    use crate::factory::{stop, Fleet, Site};
    use crate::support::k8s::kubeconfig;

    crate::crds::crds_applied();
    kargo_crds();
    let ns = namespace("controller-kargo");
    let mut site = Site::new(
        "ctl-kargo",
        &Fleet {
            base_rebuild: "{delay: 0s}",
            failing: &[],
            app2: false,
            external_host: None,
        },
    );
    // platform is built through a Kargo Stage; app1 stays a command trigger.
    site.switch_trigger(
        "platform",
        &format!("{{kargoPromotion: {{stage: platform-build, project: {ns}}}}}"),
        "platform builds through Kargo",
    );

    // The Stage, as its owner writes it: Freight of the base's Warehouse, steps that
    // build with the pins the Promotion carries.
    let steps = serde_json::json!([{"uses": "http", "config": {
        "url": "https://ci.example/build",
        "body": "${{ vars.imageFactoryBase_base }} ${{ vars.imageFactoryReference }}"}}]);
    let stage = serde_json::to_string(&stage(&ns, "platform-build", &["base"], steps)).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), stage).unwrap();
    let (ok, out) = kubectl(&["create", "-f", &file.path().display().to_string()]);
    assert!(ok, "{out}");

    let kube = kubeconfig().display().to_string();
    let env = [("KUBECONFIG", kube.as_str()), ("POD_NAME", "replica-a")];
    let mut controller = site.spawn_command("controller", &["--namespace", ns.as_str()], &env);
    let v2 = site.release("base");
    let mut f = Freight::new(&ns, "");
    f.origin = FreightOrigin {
        kind: "Warehouse".into(),
        name: "base".into(),
    };
    f.images = vec![FreightImage {
        repo_url: Some(site.reference("base").repo_url()),
        tag: Some("1".into()),
        digest: Some(v2.to_string()),
    }];
    let freight_id = f.generate_id();
    f.metadata.name = Some(freight_id.clone());
    std::fs::write(file.path(), serde_json::to_string(&f).unwrap()).unwrap();
    let (ok, out) = kubectl(&["create", "-f", &file.path().display().to_string()]);
    assert!(ok, "{out}");

    // The Promotion appears with the pins; the test is Kargo running its steps.
    let mut promotion = serde_json::Value::Null;
    site.wait("platform's Promotion", Duration::from_secs(60), |_| {
        let (ok, out) = kubectl(&[
            "get",
            "promotions.kargo.akuity.io",
            "-n",
            &ns,
            "-l",
            "imagefactory.dev/image=platform",
            "-o",
            "json",
        ]);
        promotion = serde_json::from_str::<serde_json::Value>(&out)
            .map(|v| v["items"][0].clone())
            .unwrap_or(serde_json::Value::Null);
        ok && !promotion.is_null()
    });
    let name = promotion["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(promotion["spec"]["freight"], freight_id.as_str());
    assert_eq!(promotion["spec"]["stage"], "platform-build");
    let vars: std::collections::BTreeMap<String, String> = promotion["spec"]["vars"]
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
    let pin = &vars["imageFactoryBase_base"];
    assert!(pin.ends_with(&format!("@{v2}")), "{pin}");
    let build = tempfile::tempdir().unwrap();
    let dockerfile = build.path().join("Dockerfile");
    std::fs::write(&dockerfile, format!("FROM {pin}\nCOPY p.txt /p.txt\n")).unwrap();
    let steps = std::process::Command::new("sh")
        .arg("-c")
        .arg(site.build_shell("platform"))
        .env(
            "IMAGE_FACTORY_IDEMPOTENCY_KEY",
            &vars["imageFactoryIdempotencyKey"],
        )
        .env("IMAGE_FACTORY_IMAGE", "platform")
        .env("IMAGE_FACTORY_DOCKERFILE", &dockerfile)
        .env("IMAGE_FACTORY_CONTEXT", site.work.join("platform"))
        .env("IMAGE_FACTORY_REFERENCE", &vars["imageFactoryReference"])
        .output()
        .unwrap();
    assert!(
        steps.status.success(),
        "{}",
        String::from_utf8_lossy(&steps.stderr)
    );
    let (ok, out) = kubectl(&[
        "patch",
        "promotions.kargo.akuity.io",
        &name,
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded"}}"#,
    ]);
    assert!(ok, "{out}");

    // Verified in the registry, recorded with the Promotion as its trigger, cascaded.
    site.wait(
        "platform built through Kargo",
        Duration::from_secs(60),
        |s| s.succeeded_on("platform", "base", &v2).is_some(),
    );
    let p2 = site.succeeded_on("platform", "base", &v2).unwrap();
    let rebuild = site.rebuild_on("platform", "base", &v2).unwrap();
    assert_eq!(
        rebuild.trigger.as_deref(),
        Some(format!("promotion/{ns}/{name}").as_str())
    );
    site.wait("app1 built on it", Duration::from_secs(120), |s| {
        s.succeeded_on("app1", "platform", &p2).is_some()
    });
    stop(&mut controller);
}
