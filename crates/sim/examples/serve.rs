//! Runs the simulated server until interrupted, for manual trials before `switchyard sim`:
//! `cargo run -p switchyard-sim --example serve -- h100-llama3-8b 127.0.0.1:8090`
//! (first argument: a preset name or a profile TOML file).

use switchyard_sim::{run_server, Profile, SimConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let profile = Profile::load(&args.next().unwrap_or_else(|| "h100-llama3-8b".into()))?;
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8090".into())
        .parse()?;
    println!(
        "serving {} on http://{listen}/v1/chat/completions",
        profile.name
    );
    run_server(SimConfig::new(profile), listen).await
}
