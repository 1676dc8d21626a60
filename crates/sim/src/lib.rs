//! Simulated LLM model servers for tests and benchmarks of replica choice.
//!
//! One core model ([`engine::Engine`]: waiting queue, continuous batching with chunked prefill,
//! KV cache in blocks with prefix caching, timing from a hardware [`profile::Profile`]) with two
//! faces:
//! - [`fleet::run_fleet`]: several replicas in virtual time, driven by a [`fleet::Dispatcher`],
//!   with no sockets and no sleeping;
//! - [`server`]: an OpenAI-compatible HTTP server answering with the simulated timing in real
//!   time ([`run_server`]), for end-to-end runs through the gateway.
//!
//! The simulator counts tokens and time; it computes no text (answers are `tok0 tok1 ...`).

pub mod engine;
pub mod fleet;
pub mod profile;
pub mod server;

pub use engine::{chain_keys, Engine, EngineStats, Event, Reject, SimRequest};
pub use fleet::{run_fleet, Arrival, Dispatcher, FleetReport, Outcome, ReplicaState};
pub use profile::{Profile, PRESETS};
pub use server::{run_server, serve, serve_listener, SimConfig};
