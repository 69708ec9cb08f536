//! The `kargoPromotion` trigger's pure parts: Promotion names, Freight selection, the
//! Promotion's spec and variables, Kargo's phases as verdicts.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use regex::Regex;

use super::*;
use crate::kargo::{
    FreightImage, FreightOrigin, PromotionStatus, PromotionStep, PromotionTaskReference,
    PromotionTemplate, PromotionTemplateSpec, StageSpec, TaskKind,
};
use crate::runtime::{Cause, Digest, PinnedBase, RebuildId, UpdateRef};
use crate::trigger::SourceInfo;

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

/// A rebuild of `app` on `debian` (digest `d…`) and `python` (digest `p…`), caused by
/// an update of `updated`.
fn request(updated: &str) -> Request {
    Request {
        id: RebuildId::parse("app-0123456789").unwrap(),
        attempt: 2,
        image: "team/app".into(),
        reference: "ghcr.io/acme/app:1".into(),
        tags: vec![
            "ghcr.io/acme/app:1".into(),
            "ghcr.io/acme/app:latest".into(),
        ],
        bases: vec![
            PinnedBase::new("debian", "docker.io/library/debian:12", Some(&digest('d'))),
            PinnedBase::new(
                "python-3-12",
                "docker.io/library/python:3.12",
                Some(&digest('e')),
            ),
        ],
        build_args: Default::default(),
        source: SourceInfo {
            git: Some("https://git.example/acme/app.git".into()),
            reference: None,
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
        },
        local: None,
        cause: Cause {
            updates: vec![UpdateRef {
                image: updated.into(),
                reference: "docker.io/library/x:1".into(),
                digest: digest('e'),
            }],
            parents: vec![],
        },
    }
}

/// Freight `name` from Warehouse `origin` carrying `digest`, created at `created` (s).
fn freight(name: &str, origin: &str, d: char, created: i64) -> Freight {
    let mut f = Freight::new("images", name);
    f.origin = FreightOrigin {
        kind: "Warehouse".into(),
        name: origin.into(),
    };
    f.images = vec![FreightImage {
        repo_url: Some(format!("docker.io/library/{origin}")),
        tag: Some("1".into()),
        digest: Some(digest(d).to_string()),
    }];
    f.metadata.creation_timestamp = Some(Time(
        jiff::Timestamp::from_second(1_700_000_000 + created).unwrap(),
    ));
    f
}

fn origins<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

fn chosen<'a>(freights: &'a [Freight], warehouses: &[&str], req: &Request) -> Option<&'a str> {
    select_freight(freights, &origins(warehouses), req).and_then(|f| f.metadata.name.as_deref())
}

#[test]
fn the_freight_of_the_triggering_base_wins_over_newer_freight_of_another_base() {
    let freights = [
        freight("debian-new", "debian", 'd', 50),
        freight("python-old", "python-3-12", 'e', 10),
    ];
    let ws = ["debian", "python-3-12"];
    assert_eq!(
        chosen(&freights, &ws, &request("python-3-12")),
        Some("python-old")
    );
    assert_eq!(
        chosen(&freights, &ws, &request("debian")),
        Some("debian-new")
    );
    // Caused by a base no Freight carries (a managed parent): any pinned base's Freight,
    // the newest.
    assert_eq!(
        chosen(&freights, &ws, &request("platform-base")),
        Some("debian-new")
    );
}

#[test]
fn among_equal_freight_the_newest_is_promoted() {
    let freights = [
        freight("a-older", "python-3-12", 'e', 10),
        freight("b-newest", "python-3-12", 'e', 30),
        freight("c-middle", "python-3-12", 'e', 20),
    ];
    assert_eq!(
        chosen(&freights, &["python-3-12"], &request("python-3-12")),
        Some("b-newest")
    );
}

#[test]
fn freight_of_other_warehouses_or_other_digests_never_qualifies() {
    let freights = [
        // The right digest from a Warehouse the Stage does not request.
        freight("elsewhere", "mirror", 'e', 90),
        // A requested Warehouse, but a digest the rebuild does not pin (a newer,
        // unmatured release).
        freight("unmatured", "python-3-12", 'f', 80),
    ];
    assert_eq!(
        chosen(&freights, &["python-3-12"], &request("python-3-12")),
        None
    );
    assert_eq!(chosen(&[], &["python-3-12"], &request("python-3-12")), None);
    // The same digest is found once the Warehouse is requested.
    assert_eq!(
        chosen(&freights, &["mirror"], &request("python-3-12")),
        Some("elsewhere")
    );
}

#[test]
fn promotion_names_are_per_attempt_and_valid_object_names() {
    let subdomain =
        Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap();
    let req = request("python-3-12");
    assert_eq!(
        promotion_name("app-build", &req),
        "app-build.app-0123456789-2"
    );
    let mut next = req.clone();
    next.attempt = 3;
    assert_ne!(
        promotion_name("app-build", &req),
        promotion_name("app-build", &next)
    );
    for stage in [
        "a".repeat(300),
        format!("{}-{}", "a".repeat(239), "b".repeat(40)),
        format!("{}.{}", "a".repeat(232), "b".repeat(40)),
    ] {
        let name = promotion_name(&stage, &req);
        assert!(name.len() <= MAX_NAME_LEN, "{} characters", name.len());
        assert!(subdomain.is_match(&name), "{name}");
        assert!(name.ends_with(".app-0123456789-2"), "{name}");
    }
}

