//! What the command-line tools do, as library calls: the binaries only parse flags.

use crate::caffe::NetDef;
use crate::device::cuda::{compile, resources, Precision};
use crate::device::{Cpu, Cuda};
use crate::gradcheck::{self, GradcheckOptions};
use crate::graph::{unit_offset, BlobId, CpuNet, Net, Plan, UnitRef};
use crate::io::{file_stem, open_or_default, open_weights, Progress};
pub use crate::io::{read_netdef, Device, DeviceSpec};
use crate::npy;
use crate::ops::Kernels;
use crate::preprocess::{self, Preprocess, PreprocessFlags};
use crate::synth::manifest;
use crate::synth::run::{self, Init, Prepared, Report, SynthOptions, Units};
use crate::synth::shard::Shard;
use crate::tensor::{fmt_shape, Tensor};
use crate::weights::WeightsFile;
use anyhow::{bail, ensure, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Every kernel source dgnam launches: the ops' and DGN-AM's own.
pub fn kernel_sources() -> Vec<compile::KernelSource> {
    let mut all = crate::ops::KERNEL_SOURCES.to_vec();
    all.push(crate::synth::kernels::SOURCE);
    all
}

/// Picks the backend to run on (`Cpu` or `Cuda`), with the line that tells the user which
/// one it is and, when auto falls back to the CPU, why (`device: cpu (no CUDA driver found)`).
pub fn resolve_device(d: Device, precision: Precision) -> Result<(Device, String)> {
    resolve_device_on(DeviceSpec { device: d, ordinal: 0 }, precision)
}

/// `resolve_device` for a GPU index (`--device cuda:K`); the line names the index when it
/// is not 0 (`device: cuda:1 (NVIDIA H200, sm_90)`).
pub fn resolve_device_on(spec: DeviceSpec, precision: Precision) -> Result<(Device, String)> {
    let resolved = pick_device(spec, precision)?;
    if precision != Precision::F32 && resolved.0 == Device::Cpu {
        bail!("--precision {precision} needs a GPU (tensor cores); the CPU computes in f32");
    }
    Ok(resolved)
}

fn pick_device(spec: DeviceSpec, precision: Precision) -> Result<(Device, String)> {
    let probe = || match Cuda::probe_on(spec.ordinal) {
        Ok(Some(info)) => Ok(info.describe(precision)),
        Ok(None) => Err("no CUDA driver found".to_string()),
        Err(e) => Err(format!("{e:#}")),
    };
    let name = if spec.ordinal == 0 { "cuda".to_string() } else { format!("cuda:{}", spec.ordinal) };
    match spec.device {
        Device::Cpu => Ok((Device::Cpu, "device: cpu".to_string())),
        Device::Cuda => match probe() {
            Ok(info) => Ok((Device::Cuda, format!("device: {name} ({info})"))),
            Err(why) => bail!("--device {name}: no usable GPU: {why}"),
        },
        Device::Auto => match probe() {
            Ok(info) => Ok((Device::Cuda, format!("device: {name} ({info})"))),
            Err(why) => Ok((Device::Cpu, format!("device: cpu ({why})"))),
        },
    }
}

/// `dgnam kernels`: compiles every kernel source with NVRTC for `arch`, else the GPU's
/// architecture, else sm_90; one line per kernel function with its registers, spills, shared
/// memory and CTAs per SM (`resources::report`).
pub fn kernels(arch: Option<&str>) -> Result<String> {
    let (arch, note) = match arch {
        Some(a) => (a.to_string(), String::new()),
        None => match Cuda::probe() {
            Ok(Some(info)) => (info.arch(), format!("GPU: {info}\n")),
            _ => ("sm_90".to_string(), "no GPU: compiling for sm_90 (choose with --arch)\n".to_string()),
        },
    };
    Ok(format!("{note}{}", resources::report(&arch, &kernel_sources())?))
}

/// `dgnam info`: layers, output shapes and parameter counts (batch as declared).
pub fn info(path: &Path) -> Result<String> {
    let (def, file) = read_netdef(path)?;
    let batch = def.inputs.first().and_then(|i| i.shape.first().copied()).unwrap_or(1).max(1);
    let plan = Plan::new(&def, batch).with_context(|| format!("{}", path.display()))?;
    let mut s = String::new();
    let _ = writeln!(s, "net '{}' from {}", plan.name, path.display());
    for &i in &plan.inputs {
        let _ = writeln!(s, "input  {:<24} {}", plan.blobs[i].name, fmt_shape(&plan.blobs[i].shape));
    }
    let _ = writeln!(s, "{:<24} {:<14} {:<20} {:>12} {:>10}", "layer", "type", "output", "parameters", "MFLOP");
    for node in &plan.nodes {
        let params: usize = node.params.iter().map(|p| p.len()).sum();
        let tops: Vec<String> = node.tops.iter().map(|&t| fmt_shape(&plan.blobs[t].shape)).collect();
        let _ = writeln!(
            s,
            "{:<24} {:<14} {:<20} {:>12} {:>10.1}",
            node.layer,
            node.type_name,
            tops.join(","),
            params,
            node.forward_flops(&plan) as f64 / 1e6
        );
    }
    let _ = writeln!(
        s,
        "total: {} layers, {} parameters, {:.3} GFLOP forward at batch {batch}",
        plan.nodes.len(),
        plan.param_count(),
        plan.flops() as f64 / 1e9
    );
    match &file {
        Some(f) => {
            let _ = writeln!(s, "weights: {} tensors, all offsets, shapes and checksums verified", f.header.tensors.len());
            let _ = writeln!(s, "input space: {}", f.header.input_space.name());
        }
        None => {
            let _ = writeln!(s, "weights: none (a bare prototxt)");
        }
    }
    Ok(s)
}

/// An input file as the net's first input: `.npy` (float32 NCHW already in input space,
/// any batch) or an image (preprocessed, batch 1).
pub fn read_input(path: &Path, def: &NetDef, pre: &Preprocess) -> Result<Tensor> {
    let declared = &def.inputs.first().context("the net declares no input")?.shape;
    let is_npy = path.extension().and_then(|e| e.to_str()) == Some("npy");
    let t = if is_npy {
        npy::read(path)?
    } else {
        ensure!(declared.len() == 4, "{}: the net's input {} is not an image", path.display(), fmt_shape(declared));
        preprocess::load_image(path, declared[1], declared[2], declared[3], pre)?
    };
    ensure!(
        t.shape.len() == declared.len() && t.shape[0] > 0 && t.shape[1..] == declared[1..],
        "{}: input shape {} does not fit the net's input {} (any batch size)",
        path.display(),
        fmt_shape(&t.shape),
        fmt_shape(declared)
    );
    crate::graph::ensure_finite(&t.data, || format!("{}", path.display()))?;
    Ok(t)
}

/// A weights file and an input for its net, preprocessed as the flags and the net say.
fn open_with_input(net_path: &Path, input: &Path, pre: &PreprocessFlags) -> Result<(WeightsFile, Tensor)> {
    let file = open_weights(net_path)?;
    let def = file.netdef()?;
    let channels = def.inputs[0].shape.get(1).copied().unwrap_or(3);
    let pre = if input.extension().and_then(|e| e.to_str()) == Some("npy") {
        pre.resolve(channels)
    } else {
        pre.resolve_in(file.header.input_space, channels).with_context(|| format!("{}", net_path.display()))?
    };
    let x = read_input(input, &def, &pre)?;
    Ok((file, x))
}

/// `dgnam forward`: writes `<out_dir>/<layer>.npy` for each requested layer (default: the
/// last), computed on `device` (`Cpu` or `Cuda`, see `resolve_device`). Everything is
/// computed before anything is written.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    net_path: &Path,
    input: &Path,
    layers: &[String],
    out_dir: &Path,
    pre: &PreprocessFlags,
    device: Device,
    precision: Precision,
) -> Result<Vec<PathBuf>> {
    let (file, x) = open_with_input(net_path, input, pre)?;
    let outputs = match device {
        Device::Cuda => forward_net(&Net::<Cuda>::from_weights(&file, x.shape[0], Cuda::new(precision)?)?, &x, layers)?,
        Device::Cpu | Device::Auto => forward_net(&CpuNet::<f32>::from_weights(&file, x.shape[0], Cpu::new())?, &x, layers)?,
    };
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut written = Vec::new();
    for (name, shape, data) in outputs {
        let path = out_dir.join(format!("{}.npy", file_stem(&name)));
        npy::write(&path, &shape, &data)?;
        written.push(path);
    }
    Ok(written)
}

