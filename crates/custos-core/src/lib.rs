//! The Custos domain core.
//!
//! Everything here is pure: no I/O, no clock, no randomness. Timestamps and random bytes are
//! passed in by the caller, which keeps the decision logic deterministic, fast and easy to test.

pub mod audit;
pub mod baseline;
pub mod checkpoint;
pub mod decision;
pub mod discovery;
pub mod event;
pub mod finding;
pub mod guardrails;
pub mod issuance;
pub mod jose;
pub mod lifecycle;
pub mod merkle;
pub mod model;
pub mod scope;
pub mod time;
pub mod token;
pub mod validate;

pub use event::{Actor, DomainEvent, EventKind};
pub use model::*;
pub use scope::{Action, Grant, Scope, ScopeError};
pub use time::Timestamp;