fn stage_with(vars: Vec<ExpressionVariable>) -> Stage {
    let mut stage = Stage::default();
    stage.metadata.name = Some("app-build".into());
    stage.metadata.namespace = Some("images".into());
    let mut config = crate::kargo::Opaque::new();
    config.insert(
        "config".into(),
        serde_json::json!({"repoURL": "${{ vars.imageFactorySourceGit }}"}),
    );
    stage.spec = StageSpec {
        promotion_template: Some(PromotionTemplate {
            spec: PromotionTemplateSpec {
                vars,
                steps: vec![
                    PromotionStep {
                        uses: Some("git-clone".into()),
                        task: None,
                        other: config,
                    },
                    PromotionStep {
                        uses: None,
                        task: Some(PromotionTaskReference {
                            kind: TaskKind::ClusterPromotionTask,
                            name: "build-image".into(),
                        }),
                        other: Default::default(),
                    },
                ],
            },
        }),
        ..Default::default()
    };
    stage
}

#[test]
fn the_promotion_copies_the_template_and_hands_the_build_its_pins() {
    let req = request("python-3-12");
    let stage = stage_with(vec![
        ExpressionVariable::new("registry", "ghcr.io"),
        ExpressionVariable::new("imageFactoryAttempt", "stale"),
    ]);
    let p = promotion("images", &stage, "f00d", &req);
    assert_eq!(
        p.metadata.name.as_deref(),
        Some("app-build.app-0123456789-2")
    );
    assert_eq!(p.metadata.namespace.as_deref(), Some("images"));
    assert_eq!(p.spec.stage, "app-build");
    assert_eq!(p.spec.freight, "f00d");
    assert_eq!(p.spec.steps, stage.steps());
    let labels = p.metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_REBUILD], "app-0123456789");
    assert_eq!(labels[LABEL_ATTEMPT], "2");
    assert_eq!(labels[crate::crd::LABEL_IMAGE], "team-app");
    assert_eq!(
        p.metadata.annotations.clone().unwrap()[ANNOTATION_IDEMPOTENCY_KEY],
        "app-0123456789.2"
    );

    let name = Regex::new(r"^[a-zA-Z_]\w*$").unwrap();
    let vars: std::collections::BTreeMap<&str, &str> = p
        .spec
        .vars
        .iter()
        .map(|v| {
            assert!(name.is_match(&v.name), "{}", v.name);
            (v.name.as_str(), v.value.as_str())
        })
        .collect();
    assert_eq!(vars.len(), p.spec.vars.len(), "no variable twice");
    assert_eq!(vars["registry"], "ghcr.io", "the template's vars are kept");
    assert_eq!(vars["imageFactoryAttempt"], "2", "ours win");
    assert_eq!(vars["imageFactoryReference"], "ghcr.io/acme/app:1");
    assert_eq!(vars["imageFactoryIdempotencyKey"], "app-0123456789.2");
    assert_eq!(vars["imageFactoryRebuildId"], "app-0123456789");
    assert_eq!(
        vars["imageFactoryBase_python_3_12"],
        format!("docker.io/library/python:3.12@{}", digest('e'))
    );
    assert_eq!(
        vars["imageFactoryBase_debian"],
        format!("docker.io/library/debian:12@{}", digest('d'))
    );
    let bases: Vec<PinnedBase> = serde_json::from_str(vars["imageFactoryBases"]).unwrap();
    assert_eq!(bases, req.bases);
    assert_eq!(
        vars["imageFactorySourceGit"],
        "https://git.example/acme/app.git"
    );
    assert!(
        !vars.contains_key("imageFactorySourceRef"),
        "unknown: left out"
    );

    // On the wire: Kargo's field names, no status, task references as written.
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["apiVersion"], "kargo.akuity.io/v1alpha1");
    assert_eq!(json["kind"], "Promotion");
    assert!(json.get("status").is_none());
    assert_eq!(
        json["spec"]["steps"][0]["config"]["repoURL"],
        "${{ vars.imageFactorySourceGit }}"
    );
    assert_eq!(
        json["spec"]["steps"][1]["task"],
        serde_json::json!({"kind": "ClusterPromotionTask", "name": "build-image"})
    );
}

#[test]
fn kargos_terminal_phases_decide() {
    let with = |phase: &str, message: &str| Promotion {
        status: Some(PromotionStatus {
            phase: phase.into(),
            message: message.into(),
        }),
        ..Default::default()
    };
    assert_eq!(Promotion::default().verdict(), None);
    assert_eq!(with("", "").verdict(), None);
    assert_eq!(with("Pending", "").verdict(), None);
    assert_eq!(with("Running", "step 1").verdict(), None);
    assert_eq!(with("Succeeded", "").verdict(), Some(Ok(())));
    for phase in ["Failed", "Errored", "Aborted"] {
        let why = with(phase, "step build failed")
            .verdict()
            .unwrap()
            .unwrap_err();
        assert_eq!(why, format!("{phase}: step build failed"));
    }
    assert_eq!(
        with("Errored", "").verdict(),
        Some(Err("Errored (no message)".into()))
    );
}
