//! `dgnam gallery DIR`: a static website of a results folder that opens from file:// with
//! nothing to install. `DIR/index.html` is a grid of every unit (thumbnail, label, unit,
//! probability, a sparkline of its activation over the iterations) with a filter box;
//! `DIR/gallery/<stem>.html` is a unit's own page (full image, GIF, every option, the seed,
//! file hashes). Thumbnails (`DIR/gallery/thumbs/`) are 128 pixels and only those near
//! the window are fetched, so ten thousand units stay quick. Nothing in it depends on when the run was made: a merged
//! folder's gallery is byte for byte an unsharded run's.

use super::folder::{self, stem_of, unit_name};
use super::render;
use crate::fsutil::write_atomic;
use anyhow::{Context, Result};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The side of a grid thumbnail, in pixels.
pub const THUMB: u32 = 128;

/// Writes the gallery of `units` (summary entries) into `dir`; returns `dir/index.html`.
pub fn write(dir: &Path, units: &[Value], manifest: &Value) -> Result<PathBuf> {
    let pages = dir.join("gallery");
    let thumbs = pages.join("thumbs");
    std::fs::create_dir_all(&thumbs).with_context(|| format!("cannot create {}", thumbs.display()))?;
    let stems: Vec<String> = units.iter().map(|u| stem_of(u).context("a summary entry names no png")).collect::<Result<_>>()?;
    let mut cards = String::new();
    for (i, (entry, stem)) in units.iter().zip(&stems).enumerate() {
        let img = image::open(dir.join(format!("{stem}.png"))).with_context(|| format!("reading {stem}.png for the gallery"))?.to_rgb8();
        let thumb = render::thumbnail(&img, THUMB);
        write_if_changed(&thumbs.join(format!("{stem}.png")), &render::png_bytes(&thumb)?)?;
        let (prev, next) = (i.checked_sub(1).map(|p| stems[p].as_str()), stems.get(i + 1).map(String::as_str));
        write_if_changed(&pages.join(format!("{stem}.html")), unit_page(dir, entry, stem, manifest, (prev, next))?.as_bytes())?;
        let label = entry.get("label").and_then(Value::as_str).unwrap_or("");
        let _ = writeln!(
            cards,
            "<a class=\"card\" href=\"gallery/{s}.html\" data-unit=\"{u}\" data-label=\"{l}\"><img data-src=\"gallery/thumbs/{s}.png\" \
             loading=\"lazy\" width=\"{w}\" height=\"{h}\" alt=\"{l}\"><span class=\"label\">{l}</span><span class=\"meta\">unit {u}{seed} \
             &middot; {p}</span>{spark}</a>",
            s = esc(stem),
            u = esc(&unit_name(entry)),
            l = esc(label),
            w = thumb.width(),
            h = thumb.height(),
            seed = seed_note(entry, stem),
            p = probability(entry),
            spark = sparkline(&activations(entry), 120, 24),
        );
    }
    let title = format!("dgnam: {} units of {}", units.len(), layer_of(units, manifest));
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>{STYLE}</style></head>\n<body>\
         <header><h1>{t}</h1><input id=\"filter\" type=\"search\" placeholder=\"filter: label or unit number\" autofocus> \
         <span id=\"count\">{n} units</span></header>\n<main id=\"grid\">\n{cards}</main>\n<script>{FILTER}</script>\n</body></html>\n",
        t = esc(&title),
        n = units.len(),
    );
    let index = dir.join("index.html");
    write_atomic(&index, html.as_bytes())?;
    Ok(index)
}

/// Writes `bytes` to `path` (atomically) unless it holds them already: rebuilding the
/// gallery of a large folder rewrites only what changed.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    write_atomic(path, bytes)
}

/// `dgnam gallery DIR`: the gallery of the folder's summary.json.
pub fn of_folder(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("summary.json");
    let doc = folder::read_doc(&path)?
        .with_context(|| format!("{} does not exist: run dgnam synthesize into {}, or dgnam merge it", path.display(), dir.display()))?;
    let units = doc.get("units").and_then(Value::as_array).with_context(|| format!("{} has no \"units\" list", path.display()))?;
    for u in units {
        let stem = stem_of(u).with_context(|| format!("{}: a unit entry names no png", path.display()))?;
        let png = dir.join(format!("{stem}.png"));
        anyhow::ensure!(png.is_file(), "{} is listed in {} but missing", png.display(), path.display());
    }
    write(dir, units, doc.get("manifest").unwrap_or(&Value::Null))
}

