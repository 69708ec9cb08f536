//! The `kubernetesJob` trigger against the real API server: the Job made from the
//! ConfigMap template carries the rebuild's labels and pinned bases; the test plays the
//! Job controller by writing the Job's status, as `kubectl wait` would read it.

use std::time::Duration;

use image_factory::runtime::{Cause, PinnedBase, RebuildId};
use image_factory::trigger::kubernetes::{JobBackend, LABEL_ATTEMPT, LABEL_REBUILD};
use image_factory::trigger::{Backend, Context, Request, SourceInfo};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::support::k8s::{client, namespace};

const TEMPLATE: &str = "apiVersion: batch/v1
kind: Job
metadata:
  generateName: build-
  labels: {team: platform}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 3600
  template:
    spec:
      restartPolicy: Never
      initContainers:
      - name: clone
        image: alpine/git
        command: [sh, -c, 'git clone \"$IMAGE_FACTORY_SOURCE_GIT\" /src']
      containers:
      - name: build
        image: quay.io/buildah/stable
        command: [sh, -c, 'buildah bud --build-arg BASE=\"$IMAGE_FACTORY_BASE_ALPINE\" -t \"$IMAGE_FACTORY_REFERENCE\" /src && buildah push \"$IMAGE_FACTORY_REFERENCE\"']
        env:
        - {name: IMAGE_FACTORY_IMAGE, value: stale}
        - {name: KEEP, value: me}
";

fn request(attempt: u32) -> Request {
    let pinned = format!("docker.io/library/alpine:3.20@sha256:{}", "a".repeat(64));
    Request {
        id: RebuildId::derive(
            "team/app",
            "ghcr.io/acme/app:1",
            std::slice::from_ref(&pinned),
        ),
        attempt,
        image: "team/app".to_string(),
        reference: "ghcr.io/acme/app:1".to_string(),
        tags: vec!["ghcr.io/acme/app:1".to_string()],
        bases: vec![PinnedBase {
            image: "alpine".to_string(),
            pinned,
        }],
        build_args: Default::default(),
        source: SourceInfo {
            git: Some("https://git.example/acme/app.git".to_string()),
            reference: Some("main".to_string()),
            commit: Some("0123456789abcdef0123456789abcdef01234567".to_string()),
            dockerfile: "Dockerfile".to_string(),
            context: ".".to_string(),
        },
        local: None,
        cause: Cause::default(),
    }
}

