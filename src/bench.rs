//! Benchmarks (SPEC section 7). Kernels: every node of CaffeNet and the fc6 generator run
//! alone through the `Backend` trait, in each direction, as a median over repetitions after a
//! warm-up, rated against the device's peak. Step: the whole DGN-AM iteration (or a
//! classifier forward + backward to the input), timed per iteration. `dgnam bench` and
//! `benches/kernels.rs` call these.

use crate::device::cuda::{DeviceInfo, Precision};
use crate::device::{Backend, Cpu, Cuda};
use crate::graph::{Net, Node, Op, Plan};
use crate::io::{default_path, Device, NetSource};
use crate::rng::Rng;
use crate::synth::dgn::{Dgn, Objective, Schedule};
use crate::synth::kernels::DgnKernels;
use crate::tensor::fmt_shape;
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

/// A backend whose calls may return before the work is done (CUDA launches).
pub trait Fence: DgnKernels<Scalar = f32> {
    /// Waits for all queued work.
    fn fence(&self) -> Result<()>;
}

impl Fence for Cpu<'_, f32> {
    fn fence(&self) -> Result<()> {
        Ok(())
    }
}

impl Fence for Cuda {
    fn fence(&self) -> Result<()> {
        self.synchronize()
    }
}

/// How often each measurement runs.
#[derive(Clone, Copy, Debug)]
pub struct Reps {
    pub warmup: usize,
    /// Timed runs; None: as many as fit `budget_s` after the warm-up (3 to 100).
    pub fixed: Option<usize>,
    pub budget_s: f64,
}

impl Default for Reps {
    fn default() -> Self {
        Reps { warmup: 1, fixed: None, budget_s: 0.25 }
    }
}

impl Reps {
    /// One timed run, no warm-up: for tests.
    pub fn quick() -> Self {
        Reps { warmup: 0, fixed: Some(1), budget_s: 0.0 }
    }

    pub fn fixed(n: usize) -> Self {
        Reps { warmup: 1, fixed: Some(n.max(1)), budget_s: 0.0 }
    }
}

/// The median seconds of `f`, fenced on both sides so queued device work counts.
pub fn time_median<B: Fence>(b: &B, reps: &Reps, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut once = || -> Result<f64> {
        b.fence()?;
        let t = Instant::now();
        f()?;
        b.fence()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let mut last = None;
    for _ in 0..reps.warmup {
        last = Some(once()?);
    }
    let mut times = Vec::new();
    let n = match reps.fixed {
        Some(n) => n.max(1),
        None => {
            let t = match last {
                Some(t) => t,
                None => {
                    times.push(once()?);
                    times[0]
                }
            };
            ((reps.budget_s / t.max(1e-9)).ceil() as usize).clamp(3, 100)
        }
    };
    while times.len() < n {
        times.push(once()?);
    }
    Ok(median(&mut times))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The compute peak and memory bandwidth the kernels are rated against. With
/// `--precision tf32` (or `bf16`) on a GPU, convolutions and inner products are rated
/// against the dense TF32 (BF16) tensor-core peak instead of the FP32 one.
#[derive(Clone, Debug)]
pub struct Peak {
    /// "fp32", "tf32 tensor cores" or "bf16 tensor cores".
    pub kind: &'static str,
    pub gflops: f64,
    pub gbps: f64,
    pub source: String,
    /// Our own best: a large GEMM (the InnerProduct forward) and a device-to-device copy.
    pub measured_gflops: f64,
    pub measured_gbps: f64,
}

/// Datasheet FP32 (non-tensor-core) peak in GFLOP/s and bandwidth in GB/s by GPU name.
pub fn datasheet_peak(name: &str, memory_bytes: usize) -> Option<(f64, f64, &'static str)> {
    let n = name.to_ascii_uppercase();
    let big = memory_bytes > 48 << 30;
    Some(if n.contains("H200") {
        (67_000.0, 4_800.0, "H200 datasheet")
    } else if n.contains("H100") && n.contains("PCIE") {
        (51_000.0, 2_000.0, "H100 PCIe datasheet")
    } else if n.contains("H100") && n.contains("NVL") {
        (60_000.0, 3_900.0, "H100 NVL datasheet")
    } else if n.contains("H100") {
        (67_000.0, 3_350.0, "H100 SXM datasheet")
    } else if n.contains("A100") && big && n.contains("PCIE") {
        (19_500.0, 1_935.0, "A100 80GB PCIe datasheet")
    } else if n.contains("A100") && big {
        (19_500.0, 2_039.0, "A100 80GB SXM datasheet")
    } else if n.contains("A100") {
        (19_500.0, 1_555.0, "A100 40GB datasheet")
    } else {
        return None;
    })
}

/// Datasheet dense TF32 tensor-core peak in GFLOP/s (half the "with sparsity" figure).
pub fn datasheet_tf32_peak(name: &str) -> Option<(f64, &'static str)> {
    let n = name.to_ascii_uppercase();
    Some(if n.contains("H200") {
        (494_500.0, "H200 datasheet")
    } else if n.contains("H100") && n.contains("PCIE") {
        (378_000.0, "H100 PCIe datasheet")
    } else if n.contains("H100") && !n.contains("NVL") {
        (494_700.0, "H100 SXM datasheet")
    } else if n.contains("A100") {
        (156_000.0, "A100 datasheet")
    } else {
        return None;
    })
}

/// Measures the best GEMM (an n x n x n product: a 1x1 convolution of one image with n
/// channels in and out over n positions, which is one GEMM on every device) and copy (`copy_mib` MiB)
/// rates of a backend over `runs` runs: the CPU's peak, and a GPU's when its name is not
/// in the table.
pub fn measure_peak<B: Fence>(b: &B, gemm_n: usize, copy_mib: usize, runs: usize) -> Result<(f64, f64, String)> {
    let mut rng = Rng::new(7);
    let n = gemm_n;
    // n positions as a (nearly) square map: n is a power of two.
    let h = 1usize << (n.trailing_zeros() / 2);
    let geom = crate::ir::ConvGeom::new(1, n, h, n / h, n, [1, 1], [1, 1], [0, 0], [1, 1], 1)?;
    let op = Op::Conv { geom, bias: false, relu: None };
    let x = random_buf(b, &mut rng, n * n)?;
    let w = vec![b.param_from_host(&rng.normal_vec_f32(n * n, 1.0))?];
    let mut y = vec![b.alloc(n * n)?];
    let mut aux = crate::ops::Aux::<B>::default();
    let gemm = best_of(b, runs, || crate::ops::forward(b, &op, &w, &[&x], &mut y, &mut aux))?;
    let len = copy_mib << 18;
    let src = random_buf(b, &mut rng, len)?;
    let mut dst = b.alloc(len)?;
    let copy = best_of(b, runs, || b.copy(&src, &mut dst))?;
    let (gflops, gbps) = (2.0 * (n as f64).powi(3) / gemm / 1e9, 8.0 * len as f64 / copy / 1e9);
    Ok((gflops, gbps, format!("measured: best {n}^3 sgemm, best {copy_mib} MiB copy")))
}

/// The fastest of `runs` fenced runs after one warm-up.
fn best_of<B: Fence>(b: &B, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..runs.max(1) {
        best = best.min(time_median(b, &Reps::quick(), &mut f)?);
    }
    Ok(best)
}

fn random_buf<B: Backend<Scalar = f32>>(b: &B, rng: &mut Rng, len: usize) -> Result<B::Buf> {
    let mut buf = b.alloc(len)?;
    b.upload(&mut buf, &rng.normal_vec_f32(len, 1.0))?;
    Ok(buf)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    BackwardData,
    BackwardWeights,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::BackwardData => "backward-data",
            Direction::BackwardWeights => "backward-weights",
        }
    }
}

