//! Kernel versions side by side, chosen on the device by measurement, so a kernel written
//! without a GPU can never make dgnam slower: it runs only where it measured faster.
//!
//! A kernel with several versions lists them in order (`functions[i]` is version i + 1, as
//! llm.c numbers its kernels). The first time a shape needs the kernel on a device, every
//! version that applies is timed on it and the fastest is kept, in memory and in
//! `kernel-versions.json` beside the PTX cache. An entry's key names the device, its driver,
//! the kernel source's hash (so an edited kernel is measured again) and the shape. An entry
//! that does not check out (a version out of range, a time per version missing, or a
//! winner that is not the fastest of its own times) is measured again, and an unreadable
//! file is replaced: the cache is never trusted blindly.
//!
//! `DGNAM_KERNEL_VERSIONS=im2col=1,col2im=2` (or `all=1`) forces versions, for A/B runs and
//! for `dgnam bench --versions`.

use crate::fsutil::write_atomic;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The numbered versions of one kernel.
pub struct Versions {
    /// The kernel's name in keys, `DGNAM_KERNEL_VERSIONS` and `bench --versions`.
    pub kernel: &'static str,
    /// Its entry points, version 1 first.
    pub functions: &'static [&'static str],
}

impl Versions {
    /// The entry point of version `v` (1-based).
    pub fn function(&self, v: usize) -> &'static str {
        self.functions[v - 1]
    }
}

/// The file's format tag; another tag is a file of another format, measured again.
const FORMAT: &str = "dgnam-kernel-versions-1";

/// One remembered choice: the winner and every candidate's time.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub version: usize,
    pub microseconds: Vec<f64>,
}

impl Entry {
    /// Whether the entry can be used for a kernel with `eligible` versions.
    fn checks_out(&self, eligible: usize) -> bool {
        let times_ok = self.microseconds.len() == eligible && self.microseconds.iter().all(|t| t.is_finite() && *t > 0.0);
        times_ok && (1..=eligible).contains(&self.version) && fastest(&self.microseconds) == self.version
    }
}

/// The 1-based index of the smallest time (the first of equals).
fn fastest(times: &[f64]) -> usize {
    let mut best = 0;
    for (i, t) in times.iter().enumerate() {
        if *t < times[best] {
            best = i;
        }
    }
    best + 1
}

/// Versions forced by `DGNAM_KERNEL_VERSIONS`: kernel name (or `all`) to version.
pub fn parse_forced(text: &str) -> Result<BTreeMap<String, usize>> {
    let mut forced = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((kernel, version)) = item.split_once('=') else {
            bail!("DGNAM_KERNEL_VERSIONS: '{item}' is not KERNEL=VERSION (e.g. im2col=2, or all=1)");
        };
        let v: usize = version
            .trim()
            .parse()
            .ok()
            .filter(|v| *v >= 1)
            .with_context(|| format!("DGNAM_KERNEL_VERSIONS: version '{version}' of {kernel} is not a number from 1"))?;
        forced.insert(kernel.trim().to_string(), v);
    }
    Ok(forced)
}

/// The choices of one device, remembered across runs.
pub struct Tuner {
    path: Option<PathBuf>,
    device: String,
    entries: BTreeMap<String, Entry>,
    forced: BTreeMap<String, usize>,
    read: bool,
    /// How many choices were measured in this process (for tests and `bench --versions`).
    pub measured: usize,
}

impl Tuner {
    /// `device` names the GPU and its driver; `path` is the cache file (None: memory only).
    pub fn new(path: Option<PathBuf>, device: String, forced: BTreeMap<String, usize>) -> Tuner {
        Tuner { path, device, entries: BTreeMap::new(), forced, read: false, measured: 0 }
    }

    /// The default cache file: `kernel-versions.json` in the PTX cache's directory.
    pub fn default_path() -> Option<PathBuf> {
        super::compile::cache_dir().map(|d| d.join("kernel-versions.json"))
    }

    /// Forces `kernel` (or `all`) to `version`, or lifts the force with None.
    pub fn force(&mut self, kernel: &str, version: Option<usize>) {
        match version {
            Some(v) => self.forced.insert(kernel.to_string(), v),
            None => self.forced.remove(kernel),
        };
    }

    fn key(&self, v: &Versions, source_hash: &str, shape: &str) -> String {
        format!("{} | {} | {} | {}", self.device, source_hash, v.kernel, shape)
    }

