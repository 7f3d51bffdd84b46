//! A results folder as a whole: its summaries (read and written atomically), the labelled
//! montage, made from the summary's unit entries alone (so an unsharded run and `dgnam
//! merge` make the same files from the same entries).

use super::render;
use crate::fsutil::write_atomic;
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The entries of a summary file by file stem (`fc8_0945`, `fc8_0945_s3`); an absent file
/// has none.
pub fn read_entries(path: &Path) -> Result<Vec<(String, Value)>> {
    let Some(doc) = read_doc(path)? else { return Ok(Vec::new()) };
    Ok(doc.get("units").and_then(Value::as_array).into_iter().flatten().filter_map(|u| Some((stem_of(u)?, u.clone()))).collect())
}

/// A summary file as JSON; None when it does not exist.
pub fn read_doc(path: &Path) -> Result<Option<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let doc = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON; move it away to start over", path.display()))?;
    Ok(Some(doc))
}

/// A unit entry's file stem: its PNG's name without `.png`.
pub fn stem_of(entry: &Value) -> Option<String> {
    entry.get("png").and_then(Value::as_str).map(|p| p.trim_end_matches(".png").to_string())
}

pub fn write_doc(path: &Path, doc: &Value) -> Result<()> {
    write_atomic(path, serde_json::to_string_pretty(doc)?.as_bytes())
}

/// The most tiles a montage shows; the gallery shows every unit.
pub const MONTAGE_MAX: usize = 1024;
/// The shorter side of a montage tile, at least: small nets' images are upscaled to it.
pub const TILE_MIN: u32 = 128;

/// `dir/montage.png`: each unit's PNG with its number, seed (when the file name has one),
/// label and probability underneath. Images smaller than 128 pixels are upscaled (nearest
/// neighbour); above 64 units, larger ones are shrunk to 128. None when there is no unit.
pub fn write_montage(dir: &Path, units: &[Value]) -> Result<Option<PathBuf>> {
    let many = units.len() > 64;
    let mut tiles = Vec::new();
    for entry in units.iter().take(MONTAGE_MAX) {
        let Some(stem) = stem_of(entry) else { continue };
        let img =
            image::open(dir.join(format!("{stem}.png"))).with_context(|| format!("reading back {stem}.png for the montage"))?.to_rgb8();
        let img = if many { render::thumbnail(&img, TILE_MIN) } else { render::upscale_nearest(&img, TILE_MIN) };
        tiles.push((img, caption(entry)));
    }
    if tiles.is_empty() {
        return Ok(None);
    }
    let path = dir.join("montage.png");
    render::write_png(&path, &render::montage(&tiles, None))?;
    Ok(Some(path))
}

/// `945 s3 bell pepper p=0.97`: the unit(s), the seed when the files carry it, the label,
/// the probability.
pub fn caption(entry: &Value) -> String {
    let mut c = unit_name(entry);
    if let (Some(stem), Some(seed)) = (stem_of(entry), entry.get("seed").and_then(Value::as_u64)) {
        if stem.ends_with(&format!("_s{seed}")) {
            c.push_str(&format!(" s{seed}"));
        }
    }
    if let Some(l) = entry.get("label").and_then(Value::as_str) {
        c.push(' ');
        c.push_str(l);
    }
    if let Some(p) = entry.get("probability").and_then(Value::as_f64) {
        c.push_str(&format!(" p={p:.2}"));
    }
    c
}

/// `945`, or `945+643` for two units.
pub fn unit_name(entry: &Value) -> String {
    match entry.get("unit") {
        Some(Value::Array(a)) => a.iter().map(|u| u.to_string()).collect::<Vec<_>>().join("+"),
        Some(u) => u.to_string(),
        None => "?".into(),
    }
}
