//! `dgnam synthesize`: units in batches through the DGN-AM loop, every output written as
//! soon as its batch is done (atomically, by a writer thread while the next batch
//! computes), so an interrupted run resumes where it stopped.

use super::dgn::{BatchResult, Dgn, Objective, Schedule};
use super::field::{receptive_field, Field};
use super::folder;
use super::kernels::DgnKernels;
use super::manifest;
use super::merge;
pub use super::options::{SynthOptions, UnitSel, Units};
use super::pixel::{pixel_am, PixelPriors};
use super::render;
use super::shard::Shard;
use super::view::to_caffe;
use crate::graph::{unit_offset, BlobId, CpuNet, Net, Plan, UnitRef};
use crate::io::{default_path, Progress, IMAGENET_LABELS, PLACES_LABELS};
use crate::ir::InputSpace;
use crate::npy;
use crate::real::Real;
use crate::rng::Rng;
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

impl UnitSel {
    fn json(&self) -> Value {
        match *self {
            UnitSel::One(u) => json!(u),
            UnitSel::Two(a, b) => json!([a, b]),
        }
    }
}

/// Where the initial codes come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// N(0, 1) from the seed, unclipped; each unit draws its own stream (`unit_key`), so a
    /// unit's start does not depend on what else is in its run or its batch.
    Random,
    /// Rows of an (N, code) array: row i starts unit i, a single row starts every unit.
    Codes(Vec<Vec<f32>>),
}

/// What a run takes beyond its options, read from files and resolved against the nets.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub schedule: Schedule,
    /// Per-neuron upper bounds of the code; None: no clamping.
    pub bounds: Option<Vec<f32>>,
    pub init: Init,
    /// Names for the units of the layer (ImageNet classes for fc8).
    pub labels: Option<Vec<String>>,
    /// The part of the jobs this process runs; None: all of them.
    pub shard: Option<Shard>,
    /// The run manifest without its timing (`manifest::describe`).
    pub manifest: Value,
    /// The classifier's input space (its weights file's record): the generator's images
    /// are converted into it (`synth::view`), and saved images are rendered back from it.
    pub space: InputSpace,
}

/// The initial code of random stream `key` (a unit's is `unit_key`) under `Init::Random`.
pub fn random_code(seed: u64, key: usize, len: usize) -> Vec<f32> {
    let mut rng = unit_rng(seed, key);
    (0..len).map(|_| rng.normal() as f32).collect()
}