/// What a kernel run does: floating-point operations (compute-bound ops) or bytes read
/// plus written (memory-bound ones).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    Flops(f64),
    Bytes(f64),
}

#[derive(Clone, Debug)]
pub struct KernelTime {
    /// "net/layer".
    pub name: String,
    pub type_name: String,
    pub shape: String,
    pub direction: Direction,
    pub seconds: f64,
    pub work: Work,
}

impl KernelTime {
    /// GFLOP/s or GB/s.
    pub fn rate(&self) -> f64 {
        match self.work {
            Work::Flops(w) | Work::Bytes(w) => w / self.seconds / 1e9,
        }
    }

    pub fn percent_of(&self, peak: &Peak) -> f64 {
        100.0
            * match self.work {
                Work::Flops(_) => self.rate() / peak.gflops,
                Work::Bytes(_) => self.rate() / peak.gbps,
            }
    }
}

/// Work of one direction of a node. Convolutions, deconvolutions and inner products do the
/// same multiply-adds in each direction; the rest move every blob they touch once (dx is
/// read and written: backward adds into it).
pub fn node_work(node: &Node, plan: &Plan, dir: Direction) -> Work {
    let len = |ids: &[usize]| ids.iter().map(|&i| plan.blobs[i].len() as f64).sum::<f64>();
    let (ins, outs) = (len(&node.bottoms), len(&node.tops));
    let fwd = dir == Direction::Forward;
    let floats = match &node.op {
        Op::Conv { geom, .. } | Op::Deconv { geom, .. } => return Work::Flops(geom.flops() as f64),
        Op::InnerProduct { rows, k, n, .. } => return Work::Flops(2.0 * (rows * k * n) as f64),
        // + the winners (max pooling) or the scale (LRN) written forward, read backward
        Op::MaxPool(_) if fwd => ins + 2.0 * outs,
        Op::MaxPool(_) => 2.0 * outs + 2.0 * ins,
        Op::Lrn { .. } if fwd => ins + 2.0 * outs,
        Op::Lrn { .. } => 6.0 * ins,
        // x (ReLU) or y (softmax), dy, dx twice
        Op::Relu { .. } | Op::Activation(_) | Op::Silu | Op::Softmax { .. } if !fwd => 4.0 * ins,
        _ if fwd => ins + outs,
        _ => outs + 2.0 * ins,
    };
    Work::Bytes(4.0 * floats)
}

fn node_shape(node: &Node, plan: &Plan) -> String {
    let shapes = |ids: &[usize]| ids.iter().map(|&i| fmt_shape(&plan.blobs[i].shape)).collect::<Vec<_>>().join(",");
    let mut s = format!("{} -> {}", shapes(&node.bottoms), shapes(&node.tops));
    if let Op::Conv { geom: g, .. } | Op::Deconv { geom: g, .. } = &node.op {
        let _ = write!(s, " k{}x{} s{} p{}", g.kernel[0], g.kernel[1], g.stride[0], g.pad[0]);
        if g.group > 1 {
            let _ = write!(s, " g{}", g.group);
        }
    }
    s
}

