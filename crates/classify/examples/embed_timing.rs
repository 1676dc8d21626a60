//! Times one MiniLM embedding at a few prompt lengths: `cargo run --example embed_timing`.
use std::time::Instant;

fn main() -> Result<(), String> {
    let e = switchyard_classify::Embedder::load_default(128)?;
    for words in [8usize, 32, 64, 200] {
        let text = "the quick brown fox jumps over a lazy dog ".repeat(words / 9 + 1);
        let toks = e.token_count(&text)?;
        e.embed(&text)?;
        let n = 20;
        let t = Instant::now();
        let cpu0 = cpu_ms();
        for _ in 0..n {
            e.embed(&text)?;
        }
        println!(
            "{toks:>4} tokens: {:.2} ms wall, {:.2} ms CPU per embedding",
            t.elapsed().as_secs_f64() * 1e3 / n as f64,
            (cpu_ms() - cpu0) / n as f64
        );
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