/// A layer's output on the host: (layer name, shape, values).
type LayerOutput = (String, Vec<usize>, Vec<f32>);

/// The requested layers' outputs after one forward pass.
fn forward_net<B: Kernels<Scalar = f32>>(net: &Net<B>, x: &Tensor, layers: &[String]) -> Result<Vec<LayerOutput>> {
    let wanted: Vec<(String, BlobId)> = if layers.is_empty() {
        let id = net.plan.last_output();
        let name = net.plan.nodes.last().map_or(net.plan.blobs[id].name.clone(), |n| n.layer.clone());
        vec![(name, id)]
    } else {
        layers.iter().map(|l| Ok((l.clone(), net.plan.layer_output(l)?))).collect::<Result<_>>()?
    };
    let mut st = net.state()?;
    net.forward(&mut st, &[&x.data])?;
    wanted.into_iter().map(|(name, id)| Ok((name, net.plan.blobs[id].shape.clone(), net.backend.download(st.value(id))?))).collect()
}

/// `dgnam backward`: d(sum over the batch of layer[n, unit (, y, x)]) / d input, on `device`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    net_path: &Path,
    input: &Path,
    layer: &str,
    unit: UnitRef,
    out: &Path,
    pre: &PreprocessFlags,
    device: Device,
    precision: Precision,
) -> Result<()> {
    let (file, x) = open_with_input(net_path, input, pre)?;
    let grad = match device {
        Device::Cuda => input_gradient(&Net::<Cuda>::from_weights(&file, x.shape[0], Cuda::new(precision)?)?, &x.data, layer, unit)?,
        Device::Cpu | Device::Auto => input_gradient(&CpuNet::<f32>::from_weights(&file, x.shape[0], Cpu::new())?, &x.data, layer, unit)?,
    };
    npy::write(out, &x.shape, &grad)
}

