//! `dgnam synthesize`: units in batches through the DGN-AM loop, every output written as
//! soon as its batch is done (atomically), so an interrupted run resumes where it stopped.

use super::dgn::{BatchResult, Dgn, Objective, Schedule};
use super::render::{self, Render};
use super::kernels::DgnKernels;
use super::pixel::{pixel_am, PixelPriors};
use crate::graph::{unit_offset, BlobId, CpuNet, Net, Plan, UnitRef};
use crate::npy;
use crate::real::Real;
use crate::rng::Rng;
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

    fn units(&self) -> Vec<usize> {
        match *self {
            UnitSel::One(u) => vec![u],
            UnitSel::Two(a, b) => vec![a, b],
        }
    }

    /// The file name stem: `fc8_0945`, `fc8_0945+0643`.
    pub fn stem(&self, layer: &str) -> String {
        let units: Vec<String> = self.units().iter().map(|u| format!("{u:04}")).collect();
        format!("{}_{}", crate::app::file_stem(layer), units.join("+"))
    }

    fn json(&self) -> Value {
        match *self {
            UnitSel::One(u) => json!(u),
            UnitSel::Two(a, b) => json!([a, b]),
        }
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

/// Where the initial codes come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// N(0, 1) from the seed, unclipped; each unit draws its own stream, so a unit's start
    /// does not depend on what else is in its batch.
    Random,
    /// Rows of an (N, code) array: row i starts unit i, a single row starts every unit.
    Codes(Vec<Vec<f32>>),
}

#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub layer: String,
    pub units: Units,
    pub xy: Option<(usize, usize)>,
    /// Maximize the softmax probability of the unit instead of its activation.
    pub prob: bool,
    pub gamma: f64,
    pub schedule: Schedule,
    pub bounds: Option<Vec<f32>>,
    pub seed: u64,
    pub init: Init,
    pub out_dir: PathBuf,
    pub render: Render,
    pub save_every: Option<usize>,
    /// Names for the units of the layer (ImageNet classes for fc8).
    pub labels: Option<Vec<String>>,
}

/// The initial code for unit `key` under `Init::Random`.
pub fn random_code(seed: u64, key: usize, len: usize) -> Vec<f32> {
    let mut rng = unit_rng(seed, key);
    (0..len).map(|_| rng.normal() as f32).collect()
}

/// The random stream of unit `key`: its own, whatever else shares its batch.
fn unit_rng(seed: u64, key: usize) -> Rng {
    Rng::new(seed ^ (key as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Reads a bounds file: whitespace-separated numbers, one per code neuron.
pub fn read_bounds(path: &Path) -> Result<Vec<f32>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read bounds file {}", path.display()))?;
    text.split_whitespace()
        .map(|t| t.parse::<f32>().map_err(|_| anyhow::anyhow!("{}: '{t}' is not a number", path.display())))
        .collect()
}

/// Class names from a synset_words.txt line `n01440764 tench, Tinca tinca` -> `tench`.
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read labels {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| {
            let rest = l.split_once(' ').map_or(l, |(_, r)| r);
            rest.split(',').next().unwrap_or(rest).trim().to_string()
        })
        .collect())
}

struct Job {
    sel: UnitSel,
    index: usize,
    objective: Objective,
}

/// What `synthesize` did.
#[derive(Debug, Default)]
pub struct Report {
    pub done: usize,
    pub skipped: usize,
    /// Units that went non-finite: reported, not written, retried by a rerun.
    pub failed: Vec<(String, String)>,
    pub summary: PathBuf,
    pub montage: Option<PathBuf>,
}

/// The units of `opts` through the DGN-AM loop of `generator` and `classifier`.
pub fn synthesize<B: DgnKernels>(generator: &Net<B>, classifier: &Net<B>, opts: &SynthOptions) -> Result<Report> {
    let objective_blob = objective_blob(&classifier.plan, opts)?;
    let mut dgn = Dgn::new(generator, classifier, objective_blob, opts.bounds.as_deref())?;
    let (batch, code_len) = (dgn.batch(), dgn.code_len());
    synthesize_with(&classifier.plan, opts, batch, |jobs, progress| {
        let mut init: Vec<B::Scalar> = Vec::with_capacity(batch * code_len);
        for job in jobs {
            let row = match &opts.init {
                Init::Random => random_code(opts.seed, job.index, code_len),
                Init::Codes(rows) => rows[if rows.len() == 1 { 0 } else { job.index }].clone(),
            };
            ensure!(row.len() == code_len, "initial code has {} values, the generator takes {code_len}", row.len());
            init.extend(row.iter().map(|&v| B::Scalar::from_f32(v)));
        }
        let objectives: Vec<Objective> = jobs.iter().map(|j| j.objective.clone()).collect();
        let r = dgn.run(&init, &objectives, &opts.schedule, opts.save_every, &mut |_| progress())?;
        let f32s = |v: &Vec<B::Scalar>| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
        Ok(BatchResult {
            images: r.images.iter().map(f32s).collect(),
            codes: r.codes.iter().map(f32s).collect(),
            activations: r.activations,
            probabilities: r.probabilities,
            stopped_at: r.stopped_at,
            failed: r.failed,
            frames: r.frames.iter().map(|f| f.iter().map(f32s).collect()).collect(),
        })
    })
}

