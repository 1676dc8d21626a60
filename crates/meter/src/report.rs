//! The `switchyard usage` report: ledger rows grouped and summed, with percentiles computed
//! here (SQLite has none), rendered as a table, JSON or CSV.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::ledger::SqliteLedger;
use crate::{LedgerRecord, MeterError};

/// What to group ledger rows by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The model the target was asked for.
    Model,
    /// The target id (`provider/model`).
    Target,
    /// The public model name the client asked for.
    Route,
    Class,
    /// Virtual key name.
    Key,
    Team,
    /// Provider instance name.
    Provider,
}

/// Shown for rows whose group field is empty (e.g. no class assigned).
pub const NONE_GROUP: &str = "-";

/// One group's totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    pub group: String,
    pub requests: u64,
    /// Rows with an HTTP status ≥ 400 or an `error_type` (a stream that failed after its start).
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub reasoning_tokens: u64,
    /// Sum over priced rows; `None` when no row was priced.
    pub cost_usd: Option<f64>,
    /// Rows whose model had no price (not included in `cost_usd`).
    pub cost_unknown_rows: u64,
    /// Rows whose token counts are our estimate.
    pub estimated_token_rows: u64,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// Sum over rows with known energy; `None` when none had any.
    pub energy_wh: Option<f64>,
    pub energy_unknown_rows: u64,
    pub carbon_g: Option<f64>,
}

/// Reads the ledger (rows started within `since` of now, or all) and groups it.
pub fn usage_report(
    ledger_path: &Path,
    since: Option<Duration>,
    by: GroupBy,
) -> Result<Vec<UsageRow>, MeterError> {
    let ledger = SqliteLedger::open_read_only(ledger_path)?;
    let since_ms = match since {
        Some(d) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            i64::try_from(now.saturating_sub(d).as_millis()).unwrap_or(i64::MAX)
        }
        None => i64::MIN,
    };
    let mut summary = Summary::new(by);
    ledger.for_each_since(since_ms, |r| summary.add(&r))?;
    Ok(summary.finish())
}

fn group_of(r: &LedgerRecord, by: GroupBy) -> &str {
    let v = match by {
        GroupBy::Model => r.model.as_deref(),
        GroupBy::Target => r.target.as_deref(),
        GroupBy::Route => Some(&*r.route),
        GroupBy::Class => r.class.as_deref(),
        GroupBy::Key => r.key.as_deref(),
        GroupBy::Team => r.team.as_deref(),
        GroupBy::Provider => r.provider.as_deref(),
    };
    v.filter(|v| !v.is_empty()).unwrap_or(NONE_GROUP)
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

fn add_known(total: &mut Option<f64>, v: Option<f64>) {
    if let Some(v) = v {
        *total = Some(total.unwrap_or(0.0) + v);
    }
}

/// Running totals of one group; latencies are kept for the percentiles.
struct Acc {
    row: UsageRow,
    ttft: Vec<f64>,
    latency: Vec<f64>,
}

/// Groups records one at a time, so a report need not hold the ledger's rows in memory.
pub struct Summary {
    by: GroupBy,
    groups: BTreeMap<String, Acc>,
}

impl Summary {
    pub fn new(by: GroupBy) -> Summary {
        Summary {
            by,
            groups: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, r: &LedgerRecord) {
        let group = group_of(r, self.by);
        if !self.groups.contains_key(group) {
            let acc = Acc {
                row: empty_row(group),
                ttft: Vec::new(),
                latency: Vec::new(),
            };
            self.groups.insert(group.to_string(), acc);
        }
        let Some(acc) = self.groups.get_mut(group) else {
            return;
        };
        let row = &mut acc.row;
        row.requests += 1;
        row.errors += u64::from(r.status >= 400 || r.error_type.is_some());
        row.input_tokens += r.input_tokens;
        row.output_tokens += r.output_tokens;
        row.cached_input_tokens += r.cached_input_tokens;
        row.cache_creation_input_tokens += r.cache_creation_input_tokens;
        row.reasoning_tokens += r.reasoning_tokens;
        add_known(&mut row.cost_usd, r.cost_usd);
        row.cost_unknown_rows += u64::from(r.cost_usd.is_none());
        row.estimated_token_rows += u64::from(r.tokens_estimated);
        add_known(&mut row.energy_wh, r.energy_wh);
        row.energy_unknown_rows += u64::from(r.energy_wh.is_none());
        add_known(&mut row.carbon_g, r.carbon_g);
        acc.ttft.extend(r.ttft_ms);
        acc.latency.push(r.latency_ms);
    }

    /// The rows, by request count (most first), then by group name.
    pub fn finish(self) -> Vec<UsageRow> {
        let mut rows: Vec<UsageRow> = self
            .groups
            .into_values()
            .map(|mut acc| {
                acc.row.ttft_p50_ms = percentile(&mut acc.ttft, 50.0);
                acc.row.ttft_p95_ms = percentile(&mut acc.ttft, 95.0);
                acc.row.latency_p50_ms = percentile(&mut acc.latency, 50.0);
                acc.row.latency_p95_ms = percentile(&mut acc.latency, 95.0);
                acc.row
            })
            .collect();
        rows.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| a.group.cmp(&b.group))
        });
        rows
    }
}

