//! The reverse-mode graph: a net definition compiled into a list of nodes with every blob
//! shape known, run forward in file order and backward in reverse.
//!
//! Blobs are single-assignment: each layer writes fresh buffers, so an in-place layer
//! (`top == bottom`, e.g. ReLU) leaves the earlier layer's output intact. "The output of
//! layer L" is therefore always what L itself produced, and backward has every input it
//! needs without Caffe's in-place bookkeeping.

use crate::caffe::{EltwiseOp, LayerDef, LayerKind, LrnParam, NetDef, PoolMethod};
use crate::backend::{Backend, Cpu};
use crate::ops::conv::ConvGeom;
use crate::ops::pool::PoolGeom;
use crate::real::Real;
use crate::rng::Rng;
use crate::tensor::fmt_shape;
use crate::weights::WeightsFile;
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::HashMap;

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

/// What a node computes, with every size resolved; backends match on this.
#[derive(Clone, Debug)]
pub enum Op {
    Conv { geom: ConvGeom, bias: bool },
    Deconv { geom: ConvGeom, bias: bool },
    InnerProduct { rows: usize, k: usize, n: usize, bias: bool },
    Relu { slope: f32 },
    /// Dropout at inference, Reshape, Flatten and each top of a Split: the data passes unchanged.
    Copy,
    MaxPool(PoolGeom),
    AvePool(PoolGeom),
    Lrn { dims: [usize; 4], param: LrnParam },
    Softmax { outer: usize, channels: usize, inner: usize },
    Concat { outer: usize, inner: usize, channels: Vec<usize> },
    Eltwise { op: EltwiseOp, coeffs: Vec<f32> },
    BatchNorm { outer: usize, channels: usize, inner: usize, eps: f32 },
    Scale { outer: usize, channels: usize, inner: usize, bias: bool },
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
        match &self.op {
            Op::Conv { geom, .. } | Op::Deconv { geom, .. } => geom.flops(),
            Op::InnerProduct { rows, k, n, .. } => 2 * (*rows as u64) * (*k as u64) * (*n as u64),
            _ => self.tops.iter().map(|&t| plan.blobs[t].len() as u64).sum(),
        }
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

fn canonical_axis(axis: i64, rank: usize, layer: &str) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    ensure!(a >= 0 && (a as usize) < rank, "layer '{layer}': axis {axis} is out of range for a {rank}-axis blob");
    Ok(a as usize)
}

fn product(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// No single blob or parameter may hold more than this many elements (Caffe counts in an
/// `int`), and a plan's blobs and parameters together may not exceed `MAX_PLAN_BYTES`: a
/// hostile net definition fails in `Plan::new`, not in an allocation.
pub const MAX_ELEMENTS: usize = 1 << 31;
pub const MAX_PLAN_BYTES: u64 = 1 << 34;

/// The element count of a shape, if every axis is nonempty and the count within `MAX_ELEMENTS`.
fn checked_len(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| if d == 0 { None } else { n.checked_mul(d) }).filter(|&n| n <= MAX_ELEMENTS)
}

/// Checks one blob or parameter shape against the limits and adds its bytes to `total`.
fn budget(total: &mut u64, shape: &[usize], what: impl FnOnce() -> String) -> Result<()> {
    let Some(n) = checked_len(shape) else {
        bail!("{}: shape {} is empty or has more than {MAX_ELEMENTS} elements", what(), fmt_shape(shape));
    };
    *total += 4 * n as u64;
    ensure!(
        *total <= MAX_PLAN_BYTES,
        "{}: the net's blobs and parameters need more than {MAX_PLAN_BYTES} bytes",
        what()
    );
    Ok(())
}

