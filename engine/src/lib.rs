//! The durable runtime of sluice.
pub mod policy;
