//! `dgnam`: the command line. It parses flags and calls the library (`dgnam::app`).

use clap::{Args, Parser, Subcommand};
use dgnam::app::{self, Device};
use dgnam::app::set_default_precision;
use dgnam::device::cuda::Precision;
use dgnam::bench;
use dgnam::graph::UnitRef;
use dgnam::synth::demo::run_demo;
use dgnam::synth::pixel::PixelPriors;
use dgnam::preprocess::{read_mean_file, ChannelOrder, Mean, PreprocessFlags};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "dgnam", version, about = "Preferred inputs of neurons in Caffe classifiers (DGN-AM)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How matrix products compute on a GPU: f32, or tf32 on tensor cores (faster, about
    /// 1e-3 relative error; `dgnam bench --precision tf32 --batch 8` measures it)
    #[arg(long, global = true, default_value = "f32")]
    precision: Precision,
}

#[derive(Subcommand)]
enum Command {
    /// Layers, output shapes and parameter counts of a net (.dgnw or .prototxt).
    Info { net: PathBuf },
    /// Runs a net forward and writes the outputs of the chosen layers as .npy.
    Forward {
        #[arg(long)]
        net: PathBuf,
        /// A .npy (float32 NCHW in the net's input space) or an image file.
        #[arg(long)]
        input: PathBuf,
        /// A layer whose output to write (repeatable; default: the last layer).
        #[arg(long = "layer")]
        layers: Vec<String>,
        #[arg(long)]
        out_dir: PathBuf,
        #[arg(long, default_value = "auto")]
        device: Device,
        #[command(flatten)]
        pre: PreArgs,
    },
    /// The preferred image of units of a classifier, through the DGN-AM generator.
    Synthesize(SynthArgs),
    /// Per-neuron code bounds (mean + sigma * std, at least 0) from a folder of images.
    ActRange {
        #[arg(long)]
        net: PathBuf,
        #[arg(long, default_value = "fc6")]
        layer: String,
        #[arg(long)]
        images: PathBuf,
        #[arg(long, default_value_t = 3.0)]
        sigma: f64,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        #[arg(long, default_value = "auto")]
        device: Device,
    },
    /// Gradient of one unit (summed over the batch) with respect to the input.
    Backward {
        #[arg(long)]
        net: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        layer: String,
        #[arg(long)]
        unit: usize,
        /// Spatial position X,Y for a convolutional layer (default: the center).
        #[arg(long)]
        xy: Option<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "auto")]
        device: Device,
        #[command(flatten)]
        pre: PreArgs,
    },
    /// Offline demo: the preferred image of each digit of the shipped LeNet, by pixel-space
    /// activation maximization (PNGs, a labelled montage and a GIF of the run).
    Demo {
        #[arg(long, default_value = "demo")]
        out_dir: PathBuf,
        #[arg(long, default_value_t = PixelPriors::default().iters)]
        iters: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Benchmarks: every kernel in each direction (default), or with --net, --generator or
    /// --batch the DGN-AM step (docs/benchmarks.md).
    Bench(BenchArgs),
    /// Compiles every CUDA kernel source with NVRTC and reports each (needs NVRTC, not a GPU).
    Kernels {
        /// Target architecture, e.g. sm_90 (default: the GPU's, else sm_90).
        #[arg(long)]
        arch: Option<String>,
    },
}

