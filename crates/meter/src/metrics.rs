//! Prometheus text exposition (format 0.0.4, <https://prometheus.io/docs/instrumenting/exposition_formats/>),
//! written by hand. `gen_ai_*` names follow the OpenTelemetry GenAI semantic conventions
//! (<https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/>) with dots as underscores
//! and the unit as a suffix; cost and energy have no standard names, so ours are `switchyard_*`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::LedgerRecord;

/// Distinct values kept per label before new ones are folded into [`OTHER`]: label values come
/// from config (routes, targets, classes), but a client can name a route that does not exist.
pub const MAX_VALUES_PER_LABEL: usize = 256;
pub const OTHER: &str = "_other";

// Bucket bounds advised by the GenAI semantic conventions.
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
// The gateway's own overhead is expected in the tens of microseconds to a few milliseconds.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,
];

#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn record(&mut self, bounds: &[f64], v: f64) {
        for (count, b) in self.counts.iter_mut().zip(bounds) {
            if v <= *b {
                *count += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug)]
enum Series {
    Counter(BTreeMap<Vec<Label>, f64>),
    Histogram(&'static [f64], BTreeMap<Vec<Label>, Histogram>),
}

/// A label value, shared by every series that carries it: a record looks its series up with
/// a borrowed key and allocates only for a series it has not seen before.
type Label = Arc<str>;

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: Series,
}

