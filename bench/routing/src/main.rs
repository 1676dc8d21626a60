//! Routing benchmarks (results and commands: docs/routing-classes.md).
//!
//! `routing-bench mmlu`: the learned strong/weak router on the MMLU outcome tables, trained on some
//! subjects and scored on the held-out ones (k folds by subject), beside a random router as a
//! check of the metric code. Prints APGR, CPT(50%), CPT(80%) and cost/quality points; writes JSON.
//!
//! `routing-bench latency`: the classifier's added latency per request (p50/p90/p99) on this CPU,
//! for a prompt mix of rule hits, short chat, MMLU-sized questions and long documents, per token
//! budget and weight format of MiniLM's layers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use switchyard_api::openai::{ChatRequest, Message};
use switchyard_classify::{
    default_model_dir, ClassesConfig, ClassifiedBy, Classifier, Embedder, Weights,
};
use switchyard_learn::features::prompt_features;
use switchyard_learn::{
    cross_validate, cross_validate_with, embed_prompts, evaluate_scores, knn_scores, load_outcomes,
    Metrics, Outcome, TrainOptions,
};

/// Candidate L2 strengths for `--l2 nested`, fixed up front.
const L2_GRID: [f64; 4] = [0.1, 1.0, 10.0, 100.0];

fn main() {
    if let Err(e) = run() {
        eprintln!("routing-bench: {e}");
        std::process::exit(1);
    }
}

struct Args(Vec<String>);

impl Args {
    fn get(&self, flag: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }
    fn parse<T: std::str::FromStr>(&self, flag: &str, default: T) -> Result<T, String> {
        match self.get(flag) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{flag}: cannot parse \"{v}\"")),
        }
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run() -> Result<(), String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mode = argv.first().cloned().unwrap_or_default();
    let args = Args(argv);
    match mode.as_str() {
        "mmlu" => mmlu(&args),
        "latency" => latency(&args),
        _ => Err("usage: routing-bench mmlu [--data DIR] [--folds K] [--l2 X|nested] [--model logistic|knn|length|subject-rate-bound|subject-rate-then-within] [--k N] [--features emb|hand|emb+hand] [--label strong_needed|weak_wrong|gain] [--max-tokens N] [--out FILE] [--cache FILE]\n       routing-bench latency [--config FILE] [--requests N] [--max-tokens N,...] [--weights f32|q8_0|q8_0-vnni|i8|i8-w7,...] [--busy-threads N] [--split on,off] [--out FILE]".into()),
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("never".into(), |x| format!("{:.1}%", x * 100.0))
}

fn print_metrics(name: &str, m: &Metrics) {
    println!(
        "{name:<28} n={:<6} weak={:.3} strong={:.3} APGR={:.3} CPT(50%)={} CPT(80%)={}",
        m.n,
        m.weak_quality,
        m.strong_quality,
        m.apgr,
        fmt_opt(m.cpt50),
        fmt_opt(m.cpt80)
    );
}

/// Deterministic uniform numbers in [0, 1) (xorshift64*), for the random router.
fn uniform(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.max(1);
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32) / (1u64 << 24) as f32
        })
        .collect()
}

