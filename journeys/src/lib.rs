//! `journeys` owns sluice's configuration: the YAML model of FORMAT.md,
//! loading it with positions kept ([`span`], [`load`]), validating it with
//! every problem reported at its exact line ([`compile`], [`diagnostic`]),
//! and compiling it into the state machines the engine runs
//! ([`compiled`]). It also owns the pure pieces both sides share: the
//! condition grammar ([`condition`]), templates ([`template`]), scalar
//! syntaxes ([`scalar`]) and the event shape ([`event`]).
//!
//! It must not know about tokio, sled, HTTP, dispatch or wall-clock time:
//! everything here is a pure function of the files it is given.

pub mod compile;
pub mod compiled;
pub mod condition;
pub mod diagnostic;
pub mod event;
pub mod graph;
pub mod ide;
pub mod limits;
pub mod load;
pub mod model;
pub mod plan;
pub mod scalar;
pub mod schema;
pub mod span;
pub mod template;

use std::path::Path;

pub use compiled::Config;
pub use diagnostic::{Diagnostic, Diagnostics};

/// Loads, validates and compiles the repository at `root`. Warnings, if
/// any, are returned with the config.
pub fn load(root: &Path) -> Result<Config, Diagnostics> {
    let (config, diags) = check(root);
    config.ok_or(diags)
}

/// Loads, validates and compiles, returning every diagnostic (sorted by
/// file and line) and the config when there is no error.
pub fn check(root: &Path) -> (Option<Config>, Diagnostics) {
    let mut diags = Diagnostics::default();
    let docs = load::load_documents(root, &mut diags);
    let config = compile::compile(root, docs, &mut diags);
    diags.sort();
    (config, diags)
}