impl Family {
    fn counter(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Family {
        Family {
            name,
            help,
            labels,
            series: Series::Counter(BTreeMap::new()),
        }
    }

    fn histogram(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Family {
        Family {
            name,
            help,
            labels,
            series: Series::Histogram(buckets, BTreeMap::new()),
        }
    }

    fn add(&mut self, values: &[Label], v: f64) {
        if let Series::Counter(m) = &mut self.series {
            match m.get_mut(values) {
                Some(total) => *total += v,
                None => {
                    m.insert(values.to_vec(), v);
                }
            }
        }
    }

    fn observe(&mut self, values: &[Label], v: f64) {
        if !v.is_finite() {
            return;
        }
        if let Series::Histogram(bounds, m) = &mut self.series {
            // One lookup for a known series; a new one is built, filled, then inserted.
            match m.get_mut(values) {
                Some(h) => h.record(bounds, v),
                None => {
                    let mut h = Histogram {
                        counts: vec![0; bounds.len()],
                        sum: 0.0,
                        count: 0,
                    };
                    h.record(bounds, v);
                    m.insert(values.to_vec(), h);
                }
            }
        }
    }

    fn render(&self, out: &mut String) {
        let kind = match self.series {
            Series::Counter(_) => "counter",
            Series::Histogram(..) => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
        match &self.series {
            Series::Counter(m) => {
                for (values, v) in m {
                    sample(out, self.name, "", self.labels, values, None, *v);
                }
            }
            Series::Histogram(bounds, m) => {
                for (values, h) in m {
                    for (b, c) in bounds.iter().zip(&h.counts) {
                        let le = format_value(*b);
                        sample(
                            out,
                            self.name,
                            "_bucket",
                            self.labels,
                            values,
                            Some(&le),
                            *c as f64,
                        );
                    }
                    sample(
                        out,
                        self.name,
                        "_bucket",
                        self.labels,
                        values,
                        Some("+Inf"),
                        h.count as f64,
                    );
                    sample(out, self.name, "_sum", self.labels, values, None, h.sum);
                    sample(
                        out,
                        self.name,
                        "_count",
                        self.labels,
                        values,
                        None,
                        h.count as f64,
                    );
                }
            }
        }
    }
}

/// One sample line; labels with an empty value are left out (Prometheus treats them as absent).
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[&str],
    values: &[Label],
    le: Option<&str>,
    v: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    let mut first = true;
    let pairs = labels
        .iter()
        .zip(values)
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (*k, &**v))
        .chain(le.map(|l| ("le", l)));
    for (k, v) in pairs {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(v, out);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(v));
    out.push('\n');
}

/// Label values escape `\`, `"` and newline.
pub fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

const TOKEN_USAGE: usize = 0;
const CLIENT_DURATION: usize = 1;
const SERVER_DURATION: usize = 2;
const TTFT: usize = 3;
const TPOT: usize = 4;
const REQUESTS: usize = 5;
const COST: usize = 6;
const COST_UNKNOWN: usize = 7;
const ENERGY: usize = 8;
const CARBON: usize = 9;
const OVERHEAD: usize = 10;
const FALLBACKS: usize = 11;
const TOKENS_ESTIMATED: usize = 12;

fn families() -> Vec<Family> {
    vec![
        Family::histogram(
            "gen_ai_client_token_usage",
            "Tokens used per request to a provider (gen_ai.client.token.usage).",
            &["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_token_type"],
            TOKEN_BUCKETS,
        ),
        Family::histogram(
            "gen_ai_client_operation_duration_seconds",
            "Time waiting on the provider in the attempt that served (gen_ai.client.operation.duration).",
            &["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "error_type"],
            DURATION_BUCKETS,
        ),
        Family::histogram(
            "gen_ai_server_request_duration_seconds",
            "Whole request as the gateway served it, accept to last byte (gen_ai.server.request.duration).",
            &["gen_ai_operation_name", "gen_ai_request_model", "error_type"],
            DURATION_BUCKETS,
        ),
        Family::histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first content byte sent to the client (gen_ai.server.time_to_first_token).",
            &["gen_ai_operation_name", "gen_ai_request_model"],
            TTFT_BUCKETS,
        ),
        Family::histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "(duration - TTFT) / (output tokens - 1) (gen_ai.server.time_per_output_token).",
            &["gen_ai_operation_name", "gen_ai_request_model"],
            TPOT_BUCKETS,
        ),
        Family::counter(
            "switchyard_requests_total",
            "Requests finished, by route, serving target, class and HTTP status.",
            &["route", "target", "class", "status"],
        ),
        Family::counter(
            "switchyard_cost_usd_total",
            "USD spent on priced requests.",
            &["route", "target", "class"],
        ),
        Family::counter(
            "switchyard_cost_unknown_requests_total",
            "Requests whose model has no price (cost unknown, not zero).",
            &["route", "target"],
        ),
        Family::counter(
            "switchyard_energy_wh_total",
            "Energy of requests with a known figure, Wh, by the method that produced it.",
            &["target", "method"],
        ),
        Family::counter(
            "switchyard_carbon_grams_total",
            "Emissions of requests with known energy and grid intensity, gCO2e.",
            &["target"],
        ),
        Family::histogram(
            "switchyard_gateway_overhead_seconds",
            "Time the gateway itself added to a request.",
            &["route"],
            OVERHEAD_BUCKETS,
        ),
        Family::counter(
            "switchyard_fallbacks_total",
            "Attempts that moved to another target.",
            &["route"],
        ),
        Family::counter(
            "switchyard_tokens_estimated_total",
            "Requests whose token counts came from our tokenizer because the provider reported none.",
            &["route", "target"],
        ),
    ]
}

#[derive(Debug)]
struct State {
    families: Vec<Family>,
    // Fx, not SipHash: looked up seven times per record, and each label's set is capped
    // (MAX_VALUES_PER_LABEL), so a flood of crafted values cannot grow a bucket chain.
    seen: FxHashMap<&'static str, FxHashSet<Label>>,
    /// Values the gateway itself names (operations, energy methods, token types, statuses):
    /// a fixed handful, so never folded.
    fixed: FxHashSet<Label>,
    statuses: FxHashMap<u16, Label>,
    empty: Label,
    other: Label,
}

