//! A standalone OpenAI wire-format test server, for end-to-end tests of the gateway.
//! Prints `listening on ADDR` once bound. Model names can script failures
//! (see `switchyard_testkit::openai::reply_for_model`).

use std::time::Duration;

use clap::Parser;
use switchyard_testkit::openai::{Answer, MockOpenAi, Reply};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Tokens per answer.
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    #[arg(long, default_value_t = 0)]
    itl_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mock = MockOpenAi::new_unrecorded(Reply::Answer(Answer {
        tokens: args.tokens,
        first_token_delay: Duration::from_millis(args.ttft_ms),
        inter_token_delay: Duration::from_millis(args.itl_ms),
        ..Default::default()
    }));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, mock.router()).await?;
    Ok(())
}
