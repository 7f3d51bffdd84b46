//! The training loop: codes and comparator targets of every image once, then per step a
//! batch through G, the crop, E to the comparator layer, the losses, back through E and
//! the crop into G's weights, and Adam.

use super::adam::Adam;
use super::adversarial::{self, Discriminator};
use super::checkpoint::{self, Paths, State, Trained};
use super::options::{TrainOptions, Weights};
use super::params;
use crate::dataset::{self, Images};
use crate::device::FromMapped;
use crate::graph::{BlobId, Net, ParamSpec, Plan};
use crate::io::{open_weights, NetSource, Progress};
use crate::preprocess::PreprocessFlags;
use crate::rng::Rng;
use crate::synth::dgn::center_crop_offset;
use crate::synth::kernels::DgnKernels;
use crate::synth::render::{montage, to_rgb, write_png, Render};
use crate::tensor::fmt_shape;
use crate::weights::WeightsFile;
use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

/// Images in the reconstruction grids.
const GRID_IMAGES: usize = 8;

/// Everything a run needs, read and checked before anything is written.
pub struct Prepared {
    pub options: TrainOptions,
    pub weights: Weights,
    pub classifier: WeightsFile,
    /// The generator's definition, stored in every weights file the run writes.
    pub generator_text: String,
    generator_plan: Plan,
    /// The discriminator's definition, with an adversarial loss.
    discriminator: Option<crate::ir::NetDef>,
    pub images: Images,
    pub paths: Paths,
    /// What a resume must match (`TrainOptions::identity`).
    pub identity: Value,
    /// Where training starts: step 0 or the checkpoint's.
    pub start: State,
}

/// What a finished run wrote.
#[derive(Clone, Debug)]
pub struct TrainReport {
    pub generator: PathBuf,
    pub log: PathBuf,
    /// The final reconstruction grid (none for images of other than 1 or 3 channels).
    pub grid: Option<PathBuf>,
    pub steps: usize,
    pub resumed_from: usize,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub seconds: f64,
}

/// E's input shape (C, H, W) and the blobs the loss reads.
fn classifier_blobs(plan: &Plan, o: &TrainOptions) -> Result<([usize; 3], BlobId, Option<BlobId>)> {
    let input = &plan.blobs[plan.inputs[0]].shape;
    ensure!(input.len() == 4, "--net {}: its input {} is not an image", o.net.display(), fmt_shape(input));
    let code = crate::synth::run::encoder_blob(plan, &o.layer).with_context(|| format!("--layer {}", o.layer))?;
    let comparator = match &o.comparator_layer {
        Some(c) => Some(plan.layer_output(c).with_context(|| format!("--comparator-layer {c}"))?),
        None => None,
    };
    Ok(([input[1], input[2], input[3]], code, comparator))
}

/// Checks the generator against E: one input of the code's size, one image output with E's
/// channels, at least E's height and width. Returns the crop offset.
fn check_generator(gen: &Plan, o: &TrainOptions, code_len: usize, input: [usize; 3]) -> Result<[usize; 2]> {
    let g = o.generator_def.display();
    ensure!(gen.inputs.len() == 1, "--generator-def {g}: takes {} inputs, a generator takes one (the code)", gen.inputs.len());
    let gen_code = gen.blobs[gen.inputs[0]].len() / gen.batch;
    ensure!(
        gen_code == code_len,
        "--generator-def {g}: its code has {gen_code} values, layer '{}' of the classifier gives {code_len}",
        o.layer
    );
    let out = &gen.blobs[gen.last_output()].shape;
    let fits = out.len() == 4 && out[1] == input[0] && out[2] >= input[1] && out[3] >= input[2];
    ensure!(
        fits,
        "--generator-def {g}: its output {} cannot be cropped to the classifier's input {}",
        fmt_shape(&out[1..]),
        fmt_shape(&input)
    );
    Ok(center_crop_offset([out[2], out[3]], [input[1], input[2]]))
}

