//! Prints the meter's costs: tokenizer load, token estimate and `to_record` per request, the
//! request path's `record()` call, and ledger write throughput.
//!
//! `cargo run --release -p switchyard-meter --example meter_bench [records]`

// A benchmark program: failing loudly is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use switchyard_api::{openai::ChatRequest, TokenUsage};
use switchyard_meter::{
    to_record, tokens, Ledger, Meter, MeterConfig, Outcome, PriceCatalog, SqliteLedger,
};

fn outcome(i: usize, request: Option<Arc<ChatRequest>>) -> Outcome {
    Outcome {
        id: format!("req-{i}"),
        started_at_ms: 1_700_000_000_000 + i as i64,
        finished_at_ms: 1_700_000_000_500 + i as i64,
        operation: "chat",
        route: "chat".into(),
        provider: Some("openai".into()),
        provider_kind: Some("openai"),
        target: Some("openai/gpt-4o".into()),
        model: Some("gpt-4o".into()),
        status: 200,
        usage: request.is_none().then_some(TokenUsage {
            input_tokens: 500,
            output_tokens: 200,
            ..Default::default()
        }),
        output_text: request
            .as_ref()
            .map(|_| "The answer is forty-two, as computed. ".repeat(20)),
        request,
        ttft_ms: Some(120.0),
        latency_ms: 500.0,
        attempts: 1,
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(50_000);

    let t = Instant::now();
    tokens::warm_up();
    println!("o200k_base load: {:.0} ms", t.elapsed().as_secs_f64() * 1e3);

    let prompt = "Summarise the following meeting notes in three bullet points. ".repeat(30);
    let req: Arc<ChatRequest> = Arc::new(
        serde_json::from_value(serde_json::json!({
            "model": "chat", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
        }))
        .unwrap(),
    );
    let cat = PriceCatalog::builtin().unwrap();
    let targets = HashMap::new();
    let m = 2_000;
    let t = Instant::now();
    for i in 0..m {
        std::hint::black_box(to_record(outcome(i, Some(req.clone())), &cat, &targets));
    }
    let est = t.elapsed() / m as u32;
    let r = to_record(outcome(0, Some(req.clone())), &cat, &targets);
    println!(
        "to_record with estimate ({} prompt + {} output tokens): {:.1} µs",
        r.input_tokens,
        r.output_tokens,
        est.as_secs_f64() * 1e6
    );
    let t = Instant::now();
    for i in 0..m {
        std::hint::black_box(to_record(outcome(i, None), &cat, &targets));
    }
    println!(
        "to_record with reported usage: {:.2} µs",
        (t.elapsed() / m as u32).as_secs_f64() * 1e6
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sqlite");
    let (meter, task) = Meter::start(MeterConfig::new(path.clone()).unwrap()).unwrap();
    let outcomes: Vec<Outcome> = (0..n).map(|i| outcome(i, None)).collect();
    let t = Instant::now();
    for o in outcomes {
        meter.record(o).await;
    }
    let sent = t.elapsed();
    let written = task.shutdown().await.unwrap();
    let total = t.elapsed();
    assert_eq!(written, n as u64);
    println!(
        "record(): {:.2} µs per call ({n} calls from one task; the queue of 65,536 fills beyond that and record() then waits for the writer)",
        sent.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "ledger: {n} rows written in {:.2} s = {:.0} rows/s (batches of 512, WAL, synchronous=NORMAL); file {:.1} MB",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
            + std::fs::metadata(path.with_extension("sqlite-wal")).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
    );
    let records: Vec<_> = (0..n)
        .map(|i| to_record(outcome(i, None), &cat, &targets))
        .collect();
    // Rows per transaction against cost per row: why the writer stages rows every 10 ms but
    // commits only every 200 ms (a commit every 10 ms would mean batches of ~20 at 2k req/s).
    for size in [512, 100, 20, 5] {
        let mut ledger =
            SqliteLedger::open(&dir.path().join(format!("direct-{size}.sqlite"))).unwrap();
        let t = Instant::now();
        for batch in records.chunks(size) {
            ledger.insert_batch(batch).unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "SQLite alone, insert_batch of {size}: {:.0} rows/s ({:.1} µs per row)",
            n as f64 / secs,
            secs * 1e6 / n as f64
        );
    }
    let metrics = switchyard_meter::metrics::Metrics::default();
    let t = Instant::now();
    for r in &records {
        metrics.observe(r);
    }
    println!(
        "metrics observe: {:.2} µs per record",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );

    let t = Instant::now();
    let rows = switchyard_meter::report::usage_report(
        &path,
        None,
        switchyard_meter::report::GroupBy::Model,
    )
    .unwrap();
    println!(
        "usage report over {n} rows: {:.0} ms ({} group)",
        t.elapsed().as_secs_f64() * 1e3,
        rows.len()
    );
    print!("{}", switchyard_meter::report::render_table(&rows));
}