/// The gradient of the sum over the batch of one unit of `layer` with respect to the input.
pub fn input_gradient<B: Kernels>(net: &Net<B>, x: &[B::Scalar], layer: &str, unit: UnitRef) -> Result<Vec<B::Scalar>> {
    use crate::real::Real;
    let id = net.plan.layer_output(layer)?;
    let shape = &net.plan.blobs[id].shape;
    let offset = unit_offset(shape, unit, layer)?;
    let per_sample: usize = shape[1..].iter().product();
    let mut seed = vec![B::Scalar::ZERO; shape.iter().product()];
    for n in 0..shape[0] {
        seed[n * per_sample + offset] = B::Scalar::ONE;
    }
    let mut st = net.state()?;
    net.forward(&mut st, &[x])?;
    net.backward(&mut st, &[(id, &seed)], false)?;
    // None when the unit does not depend on the input at all: its gradient is zero.
    match st.grad(net.plan.inputs[0]) {
        Some(g) => net.backend.download(g),
        None => Ok(vec![B::Scalar::ZERO; x.len()]),
    }
}

/// Where a synthesize process runs: the resolved device (`resolve_device_on`), its GPU
/// index, the precision, and its shard of the run (None: all of it).
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub device: Device,
    pub ordinal: usize,
    pub precision: Precision,
    pub shard: Option<Shard>,
}

