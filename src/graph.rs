//! The reverse-mode graph: a net definition compiled into a list of nodes with every blob
//! shape known, run forward in file order and backward in reverse.
//!
//! Blobs are single-assignment: each layer writes fresh buffers, so an in-place layer
//! (`top == bottom`, e.g. ReLU) leaves the earlier layer's output intact. "The output of
//! layer L" is therefore always what L itself produced, and backward has every input it
//! needs without Caffe's in-place bookkeeping.

use crate::caffe::{EltwiseOp, LayerDef, LayerKind, LrnParam, NetDef, PoolMethod};
use crate::ops::conv::{self, ConvGeom};
use crate::ops::pool::{self, PoolGeom};
use crate::ops::{activation, inner_product, lrn, norm, shape, softmax};
use crate::real::Real;
use crate::rng::Rng;
use crate::tensor::fmt_shape;
use crate::weights::WeightsFile;
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::borrow::Cow;
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

#[derive(Clone, Debug)]
enum Op {
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
    op: Op,
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

impl Plan {
    /// Compiles `def` to run at batch size `batch`: the first dimension of every input is
    /// replaced by `batch`, and so is a Reshape's first dim when it equals the declared batch.
    pub fn new(def: &NetDef, batch: usize) -> Result<Plan> {
        ensure!(batch > 0, "batch size must be at least 1");
        ensure!(!def.inputs.is_empty(), "net '{}' declares no input", def.name);
        let declared_batch = def.inputs[0].shape.first().copied().unwrap_or(1);
        let mut plan = Plan { name: def.name.clone(), batch, blobs: vec![], inputs: vec![], nodes: vec![] };
        let mut by_name: HashMap<String, BlobId> = HashMap::new();
        for input in &def.inputs {
            ensure!(!input.shape.is_empty(), "input '{}' has no shape", input.name);
            let mut shape = input.shape.clone();
            shape[0] = batch;
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
    let (have, want) = (product(bottom), product(&top));
    if let Some(i) = infer {
        ensure!(want > 0 && have % want == 0, "layer '{name}' (Reshape): cannot infer a dim for {} from {}", fmt_shape(&top), fmt_shape(bottom));
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

/// Per-pass memory: blob values, gradients and what backward needs from forward.
pub struct State<T> {
    pub values: Vec<Vec<T>>,
    pub grads: Vec<Vec<T>>,
    live: Vec<bool>,
    aux: Vec<Aux<T>>,
    /// Filled by `backward(.., weight_grads = true)`: one per parameter of each node.
    pub param_grads: Vec<Vec<Vec<T>>>,
}

enum Aux<T> {
    None,
    Argmax(Vec<u32>),
    Scale(Vec<T>),
}

/// A plan with its weights. Weights borrowed from a mapped f32 file are used in place.
pub struct Net<'w, T: Real> {
    pub plan: Plan,
    params: Vec<Vec<Cow<'w, [T]>>>,
}

impl<'w, T: Real> Net<'w, T> {
    /// Builds a net, asking `provide` for each parameter blob in order; the length of what
    /// it returns is checked against the spec.
    pub fn new(plan: Plan, mut provide: impl FnMut(&ParamSpec) -> Result<Cow<'w, [T]>>) -> Result<Self> {
        let mut params = Vec::with_capacity(plan.nodes.len());
        for node in &plan.nodes {
            let mut mine = Vec::new();
            for spec in &node.params {
                let data = provide(spec)?;
                ensure!(
                    data.len() == spec.len(),
                    "layer '{}': parameter {} has {} values, needs {} for shape {}",
                    spec.layer,
                    spec.index,
                    data.len(),
                    spec.len(),
                    fmt_shape(&spec.shape)
                );
                mine.push(data);
            }
            params.push(mine);
        }
        Ok(Net { plan, params })
    }

    /// The net stored in a weights file, compiled for `batch`, its weights used in place.
    pub fn from_weights(file: &'w WeightsFile, batch: usize) -> Result<Self> {
        let def = file.netdef()?;
        let plan = Plan::new(&def, batch).with_context(|| format!("{}", file.path.display()))?;
        Net::new(plan, |spec| {
            let (entry, data) = file.tensor(&spec.layer, spec.index as u32).with_context(|| {
                format!("{}: layer '{}' has no weights blob {}", file.path.display(), spec.layer, spec.index)
            })?;
            ensure!(
                same_shape_ignoring_leading_ones(&entry.shape, &spec.shape),
                "{}: layer '{}' blob {} has shape {}, the net needs {}",
                file.path.display(),
                spec.layer,
                spec.index,
                fmt_shape(&entry.shape),
                fmt_shape(&spec.shape)
            );
            Ok(T::from_f32_slice(data))
        })
    }

    /// Random weights at the right scale for activations to neither vanish nor explode
    /// (He-style normal weights, small random biases and statistics), for tests and benchmarks.
    pub fn random(def: &NetDef, batch: usize, seed: u64) -> Result<Net<'static, T>> {
        let plan = Plan::new(def, batch)?;
        let kinds: HashMap<String, &'static str> = plan.nodes.iter().map(|n| (n.layer.clone(), n.type_name)).collect();
        let mut rng = Rng::new(seed);
        Net::new(plan, |spec| {
            let n = spec.len();
            let v: Vec<T> = match (kinds[&spec.layer], spec.index) {
                ("BatchNorm", 1) | ("Scale", 0) => (0..n).map(|_| T::from_f64(rng.uniform(0.5, 1.5))).collect(),
                ("BatchNorm", 2) => vec![T::ONE; n],
                (_, 0) if spec.shape.len() >= 2 => {
                    let fan_in: usize = spec.shape[1..].iter().product();
                    let std = (2.0 / fan_in.max(1) as f64).sqrt();
                    (0..n).map(|_| T::from_f64(rng.normal() * std)).collect()
                }
                _ => (0..n).map(|_| T::from_f64(rng.normal() * 0.1)).collect(),
            };
            Ok(Cow::Owned(v))
        })
    }

    pub fn param(&self, node: usize, index: usize) -> &[T] {
        &self.params[node][index]
    }

    pub fn state(&self) -> State<T> {
        let blobs = &self.plan.blobs;
        State {
            values: blobs.iter().map(|b| vec![T::ZERO; b.len()]).collect(),
            grads: vec![Vec::new(); blobs.len()],
            live: vec![false; blobs.len()],
            aux: self.plan.nodes.iter().map(|_| Aux::None).collect(),
            param_grads: vec![Vec::new(); self.plan.nodes.len()],
        }
    }

    /// Runs every layer in file order. `inputs` are in the order the net declares them.
    pub fn forward(&self, st: &mut State<T>, inputs: &[&[T]]) -> Result<()> {
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
            st.values[id].copy_from_slice(x);
        }
        for (i, node) in self.plan.nodes.iter().enumerate() {
            // Tops are fresh blobs, never bottoms, so they can be taken out while bottoms are read.
            let mut tops: Vec<Vec<T>> = node.tops.iter().map(|&t| std::mem::take(&mut st.values[t])).collect();
            let bottoms: Vec<&[T]> = node.bottoms.iter().map(|&b| st.values[b].as_slice()).collect();
            let aux = self.forward_node(i, node, &bottoms, &mut tops);
            st.aux[i] = aux;
            for (&t, v) in node.tops.iter().zip(tops) {
                st.values[t] = v;
            }
        }
        Ok(())
    }

    fn forward_node(&self, i: usize, node: &Node, x: &[&[T]], y: &mut [Vec<T>]) -> Aux<T> {
        let p = &self.params[i];
        let bias = |has: bool| if has { Some(&*p[1]) } else { None };
        match &node.op {
            Op::Conv { geom, bias: b } => conv::conv_forward(geom, x[0], &p[0], bias(*b), &mut y[0]),
            Op::Deconv { geom, bias: b } => conv::deconv_forward(geom, x[0], &p[0], bias(*b), &mut y[0]),
            Op::InnerProduct { rows, k, n, bias: b } => {
                inner_product::inner_product_forward(*rows, *k, *n, x[0], &p[0], bias(*b), &mut y[0])
            }
            Op::Relu { slope } => activation::relu_forward(T::from_f32(*slope), x[0], &mut y[0]),
            Op::Copy => y.iter_mut().for_each(|t| t.copy_from_slice(x[0])),
            Op::MaxPool(g) => {
                let mut argmax = vec![0u32; g.output_len()];
                pool::max_pool_forward(g, x[0], &mut y[0], &mut argmax);
                return Aux::Argmax(argmax);
            }
            Op::AvePool(g) => pool::ave_pool_forward(g, x[0], &mut y[0]),
            Op::Lrn { dims, param } => {
                let mut scale = vec![T::ZERO; x[0].len()];
                lrn::lrn_forward(*dims, param, x[0], &mut y[0], &mut scale);
                return Aux::Scale(scale);
            }
            Op::Softmax { outer, channels, inner } => softmax::softmax_forward(*outer, *channels, *inner, x[0], &mut y[0]),
            Op::Concat { outer, inner, channels } => shape::concat_forward(*outer, *inner, channels, x, &mut y[0]),
            Op::Eltwise { op, coeffs } => {
                let coeffs: Vec<T> = coeffs.iter().map(|&c| T::from_f32(c)).collect();
                let mut argmax = vec![0u32; if *op == EltwiseOp::Max { x[0].len() } else { 0 }];
                shape::eltwise_forward(*op, &coeffs, x, &mut y[0], &mut argmax);
                return Aux::Argmax(argmax);
            }
            Op::BatchNorm { outer, channels, inner, eps } => norm::batch_norm_forward(
                *outer, *channels, *inner, &p[0], &p[1], p[2][0], T::from_f32(*eps), x[0], &mut y[0],
            ),
            Op::Scale { outer, channels, inner, bias: b } => {
                norm::scale_forward(*outer, *channels, *inner, x[0], &p[0], bias(*b), &mut y[0])
            }
        }
        Aux::None
    }

    /// Back-propagates `seeds` (gradients of the objective with respect to some blobs) to
    /// every blob they depend on; input gradients land in `st.grads[input]`. With
    /// `weight_grads`, parameter gradients land in `st.param_grads`.
    pub fn backward(&self, st: &mut State<T>, seeds: &[(BlobId, &[T])], weight_grads: bool) -> Result<()> {
        st.live.iter_mut().for_each(|l| *l = false);
        for &(id, g) in seeds {
            let b = self.plan.blobs.get(id).context("seed blob does not exist")?;
            ensure!(g.len() == b.len(), "gradient for '{}' has {} values, the blob has {}", b.name, g.len(), b.len());
            touch(st, id, b.len());
            st.grads[id].iter_mut().zip(g).for_each(|(d, &s)| *d += s);
        }
        for (i, node) in self.plan.nodes.iter().enumerate().rev() {
            if !node.tops.iter().any(|&t| st.live[t]) {
                continue;
            }
            for &t in &node.tops {
                touch(st, t, self.plan.blobs[t].len());
            }
            if weight_grads {
                st.param_grads[i] = node.params.iter().map(|s| vec![T::ZERO; s.len()]).collect();
            }
            let mut dxs: Vec<Vec<T>> = Vec::with_capacity(node.bottoms.len());
            for &b in &node.bottoms {
                touch(st, b, self.plan.blobs[b].len());
                // A blob read twice by the same layer gets a separate buffer per use.
                dxs.push(if node.bottoms.iter().filter(|&&o| o == b).count() > 1 {
                    vec![T::ZERO; self.plan.blobs[b].len()]
                } else {
                    std::mem::take(&mut st.grads[b])
                });
            }
            let mut pgrads = std::mem::take(&mut st.param_grads[i]);
            self.backward_node(i, node, st, &mut dxs, if weight_grads { Some(&mut pgrads) } else { None });
            st.param_grads[i] = pgrads;
            for (&b, dx) in node.bottoms.iter().zip(dxs) {
                if st.grads[b].is_empty() {
                    st.grads[b] = dx;
                } else {
                    st.grads[b].iter_mut().zip(&dx).for_each(|(a, d)| *a += *d);
                }
            }
        }
        Ok(())
    }

    fn backward_node(&self, i: usize, node: &Node, st: &State<T>, dx: &mut [Vec<T>], pg: Option<&mut Vec<Vec<T>>>) {
        let p = &self.params[i];
        let x: Vec<&[T]> = node.bottoms.iter().map(|&b| st.values[b].as_slice()).collect();
        let y = &st.values[node.tops[0]];
        let dy = &st.grads[node.tops[0]];
        match &node.op {
            Op::Conv { geom, bias } => {
                conv::conv_backward_data(geom, dy, &p[0], &mut dx[0]);
                if let Some(pg) = pg {
                    let (dw, db) = split_weight_bias(pg, *bias);
                    conv::conv_backward_weights(geom, x[0], dy, dw, db);
                }
            }
            Op::Deconv { geom, bias } => {
                conv::deconv_backward_data(geom, dy, &p[0], &mut dx[0]);
                if let Some(pg) = pg {
                    let (dw, db) = split_weight_bias(pg, *bias);
                    conv::deconv_backward_weights(geom, x[0], dy, dw, db);
                }
            }
            Op::InnerProduct { rows, k, n, bias } => {
                inner_product::inner_product_backward_data(*rows, *k, *n, dy, &p[0], &mut dx[0]);
                if let Some(pg) = pg {
                    let (dw, db) = split_weight_bias(pg, *bias);
                    inner_product::inner_product_backward_weights(*rows, *k, *n, x[0], dy, dw, db);
                }
            }
            Op::Relu { slope } => activation::relu_backward(T::from_f32(*slope), x[0], dy, &mut dx[0]),
            Op::Copy => {
                for &t in &node.tops {
                    if st.live[t] {
                        dx[0].iter_mut().zip(&st.grads[t]).for_each(|(a, &g)| *a += g);
                    }
                }
            }
            Op::MaxPool(g) => {
                if let Aux::Argmax(a) = &st.aux[i] {
                    pool::max_pool_backward(g, dy, a, &mut dx[0]);
                }
            }
            Op::AvePool(g) => pool::ave_pool_backward(g, dy, &mut dx[0]),
            Op::Lrn { dims, param } => {
                if let Aux::Scale(s) = &st.aux[i] {
                    lrn::lrn_backward(*dims, param, x[0], y, s, dy, &mut dx[0]);
                }
            }
            Op::Softmax { outer, channels, inner } => softmax::softmax_backward(*outer, *channels, *inner, y, dy, &mut dx[0]),
            Op::Concat { outer, inner, channels } => {
                let mut refs: Vec<&mut [T]> = dx.iter_mut().map(|v| v.as_mut_slice()).collect();
                shape::concat_backward(*outer, *inner, channels, dy, &mut refs);
            }
            Op::Eltwise { op, coeffs } => {
                let coeffs: Vec<T> = coeffs.iter().map(|&c| T::from_f32(c)).collect();
                let argmax: &[u32] = match &st.aux[i] {
                    Aux::Argmax(a) => a,
                    _ => &[],
                };
                let mut refs: Vec<&mut [T]> = dx.iter_mut().map(|v| v.as_mut_slice()).collect();
                shape::eltwise_backward(*op, &coeffs, &x, argmax, dy, &mut refs);
            }
            Op::BatchNorm { outer, channels, inner, eps } => {
                let eps = T::from_f32(*eps);
                norm::batch_norm_backward_data(*outer, *channels, *inner, &p[1], p[2][0], eps, dy, &mut dx[0]);
                if let Some(pg) = pg {
                    let (dmean, rest) = pg.split_at_mut(1);
                    norm::batch_norm_backward_weights(
                        *outer, *channels, *inner, &p[0], &p[1], p[2][0], eps, x[0], dy, &mut dmean[0], &mut rest[0],
                    );
                }
            }
            Op::Scale { outer, channels, inner, bias } => {
                norm::scale_backward_data(*outer, *channels, *inner, &p[0], dy, &mut dx[0]);
                if let Some(pg) = pg {
                    let (dw, db) = split_weight_bias(pg, *bias);
                    norm::scale_backward_weights(*outer, *channels, *inner, x[0], dy, dw, db);
                }
            }
        }
    }
}

/// Marks a blob's gradient live, allocating (or zeroing) it the first time in a pass.
fn touch<T: Real>(st: &mut State<T>, id: BlobId, len: usize) {
    if !st.live[id] {
        st.live[id] = true;
        if st.grads[id].len() == len {
            st.grads[id].iter_mut().for_each(|v| *v = T::ZERO);
        } else {
            st.grads[id] = vec![T::ZERO; len];
        }
    }
}

fn split_weight_bias<T>(pg: &mut [Vec<T>], bias: bool) -> (&mut [T], Option<&mut [T]>) {
    let (w, rest) = pg.split_at_mut(1);
    (&mut w[0], if bias { Some(&mut rest[0][..]) } else { None })
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

    #[test]
    fn unit_offsets_default_to_the_center() {
        assert_eq!(unit_offset(&[2, 10], UnitRef { unit: 3, xy: None }, "fc8").unwrap(), 3);
        assert_eq!(unit_offset(&[1, 4, 5, 7], UnitRef { unit: 1, xy: None }, "c").unwrap(), 35 + 2 * 7 + 3);
        assert_eq!(unit_offset(&[1, 4, 5, 7], UnitRef { unit: 1, xy: Some((6, 4)) }, "c").unwrap(), 35 + 4 * 7 + 6);
        assert!(unit_offset(&[1, 4, 5, 7], UnitRef { unit: 4, xy: None }, "c").is_err());
        assert!(unit_offset(&[1, 4, 5, 7], UnitRef { unit: 0, xy: Some((7, 0)) }, "c").is_err());
    }
}