/// `--generator none`: the units of `opts` by pixel-space activation maximization with
/// hand-designed priors (the baseline DGN-AM is compared against). The "code" of a unit
/// is its image.
pub fn synthesize_pixels(classifier: &CpuNet<'_, f32>, opts: &SynthOptions, priors: &PixelPriors) -> Result<Report> {
    ensure!(opts.init == Init::Random, "--generator none starts from noise: --init-code and --init-image need a generator");
    let objective_blob = objective_blob(&classifier.plan, opts)?;
    ensure!(!opts.prob, "--generator none maximizes activations; --objective prob needs a generator");
    let input = classifier.plan.inputs[0];
    let batch = classifier.plan.batch;
    let per_image = classifier.plan.blobs[input].len() / batch;
    let prob = classifier.plan.softmax_of(objective_blob);
    let priors = PixelPriors { iters: opts.schedule.iters, ..priors.clone() };
    synthesize_with(&classifier.plan, opts, batch, |jobs, progress| {
        let mut refs = Vec::with_capacity(jobs.len());
        let mut init = Vec::with_capacity(batch * per_image);
        for job in jobs {
            let UnitSel::One(unit) = job.sel else { bail!("--generator none takes single units, not {:?}", job.sel) };
            refs.push(UnitRef { unit, xy: opts.xy });
            let mut rng = unit_rng(opts.seed, job.index);
            let (lo, hi) = priors.clip;
            init.extend((0..per_image).map(|_| lo + (hi - lo) * rng.uniform(0.0, 0.1) as f32));
        }
        let r = pixel_am(classifier, &opts.layer, &refs, &priors, &init, opts.seed, opts.save_every)?;
        (0..priors.iters).for_each(|_| progress());
        let probabilities = match prob {
            Some(p) => {
                let mut st = classifier.state()?;
                classifier.forward(&mut st, &[&r.images])?;
                let out = &classifier.plan.blobs[objective_blob].shape;
                let per: usize = out[1..].iter().product();
                (0..jobs.len())
                    .map(|n| Ok(Some(st.value(p)[n * per + unit_offset(out, refs[n], &opts.layer)?] as f64)))
                    .collect::<Result<_>>()?
            }
            None => vec![None; jobs.len()],
        };
        let images: Vec<Vec<f32>> = r.images.chunks(per_image).map(|c| c.to_vec()).collect();
        Ok(BatchResult {
            codes: images.clone(),
            images,
            activations: (0..jobs.len()).map(|n| r.activations.iter().map(|a| a[n] as f64).collect()).collect(),
            probabilities,
            stopped_at: vec![None; jobs.len()],
            failed: r.activations.last().map_or(vec![None; jobs.len()], |last| {
                last.iter().map(|a| (!a.is_finite()).then(|| format!("the activation is {a}"))).collect()
            }),
            frames: r.frames.iter().map(|(_, f)| f.chunks(per_image).map(|c| c.to_vec()).collect()).collect(),
        })
    })
}

/// The blob the objective reads: layer L's own output, or the softmax over it.
fn objective_blob(plan: &Plan, opts: &SynthOptions) -> Result<BlobId> {
    let layer_blob = plan.layer_output(&opts.layer)?;
    if opts.prob {
        plan.softmax_of(layer_blob).with_context(|| format!("--objective prob: no Softmax layer reads the output of '{}'", opts.layer))
    } else {
        Ok(layer_blob)
    }
}

