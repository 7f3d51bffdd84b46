//! The reverse-mode graph: a net definition compiled into a list of nodes with every blob
//! shape known, run forward in file order and backward in reverse.
//!
//! Blobs are single-assignment: each layer writes fresh buffers, so an in-place layer
//! (`top == bottom`, e.g. ReLU) leaves the earlier layer's output intact. "The output of
//! layer L" is therefore always what L itself produced, and backward has every input it
//! needs without Caffe's in-place bookkeeping.

use crate::device::{Backend, Cpu, FromMapped};
use crate::ir::shapes::checked_len;
pub use crate::ir::shapes::MAX_PLAN_BYTES;
pub use crate::ir::MAX_ELEMENTS;
use crate::ir::{compile_layer, Activation, EltwiseOp, NetDef};
use crate::ops::{Aux, Dx, Kernels};
use crate::real::Real;
use crate::rng::Rng;
use crate::tensor::fmt_shape;
use crate::weights::WeightsFile;
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::HashMap;

pub use crate::ir::Op;

pub type BlobId = usize;

#[derive(Clone, Debug)]
pub struct BlobInfo {
    pub name: String,
    pub shape: Vec<usize>,
}

impl BlobInfo {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A learnable (or stored) parameter blob a layer needs: Caffe's `blobs[index]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub layer: String,
    pub index: usize,
    pub shape: Vec<usize>,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub layer: String,
    pub type_name: &'static str,
    pub bottoms: Vec<BlobId>,
    pub tops: Vec<BlobId>,
    pub params: Vec<ParamSpec>,
    pub op: Op,
}

impl Node {
    /// Multiply-adds times two of the forward pass, for benchmarks and `info`.
    pub fn forward_flops(&self, plan: &Plan) -> u64 {
        self.op.matmul_flops().unwrap_or_else(|| self.tops.iter().map(|&t| plan.blobs[t].len() as u64).sum())
    }
}

/// A net compiled for one batch size: every node and blob shape, no weights yet.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub batch: usize,
    pub blobs: Vec<BlobInfo>,
    pub inputs: Vec<BlobId>,
    pub nodes: Vec<Node>,
}

/// Checks one blob or parameter shape against the limits and adds its bytes to `total`.
fn budget(total: &mut u64, shape: &[usize], what: impl FnOnce() -> String) -> Result<()> {
    let Some(n) = checked_len(shape) else {
        bail!("{}: shape {} is empty or has more than {MAX_ELEMENTS} elements", what(), fmt_shape(shape));
    };
    *total += 4 * n as u64;
    ensure!(*total <= MAX_PLAN_BYTES, "{}: the net's blobs and parameters need more than {MAX_PLAN_BYTES} bytes", what());
    Ok(())
}

impl Plan {
    /// How many node inputs read each blob.
    pub fn readers(&self) -> Vec<usize> {
        let mut readers = vec![0usize; self.blobs.len()];
        self.nodes.iter().flat_map(|n| &n.bottoms).for_each(|&b| readers[b] += 1);
        readers
    }

    /// Compiles `def` to run at batch size `batch`: the first dimension of every input is
    /// replaced by `batch`, and so is a Reshape's first dim when it equals the declared batch.
    pub fn new(def: &NetDef, batch: usize) -> Result<Plan> {
        ensure!(batch > 0, "batch size must be at least 1");
        ensure!(!def.inputs.is_empty(), "net '{}' declares no input", def.name);
        let declared_batch = def.inputs[0].shape.first().copied().unwrap_or(1);
        let mut plan = Plan { name: def.name.clone(), batch, blobs: vec![], inputs: vec![], nodes: vec![] };
        let mut by_name: HashMap<String, BlobId> = HashMap::new();
        let mut bytes = 0u64;
        for input in &def.inputs {
            ensure!(!input.shape.is_empty(), "input '{}' has no shape", input.name);
            let mut shape = input.shape.clone();
            shape[0] = batch;
            budget(&mut bytes, &shape, || format!("input '{}' at batch {batch}", input.name))?;
            let id = plan.add_blob(&input.name, shape);
            by_name.insert(input.name.clone(), id);
            plan.inputs.push(id);
        }
        for layer in &def.layers {
            let bottoms: Vec<BlobId> = layer
                .bottoms
                .iter()
                .map(|b| {
                    by_name
                        .get(b)
                        .copied()
                        .ok_or_else(|| anyhow!("layer '{}': bottom '{b}' is not produced by any earlier layer or input", layer.name))
                })
                .collect::<Result<_>>()?;
            let shapes: Vec<Vec<usize>> = bottoms.iter().map(|&b| plan.blobs[b].shape.clone()).collect();
            let (op, top_shapes, params) = compile_layer(layer, &shapes, declared_batch, batch)?;
            let what = |part: String| format!("layer '{}' ({}): {part}", layer.name, layer.kind.type_name());
            for (top, shape) in layer.tops.iter().zip(&top_shapes) {
                budget(&mut bytes, shape, || what(format!("top '{top}'")))?;
            }
            for (index, shape) in params.iter().enumerate() {
                budget(&mut bytes, shape, || what(format!("parameter {index}")))?;
            }
            ensure!(
                layer.tops.len() == top_shapes.len(),
                "layer '{}' ({}): expects {} top(s), has {}",
                layer.name,
                layer.kind.type_name(),
                top_shapes.len(),
                layer.tops.len()
            );
            let tops: Vec<BlobId> = layer
                .tops
                .iter()
                .zip(top_shapes)
                .map(|(name, shape)| {
                    let id = plan.add_blob(name, shape);
                    by_name.insert(name.clone(), id);
                    id
                })
                .collect();
            let params =
                params.into_iter().enumerate().map(|(index, shape)| ParamSpec { layer: layer.name.clone(), index, shape }).collect();
            plan.nodes.push(Node { layer: layer.name.clone(), type_name: layer.kind.type_name(), bottoms, tops, params, op });
        }
        Ok(plan)
    }

