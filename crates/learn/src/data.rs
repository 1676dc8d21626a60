//! Outcome tables: one CSV per subject with columns `prompt`, then one boolean column per model
//! (`True`/`False`: was that model's answer correct). The MMLU tables in
//! `shared/data/routing/mmlu/` come from RouteLLM (Ong et al., ICLR 2025, Apache-2.0); prompts
//! listed in `contaminated_prompts.jsonl` (also in RouteLLM's training data) are dropped.

use std::collections::HashSet;
use std::path::Path;

/// The weak and strong model columns of the MMLU tables.
pub const WEAK_MODEL: &str = "mistralai/Mixtral-8x7B-Instruct-v0.1";
pub const STRONG_MODEL: &str = "gpt-4-1106-preview";

/// One prompt and whether each model answered it correctly.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub subject: String,
    pub prompt: String,
    pub weak: bool,
    pub strong: bool,
}

/// Reads every `*.csv` under `dir` (subject = file stem without a leading `mmlu_`), sorted by
/// subject then file order, dropping the prompts in `dir/contaminated_prompts.jsonl` if present.
pub fn load_outcomes(dir: &Path) -> Result<Vec<Outcome>, String> {
    let contaminated = load_contaminated(&dir.join("contaminated_prompts.jsonl"))?;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no *.csv outcome tables", dir.display()));
    }
    let mut out = Vec::new();
    for path in files {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let subject = stem.strip_prefix("mmlu_").unwrap_or(stem).to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let rows = parse_csv(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut rows = rows.into_iter();
        let header = rows
            .next()
            .ok_or_else(|| format!("{}: empty file", path.display()))?;
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| format!("{}: no column \"{name}\"", path.display()))
        };
        let (p, w, s) = (col("prompt")?, col(WEAK_MODEL)?, col(STRONG_MODEL)?);
        for (i, row) in rows.enumerate() {
            let field = |j: usize| {
                row.get(j)
                    .map(String::as_str)
                    .ok_or_else(|| format!("{} row {}: too few fields", path.display(), i + 2))
            };
            let boolean = |j: usize| -> Result<bool, String> {
                match field(j)? {
                    "True" | "true" | "1" => Ok(true),
                    "False" | "false" | "0" => Ok(false),
                    other => Err(format!(
                        "{} row {}: \"{other}\" is not a boolean",
                        path.display(),
                        i + 2
                    )),
                }
            };
            let prompt = field(p)?.to_string();
            if contaminated.contains(&prompt) {
                continue;
            }
            out.push(Outcome {
                subject: subject.clone(),
                prompt,
                weak: boolean(w)?,
                strong: boolean(s)?,
            });
        }
    }
    Ok(out)
}

fn load_contaminated(path: &Path) -> Result<HashSet<String>, String> {
    let mut set = HashSet::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(set);
    };
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
        for key in ["eval_prompt", "train_prompt"] {
            if let Some(p) = v.get(key).and_then(|p| p.as_str()) {
                set.insert(p.to_string());
            }
        }
    }
    Ok(set)
}

/// RFC 4180 CSV: quoted fields may hold commas, newlines and doubled quotes.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                in_quotes = true;
                at_field_start = false;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                at_field_start = true;
            }
            c => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if in_quotes {
        return Err("unterminated quoted field".into());
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// Distinct subjects, sorted.
pub fn subjects(items: &[Outcome]) -> Vec<String> {
    let mut s: Vec<String> = items.iter().map(|i| i.subject.clone()).collect();
    s.sort();
    s.dedup();
    s
}
