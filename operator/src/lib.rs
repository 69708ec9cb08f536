//! Image Factory: rebuilds internal container images when their public base images
//! change, after a soak period, in dependency order.
//!
//! ```text
//! images.yaml → enrollment → sources (git2) → Dockerfile FROM analysis → graph (petgraph)
//!            → state/images/ + state/warehouses/ (Kargo Warehouses)      [analyze]
//!              (+ state/stages/, Kargo Stages, with `kargo.stages: true`)
//! Freight / registry watch → hold → trigger → cascade → state/runtime/ → git
//!                              (kargoPromotion: a Kargo Promotion of the Freight)
//! ```
//!
//! The engine (`graph`, and `engine`) is pure: plain data in, plain data out, time passed
//! in as a value. I/O (files, git, registries) sits at the edges behind small traits:
//! [`state::StateStore`], [`registry`]'s resolver, the clock. Each module has its own
//! error enum; [`Error`] wraps them for callers that drive several.
#![warn(missing_docs)]

pub mod analyze;
pub mod cli;
pub mod clock;
pub mod completion;
pub mod controller;
pub mod crash;
pub mod crd;
pub mod diff;
pub mod dockerfile;
pub mod engine;
pub mod enrollment;
pub mod factory;
pub mod git;
pub mod graph;
pub mod inbox;
pub mod kargo;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod source;
pub mod statcache;
pub mod state;
pub mod trigger;
pub mod verify;
pub mod watch;
pub mod workload;

/// Any error of the crate, wrapping each module's own enum (the source is kept).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `images.yaml` could not be loaded.
    #[error(transparent)]
    Enrollment(#[from] enrollment::EnrollmentError),
    /// An image reference is malformed.
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    /// A Dockerfile could not be analyzed.
    #[error(transparent)]
    Dockerfile(#[from] dockerfile::DockerfileError),
    /// A source could not be fetched or read.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// The dependency graph has no answer (unknown image, cycle).
    #[error(transparent)]
    Graph(#[from] graph::GraphError),
    /// The analysis failed.
    #[error(transparent)]
    Analyze(#[from] analyze::AnalyzeError),
    /// A state file could not be read or written.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// Committing or pushing state failed.
    #[error(transparent)]
    Git(#[from] git::GitError),
    /// A registry request failed.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