fn mmlu(args: &Args) -> Result<(), String> {
    let root = repo_root();
    let data = args
        .get("--data")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/data/routing/mmlu"));
    let folds: usize = args.parse("--folds", 4)?;
    let max_tokens: usize = args.parse("--max-tokens", 128)?;
    let cache = args
        .get("--cache")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(format!("bench/.work/mmlu-minilm-{max_tokens}.emb")));
    let out = args
        .get("--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("bench/out/routing-mmlu.json"));

    let items = load_outcomes(&data)?;
    println!(
        "{} prompts from {} (contaminated prompts dropped)",
        items.len(),
        data.display()
    );
    let t = Instant::now();
    let prompts: Vec<&str> = items.iter().map(|o| o.prompt.as_str()).collect();
    let embs = embed_prompts(&prompts, max_tokens, None, Some(&cache))?;
    println!(
        "embeddings ready in {:.1} s (cache {})",
        t.elapsed().as_secs_f64(),
        cache.display()
    );

    let label: switchyard_learn::Label = args.get("--label").unwrap_or("strong_needed").parse()?;
    let features = args.get("--features").unwrap_or("emb").to_string();
    let model = args.get("--model").unwrap_or("logistic").to_string();
    let k: usize = args.parse("--k", 50)?;
    // "nested": l2 picked per outer fold by an inner cross-validation over the training
    // subjects only (the held-out fold never informs the choice).
    let nested = args.get("--l2") == Some("nested");
    let l2: f64 = if nested {
        1.0
    } else {
        args.parse("--l2", 1.0)?
    };
    let xs: Vec<Vec<f32>> = items
        .iter()
        .zip(&embs)
        .map(|(o, e)| match features.as_str() {
            "hand" => Ok(prompt_features(&o.prompt)),
            "emb+hand" => Ok(e
                .iter()
                .copied()
                .chain(prompt_features(&o.prompt))
                .collect()),
            "emb" => Ok(e.clone()),
            other => Err(format!(
                "--features {other}: expected emb, hand or emb+hand"
            )),
        })
        .collect::<Result<_, String>>()?;
    let opts = TrainOptions {
        label,
        l2,
        max_tokens,
        ..Default::default()
    };
    let ratio = switchyard_learn::metrics::DEFAULT_WEAK_COST_RATIO;
    let t = Instant::now();
    let mut chosen_l2 = Vec::new();
    let cv = match model.as_str() {
        "logistic" if nested => cross_validate_with(&items, folds, ratio, |train, test| {
            let sub_items: Vec<Outcome> = train.iter().map(|&i| items[i].clone()).collect();
            let sub_xs: Vec<Vec<f32>> = train.iter().map(|&i| xs[i].clone()).collect();
            let mut best = (f64::NEG_INFINITY, 1.0);
            for cand in L2_GRID {
                let o = TrainOptions {
                    l2: cand,
                    ..opts.clone()
                };
                let inner = cross_validate(&sub_items, &sub_xs, 3, &o, ratio)?;
                println!("  inner l2={cand:<6} APGR {:.3}", inner.pooled.apgr);
                if inner.pooled.apgr > best.0 {
                    best = (inner.pooled.apgr, cand);
                }
            }
            chosen_l2.push(best.1);
            let o = TrainOptions {
                l2: best.1,
                ..opts.clone()
            };
            let router = switchyard_learn::fit(&sub_items, &sub_xs, &o)?;
            Ok(test.iter().map(|&i| router.p_strong(&xs[i])).collect())
        })?,
        "logistic" => cross_validate(&items, &xs, folds, &opts, ratio)?,
        "knn" => {
            let y: Vec<f32> = items
                .iter()
                .map(|o| match label {
                    switchyard_learn::Label::StrongNeeded => {
                        f32::from(u8::from(o.strong && !o.weak))
                    }
                    switchyard_learn::Label::WeakWrong => f32::from(u8::from(!o.weak)),
                    switchyard_learn::Label::Gain => {
                        f32::from(u8::from(o.strong)) - f32::from(u8::from(o.weak))
                    }
                })
                .collect();
            cross_validate_with(&items, folds, ratio, |train, test| {
                let reference: Vec<&[f32]> = train.iter().map(|&i| xs[i].as_slice()).collect();
                let labels: Vec<f32> = train.iter().map(|&i| y[i]).collect();
                let queries: Vec<&[f32]> = test.iter().map(|&i| xs[i].as_slice()).collect();
                Ok(knn_scores(&reference, &labels, &queries, k))
            })?
        }
        // No training: longer prompts first (a fixed prior, for comparison).
        "length" => cross_validate_with(&items, folds, ratio, |_, test| {
            Ok(test
                .iter()
                .map(|&i| items[i].prompt.chars().count() as f32)
                .collect())
        })?,
        // Not a router: each row scored by its own subject's true strong-needed rate, labels
        // included. An upper bound for anything that only knows "which subject, how hard".
        "subject-rate-bound" => {
            let subjects = switchyard_learn::data::subjects(&items);
            let rate: Vec<f32> = subjects
                .iter()
                .map(|s| {
                    let rows: Vec<&Outcome> = items.iter().filter(|o| &o.subject == s).collect();
                    rows.iter().filter(|o| o.strong && !o.weak).count() as f32 / rows.len() as f32
                })
                .collect();
            cross_validate_with(&items, folds, ratio, |_, test| {
                Ok(test
                    .iter()
                    .map(|&i| {
                        subjects
                            .iter()
                            .position(|s| s == &items[i].subject)
                            .map_or(0.0, |j| rate[j])
                    })
                    .collect())
            })?
        }
        // Not a router either: the same bound, with each subject's rows ordered by a logistic
        // fitted on embeddings with their subject's mean taken out (the held-out subject's mean
        // is taken from its own prompts, no labels). What it adds to the bound is all the
        // within-subject signal the embedding carries to unseen subjects.
        "subject-rate-then-within" => {
            let subjects = switchyard_learn::data::subjects(&items);
            let subject_of: Vec<usize> = items
                .iter()
                .map(|o| subjects.iter().position(|s| s == &o.subject).unwrap_or(0))
                .collect();
            let dims = xs.first().map_or(0, Vec::len);
            let mut sums = vec![vec![0f64; dims]; subjects.len()];
            let mut rows = vec![0usize; subjects.len()];
            let mut needed = vec![0usize; subjects.len()];
            for (i, x) in xs.iter().enumerate() {
                let s = subject_of[i];
                rows[s] += 1;
                needed[s] += usize::from(items[i].strong && !items[i].weak);
                for (a, v) in sums[s].iter_mut().zip(x) {
                    *a += f64::from(*v);
                }
            }
            let centred: Vec<Vec<f32>> = xs
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let s = subject_of[i];
                    x.iter()
                        .zip(&sums[s])
                        .map(|(v, sum)| v - (sum / rows[s] as f64) as f32)
                        .collect()
                })
                .collect();
            cross_validate_with(&items, folds, ratio, |train, test| {
                let sub_items: Vec<Outcome> = train.iter().map(|&i| items[i].clone()).collect();
                let sub_xs: Vec<Vec<f32>> = train.iter().map(|&i| centred[i].clone()).collect();
                let router = switchyard_learn::fit(&sub_items, &sub_xs, &opts)?;
                // Distinct subject rates differ by at least 1.5e-4 on these tables, so 1e-4 × p
                // only orders rows within a subject (or among subjects with equal rates).
                Ok(test
                    .iter()
                    .map(|&i| {
                        let s = subject_of[i];
                        needed[s] as f32 / rows[s] as f32 + 1e-4 * router.p_strong(&centred[i])
                    })
                    .collect())
            })?
        }
        other => {
            return Err(format!(
                "--model {other}: expected logistic, knn, length, subject-rate-bound or subject-rate-then-within"
            ))
        }
    };
    if nested {
        println!("l2 chosen per outer fold by inner CV: {chosen_l2:?}");
    }
    println!(
        "router: {model} on {features}, label {label:?}, l2 {}, k {k}",
        if nested {
            "nested".to_string()
        } else {
            l2.to_string()
        }
    );
    println!(
        "{folds}-fold cross-validation by subject in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    print_metrics("learned (held-out, pooled)", &cv.pooled);
    for (i, m) in cv.per_fold.iter().enumerate() {
        match m {
            Some(m) => print_metrics(&format!("learned fold {i}"), m),
            None => println!(
                "{:<28} the strong model is not better on this fold: PGR undefined",
                format!("learned fold {i}")
            ),
        }
    }
    let outcomes: Vec<(bool, bool)> = items.iter().map(|o| (o.weak, o.strong)).collect();
    let random = evaluate_scores(
        &uniform(7, items.len()),
        &outcomes,
        switchyard_learn::metrics::DEFAULT_WEAK_COST_RATIO,
    )?;
    print_metrics("random router", &random);
    println!(
        "oracle: quality {:.3} with {:.1}% strong calls",
        cv.pooled.oracle_quality,
        cv.pooled.oracle_strong_share * 100.0
    );
    println!("cost/quality points (learned, held-out pooled; cost relative to all-strong):");
    println!("  target  share  threshold  quality   PGR    cost");
    for p in &cv.pooled.cost_points {
        println!(
            "  {:>5.0}%  {:>5.1}%  {:>9.4}  {:>7.3}  {:>5.2}  {:>6.3}",
            p.target_share * 100.0,
            p.strong_share * 100.0,
            p.threshold,
            p.quality,
            p.pgr,
            p.relative_cost
        );
    }
    let report = json!({
        "data": data.display().to_string(),
        "rows": items.len(),
        "model": model,
        "features": features,
        "k": k,
        "label": label,
        "max_tokens": max_tokens,
        "l2": if nested { json!({"nested": L2_GRID, "chosen": chosen_l2}) } else { json!(l2) },
        "folds": cv.folds,
        "learned_pooled": cv.pooled,
        "learned_per_fold": cv.per_fold,
        "random": random,
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("writing {}: {e}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The request mix: 20% decided by rules (JSON output, code fences), 40% short chat prompts,
/// 30% MMLU questions (tens to hundreds of tokens), 10% long documents to summarise (~3,000 tokens).
fn request_mix(n: usize, mmlu: &[String], short: &[String]) -> Vec<ChatRequest> {
    let r = uniform(11, n * 2);
    (0..n)
        .map(|i| {
            let pick =
                |len: usize| ((r[2 * i + 1] * len as f32) as usize).min(len.saturating_sub(1));
            let u = r[2 * i];
            let mut req = ChatRequest {
                model: "default".into(),
                ..Default::default()
            };
            let text = if u < 0.1 {
                req.response_format = Some(json!({"type": "json_object"}));
                format!("Return the fields as JSON: {}", short[pick(short.len())])
            } else if u < 0.2 {
                format!(
                    "What is wrong here?\n```rust\nfn main() {{ let x: u32 = -1; }}\n```\n{}",
                    short[pick(short.len())]
                )
            } else if u < 0.6 {
                short[pick(short.len())].clone()
            } else if u < 0.9 {
                mmlu[pick(mmlu.len())].clone()
            } else {
                let start = pick(mmlu.len().saturating_sub(40));
                let doc: Vec<&str> = mmlu[start..(start + 40).min(mmlu.len())]
                    .iter()
                    .map(String::as_str)
                    .collect();
                format!("Summarize the following document.\n\n{}", doc.join("\n\n"))
            };
            req.messages = vec![
                Message::text("system", "You are a helpful assistant."),
                Message::text("user", text),
            ];
            req
        })
        .collect()
}

/// Per-request times of one pass, in microseconds: all requests, and those the semantic step decided.
struct PassTimes {
    all: Vec<f64>,
    semantic: Vec<f64>,
}

impl PassTimes {
    fn json(&self) -> serde_json::Value {
        let q = |v: &[f64]| json!({"p50": percentile(v, 50.0), "p90": percentile(v, 90.0), "p99": percentile(v, 99.0), "max": v.last()});
        json!({"all_us": q(&self.all), "semantic_requests": self.semantic.len(), "semantic_us": q(&self.semantic)})
    }
    fn line(&self) -> String {
        format!(
            "all {}: p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms | semantic step ({}): p50 {:.2} ms p99 {:.2} ms",
            self.all.len(),
            percentile(&self.all, 50.0) / 1e3,
            percentile(&self.all, 90.0) / 1e3,
            percentile(&self.all, 99.0) / 1e3,
            self.semantic.len(),
            percentile(&self.semantic, 50.0) / 1e3,
            percentile(&self.semantic, 99.0) / 1e3,
        )
    }
}

/// Classifies every request once, timing each; returns the times and the classes given.
fn timed_pass(
    classifier: &Classifier,
    reqs: &[ChatRequest],
) -> Result<(PassTimes, Vec<Option<String>>), String> {
    let mut all = Vec::with_capacity(reqs.len());
    let mut semantic = Vec::new();
    let mut classes = Vec::with_capacity(reqs.len());
    for r in reqs {
        let t = Instant::now();
        let c = classifier
            .classify(r, None, None)
            .map_err(|e| e.to_string())?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        all.push(us);
        // "Default" here means the semantic step ran and abstained (no rule decided).
        if matches!(c.by, ClassifiedBy::Semantic { .. } | ClassifiedBy::Default) {
            semantic.push(us);
        }
        classes.push(c.class);
    }
    all.sort_by(f64::total_cmp);
    semantic.sort_by(f64::total_cmp);
    Ok((PassTimes { all, semantic }, classes))
}

fn latency(args: &Args) -> Result<(), String> {
    let root = repo_root();
    let config_path = args
        .get("--config")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("crates/classify/tests/data/classes.toml"));
    let n: usize = args.parse("--requests", 2000)?;
    let budgets: Vec<usize> = args
        .get("--max-tokens")
        .unwrap_or("128,64,32")
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| format!("--max-tokens: \"{s}\""))
        })
        .collect::<Result<_, _>>()?;
    let formats: Vec<Weights> = match args.get("--weights") {
        Some(list) => list
            .split(',')
            .map(|w| w.trim().parse())
            .collect::<Result<_, _>>()?,
        None => vec![Weights::for_this_cpu()],
    };
    // Whether a forward shares its products with a helper thread (`split_forward`, default on).
    let splits: Vec<bool> = args
        .get("--split")
        .unwrap_or("on")
        .split(',')
        .map(|s| match s.trim() {
            "on" => Ok(true),
            "off" => Ok(false),
            other => Err(format!("--split: \"{other}\" (on or off)")),
        })
        .collect::<Result<_, _>>()?;
    let out = args
        .get("--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("bench/out/routing-latency.json"));
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let base: ClassesConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", config_path.display()))?;

    let mmlu: Vec<String> = load_outcomes(&root.join("../shared/data/routing/mmlu"))?
        .into_iter()
        .map(|o| o.prompt)
        .collect();
    let heldout: toml::Value = toml::from_str(
        &std::fs::read_to_string(root.join("crates/classify/tests/data/heldout.toml"))
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let short: Vec<String> = heldout
        .get("case")
        .and_then(|c| c.as_array())
        .map(|cases| {
            cases
                .iter()
                .filter_map(|c| c.get("prompt").and_then(|p| p.as_str()).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if short.is_empty() {
        return Err("no short prompts in heldout.toml".into());
    }
    let reqs = request_mix(n, &mmlu, &short);
    let heldout_cases: Vec<(String, String)> = heldout
        .get("case")
        .and_then(|c| c.as_array())
        .map(|cases| {
            cases
                .iter()
                .filter_map(|c| {
                    Some((
                        c.get("class")?.as_str()?.to_string(),
                        c.get("prompt")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();

    // Threads that only spin, standing in for a gateway that keeps the cores busy: with them,
    // MiniLM's kernel threads must share cores with other work.
    let busy_threads: usize = args.parse("--busy-threads", 0)?;
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..busy_threads)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(
                        x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                    );
                }
            })
        })
        .collect();
    if busy_threads > 0 {
        println!("{busy_threads} busy thread(s) spinning during the runs");
    }

    let mut results = Vec::new();
    // Classes given at the first budget and weight format, to measure how often a shorter cut
    // or coarser weights change the answer.
    let mut reference: Option<Vec<Option<String>>> = None;
    let runs = formats.iter().flat_map(|&w| {
        let splits = &splits;
        budgets
            .iter()
            .flat_map(move |&b| splits.iter().map(move |&split| (w, b, split)))
    });
    for (weights, budget, split) in runs {
        let mut cfg = base.clone();
        if let Some(s) = cfg.semantic.as_mut() {
            s.max_tokens = budget;
            s.cache_entries = 0;
        }
        let model_dir = cfg
            .semantic
            .as_ref()
            .and_then(|s| s.model_dir.clone())
            .unwrap_or_else(default_model_dir);
        let t = Instant::now();
        let mut loaded = Embedder::load_with(&model_dir, budget, weights)?;
        loaded.set_split_forward(split);
        let loaded = Arc::new(loaded);
        let cold = Classifier::build_with(&cfg, Some(loaded))?;
        let build_ms = t.elapsed().as_secs_f64() * 1e3;
        let embedder = cold.embedder().cloned();
        // Warm up the allocator and the kernels' thread pool.
        for r in reqs.iter().take(20) {
            cold.classify(r, None, None).map_err(|e| e.to_string())?;
        }
        let (cold_t, classes) = timed_pass(&cold, &reqs)?;

        // The same budget with the embedding cache on: a first pass (hits only where the mix
        // repeats a prompt) and a second pass over the same requests (every prompt seen before).
        if let Some(s) = cfg.semantic.as_mut() {
            s.cache_entries = base
                .semantic
                .as_ref()
                .map_or(4096, |b| b.cache_entries)
                .max(n);
        }
        let cached = Classifier::build_with(&cfg, embedder.clone())?;
        let (first_t, _) = timed_pass(&cached, &reqs)?;
        let first_stats = cached.embedding_cache_stats().unwrap_or_default();
        let (warm_t, _) = timed_pass(&cached, &reqs)?;

        // Accuracy of the semantic step alone (rules off) on the labelled held-out prompts.
        let mut sem_cfg = cfg.clone();
        sem_cfg.rules.clear();
        let sem = Classifier::build_with(&sem_cfg, embedder)?;
        let right = heldout_cases
            .iter()
            .filter(|(class, prompt)| {
                let req = ChatRequest {
                    model: "default".into(),
                    messages: vec![Message::text("user", prompt.clone())],
                    ..Default::default()
                };
                sem.classify(&req, None, None)
                    .is_ok_and(|c| c.class.as_deref() == Some(class.as_str()))
            })
            .count();
        let agreement = reference
            .as_ref()
            .map(|r| r.iter().zip(&classes).filter(|(a, b)| a == b).count() as f64 / n as f64);
        if reference.is_none() {
            reference = Some(classes);
        }
        let row = json!({
            "max_tokens": budget,
            "split_forward": split,
            "requests": n,
            "build_ms": build_ms,
            "cache_off": cold_t.json(),
            "cache_first_pass": first_t.json(),
            "cache_first_pass_hits": first_stats.hits,
            "cache_first_pass_misses": first_stats.misses,
            "cache_warm": warm_t.json(),
            "heldout_right": right,
            "heldout_total": heldout_cases.len(),
            "agreement_with_first_run": agreement,
        });
        println!(
            "max_tokens={budget:<4} weights {weights} split {} build {build_ms:.0} ms | held-out accuracy {right}/{} | agreement with max_tokens={} {}: {}",
            if split { "on" } else { "off" },
            heldout_cases.len(),
            budgets[0],
            formats[0],
            agreement.map_or("-".into(), |a| format!("{:.1}%", a * 100.0)),
        );
        println!("  cache off            {}", cold_t.line());
        println!(
            "  cache on, 1st pass   {} | hits {} misses {}",
            first_t.line(),
            first_stats.hits,
            first_stats.misses
        );
        println!("  cache on, warm       {}", warm_t.line());
        results.push(row);
    }
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        s.join().map_err(|_| "a busy thread panicked".to_string())?;
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let report = json!({
        "config": config_path.display().to_string(),
        "cpu_threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "rayon_num_threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "busy_threads": busy_threads,
        "runs": results,
    });
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("writing {}: {e}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
