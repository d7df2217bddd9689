pub mod diagnostic;
pub mod model;
pub mod scalar;
pub mod span;
pub mod condition;
pub mod template;
pub mod compiled;
pub mod event;
