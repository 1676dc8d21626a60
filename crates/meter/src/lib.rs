//! Metering: turns what happened to a request ([`Outcome`]) into a [`LedgerRecord`] with cost,
//! energy and carbon, writes records to the ledger off the request path, and keeps the
//! Prometheus metrics.

mod record;

pub use record::{LedgerRecord, Outcome};
