//! The engine's integration tests' harness (each `engine/tests/*.rs` that
//! needs it includes it with `#[path = "support/mod.rs"] mod support;`).
//!
//! - [`fixture`], [`http`] and [`port`]: the workspace's `tests/support`
//!   modules that do not need the `sluice` binary (paths and fixture
//!   copies; an HTTP client; free ports);
//! - [`shop`]: the example shop compiled, and events generated for it;
//! - [`api`]: an axum router served on 127.0.0.1 in the test's runtime;
//! - [`stream`]: what a cluster test reads off the NATS server;
//! - [`cluster`]: connecting to it, and the workers' logs on request.
//!
//! Engine tests never run the `sluice` binary: they must not include
//! `tests/support/server.rs` or `cli.rs`.
#![allow(dead_code)]

#[path = "../../../tests/support/fixture.rs"]
pub mod fixture;
#[path = "../../../tests/support/http.rs"]
pub mod http;

pub mod api;
pub mod cluster;
#[path = "../../../tests/support/cluster_model.rs"]
pub mod model;
#[path = "../../../tests/support/nats.rs"]
pub mod nats;
#[path = "../../../tests/support/port.rs"]
pub mod port;
pub mod shop;
pub mod stream;
