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
    #[arg(long)]
    caffemodel: PathBuf,
    /// The .dgnw file to write.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let started = std::time::Instant::now();
    match dgnam::convert::convert(&a.prototxt, &a.caffemodel, &a.out) {
        Ok((tensors, params)) => {
            println!(
                "wrote {}: {tensors} tensors, {params} parameters in {:.2} s",
                a.out.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
