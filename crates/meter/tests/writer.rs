//! The meter end to end: outcomes queued from many tasks land in the SQLite ledger, shutdown
//! drains, a tiny queue applies backpressure without loss, and the metrics agree.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard_api::{openai::ChatRequest, TokenUsage};
use switchyard_meter::{
    energy::EnergyProfile, to_record, Ledger, Meter, MeterConfig, Outcome, Price, PriceCatalog,
    SqliteLedger, TargetMeterConfig,
};

fn outcome(id: String) -> Outcome {
    Outcome {
        id,
        started_at_ms: 1_700_000_000_000,
        finished_at_ms: 1_700_000_000_100,
        operation: "chat",
        route: "chat".into(),
        provider: Some("openai".into()),
        provider_kind: Some("openai"),
        target: Some("openai/gpt-4o".into()),
        model: Some("gpt-4o".into()),
        status: 200,
        usage: Some(TokenUsage {
            input_tokens: 100,
            output_tokens: 10,
            ..Default::default()
        }),
        latency_ms: 100.0,
        attempts: 1,
        ..Default::default()
    }
}

fn config(path: &Path, queue: usize, batch: usize, flush: Duration) -> MeterConfig {
    let mut cfg = MeterConfig::new(path.to_path_buf()).unwrap();
    cfg.queue_capacity = queue;
    cfg.batch_size = batch;
    cfg.flush_interval = flush;
    cfg
}

fn rows(path: &Path) -> Vec<switchyard_meter::LedgerRecord> {
    SqliteLedger::open_read_only(path)
        .unwrap()
        .records_since(i64::MIN)
        .unwrap()
}

/// The value of an unlabelled sample in the exposition text.
fn metric(meter: &Meter, name: &str) -> f64 {
    let mut out = String::new();
    meter.render_metrics(&mut out);
    out.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing from\n{out}"))
        .parse()
        .unwrap()
}