/// Times node `i` of `net` alone: forward, backward-data and (with parameters)
/// backward-weights, on random inputs and output gradients.
pub fn bench_node<B: Fence>(net: &Net<B>, label: &str, i: usize, reps: &Reps, rng: &mut Rng) -> Result<Vec<KernelTime>> {
    let (plan, b, node) = (&net.plan, &net.backend, &net.plan.nodes[i]);
    let alloc = |ids: &[usize]| ids.iter().map(|&id| b.alloc(plan.blobs[id].len())).collect::<Result<Vec<_>>>();
    let xs: Vec<B::Buf> = node.bottoms.iter().map(|&id| random_buf(b, rng, plan.blobs[id].len())).collect::<Result<_>>()?;
    let x: Vec<&B::Buf> = xs.iter().collect();
    let mut y = alloc(&node.tops)?;
    let dys: Vec<B::Buf> = node.tops.iter().map(|&id| random_buf(b, rng, plan.blobs[id].len())).collect::<Result<_>>()?;
    let dy: Vec<&B::Buf> = dys.iter().collect();
    let mut dx = alloc(&node.bottoms)?;
    let mut dparams: Vec<B::Buf> = node.params.iter().map(|s| b.alloc(s.len())).collect::<Result<_>>()?;
    let params = net.node_params(i);
    let mut aux = crate::ops::Aux::<B>::default();
    let mut out = Vec::new();
    let mut record = |dir: Direction, seconds: f64| {
        out.push(KernelTime {
            name: format!("{label}/{}", node.layer),
            type_name: node.type_name.to_string(),
            shape: node_shape(node, plan),
            direction: dir,
            seconds,
            work: node_work(node, plan, dir),
        })
    };
    let ctx = |dir: Direction| format!("{label}/{} ({}) {}", node.layer, node.type_name, dir.as_str());
    let t =
        time_median(b, reps, || crate::ops::forward(b, &node.op, params, &x, &mut y, &mut aux)).with_context(|| ctx(Direction::Forward))?;
    record(Direction::Forward, t);
    let t = time_median(b, reps, || crate::ops::backward(b, &node.op, params, &x, &y[0], &dy, &aux, &mut dx, None))
        .with_context(|| ctx(Direction::BackwardData))?;
    record(Direction::BackwardData, t);
    if !node.params.is_empty() {
        let t = time_median(b, reps, || crate::ops::backward(b, &node.op, params, &x, &y[0], &dy, &aux, &mut [], Some(&mut dparams)))
            .with_context(|| ctx(Direction::BackwardWeights))?;
        record(Direction::BackwardWeights, t);
    }
    Ok(out)
}

/// Times DGN-AM's center crop of the generator's output to the classifier's input.
pub fn bench_crop<B: Fence>(b: &B, src: [usize; 4], dst_hw: [usize; 2], reps: &Reps, rng: &mut Rng) -> Result<Vec<KernelTime>> {
    let offset = [(src[2] - dst_hw[0]) / 2, (src[3] - dst_hw[1]) / 2];
    let small = src[0] * src[1] * dst_hw[0] * dst_hw[1];
    let big = random_buf(b, rng, src.iter().product())?;
    let mut big_grad = b.alloc(src.iter().product())?;
    let mut crop = b.alloc(small)?;
    let dy = random_buf(b, rng, small)?;
    let shape = format!("{} -> {}", fmt_shape(&src), fmt_shape(&[src[0], src[1], dst_hw[0], dst_hw[1]]));
    let entry = |direction, seconds, floats: usize| KernelTime {
        name: "dgn/crop".into(),
        type_name: "Crop".into(),
        shape: shape.clone(),
        direction,
        seconds,
        work: Work::Bytes(4.0 * floats as f64),
    };
    let fwd = time_median(b, reps, || b.crop(&big, src, offset, dst_hw, &mut crop))?;
    let bwd = time_median(b, reps, || b.crop_backward(&dy, src, offset, dst_hw, &mut big_grad))?;
    Ok(vec![entry(Direction::Forward, fwd, 2 * small), entry(Direction::BackwardData, bwd, 3 * small)])
}

/// Every kernel of the nets given as (label, net), then the crop between the first net's
/// output and the second's input when both are images (generator, classifier).
/// Only kernels whose name (`caffenet/conv1`, `dgn/crop`) `keep` accepts are timed.
pub fn bench_nets<B: Fence>(
    nets: &[(&str, &Net<B>)],
    reps: &Reps,
    keep: &dyn Fn(&str) -> bool,
    progress: &mut dyn FnMut(&KernelTime),
) -> Result<Vec<KernelTime>> {
    let mut rng = Rng::new(1);
    let mut out = Vec::new();
    for (label, net) in nets {
        for (i, node) in net.plan.nodes.iter().enumerate() {
            if matches!(node.op, Op::Copy) || !keep(&format!("{label}/{}", node.layer)) {
                continue;
            }
            for k in bench_node(net, label, i, reps, &mut rng)? {
                progress(&k);
                out.push(k);
            }
        }
    }
    if let [(_, generator), (_, classifier), ..] = nets {
        let g = &generator.plan.blobs[generator.plan.last_output()].shape;
        let c = &classifier.plan.blobs[classifier.plan.inputs[0]].shape;
        if g.len() == 4 && c.len() == 4 && g[2] >= c[2] && g[3] >= c[3] && keep("dgn/crop") {
            for k in bench_crop(&generator.backend, [g[0], g[1], g[2], g[3]], [c[2], c[3]], reps, &mut rng)? {
                progress(&k);
                out.push(k);
            }
        }
    }
    Ok(out)
}

pub struct KernelReport {
    pub device: String,
    pub batch: usize,
    pub peak: Peak,
    pub kernels: Vec<KernelTime>,
}

impl KernelReport {
    pub fn to_json(&self) -> Value {
        let kernels: Vec<Value> = self
            .kernels
            .iter()
            .map(|k| {
                let mut v = json!({
                    "name": k.name,
                    "type": k.type_name,
                    "shape": k.shape,
                    "direction": k.direction.as_str(),
                    "ms": k.seconds * 1e3,
                    "percent_of_peak": k.percent_of(&self.peak),
                });
                let unit = if matches!(k.work, Work::Flops(_)) { "gflops" } else { "gbps" };
                v[unit] = json!(k.rate());
                v
            })
            .collect();
        json!({
            "device": self.device,
            "host": crate::device::cpu::host_description(),
            "batch": self.batch,
            "peak": {
                "kind": self.peak.kind,
                "gflops": self.peak.gflops,
                "bandwidth_gbps": self.peak.gbps,
                "source": self.peak.source,
                "measured_gemm_gflops": self.peak.measured_gflops,
                "measured_copy_gbps": self.peak.measured_gbps,
            },
            "kernels": kernels,
            "by_type": by_type(&self.kernels).iter().map(|t| json!({
                "type": t.type_name,
                "direction": t.direction.as_str(),
                "ms": t.seconds * 1e3,
                "kernels": t.kernels,
            })).collect::<Vec<_>>(),
        })
    }

