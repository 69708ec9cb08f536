//! Test harness pieces: real components started on 127.0.0.1.
pub mod registry;
