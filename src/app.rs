//! What the command-line tools do, as library calls: the binaries only parse flags.

use crate::caffe::netdef::parse_netdef;
use crate::caffe::NetDef;
use crate::backend::cuda::compile;
use crate::backend::{Backend, Cuda};
use crate::graph::{unit_offset, BlobId, CpuNet, Net, Plan, UnitRef};
use crate::npy;
use crate::preprocess::{self, Preprocess, PreprocessFlags};
use crate::tensor::{fmt_shape, Tensor};
use crate::weights::WeightsFile;
use anyhow::{bail, ensure, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Auto,
    Cpu,
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            _ => Err(format!("unknown device '{s}' (use auto, cpu or cuda)")),
        }
    }
}

/// Picks the backend to run on (`Cpu` or `Cuda`), telling stderr which one it is and, when
/// auto falls back to the CPU, why.
pub fn resolve_device(d: Device) -> Result<Device> {
    let probe = || match Cuda::probe() {
        Ok(Some(info)) => Ok(info),
        Ok(None) => Err("no CUDA driver found".to_string()),
        Err(e) => Err(format!("{e:#}")),
    };
    match d {
        Device::Cpu => {
            eprintln!("device: cpu");
            Ok(Device::Cpu)
        }
        Device::Cuda => match probe() {
            Ok(info) => {
                eprintln!("device: cuda ({info})");
                Ok(Device::Cuda)
            }
            Err(why) => bail!("--device cuda: no usable GPU: {why}"),
        },
        Device::Auto => match probe() {
            Ok(info) => {
                eprintln!("device: cuda ({info})");
                Ok(Device::Cuda)
            }
            Err(why) => {
                eprintln!("device: cpu ({why})");
                Ok(Device::Cpu)
            }
        },
    }
}

/// `dgnam kernels`: compiles every kernel source with NVRTC for `arch`, else the GPU's
/// architecture, else sm_90; one line per source.
pub fn kernels(arch: Option<&str>) -> Result<String> {
    let (arch, note) = match arch {
        Some(a) => (a.to_string(), String::new()),
        None => match Cuda::probe() {
            Ok(Some(info)) => (info.arch(), format!("GPU: {info}\n")),
            _ => ("sm_90".to_string(), "no GPU: compiling for sm_90 (choose with --arch)\n".to_string()),
        },
    };
    Ok(format!("{note}{}", compile::check_all(&arch)?))
}

/// A net definition from a `.dgnw` weights file or a bare `.prototxt`.
pub fn read_netdef(path: &Path) -> Result<(NetDef, Option<WeightsFile>)> {
    if path.extension().and_then(|e| e.to_str()) == Some("prototxt") {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let def = parse_netdef(&text).with_context(|| format!("{}", path.display()))?;
        return Ok((def, None));
    }
    let file = WeightsFile::open(path)?;
    Ok((file.netdef()?, Some(file)))
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
    Ok(t)
}

/// A layer name as a file name.
pub fn file_stem(layer: &str) -> String {
    layer.replace('/', "_")
}

fn open_weights(path: &Path) -> Result<WeightsFile> {
    if !path.exists() && path.extension().and_then(|e| e.to_str()) == Some("dgnw") {
        bail!(
            "weights file {} does not exist: convert a Caffe model with dgnam-convert, or run tools/fetch-weights.sh",
            path.display()
        );
    }
    WeightsFile::open(path)
}

/// `dgnam forward`: writes `<out_dir>/<layer>.npy` for each requested layer (default: the
/// last), computed on `device` (`Cpu` or `Cuda`, see `resolve_device`). Everything is
/// computed before anything is written.
pub fn forward(net_path: &Path, input: &Path, layers: &[String], out_dir: &Path, pre: &PreprocessFlags, device: Device) -> Result<Vec<PathBuf>> {
    let file = open_weights(net_path)?;
    let def = file.netdef()?;
    let pre = pre.resolve(def.inputs[0].shape.get(1).copied().unwrap_or(3));
    let x = read_input(input, &def, &pre)?;
    let outputs = match device {
        Device::Cuda => forward_net(&Net::<Cuda>::from_weights(&file, x.shape[0], Cuda::new()?)?, &x, layers)?,
        Device::Cpu | Device::Auto => forward_net(&CpuNet::<f32>::from_weights(&file, x.shape[0])?, &x, layers)?,
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
fn forward_net<B: Backend<Scalar = f32>>(net: &Net<B>, x: &Tensor, layers: &[String]) -> Result<Vec<LayerOutput>> {
    let wanted: Vec<(String, BlobId)> = if layers.is_empty() {
        let id = net.plan.last_output();
        let name = net.plan.nodes.last().map_or(net.plan.blobs[id].name.clone(), |n| n.layer.clone());
        vec![(name, id)]
    } else {
        layers.iter().map(|l| Ok((l.clone(), net.plan.layer_output(l)?))).collect::<Result<_>>()?
    };
    let mut st = net.state()?;
    net.forward(&mut st, &[&x.data])?;
    wanted
        .into_iter()
        .map(|(name, id)| Ok((name, net.plan.blobs[id].shape.clone(), net.backend.download(st.value(id))?)))
        .collect()
}

/// `dgnam backward`: d(sum over the batch of layer[n, unit (, y, x)]) / d input, on `device`.
pub fn backward(
    net_path: &Path,
    input: &Path,
    layer: &str,
    unit: UnitRef,
    out: &Path,
    pre: &PreprocessFlags,
    device: Device,
) -> Result<()> {
    let file = open_weights(net_path)?;
    let def = file.netdef()?;
    let pre = pre.resolve(def.inputs[0].shape.get(1).copied().unwrap_or(3));
    let x = read_input(input, &def, &pre)?;
    let grad = match device {
        Device::Cuda => input_gradient(&Net::<Cuda>::from_weights(&file, x.shape[0], Cuda::new()?)?, &x.data, layer, unit)?,
        Device::Cpu | Device::Auto => input_gradient(&CpuNet::<f32>::from_weights(&file, x.shape[0])?, &x.data, layer, unit)?,
    };
    npy::write(out, &x.shape, &grad)
}

/// The gradient of the sum over the batch of one unit of `layer` with respect to the input.
pub fn input_gradient<B: Backend>(net: &Net<B>, x: &[B::Scalar], layer: &str, unit: UnitRef) -> Result<Vec<B::Scalar>> {
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
