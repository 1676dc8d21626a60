//! Times one MiniLM embedding at a few prompt lengths, per weight format:
//! `cargo run --release -p switchyard-classify --example embed_timing [-- f32 q8_0 i8 i8-w7]`
//! (any of `f32 q8_0 q8_0-vnni i8 i8-w7`; all five by default).
//! candle's formats use its thread count (`RAYON_NUM_THREADS`, default one per core); the int8
//! formats run on the calling thread. `EMBED_WORDS=30` times one length (words, comma-separated);
//! `EMBED_REPEATS` sets the embeddings timed per length (200), e.g. for a longer profile;
//! `EMBED_PAUSE_MS=20` sleeps between embeddings (as a gateway at 50 req/s idles between them);
//! `EMBED_SPLIT=0` keeps the int8 formats' products on the calling thread (by default they are
//! shared with a helper thread when the machine has a second CPU).
use std::time::Instant;

use switchyard_classify::{default_model_dir, Embedder, Weights};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let formats: Vec<Weights> = if args.is_empty() {
        vec![
            Weights::F32,
            Weights::Q8_0,
            Weights::Q8_0Vnni,
            Weights::I8,
            Weights::I8W7,
        ]
    } else {
        args.iter().map(|a| a.parse()).collect::<Result<_, _>>()?
    };
    for weights in formats {
        let mut e = Embedder::load_with(&default_model_dir(), 128, weights)?;
        e.set_split_forward(std::env::var("EMBED_SPLIT").map_or(true, |v| v != "0"));
        let lengths: Vec<usize> = match std::env::var("EMBED_WORDS") {
            Ok(v) => v.split(',').filter_map(|w| w.trim().parse().ok()).collect(),
            Err(_) => vec![8, 14, 30, 60, 200],
        };
        for &words in &lengths {
            let text = "the quick brown fox jumps over a lazy dog ".repeat(words / 9 + 1);
            let text: String = text.split(' ').take(words).collect::<Vec<_>>().join(" ");
            let toks = e.token_count(&text)?;
            e.embed(&text)?;
            let n: usize = std::env::var("EMBED_REPEATS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(200);
            let mut times = Vec::with_capacity(n);
            let pause = std::env::var("EMBED_PAUSE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(std::time::Duration::from_millis);
            let cpu0 = cpu_ms();
            for _ in 0..n {
                if let Some(pause) = pause {
                    std::thread::sleep(pause);
                }
                let t = Instant::now();
                e.embed(&text)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let cpu = (cpu_ms() - cpu0) / n as f64;
            let split = switchyard_classify::split_counts();
            times.sort_by(f64::total_cmp);
            println!(
                "{weights:<10} {toks:>4} tokens: p50 {:.2} ms, p99 {:.2} ms wall, {cpu:.2} ms CPU per \
                 embedding (helpers {}: {} tiles helped, {} taken back so far)",
                times[n / 2],
                times[n * 99 / 100],
                split.helpers,
                split.helped_tiles,
                split.taken_back_tiles,
            );
        }
    }
    Ok(())
}

/// This process's user + system CPU time in ms (Linux `/proc/self/stat`, clock ticks of 10 ms).
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(") ").next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) * 10.0
}
