//! `dgnam gradcheck`: are the gradients dgnam climbs right for this net, on this machine?
//!
//! - Per layer ([`layer`], [`numeric`]): the layer alone in f64 on the CPU reference, with
//!   its real weights (a prototxt's seeded random ones) and real channel counts, its height
//!   and width divided by `--scale` where its geometry allows; a random input and a random
//!   `r`; the data gradient and every weight gradient of `sum(y * r)` against central
//!   differences on a sample of coordinates.
//! - Whole net: the gradient of one unit of the last layer with respect to the input, at the
//!   real input size and batch 1, the same way.
//! - On a GPU ([`gpu`]): every layer forward and backward against the CPU in f32.
//!
//! The relative error of a coordinate is `|numeric - analytic| / (rms + max(|numeric|,
//! |analytic|))`, where `rms` is the root mean square of the blob's whole analytic gradient
//! (so entries near zero are compared on the blob's own scale). A layer passes at 1e-6, the
//! whole net at [`NET_TOLERANCE`].

pub mod gpu;
pub mod layer;
pub mod numeric;
mod report;

use crate::device::cpu::CpuParam;
use crate::device::Cpu;
use crate::graph::{unit_offset, BlobId, CpuNet, Net, Plan, UnitRef};
use crate::io::{NetSource, Progress};
use crate::ops::gradcheck::Rng;
pub use crate::ops::gradcheck::TOLERANCE;
use crate::ops::Kernels;
use crate::rng::{fnv1a, FNV1A_START};
use anyhow::{bail, ensure, Context, Result};
use numeric::{BlobCheck, Fd, Part};
use report::{describe, multi_index};
use std::borrow::Cow;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

pub use report::{GpuResult, LayerResult, NetResult, Report};

/// The whole net's pass threshold. Every value a deep net computes after the perturbed
/// pixel is rounded anew in each pass, and a pixel moves the output by little: on GoogLeNet
/// at eps 1e-6 the central differences of d prob / d input are off by 3e-7 (median) and
/// 2e-6 (worst of 150 coordinates) from rounding alone (the error falls as 1/eps, while
/// kinks become more frequent as eps grows).
pub const NET_TOLERANCE: f64 = 1e-5;

/// Where the gradients are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckDevice {
    /// f64 finite differences on the CPU reference.
    Cpu,
    /// Every layer on the GPU against the CPU.
    Cuda,
    /// Both.
    Both,
}

impl CheckDevice {
    pub fn cpu(self) -> bool {
        matches!(self, CheckDevice::Cpu | CheckDevice::Both)
    }

    pub fn gpu(self) -> bool {
        matches!(self, CheckDevice::Cuda | CheckDevice::Both)
    }

