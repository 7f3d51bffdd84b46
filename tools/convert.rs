//! `dgnam-convert`: a deploy prototxt and a trained caffemodel, or an ONNX model, into one
//! `.dgnw` file.

use clap::{Parser, ValueEnum};
use dgnam::ir::InputSpace;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, ValueEnum)]
enum Space {
    /// RGB, x/255, minus the ImageNet mean, divided by its std (torchvision's models).
    Torchvision,
    /// BGR, 0-255, minus the ImageNet mean (BVLC Caffe's models).
    Caffe,
}

#[derive(Parser)]
#[command(name = "dgnam-convert", version, about = "Convert a Caffe or ONNX model into a dgnam weights file")]
struct Args {
    /// The deploy net definition.
    #[arg(long, required_unless_present = "onnx", conflicts_with = "onnx")]
    prototxt: Option<PathBuf>,
    /// The trained weights (layers are matched to the deploy net by name).
    #[arg(long, conflicts_with = "onnx")]
    caffemodel: Option<PathBuf>,
    /// Instead of a caffemodel: random weights from this seed (for tests and benchmarks).
    #[arg(long, conflicts_with_all = ["caffemodel", "onnx"])]
    random_weights: Option<u64>,
    /// An ONNX model (graph and weights) instead of a Caffe one.
    #[arg(long)]
    onnx: Option<PathBuf>,
    /// The space the ONNX model's input lives in, recorded in the weights file.
    #[arg(long, value_enum)]
    input_space: Option<Space>,
    /// The .dgnw file to write.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let started = std::time::Instant::now();
    let space = match a.input_space.unwrap_or(Space::Torchvision) {
        Space::Torchvision => InputSpace::Torchvision,
        Space::Caffe => InputSpace::Caffe,
    };
    let result = match (&a.onnx, &a.prototxt, &a.caffemodel, a.random_weights) {
        (None, ..) if a.input_space.is_some() => {
            Err(anyhow::anyhow!("--input-space applies to --onnx models only (Caffe models are caffe)"))
        }
        (Some(model), ..) => dgnam::convert::convert_onnx(model, &a.out, space),
        (None, Some(p), _, Some(seed)) => dgnam::convert::write_random(p, seed, &a.out),
        (None, Some(p), Some(model), None) => dgnam::convert::convert(p, model, &a.out),
        _ => Err(anyhow::anyhow!("give --onnx, or --prototxt with --caffemodel or --random-weights")),
    };
    match result {
        Ok((tensors, params)) => {
            println!("wrote {}: {tensors} tensors, {params} parameters in {:.2} s", a.out.display(), started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