    /// The time by layer type and direction, with each one's share of the sum.
    pub fn by_type_table(&self) -> String {
        let types = by_type(&self.kernels);
        let total: f64 = types.iter().map(|t| t.seconds).sum();
        let mut s = format!("\n{:<28} {:<16} {:>7} {:>10} {:>7}\n", "layer type", "direction", "layers", "ms", "share");
        for t in &types {
            let _ = writeln!(
                s,
                "{:<28} {:<16} {:>7} {:>10.3} {:>6.1}%",
                t.type_name,
                t.direction.as_str(),
                t.kernels,
                t.seconds * 1e3,
                100.0 * t.seconds / total
            );
        }
        // What a DGN-AM step runs: no weight gradients.
        let step: f64 = types.iter().filter(|t| t.direction != Direction::BackwardWeights).map(|t| t.seconds).sum();
        let _ = writeln!(s, "{:<28} {:<16} {:>7} {:>10.3}", "forward + backward-data", "", "", step * 1e3);
        let _ = writeln!(s, "{:<28} {:<16} {:>7} {:>10.3}", "all", "", self.kernels.len(), total * 1e3);
        s
    }

    pub fn header(&self) -> String {
        let p = &self.peak;
        format!(
            "device: {}, batch {}\nhost: {}\npeak: {:.0} GFLOP/s {}, {:.0} GB/s ({}); measured {:.0} GFLOP/s GEMM, {:.0} GB/s copy\n{}",
            self.device,
            self.batch,
            crate::device::cpu::host_description(),
            p.gflops,
            p.kind,
            p.gbps,
            p.source,
            p.measured_gflops,
            p.measured_gbps,
            table_header()
        )
    }
}

pub fn table_header() -> String {
    format!("{:<22} {:<16} {:<46} {:>10} {:>16} {:>7}\n", "kernel", "direction", "shape", "ms", "rate", "% peak")
}

pub fn table_row(k: &KernelTime, peak: &Peak) -> String {
    let rate = match k.work {
        Work::Flops(_) => format!("{:.1} GFLOP/s", k.rate()),
        Work::Bytes(_) => format!("{:.1} GB/s", k.rate()),
    };
    format!(
        "{:<22} {:<16} {:<46} {:>10.3} {:>16} {:>7.1}\n",
        k.name,
        k.direction.as_str(),
        k.shape,
        k.seconds * 1e3,
        rate,
        k.percent_of(peak)
    )
}

/// What `dgnam bench` measures.
#[derive(Clone, Debug)]
pub struct KernelOptions {
    pub batch: usize,
    pub reps: Reps,
    /// A small peak measurement (tests).
    pub quick: bool,
    /// Name fragments: only kernels whose name contains one of them run (empty: all).
    pub only: Vec<String>,
    /// The nets whose layers are timed, .dgnw or .prototxt (random weights for a
    /// prototxt), in order; empty: the fc6 generator, then CaffeNet.
    pub nets: Vec<PathBuf>,
}

impl KernelOptions {
    fn keeps(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|f| name.contains(f.as_str()))
    }
}

/// `dgnam bench`: every kernel of CaffeNet and the fc6 generator (random weights) at
/// `opts.batch` on `device`; `rows` gets the table's header and each row as it is measured.
pub fn kernels(device: Device, precision: Precision, opts: &KernelOptions, rows: &mut dyn FnMut(&str)) -> Result<KernelReport> {
    match device {
        Device::Cuda => {
            let cuda = Cuda::new(precision)?;
            let info = cuda.info.clone();
            kernels_on(&|| Ok(cuda.share()), Some((&info, cuda.precision())), opts, rows)
        }
        Device::Cpu | Device::Auto => kernels_on(&|| Ok(Cpu::<f32>::new()), None, opts, rows),
    }
}

/// `dgnam bench --versions`: every convolution and deconvolution of the kernel benchmark
/// once per version of the GPU's versioned kernels (`device::cuda::tune`), each forced in
/// turn, side by side; `rows` gets the table. The CPU has one version of each loop.
pub fn versions(device: Device, precision: Precision, opts: &KernelOptions, rows: &mut dyn FnMut(&str)) -> Result<Value> {
    if device != Device::Cuda {
        bail!("--versions compares the versions of the GPU's kernels, so it needs --device cuda (the CPU runs one version of each loop)");
    }
    let cuda = Cuda::new(precision)?;
    let info = cuda.info.clone();
    // The TF32 product's versions matter only in TF32.
    let mut versioned = crate::ops::conv::cuda::VERSIONED.to_vec();
    if cuda.precision() == Precision::Tf32 {
        versioned.extend(crate::ops::gemm::cuda::VERSIONED);
    }
    let count = versioned.iter().map(|v| v.functions.len()).max().unwrap_or(1);
    let mut opts = opts.clone();
    if opts.only.is_empty() {
        opts.only = vec!["conv".into()];
    }
    let mut runs = Vec::new();
    for v in 1..=count {
        cuda.force_versions(Some(v));
        rows(&format!("timing version {v} of {} ...\n", versioned.iter().map(|k| k.kernel).collect::<Vec<_>>().join(", ")));
        let r = kernels_on(&|| Ok(cuda.share()), Some((&info, cuda.precision())), &opts, &mut |_| {});
        cuda.force_versions(None);
        runs.push(r?.kernels);
    }
    let mut text = format!("{:22} {:16}", "kernel", "direction");
    for v in 1..=count {
        write!(text, " {:>10}", format!("v{v} ms"))?;
    }
    text.push_str("  fastest\n");
    let mut json_rows = Vec::new();
    for (i, k) in runs[0].iter().enumerate() {
        let ms: Vec<f64> = runs.iter().map(|r| r[i].seconds * 1e3).collect();
        let best = ms.iter().enumerate().fold(0, |b, (j, t)| if *t < ms[b] { j } else { b }) + 1;
        write!(text, "{:22} {:16}", k.name, k.direction.as_str())?;
        for t in &ms {
            write!(text, " {t:10.3}")?;
        }
        writeln!(text, "  v{best}")?;
        json_rows.push(json!({ "name": k.name, "direction": k.direction.as_str(), "shape": k.shape, "ms": ms, "fastest": best }));
    }
    rows(&text);
    Ok(
        json!({ "device": cuda.name(), "batch": opts.batch, "versions": versioned.iter().map(|v| json!({"kernel": v.kernel, "functions": v.functions})).collect::<Vec<_>>(), "kernels": json_rows }),
    )
}

