//! The files a training run writes beside `-o G.dgnw`, and the checkpoint it resumes from.
//!
//! A checkpoint is `G.checkpoint-<step>.dgnw`, a weights file that loads as a generator
//! like the final one and also holds Adam's moments (tensors `adam.m:<layer>` and
//! `adam.v:<layer>`) and, with an adversarial loss, the discriminator's weights and
//! moments (`discriminator:<layer>`, `discriminator.adam.m:<layer>`, ...), with
//! `G.checkpoint.json` naming it: the step, Adam's step counts, the options it was
//! trained with and the log so far. The JSON is written after the
//! weights, and the previous weights file is removed only then, so a run killed at any
//! moment leaves a complete checkpoint.

use super::adam::Adam;
use crate::fsutil::write_atomic;
use crate::graph::{same_shape_ignoring_leading_ones, ParamSpec};
use crate::tensor::fmt_shape;
use crate::weights::{self, TensorData, WeightsFile};
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Where a run's outputs go: `<dir>/<stem>.dgnw` and its companions.
#[derive(Clone, Debug)]
pub struct Paths {
    pub out: PathBuf,
    pub dir: PathBuf,
    pub stem: String,
}

impl Paths {
    pub fn new(out: &Path) -> Result<Paths> {
        let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).filter(|s| !s.is_empty());
        let stem = stem.with_context(|| format!("-o {}: not a file name", out.display()))?;
        let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        Ok(Paths { out: out.to_path_buf(), dir, stem })
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("train-log.json")
    }

    pub fn checkpoint_json(&self) -> PathBuf {
        self.dir.join(format!("{}.checkpoint.json", self.stem))
    }

    fn checkpoint_weights(&self, step: usize) -> String {
        format!("{}.checkpoint-{step:06}.dgnw", self.stem)
    }

    /// The reconstruction grid at a checkpoint, or (None) at the end.
    pub fn grid(&self, step: Option<usize>) -> PathBuf {
        match step {
            Some(s) => self.dir.join(format!("{}.reconstructions-{s:06}.png", self.stem)),
            None => self.dir.join(format!("{}.reconstructions.png", self.stem)),
        }
    }
}

/// One net's weights (host f32, one vector per parameter blob) and their optimizer.
#[derive(Clone, Debug)]
pub struct Trained {
    pub params: Vec<Vec<f32>>,
    pub adam: Adam,
}

/// Where training stands after `step` steps.
#[derive(Clone, Debug)]
pub struct State {
    pub step: usize,
    pub generator: Trained,
    pub discriminator: Option<Trained>,
    /// One record per step done: {"step", "loss", "loss_image", "loss_feature",
    /// "loss_adversarial", "loss_discriminator", "seconds"}.
    pub log: Vec<Value>,
    /// Training time so far, over every run that led here.
    pub seconds: f64,
}

/// The tensor name prefixes of a net's weights and moments in a checkpoint.
const GENERATOR: [&str; 3] = ["", "adam.m:", "adam.v:"];
const DISCRIMINATOR: [&str; 3] = ["discriminator:", "discriminator.adam.m:", "discriminator.adam.v:"];

/// The generator's weights as a weights file: its definition and one tensor per blob.
pub fn write_generator(path: &Path, prototxt: &str, specs: &[ParamSpec], params: &[Vec<f32>]) -> Result<()> {
    let tensors: Vec<TensorData> =
        specs.iter().zip(params).map(|(s, p)| TensorData { layer: &s.layer, index: s.index as u32, shape: &s.shape, data: p }).collect();
    weights::write(path, prototxt, &tensors).with_context(|| format!("writing {}", path.display()))
}