impl Placement {
    /// The device as the manifest records it: `cpu`, `cuda:K (name, sm_XY)`.
    fn describe(&self) -> String {
        match (self.device, Cuda::probe_on(self.ordinal)) {
            (Device::Cuda, Ok(Some(info))) => format!("cuda:{} ({})", self.ordinal, info.describe(self.precision)),
            (Device::Cuda, _) => format!("cuda:{}", self.ordinal),
            _ => "cpu".to_string(),
        }
    }
}

/// `dgnam synthesize` on the resolved device (pixel-space runs stay on the CPU). Notes
/// (the bounds file chosen, out-of-memory retries) and progress go to `progress`.
pub fn synthesize(o: &SynthOptions, place: &Placement, progress: &dyn Progress) -> Result<Report> {
    let (device, precision) = (place.device, place.precision);
    o.check()?;
    let net_path = o.net.clone().unwrap_or_else(|| crate::io::default_path(crate::io::DEFAULT_NET));
    let clf_file = open_or_default(o.net.as_deref(), crate::io::DEFAULT_NET)?;
    let space = clf_file.header.input_space;
    // The jobs this process runs, at most: no batch need be larger.
    let count = match &o.units {
        Units::List(l) => (l.len() * o.seed_list().len()).div_ceil(place.shard.map_or(1, |s| s.count)).max(1),
        Units::All => usize::MAX,
    };
    // On an H200, batch 128 ran 2 to 5 % faster per image than 64 (docs/gpu-report.md).
    let batch = o.batch.unwrap_or(if device == Device::Cuda { 128 } else { 8 }).min(count);
    let clf_def = clf_file.netdef()?;
    let clf_plan = Plan::new(&clf_def, batch)?;
    let layer_blob = clf_plan.layer_output(&o.layer)?;
    let unit_count = clf_plan.blobs[layer_blob].shape.get(1).copied().unwrap_or(0);
    let labels = run::labels_for(o.labels.as_deref(), unit_count)?;
    let schedule = o.schedule(default_lr(&clf_plan.name));
    if o.pixel_space() {
        crate::io::require_caffe_space(
            &clf_file,
            &net_path,
            "pixel-space synthesis (--generator none: its priors and images are Caffe-space)",
        )?;
        ensure!(
            o.init_code.is_none() && o.init_image.is_none(),
            "--generator none starts from noise: --init-code and --init-image need a generator"
        );
        let channels = clf_plan.blobs[clf_plan.inputs[0]].shape.get(1).copied().unwrap_or(3);
        let classifier = CpuNet::<f32>::from_weights(&clf_file, batch, Cpu::new())?;
        let files = [("net_sha256", Some(net_path.as_path())), ("generator_sha256", None), ("bounds_sha256", None)];
        let manifest = manifest::describe(o.to_json(), &files, "cpu", &precision.to_string())?;
        let prep = Prepared { schedule, bounds: None, init: Init::Random, labels, shard: place.shard, manifest, space };
        return run::synthesize_pixels(&classifier, o, &prep, &crate::synth::pixel::PixelPriors::for_channels(channels), progress);
    }
    let gen_path = o.generator.clone().unwrap_or_else(|| crate::io::default_path(crate::io::DEFAULT_GENERATOR));
    let gen_file = open_or_default(o.generator.as_deref(), crate::io::DEFAULT_GENERATOR)?;
    let gen_plan = Plan::new(&gen_file.netdef()?, 1)?;
    let code_len = gen_plan.blobs[gen_plan.inputs[0]].len();
    let code_layer = run::code_layer(&clf_plan, code_len, o.encoder_layer.as_deref(), o.generator.as_deref())?;
    let mut bounds_path = None;
    let bounds = match &o.bounds {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => {
            bounds_path = Some(p.clone());
            Some(run::read_bounds(p)?)
        }
        None => {
            let layer = code_layer.as_deref().with_context(|| {
                format!("no layer of the classifier has the generator's {code_len} code values, so there are no default bounds: give --bounds FILE or --bounds none")
            })?;
            let (path, note) = run::shipped_bounds(&crate::io::default_path(crate::io::ACT_RANGE_DIR), layer)?;
            if let Some(note) = note {
                progress.message(&note);
            }
            let b = run::read_bounds(&path)?;
            bounds_path = Some(path);
            Some(b)
        }
    };
    let init = match (&o.init_code, &o.init_image) {
        (Some(p), _) => {
            let t = npy::read(p)?;
            ensure!(t.shape.len() == 2, "{}: --init-code needs shape (N, code), got {}", p.display(), fmt_shape(&t.shape));
            Init::Codes(t.data.chunks(t.shape[1].max(1)).map(|r| r.to_vec()).collect())
        }
        (None, Some(p)) => {
            let layer = code_layer.as_deref().with_context(|| {
                format!(
                    "--init-image: no layer of the classifier has the generator's {code_len} code values; name one with --encoder-layer"
                )
            })?;
            let pre = Preprocess::for_space(space, 3).with_context(|| format!("{}", net_path.display()))?;
            let x = read_input(p, &clf_def, &pre)?;
            ensure!(x.shape[0] == 1, "{}: --init-image takes one image", p.display());
            let encoder = CpuNet::<f32>::from_weights(&clf_file, 1, Cpu::new())?;
            Init::Codes(vec![run::encode_image(&encoder, &x.data, layer)?])
        }
        (None, None) => Init::Random,
    };
    let files = [
        ("net_sha256", Some(net_path.as_path())),
        ("generator_sha256", Some(gen_path.as_path())),
        ("bounds_sha256", bounds_path.as_deref()),
    ];
    let manifest = manifest::describe(o.to_json(), &files, &place.describe(), &precision.to_string())?;
    let prep = Prepared { schedule, bounds, init, labels, shard: place.shard, manifest, space };
    if device == Device::Cuda {
        // Finished units are on disk after every batch, so a retry at a smaller batch
        // only redoes the batch that did not fit.
        return with_oom_retry(batch, progress, |batch| {
            let cuda = Cuda::on(place.ordinal, precision)?;
            let mut classifier = Net::<Cuda>::from_weights(&clf_file, batch, cuda.share())?;
            let mut generator = Net::<Cuda>::from_weights(&gen_file, batch, cuda)?;
            run::fuse_relus(&mut generator, &mut classifier, o)?;
            run::synthesize(&generator, &classifier, o, &prep, progress)
        });
    }
    let mut classifier = CpuNet::<f32>::from_weights(&clf_file, batch, Cpu::new())?;
    let mut generator = CpuNet::<f32>::from_weights(&gen_file, batch, Cpu::new())?;
    run::fuse_relus(&mut generator, &mut classifier, o)?;
    run::synthesize(&generator, &classifier, o, &prep, progress)
}

