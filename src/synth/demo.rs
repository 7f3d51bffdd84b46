//! `dgnam demo`: the preferred image of each of LeNet's ten digits, twice: by pixel-space
//! activation maximization (hand-designed priors, the baseline) and by DGN-AM through the
//! shipped prior, a generator trained by `dgnam train-generator` to invert LeNet's `ip1`
//! on real digits. Everything it needs ships in `weights/demo/`; it runs in seconds on a
//! CPU. Each image is also compared with its nearest real digit.

use super::dgn::{Dgn, Objective, Schedule};
use super::nearest::Gallery;
use super::options::UnitSel;
use super::pixel::{pixel_am, PixelPriors};
use super::render::{montage, to_rgb, write_gif, write_png, Render};
use super::run::{random_code, read_bounds, unit_key};
use crate::convert;
use crate::device::Cpu;
use crate::fsutil::write_atomic;
use crate::graph::{CpuNet, UnitRef};
use crate::io::Progress;
use crate::npy;
use crate::rng::Rng;
use crate::weights::WeightsFile;
use anyhow::{bail, ensure, Context, Result};
use image::imageops::{resize, FilterType};
use image::RgbImage;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The layer whose units are maximized: LeNet's pre-softmax class scores.
pub const LAYER: &str = "ip2";
const PROB: &str = "prob";
const DIGITS: usize = 10;
const SIDE: usize = 28;
/// The shipped prior (in `weights/demo/`), its code bounds and the real digits.
pub const GENERATOR: &str = "generator-ip1.dgnw";
/// Mean + 1 sigma of ip1 over the real digits: DGN-AM's codes stay near real digits' codes
/// (3 sigma, the paper's choice for fc6, lets this small prior drift into noisier images).
pub const BOUNDS: &str = "act_range/1x/ip1.txt";
pub const REAL_DIGITS: &str = "digits.npy";
/// Each 28-pixel digit becomes a 224-pixel PNG.
const PNG_SCALE: u32 = 8;
/// The montage's tiles: two rows of ten.
const MONTAGE_SCALE: u32 = 4;
/// GIF frames use smaller tiles still.
const GIF_SCALE: u32 = 3;
/// About this many GIF frames whatever the iteration count.
const GIF_FRAMES: usize = 40;
const GIF_DELAY_MS: u32 = 100;
/// Extra copies of the last frame, so the GIF pauses on the result before looping.
const GIF_HOLD: usize = 5;

/// Where the shipped LeNet and the demo's prior live (`weights/demo/`, provenance in its
/// PROVENANCE.md): in the working directory, else through the crate's own directory, so
/// the demo works from any working directory of a fresh clone.
pub fn lenet_dir() -> PathBuf {
    crate::io::default_path(crate::io::DEMO_DIR)
}

/// The two methods, as file and JSON names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    PixelAm,
    DgnAm,
}

impl Method {
    pub fn dir(self) -> &'static str {
        match self {
            Method::PixelAm => "pixel-am",
            Method::DgnAm => "dgn-am",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Method::PixelAm => "pixel_am",
            Method::DgnAm => "dgn_am",
        }
    }
    fn caption(self) -> &'static str {
        match self {
            Method::PixelAm => "pixel",
            Method::DgnAm => "DGN",
        }
    }
}

#[derive(Clone, Debug)]
pub struct DigitResult {
    pub digit: usize,
    /// The `ip2` unit of the final image.
    pub activation: f32,
    /// LeNet's softmax probability of the digit for the final image.
    pub probability: f32,
    /// The nearest real digit (index into `weights/demo/digits.npy`) and its distance
    /// after both are normalized to zero mean and unit norm.
    pub nearest: (usize, f64),
    pub png: PathBuf,
    /// One 1 x 28 x 28 image in LeNet's input space.
    pub image: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct DemoReport {
    /// Pixel-space AM, digits 0..9.
    pub pixel: Vec<DigitResult>,
    /// DGN-AM through the shipped prior, digits 0..9.
    pub dgn: Vec<DigitResult>,
    /// DGN-AM's final codes (500 values each).
    pub codes: Vec<Vec<f32>>,
    pub montage: PathBuf,
    pub gif: PathBuf,
    pub summary: PathBuf,
    pub seconds: f64,
}

/// The mean nearest-real-digit distance of a method's ten images.
pub fn mean_nearest(results: &[DigitResult]) -> f64 {
    results.iter().map(|d| d.nearest.1).sum::<f64>() / results.len().max(1) as f64
}

impl DemoReport {
    /// The lines `dgnam demo` prints.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (name, rows) in [("pixel AM", &self.pixel), ("DGN-AM  ", &self.dgn)] {
            for d in rows {
                let _ = writeln!(
                    s,
                    "{name} digit {}  activation {:8.3}  p={:.4}  nearest real digit {:.3}  {}",
                    d.digit,
                    d.activation,
                    d.probability,
                    d.nearest.1,
                    d.png.display()
                );
            }
        }
        let (p, g) = (mean_nearest(&self.pixel), mean_nearest(&self.dgn));
        let _ = writeln!(s, "mean distance to the nearest real digit: pixel AM {p:.3}, DGN-AM {g:.3}");
        let _ = writeln!(s, "montage {}", self.montage.display());
        let _ = writeln!(s, "gif     {}", self.gif.display());
        let _ = writeln!(s, "summary {}", self.summary.display());
        let _ = writeln!(s, "done in {:.2} s", self.seconds);
        s
    }
}

