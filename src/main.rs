//! `dgnam`: the command line. It parses flags and calls the library (`dgnam::app`).

use clap::{Args, Parser, Subcommand};
use dgnam::app::{self, Device};
use dgnam::graph::UnitRef;
use dgnam::preprocess::{read_mean_file, ChannelOrder, Mean, PreprocessFlags};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "dgnam", version, about = "Preferred inputs of neurons in Caffe classifiers (DGN-AM)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Compiles every CUDA kernel source with NVRTC and reports each (needs NVRTC, not a GPU).
    Kernels {
        /// Target architecture, e.g. sm_90 (default: the GPU's, else sm_90).
        #[arg(long)]
        arch: Option<String>,
    },
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
    match cli.command {
        Command::Info { net } => print!("{}", app::info(&net)?),
        Command::Forward { net, input, layers, out_dir, device, pre } => {
            let flags = pre.flags()?;
            let device = app::resolve_device(device)?;
            for p in app::forward(&net, &input, &layers, &out_dir, &flags, device)? {
                println!("wrote {}", p.display());
            }
        }
        Command::Backward { net, input, layer, unit, xy, out, device, pre } => {
            let flags = pre.flags()?;
            let xy = xy.as_deref().map(parse_xy).transpose()?;
            let device = app::resolve_device(device)?;
            app::backward(&net, &input, &layer, UnitRef { unit, xy }, &out, &flags, device)?;
            println!("wrote {}", out.display());
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