/// `synthesize --devices`: one worker process per entry of `devices`, each the same
/// command (`args`, without the program name) as shard i of N on its device, run by `exe`
/// (this binary), then `dgnam merge` of `out_dir`. On a GPU (`device` Cuda) entry K gives
/// `--device cuda:K`; on the CPU each entry is one CPU worker (`--devices 0,0`: two), and
/// each worker gets an equal part of the cores unless RAYON_NUM_THREADS says otherwise.
/// Workers' stderr lines reach `progress`, tagged with the worker.
pub fn synthesize_on_workers(
    exe: &Path,
    args: &[String],
    devices: &[usize],
    device: Device,
    out_dir: &Path,
    progress: &dyn Progress,
) -> Result<crate::synth::merge::Merged> {
    use std::io::BufRead;
    let n = devices.len();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut children = Vec::new();
    for (i, &k) in devices.iter().enumerate() {
        let device_arg = if device == Device::Cuda { format!("cuda:{k}") } else { "cpu".to_string() };
        let mut cmd = std::process::Command::new(exe);
        cmd.args(worker_args(args, &format!("{i}/{n}"), &device_arg))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if device != Device::Cuda && std::env::var_os("RAYON_NUM_THREADS").is_none() {
            cmd.env("RAYON_NUM_THREADS", (cores / n).max(1).to_string());
        }
        let child = cmd.spawn().with_context(|| format!("cannot start worker {i} ({})", exe.display()))?;
        progress.message(&format!("worker {i}: --shard {i}/{n} --device {device_arg} (pid {})", child.id()));
        children.push((i, device_arg, child));
    }
    let (tx, rx) = std::sync::mpsc::channel::<(usize, String)>();
    let mut last_lines = vec![String::new(); n];
    std::thread::scope(|scope| {
        for (i, _, child) in children.iter_mut() {
            let (i, tx) = (*i, tx.clone());
            if let Some(err) = child.stderr.take() {
                scope.spawn(move || {
                    for line in std::io::BufReader::new(err).lines().map_while(|l| l.ok()) {
                        let _ = tx.send((i, line));
                    }
                });
            }
        }
        drop(tx);
        for (i, line) in rx {
            progress.message(&format!("worker {i}: {line}"));
            last_lines[i] = line;
        }
    });
    let mut failed = Vec::new();
    for (i, device_arg, mut child) in children {
        let status = child.wait().with_context(|| format!("worker {i} could not be waited for"))?;
        if !status.success() {
            failed.push(format!("worker {i} (--shard {i}/{n} --device {device_arg}) {status}: {}", last_lines[i]));
        }
    }
    if !failed.is_empty() {
        bail!("{}; finished units are kept, rerun the same command to resume", failed.join("; "));
    }
    crate::synth::merge::merge(out_dir)
}