/// `gpu`: the device and how its matrix products compute.
fn kernels_on<B: Fence>(
    make: &dyn Fn() -> Result<B>,
    gpu: Option<(&DeviceInfo, Precision)>,
    opts: &KernelOptions,
    rows: &mut dyn FnMut(&str),
) -> Result<KernelReport> {
    let backend = make()?;
    let (gemm_n, copy_mib, runs) = match (gpu, opts.quick) {
        (_, true) => (512, 16, 2),
        (Some(_), false) => (8192, 1024, 5),
        (None, false) => (2048, 256, 5),
    };
    let (mg, mb, msrc) = measure_peak(&backend, gemm_n, copy_mib, runs)?;
    let mut peak = match gpu.and_then(|(i, _)| datasheet_peak(&i.name, i.memory_bytes)) {
        Some((g, b, src)) => Peak { kind: "fp32", gflops: g, gbps: b, source: src.into(), measured_gflops: mg, measured_gbps: mb },
        None => Peak { kind: "fp32", gflops: mg, gbps: mb, source: msrc, measured_gflops: mg, measured_gbps: mb },
    };
    if let Some((info, precision)) = gpu.filter(|(_, p)| *p != Precision::F32) {
        // The GEMM measured above ran in the same precision: the fallback when the GPU is
        // not listed. Dense BF16 is twice dense TF32 on the A100, H100 and H200 datasheets.
        let (kind, factor, fallback) = match precision {
            Precision::Bf16 => ("bf16 tensor cores", 2.0, "measured: our BF16 GEMM"),
            _ => ("tf32 tensor cores", 1.0, "measured: our TF32 GEMM"),
        };
        let (g, src) = datasheet_tf32_peak(&info.name).map(|(g, src)| (g * factor, src)).unwrap_or((mg, fallback));
        peak.kind = kind;
        peak.gflops = g;
        peak.source = format!("{src}; bandwidth: {}", peak.source);
    }
    let device = backend.name();
    // (label, file): the nets given, named by their files, or the fc6 generator and CaffeNet.
    let sources: Vec<(String, PathBuf)> = if opts.nets.is_empty() {
        vec![
            ("generator".into(), default_path("weights/generator-fc6.prototxt")),
            ("caffenet".into(), default_path("weights/caffenet.prototxt")),
        ]
    } else {
        let stem = |i: usize, p: &PathBuf| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| format!("net{i}"));
        opts.nets.iter().enumerate().map(|(i, p)| (stem(i, p), p.clone())).collect()
    };
    let mut nets: Vec<(String, Net<B>)> = Vec::new();
    for (i, (label, path)) in sources.into_iter().enumerate() {
        nets.push((label, NetSource::open(&path)?.build(opts.batch, 2 + i as u64, make()?)?));
    }
    let mut report = KernelReport { device, batch: opts.batch, peak, kernels: Vec::new() };
    rows(&report.header());
    let peak = report.peak.clone();
    let mut progress = |k: &KernelTime| rows(&table_row(k, &peak));
    let keep = |name: &str| opts.keeps(name);
    let labelled: Vec<(&str, &Net<B>)> = nets.iter().map(|(l, n)| (l.as_str(), n)).collect();
    report.kernels = bench_nets(&labelled, &opts.reps, &keep, &mut progress)?;
    ensure!(!report.kernels.is_empty(), "--kernels {}: no kernel of the nets has such a name", opts.only.join(","));
    rows(&report.by_type_table());
    Ok(report)
}

/// Time summed over the kernels of one layer type in one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeTime {
    pub type_name: String,
    pub direction: Direction,
    pub seconds: f64,
    pub kernels: usize,
}

/// The kernels' time by layer type and direction, the largest first.
pub fn by_type(kernels: &[KernelTime]) -> Vec<TypeTime> {
    let mut out: Vec<TypeTime> = Vec::new();
    for k in kernels {
        match out.iter_mut().find(|t| t.type_name == k.type_name && t.direction == k.direction) {
            Some(t) => {
                t.seconds += k.seconds;
                t.kernels += 1;
            }
            None => out.push(TypeTime { type_name: k.type_name.clone(), direction: k.direction, seconds: k.seconds, kernels: 1 }),
        }
    }
    out.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    out
}

/// The blob DGN-AM maximizes: the input of a final Softmax (fc8), else the last output.
pub fn objective_blob(plan: &Plan) -> usize {
    match plan.nodes.last() {
        Some(n) if n.type_name == "Softmax" => n.bottoms[0],
        _ => plan.last_output(),
    }
}

/// The benchmarks' starting codes: uniform in [0, 1), the same for every run.
fn bench_codes(batch: usize, code_len: usize) -> Vec<f32> {
    Rng::new(5).uniform_vec(batch * code_len, 0.0, 1.0).into_iter().map(|v| v as f32).collect()
}

