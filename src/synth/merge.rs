//! Finishing a results folder (summary.json, montage, gallery) and `dgnam merge DIR`, which
//! finishes one from its shards' `summary.<I>-of-<N>.json` once every unit is there
//! exactly once.

use super::folder::{self, read_doc, stem_of};
use super::gallery;
use super::manifest;
use super::shard::Shard;
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `finish` wrote.
pub struct Finished {
    pub summary: PathBuf,
    pub montage: Option<PathBuf>,
    pub gallery: PathBuf,
}

/// Writes `dir/summary.json` (`units` in order, then the manifest), the montage and the
/// gallery: the same files from the same entries, whether one process ran them all or
/// shards did.
pub fn finish(dir: &Path, units: &[Value], manifest: &Value) -> Result<Finished> {
    let summary = dir.join("summary.json");
    folder::write_doc(&summary, &json!({ "units": units, "manifest": manifest }))?;
    let montage = folder::write_montage(dir, units)?;
    let gallery = gallery::write(dir, units, manifest)?;
    Ok(Finished { summary, montage, gallery })
}

/// What `merge` did.
pub struct Merged {
    pub units: usize,
    pub shards: usize,
    pub finished: Finished,
}

/// The files a finished unit has, besides its summary entry.
const UNIT_FILES: [&str; 3] = ["png", "image.npy", "code.npy"];

/// `dgnam merge DIR`. Everything is checked before anything is written: one set of shards
/// (one N), all from one run (the same expected units, the same manifest but for timing
/// and device), every expected unit in exactly one shard's summary with its files present.
pub fn merge(dir: &Path) -> Result<Merged> {
    let listing = std::fs::read_dir(dir).with_context(|| format!("cannot read the folder {}", dir.display()))?;
    let mut shards: Vec<(Shard, String)> = listing
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Shard::from_summary_name(&name).map(|s| (s, name))
        })
        .collect();
    shards.sort_by_key(|(s, _)| (s.count, s.index));
    if shards.is_empty() {
        let note =
            if dir.join("summary.json").exists() { " (its summary.json is from an unsharded run, which needs no merge)" } else { "" };
        bail!("{}: no shard summaries (summary.<I>-of-<N>.json) to merge{note}", dir.display());
    }
    let count = shards[0].0.count;
    if let Some((other, name)) = shards.iter().find(|(s, _)| s.count != count) {
        bail!(
            "{}: shards of different splits are mixed: {} (of {}) and {name} (of {}); move the stale ones away",
            dir.display(),
            shards[0].1,
            count,
            other.count
        );
    }
    let mut docs = Vec::new();
    for (shard, name) in &shards {
        let doc = read_doc(&dir.join(name))?.with_context(|| format!("{name} vanished while merging"))?;
        let expected: Vec<String> = doc
            .get("expected")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .with_context(|| format!("{}: no \"expected\" list of units; is it a dgnam shard summary?", name))?;
        docs.push((*shard, name.clone(), expected, doc));
    }
    let (_, first_name, expected, _) = &docs[0];
    for (_, name, other, _) in &docs[1..] {
        ensure!(other == expected, "{name} and {first_name} are shards of different runs: they expect different units");
    }
    let mut found: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for (_, name, _, doc) in &docs {
        for entry in doc.get("units").and_then(Value::as_array).into_iter().flatten() {
            let stem = stem_of(entry).with_context(|| format!("{name}: a unit entry names no png"))?;
            ensure!(expected.contains(&stem), "{name} lists {stem}, which the run does not expect");
            if let Some((before, _)) = found.get(&stem) {
                bail!("{stem} is listed twice, in {before} and in {name}: each unit must be done exactly once");
            }
            found.insert(stem, (name.clone(), entry.clone()));
        }
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|stem| !found.contains_key(*stem) || UNIT_FILES.iter().any(|ext| !dir.join(format!("{stem}.{ext}")).is_file()))
        .collect();
    if !missing.is_empty() {
        let absent: Vec<String> = (0..count).filter(|i| !shards.iter().any(|(s, _)| s.index == *i)).map(|i| i.to_string()).collect();
        let names: Vec<&str> = missing.iter().take(20).map(|s| s.as_str()).collect();
        let more = if missing.len() > 20 { format!(" and {} more", missing.len() - 20) } else { String::new() };
        let shards_note =
            if absent.is_empty() { String::new() } else { format!("; shard(s) {} of {count} wrote no summary", absent.join(", ")) };
        bail!(
            "{}: {} of {} units are missing: {}{more}{shards_note}; rerun their shards (finished units are kept)",
            dir.display(),
            missing.len(),
            expected.len(),
            names.join(", ")
        );
    }
    let manifests: Vec<(String, Value)> =
        docs.iter().map(|(_, name, _, doc)| (name.clone(), doc.get("manifest").cloned().unwrap_or(Value::Null))).collect();
    let manifest = manifest::merged(&manifests)?;
    let units: Vec<Value> = expected.iter().map(|stem| found[stem].1.clone()).collect();
    let finished = finish(dir, &units, &manifest)?;
    Ok(Merged { units: units.len(), shards: count, finished })
}