async fn record_from_tasks(meter: &Meter, tasks: usize, each: usize) {
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let m = meter.clone();
        set.spawn(async move {
            for i in 0..each {
                m.record(outcome(format!("t{t}-{i}"))).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_many_tasks_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let (meter, task) =
        Meter::start(config(&path, 65_536, 512, Duration::from_millis(200))).unwrap();
    record_from_tasks(&meter, 16, 250).await;
    let written = task.shutdown().await.unwrap();
    assert_eq!(written, 4_000);
    let rows = rows(&path);
    assert_eq!(rows.len(), 4_000);
    assert_eq!(
        rows.iter()
            .map(|r| r.id.as_str())
            .collect::<HashSet<_>>()
            .len(),
        4_000
    );
    // gpt-4o from the catalog: 100 × $2.50 + 10 × $10 per 1M tokens.
    assert!(rows
        .iter()
        .all(|r| (r.cost_usd.unwrap() - 0.00035).abs() < 1e-12));
    assert!(rows.iter().all(|r| r
        .price_source
        .as_deref()
        .unwrap()
        .starts_with("catalog:openai/gpt-4o@")));
    assert_eq!(
        metric(&meter, "switchyard_ledger_records_written_total"),
        4_000.0
    );
    assert_eq!(
        metric(&meter, "switchyard_ledger_records_dropped_total"),
        0.0
    );
    assert_eq!(metric(&meter, "switchyard_ledger_queue_depth"), 0.0);
}

#[tokio::test]
async fn shutdown_drains_everything_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    // Batches larger than the load and an hour-long interval: nothing is written until shutdown.
    let (meter, task) =
        Meter::start(config(&path, 65_536, 100_000, Duration::from_secs(3600))).unwrap();
    for i in 0..1_000 {
        meter.record(outcome(format!("r{i}"))).await;
    }
    assert_eq!(rows(&path).len(), 0, "nothing flushed before shutdown");
    assert_eq!(task.shutdown().await.unwrap(), 1_000);
    assert_eq!(rows(&path).len(), 1_000);
    assert_eq!(
        metric(&meter, "switchyard_ledger_records_dropped_total"),
        0.0
    );

    // After shutdown the writer is gone: a record is counted as dropped, not silently lost.
    meter.record(outcome("late".into())).await;
    assert_eq!(
        metric(&meter, "switchyard_ledger_records_dropped_total"),
        1.0
    );
    assert_eq!(rows(&path).len(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_queue_applies_backpressure_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let (meter, task) = Meter::start(config(&path, 1, 3, Duration::from_millis(5))).unwrap();
    record_from_tasks(&meter, 8, 100).await;
    assert_eq!(task.shutdown().await.unwrap(), 800);
    assert_eq!(rows(&path).len(), 800);
    assert_eq!(
        metric(&meter, "switchyard_ledger_records_dropped_total"),
        0.0
    );
}

#[tokio::test]
async fn flush_interval_writes_without_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let (meter, task) = Meter::start(config(&path, 16, 512, Duration::from_millis(20))).unwrap();
    meter.record(outcome("one".into())).await;
    // Poll (no timing assertion: the bound only stops a broken writer from hanging the test).
    let mut landed = false;
    for _ in 0..600 {
        if rows(&path).len() == 1 {
            landed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(landed, "a partial batch was never flushed by the interval");
    assert_eq!(task.shutdown().await.unwrap(), 1);
}

#[tokio::test]
async fn dropping_the_task_detaches_and_the_last_meter_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let (meter, task) = Meter::start(config(&path, 64, 512, Duration::from_secs(3600))).unwrap();
    drop(task);
    for i in 0..10 {
        meter.record(outcome(format!("d{i}"))).await;
    }
    assert_eq!(
        metric(&meter, "switchyard_ledger_records_dropped_total"),
        0.0
    );
    drop(meter);
    // The writer flushes when the last handle goes; poll for it (bounded so a bug cannot hang).
    let mut n = 0;
    for _ in 0..600 {
        n = rows(&path).len();
        if n == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(n, 10);
}

#[test]
fn start_rejects_a_bad_target_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        &dir.path().join("l.sqlite"),
        8,
        8,
        Duration::from_millis(10),
    );
    let energy: EnergyProfile = toml::from_str("method = \"power_time\"\nwatts = -5.0").unwrap();
    cfg.targets.insert(
        "a/m".into(),
        TargetMeterConfig {
            energy: Some(energy),
            ..Default::default()
        },
    );
    let err = Meter::start(cfg).err().expect("negative watts accepted");
    assert!(err.to_string().contains("a/m"), "{err}");
}

fn chat_request(text: &str) -> Arc<ChatRequest> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "model": "chat", "messages": [{"role": "user", "content": text}]
        }))
        .unwrap(),
    )
}

#[test]
fn missing_usage_is_estimated_and_marked() {
    let mut o = outcome("e".into());
    o.usage = None;
    o.request = Some(chat_request("hello world"));
    o.output_text = Some("tiktoken is great!".into());
    let r = to_record(o, &PriceCatalog::builtin().unwrap(), &HashMap::new());
    assert!(r.tokens_estimated);
    // 3 framing + "user" 1 + "hello world" 2 + 3 priming the reply; the answer is 6 tokens.
    assert_eq!((r.input_tokens, r.output_tokens), (9, 6));
    assert!((r.cost_usd.unwrap() - (9.0 * 2.5 + 6.0 * 10.0) / 1e6).abs() < 1e-15);

    // Embeddings count their input text.
    let mut e = outcome("emb".into());
    e.usage = None;
    e.operation = "embeddings";
    e.input_text = Some("hello world".into());
    let r = to_record(e, &PriceCatalog::builtin().unwrap(), &HashMap::new());
    assert!(r.tokens_estimated);
    assert_eq!((r.input_tokens, r.output_tokens), (2, 0));

    // Reported usage is taken as is.
    let r = to_record(
        outcome("u".into()),
        &PriceCatalog::builtin().unwrap(),
        &HashMap::new(),
    );
    assert!(!r.tokens_estimated);
    assert_eq!((r.input_tokens, r.output_tokens), (100, 10));
}