    fn add_blob(&mut self, name: &str, shape: Vec<usize>) -> BlobId {
        self.blobs.push(BlobInfo { name: name.to_string(), shape });
        self.blobs.len() - 1
    }

    pub fn param_specs(&self) -> impl Iterator<Item = &ParamSpec> {
        self.nodes.iter().flat_map(|n| n.params.iter())
    }

    pub fn param_count(&self) -> usize {
        self.param_specs().map(|p| p.len()).sum()
    }

    /// The blob a layer produced itself (its first top), before any later in-place layer
    /// rewrote that blob name. A net input's name gives the input; the name of another top
    /// of a layer with several (a Slice's parts, ONNX Split's outputs) gives that top.
    pub fn layer_output(&self, name: &str) -> Result<BlobId> {
        if let Some(node) = self.nodes.iter().find(|n| n.layer == name) {
            return Ok(node.tops[0]);
        }
        if let Some(&id) = self.inputs.iter().find(|&&i| self.blobs[i].name == name) {
            return Ok(id);
        }
        let other_top = self.nodes.iter().filter(|n| n.tops.len() > 1).flat_map(|n| &n.tops[1..]).find(|&&t| self.blobs[t].name == name);
        if let Some(&id) = other_top {
            return Ok(id);
        }
        let names: Vec<&str> = self.nodes.iter().map(|n| n.layer.as_str()).collect();
        bail!("net '{}' has no layer '{name}' (layers: {})", self.name, names.join(", "))
    }

    /// The newest blob with this name: after in-place layers, their result (e.g. "fc6" after
    /// relu6 is the post-ReLU code DGN-AM encodes images with).
    pub fn blob_by_name(&self, name: &str) -> Result<BlobId> {
        self.blobs.iter().rposition(|b| b.name == name).with_context(|| format!("net '{}' has no blob '{name}'", self.name))
    }

    /// The Softmax node reading this blob directly, if any (fc8 -> prob).
    pub fn softmax_of(&self, blob: BlobId) -> Option<BlobId> {
        self.nodes.iter().find(|n| n.type_name == "Softmax" && n.bottoms == [blob]).map(|n| n.tops[0])
    }

    /// The last layer's output: what `forward` reports by default.
    pub fn last_output(&self) -> BlobId {
        self.nodes.last().map(|n| n.tops[0]).unwrap_or(self.inputs[0])
    }

    pub fn flops(&self) -> u64 {
        self.nodes.iter().map(|n| n.forward_flops(self)).sum()
    }
}

/// Stored shapes may carry extra leading 1s (V1 InnerProduct weights are [1,1,out,in]).
pub fn same_shape_ignoring_leading_ones(a: &[usize], b: &[usize]) -> bool {
    let strip = |s: &[usize]| s.iter().position(|&d| d != 1).map_or(0, |p| s.len() - p);
    let (la, lb) = (strip(a), strip(b));
    la == lb && a[a.len() - la..] == b[b.len() - lb..]
}

/// Per-pass memory on the backend: blob values, gradients, and what backward needs from
/// forward. Buffers are allocated once and reused by every later pass.
pub struct State<B: Backend> {
    values: Vec<Option<B::Buf>>,
    grads: Vec<Option<B::Buf>>,
    live: Vec<bool>,
    aux: Vec<Aux<B>>,
    /// Filled by `backward(.., weight_grads = true)`: one per parameter of each node.
    pub param_grads: Vec<Vec<B::Buf>>,
}

