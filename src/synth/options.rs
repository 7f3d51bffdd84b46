//! Everything `dgnam synthesize` takes, as one type: the binary parses it with clap
//! (`#[command(flatten)]`), the library reads it as it is.

use super::dgn::Schedule;
use super::render::Render;
use super::shard::{Devices, Seeds, ShardSpec};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};

/// One thing to visualize: a unit, or two at once (paper eq. 2).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum UnitSel {
    One(usize),
    Two(usize, usize),
}

impl UnitSel {
    /// `945`, or `945+643` for two units.
    pub fn parse(s: &str) -> Result<UnitSel> {
        let num = |t: &str| t.trim().parse::<usize>().with_context(|| format!("'{t}' is not a unit number"));
        Ok(match s.split_once('+') {
            Some((a, b)) => UnitSel::Two(num(a)?, num(b)?),
            None => UnitSel::One(num(s)?),
        })
    }

    /// `945`, `945+643`: as `--units` takes it.
    pub fn name(&self) -> String {
        self.units().iter().map(|u| u.to_string()).collect::<Vec<_>>().join("+")
    }

    pub fn units(&self) -> Vec<usize> {
        match *self {
            UnitSel::One(u) => vec![u],
            UnitSel::Two(a, b) => vec![a, b],
        }
    }

    /// The file name stem: `fc8_0945`, `fc8_0945+0643`.
    pub fn stem(&self, layer: &str) -> String {
        let units: Vec<String> = self.units().iter().map(|u| format!("{u:04}")).collect();
        format!("{}_{}", crate::io::file_stem(layer), units.join("+"))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Units {
    List(Vec<UnitSel>),
    All,
}

impl Units {
    pub fn parse(s: &str) -> Result<Units> {
        if s.trim() == "all" {
            return Ok(Units::All);
        }
        let list = s.split(',').filter(|t| !t.trim().is_empty()).map(UnitSel::parse).collect::<Result<Vec<_>>>()?;
        ensure!(!list.is_empty(), "no units given");
        Ok(Units::List(list))
    }
}

/// What the loop maximizes for a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Maximize {
    /// The layer's own output (pre in-place ReLU).
    Activation,
    /// The softmax over the layer.
    Prob,
}

/// `X,Y`.
pub fn parse_xy(s: &str) -> Result<(usize, usize)> {
    let parts: Vec<&str> = s.split(',').collect();
    let xy = match parts.as_slice() {
        [x, y] => x.trim().parse().ok().zip(y.trim().parse().ok()),
        _ => None,
    };
    xy.with_context(|| format!("'{s}' is not X,Y (two whole numbers)"))
}

#[derive(Clone, Debug, clap::Args)]
pub struct SynthOptions {
    /// The generator weights (default weights/generator-fc6.dgnw; `none`: optimize pixels
    /// directly with hand-designed priors, the baseline DGN-AM is compared against).
    #[arg(long)]
    pub generator: Option<PathBuf>,
    /// The classifier weights (default weights/caffenet.dgnw).
    #[arg(long)]
    pub net: Option<PathBuf>,
    #[arg(long, default_value = "fc8")]
    pub layer: String,
    /// Units of the layer: `945,643`, `945+643` (two at once, paper eq. 2) or `all`.
    #[arg(long, default_value = "945", value_parser = Units::parse)]
    pub units: Units,
    /// Spatial position X,Y for convolutional units (default: the center).
    #[arg(long, value_parser = parse_xy)]
    pub xy: Option<(usize, usize)>,
    /// What to maximize.
    #[arg(long, value_enum, default_value_t = Maximize::Activation)]
    pub objective: Maximize,
    /// Weight of the |a1 - a2| penalty for two units.
    #[arg(long, default_value_t = 0.0)]
    pub gamma: f64,
    #[arg(long, default_value_t = 200)]
    pub iters: usize,
    /// Initial step size (default: 8, or 2 for GoogLeNet, as the paper's scripts).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 1e-10)]
    pub lr_end: f64,
    /// Multiplicative decay of the code after each step, in (0, 1]; 1: no decay.
    #[arg(long, default_value_t = 0.99, allow_negative_numbers = true)]
    pub decay: f64,
    /// Per-neuron upper bounds of the code (default: the shipped bounds of the code layer,
    /// weights/act_range/3x/<layer>.txt, else 2x; `none` to not clamp).
    #[arg(long)]
    pub bounds: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Several seeds: `A..B` (inclusive) or `0,3,7`; each unit runs once per seed, and its
    /// files gain `_s<seed>` when there is more than one.
    #[arg(long, value_parser = Seeds::parse, conflicts_with = "seed")]
    pub seeds: Option<Seeds>,
    /// Run only shard I of N (0-based) of the units x seeds, or `auto` (a Slurm job array
    /// or a Kubernetes Indexed Job); `dgnam merge` joins the shards' results.
    #[arg(long, value_parser = ShardSpec::parse)]
    pub shard: Option<ShardSpec>,
    /// One worker process per listed device, each a shard, then a merge: `0,1,2,3` are GPUs
    /// (`--device cuda:K` each); with `--device cpu` each entry is one CPU worker.
    #[arg(long, value_parser = Devices::parse, conflicts_with = "shard")]
    pub devices: Option<Devices>,
    /// Initial codes, shape (N, code): row i starts unit i; one row starts every unit.
    #[arg(long, conflicts_with = "init_image")]
    pub init_code: Option<PathBuf>,
    /// Start from the code of this image (its output at the encoder layer).
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// The classifier layer whose output is the generator's code, for --init-image and the
    /// default bounds (default: the layer with as many values as the code, fc6 among several).
    #[arg(long)]
    pub encoder_layer: Option<String>,
    /// Unit names, one per line (default: ImageNet's for 1000 units, Places205's for 205).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Units per batch (default: 8 on the CPU, 128 on a GPU).
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long, default_value = "out")]
    pub out_dir: PathBuf,
    /// How PNGs are rendered.
    #[arg(long, value_enum, default_value_t = Render::Paper)]
    pub render: Render,
    /// Keep the image every K iterations and write an animated GIF per unit.
    #[arg(long)]
    pub save_every: Option<usize>,
}