/// The random stream `key`: its own, whatever else shares its batch.
fn unit_rng(seed: u64, key: usize) -> Rng {
    Rng::new(seed ^ (key as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The random stream key of a unit: FNV-1a of its layer, unit(s) and position (`xy` as
/// resolved: a conv unit given no --xy is at the center and gets the center's key). It
/// does not depend on where the unit stands in --units or in which batch it runs.
pub fn unit_key(layer: &str, sel: &UnitSel, xy: Option<(usize, usize)>) -> usize {
    let units: Vec<String> = sel.units().iter().map(|u| u.to_string()).collect();
    let at = xy.map_or("-".to_string(), |(x, y)| format!("{x},{y}"));
    let text = format!("{layer}\u{0}{}\u{0}{at}", units.join("+"));
    crate::rng::fnv1a(crate::rng::FNV1A_START, text.as_bytes()) as usize
}

/// Reads a bounds file: whitespace-separated numbers, one per code neuron.
pub fn read_bounds(path: &Path) -> Result<Vec<f32>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read bounds file {}", path.display()))?;
    text.split_whitespace().map(|t| t.parse::<f32>().map_err(|_| anyhow::anyhow!("{}: '{t}' is not a number", path.display()))).collect()
}

/// The shipped bounds of code layer `layer` in `dir` (weights/act_range): `3x/<layer>.txt`
/// (the paper's default), else `2x`, else `1x`; with a note saying so when it is not 3x.
pub fn shipped_bounds(dir: &Path, layer: &str) -> Result<(PathBuf, Option<String>)> {
    let name = format!("{}.txt", crate::io::file_stem(layer));
    for k in ["3x", "2x", "1x"] {
        let p = dir.join(k).join(&name);
        if p.is_file() {
            let note = (k != "3x").then(|| format!("bounds: no 3x bounds for {layer}; using {}", p.display()));
            return Ok((p, note));
        }
    }
    bail!("no shipped bounds for '{layer}' in {}/{{3x,2x,1x}}: give --bounds FILE, or --bounds none", dir.display())
}

/// The blob an encoder layer gives: the newest of its top's name, so `fc6` is post-ReLU.
pub fn encoder_blob(plan: &Plan, layer: &str) -> Result<BlobId> {
    let top = plan.layer_output(layer)?;
    plan.blob_by_name(&plan.blobs[top].name)
}

/// The classifier layer whose output is the generator's code of `code_len` values per
/// sample: `given` (--encoder-layer) when its size fits; else, among the layers of that
/// size, the one the generator file is named after (`generator-fc7.dgnw`: fc7), else fc6,
/// else the first. None when no layer has that size.
pub fn code_layer(plan: &Plan, code_len: usize, given: Option<&str>, generator: Option<&Path>) -> Result<Option<String>> {
    let per_sample = |b: BlobId| plan.blobs[b].len() / plan.batch;
    if let Some(l) = given {
        let n = per_sample(encoder_blob(plan, l).with_context(|| format!("--encoder-layer {l}"))?);
        ensure!(n == code_len, "--encoder-layer {l}: '{l}' has {n} values per sample, the generator's code has {code_len}");
        return Ok(Some(l.to_string()));
    }
    let fits: Vec<&str> = plan
        .nodes
        .iter()
        .filter(|n| !n.tops.is_empty() && !n.bottoms.iter().any(|&b| plan.blobs[b].name == plan.blobs[n.tops[0]].name))
        .filter(|n| encoder_blob(plan, &n.layer).is_ok_and(|b| per_sample(b) == code_len))
        .map(|n| n.layer.as_str())
        .collect();
    let stem = generator.and_then(|g| g.file_stem()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let named = fits.iter().find(|l| stem.ends_with(&format!("-{l}")) || stem.ends_with(&format!("_{l}")));
    Ok(named.or(fits.iter().find(|&&l| l == "fc6")).or(fits.first()).map(|l| l.to_string()))
}

/// Unit names from a file, one per line: ImageNet's `n01440764 tench, Tinca tinca` ->
/// `tench`, Places205's `airport_terminal 1` -> `airport terminal`, anything else as it is.
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read labels {}", path.display()))?;
    let mut lines: Vec<&str> = text.lines().collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    Ok(lines.into_iter().map(label_of_line).collect())
}

fn label_of_line(line: &str) -> String {
    let l = line.trim();
    let (first, rest) = l.split_once(' ').unwrap_or((l, ""));
    let is_synset = first.len() == 9 && first.starts_with('n') && first[1..].bytes().all(|b| b.is_ascii_digit());
    if is_synset {
        return rest.split(',').next().unwrap_or(rest).trim().to_string();
    }
    if let Some((name, index)) = l.rsplit_once(' ') {
        if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) {
            // Places' index lists sometimes keep the folder path: `/a/abbey 0`.
            let name = name.trim();
            let name = match name.strip_prefix('/').and_then(|n| n.split_once('/')) {
                Some((_, n)) => n,
                None => name,
            };
            return name.replace('_', " ");
        }
    }
    l.to_string()
}

/// The names of a layer's `units`: from `given` (--labels, one per unit); else ImageNet's
/// for 1000 units, Places205's for 205; else none (`fc8 #2`).
pub fn labels_for(given: Option<&Path>, units: usize) -> Result<Option<Vec<String>>> {
    if let Some(p) = given {
        let l = read_labels(p).with_context(|| "--labels".to_string())?;
        ensure!(l.len() == units, "--labels {}: {} names for the {units} units of the layer", p.display(), l.len());
        return Ok(Some(l));
    }
    let shipped = match units {
        1000 => IMAGENET_LABELS,
        205 => PLACES_LABELS,
        _ => return Ok(None),
    };
    Ok(read_labels(&default_path(shipped)).ok().filter(|l| l.len() == units))
}

struct Job {
    sel: UnitSel,
    /// Its unit's position in --units (the --init-code row it takes).
    index: usize,
    /// Its random stream (`unit_key`), drawn from `seed`.
    key: usize,
    seed: u64,
    /// Its files' name: `fc8_0945`, with `_s<seed>` when the run has several seeds.
    stem: String,
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
    /// `index.html`; None for a shard (`dgnam merge` writes it).
    pub gallery: Option<PathBuf>,
}

/// `dgn::fuse_relus` for a run of `opts`: the objective's layer output and the blob the
/// objective reads stay as they are. Call before `synthesize`.
pub fn fuse_relus<B: DgnKernels>(generator: &mut Net<B>, classifier: &mut Net<B>, opts: &SynthOptions) -> Result<usize> {
    let keep = [classifier.plan.layer_output(&opts.layer)?, objective_blob(&classifier.plan, opts)?];
    Ok(crate::synth::dgn::fuse_relus(generator, classifier, &keep))
}

/// The units of `opts` through the DGN-AM loop of `generator` and `classifier`.
pub fn synthesize<B: DgnKernels>(
    generator: &Net<B>,
    classifier: &Net<B>,
    opts: &SynthOptions,
    prep: &Prepared,
    progress: &dyn Progress,
) -> Result<Report> {
    let objective_blob = objective_blob(&classifier.plan, opts)?;
    let mut dgn = Dgn::in_space(generator, classifier, objective_blob, prep.bounds.as_deref(), prep.space)?;
    let (batch, code_len) = (dgn.batch(), dgn.code_len());
    synthesize_with(&classifier.plan, opts, prep, batch, progress, |jobs, advance| {
        let mut init: Vec<B::Scalar> = Vec::with_capacity(batch * code_len);
        for job in jobs {
            let row = match &prep.init {
                Init::Random => random_code(job.seed, job.key, code_len),
                Init::Codes(rows) => rows[if rows.len() == 1 { 0 } else { job.index }].clone(),
            };
            ensure!(row.len() == code_len, "initial code has {} values, the generator takes {code_len}", row.len());
            init.extend(row.iter().map(|&v| B::Scalar::from_f32(v)));
        }
        let objectives: Vec<Objective> = jobs.iter().map(|j| j.objective.clone()).collect();
        let r = dgn.run(&init, &objectives, &prep.schedule, opts.save_every, &mut |_| advance())?;
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
/// is its image. Each unit draws its start and its jitter from its own stream, so a batch
/// gives what single runs give.
pub fn synthesize_pixels(
    classifier: &CpuNet<'_, f32>,
    opts: &SynthOptions,
    prep: &Prepared,
    priors: &PixelPriors,
    progress: &dyn Progress,
) -> Result<Report> {
    ensure!(prep.init == Init::Random, "--generator none starts from noise: --init-code and --init-image need a generator");
    ensure!(
        prep.space == InputSpace::Caffe,
        "--generator none: pixel-space priors are Caffe-space, the net takes {} input",
        prep.space.name()
    );
    let objective_blob = objective_blob(&classifier.plan, opts)?;
    ensure!(!opts.prob(), "--generator none maximizes activations; --objective prob needs a generator");
    let input = classifier.plan.inputs[0];
    let batch = classifier.plan.batch;
    let per_image = classifier.plan.blobs[input].len() / batch;
    let prob = classifier.plan.softmax_of(objective_blob);
    let priors = PixelPriors { iters: prep.schedule.iters, ..priors.clone() };
    synthesize_with(&classifier.plan, opts, prep, batch, progress, |jobs, advance| {
        let mut refs = Vec::with_capacity(jobs.len());
        let mut init = Vec::with_capacity(batch * per_image);
        let mut seeds = Vec::with_capacity(jobs.len());
        for job in jobs {
            let UnitSel::One(unit) = job.sel else { bail!("--generator none takes single units, not {:?}", job.sel) };
            refs.push(UnitRef { unit, xy: opts.xy });
            let mut rng = unit_rng(job.seed, job.key);
            let (lo, hi) = priors.clip;
            init.extend((0..per_image).map(|_| lo + (hi - lo) * rng.uniform(0.0, 0.1) as f32));
            seeds.push(rng.next_u64());
        }
        let r = pixel_am(classifier, &opts.layer, &refs, &priors, &init, &seeds, opts.save_every)?;
        (0..priors.iters).for_each(|_| advance());
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
    if opts.prob() {
        plan.softmax_of(layer_blob).with_context(|| format!("--objective prob: no Softmax layer reads the output of '{}'", opts.layer))
    } else {
        Ok(layer_blob)
    }
}

/// Batching, resume, outputs and the summary, around an engine that turns one full batch
/// of jobs into results (`advance` is called once per iteration).
fn synthesize_with(
    plan: &Plan,
    opts: &SynthOptions,
    prep: &Prepared,
    batch: usize,
    progress: &dyn Progress,
    mut engine: impl FnMut(&[&Job], &mut dyn FnMut()) -> Result<BatchResult<f32>>,
) -> Result<Report> {
    let layer_blob = plan.layer_output(&opts.layer)?;
    let shape = plan.blobs[layer_blob].shape.clone();
    let sels = match &opts.units {
        Units::All => (0..shape[1]).map(UnitSel::One).collect(),
        Units::List(l) => l.clone(),
    };
    // The position the units are at: a conv unit's (default the center), none for others.
    let at = if shape.len() == 4 { Some(opts.xy.unwrap_or((shape[3] / 2, shape[2] / 2))) } else { opts.xy };
    let seeds = opts.seed_list();
    let mut jobs = Vec::new();
    let mut stems = std::collections::HashSet::new();
    for (index, sel) in sels.iter().enumerate() {
        let off = |u| unit_offset(&shape, UnitRef { unit: u, xy: opts.xy }, &opts.layer);
        let objective = match *sel {
            UnitSel::One(u) => Objective::Single(off(u)?),
            UnitSel::Two(a, b) => {
                ensure!(!opts.prob(), "--objective prob takes single units, not {a}+{b}");
                Objective::Pair { a: off(a)?, b: off(b)?, gamma: opts.gamma }
            }
        };
        ensure!(stems.insert(sel.stem(&opts.layer)), "--units lists {} twice", sel.name());
        for &seed in &seeds {
            let stem = if seeds.len() > 1 { format!("{}_s{seed}", sel.stem(&opts.layer)) } else { sel.stem(&opts.layer) };
            jobs.push(Job { sel: sel.clone(), index, key: unit_key(&opts.layer, sel, at), seed, stem, objective: objective.clone() });
        }
    }
    if let Init::Codes(rows) = &prep.init {
        ensure!(rows.len() == 1 || rows.len() == sels.len(), "--init-code has {} rows for {} units", rows.len(), sels.len());
    }
    // Every job of the whole run, in order: what `dgnam merge` expects to find.
    let expected: Vec<String> = jobs.iter().map(|j| j.stem.clone()).collect();
    if let Some(shard) = prep.shard {
        jobs = jobs.into_iter().enumerate().filter(|(p, _)| shard.owns(*p)).map(|(_, j)| j).collect();
    }
    let field = at.and_then(|(x, y)| receptive_field(plan, layer_blob, x, y));
    std::fs::create_dir_all(&opts.out_dir).with_context(|| format!("cannot create {}", opts.out_dir.display()))?;
    crate::fsutil::remove_stale_temporaries(&opts.out_dir)?;
    let summary_path = opts.out_dir.join(prep.shard.map_or("summary.json".to_string(), |s| s.summary_name()));
    let mut entries: BTreeMap<String, Value> = folder::read_entries(&summary_path)?.into_iter().collect();
    let finished = |job: &Job, entries: &BTreeMap<String, Value>| {
        entries.contains_key(&job.stem)
            && ["png", "image.npy", "code.npy"].iter().all(|ext| opts.out_dir.join(format!("{}.{ext}", job.stem)).exists())
    };
    let todo: Vec<&Job> = jobs.iter().filter(|j| !finished(j, &entries)).collect();
    let mut report = Report { skipped: jobs.len() - todo.len(), summary: summary_path.clone(), ..Report::default() };
    if report.skipped > 0 {
        progress.message(&format!("{} of {} units already done in {}, skipping them", report.skipped, jobs.len(), opts.out_dir.display()));
    }
    let (started, clock) = (std::time::SystemTime::now(), Instant::now());
    let summary = |entries: &BTreeMap<String, Value>| {
        let m = manifest::timed(&prep.manifest, started, clock.elapsed().as_secs_f64());
        summary_doc(&jobs, &expected, prep.shard, entries, m)
    };
    let clf_in = &plan.blobs[plan.inputs[0]].shape;
    let chw = [clf_in[1], clf_in[2], clf_in[3]];
    progress.start((todo.len() * prep.schedule.iters) as u64, "iterations");
    // The files are written by a thread of their own while the engine runs the next batch
    // (PNG and GIF encoding would otherwise hold the device idle between batches). At most
    // one finished batch waits for it. The summary is rewritten after each batch's files,
    // in batch order, as before; the first error of either side ends the run.
    let (to_writer, batches) = std::sync::mpsc::sync_channel::<(&[&Job], BatchResult<f32>, f64)>(1);
    let entries = std::thread::scope(|scope| -> Result<BTreeMap<String, Value>> {
        let summary = &summary;
        let summary_path = &summary_path;
        let writer = scope.spawn(move || -> Result<BTreeMap<String, Value>> {
            for (chunk, result, seconds) in batches {
                for (n, job) in chunk.iter().enumerate() {
                    if result.failed[n].is_none() {
                        let entry = write_unit(opts, prep, job, &result, n, chw, field, seconds)?;
                        entries.insert(job.stem.clone(), entry);
                    }
                }
                folder::write_doc(summary_path, &summary(&entries))?;
            }
            Ok(entries)
        });
        let mut computed = Ok(());
        for chunk in todo.chunks(batch) {
            let batch_started = Instant::now();
            // A short last batch is padded by repeating its last unit; the copies are dropped.
            let padded: Vec<&Job> = (0..batch).map(|i| chunk[i.min(chunk.len() - 1)]).collect();
            let first = report.done + report.failed.len() + report.skipped;
            progress.status(&format!("units {}..{} of {}", first + 1, first + chunk.len(), jobs.len()));
            let result = match engine(&padded, &mut || progress.advance(chunk.len() as u64)) {
                Ok(r) => r,
                Err(e) => {
                    computed = Err(e);
                    break;
                }
            };
            let seconds = batch_started.elapsed().as_secs_f64() / chunk.len() as f64;
            for (n, job) in chunk.iter().enumerate() {
                match &result.failed[n] {
                    Some(why) => {
                        progress.message(&format!("unit {} skipped: {why}", job.stem));
                        report.failed.push((job.stem.clone(), why.clone()));
                    }
                    None => report.done += 1,
                }
            }
            if to_writer.send((chunk, result, seconds)).is_err() {
                break; // the writer stopped on an error, which join returns
            }
        }
        drop(to_writer);
        // The batches finished before an engine error are still written (a rerun resumes
        // after them); a write error comes first, it happened first.
        let written = writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        computed.map(|()| written)
    })?;
    progress.finish();
    let doc = summary(&entries);
    if prep.shard.is_some() {
        folder::write_doc(&summary_path, &doc)?;
    } else {
        let units = doc["units"].as_array().cloned().unwrap_or_default();
        let done = merge::finish(&opts.out_dir, &units, &doc["manifest"])?;
        report.montage = done.montage;
        report.gallery = Some(done.gallery);
    }
    Ok(report)
}

/// A summary: every finished job in order. An unsharded run's lists, after this run's,
/// any other units already in the folder; a shard's lists only its own, and names every
/// job of the whole run (`expected`) for `dgnam merge`.
fn summary_doc(jobs: &[Job], expected: &[String], shard: Option<Shard>, entries: &BTreeMap<String, Value>, manifest: Value) -> Value {
    let mut units: Vec<Value> = jobs.iter().filter_map(|j| entries.get(&j.stem).cloned()).collect();
    match shard {
        Some(s) => json!({ "shard": { "index": s.index, "count": s.count }, "expected": expected, "units": units, "manifest": manifest }),
        None => {
            let mine: std::collections::HashSet<&str> = jobs.iter().map(|j| j.stem.as_str()).collect();
            units.extend(entries.iter().filter(|(k, _)| !mine.contains(k.as_str())).map(|(_, v)| v.clone()));
            json!({ "units": units, "manifest": manifest })
        }
    }
}

/// Writes one unit's files; a conv unit also gets `<stem>.field.png`, the image cropped to
/// what the unit sees (`field`).
#[allow(clippy::too_many_arguments)]
fn write_unit(
    opts: &SynthOptions,
    prep: &Prepared,
    job: &Job,
    r: &BatchResult<f32>,
    n: usize,
    chw: [usize; 3],
    field: Option<Field>,
    seconds: f64,
) -> Result<Value> {
    let stem = &job.stem;
    let dir = &opts.out_dir;
    let (image, code) = (&r.images[n], &r.codes[n]);
    ensure!(!image.is_empty(), "unit {stem}: the loop ran no iteration");
    let png = dir.join(format!("{stem}.png"));
    let image_npy = dir.join(format!("{stem}.image.npy"));
    let code_npy = dir.join(format!("{stem}.code.npy"));
    // Rendering takes Caffe-space images; image.npy is the classifier's input as it is.
    let rgb = render::to_rgb(&to_caffe(prep.space, image), chw[0], chw[1], chw[2], opts.render);
    render::write_png(&png, &rgb)?;
    npy::write(&image_npy, &[1, chw[0], chw[1], chw[2]], image)?;
    npy::write(&code_npy, &[1, code.len()], code)?;
    let field_png = match field {
        Some(f) => {
            let p = dir.join(format!("{stem}.field.png"));
            let crop = image::imageops::crop_imm(&rgb, f.x0 as u32, f.y0 as u32, f.width() as u32, f.height() as u32).to_image();
            render::write_png(&p, &crop)?;
            Some(p)
        }
        None => None,
    };
    let gif = if r.frames.is_empty() {
        None
    } else {
        let frames: Vec<_> =
            r.frames.iter().map(|f| render::to_rgb(&to_caffe(prep.space, &f[n]), chw[0], chw[1], chw[2], opts.render)).collect();
        let p = dir.join(format!("{stem}.gif"));
        render::write_gif(&p, &frames, 100)?;
        Some(p)
    };
    let label = label_of(opts, prep, &job.sel);
    let name = |p: &Path| p.file_name().map(|f| f.to_string_lossy().into_owned());
    Ok(json!({
        "layer": opts.layer,
        "unit": job.sel.json(),
        "seed": job.seed,
        "xy": opts.xy.map(|(x, y)| json!([x, y])),
        "label": label,
        "activations": r.activations[n],
        "probability": r.probabilities[n],
        "stopped_at": r.stopped_at[n],
        "seconds": seconds,
        "png": name(&png),
        "image": name(&image_npy),
        "code": name(&code_npy),
        "field": field.map(|f| json!([f.x0, f.y0, f.x1, f.y1])),
        "field_png": field_png.as_deref().and_then(name),
        "gif": gif.as_deref().and_then(name),
    }))
}

fn label_of(opts: &SynthOptions, prep: &Prepared, sel: &UnitSel) -> String {
    let one = |u: usize| match &prep.labels {
        Some(l) if u < l.len() => l[u].clone(),
        _ => format!("{} #{u}", opts.layer),
    };
    match *sel {
        UnitSel::One(u) => one(u),
        UnitSel::Two(a, b) => format!("{} + {}", one(a), one(b)),
    }
}

/// The code of an image: encoder layer `layer` of the classifier's forward pass, after any
/// in-place layer on it (`fc6` is post-ReLU, the code space of the fc6 generator).
pub fn encode_image<B: DgnKernels>(classifier: &Net<B>, image: &[B::Scalar], layer: &str) -> Result<Vec<f32>> {
    let blob = encoder_blob(&classifier.plan, layer)?;
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