impl<B: Backend> State<B> {
    /// A blob's value after `forward`.
    pub fn value(&self, id: BlobId) -> &B::Buf {
        self.values[id].as_ref().expect("a blob has no buffer only during a pass or when Net::fuse_relus fused it away")
    }

    /// A blob's buffer to write into (a net input, before `forward_from_inputs`).
    pub fn value_mut(&mut self, id: BlobId) -> &mut B::Buf {
        self.values[id].as_mut().expect("a blob has no buffer only during a pass or when Net::fuse_relus fused it away")
    }

    /// A blob's gradient after `backward`, if the seeds reach it.
    pub fn grad(&self, id: BlobId) -> Option<&B::Buf> {
        if self.live[id] {
            self.grads[id].as_ref()
        } else {
            None
        }
    }
}

/// A plan with its weights on a backend.
pub struct Net<B: Backend> {
    pub plan: Plan,
    pub backend: B,
    params: Vec<Vec<B::Param>>,
    /// What the passes run, in order: the plan's nodes, less the ReLUs `fuse_relus` folded
    /// into the layer before them.
    steps: Vec<Step>,
}

/// One node as the passes run it: plan node `node`, with its own op and tops unless a
/// following in-place ReLU was fused into it (`Net::fuse_relus`), which gives the op that
/// ReLU's slope and the node the ReLU's top.
#[derive(Clone, Debug)]
struct Step {
    node: usize,
    op: Op,
    tops: Vec<BlobId>,
}

/// The CPU net most code wants: f32, weights used in place from a mapped file.
pub type CpuNet<'w, T = f32> = Net<Cpu<'w, T>>;

impl<B: Kernels> Net<B> {
    /// Builds a net, asking `provide` for each parameter blob in order; the length of what
    /// it returns is checked against the spec.
    pub fn new(plan: Plan, backend: B, mut provide: impl FnMut(&B, &ParamSpec) -> Result<(B::Param, usize)>) -> Result<Self> {
        let mut params = Vec::with_capacity(plan.nodes.len());
        for node in &plan.nodes {
            let mut mine = Vec::new();
            for spec in &node.params {
                let (data, len) = provide(&backend, spec)?;
                ensure!(
                    len == spec.len(),
                    "layer '{}': parameter {} has {len} values, needs {} for shape {}",
                    spec.layer,
                    spec.index,
                    spec.len(),
                    fmt_shape(&spec.shape)
                );
                mine.push(data);
            }
            params.push(mine);
        }
        let steps = plan.nodes.iter().enumerate().map(|(node, n)| Step { node, op: n.op.clone(), tops: n.tops.clone() }).collect();
        Ok(Net { plan, backend, params, steps })
    }

    /// Folds each in-place ReLU with a slope of at least 0 into the convolution or
    /// deconvolution before it, where the backend's kernels can run it in their own passes
    /// (`ConvKernels::fuses_relu`): the forward pass applies it to each image's output while
    /// that is in cache, the backward-data pass masks each image's output gradient by the
    /// output's signs before using it. The results are the separate layers' bit for bit.
    ///
    /// The layer's own output before the ReLU is then never computed, so a layer is left
    /// alone when that blob is in `keep` (what the caller reads: an objective on `conv5`
    /// reads conv5's output before relu5) or read by any other layer. Returns how many
    /// ReLUs were fused. Call it before `state`.
    pub fn fuse_relus(&mut self, keep: &[BlobId]) -> usize {
        if !self.backend.fuses_relu() {
            return 0;
        }
        let plan = &self.plan;
        let readers = plan.readers();
        let mut fused = vec![false; self.steps.len()];
        for (r, done) in fused.iter_mut().enumerate() {
            let (node, tops) = (&plan.nodes[self.steps[r].node], self.steps[r].tops.clone());
            let Op::Relu { slope } = self.steps[r].op else { continue };
            // A NaN slope is not at least 0 either.
            let nonnegative = slope >= 0.0;
            if !nonnegative || node.bottoms.len() != 1 || tops.len() != 1 {
                continue;
            }
            let b = node.bottoms[0];
            let in_place = plan.blobs[b].name == plan.blobs[tops[0]].name;
            if !in_place || readers[b] != 1 || keep.contains(&b) || plan.inputs.contains(&b) {
                continue;
            }
            let Some(p) = self.steps[..r].iter().position(|s| s.tops == [b]) else { continue };
            let (Op::Conv { relu, .. } | Op::Deconv { relu, .. }) = &mut self.steps[p].op else { continue };
            if relu.is_some() {
                continue;
            }
            *relu = Some(slope);
            self.steps[p].tops = tops;
            *done = true;
        }
        self.drop_steps(&fused)
    }

