//! The durable runtime of sluice: it runs compiled journeys
//! ([`journeys::compiled`]) against a stream of events.
//!
//! Owns: the clock ([`clock`]), durable state behind storage traits with a
//! crash-atomic sled implementation ([`store`]), the journeys' state
//! machines as pure transitions returning effects ([`machine`]), the
//! message policies ([`policy`]), rendering ([`dispatch`]), the single
//! writer that ties them together ([`engine`]), delivery providers
//! ([`deliver`]), the service around the writer ([`service`]) and its HTTP
//! API ([`api`]), `sluice report`'s counts and intervals ([`report`]),
//! and simulation on a virtual clock ([`simulate`],
//! [`test`]).
//!
//! Must not know about: YAML, spans or diagnostics (it receives a compiled
//! `Config` and never looks at the files again); the command line. Inside,
//! the layers point one way: `api` and `deliver` know nothing of the
//! store's layout or the machine's rules, `machine` nothing of the store,
//! the network or tokio. Nothing here reads the system time except
//! [`clock::WallClock`].

pub mod api;
pub mod calendar;
pub mod clock;
pub mod cluster;
pub mod deliver;
pub mod deploy;
pub mod dispatch;
pub mod engine;
pub mod events;
pub mod feedback;
pub mod hash;
pub mod index;
pub mod machine;
pub mod metrics;
pub mod os;
pub mod output;
pub mod policy;
pub mod report;
pub mod scope;
pub mod service;
pub mod simulate;
pub mod store;
pub mod test;

pub use engine::{Engine, Options};
pub use output::{Line, Sink, Summary};
pub use simulate::{simulate, SimOptions, Simulation};