    /// Entries of the cache file; an unreadable or foreign file gives none (and is
    /// replaced on the next write).
    fn read_file(&mut self) {
        self.read = true;
        let Some(text) = self.path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) else { return };
        let Ok(doc) = serde_json::from_str::<Value>(&text) else { return };
        if doc["format"] != FORMAT {
            return;
        }
        let Some(entries) = doc["entries"].as_object() else { return };
        for (key, e) in entries {
            let version = e["version"].as_u64().map(|v| v as usize);
            let times: Option<Vec<f64>> = e["microseconds"].as_array().and_then(|a| a.iter().map(Value::as_f64).collect());
            if let (Some(version), Some(microseconds)) = (version, times) {
                self.entries.insert(key.clone(), Entry { version, microseconds });
            }
        }
    }

    fn write_file(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let entries: serde_json::Map<String, Value> =
            self.entries.iter().map(|(k, e)| (k.clone(), json!({ "version": e.version, "microseconds": e.microseconds }))).collect();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&json!({ "format": FORMAT, "entries": entries }))?;
        write_atomic(path, text.as_bytes())
    }

    /// What is known of `v` for `shape` without measuring: the version to run, or the key
    /// to measure under (`choose`).
    fn known(&mut self, v: &Versions, eligible: usize, source_hash: &str, shape: &str) -> Result<usize, String> {
        if let Some(&f) = self.forced.get(v.kernel).or_else(|| self.forced.get("all")) {
            // A forced version the shape cannot take falls back to version 1, which takes all.
            return Ok(if f <= eligible { f } else { 1 });
        }
        if eligible == 1 {
            return Ok(1);
        }
        if !self.read {
            self.read_file();
        }
        let key = self.key(v, source_hash, shape);
        match self.entries.get(&key).filter(|e| e.checks_out(eligible)) {
            Some(e) => Ok(e.version),
            None => Err(key),
        }
    }

    /// Remembers the times measured under `key` (in this process and in the cache file) and
    /// returns the fastest version.
    fn remember(&mut self, key: String, microseconds: Vec<f64>) -> usize {
        let version = fastest(&microseconds);
        self.entries.insert(key, Entry { version, microseconds });
        self.measured += 1;
        let _ = self.write_file();
        version
    }

    /// The remembered entry for `shape`, if any (tests, `bench --versions`).
    pub fn entry(&self, v: &Versions, source_hash: &str, shape: &str) -> Option<&Entry> {
        self.entries.get(&self.key(v, source_hash, shape))
    }
}

