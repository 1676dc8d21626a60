//! Prefill and decode speed of the local engine, and time to first token of a 50-token prompt.
//!
//!   cargo run --release -p switchyard-local --example bench -- MODEL.gguf THREADS PROMPTS.json [WEIGHT_FORMAT]
//!
//! WEIGHT_FORMAT is the config's `weight_format` (`q8_0`, the default, `q4_0` or `as_file`).
//! Prints one JSON object. Candle's kernel pool is sized once per process, so run one process
//! per thread count (bench/local/run.sh does).

use std::{sync::Arc, time::Instant};

use futures_util::StreamExt;
use switchyard_api::openai::{ChatRequest, Message};
use switchyard_local::{Event, Local, LocalConfig};
use switchyard_providers::{ChatCall, ChatOutput, Provider, StreamItem};

const RUNS: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (model, threads, prompts, format) = match args.as_slice() {
        [_, m, t, p] => (m, t, p, "q8_0"),
        [_, m, t, p, f] => (m, t, p, f.as_str()),
        _ => return Err("usage: bench MODEL.gguf THREADS PROMPTS.json [WEIGHT_FORMAT]".into()),
    };
    let threads: usize = threads.parse()?;
    let prompts: serde_json::Value = serde_json::from_slice(&std::fs::read(prompts)?)?;
    let text = |k: &str| prompts[k].as_str().unwrap_or_default().to_string();
    let mut cfg = LocalConfig::from_path(model);
    cfg.threads = Some(threads);
    cfg.max_concurrency = 1;
    cfg.weight_format = serde_json::from_value(serde_json::json!(format))?;
    let local = Arc::new(Local::build("local", &cfg)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let req = |user: &str, max_tokens: u64| ChatRequest {
        model: "m".into(),
        messages: vec![Message::text("user", user)],
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        ..Default::default()
    };
    // Runs one request to the end on the engine directly, returning (prompt, completion
    // tokens, prefill s, decode s).
    let run = |r: ChatRequest| -> Result<(usize, usize, f64, f64), Box<dyn std::error::Error>> {
        let (prompt, params) = local.prepare(&r)?;
        let mut rx = local.submit(prompt, params)?;
        while let Some(ev) = rx.blocking_recv() {
            if let Event::Done(f) = ev {
                return Ok((
                    f.prompt_tokens,
                    f.completion_tokens,
                    f.timings.prefill.as_secs_f64(),
                    f.timings.decode.as_secs_f64(),
                ));
            }
            if let Event::Error(e) = ev {
                return Err(e.into());
            }
        }
        Err("engine stopped".into())
    };

    run(req("Hello", 8))?; // warm-up

    let mut prefill = vec![];
    let mut prefill_tokens = 0;
    for _ in 0..RUNS {
        let (p, _, secs, _) = run(req(&text("prefill"), 1))?;
        prefill_tokens = p;
        prefill.push(p as f64 / secs);
    }
    let mut decode = vec![];
    let mut decode_tokens = 0;
    for _ in 0..RUNS {
        let (_, c, _, secs) = run(req(&text("decode"), 128))?;
        decode_tokens = c;
        decode.push((c - 1) as f64 / secs);
    }

    // The longest prefix of the word list whose rendered prompt is at most 50 tokens.
    let words: Vec<&str> = prompts["ttft_words"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .collect();
    let mut ttft_text = String::new();
    let mut ttft_tokens = 0;
    for n in 1..=words.len() {
        let candidate = words[..n].join(" ");
        let count = local.prompt_tokens(&req(&candidate, 1))?.len();
        if count > 50 {
            break;
        }
        (ttft_text, ttft_tokens) = (candidate, count);
    }
    let mut ttft = vec![];
    for _ in 0..RUNS {
        let mut r = req(&ttft_text, 16);
        r.stream = Some(true);
        let local = local.clone();
        let ms = rt.block_on(async move {
            let start = Instant::now();
            let call = ChatCall {
                request: Arc::new(r),
                model: "m".into(),
                original: None,
            };
            let Ok(ChatOutput::Stream(mut s)) = local.chat(call).await else {
                return f64::NAN;
            };
            while let Some(Ok(item)) = s.next().await {
                if let StreamItem::Data { content: true, .. } = item {
                    return start.elapsed().as_secs_f64() * 1e3;
                }
            }
            f64::NAN
        });
        ttft.push(ms);
    }

    let out = serde_json::json!({
        "engine": "switchyard-local",
        "weight_format": format,
        "threads": threads,
        "prefill_prompt_tokens": prefill_tokens,
        "prefill_tok_s": median(prefill),
        "decode_tokens": decode_tokens,
        "decode_tok_s": median(decode),
        "ttft_prompt_tokens": ttft_tokens,
        "ttft_text": ttft_text,
        "ttft_ms": median(ttft),
        "runs": RUNS,
    });
    println!("{out}");
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