fn unit_page(dir: &Path, entry: &Value, stem: &str, manifest: &Value, (prev, next): (Option<&str>, Option<&str>)) -> Result<String> {
    let label = entry.get("label").and_then(Value::as_str).unwrap_or("");
    let file = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_string);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{s}: {l}</title>\n<style>{STYLE}</style></head>\n<body class=\"unit\">\
         <nav><a href=\"../index.html\">all units</a>",
        s = esc(stem),
        l = esc(label)
    );
    if let Some(p) = prev {
        let _ = write!(h, " &middot; <a href=\"{0}.html\">previous: {0}</a>", esc(p));
    }
    if let Some(n) = next {
        let _ = write!(h, " &middot; <a href=\"{0}.html\">next: {0}</a>", esc(n));
    }
    let _ = write!(
        h,
        "</nav>\n<h1>{} &middot; unit {}{}</h1>\n<div class=\"pictures\">",
        esc(label),
        esc(&unit_name(entry)),
        seed_note(entry, stem)
    );
    let _ = write!(
        h,
        "<figure><img id=\"full\" src=\"../{}.png\" alt=\"{}\"><figcaption>the preferred image</figcaption></figure>",
        esc(stem),
        esc(label)
    );
    if let Some(gif) = file("gif") {
        let _ = write!(
            h,
            "<figure><img id=\"gif\" src=\"../{}\" alt=\"the run\"><figcaption>the run (--save-every)</figcaption></figure>",
            esc(&gif)
        );
    }
    if let Some(f) = file("field_png") {
        let _ =
            write!(h, "<figure><img src=\"../{}\" alt=\"receptive field\"><figcaption>its receptive field</figcaption></figure>", esc(&f));
    }
    let acts = activations(entry);
    let last = acts.last().map_or("-".to_string(), |a| format!("{a:.4}"));
    let _ = write!(h, "</div>\n<h2>activation over {} iterations (last {last})</h2>{}\n", acts.len(), sparkline(&acts, 480, 80));
    let mut rows: Vec<(String, String)> = vec![
        ("layer".into(), entry.get("layer").and_then(Value::as_str).unwrap_or("").into()),
        ("unit".into(), unit_name(entry)),
        ("label".into(), label.into()),
        ("seed".into(), entry.get("seed").map_or("-".into(), |s| s.to_string())),
        ("probability".into(), probability(entry)),
    ];
    for k in ["xy", "stopped_at", "field"] {
        if let Some(v) = entry.get(k).filter(|v| !v.is_null()) {
            rows.push((k.into(), v.to_string()));
        }
    }
    table(&mut h, "unit", &rows);
    let options: Vec<(String, String)> = manifest
        .get("options")
        .and_then(Value::as_object)
        .map(|o| o.iter().map(|(k, v)| (k.clone(), plain(v))).collect())
        .unwrap_or_default();
    table(&mut h, "hyperparameters (every option of the run)", &options);
    let run: Vec<(String, String)> = ["version", "net_sha256", "generator_sha256", "bounds_sha256", "device", "precision"]
        .iter()
        .map(|k| (k.to_string(), manifest.get(*k).map_or("-".into(), plain)))
        .collect();
    table(&mut h, "model and run", &run);
    let mut files = Vec::new();
    for key in ["png", "image", "code", "gif", "field_png"] {
        if let Some(name) = file(key) {
            files.push((name.clone(), crate::sha256::file_hex(&dir.join(&name))?));
        }
    }
    table(&mut h, "files (sha256)", &files);
    h.push_str("</body></html>\n");
    Ok(h)
}