    pub fn name(self) -> &'static str {
        match self {
            CheckDevice::Cpu => "cpu",
            CheckDevice::Cuda => "cuda",
            CheckDevice::Both => "both",
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct GradcheckOptions {
    /// The net: a .dgnw (its weights) or a .prototxt (seeded random weights at the real shapes).
    #[arg(long)]
    pub net: PathBuf,
    /// The layers to check, comma-separated, or `all` (only `all` also checks the whole net).
    #[arg(long, default_value = "all")]
    pub layers: String,
    /// Batch size of each layer's check (the whole net runs at batch 1).
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Divides each layer's input height and width (rounded up), as far as its kernel,
    /// stride, pad and weights allow; 1 checks at the real sizes.
    #[arg(long, default_value_t = 8.0)]
    pub scale: f64,
    /// Seeds the inputs, the sampled coordinates and a prototxt's random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Step of the central differences (in f64).
    #[arg(long, default_value_t = 1e-6)]
    pub eps: f64,
    /// Coordinates checked per blob: about this many of each layer's input and of each weight blob.
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    /// Coordinates of the net's input in the whole-net check (two forward passes each; 0 skips it).
    #[arg(long, default_value_t = 16)]
    pub net_samples: usize,
    /// cpu: f64 finite differences; cuda: every layer on the GPU against the CPU; both.
    #[arg(long, default_value = "cpu")]
    pub device: CheckDevice,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl GradcheckOptions {
    /// The options for `net` with every other flag at its default (as clap reads them).
    pub fn new(net: PathBuf) -> Self {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            o: GradcheckOptions,
        }
        <Flags as clap::Parser>::parse_from([OsString::from("gradcheck"), "--net".into(), net.into_os_string()]).o
    }

    pub fn check(&self) -> Result<()> {
        ensure!(self.batch >= 1, "--batch must be at least 1");
        ensure!(self.scale.is_finite() && self.scale >= 1.0, "--scale {}: must be a number of at least 1", self.scale);
        ensure!(self.eps.is_finite() && self.eps > 0.0 && self.eps < 1.0, "--eps {}: must be between 0 and 1", self.eps);
        ensure!(self.samples >= 1, "--samples must be at least 1");
        ensure!(!self.layers.split(',').all(|l| l.trim().is_empty()), "--layers: no layer given (name some, or `all`)");
        Ok(())
    }

    fn all_layers(&self) -> bool {
        self.layers.trim() == "all"
    }

    /// The nodes `--layers` names, in the net's order.
    fn selected(&self, plan: &Plan) -> Result<Vec<usize>> {
        if self.all_layers() {
            return Ok((0..plan.nodes.len()).collect());
        }
        let mut nodes = Vec::new();
        for name in self.layers.split(',').map(str::trim).filter(|l| !l.is_empty()) {
            let Some(i) = plan.nodes.iter().position(|n| n.layer == name) else {
                bail!("--layers: {} has no layer '{name}' (`dgnam info {}` lists them)", self.net.display(), self.net.display());
            };
            nodes.push(i);
        }
        nodes.sort_unstable();
        nodes.dedup();
        Ok(nodes)
    }

    fn fd(&self, data_samples: usize) -> Fd {
        Fd { eps: self.eps, tolerance: TOLERANCE, data_samples, param_samples: self.samples }
    }
}

/// A seed for one part of the run that depends on nothing but `--seed` and the part's name,
/// so a layer's check is the same whichever other layers are checked.
fn rng_for(seed: u64, what: &str) -> Rng {
    Rng::new(seed ^ fnv1a(FNV1A_START, what.as_bytes()))
}

/// Node `i` of `real`'s plan checked alone in f64.
fn check_layer(def: &crate::ir::NetDef, real: &CpuNet<f32>, i: usize, o: &GradcheckOptions) -> Result<LayerResult> {
    let node = &real.plan.nodes[i];
    let mut rng = rng_for(o.seed, &node.layer);
    let plan = layer::alone(def, &real.plan, i, o.scale)?;
    let mut params = real.node_params(i).iter();
    let mut net = Net::new(plan, Cpu::<f64>::new(), |_, _| {
        let p = params.next().context("one parameter per blob")?;
        Ok((CpuParam::new(Cow::Owned(p.iter().map(|&v| v as f64).collect())), p.len()))
    })?;
    let inputs: Vec<Vec<f64>> = net.plan.inputs.iter().map(|&id| rng.uniform_vec(net.plan.blobs[id].len(), -1.0, 1.0)).collect();
    let seeds: Vec<(BlobId, Vec<f64>)> =
        net.plan.nodes[0].tops.iter().map(|&t| (t, rng.uniform_vec(net.plan.blobs[t].len(), -1.0, 1.0))).collect();
    let checks = numeric::check_net(&mut net, &inputs, &seeds, &o.fd(o.samples), &mut rng)?;
    let input_shapes: Vec<Vec<usize>> = net.plan.inputs.iter().map(|&id| net.plan.blobs[id].shape.clone()).collect();
    let what = |c: &BlobCheck| match c.part {
        Part::Input(k) => format!("data gradient of bottom '{}'", net.plan.blobs[net.plan.inputs[k]].name),
        Part::Param { index, .. } => format!("weight gradient of blob {index}"),
    };
    let worst = checks.iter().max_by(|a, b| a.outcome.rel_err().total_cmp(&b.outcome.rel_err()));
    let max_of =
        |data: bool| checks.iter().filter(|c| matches!(c.part, Part::Input(_)) == data).map(|c| c.outcome.rel_err()).reduce(f64::max);
    let pass = checks.iter().all(|c| c.outcome.passes(TOLERANCE));
    Ok(LayerResult {
        layer: node.layer.clone(),
        type_name: node.type_name.to_string(),
        input_shapes,
        data_rel_err: max_of(true).unwrap_or(0.0),
        weight_rel_err: max_of(false),
        coordinates: checks.iter().map(|c| c.outcome.checked).sum(),
        kinks: checks.iter().map(|c| c.outcome.kinks).sum(),
        worst: worst.and_then(|c| describe(&what(c), &c.shape, &c.outcome)),
        pass,
        seconds: 0.0,
    })
}

/// The gradient of one unit of the last layer with respect to the input, the real net at
/// batch 1 in f64.
fn check_whole_net(def: &crate::ir::NetDef, real: &CpuNet<f32>, o: &GradcheckOptions) -> Result<NetResult> {
    let mut rng = rng_for(o.seed, "whole net");
    let plan = Plan::new(def, 1)?;
    let mut params = (0..real.plan.nodes.len()).flat_map(|i| real.node_params(i).iter());
    let net = Net::new(plan, Cpu::<f64>::new(), |_, _| {
        let p = params.next().context("one parameter per blob")?;
        Ok((CpuParam::new(Cow::Owned(p.iter().map(|&v| v as f64).collect())), p.len()))
    })?;
    let inputs: Vec<Vec<f64>> = net.plan.inputs.iter().map(|&id| rng.uniform_vec(net.plan.blobs[id].len(), -1.0, 1.0)).collect();
    let blob = net.plan.last_output();
    let layer = net.plan.nodes.last().map_or(net.plan.blobs[blob].name.clone(), |n| n.layer.clone());
    let shape = net.plan.blobs[blob].shape.clone();
    let unit = UnitRef { unit: (rng.next_u64() % shape.get(1).copied().unwrap_or(1).max(1) as u64) as usize, xy: None };
    let offset = unit_offset(&shape, unit, &layer)?;
    let fd = Fd { tolerance: NET_TOLERANCE, ..o.fd(o.net_samples) };
    let check = numeric::check_unit(&net, &inputs, blob, offset, &fd, &mut rng)?;
    let input_shape = net.plan.blobs[net.plan.inputs[0]].shape.clone();
    let name = format!("{layer}{}", multi_index(&shape[1..], offset));
    Ok(NetResult {
        worst: describe(&format!("gradient of {name}"), &input_shape, &check.outcome),
        unit: name,
        input_shape,
        input_rel_err: check.outcome.rel_err(),
        coordinates: check.outcome.checked,
        kinks: check.outcome.kinks,
        pass: check.outcome.passes(NET_TOLERANCE),
        seconds: 0.0,
    })
}

/// Runs the checks `o` asks for: on the CPU, and against `other` (the GPU) when given. Each
/// result's line goes to `rows` as soon as it is known; progress to `progress`.
pub fn run<G: Kernels<Scalar = f32>>(
    o: &GradcheckOptions,
    other: Option<G>,
    progress: &dyn Progress,
    rows: &mut dyn FnMut(&str),
) -> Result<Report> {
    o.check()?;
    ensure!(
        o.device.gpu() == other.is_some(),
        "--device {}: {} other device given",
        o.device.name(),
        if other.is_some() { "an" } else { "no" }
    );
    let src = NetSource::open(&o.net)?;
    let real = src.build(o.batch, o.seed, Cpu::<f32>::new())?;
    let nodes = o.selected(&real.plan)?;
    let whole = o.device.cpu() && o.all_layers() && o.net_samples > 0;
    let total = if o.device.cpu() { nodes.len() + whole as usize } else { 0 } + if other.is_some() { nodes.len() } else { 0 };
    let mut report = Report { file: o.net.clone(), eps: o.eps, layers: Vec::new(), net: None, gpu: None };
    progress.start(total as u64, "checks");
    if o.device.cpu() {
        for &i in &nodes {
            let node = &real.plan.nodes[i];
            progress.status(&format!("{} ({})", node.layer, node.type_name));
            let start = Instant::now();
            let mut r = check_layer(&src.def, &real, i, o)
                .with_context(|| format!("{}: layer '{}' ({})", o.net.display(), node.layer, node.type_name))?;
            r.seconds = start.elapsed().as_secs_f64();
            rows(&r.line());
            report.layers.push(r);
            progress.advance(1);
        }
        if whole {
            progress.status("the whole net");
            let start = Instant::now();
            let mut r = check_whole_net(&src.def, &real, o).with_context(|| format!("{}: the whole net", o.net.display()))?;
            r.seconds = start.elapsed().as_secs_f64();
            rows(&r.line());
            report.net = Some(r);
            progress.advance(1);
        }
    }
    if let Some(other) = other {
        let other = src.build(o.batch, o.seed, other)?;
        let cs = gpu::reference(&real, &mut rng_for(o.seed, "gpu"))?;
        let mut results = Vec::new();
        for &i in &nodes {
            let node = &real.plan.nodes[i];
            progress.status(&format!("{} ({}) on the GPU", node.layer, node.type_name));
            let start = Instant::now();
            let c = gpu::compare_node(&real, &cs, &other, i, &mut rng_for(o.seed, &format!("gpu {}", node.layer)))
                .with_context(|| format!("{}: layer '{}' ({}) on the GPU", o.net.display(), node.layer, node.type_name))?;
            let worst = c.backward.iter().fold(c.forward.clone(), |w, b| w.worse(b.clone()));
            let r = GpuResult {
                layer: node.layer.clone(),
                type_name: node.type_name.to_string(),
                forward_err: c.forward.err,
                backward_err: c.backward.as_ref().map(|b| b.err),
                pass: worst.pass,
                worst: worst.worst,
                seconds: start.elapsed().as_secs_f64(),
            };
            rows(&r.line());
            results.push(r);
            progress.advance(1);
        }
        report.gpu = Some(results);
    }
    progress.finish();
    Ok(report)
}