/// `ip2` and `prob` of LeNet for a batch of ten images.
fn classify(net: &CpuNet<f32>, images: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut st = net.state()?;
    net.forward(&mut st, &[images])?;
    let scores = st.value(net.plan.layer_output(LAYER)?).clone();
    let probs = st.value(net.plan.layer_output(PROB)?).clone();
    Ok((scores, probs))
}

/// One tile per digit of each row (pixel AM above, DGN-AM below), with its probability.
fn digit_montage(rows: &[(Method, &[f32], &[f32])], scale: u32) -> RgbImage {
    let side = SIDE as u32 * scale;
    let mut tiles = Vec::with_capacity(rows.len() * DIGITS);
    for &(method, images, probs) in rows {
        for (d, img) in images.chunks(SIDE * SIDE).enumerate() {
            let tile = resize(&to_rgb(img, 1, SIDE, SIDE, Render::Mean), side, side, FilterType::Nearest);
            tiles.push((tile, format!("{} {d} p={:.2}", method.caption(), probs[d * DIGITS + d])));
        }
    }
    montage(&tiles, Some(DIGITS))
}

fn shipped(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    ensure!(p.is_file(), "the demo's {} is missing (it ships in the repository's weights/demo/)", p.display());
    Ok(p)
}

/// `dgnam demo` into `out_dir`; `progress` hears what it does. Both methods run `iters`
/// iterations from `seed`.
pub fn run_demo(out_dir: &Path, iters: usize, seed: u64, progress: &dyn Progress) -> Result<DemoReport> {
    let start = Instant::now();
    ensure!(iters > 0, "--iters must be at least 1");
    let dir = lenet_dir();
    let prototxt = shipped(&dir, "lenet.prototxt")?;
    let model = shipped(&dir, "lenet_iter_10000.caffemodel")?;
    let (gen_path, bounds_path, real_path) = (shipped(&dir, GENERATOR)?, shipped(&dir, BOUNDS)?, shipped(&dir, REAL_DIGITS)?);
    progress.message(&format!(
        "demo: the preferred image of each LeNet digit ({LAYER} units 0-9) by pixel-space AM and by DGN-AM through {}, {iters} iterations, seed {seed}",
        gen_path.display()
    ));

    let caffe = convert::load(&prototxt, &model)?;
    let net = caffe.net::<f32>(DIGITS)?;
    let shape = &net.plan.blobs[net.plan.inputs[0]].shape;
    ensure!(shape[1..] == [1, SIDE, SIDE], "{}: expected a 1x28x28 input, found {:?}", prototxt.display(), shape);
    let frame_every = iters.div_ceil(GIF_FRAMES);

    // Pixel space: a dim, faintly noisy start near MNIST's black background, with enough
    // variation that the first gradients differ from pixel to pixel.
    let priors = PixelPriors { iters, ..PixelPriors::default() };
    let mut rng = Rng::new(seed);
    let init: Vec<f32> = (0..DIGITS * SIDE * SIDE).map(|_| rng.uniform(0.0, 0.1) as f32).collect();
    let units: Vec<UnitRef> = (0..DIGITS).map(|unit| UnitRef { unit, xy: None }).collect();
    let pixel = pixel_am(&net, LAYER, &units, &priors, &init, &[rng.next_u64()], Some(frame_every))?;

    // DGN-AM through the shipped prior, the paper's loop and schedule; each digit starts
    // from its own N(0, 1) code, as `synthesize` draws it.
    let gen_file = WeightsFile::open(&gen_path)?;
    let generator = CpuNet::<f32>::from_weights(&gen_file, DIGITS, Cpu::new())?;
    let bounds = read_bounds(&bounds_path)?;
    let mut dgn = Dgn::new(&generator, &net, net.plan.layer_output(LAYER)?, Some(&bounds))?;
    let codes: Vec<f32> = (0..DIGITS).flat_map(|d| random_code(seed, unit_key(LAYER, &UnitSel::One(d), None), dgn.code_len())).collect();
    let objectives: Vec<Objective> = (0..DIGITS).map(Objective::Single).collect();
    let schedule = Schedule { iters, ..Schedule::default() };
    let run = dgn.run(&codes, &objectives, &schedule, Some(frame_every), &mut |_| {})?;
    if let Some((d, why)) = run.failed.iter().enumerate().find_map(|(d, f)| f.as_ref().map(|w| (d, w))) {
        bail!("DGN-AM of digit {d} failed: {why}");
    }
    let dgn_images: Vec<f32> = run.images.concat();

    let real = npy::read(&real_path)?;
    ensure!(real.shape.len() == 4 && real.shape[1..] == [1, SIDE, SIDE], "{}: not N x 1 x 28 x 28", real_path.display());
    let gallery = Gallery::new(&real.data, SIDE * SIDE);

    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let (pixel_scores, pixel_probs) = classify(&net, &pixel.images)?;
    let (dgn_scores, dgn_probs) = classify(&net, &dgn_images)?;
    let mut results = Vec::new();
    for (method, images, scores, probs) in
        [(Method::PixelAm, &pixel.images, &pixel_scores, &pixel_probs), (Method::DgnAm, &dgn_images, &dgn_scores, &dgn_probs)]
    {
        let sub = out_dir.join(method.dir());
        std::fs::create_dir_all(&sub).with_context(|| format!("cannot create {}", sub.display()))?;
        let mut rows = Vec::with_capacity(DIGITS);
        for (d, img) in images.chunks(SIDE * SIDE).enumerate() {
            let side = SIDE as u32 * PNG_SCALE;
            let png = sub.join(format!("digit_{d}.png"));
            write_png(&png, &resize(&to_rgb(img, 1, SIDE, SIDE, Render::Mean), side, side, FilterType::Nearest))?;
            npy::write(&sub.join(format!("digit_{d}.image.npy")), &[1, 1, SIDE, SIDE], img)?;
            if method == Method::DgnAm {
                npy::write(&sub.join(format!("digit_{d}.code.npy")), &[1, run.codes[d].len()], &run.codes[d])?;
            }
            let nearest = gallery.nearest(img, 1)[0];
            rows.push(DigitResult {
                digit: d,
                activation: scores[d * DIGITS + d],
                probability: probs[d * DIGITS + d],
                nearest,
                png,
                image: img.to_vec(),
            });
        }
        results.push(rows);
    }
    let dgn_rows = results.pop().unwrap_or_default();
    let pixel_rows = results.pop().unwrap_or_default();

    let montage_path = out_dir.join("montage.png");
    let rows = [(Method::PixelAm, &pixel.images[..], &pixel_probs[..]), (Method::DgnAm, &dgn_images[..], &dgn_probs[..])];
    write_png(&montage_path, &digit_montage(&rows, MONTAGE_SCALE))?;

    // The GIF: both rows emerging side by side, frame k of each run together.
    let mut frames = Vec::new();
    let dgn_frames: Vec<Vec<f32>> = run.frames.iter().map(|f| f.concat()).chain([dgn_images.clone()]).collect();
    for ((_, px), g) in pixel.frames.iter().zip(&dgn_frames) {
        let (_, pp) = classify(&net, px)?;
        let (_, gp) = classify(&net, g)?;
        frames.push(digit_montage(&[(Method::PixelAm, px, &pp), (Method::DgnAm, g, &gp)], GIF_SCALE));
    }
    let last = digit_montage(&[(Method::PixelAm, &pixel.images, &pixel_probs), (Method::DgnAm, &dgn_images, &dgn_probs)], GIF_SCALE);
    frames.extend(std::iter::repeat_n(last, GIF_HOLD + 1));
    let gif = out_dir.join("demo.gif");
    write_gif(&gif, &frames, GIF_DELAY_MS)?;

    let seconds = start.elapsed().as_secs_f64();
    let entries = |method: Method, rows: &[DigitResult], activations: Vec<Vec<f64>>| -> Vec<Value> {
        rows.iter()
            .zip(activations)
            .map(|(d, acts)| {
                let mut e = json!({
                    "digit": d.digit,
                    "activation": d.activation,
                    "activations": acts,
                    "probability": d.probability,
                    "nearest_real": {"index": d.nearest.0, "distance": d.nearest.1},
                    "png": d.png.display().to_string(),
                    "image": out_dir.join(method.dir()).join(format!("digit_{}.image.npy", d.digit)).display().to_string(),
                });
                if method == Method::DgnAm {
                    e["code"] = json!(out_dir.join(method.dir()).join(format!("digit_{}.code.npy", d.digit)).display().to_string());
                }
                e
            })
            .collect()
    };
    let pixel_acts: Vec<Vec<f64>> = (0..DIGITS).map(|d| pixel.activations.iter().map(|a| a[d] as f64).collect()).collect();
    let summary = json!({
        "layer": LAYER,
        "iters": iters,
        "seed": seed,
        "generator": gen_path.display().to_string(),
        "bounds": bounds_path.display().to_string(),
        "real_digits": real_path.display().to_string(),
        "distance": "Euclidean, after each image is normalized to zero mean and unit norm",
        Method::PixelAm.key(): entries(Method::PixelAm, &pixel_rows, pixel_acts),
        Method::DgnAm.key(): entries(Method::DgnAm, &dgn_rows, run.activations.clone()),
        "mean_nearest_distance": {Method::PixelAm.key(): mean_nearest(&pixel_rows), Method::DgnAm.key(): mean_nearest(&dgn_rows)},
        "seconds": seconds,
    });
    let summary_path = out_dir.join("summary.json");
    write_atomic(&summary_path, serde_json::to_string_pretty(&summary)?.as_bytes())?;

    Ok(DemoReport {
        pixel: pixel_rows,
        dgn: dgn_rows,
        codes: run.codes.clone(),
        montage: montage_path,
        gif,
        summary: summary_path,
        seconds,
    })
}
