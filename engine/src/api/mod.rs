//! The HTTP API of `sluice run` (RUN.md §2), with axum: routes, bearer
//! authentication (ingest vs admin tokens, compared in constant time),
//! body limits and gzip, parsing of FORMAT.md §4 events (JSON arrays and
//! JSON lines) and of Segment's Tracking API, and the answers' shapes.
//!
//! Knows nothing of the store's layout or the engine's rules: every route
//! calls the engine through a [`Handle`], which answers from the single
//! writer (and, for ingest, only once what it accepted is durable).

pub mod admin;
mod auth;
mod body;
pub mod console;
mod error;
pub mod events;
pub mod feedback;
mod router;
pub mod segment;
mod serve;
pub mod unsubscribe;

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use journeys::event::Event;

pub use error::Error;
pub use router::{router, router_with, Options, DLQ_DEFAULT_LIMIT, DLQ_MAX_LIMIT, MAX_BODY};
pub use serve::{serve, ServeOptions};

/// The tokens the API accepts. Never logged.
#[derive(Clone)]
pub struct Tokens {
    pub ingest: String,
    pub admin: String,
    /// Secret for Segment's `X-Signature` (HMAC-SHA1 of the body).
    pub segment_secret: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens { .. }")
    }
}

/// What an ingest did, once durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    pub accepted: usize,
    /// Events whose `id` was seen before: they changed nothing.
    pub duplicates: usize,
}

/// The engine cannot take the request now (store error, full disk,
/// starting, draining): answered 503, nothing acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// A one-click unsubscribe that was carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribed {
    pub user: String,
    pub category: String,
}

/// Which dead letters to re-queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    One(u64),
    All,
}

/// The counters of one step of one journey version, as of the last
/// commit (the console's live counts).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StepCount {
    pub journey: String,
    pub version: u32,
    pub step: String,
    /// Live instances standing on the step.
    pub live: u64,
    pub sent: u64,
    pub deferred: u64,
    pub suppressed: u64,
    pub failed: u64,
}

/// How the API reaches the engine. Every method answers from the single
/// writer; ingest resolves once the events are durable (group commit).
pub trait Handle: Send + Sync + 'static {
    /// Applies events (`source`: `events`, `track`, `identify`, `batch`,
    /// `segment`, for metrics); resolves once they are durable.
    fn ingest(
        &self,
        source: &'static str,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Appended, Unavailable>> + Send;
    /// What `sluice inspect user` prints (RUN.md §5), `None` when unknown.
    fn user(&self, id: String) -> impl Future<Output = Result<Option<Value>, Unavailable>> + Send;
    /// Erases a user (RUN.md §2); `false` when unknown.
    fn erase(&self, id: String) -> impl Future<Output = Result<bool, Unavailable>> + Send;
    /// Dead letters, oldest first (RUN.md §4 fields).
    fn dead_letters(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Value>, Unavailable>> + Send;
    /// Re-queues dead letters with their keys; how many were re-queued.
    fn replay(&self, which: Replay) -> impl Future<Output = Result<usize, Unavailable>> + Send;
    /// Carries out a one-click unsubscribe; `None` for a forged, altered or
    /// unknown token.
    fn unsubscribe(
        &self,
        token: String,
    ) -> impl Future<Output = Result<Option<Unsubscribed>, Unavailable>> + Send;
    /// `sluice report` (RUN.md §5): a JSON array with one object per
    /// journey version; the inner `Err` says the journey is unknown. Not
    /// every engine keeps reports: by default, 503.
    fn report(
        &self,
        query: crate::report::Query,
    ) -> impl Future<Output = Result<Result<Value, String>, Unavailable>> + Send {
        let _ = query;
        async { Err(Unavailable("this engine does not keep reports".into())) }
    }
    /// The store is open, the config deployed, due timers caught up, and
    /// the process is not draining.
    fn ready(&self) -> bool;
    /// When not [`ready`](Handle::ready), why, if there is more to say
    /// than "not ready" (`/readyz` adds it to its 503).
    fn unready_reason(&self) -> Option<String> {
        None
    }
    /// Every step's counters as of the last commit (for the console).
    fn step_counts(&self) -> impl Future<Output = Result<Arc<Vec<StepCount>>, Unavailable>> + Send {
        async { Err(Unavailable("per-step counts are not kept here".into())) }
    }
    /// A user's timeline for the console: profile, live instances, journey
    /// entries, recent events and messages; `None` when unknown.
    fn timeline(
        &self,
        id: String,
    ) -> impl Future<Output = Result<Option<Value>, Unavailable>> + Send {
        let _ = id;
        async { Err(Unavailable("user timelines are not kept here".into())) }
    }
    /// Applies an email provider's notices (bounces, complaints,
    /// RUN.md §3); for each, whether it matched a message. Resolves once
    /// the changes are durable. A handle without feedback intake answers
    /// every request 503.
    fn feedback(
        &self,
        notices: Vec<crate::feedback::Notice>,
    ) -> impl Future<Output = Result<Vec<bool>, Unavailable>> + Send {
        drop(notices);
        async { Err(Unavailable("feedback intake is not available here".into())) }
    }
    /// A deployment request (DEPLOY.md through `/v1/admin/…`): the JSON
    /// answer, or a refusal with its status. By default, 503.
    fn admin(
        &self,
        request: crate::engine::deploy::AdminRequest,
    ) -> impl Future<Output = Result<Result<Value, crate::engine::deploy::AdminFailure>, Unavailable>>
           + Send {
        drop(request);
        async { Err(Unavailable("deployments are not available here".into())) }
    }
}