    /// Fuses each SiLU, a Sigmoid whose input `x` and output `s` a following Eltwise PROD
    /// multiplies (in either order), into one step (`Op::Silu`) where the backend runs it
    /// (`ActivationKernels::fuses_silu`). The fused step computes the same values in the
    /// same order, so the bits do not change; for that `x` must have no other reader (whose
    /// gradient could land between the Mul's and the Sigmoid's) and `s` none but the Mul.
    /// Blobs in `keep` are left as they are. Returns how many were fused.
    pub fn fuse_silus(&mut self, keep: &[BlobId]) -> usize {
        if !self.backend.fuses_silu() {
            return 0;
        }
        let plan = &self.plan;
        let readers = plan.readers();
        let mut fused = vec![false; self.steps.len()];
        for r in 0..self.steps.len() {
            let step = &self.steps[r];
            let (node, tops) = (&plan.nodes[step.node], step.tops.clone());
            if !matches!(step.op, Op::Activation(Activation::Sigmoid)) || node.bottoms.len() != 1 || tops.len() != 1 {
                continue;
            }
            let (x, s) = (node.bottoms[0], tops[0]);
            let apart = x != s && readers[x] == 2 && readers[s] == 1;
            if !apart || [x, s].iter().any(|b| keep.contains(b) || plan.inputs.contains(b)) {
                continue;
            }
            let mul = self.steps[r + 1..].iter().position(|m| {
                let bottoms = &plan.nodes[m.node].bottoms;
                let pair = bottoms[..] == [x, s] || bottoms[..] == [s, x];
                pair && m.tops.len() == 1 && matches!(&m.op, Op::Eltwise { op: EltwiseOp::Prod, .. })
            });
            let Some(m) = mul.map(|m| r + 1 + m) else { continue };
            if fused[m] {
                continue;
            }
            let out = self.steps[m].tops.clone();
            self.steps[r].op = Op::Silu;
            self.steps[r].tops = out;
            fused[m] = true;
        }
        self.drop_steps(&fused)
    }

    /// Removes the steps flagged in `fused` (folded into another); returns how many.
    fn drop_steps(&mut self, fused: &[bool]) -> usize {
        let mut flags = fused.iter();
        self.steps.retain(|_| !flags.next().copied().unwrap_or(false));
        fused.iter().filter(|&&f| f).count()
    }

    /// The op of each step the passes run, in order (after any fusing).
    pub fn step_ops(&self) -> Vec<&Op> {
        self.steps.iter().map(|s| &s.op).collect()
    }

