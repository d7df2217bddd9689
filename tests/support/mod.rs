//! The end-to-end tests' harness, shared by every `tests/*.rs` (each
//! includes it with `#[path = "support/mod.rs"] mod support;`).
//!
//! - [`fixture`]: workspace paths and fixture copies (also used by
//!   `engine/tests`, which cannot run the binary);
//! - [`cli`]: `sluice` as a command, its output, `simulate`'s lines;
//! - [`server`]: [`server::SluiceRun`], a running `sluice run` that is
//!   SIGKILLed and reaped when dropped;
//! - [`http`]: a raw HTTP/1.1 client;
//! - [`port`]: free ports, never the same twice in one process;
//! - [`receiver`]: a webhook receiver the test answers for;
//! - [`smtp`]: aiosmtpd as the SMTP server `run` delivers to;
//! - [`events`]: events stamped now, as JSON lines;
//! - [`wait`]: polling with a deadline.
//!
//! Must not hold any test's scenario: what to send and what to assert
//! stay in the test files.
#![allow(dead_code)]

pub mod cli;
pub mod events;
pub mod fixture;
pub mod http;
pub mod nats;
pub mod port;
pub mod receiver;
pub mod server;
pub mod smtp;
pub mod wait;
