//! People's decisions made on the rebuild objects: `kubectl annotate ifr NAME
//! imagefactory.dev/expedite="CVE-…"` skips the remaining hold of that rebuild.
//!
//! A kube-runtime `Controller` reconciles every `ImageFactoryRebuild`: when the
//! annotation is set, non-blank, and the object does not show the expedite yet
//! (`spec.expedite`), the reconciler hands an `expedite IMAGE` decision to the factory
//! (the same engine call as `image-factory expedite`), recorded with who annotated — the
//! `manager` of the annotation's entry in `managedFields` (`kubectl-annotate`), as
//! `annotation:MANAGER`. The factory persists it (state, git history); the mirror then
//! writes `spec.expedite` and the `RebuildExpedited` Event. A refused expedite (the
//! rebuild already started, the image unknown) is a Warning Event `ExpediteRefused`,
//! once per reason.
//!
//! Level-triggered and idempotent: a reconcile of an object whose expedite is recorded,
//! or that has no annotation, does nothing; a repeated expedite is refused by the engine
//! as a no-op. Errors requeue with backoff (5 s, doubled, at most 5 min).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Api, Resource as _, ResourceExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::decide::Action as Decide;
use crate::crd::{ImageFactoryRebuild, ANNOTATION_EXPEDITE};
use crate::factory::ClusterDecision;

/// Errors of one reconcile; each requeues with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The factory has stopped: its decision channel is closed.
    #[error("the factory is not running")]
    FactoryGone,
}

/// What the reconciler shares.
pub struct Context {
    decisions: mpsc::UnboundedSender<ClusterDecision>,
    recorder: Option<Recorder>,
    /// (object uid, reason) already refused: one Warning each.
    refused: Mutex<BTreeSet<(String, String)>>,
    /// Consecutive errors, for the backoff.
    errors: Mutex<u32>,
    metrics: Option<Arc<crate::factory::Metrics>>,
}

impl Context {
    /// A context sending decisions on `decisions`, Events through `recorder`.
    pub fn new(
        decisions: mpsc::UnboundedSender<ClusterDecision>,
        recorder: Option<Recorder>,
    ) -> Self {
        Self {
            decisions,
            recorder,
            refused: Mutex::default(),
            errors: Mutex::default(),
            metrics: None,
        }
    }

    /// Counts reconcile errors in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::factory::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// The expedite a rebuild object asks for and does not show yet: (reason, by).
pub fn wanted_expedite(object: &ImageFactoryRebuild) -> Option<(String, String)> {
    if object.spec.expedite.is_some() {
        return None;
    }
    let reason = object.annotations().get(ANNOTATION_EXPEDITE)?.trim();
    if reason.is_empty() {
        return None;
    }
    let key = format!("f:{ANNOTATION_EXPEDITE}");
    let manager = object
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .rev()
        .find(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.to_string().contains(&key))
        })
        .and_then(|m| m.manager.clone())
        .unwrap_or_else(|| "unknown".to_string());
    Some((reason.to_string(), format!("annotation:{manager}")))
}

/// Reconciles one rebuild object: see the module docs.
///
/// # Errors
///
/// [`ReconcileError::FactoryGone`] when the factory no longer takes decisions.
pub async fn reconcile(
    object: Arc<ImageFactoryRebuild>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let Some((reason, by)) = wanted_expedite(&object) else {
        return Ok(Action::await_change());
    };
    let uid = object.uid().unwrap_or_default();
    let key = (uid, reason.clone());
    if ctx.refused.lock().is_ok_and(|r| r.contains(&key)) {
        return Ok(Action::await_change());
    }
    let (reply, answer) = oneshot::channel();
    ctx.decisions
        .send(ClusterDecision {
            action: Decide::Expedite {
                target: object.spec.image.clone(),
                reason: reason.clone(),
            },
            by: by.clone(),
            reply,
        })
        .map_err(|_| ReconcileError::FactoryGone)?;
    let outcome = answer.await.map_err(|_| ReconcileError::FactoryGone)?;
    if let Ok(mut n) = ctx.errors.lock() {
        *n = 0;
    }
    match outcome {
        Ok(lines) => {
            info!(rebuild = %object.name_any(), %by, %reason, decisions = lines.len(), "expedited by annotation");
        }
        Err(why) => {
            warn!(rebuild = %object.name_any(), %by, %why, "expedite refused");
            if let Ok(mut r) = ctx.refused.lock() {
                r.insert(key);
            }
            if let Some(recorder) = &ctx.recorder {
                let event = KubeEvent {
                    type_: EventType::Warning,
                    reason: "ExpediteRefused".to_string(),
                    note: Some(format!("{by}: {why}")),
                    action: "Expedite".to_string(),
                    secondary: None,
                };
                let _ = recorder.publish(&event, &object.object_ref(&())).await;
            }
        }
    }
    Ok(Action::await_change())
}

