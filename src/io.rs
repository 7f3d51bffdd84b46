//! What the commands share about the outside world: where the shipped files are, how a
//! net file is read, which device to run on, and how progress is reported (the library
//! never prints; the binary renders a `Progress`).

use crate::caffe::netdef::parse_netdef;
use crate::caffe::NetDef;
use crate::graph::{stored_param, Net, Plan};
use crate::ops::Kernels;
use crate::weights::WeightsFile;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The default classifier (`--net`).
pub const DEFAULT_NET: &str = "weights/caffenet.dgnw";
/// The default generator (`--generator`).
pub const DEFAULT_GENERATOR: &str = "weights/generator-fc6.dgnw";
/// The shipped code bounds: `<dir>/<k>x/<layer>.txt`.
pub const ACT_RANGE_DIR: &str = "weights/act_range";
/// ImageNet's class names (1000 lines, `n01440764 tench, Tinca tinca`).
pub const IMAGENET_LABELS: &str = "weights/synset_words.txt";
/// Places205's class names (205 lines, `abbey 0`).
pub const PLACES_LABELS: &str = "weights/categoryIndex_places205.txt";
/// The demo's LeNet: `lenet.prototxt` and `lenet_iter_10000.caffemodel`.
pub const DEMO_DIR: &str = "weights/demo";

/// Where a command runs: `Auto` picks CUDA when a usable GPU is there, else the CPU.
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

/// `--device` with a GPU index: `auto`, `cpu`, `cuda` (GPU 0) or `cuda:K` (GPU K).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    pub device: Device,
    pub ordinal: usize,
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(k) = s.strip_prefix("cuda:") {
            let ordinal = k.parse().map_err(|_| format!("unknown device '{s}': cuda:K needs a GPU index K (0, 1, ...)"))?;
            return Ok(DeviceSpec { device: Device::Cuda, ordinal });
        }
        let device = s.parse().map_err(|_| format!("unknown device '{s}' (use auto, cpu, cuda or cuda:K)"))?;
        Ok(DeviceSpec { device, ordinal: 0 })
    }
}

/// How a long command reports what it does. The library calls it; the binary draws it
/// (a progress bar on stderr). Every method defaults to doing nothing.
pub trait Progress {
    /// A run of `total` steps begins.
    fn start(&self, _total: u64, _what: &str) {}
    /// What the run is working on now (shown beside the bar).
    fn status(&self, _what: &str) {}
    fn advance(&self, _n: u64) {}
    /// A line for the user (a note or a warning), shown above the bar.
    fn message(&self, _line: &str) {}
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}

/// A layer name as a file name.
pub fn file_stem(layer: &str) -> String {
    layer.replace('/', "_")
}

/// Paths the defaults point to: relative to the working directory, else to the crate.
pub fn default_path(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if shipped.exists() {
        shipped
    } else {
        here
    }
}

/// A net definition from a `.dgnw` weights file or a bare `.prototxt`.
pub fn read_netdef(path: &Path) -> Result<(NetDef, Option<WeightsFile>)> {
    if path.extension().and_then(|e| e.to_str()) == Some("prototxt") {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let def = parse_netdef(&text).with_context(|| format!("{}", path.display()))?;
        return Ok((def, None));
    }
    let file = open_weights(path)?;
    Ok((file.netdef()?, Some(file)))
}

/// A weights file; a missing `.dgnw` says how to get one.
pub fn open_weights(path: &Path) -> Result<WeightsFile> {
    if !path.exists() && path.extension().and_then(|e| e.to_str()) == Some("dgnw") {
        bail!("weights file {} does not exist: convert a Caffe model with dgnam-convert, or run tools/fetch-weights.sh", path.display());
    }
    WeightsFile::open(path)
}

/// An error unless `file`'s net takes Caffe-space input (every Caffe model; ONNX models
/// converted with `--input-space caffe`): `what` works in Caffe space only, and would give
/// wrong numbers on another space without an error.
pub fn require_caffe_space(file: &WeightsFile, net: &Path, what: &str) -> Result<()> {
    let space = file.header.input_space;
    if space != crate::ir::InputSpace::Caffe {
        bail!("{}: the net takes {} input, and {what} is done for Caffe-space nets only (docs/onnx.md)", net.display(), space.name());
    }
    Ok(())
}

/// The weights file given, else the default one (`DEFAULT_NET`, `DEFAULT_GENERATOR`).
pub fn open_or_default(given: Option<&Path>, default: &str) -> Result<WeightsFile> {
    match given {
        Some(p) => open_weights(p),
        None => open_weights(&default_path(default)),
    }
}

/// A net file to build nets from: a `.dgnw` file's weights, or seeded random ones
/// (`Net::random`) for a bare `.prototxt`.
pub struct NetSource {
    pub path: PathBuf,
    pub def: NetDef,
    pub file: Option<WeightsFile>,
}

impl NetSource {
    pub fn open(path: &Path) -> Result<Self> {
        let (def, file) = read_netdef(path)?;
        Ok(NetSource { path: path.to_path_buf(), def, file })
    }

    /// The net at `batch` on `backend`; `seed` draws the weights of a bare prototxt.
    pub fn build<B: Kernels>(&self, batch: usize, seed: u64, backend: B) -> Result<Net<B>> {
        let ctx = || format!("{}", self.path.display());
        match &self.file {
            None => Net::random(&self.def, batch, seed, backend).with_context(ctx),
            Some(file) => {
                let plan = Plan::new(&self.def, batch).with_context(ctx)?;
                Net::new(plan, backend, |b, spec| {
                    let data = stored_param(file, spec)?;
                    Ok((b.param_from_host(data)?, data.len()))
                })
            }
        }
    }
}