impl State {
    fn new() -> State {
        State {
            families: families(),
            seen: FxHashMap::default(),
            fixed: FxHashSet::default(),
            statuses: FxHashMap::default(),
            empty: Label::from(""),
            other: Label::from(OTHER),
        }
    }

    /// The value to use for a label, folding new values into [`OTHER`] once a label has many.
    fn bound(&mut self, label: &'static str, v: Option<&str>) -> Label {
        let Some(v) = v.filter(|v| !v.is_empty()) else {
            return self.empty.clone();
        };
        let seen = self.seen.entry(label).or_default();
        if let Some(known) = seen.get(v) {
            known.clone()
        } else if seen.len() < MAX_VALUES_PER_LABEL {
            let value = Label::from(v);
            seen.insert(value.clone());
            value
        } else {
            self.other.clone()
        }
    }

    fn fixed(&mut self, v: &str) -> Label {
        if let Some(known) = self.fixed.get(v) {
            return known.clone();
        }
        let value = Label::from(v);
        self.fixed.insert(value.clone());
        value
    }

    fn status(&mut self, status: u16) -> Label {
        self.statuses
            .entry(status)
            .or_insert_with(|| Label::from(status.to_string()))
            .clone()
    }
}

/// All meter metrics. The writer updates them; a scrape renders them.
#[derive(Debug)]
pub struct Metrics {
    state: Mutex<State>,
    pub records_written: AtomicU64,
    pub records_dropped: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            state: Mutex::new(State::new()),
            records_written: AtomicU64::new(0),
            records_dropped: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Adds one finished request.
    pub fn observe(&self, r: &LedgerRecord) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let op = s.fixed(&r.operation);
        let route = s.bound("route", Some(&r.route));
        let target = s.bound("target", r.target.as_deref());
        let class = s.bound("class", r.class.as_deref());
        let kind = s.bound("provider_kind", r.provider_kind.as_deref());
        let model = s.bound("model", r.model.as_deref());
        let error = s.bound("error_type", r.error_type.as_deref());
        let status = s.status(r.status);

        // Token usage is a provider figure: none for requests that never reached one or got
        // nothing back.
        if r.target.is_some() && (r.input_tokens > 0 || r.output_tokens > 0) {
            for (t, n) in [("input", r.input_tokens), ("output", r.output_tokens)] {
                let t = s.fixed(t);
                let labels = [op.clone(), kind.clone(), model.clone(), t];
                s.families[TOKEN_USAGE].observe(&labels, n as f64);
            }
        }
        let method = r.energy_wh.is_some().then(|| s.fixed(&r.energy_method));
        let f = &mut s.families;
        if let Some(ms) = r.upstream_latency_ms {
            let labels = [op.clone(), kind.clone(), model.clone(), error.clone()];
            f[CLIENT_DURATION].observe(&labels, ms / 1000.0);
        }
        f[SERVER_DURATION].observe(
            &[op.clone(), route.clone(), error.clone()],
            r.latency_ms / 1000.0,
        );
        if let Some(ttft) = r.ttft_ms {
            f[TTFT].observe(&[op.clone(), route.clone()], ttft / 1000.0);
            if let Some(tpot) = time_per_output_token_s(r.latency_ms, ttft, r.output_tokens) {
                f[TPOT].observe(&[op.clone(), route.clone()], tpot);
            }
        }
        f[REQUESTS].add(&[route.clone(), target.clone(), class.clone(), status], 1.0);
        match r.cost_usd {
            Some(c) => f[COST].add(&[route.clone(), target.clone(), class], c),
            None => f[COST_UNKNOWN].add(&[route.clone(), target.clone()], 1.0),
        }
        if let (Some(wh), Some(method)) = (r.energy_wh, method) {
            f[ENERGY].add(&[target.clone(), method], wh);
        }
        if let Some(g) = r.carbon_g {
            f[CARBON].add(std::slice::from_ref(&target), g);
        }
        if let Some(us) = r.overhead_us {
            f[OVERHEAD].observe(std::slice::from_ref(&route), us / 1e6);
        }
        if r.fallbacks > 0 {
            f[FALLBACKS].add(std::slice::from_ref(&route), f64::from(r.fallbacks));
        }
        if r.tokens_estimated {
            f[TOKENS_ESTIMATED].add(&[route, target], 1.0);
        }
    }

    /// Writes every family, then the ledger queue figures.
    pub fn render(&self, queue_depth: usize, out: &mut String) {
        {
            let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for f in &s.families {
                f.render(out);
            }
        }
        let plain = |out: &mut String, name: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                format_value(v)
            );
        };
        plain(
            out,
            "switchyard_ledger_queue_depth",
            "gauge",
            "Records waiting to be written to the ledger.",
            queue_depth as f64,
        );
        plain(
            out,
            "switchyard_ledger_records_written_total",
            "counter",
            "Records written to the ledger.",
            self.records_written.load(Ordering::Relaxed) as f64,
        );
        plain(
            out,
            "switchyard_ledger_records_dropped_total",
            "counter",
            "Records lost: the writer was gone or a batch failed to write.",
            self.records_dropped.load(Ordering::Relaxed) as f64,
        );
    }
}