impl Plan {
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
                    by_name.get(b).copied().ok_or_else(|| {
                        anyhow!("layer '{}': bottom '{b}' is not produced by any earlier layer or input", layer.name)
                    })
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
            let params = params
                .into_iter()
                .enumerate()
                .map(|(index, shape)| ParamSpec { layer: layer.name.clone(), index, shape })
                .collect();
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
    /// rewrote that blob name. A net input's name gives the input.
    pub fn layer_output(&self, name: &str) -> Result<BlobId> {
        if let Some(node) = self.nodes.iter().find(|n| n.layer == name) {
            return Ok(node.tops[0]);
        }
        if let Some(&id) = self.inputs.iter().find(|&&i| self.blobs[i].name == name) {
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

type Compiled = (Op, Vec<Vec<usize>>, Vec<Vec<usize>>);

fn compile_layer(layer: &LayerDef, shapes: &[Vec<usize>], declared_batch: usize, batch: usize) -> Result<Compiled> {
    let name = layer.name.as_str();
    let kind = layer.kind.type_name();
    let one_bottom = || -> Result<&Vec<usize>> {
        ensure!(shapes.len() == 1, "layer '{name}' ({kind}): needs exactly one bottom, has {}", shapes.len());
        Ok(&shapes[0])
    };
    let four_d = || -> Result<[usize; 4]> {
        let s = one_bottom()?;
        ensure!(s.len() == 4, "layer '{name}' ({kind}): needs a 4-axis NxCxHxW bottom, got {}", fmt_shape(s));
        Ok([s[0], s[1], s[2], s[3]])
    };
    let ctx = || format!("layer '{name}' ({kind})");
    Ok(match &layer.kind {
        LayerKind::Convolution(p) => {
            let [n, c, h, w] = four_d()?;
            let geom = ConvGeom::new(n, c, h, w, p.num_output, p.kernel, p.stride, p.pad, p.dilation, p.group)
                .with_context(ctx)?;
            let mut params = vec![vec![p.num_output, c / p.group, p.kernel[0], p.kernel[1]]];
            if p.bias_term {
                params.push(vec![p.num_output]);
            }
            (Op::Conv { geom, bias: p.bias_term }, vec![vec![n, p.num_output, geom.out_h, geom.out_w]], params)
        }
        LayerKind::Deconvolution(p) => {
            let [n, c, h, w] = four_d()?;
            let geom = ConvGeom::for_deconv(n, c, h, w, p.num_output, p.kernel, p.stride, p.pad, p.dilation, p.group)
                .with_context(ctx)?;
            let mut params = vec![vec![c, p.num_output / p.group, p.kernel[0], p.kernel[1]]];
            if p.bias_term {
                params.push(vec![p.num_output]);
            }
            (Op::Deconv { geom, bias: p.bias_term }, vec![vec![n, p.num_output, geom.in_h, geom.in_w]], params)
        }
        LayerKind::InnerProduct(p) => {
            let s = one_bottom()?;
            let axis = canonical_axis(p.axis, s.len(), name)?;
            let (rows, k) = (product(&s[..axis]), product(&s[axis..]));
            let mut top = s[..axis].to_vec();
            top.push(p.num_output);
            let mut params = vec![vec![p.num_output, k]];
            if p.bias_term {
                params.push(vec![p.num_output]);
            }
            (Op::InnerProduct { rows, k, n: p.num_output, bias: p.bias_term }, vec![top], params)
        }
        LayerKind::ReLU { negative_slope } => (Op::Relu { slope: *negative_slope }, vec![one_bottom()?.clone()], vec![]),
        LayerKind::Dropout => (Op::Copy, vec![one_bottom()?.clone()], vec![]),
        LayerKind::Split => {
            let s = one_bottom()?;
            (Op::Copy, vec![s.clone(); layer.tops.len().max(1)], vec![])
        }
        LayerKind::Pooling(p) => {
            let [n, c, h, w] = four_d()?;
            let geom = if p.global {
                PoolGeom::global(n, c, h, w)
            } else {
                PoolGeom::new(n, c, h, w, p.kernel, p.stride, p.pad).with_context(ctx)?
            };
            let top = vec![n, c, geom.out_h, geom.out_w];
            let op = match p.method {
                PoolMethod::Max => Op::MaxPool(geom),
                PoolMethod::Ave => Op::AvePool(geom),
            };
            (op, vec![top], vec![])
        }
        LayerKind::Lrn(p) => {
            let dims = four_d()?;
            ensure!(p.local_size % 2 == 1, "layer '{name}' (LRN): local_size {} must be odd", p.local_size);
            (Op::Lrn { dims, param: p.clone() }, vec![dims.to_vec()], vec![])
        }
        LayerKind::Softmax { axis } => {
            let s = one_bottom()?;
            let a = canonical_axis(*axis, s.len(), name)?;
            let op = Op::Softmax { outer: product(&s[..a]), channels: s[a], inner: product(&s[a + 1..]) };
            (op, vec![s.clone()], vec![])
        }
        LayerKind::Reshape(p) => (Op::Copy, vec![reshape(name, one_bottom()?, p, declared_batch, batch)?], vec![]),
        LayerKind::Flatten { axis, end_axis } => {
            let s = one_bottom()?;
            let a = canonical_axis(*axis, s.len(), name)?;
            let e = canonical_axis(*end_axis, s.len(), name)?;
            ensure!(a <= e, "layer '{name}' (Flatten): axis {axis} comes after end_axis {end_axis}");
            let mut top = s[..a].to_vec();
            top.push(product(&s[a..=e]));
            top.extend_from_slice(&s[e + 1..]);
            (Op::Copy, vec![top], vec![])
        }
        LayerKind::Concat { axis } => {
            ensure!(!shapes.is_empty(), "layer '{name}' (Concat): no bottoms");
            let first = &shapes[0];
            let a = canonical_axis(*axis, first.len(), name)?;
            for s in shapes {
                let same = s.len() == first.len()
                    && s.iter().zip(first).enumerate().all(|(i, (x, y))| i == a || x == y);
                ensure!(
                    same,
                    "layer '{name}' (Concat): bottom shapes {} and {} differ off axis {a}",
                    fmt_shape(first),
                    fmt_shape(s)
                );
            }
            let channels: Vec<usize> = shapes.iter().map(|s| s[a]).collect();
            let mut top = first.clone();
            top[a] = channels.iter().sum();
            let op = Op::Concat { outer: product(&first[..a]), inner: product(&first[a + 1..]), channels };
            (op, vec![top], vec![])
        }
        LayerKind::Eltwise(p) => {
            ensure!(shapes.len() >= 2, "layer '{name}' (Eltwise): needs at least two bottoms");
            for s in &shapes[1..] {
                ensure!(
                    s == &shapes[0],
                    "layer '{name}' (Eltwise): bottom shapes {} and {} differ",
                    fmt_shape(&shapes[0]),
                    fmt_shape(s)
                );
            }
            ensure!(
                p.coeffs.is_empty() || (p.op == EltwiseOp::Sum && p.coeffs.len() == shapes.len()),
                "layer '{name}' (Eltwise): coefficients need the SUM operation and one per bottom"
            );
            (Op::Eltwise { op: p.op, coeffs: p.coeffs.clone() }, vec![shapes[0].clone()], vec![])
        }
        LayerKind::BatchNorm { eps } => {
            let s = one_bottom()?;
            ensure!(s.len() >= 2, "layer '{name}' (BatchNorm): needs a bottom with channels, got {}", fmt_shape(s));
            let (outer, channels, inner) = (s[0], s[1], product(&s[2..]));
            let op = Op::BatchNorm { outer, channels, inner, eps: *eps };
            (op, vec![s.clone()], vec![vec![channels], vec![channels], vec![1]])
        }
        LayerKind::Scale(p) => {
            let s = one_bottom()?;
            let a = canonical_axis(p.axis, s.len(), name)?;
            let end = if p.num_axes < 0 { s.len() } else { a + p.num_axes as usize };
            ensure!(end <= s.len(), "layer '{name}' (Scale): num_axes {} runs past the bottom's axes", p.num_axes);
            let pshape = s[a..end].to_vec();
            let op = Op::Scale { outer: product(&s[..a]), channels: product(&pshape), inner: product(&s[end..]), bias: p.bias_term };
            let mut params = vec![pshape.clone()];
            if p.bias_term {
                params.push(pshape);
            }
            (op, vec![s.clone()], params)
        }
    })
}

fn reshape(name: &str, bottom: &[usize], p: &crate::caffe::ReshapeParam, declared_batch: usize, batch: usize) -> Result<Vec<usize>> {
    let rank = bottom.len();
    let start = if p.axis < 0 { p.axis + rank as i64 + 1 } else { p.axis };
    ensure!(start >= 0 && start as usize <= rank, "layer '{name}' (Reshape): axis {} out of range", p.axis);
    let start = start as usize;
    let end = if p.num_axes < 0 { rank } else { start + p.num_axes as usize };
    ensure!(end <= rank, "layer '{name}' (Reshape): num_axes {} out of range", p.num_axes);
    let mut dims = Vec::new();
    let mut infer = None;
    for (i, &d) in p.dims.iter().enumerate() {
        match d {
            0 => dims.push(
                *bottom
                    .get(start + i)
                    .with_context(|| format!("layer '{name}' (Reshape): dim 0 copies axis {} which does not exist", start + i))?,
            ),
            -1 => {
                ensure!(infer.is_none(), "layer '{name}' (Reshape): more than one -1 dim");
                infer = Some(dims.len());
                dims.push(1);
            }
            d if d > 0 => {
                // The declared batch stands for whatever batch the net runs at.
                let d = d as usize;
                dims.push(if start == 0 && i == 0 && d == declared_batch { batch } else { d });
            }
            d => bail!("layer '{name}' (Reshape): invalid dim {d}"),
        }
    }
    let mut top = bottom[..start].to_vec();
    top.extend_from_slice(&dims);
    top.extend_from_slice(&bottom[end..]);
    let have = product(bottom);
    let want = checked_len(&top).with_context(|| format!("layer '{name}' (Reshape): {} is too large", fmt_shape(&top)))?;
    if let Some(i) = infer {
        ensure!(want > 0 && have.is_multiple_of(want), "layer '{name}' (Reshape): cannot infer a dim for {} from {}", fmt_shape(&top), fmt_shape(bottom));
        top[start + i] = have / want;
    }
    ensure!(
        product(&top) == have,
        "layer '{name}' (Reshape): {} has {} values, bottom {} has {have}",
        fmt_shape(&top),
        product(&top),
        fmt_shape(bottom)
    );
    Ok(top)
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
    aux: Vec<B::Aux>,
    /// Filled by `backward(.., weight_grads = true)`: one per parameter of each node.
    pub param_grads: Vec<Vec<B::Buf>>,
}

impl<B: Backend> State<B> {
    /// A blob's value after `forward`.
    pub fn value(&self, id: BlobId) -> &B::Buf {
        self.values[id].as_ref().expect("blob buffers are only taken out during a pass")
    }

    /// A blob's buffer to write into (a net input, before `forward_from_inputs`).
    pub fn value_mut(&mut self, id: BlobId) -> &mut B::Buf {
        self.values[id].as_mut().expect("blob buffers are only taken out during a pass")
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
}

/// The CPU net most code wants: f32, weights used in place from a mapped file.
pub type CpuNet<'w, T = f32> = Net<Cpu<'w, T>>;

impl<B: Backend> Net<B> {
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
        Ok(Net { plan, backend, params })
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

    /// Every parameter of one node, as `Backend::forward` takes them.
    pub fn node_params(&self, node: usize) -> &[B::Param] {
        &self.params[node]
    }

    /// Buffers for every blob of the plan.
    pub fn state(&self) -> Result<State<B>> {
        let blobs = &self.plan.blobs;
        Ok(State {
            values: blobs.iter().map(|b| self.backend.alloc(b.len()).map(Some)).collect::<Result<_>>()?,
            grads: blobs.iter().map(|_| None).collect(),
            live: vec![false; blobs.len()],
            aux: self.plan.nodes.iter().map(|_| B::Aux::default()).collect(),
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
            ensure!(
                x.len() == b.len(),
                "input '{}' needs {} values (shape {}), got {}",
                b.name,
                b.len(),
                fmt_shape(&b.shape),
                x.len()
            );
            self.backend.upload(st.values[id].as_mut().context("input buffer missing")?, x)?;
        }
        self.forward_from_inputs(st)
    }

    /// Runs every layer on whatever the input buffers already hold (the synthesis loop
    /// writes them on the device).
    pub fn forward_from_inputs(&self, st: &mut State<B>) -> Result<()> {
        for (i, node) in self.plan.nodes.iter().enumerate() {
            // Tops are fresh blobs, never bottoms, so they can be taken out while bottoms are read.
            let mut tops: Vec<B::Buf> = node.tops.iter().map(|&t| st.values[t].take().context("blob buffer missing")).collect::<Result<_>>()?;
            let bottoms: Vec<&B::Buf> = node.bottoms.iter().map(|&b| st.values[b].as_ref().context("blob buffer missing")).collect::<Result<_>>()?;
            let r = if let Op::Copy = node.op {
                tops.iter_mut().try_for_each(|t| self.backend.copy(bottoms[0], t))
            } else {
                self.backend.forward(&node.op, &self.params[i], &bottoms, &mut tops, &mut st.aux[i])
            };
            for (&t, v) in node.tops.iter().zip(tops) {
                st.values[t] = Some(v);
            }
            r.with_context(|| format!("layer '{}' ({}) forward", node.layer, node.type_name))?;
        }
        Ok(())
    }

    /// Marks a blob's gradient live, allocating or zeroing it the first time in a pass.
    fn touch(&self, st: &mut State<B>, id: BlobId) -> Result<()> {
        if !st.live[id] {
            st.live[id] = true;
            match st.grads[id].as_mut() {
                Some(g) => self.backend.zero(g)?,
                None => st.grads[id] = Some(self.backend.alloc(self.plan.blobs[id].len())?),
            }
        }
        Ok(())
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
        for (i, node) in self.plan.nodes.iter().enumerate().rev() {
            if !node.tops.iter().any(|&t| st.live[t]) {
                continue;
            }
            for &t in &node.tops {
                self.touch(st, t)?;
            }
            for &b in &node.bottoms {
                self.touch(st, b)?;
            }
            let r = self.backward_node(i, node, st, weight_grads);
            r.with_context(|| format!("layer '{}' ({}) backward", node.layer, node.type_name))?;
        }
        Ok(())
    }

    fn backward_node(&self, i: usize, node: &Node, st: &mut State<B>, weight_grads: bool) -> Result<()> {
        if let Op::Copy = node.op {
            let mut dx = st.grads[node.bottoms[0]].take().context("gradient missing")?;
            let r = node.tops.iter().try_for_each(|&t| match st.grads[t].as_ref() {
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
            dxs.push(if shared { self.backend.alloc(self.plan.blobs[b].len())? } else { st.grads[b].take().context("gradient missing")? });
        }
        let mut pgrads = std::mem::take(&mut st.param_grads[i]);
        let r = {
            let x: Vec<&B::Buf> = node.bottoms.iter().map(|&b| st.values[b].as_ref().context("blob buffer missing")).collect::<Result<_>>()?;
            let y = st.values[node.tops[0]].as_ref().context("blob buffer missing")?;
            let dy = st.grads[node.tops[0]].as_ref().context("gradient missing")?;
            let dp = if weight_grads { Some(pgrads.as_mut_slice()) } else { None };
            self.backend.backward(&node.op, &self.params[i], &x, y, dy, &st.aux[i], &mut dxs, dp)
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

impl<'w, T: Real> Net<Cpu<'w, T>> {
    /// The net stored in a weights file, compiled for `batch`, its weights used in place.
    pub fn from_weights(file: &'w WeightsFile, batch: usize) -> Result<Self> {
        let def = file.netdef()?;
        let plan = Plan::new(&def, batch).with_context(|| format!("{}", file.path.display()))?;
        Net::new(plan, Cpu::new(), |cpu, spec| {
            let data = stored_param(file, spec)?;
            Ok((cpu.param_from_mapped(data), data.len()))
        })
    }

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

    #[test]
    fn absurd_sizes_are_errors_naming_the_layer() {
        let ip = |n: &str| format!("layer {{ name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param {{ num_output: {n} }} }}");
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