/// Reads and checks every input of a run: the nets, the data, the checkpoint to resume.
pub fn prepare(o: &TrainOptions, pre: &PreprocessFlags) -> Result<Prepared> {
    let weights = o.check()?;
    let paths = Paths::new(&o.out)?;
    let classifier = open_weights(&o.net)?;
    // G is trained on E's input as is, but `synthesize` reads G's images as Caffe space and
    // maps them into E's recorded space, and --images are read into Caffe space: on another
    // space training would run and give a generator of wrong images.
    let what = "train-generator (a generator's images are Caffe-space; synthesize maps them into the net's space)";
    crate::io::require_caffe_space(&classifier, &o.net, what)?;
    let clf_plan = Plan::new(&classifier.netdef()?, 1).with_context(|| format!("{}", o.net.display()))?;
    let (input, code_blob, _) = classifier_blobs(&clf_plan, o)?;
    let code_len = clf_plan.blobs[code_blob].len();

    let source = NetSource::open(&o.generator_def).with_context(|| format!("--generator-def {}", o.generator_def.display()))?;
    let generator_text = match &source.file {
        Some(f) => f.header.prototxt.clone(),
        None => std::fs::read_to_string(&o.generator_def).with_context(|| format!("cannot read {}", o.generator_def.display()))?,
    };
    let generator_plan = Plan::new(&source.def, 1).with_context(|| format!("--generator-def {}", o.generator_def.display()))?;
    check_generator(&generator_plan, o, code_len, input)?;
    ensure!(generator_plan.param_count() > 0, "--generator-def {}: has no weights to train", o.generator_def.display());

    let discriminator = match &o.discriminator_def {
        Some(d) => {
            let what = || format!("--discriminator-def {}", d.display());
            let source = NetSource::open(d).with_context(what)?;
            let plan = Plan::new(&source.def, 1).with_context(what)?;
            adversarial::check(&plan, d, input)?;
            Some((source, plan))
        }
        None => None,
    };

    // The images last: the slowest read, once everything else is known to fit.
    let images = match (&o.images, &o.images_npy) {
        (Some(dir), _) => dataset::from_dir(dir, input, &pre.resolve(input[0]))?,
        (None, Some(npy)) => dataset::from_npy(npy, input)?,
        (None, None) => anyhow::bail!("give the training images with --images DIR or --images-npy X.npy"),
    };

    let fingerprint = crate::rng::fnv1a(crate::rng::FNV1A_START, bytemuck::cast_slice(&images.data));
    let identity = o.identity(weights, fingerprint, images.count);
    let specs: Vec<ParamSpec> = generator_plan.param_specs().cloned().collect();
    let disc_specs: Option<Vec<ParamSpec>> = discriminator.as_ref().map(|(_, plan)| plan.param_specs().cloned().collect());
    let start = if o.resume {
        let s = checkpoint::read(&paths, &specs, disc_specs.as_deref(), &identity, o.lr)?;
        ensure!(s.step < o.steps, "--resume: the checkpoint is at step {}, --steps {} leaves nothing to do", s.step, o.steps);
        s
    } else {
        // The starting weights: a .dgnw's, or a prototxt's seeded random ones (D's drawn
        // from a stream of its own).
        let fresh = |params: Vec<Vec<f32>>| {
            let lens: Vec<usize> = params.iter().map(Vec::len).collect();
            Trained { params, adam: Adam::new(o.lr, &lens) }
        };
        let generator = fresh(params::initial(&source, o.seed)?);
        let discriminator = match &discriminator {
            Some((source, _)) => Some(fresh(params::initial(source, o.seed ^ 0xD15C_0000_0000_0001)?)),
            None => None,
        };
        State { step: 0, generator, discriminator, log: vec![], seconds: 0.0 }
    };
    let discriminator = discriminator.map(|(source, _)| source.def);
    Ok(Prepared { options: o.clone(), weights, classifier, generator_text, generator_plan, discriminator, images, paths, identity, start })
}

/// The image index at position `k` of the run's stream: the images in a fresh seeded
/// order each epoch, so a step's batch depends only on the seed and the step.
struct Order {
    seed: u64,
    count: usize,
    epoch: Option<(usize, Vec<usize>)>,
}