/// `(duration − TTFT) / (output tokens − 1)`, seconds; none for fewer than two output tokens.
pub fn time_per_output_token_s(latency_ms: f64, ttft_ms: f64, output_tokens: u64) -> Option<f64> {
    (output_tokens > 1 && latency_ms >= ttft_ms)
        .then(|| (latency_ms - ttft_ms) / 1000.0 / (output_tokens - 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(route: &str) -> LedgerRecord {
        LedgerRecord {
            id: "x".into(),
            operation: "chat".into(),
            route: route.into(),
            class: Some("code".into()),
            provider_kind: Some("openai".into()),
            target: Some("a/m1".into()),
            model: Some("m1".into()),
            status: 200,
            input_tokens: 10,
            output_tokens: 11,
            cost_usd: Some(0.5),
            ttft_ms: Some(100.0),
            latency_ms: 1100.0,
            upstream_latency_ms: Some(1000.0),
            overhead_us: Some(150.0),
            fallbacks: 1,
            energy_wh: Some(0.25),
            energy_method: "estimated-power-time".into(),
            carbon_g: Some(0.1),
            ..Default::default()
        }
    }

    type Sample = (String, Vec<(String, String)>, f64);

    /// Parses a label block `k="v",...` honouring escapes; returns the pairs.
    fn parse_labels(s: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut chars = s.chars().peekable();
        loop {
            let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{s}"
            );
            assert_eq!(chars.next(), Some('='));
            assert_eq!(chars.next(), Some('"'));
            let mut v = String::new();
            loop {
                match chars.next().expect("unterminated label value") {
                    '\\' => match chars.next() {
                        Some('\\') => v.push('\\'),
                        Some('"') => v.push('"'),
                        Some('n') => v.push('\n'),
                        other => panic!("bad escape {other:?} in {s}"),
                    },
                    '"' => break,
                    c => v.push(c),
                }
            }
            out.push((name, v));
            match chars.next() {
                Some(',') => continue,
                None => return out,
                other => panic!("unexpected {other:?} in {s}"),
            }
        }
    }

    /// Every non-comment line is `name{labels} value` with a float value; returns the samples.
    fn parse(text: &str) -> Vec<Sample> {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                continue;
            }
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "stray line {line:?}"
            );
            let (head, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}').unwrap())),
                None => (head, Vec::new()),
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{line}"
            );
            samples.push((name.to_string(), labels, value));
        }
        samples
    }

    fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
            .sum()
    }

    #[test]
    fn exposition_parses_and_carries_the_figures() {
        let m = Metrics::default();
        m.observe(&record("chat"));
        let mut nasty = record("we\"ird\\route\nx");
        nasty.cost_usd = None;
        nasty.error_type = Some("timeout".into());
        m.observe(&nasty);
        m.records_written.store(2, Ordering::Relaxed);
        let mut out = String::new();
        m.render(3, &mut out);
        let s = parse(&out);

        assert_eq!(
            value(
                &s,
                "switchyard_requests_total",
                &[("route", "chat"), ("status", "200")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "switchyard_requests_total",
                &[("route", "we\"ird\\route\nx")]
            ),
            1.0
        );
        assert_eq!(value(&s, "switchyard_cost_usd_total", &[]), 0.5);
        assert_eq!(
            value(
                &s,
                "switchyard_cost_unknown_requests_total",
                &[("route", "we\"ird\\route\nx")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "switchyard_energy_wh_total",
                &[("method", "estimated-power-time")]
            ),
            0.5
        );
        assert_eq!(value(&s, "switchyard_fallbacks_total", &[]), 2.0);
        assert_eq!(
            value(
                &s,
                "gen_ai_client_token_usage_sum",
                &[
                    ("gen_ai_token_type", "output"),
                    ("gen_ai_request_model", "m1")
                ]
            ),
            22.0
        );
        assert_eq!(
            value(
                &s,
                "gen_ai_client_token_usage_count",
                &[("gen_ai_token_type", "input")]
            ),
            2.0
        );
        // 10 input tokens fall in the le=16 bucket, not le=4.
        assert_eq!(
            value(
                &s,
                "gen_ai_client_token_usage_bucket",
                &[("gen_ai_token_type", "input"), ("le", "16")]
            ),
            2.0
        );
        assert_eq!(
            value(
                &s,
                "gen_ai_client_token_usage_bucket",
                &[("gen_ai_token_type", "input"), ("le", "4")]
            ),
            0.0
        );
        // (1.1 s − 0.1 s) / (11 − 1) tokens = 0.1 s per token.
        assert_eq!(
            value(
                &s,
                "gen_ai_server_time_per_output_token_seconds_sum",
                &[("gen_ai_request_model", "chat")]
            ),
            0.1
        );
        assert_eq!(
            value(
                &s,
                "gen_ai_server_request_duration_seconds_count",
                &[("error_type", "timeout")]
            ),
            1.0
        );
        assert_eq!(value(&s, "switchyard_ledger_queue_depth", &[]), 3.0);
        assert_eq!(
            value(&s, "switchyard_ledger_records_written_total", &[]),
            2.0
        );
        assert_eq!(
            value(&s, "switchyard_ledger_records_dropped_total", &[]),
            0.0
        );
        // A successful request has no error_type label at all.
        assert!(s
            .iter()
            .filter(|(n, ..)| n == "gen_ai_server_request_duration_seconds_count")
            .any(|(_, l, _)| l.iter().all(|(k, _)| k != "error_type")));
    }

    #[test]
    fn label_values_are_bounded() {
        let m = Metrics::default();
        for i in 0..(MAX_VALUES_PER_LABEL + 10) {
            m.observe(&record(&format!("route{i}")));
        }
        let mut out = String::new();
        m.render(0, &mut out);
        let s = parse(&out);
        assert_eq!(
            value(&s, "switchyard_requests_total", &[("route", OTHER)]),
            10.0
        );
        let routes: std::collections::HashSet<&str> = s
            .iter()
            .filter(|(n, ..)| n == "switchyard_requests_total")
            .flat_map(|(_, l, _)| {
                l.iter()
                    .filter(|(k, _)| k == "route")
                    .map(|(_, v)| v.as_str())
            })
            .collect();
        assert_eq!(routes.len(), MAX_VALUES_PER_LABEL + 1);
    }

    #[test]
    fn time_per_output_token_needs_two_tokens() {
        assert_eq!(time_per_output_token_s(1000.0, 100.0, 1), None);
        assert_eq!(time_per_output_token_s(1000.0, 100.0, 10), Some(0.1));
    }
}
