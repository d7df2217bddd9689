//! Deployments: the deployed versions of every resource, journey rollouts
//! (stable, canary), canary bucketing and guards, the audit log, and the
//! migration of live instances between versions (DEPLOY.md). It knows the
//! compiled config and the store's deployment records, never HTTP; the
//! shell ([`crate::engine`]) commits what it computes.

pub mod guard;
pub mod state;
pub mod versions;

pub use state::{ApplyRequest, Loader, Snapshot};
pub use versions::Versions;
