//! `switchyard`: the one binary. Each subcommand is a thin call into a library crate.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use switchyard_gateway::config::{Config, EXAMPLE};
use switchyard_meter::report::{self, GroupBy};

/// jemalloc, which returns freed memory to the OS from its own threads (why:
/// switchyard_gateway::memory).
#[global_allocator]
static ALLOCATOR: switchyard_gateway::memory::Jemalloc = switchyard_gateway::memory::Jemalloc;

/// jemalloc reads its options from this symbol at start-up (its C type is `const char *`).
#[allow(unsafe_code)] // a symbol exported by name, which the linker resolves for jemalloc
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 60] = switchyard_gateway::memory::MALLOC_CONF;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "An inference gateway you own: one OpenAI-compatible endpoint for every model, with routing, fallbacks and a ledger of cost, latency and energy."
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SWITCHYARD_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (TOML). Without one, the embedded defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, overriding the config's.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Write a commented example config.
    Init {
        /// Where to write it.
        #[arg(default_value = "switchyard.toml")]
        path: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Config tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run a simulated OpenAI-compatible model server with a hardware profile (prefill and
    /// decode rates, batch slots, KV cache with prefix caching), to route and test fleets
    /// without GPUs.
    Sim {
        /// A preset name (`h100-llama3-8b`, `h100-llama3-8b-offload`, `l4-llama3-8b`) or a TOML file.
        #[arg(long, default_value = "h100-llama3-8b")]
        profile: String,
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: SocketAddr,
    },
    /// Learned model choice: train a router on an outcome table, evaluate it on held-out data.
    Router {
        #[command(subcommand)]
        command: RouterCommand,
    },
    /// Requests, tokens, cost, latency and energy from the ledger.
    Usage {
        /// Only requests started within this long (e.g. `1h`, `7d`).
        #[arg(long)]
        since: Option<humantime::Duration>,
        /// Group rows by.
        #[arg(long, value_enum, default_value_t = By::Model)]
        by: By,
        /// Ledger file; defaults to the config's, or the default path.
        #[arg(long)]
        ledger: Option<PathBuf>,
        /// Read the ledger path from this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Subcommand)]
enum RouterCommand {
    /// Fit P(strong model needed) on an outcome table (CSV per subject: prompt, weak, strong).
    Train {
        /// Folder of outcome CSVs (e.g. ../shared/data/routing/mmlu).
        #[arg(long)]
        data: PathBuf,
        /// Subjects left out of training, to evaluate on (comma-separated).
        #[arg(long, value_delimiter = ',')]
        exclude_subjects: Vec<String>,
        /// The threshold is set so that this share of training prompts go to the strong model.
        #[arg(long, default_value_t = 0.5)]
        strong_share: f64,
        /// Where to write the router.
        #[arg(long, default_value = "router.json")]
        out: PathBuf,
        /// Cache of prompt embeddings between runs.
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// APGR, CPT(50%), CPT(80%) and cost/quality points of a trained router.
    Evaluate {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// Only these subjects (comma-separated; default all).
        #[arg(long, value_delimiter = ',')]
        subjects: Vec<String>,
        #[arg(long)]
        cache: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file without starting anything; names the key at fault.
    Check { path: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum By {
    Model,
    Target,
    Route,
    Class,
    Key,
    Team,
    Provider,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display())),
        None => default_config(),
    }
}

/// The embedded default: what `switchyard serve` runs with no config.
#[cfg(feature = "local")]
fn default_config() -> anyhow::Result<Config> {
    let dir = std::env::var_os("SWITCHYARD_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"));
    let cfg = switchyard_gateway::config::embedded_default(&dir)
        .map_err(|e| anyhow::anyhow!("embedded default config: {e}"))?;
    let gguf = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.is_file() {
        anyhow::bail!(
            "the embedded default serves {} but it is missing: run scripts/fetch-models.sh (or set SWITCHYARD_MODEL_DIR)",
            gguf.display()
        );
    }
    Ok(cfg)
}

#[cfg(not(feature = "local"))]
fn default_config() -> anyhow::Result<Config> {
    anyhow::bail!("no --config given, and this build has no embedded default (build with the `local` feature)")
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config, listen } => {
            let mut cfg = load_config(config.as_ref())?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            switchyard_gateway::serve_blocking(cfg)
        }
        Command::Sim { profile, listen } => {
            let profile = switchyard_sim::Profile::load(&profile)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            eprintln!("switchyard sim: {} on {listen}", profile.name);
            rt.block_on(switchyard_sim::run_server(
                switchyard_sim::SimConfig::new(profile),
                listen,
            ))
        }
        Command::Router { command } => run_router(command),
        Command::Init { path, force } => {
            if path.exists() && !force {
                anyhow::bail!("{} exists; pass --force to overwrite it", path.display());
            }
            std::fs::write(&path, EXAMPLE)?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { path },
        } => {
            let cfg =
                Config::load(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            println!(
                "{}: ok ({} providers, {} routes, {} keys)",
                path.display(),
                cfg.providers.len(),
                cfg.routes.len(),
                cfg.keys.len()
            );
            Ok(())
        }
        Command::Usage {
            since,
            by,
            ledger,
            config,
            json,
            csv,
        } => {
            let path = match (ledger, config) {
                (Some(l), _) => l,
                (None, Some(c)) => load_config(Some(&c))?.ledger.path,
                (None, None) => switchyard_gateway::config::LedgerSection::default().path,
            };
            let by = match by {
                By::Model => GroupBy::Model,
                By::Target => GroupBy::Target,
                By::Route => GroupBy::Route,
                By::Class => GroupBy::Class,
                By::Key => GroupBy::Key,
                By::Team => GroupBy::Team,
                By::Provider => GroupBy::Provider,
            };
            let rows = report::usage_report(&path, since.map(Into::into), by)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let out = if json {
                report::render_json(&rows)
            } else if csv {
                report::render_csv(&rows)
            } else {
                report::render_table(&rows)
            };
            print!("{out}");
            Ok(())
        }
    }
}

fn run_router(command: RouterCommand) -> anyhow::Result<()> {
    use switchyard_learn::{evaluate, train, EvalOptions, LearnedRouter, TrainOptions};
    match command {
        RouterCommand::Train {
            data,
            exclude_subjects,
            strong_share,
            out,
            cache,
        } => {
            let opts = TrainOptions {
                exclude_subjects,
                strong_share,
                cache,
                ..Default::default()
            };
            let router = train(&data, &opts).map_err(|e| anyhow::anyhow!(e))?;
            router.save(&out).map_err(|e| anyhow::anyhow!(e))?;
            println!("wrote {}", out.display());
            Ok(())
        }
        RouterCommand::Evaluate {
            model,
            data,
            subjects,
            cache,
            json,
        } => {
            let router = LearnedRouter::load(&model).map_err(|e| anyhow::anyhow!(e))?;
            let opts = EvalOptions {
                subjects,
                cache,
                ..Default::default()
            };
            let m = evaluate(&router, &data, &opts).map_err(|e| anyhow::anyhow!(e))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
                return Ok(());
            }
            let pct = |x: Option<f64>| {
                x.map_or("not reached".to_string(), |v| format!("{:.1}%", v * 100.0))
            };
            println!("prompts evaluated  {}", m.n);
            println!(
                "weak / strong      {:.3} / {:.3} (oracle {:.3} at {:.1}% strong)",
                m.weak_quality,
                m.strong_quality,
                m.oracle_quality,
                m.oracle_strong_share * 100.0
            );
            println!("APGR               {:.3}", m.apgr);
            println!("CPT(50%)           {}", pct(m.cpt50));
            println!("CPT(80%)           {}", pct(m.cpt80));
            println!(
                "{:>12} {:>12} {:>9} {:>7} {:>14}",
                "target share", "strong share", "quality", "PGR", "relative cost"
            );
            for p in &m.cost_points {
                println!(
                    "{:>11.0}% {:>11.1}% {:>9.3} {:>7.3} {:>14.3}",
                    p.target_share * 100.0,
                    p.strong_share * 100.0,
                    p.quality,
                    p.pgr,
                    p.relative_cost
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use switchyard_gateway::memory::{allocator_options, heap_bytes};

    #[test]
    fn jemalloc_runs_with_the_exported_options() {
        let o = allocator_options().expect("jemalloc is the global allocator");
        assert!(o.background_thread, "{o:?}");
        assert_eq!(o.dirty_decay_ms, 1000);
    }

    #[test]
    fn freed_memory_goes_back_to_the_os_without_further_allocation() {
        // An overload's worth of small buffers (below jemalloc's large-size classes, as
        // connections' buffers are), freed around small live blocks that outlive them, then
        // nothing allocates: only the background threads can hand the pages back.
        let (_, surplus_before) = heap_bytes().expect("jemalloc stats");
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        let mut pins = Vec::new();
        for i in 0..20_000 {
            blocks.push(vec![i as u8; 8 << 10]);
            pins.push(std::hint::black_box(Box::new([i as u8; 64])));
        }
        drop(blocks);
        let (_, surplus_after_free) = heap_bytes().expect("jemalloc stats");
        assert!(
            surplus_after_free > surplus_before + (100 << 20),
            "160 MB freed but only {surplus_after_free} bytes held: this test's premise no longer holds"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut surplus = surplus_after_free;
        while surplus > surplus_before + (20 << 20) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            surplus = heap_bytes().expect("jemalloc stats").1;
        }
        assert!(pins.iter().all(|p| p[1] == p[0]));
        assert!(
            surplus <= surplus_before + (20 << 20),
            "{surplus} bytes still held 10 s after freeing (was {surplus_before} before the surge)"
        );
    }
}