/// Batching, resume, outputs and the summary, around an engine that turns one full batch
/// of jobs into results (`progress` is called once per iteration).
fn synthesize_with(
    plan: &Plan,
    opts: &SynthOptions,
    batch: usize,
    mut engine: impl FnMut(&[&Job], &mut dyn FnMut()) -> Result<BatchResult<f32>>,
) -> Result<Report> {
    let layer_blob = plan.layer_output(&opts.layer)?;
    let shape = plan.blobs[layer_blob].shape.clone();
    let sels = match &opts.units {
        Units::All => (0..shape[1]).map(UnitSel::One).collect(),
        Units::List(l) => l.clone(),
    };
    let mut jobs = Vec::new();
    for (index, sel) in sels.iter().enumerate() {
        let off = |u| unit_offset(&shape, UnitRef { unit: u, xy: opts.xy }, &opts.layer);
        let objective = match *sel {
            UnitSel::One(u) => Objective::Single(off(u)?),
            UnitSel::Two(a, b) => {
                ensure!(!opts.prob, "--objective prob takes single units, not {a}+{b}");
                Objective::Pair { a: off(a)?, b: off(b)?, gamma: opts.gamma }
            }
        };
        jobs.push(Job { sel: sel.clone(), index, objective });
    }
    if let Init::Codes(rows) = &opts.init {
        ensure!(rows.len() == 1 || rows.len() == jobs.len(), "--init-code has {} rows for {} units", rows.len(), jobs.len());
    }
    std::fs::create_dir_all(&opts.out_dir).with_context(|| format!("cannot create {}", opts.out_dir.display()))?;
    crate::fsutil::remove_stale_temporaries(&opts.out_dir)?;
    let summary_path = opts.out_dir.join("summary.json");
    let mut entries = read_summary(&summary_path)?;
    let finished = |sel: &UnitSel, entries: &BTreeMap<String, Value>| {
        let stem = sel.stem(&opts.layer);
        entries.contains_key(&stem)
            && ["png", "image.npy", "code.npy"].iter().all(|ext| opts.out_dir.join(format!("{stem}.{ext}")).exists())
    };
    let todo: Vec<&Job> = jobs.iter().filter(|j| !finished(&j.sel, &entries)).collect();
    let mut report = Report { skipped: jobs.len() - todo.len(), summary: summary_path.clone(), ..Report::default() };
    if report.skipped > 0 {
        eprintln!("{} of {} units already done in {}, skipping them", report.skipped, jobs.len(), opts.out_dir.display());
    }
    let clf_in = &plan.blobs[plan.inputs[0]].shape;
    let chw = [clf_in[1], clf_in[2], clf_in[3]];
    let progress = progress_bar((todo.len() * opts.schedule.iters) as u64);
    for chunk in todo.chunks(batch) {
        let started = Instant::now();
        // A short last batch is padded by repeating its last unit; the copies are dropped.
        let padded: Vec<&Job> = (0..batch).map(|i| chunk[i.min(chunk.len() - 1)]).collect();
        let first = report.done + report.skipped;
        progress.set_message(format!("units {}..{} of {}", first + 1, first + chunk.len(), jobs.len()));
        let result = engine(&padded, &mut || progress.inc(chunk.len() as u64))?;
        let seconds = started.elapsed().as_secs_f64() / chunk.len() as f64;
        for (n, job) in chunk.iter().enumerate() {
            if let Some(why) = &result.failed[n] {
                progress.suspend(|| eprintln!("unit {} skipped: {why}", job.sel.stem(&opts.layer)));
                report.failed.push((job.sel.stem(&opts.layer), why.clone()));
                continue;
            }
            let entry = write_unit(opts, job, &result, n, chw, seconds)?;
            entries.insert(job.sel.stem(&opts.layer), entry);
            report.done += 1;
        }
        write_summary(&summary_path, &jobs, &opts.layer, &entries)?;
    }
    progress.finish_and_clear();
    write_summary(&summary_path, &jobs, &opts.layer, &entries)?;
    report.montage = write_montage(opts, &jobs, &entries)?;
    Ok(report)
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} iterations, {per_sec}, {elapsed} elapsed, {eta} left, {msg}",
    );
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar
}

fn write_unit(opts: &SynthOptions, job: &Job, r: &BatchResult<f32>, n: usize, chw: [usize; 3], seconds: f64) -> Result<Value> {
    let stem = job.sel.stem(&opts.layer);
    let dir = &opts.out_dir;
    let (image, code) = (&r.images[n], &r.codes[n]);
    ensure!(!image.is_empty(), "unit {stem}: the loop ran no iteration");
    let png = dir.join(format!("{stem}.png"));
    let image_npy = dir.join(format!("{stem}.image.npy"));
    let code_npy = dir.join(format!("{stem}.code.npy"));
    render::write_png(&png, &render::to_rgb(image, chw[0], chw[1], chw[2], opts.render))?;
    npy::write(&image_npy, &[1, chw[0], chw[1], chw[2]], image)?;
    npy::write(&code_npy, &[1, code.len()], code)?;
    if !r.frames.is_empty() {
        let frames: Vec<_> = r.frames.iter().map(|f| render::to_rgb(&f[n], chw[0], chw[1], chw[2], opts.render)).collect();
        render::write_gif(&dir.join(format!("{stem}.gif")), &frames, 100)?;
    }
    let label = label_of(opts, &job.sel);
    let name = |p: &Path| p.file_name().map(|f| f.to_string_lossy().into_owned());
    Ok(json!({
        "layer": opts.layer,
        "unit": job.sel.json(),
        "xy": opts.xy.map(|(x, y)| json!([x, y])),
        "label": label,
        "activations": r.activations[n],
        "probability": r.probabilities[n],
        "stopped_at": r.stopped_at[n],
        "seconds": seconds,
        "png": name(&png),
        "image": name(&image_npy),
        "code": name(&code_npy),
    }))
}