/// Sample n maximizes unit n (mod the layer's width).
fn one_unit_each(batch: usize, units: usize) -> Vec<Objective> {
    (0..batch).map(|n| Objective::Single(n % units)).collect()
}

/// Median seconds of one DGN-AM iteration over the iterations after the first.
pub fn dgn_step<B: Fence>(generator: &Net<B>, classifier: &Net<B>, iters: usize) -> Result<f64> {
    ensure!(iters >= 2, "the step benchmark needs at least 2 iterations (the first is a warm-up)");
    let batch = classifier.plan.batch;
    let blob = objective_blob(&classifier.plan);
    let units = classifier.plan.blobs[blob].len() / batch;
    let mut dgn = Dgn::new(generator, classifier, blob, None)?;
    let init = bench_codes(batch, dgn.code_len());
    let objectives = one_unit_each(batch, units);
    let schedule = Schedule { iters, ..Schedule::default() };
    let mut stamps = Vec::with_capacity(iters);
    let mut fence_err = None;
    dgn.run(&init, &objectives, &schedule, None, &mut |_| {
        if let Err(e) = classifier.backend.fence() {
            fence_err = Some(e);
        }
        stamps.push(Instant::now());
    })?;
    if let Some(e) = fence_err {
        return Err(e);
    }
    ensure!(stamps.len() >= 2, "the DGN-AM loop stopped after {} iteration(s): nothing to time", stamps.len());
    let mut times: Vec<f64> = stamps.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    Ok(median(&mut times))
}

/// Median seconds of a classifier forward + backward (of one objective unit per sample) to
/// the input, over the iterations after the first.
pub fn classifier_step<B: Fence>(classifier: &Net<B>, iters: usize) -> Result<f64> {
    ensure!(iters >= 2, "the step benchmark needs at least 2 iterations (the first is a warm-up)");
    let (plan, b) = (&classifier.plan, &classifier.backend);
    let batch = plan.batch;
    let input = plan.inputs[0];
    let blob = objective_blob(plan);
    let units = plan.blobs[blob].len() / batch;
    let mut st = classifier.state()?;
    let mut rng = Rng::new(6);
    b.upload(st.value_mut(input), &rng.normal_vec_f32(plan.blobs[input].len(), 50.0))?;
    let mut seed_host = vec![0f32; plan.blobs[blob].len()];
    for n in 0..batch {
        seed_host[n * units + n % units] = 1.0;
    }
    let mut seed = b.alloc(seed_host.len())?;
    b.upload(&mut seed, &seed_host)?;
    let mut times = Vec::new();
    for _ in 0..iters {
        b.fence()?;
        let t = Instant::now();
        classifier.forward_from_inputs(&mut st)?;
        b.download(st.value(blob))?;
        classifier.start_backward(&mut st)?;
        classifier.seed(&mut st, blob, &seed)?;
        classifier.finish_backward(&mut st, false)?;
        let g = st.grad(input).context("the objective does not depend on the input")?;
        b.mean_abs_rows(g, batch, plan.blobs[input].len() / batch)?;
        b.fence()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(&mut times[1..]))
}

#[derive(Clone, Debug)]
pub struct StepOptions {
    pub net: PathBuf,
    /// None: the classifier alone (forward + backward to the input).
    pub generator: Option<PathBuf>,
    pub batches: Vec<usize>,
    pub iters: usize,
    /// Each ReLU and SiLU as layers of their own (`Net::fuse_relus` and `fuse_silus` not
    /// applied), for comparison.
    pub unfused: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepTime {
    pub batch: usize,
    pub median_s: f64,
}

impl StepTime {
    pub fn image_iterations_per_s(&self) -> f64 {
        self.batch as f64 / self.median_s
    }

    /// All 1000 ImageNet classes at 200 iterations each, at this rate.
    pub fn projected_s(&self) -> f64 {
        1000.0 * 200.0 / self.image_iterations_per_s()
    }
}

pub struct StepReport {
    pub device: String,
    pub opts: StepOptions,
    pub steps: Vec<StepTime>,
    /// With `--precision tf32` or `bf16` on a GPU: how far it lands from f32 on the same step.
    pub tf32_error: Option<PrecisionError>,
}

/// TF32 or BF16 against f32 on the DGN-AM loop, same weights, codes and units (relative to
/// the largest f32 magnitude of each quantity).
#[derive(Clone, Debug)]
pub struct PrecisionError {
    /// The precision compared with f32.
    pub precision: Precision,
    pub batch: usize,
    /// The objective (fc8 unit) of the initial code: the forward pass alone.
    pub objective: f64,
    /// The first update of the code: lr * gradient / mean |gradient|.
    pub update: f64,
    pub iters: usize,
    /// The objective after `iters` iterations.
    pub final_objective: f64,
    /// The cropped image after `iters` iterations.
    pub final_image: f64,
    /// For scale: the same two quantities for f32 started from codes nudged by 1e-6.
    pub nudged_final_objective: f64,
    pub nudged_final_image: f64,
}

impl PrecisionError {
    pub fn to_json(&self) -> Value {
        json!({
            "precision": self.precision.to_string(),
            "batch": self.batch,
            "objective_rel_err": self.objective,
            "first_update_rel_err": self.update,
            "iters": self.iters,
            "final_objective_rel_err": self.final_objective,
            "final_image_rel_err": self.final_image,
            "f32_nudged_1e-6_final_objective_rel_err": self.nudged_final_objective,
            "f32_nudged_1e-6_final_image_rel_err": self.nudged_final_image,
        })
    }

