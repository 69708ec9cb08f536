//! The `kargoPromotion` trigger: a Kargo `Promotion` of the Freight that carries the
//! rebuild's pinned base, into a Stage whose promotion steps build the image.
//!
//! ```yaml
//! trigger:
//!   kargoPromotion: {stage: app-build, project: image-factory, task: build-image}
//! ```
//!
//! For each attempt the backend (all objects `kargo.akuity.io/v1alpha1`, in `project`):
//!
//! 1. adopts the attempt's Promotion when it exists already (a restart resumes the same
//!    attempt instead of promoting twice); otherwise
//! 2. reads the Stage — missing, or without `spec.promotionTemplate.spec.steps`, is a
//!    permanent failure (`kargo.stages: true` makes `analyze` write it);
//! 3. picks the Freight to promote ([`select_freight`]): from one of the Warehouses the
//!    Stage requests (`requestedFreight[].origin.name`), carrying the digest of a pinned
//!    base of the rebuild — the base of the triggering update first, then the others,
//!    the newest Freight on a tie. None is a transient failure: Kargo may not have
//!    discovered the digest yet;
//! 4. creates the Promotion [`promotion_name`] (`<stage>.<rebuild id>-<attempt>`) with
//!    the Stage template's steps and vars plus the rebuild's ([`variables`]:
//!    `imageFactoryReference`, `imageFactoryBases`, one `imageFactoryBase_<name>` per
//!    pinned base, …), labelled `imagefactory.dev/rebuild`, `/attempt`, `/image` and
//!    annotated with the idempotency key. Kargo's admission webhook inflates a step's
//!    `task` into the (Cluster)PromotionTask's steps at creation, as for any Promotion;
//! 5. reports `promotion/<project>/<name>` as started and reads the Promotion every 2 s
//!    until Kargo's `status.phase` is terminal: `Succeeded` is the trigger's success,
//!    `Failed`, `Errored` and `Aborted` its failure (with `status.message`).
//!
//! Cancelling (shutdown, superseded) stops the wait and leaves the Promotion: the next
//! start adopts it. The wait gives up after [`MAX_WAIT`](super::kubernetes::MAX_WAIT).
//!
//! The factory's ServiceAccount needs `get` on `stages`, `list` on `freights`, `get` and
//! `create` on `promotions`, and Kargo's `promote` verb on `stages` (Kargo's webhook
//! checks it) in the Project.

use std::collections::BTreeSet;

use kube::api::{Api, ListParams, PostParams};
use kube::Client;

use super::kubernetes::{follow, ANNOTATION_IDEMPOTENCY_KEY, LABEL_ATTEMPT, LABEL_REBUILD};
use super::{Backend, Context, Failure, Report, Request, RunFuture};
use crate::kargo::{
    ExpressionVariable, Freight, Promotion, PromotionSpec, Stage, LABEL_MANAGED_BY, MANAGER,
};

/// Longest Promotion name: a Kubernetes object name (DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Prefix of the variable carrying one pinned base (`imageFactoryBase_python_3_12_slim`).
pub const BASE_VARIABLE_PREFIX: &str = "imageFactoryBase_";

/// The `kargoPromotion` backend.
pub struct PromotionBackend {
    client: Client,
    project: String,
    stage: String,
}

impl PromotionBackend {
    /// Promotions into Stage `stage` of Kargo Project (namespace) `project`.
    pub fn new(client: Client, project: &str, stage: &str) -> Self {
        Self {
            client,
            project: project.to_string(),
            stage: stage.to_string(),
        }
    }

    fn place(&self) -> String {
        format!("Stage {}/{}", self.project, self.stage)
    }

    /// The Stage, with steps to run.
    async fn read_stage(&self) -> Result<Stage, Failure> {
        let stages: Api<Stage> = Api::namespaced(self.client.clone(), &self.project);
        let stage = stages
            .get_opt(&self.stage)
            .await
            .map_err(|e| Failure::transient(format!("cannot read {}: {e}", self.place())))?
            .ok_or_else(|| {
                Failure::permanent(format!(
                    "{} does not exist: create it, or set `kargo.stages: true` in images.yaml and run `image-factory analyze` (then apply state/stages/)",
                    self.place()
                ))
            })?;
        if stage.steps().is_empty() {
            return Err(Failure::permanent(format!(
                "{} has no spec.promotionTemplate.spec.steps: Kargo cannot promote into it; add the steps that build the image (or set trigger.kargoPromotion.task and kargo.stages: true)",
                self.place()
            )));
        }
        Ok(stage)
    }

