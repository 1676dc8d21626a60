//! A standalone Gemini API test server (`switchyard_testkit::gemini`), for end-to-end tests of
//! the gateway's `gemini` provider. Prints `listening on ADDR` once bound; its Gemini base URL is
//! `http://ADDR/v1beta`. Model names can script answers (see
//! `switchyard_testkit::gemini::reply_for_model`: `call-<name>` answers a function call).

use clap::Parser;
use switchyard_testkit::gemini::{Answer, MockGemini, Reply};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Tokens per text answer.
    #[arg(long, default_value_t = 6)]
    tokens: usize,
    /// Put this `thoughtSignature` beside the function calls it answers.
    #[arg(long)]
    sign_calls: Option<String>,
    /// Refuse, as Gemini 3 does, a history whose current-turn function calls lack a signature;
    /// and, stricter, accept only the signatures this server issued (no documented dummy).
    #[arg(long)]
    require_issued_signatures: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mock = MockGemini::new(Reply::Answer(Answer {
        tokens: args.tokens,
        ..Default::default()
    }));
    mock.sign_calls(args.sign_calls.as_deref());
    if args.require_issued_signatures {
        mock.require_issued_signatures();
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, mock.router()).await?;
    Ok(())
}
