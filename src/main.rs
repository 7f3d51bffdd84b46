//! `dgnam`: the command line. It parses flags and calls the library (`dgnam::app`).

use clap::{Args, Parser, Subcommand};
use dgnam::app::{self, Device, DeviceSpec};
use dgnam::bench;
use dgnam::device::cuda::Precision;
use dgnam::gradcheck::GradcheckOptions;
use dgnam::graph::UnitRef;
use dgnam::io::Progress;
use dgnam::preprocess::{read_mean_file, ChannelOrder, Mean, PreprocessFlags};
use dgnam::synth::demo::run_demo;
use dgnam::synth::nearest::NearestOptions;
use dgnam::synth::options::{parse_xy, SynthOptions};
use dgnam::synth::pixel::PixelPriors;
use dgnam::train::TrainOptions;
use indicatif::{ProgressBar, ProgressStyle};
use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "dgnam", version, about = "Preferred inputs of neurons in Caffe classifiers (DGN-AM)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How matrix products compute on a GPU: f32, or tf32 or bf16 on tensor cores (faster;
    /// tf32 about 1e-3 relative error, bf16 about 8x that, storage f32 in both; `dgnam
    /// bench --precision tf32 --batch 8` measures it)
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
    Synthesize {
        #[command(flatten)]
        opts: Box<SynthOptions>,
        /// auto, cpu, cuda (GPU 0) or cuda:K (GPU K).
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
    },
    /// Joins the shards' results in DIR (summary.<I>-of-<N>.json) once every unit is there
    /// exactly once: writes summary.json, the montage and the gallery, or names what is missing.
    Merge { dir: PathBuf },
    /// Writes DIR/index.html, a static gallery of DIR/summary.json (opens from file://).
    Gallery { dir: PathBuf },
    /// Per-neuron code bounds (mean + sigma * std, at least 0) from a folder of images or
    /// the images of one .npy.
    #[command(group(clap::ArgGroup::new("data").required(true).args(["images", "images_npy"])))]
    ActRange {
        #[arg(long)]
        net: PathBuf,
        #[arg(long, default_value = "fc6")]
        layer: String,
        /// A folder of images (.png, .jpg, or .npy files of one image each).
        #[arg(long)]
        images: Option<PathBuf>,
        /// One N x C x H x W .npy of images in the net's input space.
        #[arg(long, conflicts_with = "images")]
        images_npy: Option<PathBuf>,
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
    /// activation maximization and by DGN-AM through the shipped prior (PNGs, .npy, a
    /// labelled montage, a GIF of the runs, summary.json with nearest-real-digit distances).
    Demo {
        #[arg(long, default_value = "demo")]
        out_dir: PathBuf,
        #[arg(long, default_value_t = PixelPriors::default().iters)]
        iters: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Trains a generator to invert a layer of a classifier (DeePSiM-style: image, feature
    /// and adversarial losses, Adam), e.g. the demo's prior for LeNet's ip1
    /// (weights/README.md, docs/training.md).
    TrainGenerator {
        #[command(flatten)]
        opts: TrainOptions,
        #[arg(long, default_value = "auto")]
        device: Device,
        #[command(flatten)]
        pre: PreArgs,
    },
    /// The real images nearest to synthesized ones, in pixel space and in the code space of
    /// layers of the net (DGN-AM paper, Fig. S22): nearest.json and a montage.
    Nearest {
        #[command(flatten)]
        opts: NearestOptions,
        #[arg(long, default_value = "auto")]
        device: Device,
        #[command(flatten)]
        pre: PreArgs,
    },
    /// Benchmarks: every kernel in each direction (default), or with --net, --generator or
    /// --batch the DGN-AM step (docs/benchmarks.md).
    Bench(BenchArgs),
    /// Checks a net's gradients: each layer alone (real weights and channels, height and
    /// width divided by --scale) and the whole net's input gradient against f64 central
    /// differences on the CPU; with --device cuda|both, each layer on the GPU against the
    /// CPU. A coordinate's relative error is |numeric - analytic| / (rms + max(|numeric|,
    /// |analytic|)), rms that of the blob's analytic gradient: a layer passes at 1e-6, the
    /// whole net at 1e-5, the GPU at |gpu - cpu| <= 1e-4 max|cpu| + 1e-5. Exit status 0 only
    /// when every check passes.
    Gradcheck(GradcheckOptions),
    /// Compiles every CUDA kernel with NVRTC and reports each function's registers, spills,
    /// shared memory and CTAs per SM (needs NVRTC, not a GPU).
    Kernels {
        /// Target architecture, e.g. sm_90 (default: the GPU's, else sm_90).
        #[arg(long)]
        arch: Option<String>,
    },
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
    /// Kernel benchmark: only kernels whose name contains one of these, e.g. conv5_1,caffenet/fc.
    #[arg(long, value_delimiter = ',')]
    kernels: Vec<String>,
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
    /// Step benchmark: run each ReLU as a layer of its own instead of inside the convolution
    /// before it, and each SiLU as its Sigmoid and Mul (for comparing the two; the results
    /// are the same bit for bit).
    #[arg(long)]
    unfused: bool,
    /// Kernel benchmark on a GPU: every convolution and deconvolution once per version of the
    /// versioned kernels (im2col, col2im), side by side.
    #[arg(long, conflicts_with_all = ["net", "generator", "batch"])]
    versions: bool,
    /// Kernel benchmark of any net: every layer of --net (and first of --generator, when
    /// given) in each direction at --kernel-batch, random weights for a prototxt, then the
    /// time by layer type. ReLUs are timed as layers of their own.
    #[arg(long, requires = "net", conflicts_with_all = ["batch", "iters", "unfused", "versions"])]
    layers: bool,
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

/// The library's progress on stderr: a bar while a run goes, its notes as lines above it.
#[derive(Default)]
struct Bar(RefCell<Option<ProgressBar>>);

impl Progress for Bar {
    fn start(&self, total: u64, what: &str) {
        let bar = ProgressBar::new(total);
        let template = format!("{{bar:40}} {{pos}}/{{len}} {what}, {{per_sec}}, {{elapsed}} elapsed, {{eta}} left, {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        if let Some(old) = self.0.replace(Some(bar)) {
            old.finish_and_clear();
        }
    }

    fn status(&self, what: &str) {
        if let Some(bar) = &*self.0.borrow() {
            bar.set_message(what.to_string());
        }
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &*self.0.borrow() {
            bar.inc(n);
        }
    }

    fn message(&self, line: &str) {
        match &*self.0.borrow() {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

impl Bar {
    /// A result line on stdout, above the bar.
    fn println(&self, line: &str) {
        match &*self.0.borrow() {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }
}

/// Resolves `--device`, telling stderr which device it is.
fn device(d: Device, precision: Precision) -> anyhow::Result<Device> {
    let (device, line) = app::resolve_device(d, precision)?;
    eprintln!("{line}");
    Ok(device)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let precision = cli.precision;
    match cli.command {
        Command::Info { net } => print!("{}", app::info(&net)?),
        Command::Forward { net, input, layers, out_dir, device, pre } => {
            let flags = pre.flags()?;
            let device = self::device(device, precision)?;
            for p in app::forward(&net, &input, &layers, &out_dir, &flags, device, precision)? {
                println!("wrote {}", p.display());
            }
        }
        Command::Synthesize { opts, device } => {
            opts.check()?;
            let shard = opts.shard.map(|s| s.resolve(&|k| std::env::var(k).ok())).transpose()?;
            let (resolved, line) = app::resolve_device_on(device, precision)?;
            eprintln!("{line}");
            if let Some(devices) = &opts.devices {
                let exe = std::env::current_exe().map_err(|e| anyhow::anyhow!("cannot find the dgnam binary to start workers: {e}"))?;
                let args: Vec<String> = std::env::args().skip(1).collect();
                let m = app::synthesize_on_workers(&exe, &args, &devices.0, resolved, &opts.out_dir, &Bar::default())?;
                print_merged(&m);
                return Ok(());
            }
            let place = app::Placement { device: resolved, ordinal: device.ordinal, precision, shard };
            let r = app::synthesize(&opts, &place, &Bar::default())?;
            println!("{} units done, {} already there; summary in {}", r.done, r.skipped, r.summary.display());
            if let Some(m) = r.montage {
                println!("montage: {}", m.display());
            }
            if let Some(g) = r.gallery {
                println!("gallery: {}", g.display());
            }
            if !r.failed.is_empty() {
                let names: Vec<&str> = r.failed.iter().map(|(u, _)| u.as_str()).collect();
                anyhow::bail!("{} unit(s) went non-finite and were skipped: {}", names.len(), names.join(", "));
            }
        }
        Command::ActRange { net, layer, images, images_npy, sigma, out, device } => {
            let images = images.or(images_npy).ok_or_else(|| anyhow::anyhow!("give --images DIR or --images-npy X.npy"))?;
            let device = self::device(device, precision)?;
            let (n, neurons) = app::act_range(&net, &layer, &images, sigma, &out, device, precision)?;
            println!("wrote {}: {neurons} bounds from {n} images", out.display());
        }
        Command::Backward { net, input, layer, unit, xy, out, device, pre } => {
            let flags = pre.flags()?;
            let xy = xy.as_deref().map(parse_xy).transpose().map_err(|e| anyhow::anyhow!("--xy {e}"))?;
            let device = self::device(device, precision)?;
            app::backward(&net, &input, &layer, UnitRef { unit, xy }, &out, &flags, device, precision)?;
            println!("wrote {}", out.display());
        }
        Command::Demo { out_dir, iters, seed } => print!("{}", run_demo(&out_dir, iters, seed, &Bar::default())?.summary()),
        Command::TrainGenerator { opts, device, pre } => {
            let flags = pre.flags()?;
            opts.check()?;
            let device = self::device(device, precision)?;
            let r = app::train_generator(&opts, &flags, device, precision, &Bar::default())?;
            let losses = match (r.first_loss, r.last_loss) {
                (Some(a), Some(b)) => format!(", loss {a:.4} -> {b:.4}"),
                _ => String::new(),
            };
            let resumed = if r.resumed_from > 0 { format!(" (resumed at step {})", r.resumed_from) } else { String::new() };
            println!("trained {} steps{resumed}{losses} in {:.1} s", r.steps, r.seconds);
            println!("wrote {} and {}", r.generator.display(), r.log.display());
            if let Some(g) = r.grid {
                println!("reconstructions: {}", g.display());
            }
        }
        Command::Nearest { opts, device, pre } => {
            let flags = pre.flags()?;
            let device = self::device(device, precision)?;
            let r = app::nearest(&opts, &flags, device, precision, &Bar::default())?;
            println!("{} queries, {} nearest in {}: {}", r.results.len(), opts.k, opts.layers.join(", "), r.json.display());
            if let Some(m) = r.montage {
                println!("montage: {}", m.display());
            }
        }
        Command::Bench(a) => {
            let device = self::device(a.device, precision)?;
            let json = if !a.layers && (a.net.is_some() || a.generator.is_some() || a.batch.is_some()) {
                let mut opts = bench::StepOptions::resolve(a.net, a.generator, a.batch.as_deref(), a.iters, a.quick)?;
                opts.unfused = a.unfused;
                let report = bench::steps(device, precision, &opts, &mut |row| print!("{row}"))?;
                report.to_json()
            } else {
                let reps = match (a.quick, a.reps) {
                    (true, _) => bench::Reps::quick(),
                    (false, Some(n)) => bench::Reps::fixed(n),
                    (false, None) => bench::Reps::default(),
                };
                let nets = match (&a.generator, &a.net) {
                    (Some(g), Some(n)) if g.as_os_str() != "none" => vec![g.clone(), n.clone()],
                    (_, n) => n.iter().cloned().collect(),
                };
                let opts = bench::KernelOptions { batch: a.kernel_batch, reps, quick: a.quick, only: a.kernels.clone(), nets };
                if a.versions {
                    bench::versions(device, precision, &opts, &mut |row| print!("{row}"))?
                } else {
                    bench::kernels(device, precision, &opts, &mut |row| print!("{row}"))?.to_json()
                }
            };
            if let Some(path) = a.json {
                dgnam::fsutil::write_atomic(&path, serde_json::to_string_pretty(&json)?.as_bytes())?;
                println!("wrote {}", path.display());
            }
        }
        Command::Gradcheck(opts) => {
            let bar = Bar::default();
            let report = app::gradcheck(&opts, precision, &bar, &mut |row| bar.println(row))?;
            println!("{}", report.summary());
            if let Some(path) = &opts.json {
                dgnam::fsutil::write_atomic(path, serde_json::to_string_pretty(&report.to_json())?.as_bytes())?;
                println!("wrote {}", path.display());
            }
            if !report.pass() {
                anyhow::bail!("gradients fail the check: {}", report.failures().join(", "));
            }
        }
        Command::Kernels { arch } => print!("{}", app::kernels(arch.as_deref())?),
        Command::Merge { dir } => print_merged(&dgnam::synth::merge::merge(&dir)?),
        Command::Gallery { dir } => println!("gallery: {}", dgnam::synth::gallery::of_folder(&dir)?.display()),
    }
    Ok(())
}

fn print_merged(m: &dgnam::synth::merge::Merged) {
    println!("merged {} units from {} shards; summary in {}", m.units, m.shards, m.finished.summary.display());
    if let Some(p) = &m.finished.montage {
        println!("montage: {}", p.display());
    }
    println!("gallery: {}", m.finished.gallery.display());
}

/// A clap error as one line (`error: ... [possible values: ...]`), like every other error.
fn one_line(rendered: &str) -> String {
    let keep = |l: &&str| !l.trim().is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:");
    rendered.lines().filter(keep).map(str::trim).collect::<Vec<_>>().join(" ")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            eprintln!("{}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    match dgnam::device::cpu::on_pool(|| run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
