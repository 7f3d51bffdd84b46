//! The DGN-AM loop (SPEC section 2), batched: B codes go through the generator and the
//! classifier together, and every sample keeps its own normalization, schedule position
//! and stopping point, so a batch gives the same numbers as B single runs.

use super::kernels::DgnKernels;
use super::view::View;
use crate::graph::{BlobId, Net, State};
use crate::ir::InputSpace;
use crate::real::Real;
use crate::tensor::fmt_shape;
use anyhow::{ensure, Context, Result};

/// The step size schedule and decay of the paper's scripts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub iters: usize,
    pub lr: f64,
    pub lr_end: f64,
    /// Multiplicative decay of the code after each step, applied when 0 < decay < 1.
    pub decay: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule { iters: 200, lr: 8.0, lr_end: 1e-10, decay: 0.99 }
    }
}

impl Schedule {
    /// Linear from `lr` at iteration 0 towards `lr_end` (reached at iteration `iters`).
    pub fn step(&self, i: usize) -> f64 {
        self.lr + (self.lr_end - self.lr) * i as f64 / self.iters.max(1) as f64
    }
}

/// What one sample maximizes, as flat offsets into one sample of the objective blob.
#[derive(Clone, Debug, PartialEq)]
pub enum Objective {
    Single(usize),
    /// Paper eq. 2: a1 + a2 - gamma |a1 - a2|.
    Pair {
        a: usize,
        b: usize,
        gamma: f64,
    },
}

impl Objective {
    pub fn value<T: Real>(&self, row: &[T]) -> f64 {
        match *self {
            Objective::Single(u) => row[u].to_f64(),
            Objective::Pair { a, b, gamma } => {
                let (x, y) = (row[a].to_f64(), row[b].to_f64());
                x + y - gamma * (x - y).abs()
            }
        }
    }

    /// Writes d objective / d row into `seed` (zeroed by the caller).
    pub fn gradient<T: Real>(&self, row: &[T], seed: &mut [T]) {
        match *self {
            Objective::Single(u) => seed[u] += T::ONE,
            Objective::Pair { a, b, gamma } => {
                let d = row[a].to_f64() - row[b].to_f64();
                let sign = if d > 0.0 {
                    1.0
                } else if d < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                seed[a] += T::from_f64(1.0 - gamma * sign);
                seed[b] += T::from_f64(1.0 + gamma * sign);
            }
        }
    }
}

/// Where the classifier's input sits in the generator's image: centered, rounding down
/// (the paper's code: 256 -> 227 starts at (256 - 227) / 2 = 14).
pub fn center_crop_offset(generated: [usize; 2], input: [usize; 2]) -> [usize; 2] {
    [(generated[0] - input[0]) / 2, (generated[1] - input[1]) / 2]
}

/// One batch's outcome, on the host.
#[derive(Clone, Debug)]
pub struct BatchResult<T> {
    /// Per sample: the classifier's input (the generator's image cropped or resized, in the
    /// classifier's input space) of its last iteration.
    pub images: Vec<Vec<T>>,
    /// Per sample: the code that produced that image.
    pub codes: Vec<Vec<T>>,
    /// Per sample, per iteration run: the objective's value.
    pub activations: Vec<Vec<f64>>,
    /// Per sample: the softmax probability of its unit at the end, where the net has one.
    pub probabilities: Vec<Option<f64>>,
    /// Per sample: the iteration where the gradient vanished (the loop stops there).
    pub stopped_at: Vec<Option<usize>>,
    /// Per sample: why it failed (a non-finite objective or gradient); its image and code
    /// are then not a result.
    pub failed: Vec<Option<String>>,
    /// Every `save_every` iterations: each sample's image at that point.
    pub frames: Vec<Vec<Vec<T>>>,
}

/// Folds the ReLUs of both nets into their convolutions where the backend can
/// (`Net::fuse_relus`), keeping the classifier blobs in `objective` (those the caller's
/// `Dgn` reads: its objective blob and, for a softmax objective, the layer output under
/// it). The generator is read only at its input and its last output, which fusing leaves
/// in place. The SiLUs (Sigmoid and Mul) of both are fused too (`Net::fuse_silus`), under
/// the same rule. Returns how many layers were fused away in all.
pub fn fuse_relus<B: DgnKernels>(generator: &mut Net<B>, classifier: &mut Net<B>, objective: &[BlobId]) -> usize {
    generator.fuse_relus(&[]) + classifier.fuse_relus(objective) + generator.fuse_silus(&[]) + classifier.fuse_silus(objective)
}