    /// The layers whose output is fused away by `fuse_relus`, with the ReLU now run in their passes.
    pub fn fused_layers(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| matches!(s.op, Op::Conv { relu: Some(_), .. } | Op::Deconv { relu: Some(_), .. }))
            .map(|s| self.plan.nodes[s.node].layer.as_str())
            .collect()
    }

    /// Random weights at a scale where activations neither vanish nor explode (He-style
    /// normal weights, small random biases and statistics), for tests and benchmarks.
    pub fn random(def: &NetDef, batch: usize, seed: u64, backend: B) -> Result<Self> {
        let plan = Plan::new(def, batch)?;
        let kinds: HashMap<String, &'static str> = plan.nodes.iter().map(|n| (n.layer.clone(), n.type_name)).collect();
        let mut rng = Rng::new(seed);
        Net::new(plan, backend, |b, spec| {
            let n = spec.len();
            let v: Vec<f32> = match (kinds[&spec.layer], spec.index) {
                ("BatchNorm", 1) | ("Scale", 0) => (0..n).map(|_| rng.uniform(0.5, 1.5) as f32).collect(),
                ("BatchNorm", 2) => vec![1.0; n],
                (_, 0) if spec.shape.len() >= 2 => {
                    let fan_in: usize = spec.shape[1..].iter().product();
                    rng.normal_vec_f32(n, (2.0 / fan_in.max(1) as f64).sqrt())
                }
                _ => rng.normal_vec_f32(n, 0.1),
            };
            Ok((b.param_from_host(&v)?, n))
        })
    }

    pub fn param(&self, node: usize, index: usize) -> &B::Param {
        &self.params[node][index]
    }

    /// A parameter to change in place (the gradient check moves one entry at a time).
    pub fn param_mut(&mut self, node: usize, index: usize) -> &mut B::Param {
        &mut self.params[node][index]
    }

    /// Every parameter of one node, as `Backend::forward` takes them.
    pub fn node_params(&self, node: usize) -> &[B::Param] {
        &self.params[node]
    }

    /// Buffers for every blob of the plan.
    pub fn state(&self) -> Result<State<B>> {
        let blobs = &self.plan.blobs;
        // Blobs no step writes (the outputs of layers whose ReLU was fused) get no buffer.
        let mut written = vec![false; blobs.len()];
        self.plan.inputs.iter().chain(self.steps.iter().flat_map(|s| &s.tops)).for_each(|&id| written[id] = true);
        Ok(State {
            values: (0..blobs.len())
                .map(|id| if written[id] { self.backend.alloc(blobs[id].len()).map(Some) } else { Ok(None) })
                .collect::<Result<_>>()?,
            grads: blobs.iter().map(|_| None).collect(),
            live: vec![false; blobs.len()],
            aux: self.plan.nodes.iter().map(|_| Aux::default()).collect(),
            param_grads: self.plan.nodes.iter().map(|_| Vec::new()).collect(),
        })
    }

    /// Runs every layer in file order. `inputs` are host data in the order the net declares
    /// its inputs.
    pub fn forward(&self, st: &mut State<B>, inputs: &[&[B::Scalar]]) -> Result<()> {
        ensure!(
            inputs.len() == self.plan.inputs.len(),
            "net '{}' takes {} input(s), got {}",
            self.plan.name,
            self.plan.inputs.len(),
            inputs.len()
        );
        for (&id, x) in self.plan.inputs.iter().zip(inputs) {
            let b = &self.plan.blobs[id];
            ensure!(x.len() == b.len(), "input '{}' needs {} values (shape {}), got {}", b.name, b.len(), fmt_shape(&b.shape), x.len());
            self.backend.upload(st.values[id].as_mut().context("input buffer missing")?, x)?;
        }
        self.forward_from_inputs(st)
    }

    /// Runs every layer on whatever the input buffers already hold (the synthesis loop
    /// writes them on the device).
    pub fn forward_from_inputs(&self, st: &mut State<B>) -> Result<()> {
        for step in &self.steps {
            let (i, node) = (step.node, &self.plan.nodes[step.node]);
            // Tops are fresh blobs, never bottoms, so they can be taken out while bottoms are read.
            let mut tops: Vec<B::Buf> =
                step.tops.iter().map(|&t| st.values[t].take().context("blob buffer missing")).collect::<Result<_>>()?;
            let bottoms: Vec<&B::Buf> =
                node.bottoms.iter().map(|&b| st.values[b].as_ref().context("blob buffer missing")).collect::<Result<_>>()?;
            let r = crate::ops::forward(&self.backend, &step.op, &self.params[i], &bottoms, &mut tops, &mut st.aux[i]);
            for (&t, v) in step.tops.iter().zip(tops) {
                st.values[t] = Some(v);
            }
            r.with_context(|| format!("layer '{}' ({}) forward", node.layer, node.type_name))?;
        }
        Ok(())
    }

    /// Marks a blob's gradient live, allocating or zeroing it the first time in a pass.
    fn touch(&self, st: &mut State<B>, id: BlobId) -> Result<()> {
        self.touch_to(st, id, false).map(|_| ())
    }

    /// `touch`, but where `may_overwrite` the first time in a pass leaves a kept buffer
    /// as it is and says the layer about to write it overwrites it.
    fn touch_to(&self, st: &mut State<B>, id: BlobId, may_overwrite: bool) -> Result<Dx> {
        if st.live[id] {
            return Ok(Dx::Add);
        }
        st.live[id] = true;
        match st.grads[id].as_mut() {
            Some(_) if may_overwrite => return Ok(Dx::Overwrite),
            Some(g) => self.backend.zero(g)?,
            None => st.grads[id] = Some(self.backend.alloc(self.plan.blobs[id].len())?),
        }
        Ok(if may_overwrite { Dx::Overwrite } else { Dx::Add })
    }

    /// Back-propagates `seeds` (host gradients of the objective with respect to some blobs)
    /// to every blob they depend on; see `seed_device` to seed with a device buffer.
    pub fn backward(&self, st: &mut State<B>, seeds: &[(BlobId, &[B::Scalar])], weight_grads: bool) -> Result<()> {
        self.start_backward(st)?;
        for &(id, g) in seeds {
            let b = self.plan.blobs.get(id).context("seed blob does not exist")?;
            ensure!(g.len() == b.len(), "gradient for '{}' has {} values, the blob has {}", b.name, g.len(), b.len());
            let mut buf = self.backend.alloc(g.len())?;
            self.backend.upload(&mut buf, g)?;
            self.seed(st, id, &buf)?;
        }
        self.finish_backward(st, weight_grads)
    }

    /// Clears every gradient: the first step of a backward pass.
    pub fn start_backward(&self, st: &mut State<B>) -> Result<()> {
        st.live.iter_mut().for_each(|l| *l = false);
        Ok(())
    }

    /// Adds `grad` into the gradient of blob `id`.
    pub fn seed(&self, st: &mut State<B>, id: BlobId, grad: &B::Buf) -> Result<()> {
        self.touch(st, id)?;
        self.backend.add_assign(st.grads[id].as_mut().context("gradient missing")?, grad)
    }

    /// Runs the nodes in reverse from the seeded gradients. Input gradients end up in
    /// `st.grad(input)`; with `weight_grads`, parameter gradients in `st.param_grads`.
    pub fn finish_backward(&self, st: &mut State<B>, weight_grads: bool) -> Result<()> {
        for step in self.steps.iter().rev() {
            let node = &self.plan.nodes[step.node];
            if !step.tops.iter().any(|&t| st.live[t]) {
                continue;
            }
            for &t in &step.tops {
                self.touch(st, t)?;
            }
            // A bottom no later layer reached yet is overwritten by this one, not zeroed
            // first; one that this layer reads twice (its uses are added up) or a Copy's
            // (its tops are added into it) is zeroed as before.
            let mut to = Vec::with_capacity(node.bottoms.len());
            for &b in &node.bottoms {
                let shared = node.bottoms.iter().filter(|&&o| o == b).count() > 1;
                to.push(self.touch_to(st, b, !shared && !matches!(step.op, Op::Copy))?);
            }
            let r = self.backward_node(step, st, weight_grads, &to);
            r.with_context(|| format!("layer '{}' ({}) backward", node.layer, node.type_name))?;
        }
        Ok(())
    }

    fn backward_node(&self, step: &Step, st: &mut State<B>, weight_grads: bool, to: &[Dx]) -> Result<()> {
        let (i, node) = (step.node, &self.plan.nodes[step.node]);
        if let Op::Copy = step.op {
            let mut dx = st.grads[node.bottoms[0]].take().context("gradient missing")?;
            let r = step.tops.iter().try_for_each(|&t| match st.grads[t].as_ref() {
                Some(g) if st.live[t] => self.backend.add_assign(&mut dx, g),
                _ => Ok(()),
            });
            st.grads[node.bottoms[0]] = Some(dx);
            return r;
        }
        if weight_grads {
            if st.param_grads[i].len() != node.params.len() {
                st.param_grads[i] = node.params.iter().map(|s| self.backend.alloc(s.len())).collect::<Result<_>>()?;
            } else {
                for g in st.param_grads[i].iter_mut() {
                    self.backend.zero(g)?;
                }
            }
        }
        // Take each bottom's gradient out to write it; a blob read twice by the same layer
        // gets a separate buffer per use, added afterwards.
        let mut dxs: Vec<B::Buf> = Vec::with_capacity(node.bottoms.len());
        let mut taken = Vec::with_capacity(node.bottoms.len());
        for &b in &node.bottoms {
            let shared = node.bottoms.iter().filter(|&&o| o == b).count() > 1;
            taken.push(!shared);
            dxs.push(if shared {
                self.backend.alloc(self.plan.blobs[b].len())?
            } else {
                st.grads[b].take().context("gradient missing")?
            });
        }
        let mut pgrads = std::mem::take(&mut st.param_grads[i]);
        let r = {
            let x: Vec<&B::Buf> =
                node.bottoms.iter().map(|&b| st.values[b].as_ref().context("blob buffer missing")).collect::<Result<_>>()?;
            let y = st.values[step.tops[0]].as_ref().context("blob buffer missing")?;
            let dy: Vec<&B::Buf> = step.tops.iter().map(|&t| st.grads[t].as_ref().context("gradient missing")).collect::<Result<_>>()?;
            let dp = if weight_grads { Some(pgrads.as_mut_slice()) } else { None };
            crate::ops::backward_into(&self.backend, &step.op, &self.params[i], &x, y, &dy, &st.aux[i], &mut dxs, to, dp)
        };
        st.param_grads[i] = pgrads;
        for ((&b, dx), was_taken) in node.bottoms.iter().zip(dxs).zip(taken) {
            if was_taken {
                st.grads[b] = Some(dx);
            } else {
                self.backend.add_assign(st.grads[b].as_mut().context("gradient missing")?, &dx)?;
            }
        }
        r
    }
}