fn empty_row(group: &str) -> UsageRow {
    UsageRow {
        group: group.to_string(),
        requests: 0,
        errors: 0,
        input_tokens: 0,
        output_tokens: 0,
        cached_input_tokens: 0,
        cache_creation_input_tokens: 0,
        reasoning_tokens: 0,
        cost_usd: None,
        cost_unknown_rows: 0,
        estimated_token_rows: 0,
        ttft_p50_ms: None,
        ttft_p95_ms: None,
        latency_p50_ms: None,
        latency_p95_ms: None,
        energy_wh: None,
        energy_unknown_rows: 0,
        carbon_g: None,
    }
}

/// Groups records; rows come out by request count, most first, then by group name.
pub fn summarize(records: &[LedgerRecord], by: GroupBy) -> Vec<UsageRow> {
    let mut s = Summary::new(by);
    records.iter().for_each(|r| s.add(r));
    s.finish()
}

const HEADERS: [&str; 18] = [
    "group",
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_unknown_rows",
    "estimated_token_rows",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "energy_wh",
    "energy_unknown_rows",
    "carbon_g",
];

/// Cells of a row; `missing` stands for a figure nobody knows.
fn cells(r: &UsageRow, missing: &str) -> Vec<String> {
    let opt = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => missing.to_string(),
    };
    vec![
        r.group.clone(),
        r.requests.to_string(),
        r.errors.to_string(),
        r.input_tokens.to_string(),
        r.output_tokens.to_string(),
        r.cached_input_tokens.to_string(),
        r.cache_creation_input_tokens.to_string(),
        r.reasoning_tokens.to_string(),
        opt(r.cost_usd, 6),
        r.cost_unknown_rows.to_string(),
        r.estimated_token_rows.to_string(),
        opt(r.ttft_p50_ms, 1),
        opt(r.ttft_p95_ms, 1),
        opt(r.latency_p50_ms, 1),
        opt(r.latency_p95_ms, 1),
        opt(r.energy_wh, 6),
        r.energy_unknown_rows.to_string(),
        opt(r.carbon_g, 6),
    ]
}

/// An aligned text table; unknown cost, energy or carbon shows as `unknown`, not 0.
pub fn render_table(rows: &[UsageRow]) -> String {
    let short = [
        "GROUP", "REQS", "ERRS", "IN_TOK", "OUT_TOK", "CACHED", "CACHE_WR", "REASON", "COST_USD",
        "COST_UNK", "EST_TOK", "TTFT_P50", "TTFT_P95", "LAT_P50", "LAT_P95", "WH", "WH_UNK",
        "CO2E_G",
    ];
    let table: Vec<Vec<String>> = std::iter::once(short.iter().map(|s| s.to_string()).collect())
        .chain(rows.iter().map(|r| cells(r, "unknown")))
        .collect();
    let widths: Vec<usize> = (0..short.len())
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        for (c, cell) in row.iter().enumerate() {
            let w = widths[c];
            let _ = if c == 0 {
                write!(out, "{cell:<w$}")
            } else {
                write!(out, "  {cell:>w$}")
            };
        }
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no requests in the ledger for this period)\n");
    }
    out
}