    /// The Freight to promote into `stage` for `request`.
    async fn find_freight(&self, stage: &Stage, request: &Request) -> Result<Freight, Failure> {
        let freights: Api<Freight> = Api::namespaced(self.client.clone(), &self.project);
        let list = freights.list(&ListParams::default()).await.map_err(|e| {
            Failure::transient(format!("cannot list Freight in {}: {e}", self.project))
        })?;
        let warehouses = stage.warehouses();
        if let Some(f) = select_freight(&list.items, &warehouses, request) {
            return Ok(f.clone());
        }
        let digests: Vec<&str> = request.bases.iter().filter_map(|b| b.digest()).collect();
        Err(Failure::transient(format!(
            "no Freight in project {} from Warehouse(s) {} of {} carries a pinned base digest ({}); Kargo may not have discovered it yet",
            self.project,
            if warehouses.is_empty() {
                "(none requested)".to_string()
            } else {
                warehouses.into_iter().collect::<Vec<_>>().join(", ")
            },
            self.place(),
            if digests.is_empty() {
                "none pinned".to_string()
            } else {
                digests.join(", ")
            },
        )))
    }

    /// Creates the attempt's Promotion, or finds it created before a restart.
    async fn start(
        &self,
        promotions: &Api<Promotion>,
        request: &Request,
    ) -> Result<String, Failure> {
        let name = promotion_name(&self.stage, request);
        let existing = promotions.get_opt(&name).await.map_err(|e| {
            Failure::transient(format!(
                "cannot read Promotion {}/{name}: {e}",
                self.project
            ))
        })?;
        if existing.is_some() {
            tracing::info!(promotion = %name, "the attempt's Promotion exists; waiting for it");
            return Ok(name);
        }
        let stage = self.read_stage().await?;
        let freight = self.find_freight(&stage, request).await?;
        let freight_name = freight.metadata.name.clone().unwrap_or_default();
        let promotion = promotion(&self.project, &stage, &freight_name, request);
        match promotions.create(&PostParams::default(), &promotion).await {
            Ok(_) => {
                tracing::info!(promotion = %name, freight = %freight_name, stage = %self.stage, "promotion created");
            }
            // Created by this attempt before a restart, between our read and create.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::info!(promotion = %name, "the attempt's Promotion exists; waiting for it");
            }
            Err(kube::Error::Api(e)) if e.code == 400 || e.code == 422 => {
                let hint = if e.message.contains("must not reference a task") {
                    " (Kargo's admission webhook inflates PromotionTask steps when a Promotion is created: is Kargo installed in this cluster?)"
                } else {
                    ""
                };
                return Err(Failure::permanent(format!(
                    "the API server refused Promotion {}/{name}: {}{hint}",
                    self.project, e.message
                )));
            }
            Err(kube::Error::Api(e)) if e.code == 403 => {
                return Err(Failure::permanent(format!(
                    "not allowed to promote into {}: {} (the factory's ServiceAccount needs `create` on promotions and Kargo's `promote` on stages in {})",
                    self.place(),
                    e.message,
                    self.project
                )));
            }
            Err(e) => {
                return Err(Failure::transient(format!(
                    "cannot create Promotion {}/{name}: {e}",
                    self.project
                )))
            }
        }
        Ok(name)
    }

    async fn run_promotion(&self, request: &Request, ctx: &Context) -> Result<Report, Failure> {
        let promotions: Api<Promotion> = Api::namespaced(self.client.clone(), &self.project);
        let name = self.start(&promotions, request).await?;
        let handle = format!("promotion/{}/{name}", self.project);
        ctx.started(handle.clone());
        follow(
            &promotions,
            &name,
            handle,
            ctx,
            |p: &Promotion| p.verdict().map(|v| v.map_err(|why| format!("ended {why}"))),
            "the Promotion is left to Kargo and adopted on the next start",
        )
        .await
    }
}

impl Backend for PromotionBackend {
    fn kind(&self) -> &'static str {
        "kargoPromotion"
    }

    fn run<'a>(&'a self, request: &'a Request, ctx: &'a Context) -> RunFuture<'a> {
        Box::pin(self.run_promotion(request, ctx))
    }
}

/// `<stage>.<rebuild id>-<attempt>`: deterministic per attempt, so a restart finds it.
/// At most [`MAX_NAME_LEN`] characters (the Stage name is cut, never the id) and a DNS
/// subdomain when the Stage name is one (a cut never ends on `-` or `.`).
pub fn promotion_name(stage: &str, request: &Request) -> String {
    let suffix = format!(".{}-{}", request.id, request.attempt);
    let room = MAX_NAME_LEN.saturating_sub(suffix.len());
    let prefix: String = stage.chars().take(room).collect();
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}{suffix}")
}

