//! `data stats`: examples, labels, input lengths and truncation per split of a task.

use super::Target;
use super::batch::prepare;
use crate::error::{Error, Result};
use crate::tasks::readers::{TaskDef, read_split};
use crate::text::Tokenizer;
use std::path::Path;

/// Per split of a task: examples, label counts, and (with a tokenizer) the lengths of the
/// model inputs and how many exceed `max_len`.
pub fn split_stats(
    def: &TaskDef,
    data: &Path,
    tok: Option<&Tokenizer>,
    max_len: usize,
    skip_bad_rows: bool,
) -> Result<serde_json::Value> {
    let mut splits = serde_json::Map::new();
    for &name in def.splits() {
        let s = match read_split(def, data, name, skip_bad_rows) {
            Ok(s) => s,
            Err(Error::MissingSplit { .. }) => continue,
            Err(e) => return Err(e),
        };
        let mut labels = serde_json::Map::new();
        for e in &s.examples {
            let key = key_of(&e.target, def);
            let n = labels.get(&key).and_then(|v| v.as_u64()).unwrap_or(0) + 1;
            labels.insert(key, n.into());
        }
        let mut js = serde_json::json!({"examples": s.examples.len(), "labels": labels, "skipped": s.skipped});
        if let Some(tok) = tok {
            // Lengths before truncation (an unbounded context), then how many do not fit.
            let (p, _) = prepare(tok, &s.examples, usize::MAX / 4)?;
            let mut lens: Vec<usize> =
                p.iter().flat_map(|e| e.t.features.iter().flatten().map(|q| q.ids.len())).collect();
            lens.sort_unstable();
            let pct = |q: f64| {
                lens.get(((lens.len().max(1) - 1) as f64 * q).round() as usize)
                    .copied()
                    .unwrap_or(0)
            };
            let over = p
                .iter()
                .filter(|e| e.t.features.iter().flatten().any(|q| q.ids.len() > max_len))
                .count();
            js["tokens"] = serde_json::json!({"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": lens.last().copied().unwrap_or(0)});
            js["truncated"] = over.into();
            js["max_len"] = max_len.into();
        }
        splits.insert(name.to_string(), js);
    }
    Ok(serde_json::json!({"task": def.name, "splits": splits}))
}

/// [`split_stats`] as text, a few lines per split.
pub fn text(js: &serde_json::Value) -> String {
    let mut s = format!("{}\n", js["task"].as_str().unwrap_or("?"));
    let empty = serde_json::Map::new();
    for (name, v) in js["splits"].as_object().unwrap_or(&empty) {
        let labels: Vec<String> = v["labels"]
            .as_object()
            .unwrap_or(&empty)
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        s.push_str(&format!("  {name}: {} examples", v["examples"]));
        if v["skipped"].as_u64().unwrap_or(0) > 0 {
            s.push_str(&format!(" ({} malformed rows skipped)", v["skipped"]));
        }
        s.push_str(&format!("\n    labels: {}\n", labels.join(", ")));
        if let Some(t) = v.get("tokens") {
            s.push_str(&format!(
                "    tokens per input: median {}, p90 {}, p99 {}, max {}; {} examples longer than {}\n",
                t["p50"], t["p90"], t["p99"], t["max"], v["truncated"], v["max_len"]
            ));
        }
    }
    s
}

fn key_of(t: &Target, def: &TaskDef) -> String {
    match t {
        Target::Class(c) if def.labels.is_empty() => format!("candidate {}", c + 1),
        Target::Class(c) => def.labels[*c].clone(),
        Target::Score(_) => "score".to_string(),
        Target::None => "unlabelled".to_string(),
    }
}