/// A worker's command line: `args` without `--devices`, `--device` and `--shard` (either
/// form, `--flag V` or `--flag=V`), then `--shard SHARD --device DEVICE`.
pub fn worker_args(args: &[String], shard: &str, device: &str) -> Vec<String> {
    let dropped = ["--devices", "--device", "--shard"];
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if dropped.contains(&a.as_str()) {
            it.next();
        } else if !dropped.iter().any(|d| a.starts_with(&format!("{d}="))) {
            out.push(a.clone());
        }
    }
    out.extend(["--shard".to_string(), shard.to_string(), "--device".to_string(), device.to_string()]);
    out
}

/// `dgnam train-generator` on the resolved device: everything is read and checked
/// (`train::prepare`) before the first file is written.
pub fn train_generator(
    o: &crate::train::TrainOptions,
    pre: &PreprocessFlags,
    device: Device,
    precision: Precision,
    progress: &dyn Progress,
) -> Result<crate::train::TrainReport> {
    let prepared = crate::train::prepare(o, pre)?;
    if device == Device::Cuda {
        let cuda = Cuda::new(precision)?;
        return crate::train::train(&prepared, cuda.share(), cuda.share(), cuda, progress);
    }
    crate::train::train(&prepared, Cpu::new(), Cpu::new(), Cpu::new(), progress)
}

/// `dgnam nearest` on the resolved device.
pub fn nearest(
    o: &crate::synth::nearest::NearestOptions,
    pre: &PreprocessFlags,
    device: Device,
    precision: Precision,
    progress: &dyn Progress,
) -> Result<crate::synth::nearest::NearestReport> {
    use crate::synth::nearest::nearest;
    let file = open_weights(&o.net)?;
    let channels = file.netdef()?.inputs.first().and_then(|i| i.shape.get(1).copied()).unwrap_or(3);
    let pre = match o.images {
        Some(_) => pre.resolve_in(file.header.input_space, channels).with_context(|| format!("{}", o.net.display()))?,
        None => pre.resolve(channels),
    };
    // Batches of 16 codes: a few MB of activations even for CaffeNet.
    let batch = 16;
    match device {
        Device::Cuda => nearest(&Net::<Cuda>::from_weights(&file, batch, Cuda::new(precision)?)?, o, &pre, progress),
        Device::Cpu | Device::Auto => nearest(&CpuNet::<f32>::from_weights(&file, batch, Cpu::new())?, o, &pre, progress),
    }
}