/// A generator and a classifier compiled for the same batch, with their buffers.
pub struct Dgn<'n, B: DgnKernels> {
    pub generator: &'n Net<B>,
    pub classifier: &'n Net<B>,
    gen_state: State<B>,
    clf_state: State<B>,
    /// The blob the objective reads (layer L's own output, or its softmax for `prob`).
    objective_blob: BlobId,
    /// The softmax over the objective blob, when there is one (for reporting).
    prob_blob: Option<BlobId>,
    /// The generator's image as the classifier takes it (crop or resize, input space).
    view: View<B>,
    code_len: usize,
    upper: Option<B::Buf>,
    code: B::Buf,
    gen_out_grad: B::Buf,
    seed: B::Buf,
}

impl<'n, B: DgnKernels> Dgn<'n, B> {
    /// `blob` is the classifier blob the objective reads; `bounds` the per-neuron upper
    /// bounds of the code (lower bound 0), or None for no clamping. The classifier takes
    /// Caffe-space input (`in_space` for others).
    pub fn new(generator: &'n Net<B>, classifier: &'n Net<B>, blob: BlobId, bounds: Option<&[f32]>) -> Result<Self> {
        Self::in_space(generator, classifier, blob, bounds, InputSpace::Caffe)
    }

    /// `new` for a classifier whose input is in `space` (its weights file's record): the
    /// generator's Caffe-space images are fitted to its input size and converted
    /// (`synth::view`).
    pub fn in_space(
        generator: &'n Net<B>,
        classifier: &'n Net<B>,
        blob: BlobId,
        bounds: Option<&[f32]>,
        space: InputSpace,
    ) -> Result<Self> {
        let batch = generator.plan.batch;
        ensure!(classifier.plan.batch == batch, "generator and classifier must run at the same batch size");
        let gen_in = &generator.plan.blobs[generator.plan.inputs[0]];
        let code_len = gen_in.len() / batch;
        let out = &generator.plan.blobs[generator.plan.last_output()];
        let clf_in = &classifier.plan.blobs[classifier.plan.inputs[0]];
        ensure!(
            out.shape.len() == 4 && clf_in.shape.len() == 4 && out.shape[1] == clf_in.shape[1],
            "the generator's output {} cannot feed the classifier's input {}",
            fmt_shape(&out.shape),
            fmt_shape(&clf_in.shape)
        );
        let b = &classifier.backend;
        let view = View::new(b, [out.shape[0], out.shape[1], out.shape[2], out.shape[3]], &clf_in.shape, space)?;
        let upper = match bounds {
            Some(u) => {
                ensure!(u.len() == code_len, "{} bounds given for a code of {code_len}", u.len());
                let host: Vec<B::Scalar> = u.iter().map(|&v| B::Scalar::from_f32(v)).collect();
                let mut buf = b.alloc(code_len)?;
                b.upload(&mut buf, &host)?;
                Some(buf)
            }
            None => None,
        };
        Ok(Dgn {
            generator,
            classifier,
            gen_state: generator.state()?,
            clf_state: classifier.state()?,
            objective_blob: blob,
            prob_blob: classifier.plan.softmax_of(blob),
            view,
            code_len,
            upper,
            code: b.alloc(gen_in.len())?,
            gen_out_grad: b.alloc(out.len())?,
            seed: b.alloc(classifier.plan.blobs[blob].len())?,
        })
    }

    pub fn batch(&self) -> usize {
        self.generator.plan.batch
    }

    pub fn code_len(&self) -> usize {
        self.code_len
    }

