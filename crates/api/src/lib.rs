//! Wire types shared by the gateway and the provider adapters.
//!
//! * [`openai`]: the OpenAI Chat Completions / Embeddings / Models shapes that clients send and read.
//! * [`error`]: the error bodies a client expects (OpenAI's `{"error": {...}}`).
//! * [`sse`]: an incremental Server-Sent Events decoder and a small encoder.
//! * [`usage`]: provider-neutral token usage, the unit metering works in.

pub mod anthropic;
mod de;
pub mod error;
pub mod openai;
mod raw;
pub mod sse;
pub mod usage;

pub use error::{ApiError, ErrorKind};
pub use usage::TokenUsage;