impl SynthOptions {
    /// The command's defaults for `units` of `layer` (what the CLI gives with no flags).
    pub fn new(layer: &str, units: Units) -> SynthOptions {
        SynthOptions {
            generator: None,
            net: None,
            layer: layer.to_string(),
            units,
            xy: None,
            objective: Maximize::Activation,
            gamma: 0.0,
            iters: 200,
            lr: None,
            lr_end: 1e-10,
            decay: 0.99,
            bounds: None,
            seed: 0,
            seeds: None,
            shard: None,
            devices: None,
            init_code: None,
            init_image: None,
            encoder_layer: None,
            labels: None,
            batch: None,
            out_dir: PathBuf::from("out"),
            render: Render::Paper,
            save_every: None,
        }
    }

    /// Refuses values no run can use, before anything is read or written.
    pub fn check(&self) -> Result<()> {
        ensure!(self.decay > 0.0 && self.decay <= 1.0, "--decay {}: must be in (0, 1] (1 means no decay)", self.decay);
        ensure!(self.batch != Some(0), "--batch must be at least 1");
        ensure!(self.init_code.is_none() || self.init_image.is_none(), "--init-code and --init-image exclude each other");
        ensure!(
            self.seed_list().len() == 1 || (self.init_code.is_none() && self.init_image.is_none()),
            "--seeds: with --init-code or --init-image every seed starts from the same code and gives the same image"
        );
        Ok(())
    }

    /// The seeds to run each unit with: `--seeds`, else `--seed`.
    pub fn seed_list(&self) -> Vec<u64> {
        self.seeds.as_ref().map_or(vec![self.seed], |s| s.0.clone())
    }

    /// The options that make a run's results, as JSON (the manifest's `options`): every
    /// flag but where the files go and how the run is split (`--out-dir`, `--shard`,
    /// `--devices`), so that shards and an unsharded run of the same units agree.
    pub fn to_json(&self) -> serde_json::Value {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let units = match &self.units {
            Units::All => serde_json::json!("all"),
            Units::List(l) => serde_json::json!(l.iter().map(UnitSel::name).collect::<Vec<_>>()),
        };
        serde_json::json!({
            "generator": path(&self.generator),
            "net": path(&self.net),
            "layer": self.layer,
            "units": units,
            "xy": self.xy.map(|(x, y)| [x, y]),
            "objective": format!("{:?}", self.objective).to_lowercase(),
            "gamma": self.gamma,
            "iters": self.iters,
            "lr": self.lr,
            "lr_end": self.lr_end,
            "decay": self.decay,
            "bounds": path(&self.bounds),
            "seeds": self.seed_list(),
            "init_code": path(&self.init_code),
            "init_image": path(&self.init_image),
            "encoder_layer": self.encoder_layer,
            "labels": path(&self.labels),
            "batch": self.batch,
            "render": format!("{:?}", self.render).to_lowercase(),
            "save_every": self.save_every,
        })
    }

    /// `--generator none`: pixel-space AM instead of a generator.
    pub fn pixel_space(&self) -> bool {
        self.generator.as_deref() == Some(Path::new("none"))
    }

    pub fn prob(&self) -> bool {
        self.objective == Maximize::Prob
    }

    /// The step schedule, with `default_lr` when `--lr` is not given.
    pub fn schedule(&self, default_lr: f64) -> Schedule {
        Schedule { iters: self.iters, lr: self.lr.unwrap_or(default_lr), lr_end: self.lr_end, decay: self.decay }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_must_be_in_the_half_open_unit_interval() {
        let mut o = SynthOptions::new("fc8", Units::All);
        for ok in [0.99, 1.0, 1e-3] {
            o.decay = ok;
            assert!(o.check().is_ok(), "{ok}");
        }
        for bad in [0.0, 1.5, -0.5, f64::NAN, f64::INFINITY] {
            o.decay = bad;
            let e = o.check().unwrap_err().to_string();
            assert!(e.starts_with("--decay"), "{e}");
        }
    }

    #[test]
    fn xy_and_units_parse() {
        assert_eq!(parse_xy("3, 4").unwrap(), (3, 4));
        assert!(parse_xy("3").is_err() && parse_xy("a,b").is_err());
        assert_eq!(Units::parse("945+643,2").unwrap(), Units::List(vec![UnitSel::Two(945, 643), UnitSel::One(2)]));
        assert_eq!(UnitSel::Two(945, 643).stem("inception_4a/output"), "inception_4a_output_0945+0643");
    }
}
