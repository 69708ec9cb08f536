//! The blast radius of an update: which workloads each wave of a plan touches. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Catalog, Workload};
use crate::engine::Plan;

/// A workload that runs an image a plan rebuilds (or the updated image itself).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Touched {
    /// The wave that rebuilds the image; 0 for the updated image itself (workloads
    /// running a base or external image directly, touched once they pull the update).
    pub wave: usize,
    /// The image, by name.
    pub image: String,
    /// The workload's namespace.
    pub namespace: String,
    /// `Kind/name`.
    pub workload: String,
    /// Its containers running the image, sorted.
    pub containers: Vec<String>,
}

/// Each workload of `workloads` that runs an image of `plan` (the update's own image at
/// wave 0, each rebuilt image at its wave), sorted by wave, image, namespace, workload.
/// `updated` is the updated image's name.
pub fn blast_radius(
    plan: &Plan,
    updated: &str,
    workloads: &[Workload],
    catalog: &Catalog,
) -> Vec<Touched> {
    let mut waves: BTreeMap<&str, usize> = BTreeMap::from([(updated, 0)]);
    for r in &plan.rebuilds {
        waves.insert(r.image.as_str(), r.wave);
    }
    let mut found: BTreeMap<(usize, String, String, String), BTreeSet<String>> = BTreeMap::new();
    for w in workloads {
        for c in &w.containers {
            let Some(image) = catalog.image_of(&c.image) else {
                continue;
            };
            let Some(&wave) = waves.get(image) else {
                continue;
            };
            found
                .entry((
                    wave,
                    image.to_string(),
                    w.namespace.clone(),
                    format!("{}/{}", w.kind, w.name),
                ))
                .or_default()
                .insert(c.name.clone());
        }
    }
    found
        .into_iter()
        .map(|((wave, image, namespace, workload), containers)| Touched {
            wave,
            image,
            namespace,
            workload,
            containers: containers.into_iter().collect(),
        })
        .collect()
}
