//! Turns the JSON lines of one bench run into the comparison table (Markdown, CSV, JSON).
//!
//! Added latency is the difference of percentiles (target p99 − direct p99 at the same offered
//! rate), not a percentile of per-request differences: the two runs are separate.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::paired::Kind;

/// Issue #3's budgets: added p99 at 2k req/s, and added TTFT p99 under 1,000 streams (ms).
const P99_BUDGET_MS: f64 = Kind::Rate.budget_ms();
const TTFT_BUDGET_MS: f64 = Kind::Streams.budget_ms();

/// Order of the rows; labels not listed here follow in name order.
const ORDER: [&str; 6] = [
    "direct",
    "nginx",
    "bare-hyper",
    "switchyard",
    "portkey",
    "litellm",
];

/// The number at `path` in a JSON value.
pub fn f(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_f64()
}

/// Everything known about one target.
#[derive(Debug, Default, Clone)]
struct Row {
    /// One per step ladder run against the target (bench/run.sh runs several).
    steps: Vec<Value>,
    /// Each ladder's ceiling by the round it ran in, when the run marked its rounds
    /// (`ladder_round` lines: bench/run.sh interleaves the targets' ladders round by round).
    ceiling_by_round: BTreeMap<u64, f64>,
    rates: BTreeMap<u64, Value>,
    streams: Option<Value>,
    rss_kb: Option<f64>,
    /// Peak RSS while holding the concurrent streams (the peak is reset before them).
    stream_rss_kb: Option<f64>,
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".to_string(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The rendered report.
pub struct Report {
    /// Markdown tables.
    pub markdown: String,
    /// One CSV row per target.
    pub csv: String,
    /// Everything, structured.
    pub json: Value,
}

/// Builds the report from the run's JSON lines.
pub fn build(lines: &str) -> anyhow::Result<Report> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut meta: Vec<Value> = Vec::new();
    let mut long_run: Vec<Value> = Vec::new();
    let mut paired_windows: Vec<Value> = Vec::new();
    let mut round: Option<u64> = None;
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)?;
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
        let label = v
            .get("label")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match kind {
            "meta" => meta.push(v),
            "long" | "long_rss" => long_run.push(v),
            "rate" if label.starts_with(Kind::Rate.prefix()) => paired_windows.push(v),
            "streams" if label.starts_with(Kind::Streams.prefix()) => paired_windows.push(v),
            "ladder_round" => round = f(&v, &["round"]).map(|r| r as u64),
            "step" => {
                let row = rows.entry(label).or_default();
                if let (Some(r), Some(c)) = (round, f(&v, &["max_sustained_rps"])) {
                    row.ceiling_by_round.insert(r, c);
                }
                row.steps.push(v);
            }
            "rate" => {
                let rate = f(&v, &["rate"]).unwrap_or(0.0).round() as u64;
                rows.entry(label).or_default().rates.insert(rate, v);
            }
            "streams" => rows.entry(label).or_default().streams = Some(v),
            "rss" => {
                let kb = f(&v, &["vmhwm_kb"]);
                let row = rows.entry(label).or_default();
                row.rss_kb = match (row.rss_kb, kb) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
            "rss_streams" => {
                rows.entry(label).or_default().stream_rss_kb = f(&v, &["vmhwm_kb"]);
            }
            _ => {}
        }
    }
    let mut labels: Vec<String> = ORDER
        .iter()
        .filter(|l| rows.contains_key(**l))
        .map(|l| l.to_string())
        .collect();
    labels.extend(
        rows.keys()
            .filter(|k| !ORDER.contains(&k.as_str()))
            .cloned(),
    );
    let rates: Vec<u64> = {
        let mut all: Vec<u64> = rows
            .values()
            .flat_map(|r| r.rates.keys().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    };

    // Each ladder's ceiling, in run order. The edge is fragile on a shared 2-core VM (one
    // hiccup at a high rate tips a target into a queue it does not drain within the step), so
    // one ladder's ceiling is a noisy sample; the table uses the median of the ladders.
    let ceilings = |l: &str| -> Vec<f64> {
        rows.get(l)
            .map(|r| {
                r.steps
                    .iter()
                    .filter_map(|s| f(s, &["max_sustained_rps"]))
                    .collect()
            })
            .unwrap_or_default()
    };
    let max_rps = |l: &str| -> Option<f64> { median_low(ceilings(l)) };
    // `a` ÷ `b` round by round. Within a round the two ladders ran minutes apart at most, so a
    // slow or quick stretch of the VM touches both; across rounds it need not, which is what
    // skews a ratio of the two medians when the machine drifts during the run.
    let by_round = |a: &str, b: &str| -> Vec<(u64, f64)> {
        let (Some(ra), Some(rb)) = (rows.get(a), rows.get(b)) else {
            return Vec::new();
        };
        ra.ceiling_by_round
            .iter()
            .filter_map(|(r, ca)| {
                let cb = *rb.ceiling_by_round.get(r)?;
                (cb > 0.0).then_some((*r, ca / cb))
            })
            .collect()
    };
    let median_of_rounds =
        |a: &str, b: &str| median_low(by_round(a, b).into_iter().map(|(_, x)| x).collect());
    let sy = "switchyard";
    let rate_metric = |l: &str, rate: u64, m: &str| -> Option<f64> {
        let r = rows.get(l)?.rates.get(&rate)?;
        // A percentile of a run with errors or unmet rate would flatter the target: leave it out.
        if f(r, &["error_rate"])? >= 0.001 {
            return None;
        }
        f(r, &["latency", m])
    };
    let stream_metric =
        |l: &str, path: &[&str]| -> Option<f64> { f(rows.get(l)?.streams.as_ref()?, path) };

    let mut md = String::new();
    let mut csv = String::new();
    let mut targets_json = serde_json::Map::new();

    // Throughput and RSS.
    let _ = writeln!(
        md,
        "### Throughput (highest offered rate sustained with < 0.1% errors and bounded p99)\n"
    );
    let _ = writeln!(
        md,
        "| target | max req/s (median) | each ladder | × direct | × nginx | Switchyard ÷ target | peak RSS MB, rate tests | peak RSS MB, streams |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in &labels {
        let m = max_rps(l);
        let rss = rows.get(l).and_then(|r| r.rss_kb).map(|kb| kb / 1024.0);
        let stream_rss = rows
            .get(l)
            .and_then(|r| r.stream_rss_kb)
            .map(|kb| kb / 1024.0);
        let each: Vec<String> = ceilings(l).iter().map(|c| format!("{c:.0}")).collect();
        let _ = writeln!(
            md,
            "| {l} | {} | {} | {} | {} | {} | {} | {} |",
            fmt_opt(m, 0),
            each.join(" / "),
            fmt_opt(ratio(m, max_rps("direct")), 2),
            fmt_opt(ratio(m, max_rps("nginx")), 2),
            fmt_opt(ratio(max_rps("switchyard"), m), 2),
            fmt_opt(rss, 1),
            fmt_opt(stream_rss, 1)
        );
    }

    // Switchyard against each target, round by round.
    let all_rounds: Vec<u64> = {
        let mut v: Vec<u64> = rows
            .values()
            .flat_map(|r| r.ceiling_by_round.keys().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    if !all_rounds.is_empty() && rows.contains_key(sy) {
        let _ = writeln!(md, "\n### Switchyard ÷ each target, round by round\n");
        let _ = writeln!(
            md,
            "The ladders ran in rounds, every target once per round (the order reversed every other round), so each round's ratio compares two ladders that ran minutes apart; the median over the rounds holds when the machine drifts during the run, the ratio of the medians above need not.\n"
        );
        let mut head = String::from("| Switchyard ÷ |");
        let mut sep = String::from("|---|");
        for r in &all_rounds {
            let _ = write!(head, " round {r} |");
            sep.push_str("---:|");
        }
        let _ = writeln!(md, "{head} median of rounds |\n{sep}---:|");
        for l in labels.iter().filter(|l| l.as_str() != sy) {
            let each = by_round(sy, l);
            let mut line = format!("| {l} |");
            for r in &all_rounds {
                let v = each.iter().find(|(k, _)| k == r).map(|(_, x)| *x);
                let _ = write!(line, " {} |", fmt_opt(v, 2));
            }
            let _ = writeln!(md, "{line} {} |", fmt_opt(median_of_rounds(sy, l), 2));
        }
    }

    // Latency at fixed rates.
    let _ = writeln!(
        md,
        "\n### Latency at fixed open-loop rates, non-streaming (ms; added = target − direct)\n"
    );
    let mut head = String::from("| target |");
    let mut sep = String::from("|---|");
    for r in &rates {
        let _ = write!(head, " p50 @{r} | p99 @{r} | +p50 @{r} | +p99 @{r} |");
        sep.push_str("---:|---:|---:|---:|");
    }
    let _ = writeln!(md, "{head}\n{sep}");
    for l in &labels {
        let mut line = format!("| {l} |");
        for &r in &rates {
            let p50 = rate_metric(l, r, "p50_ms");
            let p99 = rate_metric(l, r, "p99_ms");
            let d50 = p50
                .zip(rate_metric("direct", r, "p50_ms"))
                .map(|(a, b)| a - b);
            let d99 = p99
                .zip(rate_metric("direct", r, "p99_ms"))
                .map(|(a, b)| a - b);
            let _ = write!(
                line,
                " {} | {} | {} | {} |",
                fmt_opt(p50, 3),
                fmt_opt(p99, 3),
                fmt_opt(d50, 3),
                fmt_opt(d99, 3)
            );
        }
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(
        md,
        "\n– = not measured, or the target did not sustain that rate (≥ 0.1% errors)."
    );

    // Streams.
    let conc = labels
        .iter()
        .find_map(|l| stream_metric(l, &["concurrency"]))
        .unwrap_or(0.0);
    let itl = labels
        .iter()
        .find_map(|l| stream_metric(l, &["expected_itl_ms"]))
        .unwrap_or(0.0);
    let _ = writeln!(
        md,
        "\n### {conc:.0} concurrent streams (upstream inter-token delay {itl:.0} ms; ms)\n"
    );
    let _ = writeln!(
        md,
        "| target | streams ok / err | TTFT p50 | TTFT p99 | +TTFT p50 | +TTFT p99 | +TTFT p99 after the ramp | gap p50 | gap p99 | gap max | multi-token frames | stalls |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for l in &labels {
        if rows.get(l).and_then(|r| r.streams.as_ref()).is_none() {
            continue;
        }
        let s = |p: &[&str]| stream_metric(l, p);
        let add = |p: &[&str]| s(p).zip(stream_metric("direct", p)).map(|(a, b)| a - b);
        let _ = writeln!(
            md,
            "| {l} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt_opt(s(&["streams_ok"]), 0),
            fmt_opt(s(&["streams_err"]), 0),
            fmt_opt(s(&["ttft", "p50_ms"]), 2),
            fmt_opt(s(&["ttft", "p99_ms"]), 2),
            fmt_opt(add(&["ttft", "p50_ms"]), 2),
            fmt_opt(add(&["ttft", "p99_ms"]), 2),
            fmt_opt(add(&["ttft_steady", "p99_ms"]), 2),
            fmt_opt(s(&["gap", "p50_ms"]), 2),
            fmt_opt(s(&["gap", "p99_ms"]), 2),
            fmt_opt(s(&["gap", "max_ms"]), 1),
            fmt_opt(s(&["multi_token_frames"]), 0),
            fmt_opt(s(&["stalls"]), 0),
        );
    }

    // Added latency in alternating windows (bench/run.sh runs them after the targets).
    let paired = crate::paired::summarize(&paired_windows, Kind::Rate, P99_BUDGET_MS);
    md.push_str(&crate::paired::markdown(&paired, P99_BUDGET_MS));
    let paired_streams = crate::paired::summarize(&paired_windows, Kind::Streams, TTFT_BUDGET_MS);
    md.push_str(&crate::paired::markdown(&paired_streams, TTFT_BUDGET_MS));

    // Switchyard against its targets.
    let mut checks: Vec<Value> = Vec::new();
    if rows.contains_key(sy) {
        let mut check = |name: &str, value: Option<f64>, goal: &str, met: Option<bool>| {
            checks.push(json!({"check": name, "value": value, "goal": goal, "met": met}));
        };
        // Each throughput ratio twice: of the median ceilings, and the median of the rounds'
        // ratios (only when the run marked rounds).
        for (peer, name, goal) in [
            ("nginx", "nginx", 0.9),
            ("portkey", "Portkey", 20.0),
            ("litellm", "LiteLLM", 100.0),
        ] {
            let r = ratio(max_rps(sy), max_rps(peer));
            check(
                &format!("throughput ÷ {name}"),
                r,
                &format!("≥ {goal}"),
                r.map(|r| r >= goal),
            );
            if !by_round(sy, peer).is_empty() {
                let r = median_of_rounds(sy, peer);
                check(
                    &format!("throughput ÷ {name}, median of rounds"),
                    r,
                    &format!("≥ {goal}"),
                    r.map(|r| r >= goal),
                );
            }
        }
        let direct99 = rate_metric("direct", 2000, "p99_ms");
        let d99 = rate_metric(sy, 2000, "p99_ms")
            .zip(direct99)
            .map(|(a, b)| a - b);
        // A difference of two runs' p99s says nothing about a 0.5 ms budget when the floor's
        // own p99 is already above it: the VM's hiccups, not the target, set both.
        let floor_quiet = direct99.is_some_and(|d| d <= P99_BUDGET_MS);
        check(
            "added p99 @2000 req/s (ms)",
            d99,
            "≤ 0.5",
            d99.filter(|_| floor_quiet).map(|d| d <= P99_BUDGET_MS),
        );
        let p99_note = direct99
            .filter(|_| !floor_quiet)
            .map(|d| format!("no evidence: direct's own p99 was {d:.3} ms"));
        if let Some(p) = paired.iter().find(|p| p.target == sy) {
            check(
                &format!(
                    "added p99 @{:.0} req/s, alternating windows: median of {} quiet rounds (ms)",
                    p.load, p.quiet
                ),
                p.median_added_p99_ms,
                "≤ 0.5",
                p.met(P99_BUDGET_MS),
            );
        }
        let stalls = stream_metric(sy, &["stalls"]);
        let errs = stream_metric(sy, &["streams_err"]);
        let no_stall = stalls.zip(errs).map(|(s, e)| s + e);
        check(
            "streams: stalls + failed",
            no_stall,
            "= 0",
            no_stall.map(|n| n == 0.0),
        );
        let ttft = stream_metric(sy, &["ttft", "p99_ms"])
            .zip(stream_metric("direct", &["ttft", "p99_ms"]))
            .map(|(a, b)| a - b);
        check(
            "streams: added TTFT p99 (ms)",
            ttft,
            "≤ 1",
            ttft.map(|d| d <= 1.0),
        );
        if let Some(p) = paired_streams.iter().find(|p| p.target == sy) {
            check(
                &format!(
                    "streams: added TTFT p99, alternating windows: median of {} rounds (ms)",
                    p.quiet
                ),
                p.median_added_p99_ms,
                "≤ 1",
                p.met(TTFT_BUDGET_MS),
            );
        }
        let rss = rows
            .get(sy)
            .and_then(|r| r.stream_rss_kb)
            .map(|kb| kb / 1024.0);
        check(
            "streams: peak RSS (MB)",
            rss,
            "≤ 150",
            rss.map(|m| m <= 150.0),
        );
        if let Some(p) = paired
            .iter()
            .find(|p| p.target == sy && p.met(P99_BUDGET_MS).is_none())
        {
            if let Some(c) = checks.iter_mut().find(|c| {
                c["check"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("added p99") && n.contains("alternating"))
            }) {
                c["note"] = json!(format!(
                    "no evidence: {} quiet rounds (at least {} needed)",
                    p.quiet,
                    crate::paired::MIN_QUIET_ROUNDS
                ));
            }
        }
        if let Some(p) = paired_streams
            .iter()
            .find(|p| p.target == sy && p.met(TTFT_BUDGET_MS).is_none())
        {
            if let Some(c) = checks.iter_mut().find(|c| {
                c["check"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("streams: added TTFT p99, alternating"))
            }) {
                c["note"] = json!(format!(
                    "no evidence: {} counted rounds (at least {} needed)",
                    p.quiet,
                    crate::paired::MIN_QUIET_ROUNDS
                ));
            }
        }
        if let Some(note) = p99_note {
            if let Some(c) = checks
                .iter_mut()
                .find(|c| c["check"] == "added p99 @2000 req/s (ms)")
            {
                c["note"] = json!(note);
            }
        }
        let _ = writeln!(md, "\n### Switchyard targets\n");
        let _ = writeln!(md, "| check | value | goal | met |");
        let _ = writeln!(md, "|---|---:|---|---|");
        for c in &checks {
            let met = match (c["met"].as_bool(), c["note"].as_str()) {
                (Some(true), _) => "yes",
                (Some(false), _) => "**no**",
                (None, Some(note)) => note,
                (None, None) => "not measured",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {met} |",
                c["check"].as_str().unwrap_or(""),
                fmt_opt(c["value"].as_f64(), 3),
                c["goal"].as_str().unwrap_or("")
            );
        }
    }

    // CSV: one row per target, flat.
    let mut header = vec![
        "target".to_string(),
        "max_rps".into(),
        "x_direct".into(),
        "x_nginx".into(),
        "switchyard_over_target".into(),
        "switchyard_over_target_median_of_rounds".into(),
        "peak_rss_mb".into(),
        "streams_peak_rss_mb".into(),
    ];
    for r in &rates {
        for m in ["p50_ms", "p99_ms", "added_p50_ms", "added_p99_ms"] {
            header.push(format!("{m}_at_{r}"));
        }
    }
    header.extend(
        [
            "streams_ok",
            "streams_err",
            "ttft_p50_ms",
            "ttft_p99_ms",
            "added_ttft_p50_ms",
            "added_ttft_p99_ms",
            "gap_p50_ms",
            "gap_p99_ms",
            "gap_max_ms",
            "multi_token_frames",
            "stalls",
            "added_ttft_p99_after_ramp_ms",
        ]
        .map(String::from),
    );
    let _ = writeln!(csv, "{}", header.join(","));
    for l in &labels {
        let m = max_rps(l);
        let rss = rows.get(l).and_then(|r| r.rss_kb).map(|kb| kb / 1024.0);
        let stream_rss = rows
            .get(l)
            .and_then(|r| r.stream_rss_kb)
            .map(|kb| kb / 1024.0);
        let mut cells: Vec<Option<f64>> = vec![
            m,
            ratio(m, max_rps("direct")),
            ratio(m, max_rps("nginx")),
            ratio(max_rps(sy), m),
            median_of_rounds(sy, l),
            rss,
            stream_rss,
        ];
        let mut tj = serde_json::Map::new();
        tj.insert("max_rps".into(), json!(m));
        tj.insert("max_rps_each_ladder".into(), json!(ceilings(l)));
        tj.insert("x_direct".into(), json!(ratio(m, max_rps("direct"))));
        tj.insert("x_nginx".into(), json!(ratio(m, max_rps("nginx"))));
        let peers: serde_json::Map<String, Value> = labels
            .iter()
            .map(|p| (p.clone(), json!(ratio(m, max_rps(p)))))
            .collect();
        tj.insert("throughput_ratio_to".into(), Value::Object(peers));
        let rounds: serde_json::Map<String, Value> = by_round(sy, l)
            .into_iter()
            .map(|(r, x)| (r.to_string(), json!(x)))
            .collect();
        tj.insert(
            "switchyard_over_target_by_round".into(),
            Value::Object(rounds),
        );
        tj.insert(
            "switchyard_over_target_median_of_rounds".into(),
            json!(median_of_rounds(sy, l)),
        );
        tj.insert("peak_rss_mb".into(), json!(rss));
        tj.insert("streams_peak_rss_mb".into(), json!(stream_rss));
        let mut at = serde_json::Map::new();
        for &r in &rates {
            let p50 = rate_metric(l, r, "p50_ms");
            let p99 = rate_metric(l, r, "p99_ms");
            let d50 = p50
                .zip(rate_metric("direct", r, "p50_ms"))
                .map(|(a, b)| a - b);
            let d99 = p99
                .zip(rate_metric("direct", r, "p99_ms"))
                .map(|(a, b)| a - b);
            cells.extend([p50, p99, d50, d99]);
            at.insert(
                r.to_string(),
                json!({"p50_ms": p50, "p99_ms": p99, "added_p50_ms": d50, "added_p99_ms": d99}),
            );
        }
        tj.insert("latency_at_rate".into(), Value::Object(at));
        let s = |p: &[&str]| stream_metric(l, p);
        let add = |p: &[&str]| s(p).zip(stream_metric("direct", p)).map(|(a, b)| a - b);
        let stream_cells = [
            s(&["streams_ok"]),
            s(&["streams_err"]),
            s(&["ttft", "p50_ms"]),
            s(&["ttft", "p99_ms"]),
            add(&["ttft", "p50_ms"]),
            add(&["ttft", "p99_ms"]),
            s(&["gap", "p50_ms"]),
            s(&["gap", "p99_ms"]),
            s(&["gap", "max_ms"]),
            s(&["multi_token_frames"]),
            s(&["stalls"]),
            add(&["ttft_steady", "p99_ms"]),
        ];
        tj.insert(
            "streams".into(),
            json!({
                "added_ttft_p50_ms": stream_cells[4], "added_ttft_p99_ms": stream_cells[5],
                "added_ttft_p99_after_ramp_ms": stream_cells[11],
                "raw": rows.get(l).and_then(|r| r.streams.clone()),
            }),
        );
        cells.extend(stream_cells);
        let row: Vec<String> = std::iter::once(l.clone())
            .chain(
                cells
                    .iter()
                    .map(|c| c.map(|x| format!("{x:.4}")).unwrap_or_default()),
            )
            .collect();
        let _ = writeln!(csv, "{}", row.join(","));
        if let Some(r) = rows.get(l) {
            tj.insert("steps".into(), json!(r.steps));
            tj.insert("rates".into(), json!(r.rates));
        }
        targets_json.insert(l.clone(), Value::Object(tj));
    }

    if !long_run.is_empty() {
        let _ = writeln!(md, "\n### Long run\n");
        for v in &long_run {
            let _ = writeln!(md, "- {v}");
        }
    }

    Ok(Report {
        markdown: md,
        csv,
        json: json!({"meta": meta, "targets": targets_json, "switchyard_checks": checks, "long_run": long_run,
                     "alternating_windows": crate::paired::to_json(&paired, P99_BUDGET_MS),
                     "alternating_stream_windows": crate::paired::to_json(&paired_streams, TTFT_BUDGET_MS)}),
    })
}

/// The median; of an even count, the lower middle value (the conservative one).
fn median_low(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[(v.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> String {
        [
            json!({"kind":"step","label":"direct","max_sustained_rps":20000.0}),
            json!({"kind":"step","label":"nginx","max_sustained_rps":10000.0}),
            json!({"kind":"step","label":"switchyard","max_sustained_rps":7000.0}),
            json!({"kind":"step","label":"switchyard","max_sustained_rps":12000.0}),
            json!({"kind":"step","label":"switchyard","max_sustained_rps":9500.0}),
            json!({"kind":"step","label":"litellm","max_sustained_rps":100.0}),
            json!({"kind":"rate","label":"direct","rate":2000.0,"error_rate":0.0,"latency":{"p50_ms":0.2,"p99_ms":0.5}}),
            json!({"kind":"rate","label":"switchyard","rate":2000.0,"error_rate":0.0,"latency":{"p50_ms":0.4,"p99_ms":0.9}}),
            json!({"kind":"rate","label":"litellm","rate":2000.0,"error_rate":0.5,"latency":{"p50_ms":900.0,"p99_ms":5000.0}}),
            json!({"kind":"rss","label":"switchyard","vmhwm_kb":20480}),
            json!({"kind":"rss_streams","label":"switchyard","vmhwm_kb":10240}),
            json!({"kind":"streams","label":"direct","concurrency":1000,"ttft":{"p50_ms":101.0,"p99_ms":104.0},"ttft_steady":{"p99_ms":103.0}}),
            json!({"kind":"streams","label":"switchyard","concurrency":1000,"ttft":{"p50_ms":102.0,"p99_ms":110.0},"ttft_steady":{"p99_ms":105.5}}),
        ]
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n")
    }

    #[test]
    fn ratios_added_latency_and_checks() {
        let r = build(&lines()).unwrap();
        let sy = &r.json["targets"]["switchyard"];
        assert_eq!(sy["x_nginx"], 0.95);
        assert_eq!(sy["throughput_ratio_to"]["litellm"], 95.0);
        let added = sy["latency_at_rate"]["2000"]["added_p99_ms"]
            .as_f64()
            .unwrap();
        assert!((added - 0.4).abs() < 1e-9);
        assert_eq!(sy["peak_rss_mb"], 20.0);
        assert_eq!(sy["streams_peak_rss_mb"], 10.0);
        // Added TTFT overall and for the streams started after the ramp, each against direct's.
        assert_eq!(sy["streams"]["added_ttft_p99_ms"], 6.0);
        assert_eq!(sy["streams"]["added_ttft_p99_after_ramp_ms"], 2.5);
        assert!(
            r.markdown.contains("| 1.00 | 6.00 | 2.50 |"),
            "{}",
            r.markdown
        );
        // A rate with errors is not reported as a latency.
        assert!(r.json["targets"]["litellm"]["latency_at_rate"]["2000"]["p99_ms"].is_null());
        let checks = r.json["switchyard_checks"].as_array().unwrap();
        let by_name = |n: &str| checks.iter().find(|c| c["check"] == n).unwrap()["met"].clone();
        assert_eq!(by_name("throughput ÷ nginx"), true);
        assert_eq!(by_name("throughput ÷ LiteLLM"), false);
        assert_eq!(by_name("added p99 @2000 req/s (ms)"), true);
        assert!(by_name("throughput ÷ Portkey").is_null());
        // A floor noisier than the budget gives no reading either way.
        let noisy = lines().replace(r#""p99_ms":0.5}"#, r#""p99_ms":2.7}"#);
        assert_ne!(noisy, lines());
        let r2 = build(&noisy).unwrap();
        let checks2 = r2.json["switchyard_checks"].as_array().unwrap();
        let p99 = checks2
            .iter()
            .find(|c| c["check"] == "added p99 @2000 req/s (ms)")
            .unwrap();
        assert!(p99["met"].is_null());
        assert!(r2
            .markdown
            .contains("| ≤ 0.5 | no evidence: direct's own p99 was 2.700 ms |"));
        // Rows come in the fixed order and the CSV has one line per target plus a header.
        assert_eq!(r.csv.lines().count(), 5);
        assert!(r.csv.lines().nth(1).unwrap().starts_with("direct,"));
        // Three ladders: the median is the table's figure, each one is shown beside it.
        assert!(r
            .markdown
            .contains("| switchyard | 9500 | 7000 / 12000 / 9500 |"));
        assert_eq!(sy["max_rps_each_ladder"], json!([7000.0, 12000.0, 9500.0]));
        assert_eq!(median_low(vec![3.0, 1.0]), Some(1.0));
        assert_eq!(median_low(vec![]), None);
    }

    #[test]
    fn interleaved_rounds_give_ratios_round_by_round() {
        // Two rounds; the machine slows in the second, and Switchyard's first ladder ran in
        // the quick round, nginx's second in the slow one.
        let text = [
            json!({"kind":"ladder_round","round":1}),
            json!({"kind":"step","label":"nginx","max_sustained_rps":10000.0}),
            json!({"kind":"step","label":"switchyard","max_sustained_rps":9500.0}),
            json!({"kind":"step","label":"litellm","max_sustained_rps":100.0}),
            json!({"kind":"ladder_round","round":2}),
            json!({"kind":"step","label":"litellm","max_sustained_rps":50.0}),
            json!({"kind":"step","label":"switchyard","max_sustained_rps":4000.0}),
            json!({"kind":"step","label":"nginx","max_sustained_rps":5000.0}),
        ]
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n");
        let r = build(&text).unwrap();
        let ng = &r.json["targets"]["nginx"];
        assert_eq!(ng["switchyard_over_target_by_round"]["1"], 0.95);
        assert_eq!(ng["switchyard_over_target_by_round"]["2"], 0.8);
        // Median of an even count: the lower one.
        assert_eq!(ng["switchyard_over_target_median_of_rounds"], 0.8);
        let ll = &r.json["targets"]["litellm"];
        assert_eq!(ll["switchyard_over_target_median_of_rounds"], 80.0);
        let checks = r.json["switchyard_checks"].as_array().unwrap();
        let by_name = |n: &str| checks.iter().find(|c| c["check"] == n).cloned().unwrap();
        assert_eq!(
            by_name("throughput ÷ nginx, median of rounds")["value"],
            0.8
        );
        assert_eq!(
            by_name("throughput ÷ nginx, median of rounds")["met"],
            false
        );
        assert_eq!(
            by_name("throughput ÷ LiteLLM, median of rounds")["met"],
            false
        );
        assert!(
            r.markdown.contains("| nginx | 0.95 | 0.80 | 0.80 |"),
            "{}",
            r.markdown
        );
        // Without round marks there are no per-round figures or checks.
        let r = build(&lines()).unwrap();
        assert!(!r.markdown.contains("round by round"));
        let checks = r.json["switchyard_checks"].as_array().unwrap();
        assert!(!checks
            .iter()
            .any(|c| c["check"].as_str().unwrap().contains("median of rounds")));
    }

    #[test]
    fn alternating_stream_windows_give_their_own_check() {
        let mut text = lines();
        for (label, p99, err) in [
            ("direct", 104.0, 0),
            ("switchyard", 104.5, 0),
            ("direct", 130.0, 0),
            ("switchyard", 133.0, 0),
            ("direct", 104.0, 0),
            ("switchyard", 104.2, 0),
            // A failed stream: the round is not a reading.
            ("direct", 104.0, 0),
            ("switchyard", 104.1, 3),
        ] {
            let w = json!({"kind":"streams","label":format!("paired-streams:{label}"),
                           "concurrency":1000,"streams_err":err,
                           "ttft":{"p50_ms":101.0,"p99_ms":p99}});
            text.push('\n');
            text.push_str(&w.to_string());
        }
        let r = build(&text).unwrap();
        // The windows stay out of the per-target streams row.
        assert_eq!(
            r.json["targets"]["switchyard"]["streams"]["added_ttft_p99_ms"],
            6.0
        );
        let checks = r.json["switchyard_checks"].as_array().unwrap();
        let alt = checks
            .iter()
            .find(|c| {
                c["check"]
                    .as_str()
                    .unwrap()
                    .starts_with("streams: added TTFT p99, alternating")
            })
            .unwrap();
        // Counted rounds add 0.5, 3.0 and 0.2 ms (a slow round counts: the floor's own TTFT is
        // ~100 ms upstream); the median is 0.5, but a failed stream fails the check.
        assert!((alt["value"].as_f64().unwrap() - 0.5).abs() < 1e-9, "{alt}");
        assert_eq!(alt["met"], false);
        let w = &r.json["alternating_stream_windows"]["targets"]["switchyard"];
        assert_eq!(w["quiet_rounds"], 3);
        assert_eq!(w["error_rounds"], 1);
        assert!(r
            .markdown
            .contains("1000 concurrent streams, in alternating windows"));
        // Without the failed round it is met.
        let ok = text.replace(r#""streams_err":3"#, r#""streams_err":0"#);
        let r = build(&ok).unwrap();
        let checks = r.json["switchyard_checks"].as_array().unwrap();
        let alt = checks
            .iter()
            .find(|c| {
                c["check"]
                    .as_str()
                    .unwrap()
                    .starts_with("streams: added TTFT p99, alternating")
            })
            .unwrap();
        assert_eq!(alt["met"], true, "{alt}");
    }

    #[test]
    fn alternating_windows_give_their_own_check() {
        let mut text = lines();
        for (label, p99) in [
            ("direct", 0.3),
            ("switchyard", 0.45),
            ("direct", 0.3),
            ("switchyard", 0.5),
            ("direct", 0.3),
            ("switchyard", 0.4),
        ] {
            let w = json!({"kind":"rate","label":format!("paired:{label}"),"rate":2000.0,
                           "error_rate":0.0,"latency":{"p50_ms":0.2,"p99_ms":p99}});
            text.push('\n');
            text.push_str(&w.to_string());
        }
        let r = build(&text).unwrap();
        // The windows stay out of the per-target rows (and their single 2,000 req/s reading).
        let sy = &r.json["targets"]["switchyard"];
        assert_eq!(sy["latency_at_rate"]["2000"]["p99_ms"], 0.9);
        let checks = r.json["switchyard_checks"].as_array().unwrap();
        let alt = checks
            .iter()
            .find(|c| c["check"].as_str().unwrap().contains("alternating"))
            .unwrap();
        assert_eq!(alt["met"], true);
        assert!((alt["value"].as_f64().unwrap() - 0.15).abs() < 1e-9);
        assert!(
            r.markdown.contains("in alternating windows"),
            "{}",
            r.markdown
        );
        assert_eq!(
            r.json["alternating_windows"]["targets"]["switchyard"]["quiet_rounds"],
            3
        );
    }
}