/// Waits for Job `name`, then writes `condition` into its status as the Job controller
/// does.
async fn finish(jobs: &Api<Job>, name: &str, condition: &str, reason: &str) -> Job {
    let mut job = None;
    for _ in 0..100 {
        if let Some(j) = jobs.get_opt(name).await.unwrap() {
            job = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = job.unwrap_or_else(|| panic!("Job {name} never appeared"));
    let now = jiff::Timestamp::now().to_string();
    let status = serde_json::json!({
        "status": {
            "startTime": now,
            "completionTime": if condition == "Complete" { Some(&now) } else { None },
            "succeeded": u8::from(condition == "Complete"),
            "failed": u8::from(condition == "Failed"),
            "conditions": [{"type": condition, "status": "True", "reason": reason,
                "message": format!("{reason} by the test"), "lastTransitionTime": now}],
        }
    });
    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    job
}

#[tokio::test]
async fn a_job_from_the_template_carries_the_pins_and_its_conditions_decide() {
    let ns = namespace("job");
    let client = client().await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let backend = JobBackend::new(client.clone(), &ns, "buildah-job");

    // No template yet: a permanent failure that says what to create.
    let failure = backend
        .run(&request(1), &Context::detached())
        .await
        .unwrap_err();
    assert!(!failure.transient);
    assert!(
        failure.reason.contains("buildah-job") && failure.reason.contains("job.yaml"),
        "{}",
        failure.reason
    );

    let mut map = ConfigMap::default();
    map.metadata.name = Some("buildah-job".to_string());
    map.data = Some([("job.yaml".to_string(), TEMPLATE.to_string())].into());
    maps.create(&PostParams::default(), &map).await.unwrap();

    // Attempt 1 completes.
    let req = request(1);
    let name = image_factory::trigger::kubernetes::job_name(&req);
    assert_eq!(name, format!("{}-1", req.id));
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Context::new(tokio_util::sync::CancellationToken::new(), Some(started_tx));
    let run = {
        let backend = JobBackend::new(client.clone(), &ns, "buildah-job");
        let req = req.clone();
        tokio::spawn(async move { backend.run(&req, &ctx).await })
    };
    let job = finish(&jobs, &name, "Complete", "Completed").await;
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let handle = format!("job/{ns}/{name}");
    assert_eq!(report.handle.as_deref(), Some(handle.as_str()));
    assert_eq!(started_rx.recv().await.as_deref(), Some(handle.as_str()));

    // What the Job carries.
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_REBUILD], req.id.as_str());
    assert_eq!(labels[LABEL_ATTEMPT], "1");
    assert_eq!(labels["imagefactory.dev/image"], "team-app");
    assert_eq!(labels["team"], "platform", "template labels are kept");
    let annotations = job.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations["imagefactory.dev/idempotency-key"],
        format!("{}.1", req.id)
    );
    let template = job.spec.clone().unwrap().template;
    assert_eq!(
        template.metadata.unwrap().labels.unwrap()[LABEL_REBUILD],
        req.id.as_str()
    );
    let pod = template.spec.unwrap();
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        let env: std::collections::BTreeMap<String, String> = c
            .env
            .iter()
            .flatten()
            .map(|v| (v.name.clone(), v.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            env["IMAGE_FACTORY_BASE_ALPINE"], req.bases[0].pinned,
            "{}",
            c.name
        );
        assert_eq!(env["IMAGE_FACTORY_REFERENCE"], "ghcr.io/acme/app:1");
        assert_eq!(
            env["IMAGE_FACTORY_IDEMPOTENCY_KEY"],
            format!("{}.1", req.id)
        );
        assert_eq!(
            env["IMAGE_FACTORY_SOURCE_GIT"],
            "https://git.example/acme/app.git"
        );
        assert_eq!(
            env["IMAGE_FACTORY_SOURCE_COMMIT"],
            "0123456789abcdef0123456789abcdef01234567"
        );
        assert!(
            !env.contains_key("IMAGE_FACTORY_DOCKERFILE"),
            "no local paths in a pod"
        );
        if c.name == "build" {
            assert_eq!(
                env["IMAGE_FACTORY_IMAGE"], "team/app",
                "the rebuild's value wins"
            );
            assert_eq!(env["KEEP"], "me");
        }
    }

    // The same attempt again (a restart): the existing Job is adopted, not duplicated.
    let again = backend.run(&req, &Context::detached()).await.unwrap();
    assert_eq!(again.handle.as_deref(), Some(handle.as_str()));
    let listed = jobs.list(&Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);

    // Attempt 2 fails: the condition's reason and message are the failure.
    let req2 = request(2);
    let name2 = image_factory::trigger::kubernetes::job_name(&req2);
    let run = {
        let backend = JobBackend::new(client.clone(), &ns, "buildah-job");
        let req2 = req2.clone();
        tokio::spawn(async move { backend.run(&req2, &Context::detached()).await })
    };
    finish(&jobs, &name2, "Failed", "BackoffLimitExceeded").await;
    let failure = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        failure.reason.contains("BackoffLimitExceeded"),
        "{}",
        failure.reason
    );
    assert!(failure.reason.contains(&name2), "{}", failure.reason);

    // A template that is no Job is a permanent failure naming the ConfigMap.
    let mut bad = maps.get("buildah-job").await.unwrap();
    bad.data = Some(
        [(
            "job.yaml".to_string(),
            "kind: Job\nspec: [1, 2]\n".to_string(),
        )]
        .into(),
    );
    maps.replace("buildah-job", &PostParams::default(), &bad)
        .await
        .unwrap();
    let failure = backend
        .run(&request(3), &Context::detached())
        .await
        .unwrap_err();
    assert!(
        failure.reason.contains("is not a Job manifest"),
        "{}",
        failure.reason
    );
}
