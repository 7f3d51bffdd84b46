//! The flags of `dgnam train-generator` (clap types are the library's option types) and
//! the checks made before anything is read.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Clone, Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("data").required(true).args(["images", "images_npy"])))]
pub struct TrainOptions {
    /// The classifier E whose layer the generator learns to invert (.dgnw).
    #[arg(long)]
    pub net: PathBuf,
    /// E's layer L: the code is L's own output, after an in-place ReLU on it (ip1, fc6).
    #[arg(long)]
    pub layer: String,
    /// The generator G: a .prototxt (seeded random weights) or a .dgnw (its weights as the
    /// start). Its input is the code, its output an image in E's input space, as large as
    /// E's input or larger (center-cropped, as 256 -> 227).
    #[arg(long)]
    pub generator_def: PathBuf,
    /// A folder of .png/.jpg training images, preprocessed as for every command (for
    /// LeNet: --scale 0.00390625).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Training images as one N x C x H x W .npy in E's input space.
    #[arg(long, conflicts_with = "images")]
    pub images_npy: Option<PathBuf>,
    /// The layer of E where the feature loss compares G(y) with x (its own output).
    #[arg(long)]
    pub comparator_layer: Option<String>,
    /// A discriminator for the adversarial loss: a prototxt (seeded random weights) or a
    /// .dgnw, reading one image of the classifier's input shape, ending in one logit.
    #[arg(long)]
    pub discriminator_def: Option<PathBuf>,
    /// Loss weights, e.g. image=1,feature=0.5,adversarial=0.1 (defaults: image 1, feature
    /// 1 with a comparator layer, adversarial 1 with a discriminator, else 0).
    #[arg(long, value_parser = LossWeights::parse)]
    pub loss_weights: Option<LossWeights>,
    /// Training steps (one batch each), counted from the start even after --resume.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Adam's learning rate (beta1 0.9, beta2 0.999, epsilon 1e-8).
    #[arg(long, default_value_t = 2e-4, allow_negative_numbers = true)]
    pub lr: f64,
    /// Draws G's random start (for a .prototxt) and the order of the images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Every K steps: a checkpoint to --resume from and a PNG grid of reconstructions.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Continue from the checkpoint beside -o (same options but --steps and
    /// --checkpoint-every), exactly as if the run had not stopped.
    #[arg(long)]
    pub resume: bool,
    /// The trained generator (.dgnw, loadable as `synthesize --generator`); the log,
    /// checkpoints and reconstruction grids go beside it.
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
}

/// `--loss-weights`: each term's weight; None means "the default".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossWeights {
    pub image: f64,
    pub feature: Option<f64>,
    pub adversarial: Option<f64>,
}

impl LossWeights {
    /// `image=1,feature=0.5,adversarial=0`, terms in any order, each at most once.
    pub fn parse(s: &str) -> Result<LossWeights> {
        let mut w = LossWeights { image: 1.0, feature: None, adversarial: None };
        let mut seen = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').with_context(|| format!("'{part}' is not NAME=WEIGHT"))?;
            let v: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .with_context(|| format!("'{}' is not a weight (a finite number >= 0)", value.trim()))?;
            let key = key.trim();
            ensure!(!seen.contains(&key.to_string()), "'{key}' is given twice");
            seen.push(key.to_string());
            match key {
                "image" => w.image = v,
                "feature" => w.feature = Some(v),
                "adversarial" => w.adversarial = Some(v),
                _ => bail!("unknown loss '{key}' (use image, feature, adversarial)"),
            }
        }
        Ok(w)
    }
}

/// The loss weights of a run, resolved against the comparator layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    pub image: f64,
    pub feature: f64,
    pub adversarial: f64,
}

impl TrainOptions {
    /// Refuses values no run can use, before any file is read.
    pub fn check(&self) -> Result<Weights> {
        ensure!(self.steps > 0, "--steps must be at least 1");
        ensure!(self.batch > 0, "--batch must be at least 1");
        ensure!(self.lr.is_finite() && self.lr > 0.0, "--lr {}: must be a positive number", self.lr);
        ensure!(self.checkpoint_every != Some(0), "--checkpoint-every must be at least 1");
        let given = self.loss_weights.unwrap_or(LossWeights { image: 1.0, feature: None, adversarial: None });
        let adversarial = match (given.adversarial, &self.discriminator_def) {
            (Some(a), None) if a > 0.0 => bail!("--loss-weights adversarial={a} needs --discriminator-def"),
            (Some(a), _) => a,
            (None, Some(_)) => 1.0,
            (None, None) => 0.0,
        };
        let feature = match (given.feature, &self.comparator_layer) {
            (Some(f), None) if f > 0.0 => bail!("--loss-weights feature={f} needs --comparator-layer"),
            (Some(f), _) => f,
            (None, Some(_)) => 1.0,
            (None, None) => 0.0,
        };
        ensure!(given.image > 0.0 || feature > 0.0 || adversarial > 0.0, "--loss-weights: every weight is 0, nothing to learn");
        Ok(Weights { image: given.image, feature, adversarial })
    }

    /// What a resumed run must share with the run it continues (everything but --steps,
    /// --checkpoint-every and the device), with the training data's fingerprint.
    pub fn identity(&self, weights: Weights, data_fnv1a: u64, images: usize) -> Value {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        json!({
            "net": self.net.display().to_string(),
            "layer": self.layer,
            "generator_def": self.generator_def.display().to_string(),
            "images": path(&self.images),
            "images_npy": path(&self.images_npy),
            "image_count": images,
            "images_fnv1a": format!("{data_fnv1a:016x}"),
            "comparator_layer": self.comparator_layer,
            "discriminator_def": path(&self.discriminator_def),
            "loss_weights": {"image": weights.image, "feature": weights.feature, "adversarial": weights.adversarial},
            "batch": self.batch,
            "lr": self.lr,
            "adam": {"beta1": super::adam::BETA1, "beta2": super::adam::BETA2, "epsilon": super::adam::EPSILON},
            "seed": self.seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_weights_parse_and_refuse_nonsense() {
        let w = LossWeights::parse("feature=0.5, image=2").unwrap();
        assert_eq!(w, LossWeights { image: 2.0, feature: Some(0.5), adversarial: None });
        assert_eq!(LossWeights::parse("adversarial=0.1").unwrap().adversarial, Some(0.1));
        for bad in ["image", "image=-1", "image=x", "colour=1", "image=1,image=2", "feature=inf"] {
            assert!(LossWeights::parse(bad).is_err(), "{bad}");
        }
    }
}
