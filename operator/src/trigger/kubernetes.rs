//! The `kubernetesJob` trigger: a `batch/v1` Job made from a template, run by the
//! cluster, its end read from the Job's conditions.
//!
//! ```yaml
//! trigger:
//!   kubernetesJob: {namespace: builds, templateConfigMap: buildah-job}
//! ```
//!
//! The ConfigMap's `job.yaml` key holds a Job manifest (any builder: buildah, kaniko,
//! BuildKit). For each attempt the backend:
//!
//! 1. names the Job `ID-ATTEMPT` (the rebuild id, cut so the whole is a DNS label of at
//!    most 63 characters), labels Job and pod template with `imagefactory.dev/rebuild`,
//!    `imagefactory.dev/attempt` and `imagefactory.dev/image`, and annotates the Job
//!    with the idempotency key;
//! 2. appends the rebuild's environment to every container and init container: the
//!    `command` trigger's variables (`IMAGE_FACTORY_REFERENCE`, `_TAGS`, `_REBUILD_ID`,
//!    `_ATTEMPT`, `_IDEMPOTENCY_KEY`, `_BASES` and one `_BASE_<NAME>` per pinned base),
//!    without the local paths, plus where the source is for a builder in the cluster:
//!    `IMAGE_FACTORY_SOURCE_GIT`, `_SOURCE_REF`, `_SOURCE_COMMIT`, `_SOURCE_DOCKERFILE`,
//!    `_SOURCE_CONTEXT` (those known);
//! 3. creates it — a Job of that name that exists already is the same attempt (a
//!    restart resumes it instead of starting a second build);
//! 4. reports `job/NAMESPACE/NAME` as started and polls the Job every 2 s until a
//!    `Complete` (success) or `Failed` (failure, with the condition's reason and
//!    message) condition is `True` — the Job controller's verdict, as `kubectl wait`
//!    reads it.
//!
//! Cancelling (shutdown, superseded) stops the wait and leaves the Job: a restart
//! adopts it by name. The template's `activeDeadlineSeconds` bounds the build; the wait
//! itself gives up after [`MAX_WAIT`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar};
use kube::api::{Api, PostParams};
use kube::Client;

use super::{Backend, Context, Failure, Report, Request, RunFuture};

/// The ConfigMap key holding the Job manifest.
pub const TEMPLATE_KEY: &str = "job.yaml";
/// Label of the rebuild on Jobs and their pods.
pub const LABEL_REBUILD: &str = "imagefactory.dev/rebuild";
/// Label of the attempt number.
pub const LABEL_ATTEMPT: &str = "imagefactory.dev/attempt";
/// Annotation with the attempt's idempotency key (`ID.ATTEMPT`).
pub const ANNOTATION_IDEMPOTENCY_KEY: &str = "imagefactory.dev/idempotency-key";
/// Longest wait for a Job's verdict: 6 hours.
pub const MAX_WAIT: Duration = Duration::from_secs(6 * 3600);
/// How often the Job is read while it runs.
const POLL: Duration = Duration::from_secs(2);

/// The `kubernetesJob` backend.
pub struct JobBackend {
    client: Client,
    namespace: String,
    template_config_map: String,
}

impl JobBackend {
    /// Jobs in `namespace` from the template in ConfigMap `template_config_map` there.
    pub fn new(client: Client, namespace: &str, template_config_map: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            template_config_map: template_config_map.to_string(),
        }
    }

    /// The Job for `request` from the template: see the module docs.
    ///
    /// # Errors
    ///
    /// A permanent [`Failure`] when the ConfigMap has no `job.yaml` or it is no Job.
    pub fn job_for(&self, template: &ConfigMap, request: &Request) -> Result<Job, Failure> {
        let place = format!("ConfigMap {}/{}", self.namespace, self.template_config_map);
        let text = template
            .data
            .as_ref()
            .and_then(|d| d.get(TEMPLATE_KEY))
            .ok_or_else(|| {
                Failure::permanent(format!(
                    "{place} has no `{TEMPLATE_KEY}` key: put the Job manifest there"
                ))
            })?;
        let mut job: Job = serde_saphyr::from_str(text).map_err(|e| {
            Failure::permanent(format!(
                "{place}: `{TEMPLATE_KEY}` is not a Job manifest: {e}"
            ))
        })?;
        let name = job_name(request);
        let labels = [
            (LABEL_REBUILD.to_string(), request.id.to_string()),
            (LABEL_ATTEMPT.to_string(), request.attempt.to_string()),
            (
                crate::crd::LABEL_IMAGE.to_string(),
                crate::crd::label_value(&request.image),
            ),
        ];
        job.metadata.name = Some(name);
        job.metadata.generate_name = None;
        job.metadata.namespace = Some(self.namespace.clone());
        job.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(labels.clone());
        job.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                ANNOTATION_IDEMPOTENCY_KEY.to_string(),
                request.idempotency_key(),
            );
        let spec = job.spec.get_or_insert_with(Default::default);
        spec.template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(labels);
        let env = environment(request);
        let pod = spec.template.spec.get_or_insert_with(Default::default);
        if pod.containers.is_empty() {
            return Err(Failure::permanent(format!(
                "{place}: the Job template has no containers"
            )));
        }
        let add = |c: &mut Container| {
            let vars = c.env.get_or_insert_with(Vec::new);
            vars.retain(|v| !env.iter().any(|(k, _)| *k == v.name));
            vars.extend(env.iter().map(|(k, v)| EnvVar {
                name: k.clone(),
                value: Some(v.clone()),
                value_from: None,
            }));
        };
        pod.containers.iter_mut().for_each(add);
        pod.init_containers.iter_mut().flatten().for_each(add);
        Ok(job)
    }

    async fn run_job(&self, request: &Request, ctx: &Context) -> Result<Report, Failure> {
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let template = maps
            .get_opt(&self.template_config_map)
            .await
            .map_err(|e| {
                Failure::transient(format!(
                    "cannot read ConfigMap {}/{}: {e}",
                    self.namespace, self.template_config_map
                ))
            })?
            .ok_or_else(|| {
                Failure::permanent(format!(
                    "ConfigMap {}/{} does not exist: create it with the Job template under `{TEMPLATE_KEY}`",
                    self.namespace, self.template_config_map
                ))
            })?;
        let job = self.job_for(&template, request)?;
        let name = job.metadata.name.clone().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {}
            // The same attempt was created before a restart: wait for it.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::info!(job = %name, "the attempt's Job exists; waiting for it");
            }
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => {
                return Err(Failure::permanent(format!(
                    "the API server refused Job {}/{name}: {}",
                    self.namespace, e.message
                )))
            }
            Err(e) => {
                return Err(Failure::transient(format!(
                    "cannot create Job {}/{name}: {e}",
                    self.namespace
                )))
            }
        }
        let handle = format!("job/{}/{name}", self.namespace);
        ctx.started(handle.clone());
        follow(
            &jobs,
            &name,
            handle,
            ctx,
            |job| verdict(job).map(|v| v.map_err(|why| format!("failed: {why}"))),
            "the Job is left running and adopted on the next start",
        )
        .await
    }
}