/// The version of `v` to run for `shape`, of the first `eligible` versions (those that
/// apply to this shape): forced, else remembered, else timed now with `measure(version)`
/// (seconds) and remembered. The tuner is not borrowed while `measure` runs, so a version
/// may itself run kernels whose versions the tuner chooses (the transpose pass's column path
/// runs col2im). A failed write of the cache file is not an error: the choice holds for this
/// process and is measured again in the next.
pub fn choose(
    tuner: &RefCell<Tuner>,
    v: &Versions,
    eligible: usize,
    source_hash: &str,
    shape: &str,
    measure: &mut dyn FnMut(usize) -> Result<f64>,
) -> Result<usize> {
    let eligible = eligible.clamp(1, v.functions.len());
    let key = match tuner.borrow_mut().known(v, eligible, source_hash, shape) {
        Ok(version) => return Ok(version),
        Err(key) => key,
    };
    let mut microseconds = Vec::with_capacity(eligible);
    for version in 1..=eligible {
        let s = measure(version).with_context(|| format!("timing {} version {version}", v.kernel))?;
        microseconds.push(s * 1e6);
    }
    Ok(tuner.borrow_mut().remember(key, microseconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: Versions = Versions { kernel: "k", functions: &["k", "k2"] };

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dgnam-tune-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("kernel-versions.json")
    }

    /// A measure that reports the given seconds per version and counts its calls.
    fn timer<'a>(times: &'static [f64], calls: &'a mut usize) -> impl FnMut(usize) -> Result<f64> + 'a {
        move |v| {
            *calls += 1;
            Ok(times[v - 1])
        }
    }

    #[test]
    fn the_fastest_version_is_measured_once_then_remembered_across_runs() {
        let path = tmp("remember");
        let mut calls = 0;
        let t = RefCell::new(Tuner::new(Some(path.clone()), "GPU A | driver 1".into(), BTreeMap::new()));
        assert_eq!(choose(&t, &TWO, 2, "h1", "8x8", &mut timer(&[2e-6, 1e-6], &mut calls)).unwrap(), 2);
        assert_eq!(calls, 2);
        assert_eq!(choose(&t, &TWO, 2, "h1", "8x8", &mut timer(&[2e-6, 1e-6], &mut calls)).unwrap(), 2);
        assert_eq!(calls, 2, "the second choice is remembered");
        // A new process reads the file and measures nothing.
        let t = RefCell::new(Tuner::new(Some(path.clone()), "GPU A | driver 1".into(), BTreeMap::new()));
        assert_eq!(choose(&t, &TWO, 2, "h1", "8x8", &mut timer(&[1e-6, 2e-6], &mut calls)).unwrap(), 2);
        assert_eq!((calls, t.borrow().measured), (2, 0));
        // Another shape, source, device or driver is measured on its own.
        for (device, hash, shape) in
            [("GPU A | driver 1", "h1", "9x9"), ("GPU A | driver 1", "h2", "8x8"), ("GPU A | driver 2", "h1", "8x8")]
        {
            let t = RefCell::new(Tuner::new(Some(path.clone()), device.into(), BTreeMap::new()));
            let before = calls;
            assert_eq!(choose(&t, &TWO, 2, hash, shape, &mut timer(&[1e-6, 2e-6], &mut calls)).unwrap(), 1);
            assert_eq!(calls, before + 2, "{device} {hash} {shape}");
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_corrupt_or_doctored_cache_is_measured_again() {
        let path = tmp("corrupt");
        let mut calls = 0;
        for text in [
            "not json".to_string(),
            r#"{"format": "something else", "entries": {}}"#.to_string(),
            // The winner is not the fastest of its own times.
            format!(r#"{{"format": "{FORMAT}", "entries": {{"D | h | k | s": {{"version": 2, "microseconds": [1.0, 5.0]}}}}}}"#),
            // A version the kernel does not have, and times missing.
            format!(r#"{{"format": "{FORMAT}", "entries": {{"D | h | k | s": {{"version": 3, "microseconds": [1.0, 5.0, 0.5]}}}}}}"#),
            format!(r#"{{"format": "{FORMAT}", "entries": {{"D | h | k | s": {{"version": 1, "microseconds": [1.0]}}}}}}"#),
        ] {
            std::fs::write(&path, &text).unwrap();
            let t = RefCell::new(Tuner::new(Some(path.clone()), "D".into(), BTreeMap::new()));
            let before = calls;
            assert_eq!(choose(&t, &TWO, 2, "h", "s", &mut timer(&[3e-6, 1e-6], &mut calls)).unwrap(), 2, "{text}");
            assert_eq!(calls, before + 2, "measured again after: {text}");
            // ...and the file now holds the new measurement.
            let t = RefCell::new(Tuner::new(Some(path.clone()), "D".into(), BTreeMap::new()));
            assert_eq!(choose(&t, &TWO, 2, "h", "s", &mut timer(&[1e-6, 3e-6], &mut calls)).unwrap(), 2);
            assert_eq!(calls, before + 2);
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn forced_and_single_versions_measure_nothing() {
        let mut calls = 0;
        let t = RefCell::new(Tuner::new(None, "D".into(), parse_forced("k=1").unwrap()));
        assert_eq!(choose(&t, &TWO, 2, "h", "s", &mut timer(&[2e-6, 1e-6], &mut calls)).unwrap(), 1);
        t.borrow_mut().force("k", None);
        t.borrow_mut().force("all", Some(2));
        assert_eq!(choose(&t, &TWO, 2, "h", "s", &mut timer(&[1e-6, 2e-6], &mut calls)).unwrap(), 2);
        // A shape only version 1 takes runs version 1, forced or not.
        assert_eq!(choose(&t, &TWO, 1, "h", "s", &mut timer(&[1e-6, 2e-6], &mut calls)).unwrap(), 1);
        t.borrow_mut().force("all", None);
        assert_eq!(choose(&t, &TWO, 1, "h", "s", &mut timer(&[1e-6, 2e-6], &mut calls)).unwrap(), 1);
        assert_eq!(calls, 0);
        // A failing measurement is an error naming the kernel, not a silent choice.
        let e = choose(&t, &TWO, 2, "h", "s", &mut |_| bail!("launch failed")).unwrap_err();
        assert!(format!("{e:#}").contains("timing k version 1"), "{e:#}");
    }

    /// A version being measured may itself ask the tuner for another kernel's version (the
    /// transpose pass's column path runs col2im): the tuner is not borrowed meanwhile.
    #[test]
    fn a_version_may_choose_another_kernel_while_it_is_measured() {
        const OTHER: Versions = Versions { kernel: "o", functions: &["o", "o2"] };
        let t = RefCell::new(Tuner::new(None, "D".into(), BTreeMap::new()));
        let mut inner = 0;
        let got = choose(&t, &TWO, 2, "h", "s", &mut |v| {
            inner = choose(&t, &OTHER, 2, "h", "s", &mut |w| Ok(w as f64 * 1e-6))?;
            Ok(if v == 2 { 1e-6 } else { 2e-6 })
        });
        assert_eq!((got.unwrap(), inner, t.borrow().measured), (2, 1, 2));
    }

    #[test]
    fn forced_versions_parse_or_say_what_is_wrong() {
        assert_eq!(parse_forced("im2col=2, col2im=1").unwrap(), BTreeMap::from([("col2im".into(), 1), ("im2col".into(), 2)]));
        assert!(parse_forced("").unwrap().is_empty());
        for bad in ["im2col", "im2col=0", "im2col=two"] {
            let e = parse_forced(bad).unwrap_err().to_string();
            assert!(e.starts_with("DGNAM_KERNEL_VERSIONS"), "{bad}: {e}");
        }
    }
}