fn label_of(opts: &SynthOptions, sel: &UnitSel) -> String {
    let one = |u: usize| match &opts.labels {
        Some(l) if u < l.len() => l[u].clone(),
        _ => format!("{} #{u}", opts.layer),
    };
    match *sel {
        UnitSel::One(u) => one(u),
        UnitSel::Two(a, b) => format!("{} + {}", one(a), one(b)),
    }
}

fn read_summary(path: &Path) -> Result<BTreeMap<String, Value>> {
    let mut map = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(map) };
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON; move it away to start over", path.display()))?;
    for u in v.get("units").and_then(|u| u.as_array()).into_iter().flatten() {
        if let Some(png) = u.get("png").and_then(|p| p.as_str()) {
            map.insert(png.trim_end_matches(".png").to_string(), u.clone());
        }
    }
    Ok(map)
}

/// The summary lists every finished unit once: this run's in its order, then any other
/// units already in the directory.
fn write_summary(path: &Path, jobs: &[Job], layer: &str, entries: &BTreeMap<String, Value>) -> Result<()> {
    let mut units: Vec<Value> = jobs.iter().filter_map(|j| entries.get(&j.sel.stem(layer)).cloned()).collect();
    let mine: std::collections::HashSet<String> = jobs.iter().map(|j| j.sel.stem(layer)).collect();
    units.extend(entries.iter().filter(|(k, _)| !mine.contains(*k)).map(|(_, v)| v.clone()));
    let text = serde_json::to_string_pretty(&json!({ "units": units }))?;
    crate::fsutil::write_atomic(path, text.as_bytes())
}

fn write_montage(opts: &SynthOptions, jobs: &[Job], entries: &BTreeMap<String, Value>) -> Result<Option<PathBuf>> {
    let mut tiles = Vec::new();
    let small = jobs.len() > 64;
    for job in jobs {
        let stem = job.sel.stem(&opts.layer);
        let Some(entry) = entries.get(&stem) else { continue };
        let img = image::open(opts.out_dir.join(format!("{stem}.png")))
            .with_context(|| format!("reading back {stem}.png for the montage"))?
            .to_rgb8();
        let img = if small { image::imageops::thumbnail(&img, img.width() / 2, img.height() / 2) } else { img };
        let units: Vec<String> = job.sel.units().iter().map(|u| u.to_string()).collect();
        let mut caption = format!("{} {}", units.join("+"), label_of(opts, &job.sel));
        if let Some(p) = entry.get("probability").and_then(|p| p.as_f64()) {
            caption.push_str(&format!(" p={p:.2}"));
        }
        tiles.push((img, caption));
    }
    if tiles.is_empty() {
        return Ok(None);
    }
    let path = opts.out_dir.join("montage.png");
    render::write_png(&path, &render::montage(&tiles, None))?;
    Ok(Some(path))
}

/// Paths the defaults point to: relative to the working directory, else to the crate.
pub fn default_path(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if shipped.exists() {
        shipped
    } else {
        here
    }
}

/// The code of an image: post-ReLU `layer` (fc6) of the classifier's forward pass.
pub fn encode_image<B: DgnKernels>(classifier: &Net<B>, image: &[B::Scalar], layer: &str) -> Result<Vec<f32>> {
    let blob = classifier.plan.blob_by_name(layer)?;
    let mut st = classifier.state()?;
    let batch = classifier.plan.batch;
    let per = classifier.plan.blobs[classifier.plan.inputs[0]].len() / batch;
    if image.len() != per {
        bail!("the image has {} values, the classifier takes {per} per sample", image.len());
    }
    let input: Vec<B::Scalar> = image.iter().copied().cycle().take(per * batch).collect();
    classifier.forward(&mut st, &[&input])?;
    let v = classifier.backend.download(st.value(blob))?;
    let len = v.len() / batch;
    Ok(v[..len].iter().map(|x| x.to_f32()).collect())
}