/// `dgnam gradcheck`: the f64 checks on the CPU and, with `--device cuda` or `both`, every
/// layer on the GPU against the CPU. No usable GPU for those is an error before any work.
pub fn gradcheck(
    o: &GradcheckOptions,
    precision: Precision,
    progress: &dyn Progress,
    rows: &mut dyn FnMut(&str),
) -> Result<gradcheck::Report> {
    o.check()?;
    ensure!(precision == Precision::F32, "--precision {precision}: gradcheck compares the GPU with the CPU in f32");
    if !o.device.gpu() {
        return gradcheck::run::<Cpu<f32>>(o, None, progress, rows);
    }
    let why = match Cuda::probe() {
        Ok(Some(info)) => {
            progress.message(&format!("device: cuda ({})", info.describe(precision)));
            return gradcheck::run(o, Some(Cuda::new(precision)?), progress, rows);
        }
        Ok(None) => "no CUDA driver found".to_string(),
        Err(e) => format!("{e:#}"),
    };
    bail!("--device {}: no usable GPU: {why}", o.device.name())
}

/// The paper scripts' initial step size: 2 for GoogLeNet, 8 for the AlexNet family.
pub fn default_lr(net_name: &str) -> f64 {
    if net_name.to_ascii_lowercase().contains("googlenet") {
        2.0
    } else {
        8.0
    }
}

/// Runs `attempt` at `batch`, halving the batch (and saying so to `progress`) each time
/// the GPU runs out of memory.
pub fn with_oom_retry<T>(mut batch: usize, progress: &dyn Progress, mut attempt: impl FnMut(usize) -> Result<T>) -> Result<T> {
    loop {
        match attempt(batch) {
            Err(e) if batch > 1 && e.chain().any(|c| c.is::<crate::device::cuda::OutOfMemory>()) => {
                progress.message(&format!("out of GPU memory at batch {batch}; retrying at batch {}", batch / 2));
                batch /= 2;
            }
            r => return r,
        }
    }
}

/// `dgnam act-range`: per-neuron `mean + sigma * std` (lower bound 0) of a blob over a
/// folder of images, or over the samples of one N x C x H x W `.npy` when `images` is a
/// `.npy` file, written as one line of numbers (the format of the shipped bounds).
/// The blob is the newest of that name, so `fc6` means post-ReLU fc6, the code space.
#[allow(clippy::too_many_arguments)]
pub fn act_range(
    net_path: &Path,
    layer: &str,
    images: &Path,
    sigma: f64,
    out: &Path,
    device: Device,
    precision: Precision,
) -> Result<(usize, usize)> {
    let file = open_weights(net_path)?;
    let channels = file.netdef()?.inputs.first().and_then(|i| i.shape.get(1).copied()).unwrap_or(3);
    let pre = if images.extension().and_then(|e| e.to_str()) == Some("npy") {
        Preprocess::default_for(channels)
    } else {
        Preprocess::for_space(file.header.input_space, channels).with_context(|| format!("{}", net_path.display()))?
    };
    match device {
        Device::Cuda => act_range_on(&Net::<Cuda>::from_weights(&file, 1, Cuda::new(precision)?)?, &file, &pre, layer, images, sigma, out),
        Device::Cpu | Device::Auto => {
            act_range_on(&CpuNet::<f32>::from_weights(&file, 1, Cpu::new())?, &file, &pre, layer, images, sigma, out)
        }
    }
}

