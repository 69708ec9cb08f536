//! Image Factory: rebuilds internal container images when their public base images
//! change, after a soak period, in dependency order.
//!
//! ```text
//! images.yaml → enrollment → sources (git2) → Dockerfile FROM analysis → graph (petgraph)
//!            → state/ files + Kargo Warehouses
//! Freight / registry watch → hold → trigger → cascade → state/ → git
//! ```
//!
//! The engine (`graph`, and later `hold` / `rebuild`) is pure: plain data in, plain data
//! out, time passed in as a value. I/O (files, git, registries) sits at the edges.

pub mod analyze;
pub mod cli;
pub mod dockerfile;
pub mod enrollment;
pub mod git;
pub mod graph;
pub mod kargo;
pub mod reference;
pub mod registry;
pub mod source;
pub mod state;
