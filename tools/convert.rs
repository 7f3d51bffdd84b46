//! `dgnam-convert`: a deploy prototxt and a trained caffemodel into one `.dgnw` file.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "dgnam-convert", version, about = "Convert a Caffe model into a dgnam weights file")]
struct Args {
    /// The deploy net definition.
    #[arg(long)]
    prototxt: PathBuf,
    /// The trained weights (layers are matched to the deploy net by name).
    #[arg(long, required_unless_present = "random_weights")]
    caffemodel: Option<PathBuf>,
    /// Instead of a caffemodel: random weights from this seed (for tests and benchmarks).
    #[arg(long, conflicts_with = "caffemodel")]
    random_weights: Option<u64>,
    /// The .dgnw file to write.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let started = std::time::Instant::now();
    let result = match (&a.caffemodel, a.random_weights) {
        (_, Some(seed)) => dgnam::convert::write_random(&a.prototxt, seed, &a.out),
        (Some(model), None) => dgnam::convert::convert(&a.prototxt, model, &a.out),
        (None, None) => Err(anyhow::anyhow!("give --caffemodel or --random-weights")),
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