fn table(h: &mut String, title: &str, rows: &[(String, String)]) {
    let _ = write!(h, "<h2>{}</h2>\n<table>", esc(title));
    for (k, v) in rows {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    h.push_str("</table>\n");
}

/// A JSON value as a person reads it: strings bare, null as "-".
fn plain(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn activations(entry: &Value) -> Vec<f64> {
    entry.get("activations").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

fn probability(entry: &Value) -> String {
    entry.get("probability").and_then(Value::as_f64).map_or("p -".into(), |p| format!("p={p:.4}"))
}

/// ` seed 3` when the files carry the seed (`_s3`).
fn seed_note(entry: &Value, stem: &str) -> String {
    match entry.get("seed").and_then(Value::as_u64) {
        Some(s) if stem.ends_with(&format!("_s{s}")) => format!(" seed {s}"),
        _ => String::new(),
    }
}

fn layer_of(units: &[Value], manifest: &Value) -> String {
    let from_options = manifest.get("options").and_then(|o| o.get("layer")).and_then(Value::as_str);
    let from_units = units.first().and_then(|u| u.get("layer")).and_then(Value::as_str);
    from_options.or(from_units).unwrap_or("a net").to_string()
}

/// An inline SVG polyline of `values` (at most 60 points, evenly picked, the last kept),
/// min..max stretched to the box.
pub fn sparkline(values: &[f64], width: u32, height: u32) -> String {
    let finite: Vec<(usize, f64)> = values.iter().copied().enumerate().filter(|(_, v)| v.is_finite()).collect();
    let mut points = String::new();
    if let (Some(&(_, first)), true) = (finite.first(), values.len() > 1) {
        let (lo, hi) = finite.iter().fold((first, first), |(lo, hi), &(_, v)| (lo.min(v), hi.max(v)));
        let span = if hi > lo { hi - lo } else { 1.0 };
        let n = finite.len();
        let picks = n.min(60);
        for k in 0..picks {
            let (i, v) = finite[if picks == 1 { 0 } else { k * (n - 1) / (picks - 1) }];
            let x = i as f64 * width as f64 / (values.len() - 1) as f64;
            let y = 1.0 + (hi - v) / span * (height as f64 - 2.0);
            let _ = write!(points, "{}{x:.1},{y:.1}", if k == 0 { "" } else { " " });
        }
    }
    format!(
        "<svg class=\"spark\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\"><polyline fill=\"none\" \
         stroke=\"currentColor\" stroke-width=\"1.5\" points=\"{points}\"/></svg>"
    )
}

/// Text for HTML (element content and quoted attributes).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

const STYLE: &str = "body{font:14px/1.35 system-ui,sans-serif;margin:0;background:#fafafa;color:#222}\
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 16px;display:flex;gap:16px;align-items:center}\
h1{font-size:18px;margin:0}#filter{font-size:15px;padding:4px 8px;width:18em}\
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:10px;padding:16px}\
.card{display:flex;flex-direction:column;align-items:center;text-decoration:none;color:inherit;background:#fff;\
border:1px solid #e3e3e3;border-radius:6px;padding:6px;content-visibility:auto;contain-intrinsic-size:140px 210px}\
.card[hidden]{display:none}.card img{image-rendering:pixelated;max-width:128px;height:auto}\
.label{font-weight:600;text-align:center;overflow-wrap:anywhere;margin-top:4px}.meta{color:#666;font-size:12px}\
.spark{color:#2a6fdb;margin-top:2px}body.unit{padding:16px}.pictures{display:flex;gap:16px;flex-wrap:wrap}\
.pictures img{image-rendering:pixelated;min-width:256px}figure{margin:0}\
table{border-collapse:collapse;margin-bottom:12px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;\
font-family:ui-monospace,monospace;font-size:12px;overflow-wrap:anywhere}th{background:#f0f0f0}";

/// The thumbnails and the filter box. A thumbnail gets its `src` when its card comes within
/// 800 pixels of the window (an IntersectionObserver: `loading="lazy"` alone is not
/// honoured everywhere, headless Chromium fetches all 10 000). Those already that near when
/// the script runs get theirs at once, measured from the layout: the observer's first
/// callback waits for a rendered frame, which a busy or headless browser may be slow to make. The filter: a number
/// matches that unit (or a pair holding it), anything else the labels containing it
/// (case-insensitive). It only hides cards, so it is quick at 10 000.
const FILTER: &str = "(function(){var box=document.getElementById('filter'),count=document.getElementById('count');\
var cards=Array.prototype.slice.call(document.querySelectorAll('.card'));\
var show=function(i){i.src=i.getAttribute('data-src');};\
var io='IntersectionObserver' in window?new IntersectionObserver(function(es){es.forEach(function(e){\
if(e.isIntersecting){show(e.target);io.unobserve(e.target);}});},{rootMargin:'800px'}):null;\
var near=function(i){var b=i.getBoundingClientRect();return b.bottom>=-800&&b.top<=window.innerHeight+800;};\
cards.forEach(function(c){var i=c.querySelector('img');if(!io||near(i))show(i);else io.observe(i);});\
function apply(){var q=box.value.trim().toLowerCase(),shown=0;cards.forEach(function(c){\
var ok=q===''||(/^[0-9]+$/.test(q)?c.dataset.unit.split('+').indexOf(q)>=0:\
c.dataset.label.toLowerCase().indexOf(q)>=0||c.dataset.unit===q);c.hidden=!ok;if(ok)shown++;});\
count.textContent=shown+' of '+cards.length+' units';}\
box.addEventListener('input',apply);if(box.value)apply();})();";