    pub fn row(&self) -> String {
        format!(
            "{} against f32 (batch {}, max |difference| / max |f32|): objective {:.2e}, first code update {:.2e}; after {} iterations: objective {:.2e}, image {:.2e} (f32 from codes nudged by 1e-6: {:.2e}, {:.2e})\n",
            self.precision,
            self.batch, self.objective, self.update, self.iters, self.final_objective, self.final_image, self.nudged_final_objective, self.nudged_final_image
        )
    }
}

/// max |a - b| / max |b| over all entries.
fn rel_err<T: Copy + Into<f64>>(a: &[Vec<T>], b: &[Vec<T>]) -> f64 {
    let (mut diff, mut scale) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        for (&p, &q) in x.iter().zip(y) {
            let (p, q): (f64, f64) = (p.into(), q.into());
            diff = diff.max((p - q).abs());
            scale = scale.max(q.abs());
        }
    }
    diff / scale.max(f64::MIN_POSITIVE)
}

/// Runs the DGN-AM loop with the generator and classifier of `opts` on the GPU in f32 and in
/// `cuda`'s precision (TF32 or BF16) from the same codes, and measures how far apart they land. For scale, it also runs
/// f32 from codes perturbed by 1e-6 (relative): how much the loop itself amplifies a tiny
/// difference over `iters` iterations.
pub fn precision_error(cuda: &Cuda, opts: &StepOptions, batch: usize, iters: usize) -> Result<PrecisionError> {
    use crate::synth::dgn::BatchResult;
    let gen_path = opts.generator.as_deref().context("the precision comparison needs a generator")?;
    let (classifier, generator) = (NetSource::open(&opts.net)?, NetSource::open(gen_path)?);
    let gen_plan = Plan::new(&generator.def, 1)?;
    let code_len = gen_plan.blobs[gen_plan.inputs[0]].len();
    let init = bench_codes(batch, code_len);
    let run = |precision: Precision, init: &[f32], iters: usize| -> Result<BatchResult<f32>> {
        let mut backend = cuda.share();
        backend.set_precision(precision)?;
        let clf = classifier.build(batch, 3, backend.share())?;
        let gen = generator.build(batch, 2, backend)?;
        let blob = objective_blob(&clf.plan);
        let units = clf.plan.blobs[blob].len() / batch;
        let mut dgn = Dgn::new(&gen, &clf, blob, None)?;
        ensure!(dgn.code_len() == code_len, "the generator's code has {} values, expected {code_len}", dgn.code_len());
        dgn.run(init, &one_unit_each(batch, units), &Schedule { iters, ..Schedule::default() }, None, &mut |_| {})
    };
    // With 2 iterations, the returned code is the one after the first update.
    let update = |r: &BatchResult<f32>| -> Vec<Vec<f32>> {
        r.codes.iter().enumerate().map(|(n, c)| c.iter().zip(&init[n * code_len..]).map(|(a, b)| a - b).collect()).collect()
    };
    // Called with an f32 backend (tests), it compares TF32, as it always did.
    let other = if cuda.precision() == Precision::F32 { Precision::Tf32 } else { cuda.precision() };
    let (f2, t2) = (run(Precision::F32, &init, 2)?, run(other, &init, 2)?);
    let (f, t) = (run(Precision::F32, &init, iters)?, run(other, &init, iters)?);
    let nudged: Vec<f32> = init.iter().enumerate().map(|(i, v)| v * (1.0 + if i % 2 == 0 { 1e-6 } else { -1e-6 })).collect();
    let p = run(Precision::F32, &nudged, iters)?;
    let first = |r: &BatchResult<f32>| r.activations.iter().map(|a| vec![a[0]]).collect::<Vec<_>>();
    let last = |r: &BatchResult<f32>| r.activations.iter().map(|a| vec![*a.last().unwrap_or(&0.0)]).collect::<Vec<_>>();
    Ok(PrecisionError {
        precision: other,
        batch,
        objective: rel_err(&first(&t2), &first(&f2)),
        update: rel_err(&update(&t2), &update(&f2)),
        iters,
        final_objective: rel_err(&last(&t), &last(&f)),
        final_image: rel_err(&t.images, &f.images),
        nudged_final_objective: rel_err(&last(&p), &last(&f)),
        nudged_final_image: rel_err(&p.images, &f.images),
    })
}

impl StepReport {
    pub fn to_json(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                json!({
                    "batch": s.batch,
                    "median_s": s.median_s,
                    "image_iterations_per_s": s.image_iterations_per_s(),
                    "projected_s_1000_classes_200_iters": s.projected_s(),
                })
            })
            .collect();
        json!({
            "device": self.device,
            "host": crate::device::cpu::host_description(),
            "net": self.opts.net.display().to_string(),
            "generator": self.opts.generator.as_ref().map(|g| g.display().to_string()),
            "iters": self.opts.iters,
            "steps": steps,
            "tf32_error": self.tf32_error.as_ref().map(|e| e.to_json()),
        })
    }

    pub fn row(&self, s: &StepTime) -> String {
        let what = if self.opts.generator.is_some() { "DGN-AM step" } else { "classifier fwd+bwd" };
        format!(
            "{what} batch {:>3}: {:>9.1} ms/step, {:>8.2} image-iterations/s, 1000 classes x 200 iterations in {:.0} s\n",
            s.batch,
            s.median_s * 1e3,
            s.image_iterations_per_s(),
            s.projected_s()
        )
    }
}

impl StepOptions {
    /// The command line's choices, defaults filled in: CaffeNet and the fc6 generator with
    /// random weights, batch 8, 5 iterations (3 when quick); a generator `none` drops it.
    pub fn resolve(
        net: Option<PathBuf>,
        generator: Option<PathBuf>,
        batch: Option<&str>,
        iters: Option<usize>,
        quick: bool,
    ) -> Result<Self> {
        let generator = match generator {
            Some(g) if g.as_os_str() == "none" => None,
            Some(g) => Some(g),
            None => Some(default_path("weights/generator-fc6.prototxt")),
        };
        Ok(StepOptions {
            net: net.unwrap_or_else(|| default_path("weights/caffenet.prototxt")),
            generator,
            batches: parse_batches(batch.unwrap_or("8"))?,
            iters: iters.unwrap_or(if quick { 3 } else { 5 }),
            unfused: false,
        })
    }
}