/// Backoff after a failed reconcile: 5 s, doubled per consecutive error, at most 5 min.
pub fn error_policy(
    _object: Arc<ImageFactoryRebuild>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let n = ctx.errors.lock().map_or(0, |mut n| {
        *n = n.saturating_add(1);
        *n
    });
    warn!(%error, attempt = n, "reconcile failed; requeued");
    if let Some(m) = &ctx.metrics {
        m.reconcile_error("factory_gone");
    }
    let secs = 5u64
        .saturating_mul(1 << n.min(6).saturating_sub(1))
        .min(300);
    Action::requeue(Duration::from_secs(secs))
}

/// Runs the controller over the rebuild objects of `api` until `shutdown`.
pub async fn run(api: Api<ImageFactoryRebuild>, ctx: Arc<Context>, shutdown: CancellationToken) {
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ImageFactoryRebuildSpec, TriggeringUpdate};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};

    fn object(annotation: Option<&str>) -> ImageFactoryRebuild {
        let mut o = ImageFactoryRebuild::new(
            "app-0123456789",
            ImageFactoryRebuildSpec {
                image: "app".into(),
                update: TriggeringUpdate {
                    base: "base".into(),
                    reference: "r/base:1".into(),
                    tag: None,
                    digest: format!("sha256:{}", "a".repeat(64)),
                    freight: None,
                    discovered_at: Time("2026-12-01T00:00:00Z".parse().unwrap()),
                },
                pinned_bases: vec![],
                parent: None,
                expedite: None,
            },
        );
        if let Some(a) = annotation {
            o.metadata.annotations =
                Some([(ANNOTATION_EXPEDITE.to_string(), a.to_string())].into());
        }
        o.metadata.managed_fields = Some(vec![
            ManagedFieldsEntry {
                manager: Some("image-factory".into()),
                fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {}}))),
                ..ManagedFieldsEntry::default()
            },
            ManagedFieldsEntry {
                manager: Some("kubectl-annotate".into()),
                fields_v1: Some(FieldsV1(serde_json::json!({
                    "f:metadata": {"f:annotations": {"f:imagefactory.dev/expedite": {}}}
                }))),
                ..ManagedFieldsEntry::default()
            },
        ]);
        o
    }

    #[test]
    fn the_annotation_asks_for_an_expedite_by_its_manager_until_the_spec_shows_it() {
        assert_eq!(
            wanted_expedite(&object(Some(" CVE-2026-1 "))),
            Some((
                "CVE-2026-1".to_string(),
                "annotation:kubectl-annotate".to_string()
            ))
        );
        assert_eq!(wanted_expedite(&object(None)), None);
        assert_eq!(wanted_expedite(&object(Some("  "))), None);
        let mut done = object(Some("CVE-2026-1"));
        done.spec.expedite = Some(crate::crd::Expedite {
            reason: "CVE-2026-1".into(),
            by: Some("annotation:kubectl-annotate".into()),
        });
        assert_eq!(wanted_expedite(&done), None);
    }

    #[tokio::test]
    async fn a_reconcile_hands_the_expedite_to_the_factory_once_and_remembers_a_refusal() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ctx = Arc::new(Context::new(tx, None));
        let o = Arc::new(object(Some("CVE-2026-1")));
        let factory = tokio::spawn(async move {
            let d = rx.recv().await.unwrap();
            assert!(
                matches!(&d.action, Decide::Expedite { target, reason } if target == "app" && reason == "CVE-2026-1")
            );
            assert_eq!(d.by, "annotation:kubectl-annotate");
            d.reply.send(Err("already started".into())).unwrap();
            rx
        });
        reconcile(o.clone(), ctx.clone()).await.unwrap();
        let mut rx = factory.await.unwrap();
        // Refused once: the next reconcile of the same object and reason sends nothing.
        reconcile(o, ctx.clone()).await.unwrap();
        assert!(rx.try_recv().is_err());
        // The factory gone: an error, requeued with backoff.
        drop(rx);
        let err = reconcile(Arc::new(object(Some("CVE-2"))), ctx.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, ReconcileError::FactoryGone));
    }
}
