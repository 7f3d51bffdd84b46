//! What `dgnam gradcheck` found: a result per layer, the whole net and each layer on the
//! GPU, as lines of text and as JSON.

use super::{NET_TOLERANCE, TOLERANCE};
use crate::ops::gradcheck::Outcome;
use crate::tensor::fmt_shape;
use serde_json::{json, Value};
use std::path::PathBuf;

/// One layer's f64 check.
#[derive(Clone, Debug)]
pub struct LayerResult {
    pub layer: String,
    pub type_name: String,
    /// The shapes of the layer's inputs as checked (reduced by `--scale`).
    pub input_shapes: Vec<Vec<usize>>,
    /// The largest relative error over the data gradients of its bottoms.
    pub data_rel_err: f64,
    /// The same over its weight gradients; None for a layer without weights.
    pub weight_rel_err: Option<f64>,
    /// Coordinates compared, and skipped at kinks.
    pub coordinates: usize,
    pub kinks: usize,
    /// The worst coordinate: which gradient, where, and both values.
    pub worst: Option<String>,
    pub pass: bool,
    pub seconds: f64,
}

/// The whole net's check.
#[derive(Clone, Debug)]
pub struct NetResult {
    /// The unit whose input gradient was checked, e.g. `prob[417]`.
    pub unit: String,
    pub input_shape: Vec<usize>,
    pub input_rel_err: f64,
    pub coordinates: usize,
    pub kinks: usize,
    pub worst: Option<String>,
    pub pass: bool,
    pub seconds: f64,
}

/// One layer on the GPU against the CPU.
#[derive(Clone, Debug)]
pub struct GpuResult {
    pub layer: String,
    pub type_name: String,
    pub forward_err: f64,
    /// None for layers that only copy data.
    pub backward_err: Option<f64>,
    pub worst: String,
    pub pass: bool,
    pub seconds: f64,
}

/// Everything a run found.
#[derive(Clone, Debug)]
pub struct Report {
    pub file: PathBuf,
    pub eps: f64,
    pub layers: Vec<LayerResult>,
    pub net: Option<NetResult>,
    pub gpu: Option<Vec<GpuResult>>,
}

fn opt_err(e: Option<f64>) -> String {
    e.map_or("-".to_string(), |e| format!("{e:.2e}"))
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "pass"
    } else {
        "FAIL"
    }
}

impl LayerResult {
    pub fn line(&self) -> String {
        let s = format!(
            "{:<28} {:<14} data {:>9}  weights {:>9}  {}",
            self.layer,
            self.type_name,
            format!("{:.2e}", self.data_rel_err),
            opt_err(self.weight_rel_err),
            verdict(self.pass)
        );
        s + &notes(self.kinks, self.worst.as_ref(), self.pass)
    }
}

/// What follows a result's line: the kinks skipped, and a failure's worst coordinate.
fn notes(kinks: usize, worst: Option<&String>, pass: bool) -> String {
    let mut s = String::new();
    if kinks > 0 {
        s += &format!("  ({kinks} coordinates at kinks skipped)");
    }
    if let Some(w) = worst.filter(|_| !pass) {
        s += &format!("  worst: {w}");
    }
    s
}

impl NetResult {
    pub fn line(&self) -> String {
        let s = format!(
            "whole net: d {} / d input ({}) at {} coordinates: rel err {:.2e}  {}",
            self.unit,
            fmt_shape(&self.input_shape),
            self.coordinates,
            self.input_rel_err,
            verdict(self.pass)
        );
        s + &notes(self.kinks, self.worst.as_ref(), self.pass)
    }
}

impl GpuResult {
    pub fn line(&self) -> String {
        let mut s = format!(
            "gpu {:<24} {:<14} forward {:>9}  backward {:>9}  {}",
            self.layer,
            self.type_name,
            format!("{:.2e}", self.forward_err),
            opt_err(self.backward_err),
            verdict(self.pass)
        );
        if !self.pass {
            s += &format!("  worst: {}", self.worst);
        }
        s
    }
}