#[derive(Args)]
struct SynthArgs {
    /// The generator weights (default weights/generator-fc6.dgnw; `none`: optimize pixels
    /// directly with hand-designed priors, the baseline DGN-AM is compared against).
    #[arg(long)]
    generator: Option<PathBuf>,
    /// The classifier weights (default weights/caffenet.dgnw).
    #[arg(long)]
    net: Option<PathBuf>,
    #[arg(long, default_value = "fc8")]
    layer: String,
    /// Units of the layer: `945,643`, `945+643` (two at once, paper eq. 2) or `all`.
    #[arg(long, default_value = "945")]
    units: String,
    /// Spatial position X,Y for convolutional units (default: the center).
    #[arg(long)]
    xy: Option<String>,
    /// What to maximize: `activation` (the layer's own output) or `prob` (its softmax).
    #[arg(long, default_value = "activation")]
    objective: String,
    /// Weight of the |a1 - a2| penalty for two units.
    #[arg(long, default_value_t = 0.0)]
    gamma: f64,
    #[arg(long, default_value_t = 200)]
    iters: usize,
    /// Initial step size (default: 8, or 2 for GoogLeNet, as the paper's scripts).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 1e-10)]
    lr_end: f64,
    #[arg(long, default_value_t = 0.99)]
    decay: f64,
    /// Per-neuron upper bounds of the code (default: the shipped 3x fc6 bounds; `none` to not clamp).
    #[arg(long)]
    bounds: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Initial codes, shape (N, code): row i starts unit i; one row starts every unit.
    #[arg(long, conflicts_with = "init_image")]
    init_code: Option<PathBuf>,
    /// Start from the fc6 code of this image.
    #[arg(long)]
    init_image: Option<PathBuf>,
    /// Units per batch (default: 8 on the CPU, 128 on a GPU).
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long, default_value = "out")]
    out_dir: PathBuf,
    /// How PNGs are rendered: `paper` (clip to +-120, stretch) or `mean` (add the mean back).
    #[arg(long, default_value = "paper")]
    render: String,
    /// Keep the image every K iterations and write an animated GIF per unit.
    #[arg(long)]
    save_every: Option<usize>,
    #[arg(long, default_value = "auto")]
    device: Device,
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long, default_value = "auto")]
    device: Device,
    /// Also write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// One run per measurement and a small peak measurement (smoke tests).
    #[arg(long)]
    quick: bool,
    /// Timed runs per kernel after one warm-up (default: about 0.25 s worth, 3 to 100).
    #[arg(long, conflicts_with = "quick")]
    reps: Option<usize>,
    /// Batch size of the kernel benchmark.
    #[arg(long, default_value_t = 8)]
    kernel_batch: usize,
    /// Step benchmark: the classifier, .dgnw or .prototxt (random weights; default weights/caffenet.prototxt).
    #[arg(long)]
    net: Option<PathBuf>,
    /// Step benchmark: the generator, .dgnw or .prototxt (default weights/generator-fc6.prototxt);
    /// `none` times the classifier's forward + backward to the input alone.
    #[arg(long)]
    generator: Option<PathBuf>,
    /// Step benchmark: batch sizes to sweep, e.g. 1,8,32 (default 8).
    #[arg(long)]
    batch: Option<String>,
    /// Step benchmark: iterations per batch size, the first untimed (default 5, 3 with --quick).
    #[arg(long)]
    iters: Option<usize>,
}

/// How an image file becomes net input (defaults: BGR minus the ImageNet mean for colour
/// nets, raw 0-255 grey values for one-channel nets).
#[derive(Args)]
struct PreArgs {
    /// Per-channel mean in the net's channel order, e.g. 104,117,123.
    #[arg(long, conflicts_with_all = ["mean_file", "no_mean"])]
    mean_values: Option<String>,
    /// A mean image: .npy (CxHxW) or Caffe .binaryproto; center-cropped to the input.
    #[arg(long, conflicts_with = "no_mean")]
    mean_file: Option<PathBuf>,
    /// Subtract nothing.
    #[arg(long)]
    no_mean: bool,
    /// Multiply by this after subtracting the mean (LeNet: 0.00390625).
    #[arg(long)]
    scale: Option<f32>,
    /// Channel order of colour nets: bgr (Caffe's) or rgb.
    #[arg(long)]
    channel_order: Option<String>,
}

impl PreArgs {
    fn flags(&self) -> anyhow::Result<PreprocessFlags> {
        let mean = if self.no_mean {
            Some(Mean::None)
        } else if let Some(v) = &self.mean_values {
            let vals: Result<Vec<f32>, _> = v.split(',').map(|s| s.trim().parse::<f32>()).collect();
            Some(Mean::Values(vals.map_err(|_| anyhow::anyhow!("--mean-values: '{v}' is not a comma-separated list of numbers"))?))
        } else if let Some(p) = &self.mean_file {
            Some(Mean::Image(read_mean_file(p)?))
        } else {
            None
        };
        let order = match self.channel_order.as_deref() {
            None => None,
            Some("bgr") => Some(ChannelOrder::Bgr),
            Some("rgb") => Some(ChannelOrder::Rgb),
            Some(o) => anyhow::bail!("--channel-order: '{o}' is neither bgr nor rgb"),
        };
        Ok(PreprocessFlags { order, mean, scale: self.scale })
    }
}

