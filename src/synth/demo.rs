//! `dgnam demo`: the preferred image of each of LeNet's ten digits, by pixel-space
//! activation maximization, on the LeNet that ships in `weights/demo/`. Needs no
//! downloads and runs in seconds on a CPU.

use super::pixel::{pixel_am, PixelPriors};
use super::render::{montage, to_rgb, write_gif, write_png, Render};
use crate::convert;
use crate::graph::{CpuNet, UnitRef};
use crate::io::Progress;
use crate::rng::Rng;
use anyhow::{ensure, Context, Result};
use image::imageops::{resize, FilterType};
use image::RgbImage;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The layer whose units are maximized: LeNet's pre-softmax class scores.
pub const LAYER: &str = "ip2";
const PROB: &str = "prob";
const DIGITS: usize = 10;
/// Each 28-pixel digit becomes a 224-pixel tile in the PNGs.
const PNG_SCALE: u32 = 8;
/// GIF frames use smaller tiles: ten 224-pixel tiles per frame make a slow, large GIF.
const GIF_SCALE: u32 = 4;
/// About this many GIF frames whatever the iteration count.
const GIF_FRAMES: usize = 40;
const GIF_DELAY_MS: u32 = 100;
/// Extra copies of the last frame, so the GIF pauses on the result before looping.
const GIF_HOLD: usize = 5;

/// Where the shipped LeNet lives (`weights/demo/`, provenance in its PROVENANCE.md): in the
/// working directory, else through the crate's own directory, so the demo works from any
/// working directory of a fresh clone.
pub fn lenet_dir() -> PathBuf {
    crate::io::default_path(crate::io::DEMO_DIR)
}

#[derive(Clone, Debug)]
pub struct DigitResult {
    pub digit: usize,
    /// The `ip2` unit of the final image.
    pub activation: f32,
    /// LeNet's softmax probability of the digit for the final image.
    pub probability: f32,
    pub png: PathBuf,
}

#[derive(Clone, Debug)]
pub struct DemoReport {
    pub digits: Vec<DigitResult>,
    /// One 1 x 28 x 28 image per digit, in LeNet's input space ([0, 1]).
    pub images: Vec<Vec<f32>>,
    pub montage: PathBuf,
    pub gif: PathBuf,
    pub seconds: f64,
}

impl DemoReport {
    /// The lines `dgnam demo` prints.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for d in &self.digits {
            let _ = writeln!(s, "digit {}  activation {:8.3}  p={:.4}  {}", d.digit, d.activation, d.probability, d.png.display());
        }
        let _ = writeln!(s, "montage {}", self.montage.display());
        let _ = writeln!(s, "gif     {}", self.gif.display());
        let _ = writeln!(s, "done in {:.2} s", self.seconds);
        s
    }
}

/// `ip2` and `prob` of LeNet for a batch of images.
fn classify(net: &CpuNet<f32>, images: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut st = net.state()?;
    net.forward(&mut st, &[images])?;
    let scores = st.value(net.plan.layer_output(LAYER)?).clone();
    let probs = st.value(net.plan.layer_output(PROB)?).clone();
    Ok((scores, probs))
}

/// A labelled grid of the ten digits, five per row.
fn digit_montage(images: &[f32], probs: &[f32], scale: u32) -> RgbImage {
    let side = 28 * scale;
    let tiles: Vec<(RgbImage, String)> = images
        .chunks(28 * 28)
        .enumerate()
        .map(|(d, img)| {
            let tile = resize(&to_rgb(img, 1, 28, 28, Render::Mean), side, side, FilterType::Nearest);
            (tile, format!("{d}  p={:.3}", probs[d * DIGITS + d]))
        })
        .collect();
    montage(&tiles, Some(5))
}

/// `dgnam demo` into `out_dir`; `progress` hears what it does.
pub fn run_demo(out_dir: &Path, iters: usize, seed: u64, progress: &dyn Progress) -> Result<DemoReport> {
    let start = Instant::now();
    ensure!(iters > 0, "--iters must be at least 1");
    let dir = lenet_dir();
    let (prototxt, model) = (dir.join("lenet.prototxt"), dir.join("lenet_iter_10000.caffemodel"));
    for f in [&prototxt, &model] {
        ensure!(f.is_file(), "the demo's LeNet model is missing: {} (it ships in the repository's weights/demo/)", f.display());
    }
    progress.message(&format!("demo: the preferred image of each LeNet digit ({LAYER} units 0-9), pixel-space activation maximization, {iters} iterations, seed {seed}"));

    let caffe = convert::load(&prototxt, &model)?;
    let net = caffe.net::<f32>(DIGITS)?;
    let shape = &net.plan.blobs[net.plan.inputs[0]].shape;
    ensure!(shape[1..] == [1, 28, 28], "{}: expected a 1x28x28 input, found {:?}", prototxt.display(), shape);

    let priors = PixelPriors { iters, ..PixelPriors::default() };
    // A dim, faintly noisy start: near MNIST's black background, with enough variation
    // that the first gradients differ from pixel to pixel.
    let mut rng = Rng::new(seed);
    let init: Vec<f32> = (0..DIGITS * 28 * 28).map(|_| rng.uniform(0.0, 0.1) as f32).collect();
    let units: Vec<UnitRef> = (0..DIGITS).map(|unit| UnitRef { unit, xy: None }).collect();
    let frame_every = iters.div_ceil(GIF_FRAMES);
    let run = pixel_am(&net, LAYER, &units, &priors, &init, &[rng.next_u64()], Some(frame_every))?;

    let (scores, probs) = classify(&net, &run.images)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut digits = Vec::with_capacity(DIGITS);
    for (d, img) in run.images.chunks(28 * 28).enumerate() {
        let side = 28 * PNG_SCALE;
        let png = out_dir.join(format!("digit_{d}.png"));
        write_png(&png, &resize(&to_rgb(img, 1, 28, 28, Render::Mean), side, side, FilterType::Nearest))?;
        digits.push(DigitResult { digit: d, activation: scores[d * DIGITS + d], probability: probs[d * DIGITS + d], png });
    }
    let montage_path = out_dir.join("montage.png");
    write_png(&montage_path, &digit_montage(&run.images, &probs, PNG_SCALE))?;

    let mut frames = Vec::with_capacity(run.frames.len() + GIF_HOLD);
    for (_, images) in &run.frames {
        let (_, p) = classify(&net, images)?;
        frames.push(digit_montage(images, &p, GIF_SCALE));
    }
    if let Some(last) = frames.last().cloned() {
        frames.extend(std::iter::repeat_n(last, GIF_HOLD));
    }
    let gif = out_dir.join("demo.gif");
    write_gif(&gif, &frames, GIF_DELAY_MS)?;

    Ok(DemoReport {
        digits,
        images: run.images.chunks(28 * 28).map(|c| c.to_vec()).collect(),
        montage: montage_path,
        gif,
        seconds: start.elapsed().as_secs_f64(),
    })
}
