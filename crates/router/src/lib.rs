//! Routing: a public model name maps to an ordered list of targets (provider + model).
//!
//! This crate holds the parts of a route that carry state between requests — the per-target
//! [`CircuitBreaker`] and `Retry-After` cool-down — and the pure [`RetryPolicy`] that says how
//! long to wait before trying again. The gateway walks a route's targets in order with them.
//! Time is `tokio::time::Instant`, so all of it is tested on a paused clock.

mod breaker;
mod choice;
mod retry;
mod target;

pub use breaker::{BreakerConfig, CircuitBreaker};
pub use choice::{Candidate, Choice, ChoicePolicy, StrongPredictor};
pub use retry::RetryPolicy;
pub use target::{Route, Target, TargetTimeouts};