impl<B: Kernels> Net<B> {
    /// The net stored in a weights file, compiled for `batch`, on `backend`: the CPU uses the
    /// mapped weights in place, a GPU uploads them once.
    pub fn from_weights<'w>(file: &'w WeightsFile, batch: usize, backend: B) -> Result<Self>
    where
        B: FromMapped<'w>,
    {
        let def = file.netdef()?;
        let plan = Plan::new(&def, batch).with_context(|| format!("{}", file.path.display()))?;
        Net::new(plan, backend, |dev, spec| {
            let data = stored_param(file, spec)?;
            Ok((dev.param_from_mapped(data)?, data.len()))
        })
    }
}

impl<'w, T: Real> Net<Cpu<'w, T>> {
    /// Host copies of a blob's value.
    pub fn values(&self, st: &State<Cpu<'w, T>>, id: BlobId) -> Vec<T> {
        st.value(id).clone()
    }
}

/// Fails on the first NaN or infinity, saying where (`what`) and at which index.
pub fn ensure_finite(data: &[f32], what: impl FnOnce() -> String) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(i) => bail!("{} holds a non-finite value ({}) at index {i}", what(), data[i]),
        None => Ok(()),
    }
}

/// A parameter's data in a weights file, its shape checked against what the net needs.
pub fn stored_param<'w>(file: &'w WeightsFile, spec: &ParamSpec) -> Result<&'w [f32]> {
    let (entry, data) = file
        .tensor(&spec.layer, spec.index as u32)
        .with_context(|| format!("{}: layer '{}' has no weights blob {}", file.path.display(), spec.layer, spec.index))?;
    ensure!(
        same_shape_ignoring_leading_ones(&entry.shape, &spec.shape),
        "{}: layer '{}' blob {} has shape {}, the net needs {}",
        file.path.display(),
        spec.layer,
        spec.index,
        fmt_shape(&entry.shape),
        fmt_shape(&spec.shape)
    );
    ensure_finite(data, || format!("{}: layer '{}' blob {}", file.path.display(), spec.layer, spec.index))?;
    Ok(data)
}