#[test]
fn unpriced_model_has_unknown_cost_and_failed_request_is_not_billed() {
    let cat = PriceCatalog::builtin().unwrap();
    let mut o = outcome("x".into());
    o.model = Some("my-local-llama".into());
    o.target = Some("local/my-local-llama".into());
    let r = to_record(o, &cat, &HashMap::new());
    assert_eq!((r.cost_usd, r.price_source), (None, None));

    let mut failed = outcome("f".into());
    failed.status = 502;
    failed.error_type = Some("upstream_error".into());
    failed.usage = None;
    failed.request = Some(chat_request("hello world"));
    let r = to_record(failed, &cat, &HashMap::new());
    assert_eq!(
        (r.input_tokens, r.output_tokens, r.tokens_estimated),
        (0, 0, false)
    );
    assert_eq!(r.cost_usd, Some(0.0));
}

#[test]
fn target_config_overrides_price_and_sets_energy_and_carbon() {
    let price: Price = toml::from_str(
        "input_per_mtok = 1000000.0\noutput_per_mtok = 2000000.0\nsource = \"test\"\nas_of = \"2026-11-22\"",
    )
    .unwrap();
    let energy: EnergyProfile =
        toml::from_str("method = \"j_per_token\"\ninput_j = 36.0\noutput_j = 360.0").unwrap();
    let targets = HashMap::from([(
        "openai/gpt-4o".to_string(),
        TargetMeterConfig {
            price: Some(price),
            energy: Some(energy),
            grid_g_co2e_per_kwh: Some(500.0),
        },
    )]);
    let r = to_record(
        outcome("c".into()),
        &PriceCatalog::builtin().unwrap(),
        &targets,
    );
    assert_eq!(r.price_source.as_deref(), Some("config:openai/gpt-4o"));
    assert!((r.cost_usd.unwrap() - (100.0 + 20.0)).abs() < 1e-9);
    // (100 × 36 J + 10 × 360 J) / 3600 = 2 Wh; 2 Wh × 500 g/kWh = 1 g.
    assert_eq!(r.energy_method, "estimated-j-per-token");
    assert!((r.energy_wh.unwrap() - 2.0).abs() < 1e-12);
    assert!((r.carbon_g.unwrap() - 1.0).abs() < 1e-12);

    // The provider's own measurement wins over the profile.
    let mut measured = outcome("m".into());
    measured.provider_energy_wh = Some(0.3);
    measured.provider_energy_method = Some("measured-rapl");
    let r = to_record(measured, &PriceCatalog::builtin().unwrap(), &targets);
    assert_eq!(
        (r.energy_wh, r.energy_method.as_str()),
        (Some(0.3), "measured-rapl")
    );

    // No profile and no measurement: unknown, not zero.
    let r = to_record(
        outcome("n".into()),
        &PriceCatalog::builtin().unwrap(),
        &HashMap::new(),
    );
    assert_eq!(
        (r.energy_wh, r.energy_method.as_str(), r.carbon_g),
        (None, "unknown", None)
    );
}

#[tokio::test]
async fn a_batch_that_fails_to_write_is_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let (meter, task) = Meter::start(config(&path, 64, 512, Duration::from_millis(20))).unwrap();
    // Make one row fail to insert, as a full disk would.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON requests WHEN NEW.id = 'bad' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    meter.record(outcome("good".into())).await;
    meter.record(outcome("bad".into())).await;
    let written = task.shutdown().await.unwrap();
    let dropped = metric(&meter, "switchyard_ledger_records_dropped_total");
    // "good" may have been committed before "bad" arrived, or been in its batch and lost with it.
    assert!(dropped >= 1.0, "the failed batch was not counted");
    assert_eq!(written as f64 + dropped, 2.0);
    assert!(rows(&path).iter().all(|r| r.id != "bad"));
    assert_eq!(rows(&path).len() as u64, written);
}