/// `dgnam bench --net .. --generator .. --batch ..`: the step at each batch size;
/// `progress` gets each table row as it is measured.
pub fn steps(device: Device, precision: Precision, opts: &StepOptions, progress: &mut dyn FnMut(&str)) -> Result<StepReport> {
    ensure!(!opts.batches.is_empty() && opts.batches.iter().all(|&b| b > 0), "--batch needs batch sizes of at least 1");
    match device {
        Device::Cuda => {
            let cuda = Cuda::new(precision)?;
            let mut report = steps_on(&|| Ok(cuda.share()), opts, progress)?;
            if cuda.precision() != Precision::F32 && opts.generator.is_some() {
                let e = precision_error(&cuda, opts, opts.batches[0], 20)?;
                progress(&e.row());
                report.tf32_error = Some(e);
            }
            Ok(report)
        }
        Device::Cpu | Device::Auto => steps_on(&|| Ok(Cpu::<f32>::new()), opts, progress),
    }
}

fn steps_on<B: Fence>(make: &dyn Fn() -> Result<B>, opts: &StepOptions, progress: &mut dyn FnMut(&str)) -> Result<StepReport> {
    let classifier = NetSource::open(&opts.net)?;
    let generator = opts.generator.as_deref().map(NetSource::open).transpose()?;
    let mut report = StepReport { device: make()?.name(), opts: opts.clone(), steps: Vec::new(), tf32_error: None };
    progress(&format!("device: {}\nhost: {}\n", report.device, crate::device::cpu::host_description()));
    for &batch in &opts.batches {
        let mut clf = classifier.build(batch, 3, make()?)?;
        let objective = objective_blob(&clf.plan);
        let median_s = match &generator {
            Some(g) => {
                let mut gen = g.build(batch, 2, make()?)?;
                if !opts.unfused {
                    crate::synth::dgn::fuse_relus(&mut gen, &mut clf, &[objective]);
                }
                dgn_step(&gen, &clf, opts.iters)?
            }
            None => {
                if !opts.unfused {
                    clf.fuse_relus(&[objective]);
                    clf.fuse_silus(&[objective]);
                }
                classifier_step(&clf, opts.iters)?
            }
        };
        let step = StepTime { batch, median_s };
        progress(&report.row(&step));
        report.steps.push(step);
    }
    Ok(report)
}

/// Parses `1,8,32`.
pub fn parse_batches(s: &str) -> Result<Vec<usize>> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--batch '{s}': expected a list like 1,8,32"))?;
    if v.is_empty() || v.contains(&0) {
        bail!("--batch '{s}': batch sizes must be at least 1");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasheet_lookup_matches_names_to_variants() {
        let peak = |name: &str, gib: usize| datasheet_peak(name, gib << 30).map(|p| p.2);
        let tf32 = |name: &str| datasheet_tf32_peak(name).map(|p| p.1);
        // nvidia-smi's names: SXM parts carry no form factor, PCIe and NVL parts do.
        assert_eq!(peak("NVIDIA H100 80GB HBM3", 80), Some("H100 SXM datasheet"));
        assert_eq!(peak("NVIDIA H100 PCIe", 80), Some("H100 PCIe datasheet"));
        assert_eq!(peak("NVIDIA H100 NVL", 94), Some("H100 NVL datasheet"));
        assert_eq!(peak("NVIDIA H200", 141), Some("H200 datasheet"));
        assert_eq!(peak("nvidia h100 pcie", 80), Some("H100 PCIe datasheet"), "case does not matter");
        // A100s: the memory size tells the 40 GB part from the 80 GB ones.
        assert_eq!(peak("NVIDIA A100-SXM4-40GB", 40), Some("A100 40GB datasheet"));
        assert_eq!(peak("NVIDIA A100-PCIE-40GB", 40), Some("A100 40GB datasheet"));
        assert_eq!(peak("NVIDIA A100-SXM4-80GB", 80), Some("A100 80GB SXM datasheet"));
        assert_eq!(peak("NVIDIA A100 80GB PCIe", 80), Some("A100 80GB PCIe datasheet"));
        assert_eq!(peak("NVIDIA GeForce RTX 4090", 24), None);
        assert_eq!(peak("Tesla V100-SXM2-16GB", 16), None);
        assert_eq!(tf32("NVIDIA H100 80GB HBM3"), Some("H100 SXM datasheet"));
        assert_eq!(tf32("NVIDIA H100 PCIe"), Some("H100 PCIe datasheet"));
        assert_eq!(tf32("NVIDIA H100 NVL"), None, "not listed: measured instead");
        assert_eq!(tf32("NVIDIA H200"), Some("H200 datasheet"));
        assert_eq!(tf32("NVIDIA A100-SXM4-80GB"), Some("A100 datasheet"));
        assert_eq!(tf32("NVIDIA GeForce RTX 4090"), None);
        // The table's entries in the right rows: a PCIe part is slower than its SXM sibling.
        let at = |name: &str| datasheet_peak(name, 80 << 30).unwrap();
        let (sxm, pcie) = (at("NVIDIA H100 80GB HBM3"), at("NVIDIA H100 PCIe"));
        assert!(pcie.0 < sxm.0 && pcie.1 < sxm.1, "H100 PCIe {pcie:?} vs SXM {sxm:?}");
        assert!(at("NVIDIA A100 80GB PCIe").1 < at("NVIDIA A100-SXM4-80GB").1);
        assert!(datasheet_tf32_peak("NVIDIA H100 PCIe").unwrap().0 < datasheet_tf32_peak("NVIDIA H100 80GB HBM3").unwrap().0);
    }

    #[test]
    fn medians_and_batch_lists() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(parse_batches("1, 8,32").unwrap(), vec![1, 8, 32]);
        assert!(parse_batches("1,0").is_err() && parse_batches("x").is_err());
    }
}