/// A unit of a blob: index `unit` along axis 1, at spatial position (x, y) for 4-axis blobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitRef {
    pub unit: usize,
    pub xy: Option<(usize, usize)>,
}

/// The flat index of `unit` within one sample of a blob of shape `shape` (batch axis first).
/// A conv unit without a position takes the center of its map, as DGN-AM does.
pub fn unit_offset(shape: &[usize], u: UnitRef, blob: &str) -> Result<usize> {
    ensure!(shape.len() >= 2, "blob '{blob}' of shape {} has no unit axis", fmt_shape(shape));
    let channels = shape[1];
    ensure!(u.unit < channels, "unit {} is out of range: '{blob}' has {channels} units", u.unit);
    let spatial: usize = shape[2..].iter().product();
    if shape.len() == 4 {
        let (h, w) = (shape[2], shape[3]);
        let (x, y) = u.xy.unwrap_or((w / 2, h / 2));
        ensure!(x < w && y < h, "position {x},{y} is outside the {w}x{h} map of '{blob}'");
        Ok(u.unit * spatial + y * w + x)
    } else {
        ensure!(u.xy.is_none(), "'{blob}' of shape {} has no spatial position for --xy", fmt_shape(shape));
        Ok(u.unit * spatial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_ones_are_ignored_only_in_front() {
        assert!(same_shape_ignoring_leading_ones(&[1, 1, 500, 800], &[500, 800]));
        assert!(same_shape_ignoring_leading_ones(&[1, 1, 1, 10], &[10]));
        assert!(!same_shape_ignoring_leading_ones(&[500, 800, 1], &[500, 800]));
        assert!(!same_shape_ignoring_leading_ones(&[800, 500], &[500, 800]));
        assert!(same_shape_ignoring_leading_ones(&[1], &[1, 1]));
    }

    fn plan_error(text: &str) -> String {
        let def = crate::caffe::netdef::parse_netdef(text).unwrap();
        format!("{:#}", Plan::new(&def, 1).unwrap_err())
    }

    fn net(input: &str, layers: &str) -> String {
        format!("input: 'data' input_shape {{ {input} }} {layers}")
    }

    /// Slice's tops take their shapes from the points; points that do not fit the tops are
    /// refused by Caffe's rules.
    #[test]
    fn slice_shapes_follow_the_points_and_bad_points_are_refused() {
        let text = "input: 'x' input_shape { dim: 1 dim: 6 dim: 4 dim: 4 }\n\
            layer { name: 's' type: 'Slice' bottom: 'x' top: 'a' top: 'b' top: 'c' slice_param { axis: 1 slice_point: 1 slice_point: 4 } }\n";
        let plan = Plan::new(&crate::caffe::netdef::parse_netdef(text).unwrap(), 2).unwrap();
        let shapes: Vec<&[usize]> = plan.nodes[0].tops.iter().map(|&t| &plan.blobs[t].shape[..]).collect();
        assert_eq!(shapes, [&[2, 1, 4, 4][..], &[2, 3, 4, 4], &[2, 2, 4, 4]]);
        for (params, message) in [
            ("slice_point: 2", "1 slice points for 3 tops"),
            ("slice_point: 4 slice_point: 2", "must increase strictly"),
            ("slice_point: 2 slice_point: 6", "must increase strictly"),
            ("axis: 2", "4 values along the axis do not split into 3 equal parts"),
        ] {
            let e = plan_error(&format!(
                "input: 'x' input_shape {{ dim: 1 dim: 6 dim: 4 dim: 4 }}\n\
                 layer {{ name: 's' type: 'Slice' bottom: 'x' top: 'a' top: 'b' top: 'c' slice_param {{ {params} }} }}"
            ));
            assert!(e.contains(message), "{params}: {e}");
        }
    }

    #[test]
    fn absurd_sizes_are_errors_naming_the_layer() {
        let ip = |n: &str| {
            format!("layer {{ name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param {{ num_output: {n} }} }}")
        };
        let e = plan_error(&net("dim: 1 dim: 10", &ip("1000000000000")));
        assert!(e.contains("layer 'fc' (InnerProduct): top 'fc': shape 1x1000000000000 is empty or has more"), "{e}");
        let e = plan_error(&net("dim: 1 dim: 100000", &ip("100000")));
        assert!(e.contains("layer 'fc' (InnerProduct): parameter 0: shape 100000x100000"), "{e}");
        let e = plan_error(&net("dim: 1 dim: 1000000 dim: 1000000", ""));
        assert!(e.contains("input 'data' at batch 1: shape 1x1000000x1000000"), "{e}");
        // Products that overflow usize.
        let e = plan_error(&net("dim: 1 dim: 4294967296 dim: 4294967296 dim: 4294967296", ""));
        assert!(e.contains("more than 2147483648 elements"), "{e}");
        let reshape = "layer { name: 'r' type: 'Reshape' bottom: 'data' top: 'r' reshape_param { shape { dim: 4294967296 dim: 4294967296 dim: 4294967296 dim: -1 } } }";
        assert!(plan_error(&net("dim: 1 dim: 2", reshape)).contains("layer 'r' (Reshape)"));
        // Each blob within the limit, all of them together not.
        let relus: String = (0..5).map(|i| format!("layer {{ name: 'r{i}' type: 'ReLU' bottom: 'data' top: 'x{i}' }}")).collect();
        let e = plan_error(&net("dim: 1 dim: 1073741824", &relus));
        assert!(e.contains("layer 'r3' (ReLU): top 'x3': the net's blobs and parameters need more than 17179869184 bytes"), "{e}");
    }

    #[test]
    fn huge_geometry_is_an_error_not_an_overflow() {
        let layer = |kind: &str, block: &str, param: &str| {
            format!("layer {{ name: 'l' type: '{kind}' bottom: 'data' top: 'l' {block} {{ {param} }} }}")
        };
        let big = "9223372036854775807";
        for (kind, block, param) in [
            ("Convolution", "convolution_param", format!("num_output: 1 kernel_size: 3 pad: {big}")),
            ("Convolution", "convolution_param", format!("num_output: 1 kernel_size: {big} dilation: 4")),
            ("Deconvolution", "convolution_param", format!("num_output: 1 kernel_size: 3 stride: {big}")),
            ("Deconvolution", "convolution_param", format!("num_output: 1 kernel_size: 3 pad: {big}")),
            ("Pooling", "pooling_param", format!("kernel_size: {big} pad: 9223372036854775806")),
            ("Pooling", "pooling_param", format!("kernel_size: 3 pad: 1 stride: {big}")),
            ("Convolution", "convolution_param", "num_output: 4294967296 kernel_size: 65536".to_string()),
        ] {
            let text = net("dim: 1 dim: 1 dim: 5 dim: 5", &layer(kind, block, &param));
            let def = crate::caffe::netdef::parse_netdef(&text).unwrap();
            // Some of these are legal but absurd, some plainly wrong: never a panic.
            if let Err(e) = Plan::new(&def, 1) {
                assert!(format!("{e:#}").contains("layer 'l'"), "{e:#}");
            }
        }
    }

    #[test]
    fn unit_offsets_default_to_the_center() {
        assert_eq!(unit_offset(&[2, 10], UnitRef { unit: 3, xy: None }, "fc8").unwrap(), 3);
        assert_eq!(unit_offset(&[1, 4, 5, 7], UnitRef { unit: 1, xy: None }, "c").unwrap(), 35 + 2 * 7 + 3);
        assert_eq!(unit_offset(&[1, 4, 5, 7], UnitRef { unit: 1, xy: Some((6, 4)) }, "c").unwrap(), 35 + 4 * 7 + 6);
        assert!(unit_offset(&[1, 4, 5, 7], UnitRef { unit: 4, xy: None }, "c").is_err());
        assert!(unit_offset(&[1, 4, 5, 7], UnitRef { unit: 0, xy: Some((7, 0)) }, "c").is_err());
    }
}
