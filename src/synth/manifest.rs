//! The run manifest in every summary: what made the results (dgnam's version, the sha256 of
//! the net, generator and bounds files, every option, the device and precision) and when
//! (`started`, `seconds`). Shards of one run agree on everything but the timing and the
//! device; `merge` checks that they do.

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The fields that say when and how long: they differ between any two runs, so comparisons
/// of results leave them out.
pub const TIMING: [&str; 2] = ["started", "seconds"];

/// The manifest without its timing: `files` are (field, path) of the files that made the
/// results (`net_sha256`, the net file; None when there is none, e.g. `--bounds none`).
pub fn describe(opts: Value, files: &[(&str, Option<&Path>)], device: &str, precision: &str) -> Result<Value> {
    let mut m = Map::new();
    m.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    for (field, path) in files {
        let hash = match path {
            Some(p) => Some(crate::sha256::file_hex(p)?),
            None => None,
        };
        m.insert(field.to_string(), json!(hash));
    }
    m.insert("options".into(), opts);
    m.insert("device".into(), json!(device));
    m.insert("precision".into(), json!(precision));
    Ok(Value::Object(m))
}

/// `manifest` with the run's timing: it started at `started` and has run `seconds`.
pub fn timed(manifest: &Value, started: SystemTime, seconds: f64) -> Value {
    let mut m = manifest.clone();
    if let Some(o) = m.as_object_mut() {
        o.insert("started".into(), json!(utc_text(started)));
        o.insert("seconds".into(), json!(seconds));
    }
    m
}

/// The manifest of a merged run: the shards' (which must agree on everything but timing
/// and device), started when the first shard started, lasting until the last one ended;
/// the devices the shards ran on, each once, in order of first use.
pub fn merged(shards: &[(String, Value)]) -> Result<Value> {
    let Some((first_name, first)) = shards.first() else { bail!("no shard manifests to merge") };
    let strip = |m: &Value| {
        let mut m = m.clone();
        if let Some(o) = m.as_object_mut() {
            for k in TIMING.iter().chain(&["device"]) {
                o.remove(*k);
            }
        }
        m
    };
    let base = strip(first);
    for (name, m) in &shards[1..] {
        let other = strip(m);
        if other != base {
            let field = differing_field(&base, &other);
            bail!("{name} and {first_name} were made by different runs: their manifests differ in '{field}'");
        }
    }
    let mut devices: Vec<&str> = Vec::new();
    for d in shards.iter().filter_map(|(_, m)| m.get("device").and_then(Value::as_str)) {
        if !devices.contains(&d) {
            devices.push(d);
        }
    }
    // (start in ms since 1970, seconds run) of each shard.
    let span = |m: &Value| -> Option<(i64, f64)> { Some((parse_utc(m.get("started")?.as_str()?)?, m.get("seconds")?.as_f64()?)) };
    let spans: Vec<(i64, f64)> = shards.iter().filter_map(|(_, m)| span(m)).collect();
    let mut m = base;
    if let Some(o) = m.as_object_mut() {
        o.insert("device".into(), json!(devices.join(", ")));
        if let Some(start) = spans.iter().map(|s| s.0).min() {
            let end = spans.iter().map(|s| s.0 as f64 / 1e3 + s.1).fold(f64::MIN, f64::max);
            o.insert("started".into(), json!(utc_text(UNIX_EPOCH + std::time::Duration::from_millis(start.max(0) as u64))));
            o.insert("seconds".into(), json!(end - start as f64 / 1e3));
        }
    }
    Ok(m)
}

/// The first top-level (or `options.`) field in which two manifests differ.
fn differing_field(a: &Value, b: &Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return "the whole manifest".into() };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.dedup();
    for k in keys {
        if a.get(k) != b.get(k) {
            if k == "options" {
                if let (Some(x), Some(y)) = (a[k].as_object(), b.get(k).and_then(Value::as_object)) {
                    if let Some(o) = x.keys().chain(y.keys()).find(|o| x.get(*o) != y.get(*o)) {
                        return format!("options.{o}");
                    }
                }
            }
            return k.clone();
        }
    }
    "nothing".into()
}

/// `2026-12-02T01:13:22.042Z` (UTC, milliseconds).
pub fn utc_text(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis()) as i64;
    let (secs, ms) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// `utc_text` back into milliseconds since 1970.
fn parse_utc(s: &str) -> Option<i64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let (time, ms) = time.split_once('.').unwrap_or((time, "0"));
    let d: Vec<i64> = date.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let t: Vec<i64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let ([y, mo, day], [h, mi, sec]) = (d.as_slice(), t.as_slice()) else { return None };
    Some((days_from_civil(*y, *mo, *day) * 86_400 + h * 3600 + mi * 60 + sec) * 1000 + ms.parse::<i64>().ok()?)
}

// Days since 1970-01-01 and the proleptic Gregorian calendar, both ways (the well-known
// era-based conversion: 400-year eras of 146097 days, years starting in March).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_text_is_the_calendar_date_and_parses_back() {
        assert_eq!(utc_text(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_964_002_042);
        assert_eq!(utc_text(t), "2026-11-29T14:53:22.042Z");
        assert_eq!(utc_text(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
        for ms in [0i64, 951_782_400_000, 1_795_964_002_042, 4_102_444_799_999] {
            assert_eq!(parse_utc(&utc_text(UNIX_EPOCH + Duration::from_millis(ms as u64))), Some(ms));
        }
    }

    #[test]
    fn shards_merge_when_they_agree_and_name_the_field_when_not() {
        let base = json!({"version": "1", "net_sha256": "ab", "options": {"iters": 6, "layer": "fc8"}, "precision": "f32"});
        let shard = |device: &str, start: u64, secs: f64| {
            let mut m = timed(&base, UNIX_EPOCH + Duration::from_secs(start), secs);
            m["device"] = json!(device);
            m
        };
        let m = merged(&[
            ("a".into(), shard("cuda:0", 100, 10.0)),
            ("b".into(), shard("cuda:1", 95, 5.5)),
            ("c".into(), shard("cuda:0", 100, 1.0)),
        ])
        .unwrap();
        assert_eq!(m["device"], "cuda:0, cuda:1");
        assert_eq!(m["started"], utc_text(UNIX_EPOCH + Duration::from_secs(95)));
        assert_eq!(m["seconds"], 15.0);
        assert_eq!(m["options"], base["options"]);
        let mut other = shard("cpu", 100, 1.0);
        other["options"]["iters"] = json!(7);
        let e = merged(&[("a".into(), shard("cpu", 100, 1.0)), ("b".into(), other)]).unwrap_err().to_string();
        assert!(e.contains("options.iters"), "{e}");
    }
}
