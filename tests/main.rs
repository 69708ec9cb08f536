//! Integration tests, in one binary so links stay fast on two cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod analyze;
mod cli;
mod decisions;
mod dockerfile_cli;
mod dockerfile_corpus;
mod dockerfile_pin;
mod git_writer;
mod inspect;
mod jupyter_chain;
mod registry;
mod sources;
mod warehouses;