/// Writes the checkpoint of `state` (`specs`: the generator's parameter blobs, then the
/// discriminator's), then retires the one it replaces.
pub fn write(paths: &Paths, prototxt: &str, specs: &[ParamSpec], disc_specs: &[ParamSpec], state: &State, options: &Value) -> Result<()> {
    let previous = read_json(paths).ok().and_then(|j| j["weights"].as_str().map(String::from));
    let mut nets = vec![(GENERATOR, specs, &state.generator)];
    if let Some(d) = &state.discriminator {
        nets.push((DISCRIMINATOR, disc_specs, d));
    }
    let names: Vec<Vec<[String; 3]>> =
        nets.iter().map(|(prefix, specs, _)| specs.iter().map(|s| prefix.map(|p| format!("{p}{}", s.layer))).collect()).collect();
    let mut tensors: Vec<TensorData> = Vec::new();
    for ((_, specs, t), names) in nets.iter().zip(&names) {
        for (k, (s, name)) in specs.iter().zip(names).enumerate() {
            let (index, shape) = (s.index as u32, &s.shape[..]);
            tensors.push(TensorData { layer: &name[0], index, shape, data: &t.params[k] });
            tensors.push(TensorData { layer: &name[1], index, shape, data: &t.adam.m[k] });
            tensors.push(TensorData { layer: &name[2], index, shape, data: &t.adam.v[k] });
        }
    }
    let name = paths.checkpoint_weights(state.step);
    let path = paths.dir.join(&name);
    weights::write(&path, prototxt, &tensors).with_context(|| format!("writing {}", path.display()))?;
    let sidecar = json!({
        "step": state.step,
        "adam_t": state.generator.adam.t,
        "discriminator_adam_t": state.discriminator.as_ref().map(|d| d.adam.t),
        "seconds": state.seconds,
        "weights": name,
        "options": options,
        "log": state.log,
    });
    write_atomic(&paths.checkpoint_json(), serde_json::to_string(&sidecar)?.as_bytes())?;
    if let Some(old) = previous.filter(|old| *old != name && !old.contains(['/', '\\'])) {
        let _ = std::fs::remove_file(paths.dir.join(old));
    }
    Ok(())
}

fn read_json(paths: &Paths) -> Result<Value> {
    let p = paths.checkpoint_json();
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("--resume: no checkpoint to resume from ({} cannot be read)", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("--resume: {} is not valid JSON", p.display()))
}

/// The checkpoint beside `paths.out`, checked against this run's `options` and the
/// parameter blobs of the generator and (when there is one) the discriminator.
pub fn read(paths: &Paths, specs: &[ParamSpec], disc_specs: Option<&[ParamSpec]>, options: &Value, lr: f64) -> Result<State> {
    let j = read_json(paths)?;
    let where_ = paths.checkpoint_json().display().to_string();
    let theirs = j["options"].as_object().with_context(|| format!("--resume: {where_} has no options"))?;
    for (key, mine) in options.as_object().context("options are an object")? {
        let stored = theirs.get(key).unwrap_or(&Value::Null);
        if stored != mine {
            bail!("--resume: the checkpoint {where_} was trained with {key} = {stored}, this run has {mine}");
        }
    }
    let step = j["step"].as_u64().with_context(|| format!("--resume: {where_} has no step"))? as usize;
    let t = j["adam_t"].as_u64().with_context(|| format!("--resume: {where_} has no adam_t"))?;
    let name =
        j["weights"].as_str().filter(|n| !n.contains(['/', '\\'])).with_context(|| format!("--resume: {where_} names no weights file"))?;
    let file = WeightsFile::open(&paths.dir.join(name))?;
    let tensor = |layer: &str, s: &ParamSpec| -> Result<Vec<f32>> {
        let (e, data) =
            file.tensor(layer, s.index as u32).with_context(|| format!("{}: no tensor {layer}[{}]", file.path.display(), s.index))?;
        ensure!(
            same_shape_ignoring_leading_ones(&e.shape, &s.shape),
            "{}: {layer}[{}] has shape {}, the generator needs {}",
            file.path.display(),
            s.index,
            fmt_shape(&e.shape),
            fmt_shape(&s.shape)
        );
        Ok(data.to_vec())
    };
    let trained = |prefix: [&str; 3], specs: &[ParamSpec], t: u64| -> Result<Trained> {
        let mut out = Trained { params: vec![], adam: Adam { lr, t, m: vec![], v: vec![] } };
        for s in specs {
            out.params.push(tensor(&format!("{}{}", prefix[0], s.layer), s)?);
            out.adam.m.push(tensor(&format!("{}{}", prefix[1], s.layer), s)?);
            out.adam.v.push(tensor(&format!("{}{}", prefix[2], s.layer), s)?);
        }
        Ok(out)
    };
    let generator = trained(GENERATOR, specs, t)?;
    let discriminator = match disc_specs {
        Some(d) => {
            let t = j["discriminator_adam_t"].as_u64().with_context(|| format!("--resume: {where_} has no discriminator_adam_t"))?;
            Some(trained(DISCRIMINATOR, d, t)?)
        }
        None => None,
    };
    let mut state = State { step, generator, discriminator, log: vec![], seconds: 0.0 };
    state.log = j["log"].as_array().cloned().unwrap_or_default();
    ensure!(state.log.len() == step, "--resume: {where_} logs {} steps, not {step}", state.log.len());
    state.seconds = j["seconds"].as_f64().unwrap_or(0.0);
    Ok(state)
}