impl Order {
    fn at(&mut self, k: usize) -> usize {
        let epoch = k / self.count;
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut rng = Rng::new(self.seed ^ (epoch as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let mut perm: Vec<usize> = (0..self.count).collect();
            for i in (1..perm.len()).rev() {
                perm.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            self.epoch = Some((epoch, perm));
        }
        self.epoch.as_ref().map_or(0, |(_, p)| p[k % self.count])
    }
}

/// Rows `rows` of a `width`-wide table, one after another.
fn gather(table: &[f32], width: usize, rows: &[usize]) -> Vec<f32> {
    rows.iter().flat_map(|&r| table[r * width..(r + 1) * width].iter().copied()).collect()
}

/// The nets of a run on one device, with their buffers.
struct Nets<B: DgnKernels<Scalar = f32>> {
    clf: Net<B>,
    gen: Net<B>,
    clf_state: crate::graph::State<B>,
    gen_state: crate::graph::State<B>,
    code_blob: BlobId,
    comparator: Option<BlobId>,
    gen_shape: [usize; 4],
    offset: [usize; 2],
    hw: [usize; 2],
}

impl<B: DgnKernels<Scalar = f32>> Nets<B> {
    fn batch(&self) -> usize {
        self.clf.plan.batch
    }

    /// E's code (and comparator output) of every image.
    fn encode(&self, images: &Images, progress: &dyn Progress) -> Result<(Vec<f32>, Vec<f32>)> {
        let blobs: Vec<BlobId> = std::iter::once(self.code_blob).chain(self.comparator).collect();
        let mut tables = dataset::blob_rows(&self.clf, images, &blobs, progress)?.into_iter();
        Ok((tables.next().unwrap_or_default(), tables.next().unwrap_or_default()))
    }

    /// G of a batch of codes, cropped to E's input: written into E's input buffer.
    fn generate(&mut self, codes: &[f32]) -> Result<()> {
        let gen_in = self.gen.plan.inputs[0];
        self.gen.backend.upload(self.gen_state.value_mut(gen_in), codes)?;
        self.gen.forward_from_inputs(&mut self.gen_state)?;
        let out = self.gen.plan.last_output();
        let clf_in = self.clf.plan.inputs[0];
        self.gen.backend.crop(self.gen_state.value(out), self.gen_shape, self.offset, self.hw, self.clf_state.value_mut(clf_in))
    }
}

/// One step's losses (before the update).
struct Losses {
    image: f64,
    feature: Option<f64>,
    adversarial: Option<f64>,
    discriminator: Option<f64>,
    total: f64,
}

/// Trains from `p.start` to `p.options.steps` on the devices `clf_dev` (E), `gen_dev` (G)
/// and `disc_dev` (D, when there is one), writing checkpoints on the way and the
/// generator, log and grid at the end.
pub fn train<'w, B>(p: &'w Prepared, clf_dev: B, gen_dev: B, disc_dev: B, progress: &dyn Progress) -> Result<TrainReport>
where
    B: DgnKernels<Scalar = f32> + FromMapped<'w>,
{
    let o = &p.options;
    let batch = o.batch;
    let clf = Net::from_weights(&p.classifier, batch, clf_dev)?;
    let (input, code_blob, comparator) = classifier_blobs(&clf.plan, o)?;
    let gen_plan = Plan::new(&crate::caffe::netdef::parse_netdef(&p.generator_text)?, batch)?;
    let specs: Vec<ParamSpec> = p.generator_plan.param_specs().cloned().collect();
    let gen = params::net_from_host(gen_plan, gen_dev, &p.start.generator.params)?;
    // D judges the batch's real images and G's together.
    let mut disc = match (&p.discriminator, &p.start.discriminator) {
        (Some(def), Some(t)) => {
            let plan = Plan::new(def, 2 * batch).context("the discriminator")?;
            Some(Discriminator::new(plan, disc_dev, t.params.clone(), t.adam.clone())?)
        }
        _ => None,
    };
    let disc_specs: Vec<ParamSpec> = disc.as_ref().map(|d| d.specs.clone()).unwrap_or_default();
    let offset = check_generator(&gen.plan, o, clf.plan.blobs[code_blob].len() / batch, input)?;
    let gs = &gen.plan.blobs[gen.plan.last_output()].shape;
    let gen_shape = [gs[0], gs[1], gs[2], gs[3]];
    let (clf_state, gen_state) = (clf.state()?, gen.state()?);
    let mut nets = Nets { clf, gen, clf_state, gen_state, code_blob, comparator, gen_shape, offset, hw: [input[1], input[2]] };

    let (codes, targets) = nets.encode(&p.images, progress)?;
    let per = p.images.len_per_image();
    let code_len = codes.len() / p.images.count;
    let target_len = targets.len() / p.images.count;
    std::fs::create_dir_all(&p.paths.dir).with_context(|| format!("cannot create {}", p.paths.dir.display()))?;
    crate::fsutil::remove_stale_temporaries(&p.paths.dir)?;

    let mut state = p.start.clone();
    let started = Instant::now();
    let seconds_before = state.seconds;
    let mut order = Order { seed: o.seed, count: p.images.count, epoch: None };
    let dev_len = batch * per;
    let mut grad_buf = nets.clf.backend.alloc(dev_len)?;
    let mut gen_out_grad = nets.gen.backend.alloc(gen_shape.iter().product())?;
    let mut seed_buf = match comparator {
        Some(c) => Some(nets.clf.backend.alloc(nets.clf.plan.blobs[c].len())?),
        None => None,
    };
    progress.start(o.steps as u64, "steps");
    progress.advance(state.step as u64);
    while state.step < o.steps {
        let rows: Vec<usize> = (0..batch).map(|i| order.at(state.step * batch + i)).collect();
        let x = gather(&p.images.data, per, &rows);
        let y = gather(&codes, code_len, &rows);
        nets.generate(&y)?;
        let clf_in = nets.clf.plan.inputs[0];
        let img = nets.clf.backend.download(nets.clf_state.value(clf_in))?;
        // d/dimg of w_image * sum ||img - x||^2 / batch.
        let scale = 1.0 / batch as f64;
        let mut loss_image = 0.0f64;
        let mut grad: Vec<f32> = img
            .iter()
            .zip(&x)
            .map(|(&g, &t)| {
                let d = g as f64 - t as f64;
                loss_image += d * d;
                (2.0 * p.weights.image * scale * d) as f32
            })
            .collect();
        loss_image *= scale;
        let mut loss_feature = None;
        if let (Some(c), Some(seed)) = (comparator, seed_buf.as_mut()) {
            nets.clf.forward_from_inputs(&mut nets.clf_state)?;
            let feat = nets.clf.backend.download(nets.clf_state.value(c))?;
            let want = gather(&targets, target_len, &rows);
            let mut l = 0.0f64;
            let seed_host: Vec<f32> = feat
                .iter()
                .zip(&want)
                .map(|(&f, &t)| {
                    let d = f as f64 - t as f64;
                    l += d * d;
                    (2.0 * p.weights.feature * scale * d) as f32
                })
                .collect();
            loss_feature = Some(l * scale);
            if p.weights.feature > 0.0 {
                nets.clf.backend.upload(seed, &seed_host)?;
                nets.clf.start_backward(&mut nets.clf_state)?;
                nets.clf.seed(&mut nets.clf_state, c, seed)?;
                nets.clf.finish_backward(&mut nets.clf_state, false)?;
                if let Some(g) = nets.clf_state.grad(clf_in) {
                    for (a, b) in grad.iter_mut().zip(nets.clf.backend.download(g)?) {
                        *a += b;
                    }
                }
            }
        }
        let turn = match disc.as_mut() {
            Some(d) => Some(d.turn(&x, &img)?),
            None => None,
        };
        if let Some(t) = &turn {
            for (g, a) in grad.iter_mut().zip(&t.grad_fake) {
                *g += (p.weights.adversarial * *a as f64) as f32;
            }
        }
        let adversarial = turn.as_ref().map(|t| t.loss_generator);
        let losses = Losses {
            image: loss_image,
            feature: loss_feature,
            adversarial,
            discriminator: turn.as_ref().map(|t| t.loss_discriminator),
            total: p.weights.image * loss_image
                + p.weights.feature * loss_feature.unwrap_or(0.0)
                + p.weights.adversarial * adversarial.unwrap_or(0.0),
        };
        ensure!(losses.total.is_finite(), "the loss became {} at step {}: lower --lr", losses.total, state.step + 1);

        // Back through the crop into G, with G's weight gradients.
        nets.clf.backend.upload(&mut grad_buf, &grad)?;
        nets.gen.backend.zero(&mut gen_out_grad)?;
        nets.gen.backend.crop_backward(&grad_buf, gen_shape, offset, nets.hw, &mut gen_out_grad)?;
        let gen_out = nets.gen.plan.last_output();
        nets.gen.start_backward(&mut nets.gen_state)?;
        nets.gen.seed(&mut nets.gen_state, gen_out, &gen_out_grad)?;
        nets.gen.finish_backward(&mut nets.gen_state, true)?;
        let grads = params::weight_grads(&nets.gen, &nets.gen_state)?;
        state.generator.adam.step(&mut state.generator.params, &grads)?;
        params::set_params(&mut nets.gen, &state.generator.params)?;
        if let (Some(d), Some(t)) = (&disc, state.discriminator.as_mut()) {
            t.params.clone_from(&d.params);
            t.adam.clone_from(&d.adam);
        }
        state.step += 1;
        state.seconds = seconds_before + started.elapsed().as_secs_f64();
        state.log.push(json!({
            "step": state.step,
            "loss": losses.total,
            "loss_image": losses.image,
            "loss_feature": losses.feature,
            "loss_adversarial": losses.adversarial,
            "loss_discriminator": losses.discriminator,
            "seconds": state.seconds,
        }));
        let feature = losses.feature.map_or(String::new(), |f| format!(" feature {f:.4}"));
        let adv = match (losses.adversarial, losses.discriminator) {
            (Some(a), Some(d)) => format!(" adversarial {a:.4}, discriminator {d:.4}"),
            _ => String::new(),
        };
        progress.status(&format!("loss {:.4} (image {:.4}{feature}{adv})", losses.total, losses.image));
        progress.advance(1);
        if o.checkpoint_every.is_some_and(|k| state.step.is_multiple_of(k)) && state.step < o.steps {
            checkpoint::write(&p.paths, &p.generator_text, &specs, &disc_specs, &state, &p.identity)?;
            write_grid(&mut nets, p, &codes, &p.paths.grid(Some(state.step)))?;
            write_log(p, &state)?;
        }
    }
    progress.finish();
    if o.checkpoint_every.is_some() {
        checkpoint::write(&p.paths, &p.generator_text, &specs, &disc_specs, &state, &p.identity)?;
    }
    let grid = p.paths.grid(None);
    let grid = write_grid(&mut nets, p, &codes, &grid)?.then_some(grid);
    write_log(p, &state)?;
    checkpoint::write_generator(&p.paths.out, &p.generator_text, &specs, &state.generator.params)?;
    let loss_at = |r: Option<&Value>| r.and_then(|r| r["loss"].as_f64());
    Ok(TrainReport {
        generator: p.paths.out.clone(),
        log: p.paths.log(),
        grid,
        steps: state.step,
        resumed_from: p.start.step,
        first_loss: loss_at(state.log.first()),
        last_loss: loss_at(state.log.last()),
        seconds: state.seconds,
    })
}

fn write_log(p: &Prepared, state: &State) -> Result<()> {
    let mut options = p.identity.clone();
    options["steps"] = json!(p.options.steps);
    options["checkpoint_every"] = json!(p.options.checkpoint_every);
    let log = json!({"steps": state.log, "options": options});
    crate::fsutil::write_atomic(&p.paths.log(), serde_json::to_string_pretty(&log)?.as_bytes())
}

/// Real images (top row) above their reconstructions G(E_L(x)) (bottom row), for images
/// spread evenly over the data. Pictures need 1 or 3 channels: for others, false.
fn write_grid<B: DgnKernels<Scalar = f32>>(nets: &mut Nets<B>, p: &Prepared, codes: &[f32], path: &std::path::Path) -> Result<bool> {
    let [c, h, w] = p.images.shape;
    if c != 1 && c != 3 {
        return Ok(false);
    }
    let n = p.images.count.min(GRID_IMAGES);
    let picks: Vec<usize> = (0..n).map(|i| i * p.images.count / n).collect();
    let code_len = codes.len() / p.images.count;
    let per = p.images.len_per_image();
    let mut recon = Vec::with_capacity(n * per);
    for chunk in picks.chunks(nets.batch()) {
        let rows: Vec<usize> = (0..nets.batch()).map(|i| chunk.get(i).copied().unwrap_or(chunk[0])).collect();
        nets.generate(&gather(codes, code_len, &rows))?;
        let img = nets.clf.backend.download(nets.clf_state.value(nets.clf.plan.inputs[0]))?;
        recon.extend_from_slice(&img[..chunk.len() * per]);
    }
    // Small images (LeNet's 28x28) are enlarged to about 112 pixels, nearest neighbour.
    let zoom = (112 / w.max(h)).max(1) as u32;
    let tile = |chw: &[f32]| {
        let rgb = to_rgb(chw, c, h, w, Render::Mean);
        image::imageops::resize(&rgb, w as u32 * zoom, h as u32 * zoom, image::imageops::FilterType::Nearest)
    };
    let mut tiles = Vec::with_capacity(2 * n);
    for &i in &picks {
        tiles.push((tile(p.images.image(i)), format!("x #{i}")));
    }
    for (k, &i) in picks.iter().enumerate() {
        tiles.push((tile(&recon[k * per..(k + 1) * per]), format!("G(E(x)) #{i}")));
    }
    write_png(path, &montage(&tiles, Some(n)))?;
    Ok(true)
}