/// The Freight to promote for `request`, from `freights` (a Project's Freight):
/// one whose `origin` is one of `warehouses` and one of whose `images[].digest` is the
/// digest of a pinned base (`request.bases[].pinned`). Freight carrying the digest of a
/// base named by the triggering update (`request.cause.updates`) wins over Freight
/// carrying another pinned base; then the newest `creationTimestamp`, then the name (so
/// the choice is stable). `None` when no Freight qualifies.
pub fn select_freight<'a>(
    freights: &'a [Freight],
    warehouses: &BTreeSet<&str>,
    request: &Request,
) -> Option<&'a Freight> {
    let updated: BTreeSet<&str> = request
        .cause
        .updates
        .iter()
        .map(|u| u.image.as_str())
        .collect();
    let mut preferred = BTreeSet::new();
    let mut others = BTreeSet::new();
    for base in &request.bases {
        if let Some(digest) = base.digest() {
            if updated.contains(base.image.as_str()) {
                preferred.insert(digest);
            } else {
                others.insert(digest);
            }
        }
    }
    freights
        .iter()
        .filter(|f| warehouses.contains(f.origin.name.as_str()))
        .filter_map(|f| {
            let digests = || f.images.iter().filter_map(|i| i.digest.as_deref());
            let rank = if digests().any(|d| preferred.contains(d)) {
                2
            } else if digests().any(|d| others.contains(d)) {
                1
            } else {
                return None;
            };
            let created = f.metadata.creation_timestamp.as_ref().map(|t| t.0);
            Some(((rank, created, f.metadata.name.clone()), f))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, f)| f)
}

/// The variables a Promotion gives the build, for the steps' `${{ vars.NAME }}`:
/// `imageFactoryImage`, `imageFactoryReference`, `imageFactoryTags` (space-separated),
/// `imageFactoryRebuildId`, `imageFactoryAttempt`, `imageFactoryIdempotencyKey`,
/// `imageFactoryBases` (the pins as JSON, `[{"image":…,"pinned":…}]`),
/// `imageFactorySourceGit`, `…SourceRef`, `…SourceCommit` (those known),
/// `…SourceDockerfile`, `…SourceContext`, and one [`base_variable`] per pinned base.
/// Every name matches Kargo's `^[a-zA-Z_]\w*$`.
pub fn variables(request: &Request) -> Vec<ExpressionVariable> {
    let s = &request.source;
    let mut vars = vec![
        ExpressionVariable::new("imageFactoryImage", &request.image),
        ExpressionVariable::new("imageFactoryReference", &request.reference),
        ExpressionVariable::new("imageFactoryTags", request.tags.join(" ")),
        ExpressionVariable::new("imageFactoryRebuildId", request.id.as_str()),
        ExpressionVariable::new("imageFactoryAttempt", request.attempt.to_string()),
        ExpressionVariable::new("imageFactoryIdempotencyKey", request.idempotency_key()),
        ExpressionVariable::new("imageFactoryBases", request.bases_json()),
    ];
    for (name, value) in [
        ("imageFactorySourceGit", s.git.as_ref()),
        ("imageFactorySourceRef", s.reference.as_ref()),
        ("imageFactorySourceCommit", s.commit.as_ref()),
        ("imageFactorySourceDockerfile", Some(&s.dockerfile)),
        ("imageFactorySourceContext", Some(&s.context)),
    ] {
        if let Some(value) = value {
            vars.push(ExpressionVariable::new(name, value));
        }
    }
    for base in &request.bases {
        vars.push(ExpressionVariable::new(
            base_variable(&base.image),
            &base.pinned,
        ));
    }
    vars
}

/// `imageFactoryBase_<NAME>` for base `image`: every character outside `A-Za-z0-9_`
/// as `_` (graph names are `[a-z0-9-]`, so distinct names give distinct variables).
pub fn base_variable(image: &str) -> String {
    let name: String = image
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{BASE_VARIABLE_PREFIX}{name}")
}

/// The Promotion of Freight `freight` into `stage` (in Project `project`) for
/// `request`: named [`promotion_name`], the Stage template's steps, its vars (but those
/// the factory sets) followed by [`variables`], the rebuild's labels and the
/// idempotency annotation.
pub fn promotion(project: &str, stage: &Stage, freight: &str, request: &Request) -> Promotion {
    let stage_name = stage.metadata.name.clone().unwrap_or_default();
    let ours = variables(request);
    let mut vars: Vec<ExpressionVariable> = stage
        .vars()
        .iter()
        .filter(|v| !ours.iter().any(|o| o.name == v.name))
        .cloned()
        .collect();
    vars.extend(ours);
    Promotion {
        api_version: crate::kargo::API_VERSION.to_string(),
        kind: "Promotion".to_string(),
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(promotion_name(&stage_name, request)),
            namespace: Some(project.to_string()),
            labels: Some(
                [
                    (LABEL_REBUILD.to_string(), request.id.to_string()),
                    (LABEL_ATTEMPT.to_string(), request.attempt.to_string()),
                    (
                        crate::crd::LABEL_IMAGE.to_string(),
                        crate::crd::label_value(&request.image),
                    ),
                    (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
                ]
                .into(),
            ),
            annotations: Some(
                [(
                    ANNOTATION_IDEMPOTENCY_KEY.to_string(),
                    request.idempotency_key(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: PromotionSpec {
            stage: stage_name,
            freight: freight.to_string(),
            steps: stage.steps().to_vec(),
            vars,
        },
        status: None,
    }
}

#[cfg(test)]
mod tests;