/// A JSON array of rows; unknown figures are `null`.
pub fn render_json(rows: &[UsageRow]) -> String {
    let mut s = serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

/// CSV (RFC 4180) with a header line; unknown figures are empty cells.
pub fn render_csv(rows: &[UsageRow]) -> String {
    let mut out = String::new();
    out.push_str(&HEADERS.join(","));
    out.push_str("\r\n");
    for r in rows {
        let line: Vec<String> = cells(r, "").into_iter().map(|c| csv_field(&c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;

    fn rec(i: i64, model: &str, latency: f64) -> LedgerRecord {
        LedgerRecord {
            id: format!("r{i}"),
            started_at_ms: 1_000 + i,
            finished_at_ms: 2_000 + i,
            operation: "chat".into(),
            route: "chat".into(),
            model: Some(model.into()),
            target: Some(format!("p/{model}").into()),
            status: 200,
            input_tokens: 10,
            output_tokens: 5,
            cost_usd: Some(0.001),
            latency_ms: latency,
            ttft_ms: Some(latency / 10.0),
            energy_method: "unknown".into(),
            ..Default::default()
        }
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 95.0), Some(95.0));
        assert_eq!(percentile(&mut [7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn report_groups_sums_and_takes_percentiles_from_a_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let mut ledger = SqliteLedger::open(&path).unwrap();
        // Model a: latencies 1..=20 ms, one error, one row estimated; model b: unpriced.
        let mut rows: Vec<LedgerRecord> = (1..=20).map(|i| rec(i, "a", i as f64)).collect();
        rows[0].status = 502;
        rows[1].tokens_estimated = true;
        rows[2].energy_wh = Some(0.5);
        rows[2].carbon_g = Some(0.2);
        for i in 0..3 {
            let mut r = rec(100 + i, "b", 50.0);
            r.cost_usd = None;
            r.ttft_ms = None;
            r.class = Some("code".into());
            rows.push(r);
        }
        ledger.insert_batch(&rows).unwrap();
        drop(ledger);

        let report = usage_report(&path, None, GroupBy::Model).unwrap();
        assert_eq!(report.len(), 2);
        let a = &report[0];
        assert_eq!((a.group.as_str(), a.requests, a.errors), ("a", 20, 1));
        assert_eq!((a.input_tokens, a.output_tokens), (200, 100));
        assert!((a.cost_usd.unwrap() - 0.02).abs() < 1e-12);
        assert_eq!(a.cost_unknown_rows, 0);
        assert_eq!(a.estimated_token_rows, 1);
        assert_eq!(a.latency_p50_ms, Some(10.0));
        assert_eq!(a.latency_p95_ms, Some(19.0));
        assert_eq!(a.ttft_p95_ms, Some(1.9));
        assert_eq!(
            (a.energy_wh, a.energy_unknown_rows, a.carbon_g),
            (Some(0.5), 19, Some(0.2))
        );
        let b = &report[1];
        assert_eq!(
            (
                b.group.as_str(),
                b.requests,
                b.cost_usd,
                b.cost_unknown_rows
            ),
            ("b", 3, None, 3)
        );
        assert_eq!((b.ttft_p50_ms, b.energy_wh), (None, None));

        let by_class = usage_report(&path, None, GroupBy::Class).unwrap();
        let groups: Vec<(&str, u64)> = by_class
            .iter()
            .map(|r| (r.group.as_str(), r.requests))
            .collect();
        assert_eq!(groups, [(NONE_GROUP, 20), ("code", 3)]);

        // Rows started in 1970 are far outside the last hour.
        assert!(
            usage_report(&path, Some(Duration::from_secs(3600)), GroupBy::Model)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn renderers_show_unknown_rather_than_zero() {
        let mut r = rec(1, "we,ird \"model\"", 10.0);
        r.cost_usd = None;
        let rows = summarize(&[r], GroupBy::Model);
        let table = render_table(&rows);
        let line = table.lines().nth(1).unwrap();
        assert!(line.split_whitespace().nth(9).is_some(), "{table}");
        assert!(line.contains("unknown"), "{table}");
        assert!(!line.contains("0.000000"), "{table}");

        let json: serde_json::Value = serde_json::from_str(&render_json(&rows)).unwrap();
        assert_eq!(json[0]["cost_usd"], serde_json::Value::Null);
        assert_eq!(json[0]["group"], "we,ird \"model\"");

        let csv = render_csv(&rows);
        let mut lines = csv.split("\r\n");
        assert_eq!(lines.next().unwrap().split(',').count(), 18);
        let data = lines.next().unwrap();
        assert!(data.starts_with("\"we,ird \"\"model\"\"\",1,0,"), "{data}");
        // group (with one quoted comma) + 17 more fields; cost is an empty cell.
        assert_eq!(data.split(',').count(), 19);
        assert!(data.contains(",0,10,5,0,0,0,,1,"), "{data}");
    }

    #[test]
    fn missing_ledger_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(usage_report(&dir.path().join("none.sqlite"), None, GroupBy::Model).is_err());
    }
}