/// Reads object `name` through `api` every 2 s until `decide` gives its verdict — the
/// wait of the in-cluster triggers (`kubernetesJob`, `kargoPromotion`), whose objects
/// the cluster drives to an end state. `Ok` is the trigger's success (reported under
/// `handle`); `Err(why)` a permanent failure `"{handle} {why}"`.
///
/// # Errors
///
/// A permanent [`Failure`] on the object's failed verdict; a transient one when it is
/// deleted before its verdict, after [`MAX_WAIT`], or when `ctx` is cancelled — the
/// object is then left alone (`left` says how) and adopted by name on the next start.
/// A failed read is logged and retried.
pub(super) async fn follow<K>(
    api: &Api<K>,
    name: &str,
    handle: String,
    ctx: &Context,
    decide: impl Fn(&K) -> Option<Result<(), String>>,
    left: &str,
) -> Result<Report, Failure>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + MAX_WAIT;
    loop {
        match api.get_opt(name).await {
            Ok(Some(object)) => match decide(&object) {
                Some(Ok(())) => {
                    return Ok(Report {
                        handle: Some(handle),
                        log_tail: None,
                    })
                }
                Some(Err(why)) => return Err(Failure::permanent(format!("{handle} {why}"))),
                None => {}
            },
            Ok(None) => {
                return Err(Failure::transient(format!(
                    "{handle} was deleted before it finished"
                )))
            }
            Err(e) => tracing::warn!(object = %handle, error = %e, "cannot read it; retrying"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::transient(format!(
                "{handle} did not finish within {}",
                humantime::format_duration(MAX_WAIT)
            )));
        }
        tokio::select! {
            () = ctx.cancel.cancelled() => {
                return Err(Failure::transient(format!("{handle}: cancelled; {left}")));
            }
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

impl Backend for JobBackend {
    fn kind(&self) -> &'static str {
        "kubernetesJob"
    }

    fn run<'a>(&'a self, request: &'a Request, ctx: &'a Context) -> RunFuture<'a> {
        Box::pin(self.run_job(request, ctx))
    }
}

/// `ID-ATTEMPT`, the id cut so the whole is at most 63 characters.
pub fn job_name(request: &Request) -> String {
    let suffix = format!("-{}", request.attempt);
    let mut id = request.id.to_string();
    id.truncate(crate::crd::MAX_NAME_LEN - suffix.len());
    format!("{}{suffix}", id.trim_end_matches('-'))
}

/// The Job's verdict from its conditions: `Complete` → `Ok`, `Failed` → the reason
/// and message; `None` while neither is `True`.
pub fn verdict(job: &Job) -> Option<Result<(), String>> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for c in conditions.iter().filter(|c| c.status == "True") {
        match c.type_.as_str() {
            "Complete" => return Some(Ok(())),
            "Failed" => {
                return Some(Err(format!(
                    "{}: {}",
                    c.reason.as_deref().unwrap_or("Failed"),
                    c.message.as_deref().unwrap_or("no message")
                )))
            }
            _ => {}
        }
    }
    None
}

/// The variables a Job's containers get (see the module docs), sorted.
fn environment(request: &Request) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = request
        .env()
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "IMAGE_FACTORY_SOURCE_DIR" | "IMAGE_FACTORY_CONTEXT" | "IMAGE_FACTORY_DOCKERFILE"
            )
        })
        .collect();
    let s = &request.source;
    for (k, v) in [
        ("IMAGE_FACTORY_SOURCE_GIT", s.git.clone()),
        ("IMAGE_FACTORY_SOURCE_REF", s.reference.clone()),
        ("IMAGE_FACTORY_SOURCE_COMMIT", s.commit.clone()),
        (
            "IMAGE_FACTORY_SOURCE_DOCKERFILE",
            Some(s.dockerfile.clone()),
        ),
        ("IMAGE_FACTORY_SOURCE_CONTEXT", Some(s.context.clone())),
    ] {
        if let Some(v) = v {
            env.push((k.to_string(), v));
        }
    }
    env.sort();
    env
}
