//! Integration tests, in one binary so links stay fast on two cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod analyze;
mod analyze_commit;
mod cli;
mod controller;
mod crds;
mod decisions;
mod deploy;
mod diff;
mod dockerfile_cli;
mod dockerfile_corpus;
mod dockerfile_pin;
mod factory;
mod fleet;
mod git_writer;
mod github_trigger;
mod inspect;
mod jupyter_chain;
mod kargo_promotion;
mod kubernetes_job;
mod rebuilds;
mod registry;
mod signatures;
mod sources;
mod warehouses;
mod workloads;