fn act_range_on<B: Kernels<Scalar = f32>>(
    net: &Net<B>,
    file: &WeightsFile,
    pre: &Preprocess,
    layer: &str,
    images: &Path,
    sigma: f64,
    out: &Path,
) -> Result<(usize, usize)> {
    let def = file.netdef()?;
    let blob = net.plan.blob_by_name(layer)?;
    let n = net.plan.blobs[blob].len();
    let (mut mean, mut m2) = (vec![0f64; n], vec![0f64; n]);
    let mut st = net.state()?;
    let mut count = 0usize;
    let mut add = |x: &[f32]| -> Result<()> {
        net.forward(&mut st, &[x])?;
        count += 1;
        // Welford's update: stable for many images.
        for (i, &v) in net.backend.download(st.value(blob))?.iter().enumerate() {
            let d = v as f64 - mean[i];
            mean[i] += d / count as f64;
            m2[i] += d * (v as f64 - mean[i]);
        }
        Ok(())
    };
    if images.is_file() && images.extension().and_then(|e| e.to_str()) == Some("npy") {
        let x = read_input(images, &def, pre)?;
        x.data.chunks(x.len() / x.shape[0]).try_for_each(&mut add)?;
    } else {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(images)
            .with_context(|| format!("cannot read the image folder {}", images.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let ext = p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
                matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg" | "npy"))
            })
            .collect();
        paths.sort();
        ensure!(!paths.is_empty(), "{} holds no .png, .jpg or .npy images", images.display());
        for p in &paths {
            let x = read_input(p, &def, pre)?;
            ensure!(x.shape[0] == 1, "{}: one image per file", p.display());
            add(&x.data)?;
        }
    }
    let line: Vec<String> = mean
        .iter()
        .zip(&m2)
        .map(|(m, s2)| {
            let bound = (m + sigma * (s2 / count as f64).sqrt()).max(0.0);
            format!("{}", (bound * 1e4).round() / 1e4)
        })
        .collect();
    crate::fsutil::write_atomic(out, format!("{}\n", line.join(" ")).as_bytes())?;
    Ok((count, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cuda::OutOfMemory;

    #[test]
    fn a_worker_runs_the_same_command_as_one_shard_on_one_device() {
        let args: Vec<String> =
            ["synthesize", "--units", "all", "--devices", "0,0", "--device=cpu", "--out-dir", "o", "--seeds", "0..2", "--device", "auto"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let got = worker_args(&args, "1/2", "cuda:1");
        let want = ["synthesize", "--units", "all", "--out-dir", "o", "--seeds", "0..2", "--shard", "1/2", "--device", "cuda:1"];
        assert_eq!(got, want);
    }

    #[test]
    fn tensor_core_precisions_parse_and_the_cpu_refuses_them() {
        for (text, p) in [("f32", Precision::F32), ("tf32", Precision::Tf32), ("bf16", Precision::Bf16)] {
            assert_eq!(text.parse::<Precision>().unwrap(), p);
            assert_eq!(p.to_string(), text);
        }
        assert!("fp16".parse::<Precision>().unwrap_err().contains("use f32, tf32 or bf16"));
        assert_eq!(resolve_device(Device::Cpu, Precision::F32).unwrap().0, Device::Cpu);
        for p in [Precision::Tf32, Precision::Bf16] {
            let e = resolve_device(Device::Cpu, p).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--precision {p} needs a GPU")), "{e}");
        }
    }

    #[test]
    fn googlenet_takes_the_papers_smaller_step() {
        assert_eq!(default_lr("GoogleNet"), 2.0);
        assert_eq!(default_lr(""), 8.0); // CaffeNet's prototxt has no name
        assert_eq!(default_lr("CaffeNet"), 8.0);
    }

    #[test]
    fn out_of_memory_halves_the_batch_and_other_errors_do_not() {
        let mut tried = Vec::new();
        let r = with_oom_retry(8, &crate::io::Silent, |b| {
            tried.push(b);
            if b > 2 {
                Err(anyhow::Error::new(OutOfMemory("CUDA allocation: out of GPU memory".into())).context("layer 'conv1' forward"))
            } else {
                Ok(b)
            }
        });
        assert_eq!(r.unwrap(), 2);
        assert_eq!(tried, vec![8, 4, 2]);

        let mut calls = 0;
        let r: Result<()> = with_oom_retry(8, &crate::io::Silent, |_| {
            calls += 1;
            bail!("a corrupt weights file")
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);

        // At batch 1 there is nothing left to shrink: the error stands.
        let r: Result<()> = with_oom_retry(1, &crate::io::Silent, |_| Err(anyhow::Error::new(OutOfMemory("full".into()))));
        assert!(r.unwrap_err().to_string().contains("full"));
    }
}