fn parse_xy(s: &str) -> anyhow::Result<(usize, usize)> {
    let parts: Vec<&str> = s.split(',').collect();
    match parts.as_slice() {
        [x, y] => Ok((x.trim().parse()?, y.trim().parse()?)),
        _ => anyhow::bail!("expected X,Y"),
    }
    .map_err(|e: anyhow::Error| anyhow::anyhow!("--xy '{s}': {e}"))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    set_default_precision(cli.precision);
    match cli.command {
        Command::Info { net } => print!("{}", app::info(&net)?),
        Command::Forward { net, input, layers, out_dir, device, pre } => {
            let flags = pre.flags()?;
            let device = app::resolve_device(device)?;
            for p in app::forward(&net, &input, &layers, &out_dir, &flags, device)? {
                println!("wrote {}", p.display());
            }
        }
        Command::Synthesize(a) => {
            let objective = match a.objective.as_str() {
                "activation" => false,
                "prob" => true,
                o => anyhow::bail!("--objective: '{o}' is neither activation nor prob"),
            };
            let render = a.render.parse().map_err(|e| anyhow::anyhow!("--render: {e}"))?;
            let cmd = app::SynthCommand {
                net: a.net,
                generator: a.generator,
                layer: a.layer,
                units: a.units,
                xy: a.xy.as_deref().map(parse_xy).transpose()?,
                prob: objective,
                gamma: a.gamma,
                iters: a.iters,
                lr: a.lr,
                lr_end: a.lr_end,
                decay: a.decay,
                bounds: a.bounds,
                seed: a.seed,
                init_code: a.init_code,
                init_image: a.init_image,
                batch: a.batch,
                out_dir: a.out_dir,
                render,
                save_every: a.save_every,
            };
            let device = app::resolve_device(a.device)?;
            let r = app::synthesize(&cmd, device)?;
            println!("{} units done, {} already there; summary in {}", r.done, r.skipped, r.summary.display());
            if let Some(m) = r.montage {
                println!("montage: {}", m.display());
            }
            if !r.failed.is_empty() {
                let names: Vec<&str> = r.failed.iter().map(|(u, _)| u.as_str()).collect();
                anyhow::bail!("{} unit(s) went non-finite and were skipped: {}", names.len(), names.join(", "));
            }
        }
        Command::ActRange { net, layer, images, sigma, out, device } => {
            let device = app::resolve_device(device)?;
            let (n, neurons) = app::act_range(&net, &layer, &images, sigma, &out, device)?;
            println!("wrote {}: {neurons} bounds from {n} images", out.display());
        }
        Command::Backward { net, input, layer, unit, xy, out, device, pre } => {
            let flags = pre.flags()?;
            let xy = xy.as_deref().map(parse_xy).transpose()?;
            let device = app::resolve_device(device)?;
            app::backward(&net, &input, &layer, UnitRef { unit, xy }, &out, &flags, device)?;
            println!("wrote {}", out.display());
        }
        Command::Demo { out_dir, iters, seed } => print!("{}", run_demo(&out_dir, iters, seed)?.summary()),
        Command::Bench(a) => {
            let device = app::resolve_device(a.device)?;
            let json = if a.net.is_some() || a.generator.is_some() || a.batch.is_some() {
                let opts = bench::StepOptions::resolve(a.net, a.generator, a.batch.as_deref(), a.iters, a.quick)?;
                let report = bench::steps(device, cli.precision, &opts, &mut |row| print!("{row}"))?;
                report.to_json()
            } else {
                let reps = match (a.quick, a.reps) {
                    (true, _) => bench::Reps::quick(),
                    (false, Some(n)) => bench::Reps::fixed(n),
                    (false, None) => bench::Reps::default(),
                };
                let opts = bench::KernelOptions { batch: a.kernel_batch, reps, quick: a.quick, live: true };
                bench::kernels(device, cli.precision, &opts)?.to_json()
            };
            if let Some(path) = a.json {
                dgnam::fsutil::write_atomic(&path, serde_json::to_string_pretty(&json)?.as_bytes())?;
                println!("wrote {}", path.display());
            }
        }
        Command::Kernels { arch } => print!("{}", app::kernels(arch.as_deref())?),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