    /// Runs the loop from `init` (batch x code, row-major) with one objective per sample.
    /// `on_iteration` is called after every iteration (progress reporting).
    pub fn run(
        &mut self,
        init: &[B::Scalar],
        objectives: &[Objective],
        schedule: &Schedule,
        save_every: Option<usize>,
        on_iteration: &mut dyn FnMut(usize),
    ) -> Result<BatchResult<B::Scalar>> {
        let batch = self.batch();
        let b = &self.classifier.backend;
        ensure!(init.len() == batch * self.code_len, "initial codes: {} values for {batch} codes of {}", init.len(), self.code_len);
        ensure!(objectives.len() == batch, "{} objectives for a batch of {batch}", objectives.len());
        let obj_len = self.classifier.plan.blobs[self.objective_blob].len() / batch;
        let image_len = self.clf_len_per_sample();
        let mut result = BatchResult {
            images: vec![Vec::new(); batch],
            codes: vec![Vec::new(); batch],
            activations: vec![Vec::new(); batch],
            probabilities: vec![None; batch],
            stopped_at: vec![None; batch],
            failed: vec![None; batch],
            frames: Vec::new(),
        };
        let gen_in = self.generator.plan.inputs[0];
        let gen_out = self.generator.plan.last_output();
        let clf_in = self.classifier.plan.inputs[0];
        b.upload(&mut self.code, init)?;
        let mut seed_host = vec![B::Scalar::ZERO; obj_len * batch];
        for i in 0..schedule.iters {
            let mut active: Vec<bool> = (0..batch).map(|n| result.stopped_at[n].is_none() && result.failed[n].is_none()).collect();
            if !active.iter().any(|&a| a) {
                break;
            }
            // x0 = G(code); img = crop or resize of x0, in Φ's input space; a = objective(Φ(img))
            b.copy(&self.code, self.gen_state.value_mut(gen_in))?;
            self.generator.forward_from_inputs(&mut self.gen_state)?;
            self.view.forward(b, self.gen_state.value(gen_out), self.clf_state.value_mut(clf_in))?;
            self.classifier.forward_from_inputs(&mut self.clf_state)?;
            let values = b.download(self.clf_state.value(self.objective_blob))?;
            seed_host.iter_mut().for_each(|v| *v = B::Scalar::ZERO);
            for (n, obj) in objectives.iter().enumerate() {
                let row = &values[n * obj_len..(n + 1) * obj_len];
                if active[n] {
                    let a = obj.value(row);
                    if !a.is_finite() {
                        result.failed[n] = Some(format!("the objective is {a} at iteration {i}"));
                        active[n] = false;
                        continue;
                    }
                    result.activations[n].push(a);
                    obj.gradient(row, &mut seed_host[n * obj_len..(n + 1) * obj_len]);
                }
            }
            // g = d a / d code, through Φ, the view (conversion, crop or resize), then G.
            b.upload(&mut self.seed, &seed_host)?;
            self.classifier.start_backward(&mut self.clf_state)?;
            self.classifier.seed(&mut self.clf_state, self.objective_blob, &self.seed)?;
            self.classifier.finish_backward(&mut self.clf_state, false)?;
            b.zero(&mut self.gen_out_grad)?;
            let clf_grad = self.clf_state.grad(clf_in).context("the objective does not depend on the classifier's input")?;
            self.view.backward(b, clf_grad, &mut self.gen_out_grad)?;
            self.generator.start_backward(&mut self.gen_state)?;
            self.generator.seed(&mut self.gen_state, gen_out, &self.gen_out_grad)?;
            self.generator.finish_backward(&mut self.gen_state, false)?;
            let g = self.gen_state.grad(gen_in).context("the generator's output does not depend on its code")?;
            let mean_abs = b.mean_abs_rows(g, batch, self.code_len)?;

            // This iteration's image and code are the result for samples that stop here or
            // reach the end; an image is only fetched when some sample needs it.
            let last = i + 1 == schedule.iters;
            for n in 0..batch {
                if active[n] && !mean_abs[n].is_finite() {
                    result.failed[n] = Some(format!("the gradient is not finite at iteration {i}"));
                    active[n] = false;
                }
            }
            let vanished: Vec<bool> = mean_abs.iter().map(|m| *m == B::Scalar::ZERO).collect();
            let finishing: Vec<bool> = (0..batch).map(|n| active[n] && (last || vanished[n])).collect();
            let frame = save_every.is_some_and(|k| k > 0 && i % k == 0);
            if finishing.contains(&true) || frame {
                let images = b.download(self.clf_state.value(clf_in))?;
                let codes = b.download(&self.code)?;
                let probs = match self.prob_blob {
                    Some(p) => Some(b.download(self.clf_state.value(p))?),
                    None => None,
                };
                for n in (0..batch).filter(|&n| finishing[n]) {
                    result.images[n] = images[n * image_len..(n + 1) * image_len].to_vec();
                    result.codes[n] = codes[n * self.code_len..(n + 1) * self.code_len].to_vec();
                    if let (Some(p), Objective::Single(u)) = (&probs, &objectives[n]) {
                        result.probabilities[n] = Some(p[n * obj_len + u].to_f64());
                    }
                    if vanished[n] {
                        result.stopped_at[n] = Some(i);
                    }
                }
                if frame {
                    result.frames.push((0..batch).map(|n| images[n * image_len..(n + 1) * image_len].to_vec()).collect());
                }
            }
            // code += step / mean|g| * g; clamp to [0, U]; code *= decay. The last update
            // would only change a code nobody uses: the result is this iteration's pair.
            if !last {
                let step = schedule.step(i);
                let scale: Vec<Option<B::Scalar>> =
                    (0..batch).map(|n| (active[n] && !finishing[n]).then(|| B::Scalar::from_f64(step / mean_abs[n].to_f64()))).collect();
                b.dgn_update(&mut self.code, g, batch, self.code_len, &scale, self.upper.as_ref(), B::Scalar::from_f64(schedule.decay))?;
            }
            on_iteration(i);
        }
        Ok(result)
    }

    fn clf_len_per_sample(&self) -> usize {
        let clf_in = &self.classifier.plan.blobs[self.classifier.plan.inputs[0]];
        clf_in.len() / self.batch()
    }
}