impl Report {
    pub fn pass(&self) -> bool {
        self.layers.iter().all(|l| l.pass) && self.net.as_ref().is_none_or(|n| n.pass) && self.gpu.iter().flatten().all(|g| g.pass)
    }

    /// The layers (and the whole net) that failed, by name.
    pub fn failures(&self) -> Vec<String> {
        let mut names: Vec<String> = self.layers.iter().filter(|l| !l.pass).map(|l| l.layer.clone()).collect();
        if self.net.as_ref().is_some_and(|n| !n.pass) {
            names.push("the whole net".into());
        }
        names.extend(self.gpu.iter().flatten().filter(|g| !g.pass).map(|g| format!("{} on the GPU", g.layer)));
        names
    }

    /// The summary line.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.layers.is_empty() || self.gpu.is_none() {
            let passed = self.layers.iter().filter(|l| l.pass).count();
            parts.push(format!(
                "{passed} of {} layers pass the f64 check (central differences, eps {:e}, relative error <= {TOLERANCE:e})",
                self.layers.len(),
                self.eps
            ));
        }
        if let Some(n) = &self.net {
            parts.push(format!("the whole net {} (relative error <= {NET_TOLERANCE:e})", if n.pass { "passes" } else { "FAILS" }));
        }
        if let Some(g) = &self.gpu {
            let passed = g.iter().filter(|g| g.pass).count();
            parts.push(format!("{passed} of {} layers match the CPU on the GPU (|gpu - cpu| <= 1e-4 max|cpu| + 1e-5)", g.len()));
        }
        format!("{}: {}: {}", self.file.display(), parts.join("; "), if self.pass() { "all pass" } else { "FAILED" })
    }

    pub fn to_json(&self) -> Value {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| {
                json!({
                    "layer": l.layer, "type": l.type_name, "data_rel_err": l.data_rel_err, "weight_rel_err": l.weight_rel_err,
                    "pass": l.pass, "input_shapes": l.input_shapes, "coordinates": l.coordinates, "kinks": l.kinks, "worst": l.worst,
                    "seconds": l.seconds,
                })
            })
            .collect();
        let net = self.net.as_ref().map(|n| {
            json!({
                "input_rel_err": n.input_rel_err, "pass": n.pass, "unit": n.unit, "input_shape": n.input_shape,
                "coordinates": n.coordinates, "kinks": n.kinks, "worst": n.worst, "tolerance": NET_TOLERANCE,
                "seconds": n.seconds,
            })
        });
        let gpu = self.gpu.as_ref().map(|g| {
            g.iter()
                .map(|g| {
                    json!({
                        "layer": g.layer, "type": g.type_name, "forward_err": g.forward_err, "backward_err": g.backward_err,
                        "pass": g.pass, "worst": g.worst, "seconds": g.seconds,
                    })
                })
                .collect::<Vec<_>>()
        });
        json!({
            "file": self.file.display().to_string(), "layers": layers, "net": net, "gpu": gpu, "pass": self.pass(),
            "eps": self.eps, "tolerance": TOLERANCE,
        })
    }
}

/// `[1,3,0,2]`: a flat index into `shape` as one index per axis.
pub(super) fn multi_index(shape: &[usize], mut flat: usize) -> String {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        idx[i] = flat % d.max(1);
        flat /= d.max(1);
    }
    format!("[{}]", idx.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","))
}

/// The worst coordinate of a check, in words.
pub(super) fn describe(what: &str, shape: &[usize], o: &Outcome) -> Option<String> {
    o.worst.map(|w| {
        format!(
            "{what} ({}) at {}: finite difference {:.6e}, analytic {:.6e}",
            fmt_shape(shape),
            multi_index(shape, w.index),
            w.numeric,
            w.analytic
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_indices_read_as_one_index_per_axis() {
        assert_eq!(multi_index(&[2, 3, 4], 0), "[0,0,0]");
        assert_eq!(multi_index(&[2, 3, 4], 23), "[1,2,3]");
        assert_eq!(multi_index(&[2, 3, 4], 13), "[1,0,1]");
    }
}
