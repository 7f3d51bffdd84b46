//! ONNX nodes into Caffe-style layers. Each emitted layer is shape-checked with the IR's own
//! rules as it is added, so an op whose ONNX semantics differ from the engine's for the
//! shapes at hand (pooling rounding, softmax axes) is refused instead of computed wrongly.

use super::proto::{Dim, Graph, Model, Node, TensorProto, Values, FLOAT, INT64};
use super::shape_values::{self as sv, IntValue};
use crate::caffe::{Blob, LayerBlobs};
use crate::ir::{
    compile_layer, Activation, ConvParam, EltwiseOp, EltwiseParam, InnerProductParam, InputDef, LayerDef, LayerKind, LrnParam, LrnRegion,
    NetDef, PadParam, PoolMethod, PoolParam, ReshapeParam, RoundMode, ScaleParam,
};
use crate::tensor::fmt_shape;
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::{HashMap, HashSet};

/// A translated model: the net definition and each learnable layer's blobs, in Caffe's order.
pub struct Imported {
    pub def: NetDef,
    pub layers: Vec<LayerBlobs>,
    pub opset: i64,
}

pub fn import(model: &Model) -> Result<Imported> {
    ensure!(
        super::OPSETS.contains(&model.opset),
        "opset {} is not supported (this build reads opsets {} to {})",
        model.opset,
        super::OPSETS.start(),
        super::OPSETS.end()
    );
    let mut b = Builder::new(&model.graph, model.opset)?;
    for node in &model.graph.nodes {
        b.node(node)?;
    }
    ensure!(!b.layers.is_empty(), "the graph computes nothing the engine can run");
    for out in &model.graph.outputs {
        ensure!(
            !b.ints.contains_key(&out.name),
            "graph output '{}' is a shape value (integers worked out at conversion), not a tensor the engine computes",
            out.name
        );
        ensure!(b.shapes.contains_key(&out.name), "graph output '{}' is not computed by any node", out.name);
    }
    let name = if model.graph.name.is_empty() { "onnx".to_string() } else { model.graph.name.clone() };
    let layers = b
        .layers
        .iter()
        .zip(b.blobs)
        .filter(|(_, blobs)| !blobs.is_empty())
        .map(|(l, blobs)| LayerBlobs { name: l.name.clone(), type_name: l.kind.type_name().to_string(), blobs })
        .collect();
    Ok(Imported { def: NetDef { name, inputs: b.inputs, layers: b.layers }, layers, opset: model.opset })
}

struct Builder {
    opset: i64,
    declared_batch: usize,
    inputs: Vec<InputDef>,
    consts: HashMap<String, TensorProto>,
    /// Shapes at the declared batch of every tensor computed so far.
    shapes: HashMap<String, Vec<usize>>,
    /// The layer that produced each tensor.
    producer: HashMap<String, usize>,
    /// How many node inputs and graph outputs read each tensor.
    uses: HashMap<String, usize>,
    /// The op types of the nodes reading each tensor.
    readers: HashMap<String, Vec<String>>,
    layers: Vec<LayerDef>,
    blobs: Vec<Vec<Blob>>,
    /// Zero padding of H and W by a Pad node, left for the Conv or AveragePool reading it.
    pending_pads: HashMap<String, (String, [usize; 2])>,
    /// Integer values computed from `Shape`, evaluated at conversion (they make no layers).
    ints: HashMap<String, IntValue>,
    /// The tensors a Gemm with transA 1 reads as A.
    trans_a: HashSet<String>,
    /// The input of a Transpose (perm [1, 0]) left for the transA Gemm reading it to cancel.
    pending_transposes: HashMap<String, String>,
}

/// The window attributes Conv, ConvTranspose and the pools share.
struct Sliding {
    stride: [usize; 2],
    /// Top, left, bottom, right.
    pads: [usize; 4],
    dilation: [usize; 2],
    group: usize,
}

impl Sliding {
    /// The pads as the engine's symmetric padding and what is left over on each side (for
    /// a `Pad` layer before the window): (pad, before, after), pairs [height, width].
    fn split(&self) -> ([usize; 2], [usize; 2], [usize; 2]) {
        let p = self.pads;
        let pad = [p[0].min(p[2]), p[1].min(p[3])];
        (pad, [p[0] - pad[0], p[1] - pad[1]], [p[2] - pad[0], p[3] - pad[1]])
    }
}

fn signed(pair: [usize; 2]) -> [i64; 2] {
    pair.map(|v| v as i64)
}

fn f32s<'t>(t: &'t TensorProto, what: &str) -> Result<&'t [f32]> {
    match &t.values {
        Values::F32(v) => Ok(v),
        Values::I64(_) => bail!("{what} '{}' holds integers, not floats", t.name),
    }
}

fn pair(values: Option<&[i64]>, default: i64, what: &str) -> Result<[usize; 2]> {
    match values {
        None => Ok([default as usize; 2]),
        Some([h, w]) if *h >= 0 && *w >= 0 => Ok([*h as usize, *w as usize]),
        Some(v) => bail!("{what} {v:?}: only 2-D (two non-negative values) is supported"),
    }
}

impl Builder {
    fn new(graph: &Graph, opset: i64) -> Result<Builder> {
        let consts: HashMap<String, TensorProto> = graph.initializers.iter().map(|t| (t.name.clone(), t.clone())).collect();
        let mut uses = HashMap::new();
        let mut readers: HashMap<String, Vec<String>> = HashMap::new();
        let mut trans_a = HashSet::new();
        for n in &graph.nodes {
            if n.op_type == "Gemm" && n.int("transA", 0).is_ok_and(|t| t != 0) {
                trans_a.extend(n.inputs.first().cloned());
            }
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                *uses.entry(i.clone()).or_insert(0) += 1;
                readers.entry(i.clone()).or_default().push(n.op_type.clone());
            }
        }
        for o in &graph.outputs {
            *uses.entry(o.name.clone()).or_insert(0) += 1;
        }
        let mut b = Builder {
            opset,
            declared_batch: 1,
            inputs: vec![],
            consts,
            shapes: HashMap::new(),
            producer: HashMap::new(),
            uses,
            readers,
            layers: vec![],
            blobs: vec![],
            pending_pads: HashMap::new(),
            ints: HashMap::new(),
            trans_a,
            pending_transposes: HashMap::new(),
        };
        // Before IR version 4 initializers were listed among the inputs too.
        for (i, input) in graph.inputs.iter().filter(|v| !b.consts.contains_key(&v.name)).enumerate() {
            ensure!(input.elem_type == FLOAT, "graph input '{}' has element type {}, only float is supported", input.name, input.elem_type);
            let dims = input.shape.as_ref().with_context(|| format!("graph input '{}' declares no shape", input.name))?;
            let mut shape = Vec::new();
            for (axis, d) in dims.iter().enumerate() {
                shape.push(match d {
                    Dim::Value(v) if *v > 0 => *v as usize,
                    // A dynamic batch: the net runs at any batch anyway.
                    _ if axis == 0 => 1,
                    other => {
                        bail!("graph input '{}': axis {axis} has no fixed size ({other:?}); only the batch may be dynamic", input.name)
                    }
                });
            }
            ensure!(!shape.is_empty(), "graph input '{}' is a scalar", input.name);
            if i == 0 {
                b.declared_batch = shape[0];
            }
            b.shapes.insert(input.name.clone(), shape.clone());
            b.inputs.push(InputDef { name: input.name.clone(), shape });
        }
        ensure!(!b.inputs.is_empty(), "the graph has no input that is not an initializer");
        Ok(b)
    }

    fn shape(&self, node: &Node, name: &str) -> Result<&Vec<usize>> {
        self.shapes.get(name).ok_or_else(|| {
            if self.pending_pads.contains_key(name) {
                anyhow!("{}: input '{name}' comes from a Pad, which is supported only right before a Conv or an AveragePool", node.label())
            } else if self.consts.contains_key(name) {
                anyhow!("{}: input '{name}' is a constant where the engine needs a computed tensor (not supported yet)", node.label())
            } else {
                anyhow!("{}: input '{name}' is not computed by any earlier node", node.label())
            }
        })
    }

    fn constant(&self, node: &Node, index: usize) -> Result<&TensorProto> {
        let name = node.inputs.get(index).filter(|n| !n.is_empty());
        let name = name.with_context(|| format!("{}: input {index} is missing", node.label()))?;
        self.consts.get(name).with_context(|| format!("{}: input '{name}' must be a constant (an initializer) here", node.label()))
    }

    fn optional_constant(&self, node: &Node, index: usize) -> Result<Option<&TensorProto>> {
        match node.inputs.get(index).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(_) => self.constant(node, index).map(Some),
        }
    }

    fn output(node: &Node) -> Result<&str> {
        node.outputs.first().map(String::as_str).filter(|o| !o.is_empty()).with_context(|| format!("{}: no output", node.label()))
    }

    fn input<'n>(&self, node: &'n Node, index: usize) -> Result<&'n str> {
        let name =
            node.inputs.get(index).filter(|n| !n.is_empty()).with_context(|| format!("{}: input {index} is missing", node.label()))?;
        self.shape(node, name)?;
        Ok(name)
    }

    /// Adds a layer named after its output, checks it with the IR's shape rules and its
    /// blobs against the shapes those rules give.
    fn emit(&mut self, node: &Node, top: &str, kind: LayerKind, bottoms: Vec<String>, blobs: Vec<Blob>) -> Result<()> {
        self.emit_layer(node, LayerDef { name: top.to_string(), kind, bottoms, tops: vec![top.to_string()] }, blobs)
    }

    /// A layer without parameters and with several tops (Slice), named `name`.
    fn emit_tops(&mut self, node: &Node, name: &str, kind: LayerKind, bottoms: Vec<String>, tops: Vec<String>) -> Result<()> {
        self.emit_layer(node, LayerDef { name: name.to_string(), kind, bottoms, tops }, vec![])
    }

    fn emit_layer(&mut self, node: &Node, layer: LayerDef, blobs: Vec<Blob>) -> Result<()> {
        for top in &layer.tops {
            ensure!(!self.shapes.contains_key(top), "{}: tensor '{top}' is produced twice", node.label());
        }
        let shapes: Vec<Vec<usize>> = layer.bottoms.iter().map(|b| self.shape(node, b).cloned()).collect::<Result<_>>()?;
        let (_, tops, params) =
            compile_layer(&layer, &shapes, self.declared_batch, self.declared_batch).map_err(|e| anyhow!("{}: {e:#}", node.label()))?;
        ensure!(params.len() == blobs.len(), "{}: {} parameter blobs for a layer that takes {}", node.label(), blobs.len(), params.len());
        for (i, (spec, blob)) in params.iter().zip(&blobs).enumerate() {
            if let Some(at) = blob.data.iter().position(|v| !v.is_finite()) {
                bail!("{}: parameter {i} holds a non-finite value ({}) at index {at}", node.label(), blob.data[at]);
            }
            ensure!(
                &blob.shape == spec,
                "{}: parameter {i} has shape {}, the input shape {} needs {}",
                node.label(),
                fmt_shape(&blob.shape),
                fmt_shape(&shapes[0]),
                fmt_shape(spec)
            );
        }
        for (top, shape) in layer.tops.iter().zip(tops) {
            self.shapes.insert(top.clone(), shape);
            self.producer.insert(top.clone(), self.layers.len());
        }
        self.layers.push(layer);
        self.blobs.push(blobs);
        Ok(())
    }

    /// ReduceMean / ReduceMax over the two spatial axes of an NCHW tensor (what
    /// `x.mean([2, 3])` exports to): global average or max pooling, then, without
    /// keepdims, a Flatten to N x C. Any other set of axes is refused.
    fn reduce_spatial(&mut self, node: &Node, out: &str) -> Result<()> {
        let l = node.label();
        let x = self.input(node, 0)?.to_string();
        let rank = self.shape(node, &x)?.len() as i64;
        // The axes are an attribute before opset 18 and an optional input from 18 on.
        let axes = if self.opset < 18 { node.ints("axes").map(<[i64]>::to_vec) } else { self.optional_numbers(node, 1, "axes")? };
        let mut axes: Vec<i64> =
            axes.with_context(|| format!("{l}: a reduction over all axes is not supported (only the spatial axes 2 and 3)"))?;
        axes.iter_mut().for_each(|a| *a += if *a < 0 { rank } else { 0 });
        axes.sort_unstable();
        ensure!(
            rank == 4 && axes == [2, 3],
            "{l}: axes {axes:?} of a rank-{rank} tensor are not supported (only the spatial axes 2 and 3 of NCHW)"
        );
        let method = if node.op_type == "ReduceMax" { PoolMethod::Max } else { PoolMethod::Ave };
        let p = global_pool(method);
        if node.int("keepdims", 1)? != 0 {
            return self.emit(node, out, LayerKind::Pooling(p), vec![x], vec![]);
        }
        let pooled = format!("{out}::pooled");
        self.emit(node, &pooled, LayerKind::Pooling(p), vec![x], vec![])?;
        self.emit(node, out, LayerKind::Flatten { axis: 1, end_axis: -1 }, vec![pooled], vec![])
    }

    /// The layer that produced `tensor`, if nothing but this node reads it (so it can absorb
    /// this node's computation and take over its output's name).
    fn sole_producer(&self, tensor: &str) -> Option<usize> {
        (self.uses.get(tensor) == Some(&1)).then(|| self.producer.get(tensor).copied()).flatten()
    }

    fn rename(&mut self, layer: usize, new: &str) {
        let old = std::mem::replace(&mut self.layers[layer].tops[0], new.to_string());
        self.layers[layer].name = new.to_string();
        if let Some(shape) = self.shapes.remove(&old) {
            self.shapes.insert(new.to_string(), shape);
        }
        self.producer.remove(&old);
        self.producer.insert(new.to_string(), layer);
    }

    fn node(&mut self, node: &Node) -> Result<()> {
        ensure!(
            node.domain.is_empty() || node.domain == "ai.onnx",
            "{}: op domain '{}' is not supported (only the default ONNX domain)",
            node.label(),
            node.domain
        );
        if node.op_type == "Constant" {
            return self.constant_node(node);
        }
        if self.shape_arithmetic(node)? {
            return Ok(());
        }
        // Exporters pass shared weights through Identity: the output is the same constant.
        if node.op_type == "Identity" {
            if let Some(c) = node.inputs.first().and_then(|i| self.consts.get(i)) {
                let out = Self::output(node)?.to_string();
                let c = TensorProto { name: out.clone(), ..c.clone() };
                self.consts.insert(out, c);
                return Ok(());
            }
        }
        let out = Self::output(node)?.to_string();
        let one = |b: &Self| -> Result<Vec<String>> { Ok(vec![b.input(node, 0)?.to_string()]) };
        match node.op_type.as_str() {
            "Conv" => self.conv(node, &out),
            "ConvTranspose" => self.conv_transpose(node, &out),
            "Gemm" => self.gemm(node, &out),
            "MatMul" => self.matmul(node, &out),
            "Relu" => self.emit(node, &out, LayerKind::ReLU { negative_slope: 0.0 }, one(self)?, vec![]),
            "LeakyRelu" => {
                let negative_slope = node.float("alpha", 0.01)?;
                self.emit(node, &out, LayerKind::ReLU { negative_slope }, one(self)?, vec![])
            }
            "Sigmoid" => self.emit(node, &out, LayerKind::Activation(Activation::Sigmoid), one(self)?, vec![]),
            "HardSigmoid" => {
                let f = Activation::HardSigmoid { alpha: node.float("alpha", 0.2)?, beta: node.float("beta", 0.5)? };
                self.emit(node, &out, LayerKind::Activation(f), one(self)?, vec![])
            }
            "HardSwish" => self.emit(node, &out, LayerKind::Activation(Activation::HardSwish), one(self)?, vec![]),
            "Erf" => self.emit(node, &out, LayerKind::Activation(Activation::Erf), one(self)?, vec![]),
            "Gelu" => self.gelu(node, &out),
            "Clip" => self.clip(node, &out),
            "Dropout" | "Identity" => {
                if let Some(mask) = node.outputs.get(1).filter(|m| !m.is_empty() && self.uses.contains_key(*m)) {
                    bail!("{}: the mask output '{mask}' is read by the graph (not supported)", node.label());
                }
                self.emit(node, &out, LayerKind::Dropout, one(self)?, vec![])
            }
            "MaxPool" | "AveragePool" => self.pool(node, &out),
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let method = if node.op_type == "GlobalMaxPool" { PoolMethod::Max } else { PoolMethod::Ave };
                let p = global_pool(method);
                self.emit(node, &out, LayerKind::Pooling(p), one(self)?, vec![])
            }
            "ReduceMean" | "ReduceMax" => self.reduce_spatial(node, &out),
            "LRN" => {
                let size = node.int("size", 0)?;
                ensure!(size > 0 && size % 2 == 1, "{}: size {size} is not supported (the engine's LRN needs an odd size)", node.label());
                // ONNX and Caffe both divide alpha by the window size and center the window.
                let p = LrnParam {
                    region: LrnRegion::AcrossChannels,
                    local_size: size as usize,
                    alpha: node.float("alpha", 1e-4)?,
                    beta: node.float("beta", 0.75)?,
                    k: node.float("bias", 1.0)?,
                };
                self.emit(node, &out, LayerKind::Lrn(p), one(self)?, vec![])
            }
            "Softmax" => self.softmax(node, &out),
            "Flatten" => {
                let x = self.input(node, 0)?.to_string();
                let rank = self.shapes[&x].len() as i64;
                let axis = node.int("axis", 1)?;
                let axis = if axis < 0 { axis + rank } else { axis };
                // Caffe's Flatten keeps the axes before `axis`; ONNX folds them into one: the
                // same only for axis 1.
                ensure!(axis == 1, "{}: axis {axis} is not supported yet (only 1)", node.label());
                self.emit(node, &out, LayerKind::Flatten { axis: 1, end_axis: -1 }, vec![x], vec![])
            }
            "Reshape" => self.reshape(node, &out),
            "Concat" => {
                let axis =
                    node.attr("axis").and_then(|a| a.int).with_context(|| format!("{}: attribute axis is required", node.label()))?;
                let bottoms = (0..node.inputs.len()).map(|i| self.input(node, i).map(str::to_string)).collect::<Result<_>>()?;
                self.emit(node, &out, LayerKind::Concat { axis }, bottoms, vec![])
            }
            "Add" | "Sub" | "Mul" | "Div" | "Sum" | "Max" => self.elementwise(node, &out),
            "BatchNormalization" => self.batch_norm(node, &out),
            "Pad" => self.pad(node, &out),
            "Transpose" => self.transpose_node(node, &out),
            "Slice" => self.slice_data(node, &out),
            "Split" => self.split(node),
            "Gather" | "Unsqueeze" | "Squeeze" | "Cast" => {
                let x = node.inputs.first().map_or("", String::as_str);
                bail!("{}: supported only on integer values known at conversion (from Shape), not on '{x}'", node.label())
            }
            _ => bail!("{}: unsupported op", node.label()),
        }
    }

    fn constant_node(&mut self, node: &Node) -> Result<()> {
        let out = Self::output(node)?.to_string();
        let a = node.attributes.first().with_context(|| format!("{}: no value", node.label()))?;
        let (dims, values) = match a.name.as_str() {
            "value" => {
                let t = a.tensor.as_ref().with_context(|| format!("{}: value is not a tensor", node.label()))?;
                (t.dims.clone(), t.values.clone())
            }
            "value_float" => (vec![], Values::F32(vec![a.float.context("value_float without a float")?])),
            "value_floats" => (vec![a.floats.len() as i64], Values::F32(a.floats.clone())),
            "value_int" => (vec![], Values::I64(vec![a.int.context("value_int without an integer")?])),
            "value_ints" => (vec![a.ints.len() as i64], Values::I64(a.ints.clone())),
            other => bail!("{}: constant attribute '{other}' is not supported", node.label()),
        };
        self.consts.insert(out.clone(), TensorProto { name: out, dims, values });
        Ok(())
    }

    /// Integer shape computations (Shape and what exporters do with its result), evaluated
    /// now: the result is kept in `ints`, no layer is made. Returns whether `node` was one.
    fn shape_arithmetic(&mut self, node: &Node) -> Result<bool> {
        let op = node.op_type.as_str();
        let on_ints = node.inputs.iter().any(|i| self.ints.contains_key(i));
        let on_constant = node.inputs.first().and_then(|i| self.consts.get(i)).and_then(IntValue::from_constant).is_some();
        let applies = match op {
            "Shape" => true,
            // These select from their first input: shape arithmetic only when it is integers
            // (a Slice of a tensor by ends computed from Shape is a layer).
            "Gather" | "Unsqueeze" | "Squeeze" | "Slice" | "Cast" => {
                node.inputs.first().is_some_and(|i| self.ints.contains_key(i)) || on_constant
            }
            "Concat" | "Add" | "Sub" | "Mul" | "Div" | "Identity" => on_ints,
            _ => false,
        };
        if !applies {
            return Ok(false);
        }
        let l = node.label();
        let out = Self::output(node)?.to_string();
        ensure!(!self.shapes.contains_key(&out) && !self.ints.contains_key(&out), "{l}: tensor '{out}' is produced twice");
        let value = match op {
            "Shape" => {
                let x = node.inputs.first().filter(|n| !n.is_empty()).with_context(|| format!("{l}: input 0 is missing"))?;
                let (dims, batched) = match (self.consts.get(x), self.ints.get(x)) {
                    (Some(c), _) => (c.shape(), false),
                    (_, Some(v)) => (if v.scalar { vec![] } else { vec![v.elems.len()] }, false),
                    _ => (self.shape(node, x)?.clone(), true),
                };
                sv::shape_of(&dims, batched, node.int("start", 0)?, node.int("end", i64::MAX)?)
            }
            "Gather" => sv::gather(&l, &self.int_input(node, 0)?, &self.int_input(node, 1)?, node.int("axis", 0)?)?,
            "Unsqueeze" | "Squeeze" => {
                let x = self.int_input(node, 0)?;
                let axes = if self.opset < 13 { node.ints("axes").map(<[i64]>::to_vec) } else { self.optional_numbers(node, 1, "axes")? };
                if op == "Squeeze" {
                    sv::squeeze(&l, &x, axes.as_deref())?
                } else {
                    sv::unsqueeze(&l, &x, &axes.with_context(|| format!("{l}: axes are required"))?)?
                }
            }
            "Slice" => {
                let x = self.int_input(node, 0)?;
                let (starts, ends, axes, steps) = self.slice_args(node)?;
                sv::slice(&l, &x, &starts, &ends, axes.as_deref(), steps.as_deref())?
            }
            "Cast" => {
                let to = node.int("to", 0)?;
                ensure!(to == INT64 as i64, "{l}: a Cast of an integer shape value to type {to} is not supported (only to int64, 7)");
                self.int_input(node, 0)?
            }
            "Concat" => {
                let axis = node.attr("axis").and_then(|a| a.int).with_context(|| format!("{l}: attribute axis is required"))?;
                let parts = (0..node.inputs.len()).map(|i| self.int_input(node, i)).collect::<Result<Vec<_>>>()?;
                sv::concat(&l, &parts, axis)?
            }
            "Identity" => self.int_input(node, 0)?,
            _ => {
                ensure!(node.inputs.len() == 2, "{l}: {} inputs, not 2", node.inputs.len());
                sv::arithmetic(&l, op, &self.int_input(node, 0)?, &self.int_input(node, 1)?)?
            }
        };
        self.ints.insert(out, value);
        Ok(true)
    }

    /// A Slice node's starts, ends, axes and steps: attributes before opset 10, inputs (known
    /// at conversion) from 10 on.
    #[allow(clippy::type_complexity)]
    fn slice_args(&self, node: &Node) -> Result<(Vec<i64>, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>)> {
        let l = node.label();
        if self.opset < 10 {
            let get = |name: &str| node.ints(name).map(<[i64]>::to_vec);
            let required = |name: &str| get(name).with_context(|| format!("{l}: attribute {name} is required"));
            return Ok((required("starts")?, required("ends")?, get("axes"), None));
        }
        let numbers = |i: usize, what: &str| self.int_input(node, i)?.numbers(&l, what);
        Ok((numbers(1, "starts")?, numbers(2, "ends")?, self.optional_numbers(node, 3, "axes")?, self.optional_numbers(node, 4, "steps")?))
    }

    /// A Slice of a computed tensor along one axis other than the batch, step 1 (torch's
    /// `x[:, a:b]` and `x.chunk`): a Caffe Slice layer whose other tops (`<out>::before`,
    /// `<out>::after`) nothing reads. Axes sliced whole are ignored; a slice that keeps
    /// everything is an identity.
    fn slice_data(&mut self, node: &Node, out: &str) -> Result<()> {
        let l = node.label();
        let x = self.input(node, 0)?.to_string();
        let shape = self.shape(node, &x)?.clone();
        let rank = shape.len() as i64;
        let (starts, ends, axes, steps) = self.slice_args(node)?;
        let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
        ensure!(starts.len() == axes.len() && ends.len() == axes.len(), "{l}: starts, ends and axes differ in length");
        let steps = steps.unwrap_or_else(|| vec![1; axes.len()]);
        ensure!(steps.len() == axes.len(), "{l}: steps and axes differ in length");
        let mut cut = None;
        for (((&a, &s), &e), &step) in axes.iter().zip(&starts).zip(&ends).zip(&steps) {
            let a = if a < 0 { a + rank } else { a };
            ensure!((0..rank).contains(&a), "{l}: axis {a} is out of range for a rank-{rank} tensor");
            let len = shape[a as usize] as i64;
            // ONNX: negative indices count from the end; both clamp to the axis.
            let clamp = |v: i64| (if v < 0 { v + len } else { v }).clamp(0, len);
            let (s, e) = (clamp(s), clamp(e));
            if step == 1 && s == 0 && e == len {
                continue;
            }
            ensure!(step == 1, "{l}: step {step} is not supported (only 1)");
            ensure!(s < e, "{l}: the slice [{s}, {e}) of axis {a} is empty");
            ensure!(a != 0, "{l}: slicing the batch axis is not supported");
            ensure!(cut.is_none(), "{l}: slicing more than one axis is not supported");
            cut = Some((a, s as usize, e as usize, len as usize));
        }
        let Some((axis, s, e, len)) = cut else {
            return self.emit(node, out, LayerKind::Dropout, vec![x], vec![]);
        };
        let mut tops = vec![];
        let mut points = vec![];
        if s > 0 {
            tops.push(format!("{out}::before"));
            points.push(s);
        }
        tops.push(out.to_string());
        if e < len {
            tops.push(format!("{out}::after"));
            points.push(e);
        }
        // The layer's name gives its first top (`--layer`), so it is `out` only when that is.
        let name = if s > 0 { format!("{out}::slice") } else { out.to_string() };
        self.emit_tops(node, &name, LayerKind::Slice { axis, points }, vec![x], tops)
    }

    /// Split along one axis other than the batch into the node's outputs: by the `split`
    /// sizes (an attribute before opset 13, an input from 13), else equal parts (opset 18's
    /// `num_outputs` must match the outputs).
    fn split(&mut self, node: &Node) -> Result<()> {
        let l = node.label();
        let x = self.input(node, 0)?.to_string();
        let shape = self.shape(node, &x)?.clone();
        let rank = shape.len() as i64;
        let axis = node.int("axis", 0)?;
        let axis = if axis < 0 { axis + rank } else { axis };
        ensure!(
            (1..rank).contains(&axis),
            "{l}: splitting axis {axis} of a rank-{rank} tensor is not supported (only axes after the batch)"
        );
        let tops: Vec<String> = node.outputs.clone();
        ensure!(!tops.is_empty() && tops.iter().all(|t| !t.is_empty()), "{l}: every output of a Split needs a name");
        let sizes = if self.opset < 13 { node.ints("split").map(<[i64]>::to_vec) } else { self.optional_numbers(node, 1, "split")? };
        if let Some(n) = node.attr("num_outputs").and_then(|a| a.int) {
            ensure!(n == tops.len() as i64, "{l}: num_outputs {n} for {} outputs", tops.len());
        }
        let len = shape[axis as usize];
        let points = match sizes {
            Some(sizes) => {
                ensure!(sizes.len() == tops.len(), "{l}: {} split sizes for {} outputs", sizes.len(), tops.len());
                ensure!(sizes.iter().all(|&s| s > 0), "{l}: split sizes {sizes:?} must be positive");
                ensure!(sizes.iter().sum::<i64>() == len as i64, "{l}: split sizes {sizes:?} do not add up to the axis's {len}");
                sizes[..sizes.len() - 1]
                    .iter()
                    .scan(0, |at, &s| {
                        *at += s as usize;
                        Some(*at)
                    })
                    .collect()
            }
            // Equal parts; ONNX lets the last be smaller, Caffe's Slice does not.
            None => {
                let n = tops.len();
                ensure!(len.is_multiple_of(n), "{l}: {len} values along axis {axis} do not split into {n} equal parts");
                (1..n).map(|i| i * len / n).collect()
            }
        };
        let name = tops[0].clone();
        self.emit_tops(node, &name, LayerKind::Slice { axis, points }, vec![x], tops)
    }

    /// An input that is an integer value known at conversion: from `Shape`, or an int64
    /// constant of rank 0 or 1.
    fn int_input(&self, node: &Node, index: usize) -> Result<IntValue> {
        let name = node.inputs.get(index).filter(|n| !n.is_empty());
        let name = name.with_context(|| format!("{}: input {index} is missing", node.label()))?;
        if let Some(v) = self.ints.get(name) {
            return Ok(v.clone());
        }
        let constant = self.consts.get(name).and_then(IntValue::from_constant);
        constant.with_context(|| {
            format!("{}: input '{name}' is not an integer value known at conversion (from Shape, or an int64 constant)", node.label())
        })
    }

    /// The numbers of an optional integer input (ONNX's axes and steps from opset 13 and 10).
    fn optional_numbers(&self, node: &Node, index: usize, what: &str) -> Result<Option<Vec<i64>>> {
        match node.inputs.get(index).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(_) => self.int_input(node, index)?.numbers(&node.label(), what).map(Some),
        }
    }

    /// The window attributes of a node whose `kernel` slides over an input of `input` (H, W,
    /// after any folded Pad). `auto_pad` SAME_UPPER and SAME_LOWER give ceil(input / stride)
    /// outputs, the odd pixel of padding at the end or at the start.
    fn conv_common(&self, node: &Node, kernel: [usize; 2], input: [usize; 2]) -> Result<Sliding> {
        let l = node.label();
        let (stride, dilation, group) = self.steps(node)?;
        let explicit = node.ints("pads");
        let pads = explicit.unwrap_or(&[0, 0, 0, 0]);
        let mut pads = match pads {
            [t, lft, b, r] if [t, lft, b, r].iter().all(|&&p| p >= 0) => [*t as usize, *lft as usize, *b as usize, *r as usize],
            [_, _, _, _] => bail!("{l}: negative pads {pads:?} are not supported"),
            _ => bail!("{l}: pads {pads:?}: only 2-D is supported"),
        };
        match node.string("auto_pad").unwrap_or("NOTSET") {
            "NOTSET" | "" => {}
            "VALID" => ensure!(pads.iter().all(|&p| p == 0), "{l}: auto_pad VALID with nonzero pads"),
            mode @ ("SAME_UPPER" | "SAME_LOWER") => {
                ensure!(explicit.is_none_or(|p| p.iter().all(|&v| v == 0)), "{l}: auto_pad {mode} with explicit pads");
                ensure!(kernel.iter().all(|&k| k > 0), "{l}: kernel {kernel:?} must be positive");
                for a in 0..2 {
                    let span = (kernel[a] - 1) * dilation[a] + 1;
                    let total = ((input[a].div_ceil(stride[a]).max(1) - 1) * stride[a] + span).saturating_sub(input[a]);
                    let (begin, end) = if mode == "SAME_UPPER" { (total / 2, total - total / 2) } else { (total - total / 2, total / 2) };
                    pads[a] = begin;
                    pads[a + 2] = end;
                }
            }
            other => bail!("{l}: auto_pad {other} is not supported"),
        }
        Ok(Sliding { stride, pads, dilation, group })
    }

    fn weight_and_bias(&self, node: &Node) -> Result<(Blob, Option<Blob>, [usize; 2])> {
        let w = self.constant(node, 1)?;
        ensure!(w.dims.len() == 4, "{}: weight '{}' has shape {:?}; only 2-D convolution is supported", node.label(), w.name, w.dims);
        let kernel = [w.dims[2] as usize, w.dims[3] as usize];
        if let Some(k) = node.ints("kernel_shape") {
            ensure!(k == &w.dims[2..], "{}: kernel_shape {k:?} disagrees with the weight's {:?}", node.label(), w.dims);
        }
        let weight = Blob { shape: w.shape(), data: f32s(w, "weight")?.to_vec() };
        let bias = match self.optional_constant(node, 2)? {
            Some(b) => Some(Blob { shape: vec![b.values_len()], data: f32s(b, "bias")?.to_vec() }),
            None => None,
        };
        Ok((weight, bias, kernel))
    }

    /// `x` itself, or a `Pad` layer around it (named `name`) where `before` or `after` is
    /// nonzero.
    fn explicit_pad(&mut self, node: &Node, name: String, x: String, before: [i64; 2], after: [i64; 2], value: f32) -> Result<String> {
        if before == [0, 0] && after == [0, 0] {
            return Ok(x);
        }
        self.emit(node, &name, LayerKind::Pad(PadParam { before, after, value }), vec![x], vec![])?;
        Ok(name)
    }

    /// H and W of a 4-D input, padded by a folded Pad's `extra` on each side.
    fn spatial(&self, node: &Node, x: &str, extra: [usize; 2]) -> Result<[usize; 2]> {
        let s = &self.shapes[x];
        ensure!(s.len() == 4, "{}: input shape {}: only 2-D (NCHW) is supported", node.label(), fmt_shape(s));
        Ok([s[2] + 2 * extra[0], s[3] + 2 * extra[1]])
    }

    fn conv(&mut self, node: &Node, out: &str) -> Result<()> {
        let (x, extra) = self.padded_input(node)?;
        let (weight, bias, kernel) = self.weight_and_bias(node)?;
        let sliding = self.conv_common(node, kernel, self.spatial(node, &x, extra)?)?;
        let Sliding { stride, dilation, group, .. } = sliding;
        // Pads that differ between the sides: the difference as zeros of a Pad layer.
        let (own, before, after) = sliding.split();
        let x = self.explicit_pad(node, format!("{out}::pad"), x, signed(before), signed(after), 0.0)?;
        let pad = [own[0] + extra[0], own[1] + extra[1]];
        let p = ConvParam { num_output: weight.shape[0], kernel, stride, pad, dilation, group, bias_term: bias.is_some() };
        let blobs = std::iter::once(weight).chain(bias).collect();
        self.emit(node, out, LayerKind::Convolution(p), vec![x], blobs)
    }

    /// ConvTranspose as a Deconvolution with the padding both sides share. Where the pads
    /// differ, `output_padding` or `output_shape` asks for more rows, or the pads are negative,
    /// Pad layers make up the rest: rows of zeros added to the input (each gives `stride`
    /// output rows of bias alone, as ONNX's output beyond the full transposed convolution is),
    /// and the full output cropped to the rows ONNX keeps.
    fn conv_transpose(&mut self, node: &Node, out: &str) -> Result<()> {
        let x = self.input(node, 0)?.to_string();
        let l = node.label();
        let (weight, bias, kernel) = self.weight_and_bias(node)?;
        let input = self.spatial(node, &x, [0, 0])?;
        let (stride, dilation, group) = self.steps(node)?;
        let ints2 = |name: &str| -> Result<[i64; 2]> {
            match node.ints(name) {
                None => Ok([0, 0]),
                Some([h, w]) => Ok([*h, *w]),
                Some([_, _, h, w]) => Ok([*h, *w]),
                Some(v) => bail!("{l}: {name} {v:?}: only 2-D is supported"),
            }
        };
        let output_padding = ints2("output_padding")?;
        ensure!(output_padding.iter().all(|&p| p >= 0), "{l}: negative output_padding {output_padding:?}");
        // The full output's length along each axis: every tap of every input pixel.
        let full: [i64; 2] = std::array::from_fn(|a| (stride[a] * (input[a] - 1) + (kernel[a] - 1) * dilation[a] + 1) as i64);
        let auto_pad = node.string("auto_pad").unwrap_or("NOTSET");
        ensure!(matches!(auto_pad, "NOTSET" | "" | "VALID" | "SAME_UPPER" | "SAME_LOWER"), "{l}: auto_pad {auto_pad} is not supported");
        let explicit = match node.ints("pads") {
            None => None,
            Some(&[t, lft, b, r]) if [t, lft, b, r].iter().all(|&p| p >= 0) => Some([t, lft, b, r]),
            Some(v @ [_, _, _, _]) => bail!("{l}: negative pads {v:?} (ONNX allows none for ConvTranspose)"),
            Some(v) => bail!("{l}: pads {v:?}: only 2-D is supported"),
        };
        // Pads (top, left, bottom, right), as ONNX derives them from output_shape or auto_pad:
        // the odd row of padding at the start, but for SAME_UPPER, at the end.
        let wanted = match (node.ints("output_shape"), auto_pad) {
            (Some(_), _) => Some(ints2("output_shape")?),
            (None, "SAME_UPPER" | "SAME_LOWER") => Some(std::array::from_fn(|a| (input[a] * stride[a]) as i64)),
            _ => None,
        };
        let pads: [i64; 4] = match wanted {
            Some(shape) => {
                ensure!(explicit.is_none_or(|p| p == [0; 4]), "{l}: pads given with output_shape or auto_pad {auto_pad}");
                let mut pads = [0; 4];
                for a in 0..2 {
                    let total = full[a] + output_padding[a] - shape[a];
                    let (small, large) = (total.div_euclid(2), total - total.div_euclid(2));
                    (pads[a], pads[a + 2]) = if auto_pad == "SAME_UPPER" { (small, large) } else { (large, small) };
                }
                pads
            }
            None => explicit.unwrap_or([0; 4]),
        };
        ensure!(auto_pad != "VALID" || pads == [0; 4], "{l}: auto_pad VALID with nonzero pads");
        // The rows ONNX keeps, [start, end) along each axis of the full output.
        let keep: [[i64; 2]; 2] = std::array::from_fn(|a| [pads[a], full[a] + output_padding[a] - pads[a + 2]]);
        ensure!(
            keep.iter().all(|[s, e]| e > s),
            "{l}: pads {pads:?} and output_padding {output_padding:?} leave an empty output for a {}x{} input",
            input[0],
            input[1]
        );
        // Zero rows before and after the input where ONNX keeps rows beyond the full output.
        let s = stride.map(|v| v as i64);
        let rows_for = |extra: i64, a: usize| (extra.max(0) + s[a] - 1) / s[a];
        let grow: [[i64; 2]; 2] = std::array::from_fn(|a| [rows_for(-keep[a][0], a), rows_for(keep[a][1] - full[a], a)]);
        let x = self.explicit_pad(node, format!("{out}::grow"), x, [grow[0][0], grow[1][0]], [grow[0][1], grow[1][1]], 0.0)?;
        // In the grown full output: the kept rows, and the padding both sides share.
        let (mut pad, mut crop_before, mut crop_after) = ([0usize; 2], [0i64; 2], [0i64; 2]);
        for a in 0..2 {
            let grown = full[a] + s[a] * (grow[a][0] + grow[a][1]);
            let (start, end) = (keep[a][0] + s[a] * grow[a][0], keep[a][1] + s[a] * grow[a][0]);
            let shared = start.min(grown - end);
            pad[a] = shared as usize;
            (crop_before[a], crop_after[a]) = (shared - start, end - (grown - shared));
        }
        let p = ConvParam { num_output: weight.shape[1] * group, kernel, stride, pad, dilation, group, bias_term: bias.is_some() };
        let blobs = std::iter::once(weight).chain(bias).collect();
        if crop_before == [0, 0] && crop_after == [0, 0] {
            return self.emit(node, out, LayerKind::Deconvolution(p), vec![x], blobs);
        }
        let full_out = format!("{out}::uncropped");
        self.emit(node, &full_out, LayerKind::Deconvolution(p), vec![x], blobs)?;
        self.emit(node, out, LayerKind::Pad(PadParam { before: crop_before, after: crop_after, value: 0.0 }), vec![full_out], vec![])
    }

    /// Stride, dilation and group, the attributes every sliding window reads.
    fn steps(&self, node: &Node) -> Result<([usize; 2], [usize; 2], usize)> {
        let l = node.label();
        let stride = pair(node.ints("strides"), 1, "strides").map_err(|e| anyhow!("{l}: {e}"))?;
        let dilation = pair(node.ints("dilations"), 1, "dilations").map_err(|e| anyhow!("{l}: {e}"))?;
        ensure!(stride.iter().chain(&dilation).all(|&v| v > 0), "{l}: strides and dilations must be positive");
        let group = node.int("group", 1)?;
        ensure!(group > 0, "{l}: group {group} must be positive");
        Ok((stride, dilation, group as usize))
    }

    /// `y = alpha * A B' + beta * C` (B' = B or its transpose) as an InnerProduct: alpha and
    /// beta are folded into the stored weights.
    fn gemm(&mut self, node: &Node, out: &str) -> Result<()> {
        let l = node.label();
        // A' A is A itself where A is a Transpose's output: the Gemm reads the Transpose's input.
        let a = if node.int("transA", 0)? != 0 {
            let source = node.inputs.first().and_then(|i| self.pending_transposes.get(i)).cloned();
            source.with_context(|| {
                format!(
                    "{l}: transA 1 is supported only on a Transpose's output (perm [1, 0]); alone it would contract over the batch axis"
                )
            })?
        } else {
            self.input(node, 0)?.to_string()
        };
        let (alpha, beta) = (node.float("alpha", 1.0)?, node.float("beta", 1.0)?);
        let b = self.constant(node, 1)?;
        ensure!(b.dims.len() == 2, "{l}: B has shape {:?}, not a matrix", b.dims);
        let data = f32s(b, "B")?;
        let (rows, cols) = (b.dims[0] as usize, b.dims[1] as usize);
        let (n, k, mut w) =
            if node.int("transB", 0)? != 0 { (rows, cols, data.to_vec()) } else { (cols, rows, transpose(data, rows, cols)) };
        w.iter_mut().for_each(|v| *v *= alpha);
        let bias = match self.optional_constant(node, 2)? {
            None => None,
            Some(c) => {
                let values = f32s(c, "C")?;
                ensure!(
                    values.len() == n && c.dims.iter().rev().skip(1).all(|&d| d == 1),
                    "{l}: C of shape {:?} is not supported yet (only one bias per output)",
                    c.dims
                );
                Some(Blob { shape: vec![n], data: values.iter().map(|v| v * beta).collect() })
            }
        };
        let a_rank = self.shapes[&a].len();
        ensure!(a_rank == 2, "{l}: A has shape {}, Gemm needs a matrix", fmt_shape(&self.shapes[&a]));
        let p = InnerProductParam { num_output: n, bias_term: bias.is_some(), axis: 1 };
        let blobs = std::iter::once(Blob { shape: vec![n, k], data: w }).chain(bias).collect();
        self.emit(node, out, LayerKind::InnerProduct(p), vec![a], blobs)
    }

    /// Transpose: only perm [1, 0] read by nothing but a Gemm with transA 1, which cancels it
    /// (no layer). Other transposes would move the batch axis or need a layer the engine lacks.
    fn transpose_node(&mut self, node: &Node, out: &str) -> Result<()> {
        let x = self.input(node, 0)?.to_string();
        let rank = self.shapes[&x].len() as i64;
        let perm = node.ints("perm").map_or_else(|| (0..rank).rev().collect(), <[i64]>::to_vec);
        if perm == [0, 2, 1, 3, 4] {
            return self.channel_shuffle(node, &x, out);
        }
        let cancelled = perm == [1, 0] && self.trans_a.contains(out) && self.uses.get(out) == Some(&1);
        ensure!(
            cancelled,
            "{}: perm {perm:?} is not supported (only perm [1, 0] read by nothing but a Gemm with transA 1, which cancels it)",
            node.label()
        );
        self.pending_transposes.insert(out.to_string(), x);
        Ok(())
    }

    /// ShuffleNet's channel shuffle as exporters write it: a Reshape of [N, C, H, W] to
    /// [N, g, C/g, H, W], this Transpose (perm [0, 2, 1, 3, 4]) and Reshapes back. The first
    /// Reshape's layer becomes a ShuffleChannel in g groups, named after the Transpose's
    /// output, whose shape is then [N, C, H, W]: every reader must be a Reshape.
    fn channel_shuffle(&mut self, node: &Node, x: &str, out: &str) -> Result<()> {
        let l = node.label();
        let readers = self.readers.get(out).map_or(&[][..], Vec::as_slice);
        ensure!(
            !readers.is_empty() && readers.iter().all(|op| op == "Reshape") && self.uses.get(out) == Some(&readers.len()),
            "{l}: perm [0, 2, 1, 3, 4] is supported only as a channel shuffle, read by Reshape nodes alone (not a graph output)"
        );
        let shuffle = self.sole_producer(x).filter(|&i| matches!(self.layers[i].kind, LayerKind::Reshape(_))).and_then(|i| {
            let four = self.shapes.get(&self.layers[i].bottoms[0])?.clone();
            let five = self.shapes.get(x)?;
            let [n, c, h, w] = four[..] else { return None };
            let [n5, g, cg, h5, w5] = five[..] else { return None };
            (n5 == n && h5 == h && w5 == w && g > 0 && g * cg == c).then_some((i, g, four))
        });
        let (i, group, shape) = shuffle.with_context(|| {
            format!("{l}: perm [0, 2, 1, 3, 4] is supported only as a channel shuffle, on a Reshape of [N, C, H, W] to [N, g, C/g, H, W] that nothing else reads")
        })?;
        self.layers[i].kind = LayerKind::ShuffleChannel { group };
        self.rename(i, out);
        self.shapes.insert(out.to_string(), shape);
        Ok(())
    }

    /// `A B` with a constant matrix B, over A's last axis; a following Add of a constant
    /// vector becomes its bias.
    fn matmul(&mut self, node: &Node, out: &str) -> Result<()> {
        let a = self.input(node, 0)?.to_string();
        let b = self.constant(node, 1)?;
        ensure!(b.dims.len() == 2, "{}: B has shape {:?}; only a constant matrix is supported", node.label(), b.dims);
        let (k, n) = (b.dims[0] as usize, b.dims[1] as usize);
        let w = transpose(f32s(b, "B")?, k, n);
        let p = InnerProductParam { num_output: n, bias_term: false, axis: -1 };
        self.emit(node, out, LayerKind::InnerProduct(p), vec![a], vec![Blob { shape: vec![n, k], data: w }])
    }

    fn pool(&mut self, node: &Node, out: &str) -> Result<()> {
        let l = node.label();
        let (x, extra) = self.padded_input(node)?;
        if extra != [0, 0] && node.op_type == "MaxPool" {
            bail!("{l}: zeros padded by a Pad before a MaxPool are not supported (the engine's max ignores padding)");
        }
        if node.outputs.get(1).is_some_and(|o| !o.is_empty()) {
            bail!("{l}: the indices output is not supported");
        }
        let kernel = pair(node.ints("kernel_shape"), 0, "kernel_shape").map_err(|e| anyhow!("{l}: {e}"))?;
        ensure!(node.ints("kernel_shape").is_some(), "{l}: kernel_shape is required");
        ensure!(pair(node.ints("dilations"), 1, "dilations")? == [1, 1], "{l}: dilations are not supported yet");
        let sliding = self.conv_common(node, kernel, self.spatial(node, &x, extra)?)?;
        let (Sliding { stride, pads, .. }, (own, before, after)) = (&sliding, sliding.split());
        let pad = [own[0] + extra[0], own[1] + extra[1]];
        let ceil = node.int("ceil_mode", 0)? != 0;
        let method = if node.op_type == "MaxPool" { PoolMethod::Max } else { PoolMethod::Ave };
        // count_include_pad 0: the average divides by the pixels inside the input (the
        // engine's exclude_pad); a folded Pad's zeros are pixels of ONNX's input, so they
        // count, and so would the zeros of a Pad layer for pads that differ between the sides.
        let exclude_pad = method == PoolMethod::Ave && *pads != [0; 4] && node.int("count_include_pad", 0)? == 0;
        if exclude_pad && extra != [0, 0] {
            bail!("{l}: a Pad before an AveragePool with its own pads left out of the average is not supported yet");
        }
        if exclude_pad && (before != [0, 0] || after != [0, 0]) {
            bail!("{l}: pads {pads:?} that differ between the sides, left out of the average (count_include_pad 0), are not supported yet");
        }
        let s = self.shapes[&x].clone();
        ensure!(s.len() == 4, "{l}: input shape {}: only 2-D pooling is supported", fmt_shape(&s));
        // Pads that differ between the sides: the difference as a Pad layer, of zeros before
        // an average (counted, as count_include_pad 1 says), of -inf before a max (never the
        // maximum, as ONNX's own pool pads).
        let value = if method == PoolMethod::Max { f32::NEG_INFINITY } else { 0.0 };
        let x = self.explicit_pad(node, format!("{out}::pad"), x, signed(before), signed(after), value)?;
        let round_mode = if ceil { RoundMode::Ceil } else { RoundMode::Floor };
        let p = PoolParam { method, kernel, stride: *stride, pad, global: false, round_mode, exclude_pad };
        self.emit(node, out, LayerKind::Pooling(p), vec![x], vec![])?;
        // Caffe's ceil rounding drops a last window only when padded; ONNX always drops one that
        // starts past the input and its leading padding: refuse where the two differ.
        // ONNX pools the Pad's output; the engine pads the Pad's input by the sum of both.
        let onnx: Vec<usize> =
            (0..2).map(|a| onnx_pool_size(s[2 + a] + 2 * extra[a], kernel[a], stride[a], pads[a], pads[a + 2], ceil)).collect();
        let engine = &self.shapes[out][2..];
        ensure!(
            engine == onnx.as_slice(),
            "{l}: ceil_mode {} gives a {}x{} output for a {}x{} input, the engine's pooling gives {}x{}: not supported yet",
            ceil as u8,
            onnx[0],
            onnx[1],
            s[2],
            s[3],
            engine[0],
            engine[1]
        );
        Ok(())
    }

    /// The input of a Conv or pool, and the H and W padding a Pad node put around it.
    fn padded_input(&self, node: &Node) -> Result<(String, [usize; 2])> {
        match node.inputs.first().and_then(|i| self.pending_pads.get(i)) {
            Some((source, pads)) => Ok((source.clone(), *pads)),
            None => Ok((self.input(node, 0)?.to_string(), [0, 0])),
        }
    }

    /// Constant padding of the spatial axes. Zeros equal on both sides, read only by Conv
    /// and AveragePool nodes (or further Pads), are kept for those to pad by themselves;
    /// anything else becomes a `Pad` layer.
    fn pad(&mut self, node: &Node, out: &str) -> Result<()> {
        let l = node.label();
        let (x, before) = self.padded_input(node)?;
        ensure!(node.string("mode").unwrap_or("constant") == "constant", "{l}: only constant padding is supported");
        let (pads, value) = if self.opset < 11 {
            (node.ints("pads").with_context(|| format!("{l}: no pads"))?.to_vec(), node.float("value", 0.0)?)
        } else {
            let pads = match &self.constant(node, 1)?.values {
                Values::I64(v) => v.clone(),
                Values::F32(_) => bail!("{l}: pads are not integers"),
            };
            let value = match self.optional_constant(node, 2)? {
                Some(c) => f32s(c, "constant_value")?.first().copied().unwrap_or(0.0),
                None => 0.0,
            };
            ensure!(node.inputs.get(3).is_none_or(|a| a.is_empty()), "{l}: the axes input is not supported yet");
            (pads, value)
        };
        ensure!(!value.is_nan(), "{l}: padding with NaN is not supported");
        let rank = self.shapes[&x].len();
        ensure!(rank == 4 && pads.len() == 8, "{l}: pads {pads:?} for a rank-{rank} input: only NCHW is supported");
        ensure!(
            pads[0] == 0 && pads[1] == 0 && pads[4] == 0 && pads[5] == 0,
            "{l}: pads {pads:?} are not supported yet (only padding or cropping of H and W)"
        );
        // A negative side crops; a folded Pad's zeros before this one add to each side.
        let side = |a: usize| [before[0] as i64 + pads[a], before[1] as i64 + pads[a + 1]];
        let (top_left, bottom_right) = (side(2), side(6));
        let readers = self.readers.get(out).map_or(&[][..], Vec::as_slice);
        let folds =
            readers.iter().all(|op| matches!(op.as_str(), "Conv" | "AveragePool" | "Pad")) && self.uses.get(out) == Some(&readers.len());
        if value == 0.0 && top_left == bottom_right && top_left.iter().all(|&p| p >= 0) && folds {
            self.pending_pads.insert(out.to_string(), (x, top_left.map(|p| p as usize)));
            return Ok(());
        }
        ensure!(before == [0, 0] || value == 0.0, "{l}: padding with {value} around zero padding is not supported");
        let p = PadParam { before: top_left, after: bottom_right, value };
        self.emit(node, out, LayerKind::Pad(p), vec![x], vec![])
    }

    /// Clip: the bounds are attributes before opset 11 and optional constant inputs from 11
    /// on; an absent bound is an infinite one (ReLU6 is Clip(0, 6)).
    fn clip(&mut self, node: &Node, out: &str) -> Result<()> {
        let x = self.input(node, 0)?.to_string();
        let (min, max) = if self.opset < 11 {
            (node.float("min", f32::NEG_INFINITY)?, node.float("max", f32::INFINITY)?)
        } else {
            let bound = |i: usize, what: &str, default: f32| -> Result<f32> {
                match node.inputs.get(i).filter(|n| !n.is_empty()) {
                    None => Ok(default),
                    Some(name) if !self.consts.contains_key(name) => {
                        bail!("{}: a {what} bound computed at run time ('{name}') is not supported (only a constant)", node.label())
                    }
                    Some(_) => match f32s(self.constant(node, i)?, what)? {
                        [v] => Ok(*v),
                        v => bail!("{}: the {what} bound holds {} values, not one", node.label(), v.len()),
                    },
                }
            };
            (bound(1, "min", f32::NEG_INFINITY)?, bound(2, "max", f32::INFINITY)?)
        };
        ensure!(!min.is_nan() && !max.is_nan(), "{}: the bounds {min} and {max} must be numbers", node.label());
        self.emit(node, out, LayerKind::Activation(Activation::Clip { min, max }), vec![x], vec![])
    }

    /// `x * g` with g of shape [N, C, 1, 1] (any leading axes of x, then ones), both computed:
    /// squeeze-and-excitation's gating. g is reshaped to its leading axes ([N, C]) and scales x
    /// from axis 0 on, Caffe's two-bottom Scale.
    fn gate(&mut self, node: &Node, out: &str, bottoms: &[String]) -> Result<bool> {
        let [a, b] = bottoms else { return Ok(false) };
        let (sa, sb) = (&self.shapes[a], &self.shapes[b]);
        let (x, g) = if sa.iter().product::<usize>() >= sb.iter().product::<usize>() { (a, b) } else { (b, a) };
        let (sx, sg) = (self.shapes[x].clone(), self.shapes[g].clone());
        let lead = sg.iter().rposition(|&d| d != 1).map_or(0, |p| p + 1);
        if sg.len() != sx.len() || lead == 0 || sg[..lead] != sx[..lead] {
            return Ok(false);
        }
        let flat = format!("{out}::gates");
        ensure!(!self.shapes.contains_key(&flat), "{}: the tensor name '{flat}' is taken", node.label());
        let reshape = ReshapeParam { dims: vec![0; lead], axis: 0, num_axes: -1 };
        self.emit(node, &flat, LayerKind::Reshape(reshape), vec![g.clone()], vec![])?;
        let scale = ScaleParam { axis: 0, num_axes: -1, bias_term: false };
        self.emit(node, out, LayerKind::Scale(scale), vec![x.clone(), flat], vec![])?;
        Ok(true)
    }

    fn softmax(&mut self, node: &Node, out: &str) -> Result<()> {
        let x = self.input(node, 0)?.to_string();
        let s = self.shapes[&x].clone();
        let rank = s.len() as i64;
        let axis = node.int("axis", if self.opset >= 13 { -1 } else { 1 })?;
        let axis = if axis < 0 { axis + rank } else { axis };
        ensure!((0..rank).contains(&axis), "{}: axis {axis} is out of range for shape {}", node.label(), fmt_shape(&s));
        // Before opset 13 the softmax runs over all axes from `axis` on flattened together:
        // the engine's one-axis softmax is the same when the axes after it are 1.
        if self.opset < 13 && s[axis as usize + 1..].iter().any(|&d| d != 1) {
            bail!("{}: softmax over several axes (opset {}, shape {}) is not supported yet", node.label(), self.opset, fmt_shape(&s));
        }
        self.emit(node, out, LayerKind::Softmax { axis }, vec![x], vec![])
    }

    fn reshape(&mut self, node: &Node, out: &str) -> Result<()> {
        let l = node.label();
        let x = self.input(node, 0)?.to_string();
        let allowzero = node.int("allowzero", 0)? != 0;
        let dims = if let Some(v) = node.inputs.get(1).and_then(|n| self.ints.get(n)) {
            // Computed from Shape: the batch becomes 0, the rest are numbers.
            sv::reshape_dims(&l, v, allowzero)?
        } else {
            let shape = self.constant(node, 1).map_err(|_| anyhow!("{l}: a shape computed at run time is not supported yet"))?;
            let dims = match &shape.values {
                Values::I64(v) => v.clone(),
                Values::F32(_) => bail!("{l}: the shape is not an integer tensor"),
            };
            ensure!(!allowzero || !dims.contains(&0), "{l}: allowzero with a zero dimension is not supported");
            dims
        };
        // ONNX and Caffe agree: 0 copies the input's axis, -1 is inferred.
        let p = ReshapeParam { dims, axis: 0, num_axes: -1 };
        self.emit(node, out, LayerKind::Reshape(p), vec![x], vec![])
    }

    fn elementwise(&mut self, node: &Node, out: &str) -> Result<()> {
        let l = node.label();
        let op = node.op_type.as_str();
        let computed: Vec<&String> = node.inputs.iter().filter(|i| self.shapes.contains_key(*i)).collect();
        if computed.len() == node.inputs.len() {
            let bottoms: Vec<String> = computed.into_iter().cloned().collect();
            if bottoms.len() == 1 && op == "Sum" {
                return self.emit(node, out, LayerKind::Dropout, bottoms, vec![]);
            }
            let (eop, coeffs) = match op {
                "Add" | "Sum" => (EltwiseOp::Sum, vec![]),
                "Sub" => (EltwiseOp::Sum, vec![1.0, -1.0]),
                "Mul" => (EltwiseOp::Prod, vec![]),
                "Max" => (EltwiseOp::Max, vec![]),
                _ => bail!("{l}: division of two computed tensors is not supported yet"),
            };
            let shapes: Vec<&Vec<usize>> = bottoms.iter().map(|b| &self.shapes[b]).collect();
            if shapes.iter().any(|s| *s != shapes[0]) {
                if op == "Mul" && self.gate(node, out, &bottoms)? {
                    return Ok(());
                }
                let shapes: Vec<&Vec<usize>> = bottoms.iter().map(|b| &self.shapes[b]).collect();
                let list: Vec<String> = shapes.iter().map(|s| fmt_shape(s)).collect();
                bail!("{l}: broadcasting between shapes {} is not supported yet", list.join(" and "));
            }
            return self.emit(node, out, LayerKind::Eltwise(EltwiseParam { op: eop, coeffs }), bottoms, vec![]);
        }
        // One computed tensor and one constant: a per-channel (or scalar) scale or shift.
        ensure!(node.inputs.len() == 2 && computed.len() == 1, "{l}: needs a computed input");
        let x = computed[0].clone();
        let const_index = if node.inputs[0] == x { 1 } else { 0 };
        ensure!(const_index == 1 || matches!(op, "Add" | "Mul"), "{l}: a constant first operand is not supported yet for {op}");
        let c = self.constant(node, const_index)?;
        let values = f32s(c, "operand")?.to_vec();
        let cdims = c.dims.clone();
        let s = self.shapes[&x].clone();
        // A bias after a MatMul (its last axis) is folded into the InnerProduct.
        if op == "Add" {
            if let Some(i) = self.sole_producer(&x) {
                let last = *s.last().unwrap_or(&0);
                let is_bias = cdims.iter().rev().skip(1).all(|&d| d == 1) && values.len() == last && cdims.len() <= s.len();
                if let LayerKind::InnerProduct(p) = &mut self.layers[i].kind {
                    if !p.bias_term && is_bias {
                        p.bias_term = true;
                        self.blobs[i].push(Blob { shape: vec![last], data: values });
                        self.rename(i, out);
                        return Ok(());
                    }
                }
            }
        }
        let per_channel = channel_values(&cdims, &values, &s).with_context(|| {
            format!("{l}: a constant of shape {cdims:?} against {} is not supported yet (only per-channel or scalar)", fmt_shape(&s))
        })?;
        let channels = per_channel.len();
        let (scale, bias) = match op {
            "Add" => (vec![1.0; channels], Some(per_channel)),
            "Sub" => (vec![1.0; channels], Some(per_channel.iter().map(|v| -v).collect())),
            "Mul" => (per_channel, None),
            "Div" => (per_channel.iter().map(|v| 1.0 / v).collect(), None),
            _ => bail!("{l}: a constant operand is not supported yet for {op}"),
        };
        self.scale(node, out, x, scale, bias)
    }

    /// Opset 20's Gelu, exact form (`approximate` none): x * (0.5 + 0.5 erf(x / sqrt 2)), as
    /// a Scale (`<out>::scaled`), an Erf (`<out>::erf`), a Scale with bias (`<out>::half`)
    /// and an Eltwise PROD with x; the tanh approximation is refused.
    fn gelu(&mut self, node: &Node, out: &str) -> Result<()> {
        let l = node.label();
        let approximate = node.string("approximate").unwrap_or("none");
        ensure!(approximate == "none", "{l}: approximate '{approximate}' is not supported (only the exact form, 'none')");
        let x = self.input(node, 0)?.to_string();
        let s = self.shapes[&x].clone();
        let c = *s.get(1).with_context(|| format!("{l}: input shape {} has no channel axis", fmt_shape(&s)))?;
        let (scaled, erf, half) = (format!("{out}::scaled"), format!("{out}::erf"), format!("{out}::half"));
        self.scale(node, &scaled, x.clone(), vec![std::f32::consts::FRAC_1_SQRT_2; c], None)?;
        self.emit(node, &erf, LayerKind::Activation(Activation::Erf), vec![scaled], vec![])?;
        self.scale(node, &half, erf, vec![0.5; c], Some(vec![0.5; c]))?;
        let p = EltwiseParam { op: EltwiseOp::Prod, coeffs: vec![] };
        self.emit(node, out, LayerKind::Eltwise(p), vec![x, half], vec![])
    }

    fn scale(&mut self, node: &Node, out: &str, x: String, scale: Vec<f32>, bias: Option<Vec<f32>>) -> Result<()> {
        let c = scale.len();
        let p = ScaleParam { axis: 1, num_axes: 1, bias_term: bias.is_some() };
        let blobs = std::iter::once(Blob { shape: vec![c], data: scale }).chain(bias.map(|b| Blob { shape: vec![c], data: b })).collect();
        self.emit(node, out, LayerKind::Scale(p), vec![x], blobs)
    }

    /// Inference batch normalization: folded into the convolution before it when nothing else
    /// reads the convolution's output, else one per-channel Scale with bias.
    fn batch_norm(&mut self, node: &Node, out: &str) -> Result<()> {
        let l = node.label();
        let x = self.input(node, 0)?.to_string();
        if node.outputs.iter().skip(1).any(|o| !o.is_empty() && self.uses.contains_key(o)) {
            bail!("{l}: training-mode outputs (running mean and variance) are not supported");
        }
        // Before opset 9, `spatial` 0 meant statistics per element rather than per channel.
        ensure!(node.int("spatial", 1)? == 1, "{l}: spatial 0 is not supported");
        let eps = node.float("epsilon", 1e-5)?;
        let get = |i: usize, what: &str| -> Result<Vec<f32>> { Ok(f32s(self.constant(node, i)?, what)?.to_vec()) };
        let (gamma, beta, mean, var) = (get(1, "scale")?, get(2, "B")?, get(3, "mean")?, get(4, "var")?);
        let s = self.shapes[&x].clone();
        let c = *s.get(1).with_context(|| format!("{l}: input shape {} has no channel axis", fmt_shape(&s)))?;
        ensure!(
            [&gamma, &beta, &mean, &var].iter().all(|v| v.len() == c),
            "{l}: scale, B, mean and var need {c} values each (the input has {c} channels)"
        );
        let factor: Vec<f32> = (0..c).map(|i| (gamma[i] as f64 / (var[i] as f64 + eps as f64).sqrt()) as f32).collect();
        let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * factor[i]).collect();
        if let Some(i) = self.sole_producer(&x) {
            if let LayerKind::Convolution(p) = &mut self.layers[i].kind {
                let per = self.blobs[i][0].data.len() / c;
                for (o, chunk) in self.blobs[i][0].data.chunks_mut(per).enumerate() {
                    chunk.iter_mut().for_each(|w| *w *= factor[o]);
                }
                if p.bias_term {
                    for (o, b) in self.blobs[i][1].data.iter_mut().enumerate() {
                        *b = *b * factor[o] + shift[o];
                    }
                } else {
                    p.bias_term = true;
                    self.blobs[i].push(Blob { shape: vec![c], data: shift });
                }
                self.rename(i, out);
                return Ok(());
            }
        }
        self.scale(node, out, x, factor, Some(shift))
    }
}

impl TensorProto {
    fn values_len(&self) -> usize {
        match &self.values {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// The per-channel values of a constant broadcast against `shape` (N x C x ...), if it
/// varies along the channel axis only (or not at all).
fn channel_values(dims: &[i64], values: &[f32], shape: &[usize]) -> Option<Vec<f32>> {
    let c = *shape.get(1)?;
    if values.len() == 1 {
        return Some(vec![values[0]; c]);
    }
    if values.len() != c || dims.len() > shape.len() {
        return None;
    }
    // Right-aligned broadcasting: the axis with the values must be the channel axis.
    let axis = shape.len() - dims.len() + dims.iter().position(|&d| d as usize == c && c > 1)?;
    (axis == 1 && dims.iter().filter(|&&d| d != 1).count() == 1).then(|| values.to_vec())
}

/// ONNX's pooled size along one axis, padded by `begin` and `end`.
fn onnx_pool_size(size: usize, k: usize, s: usize, begin: usize, end: usize, ceil: bool) -> usize {
    let span = (size + begin + end).saturating_sub(k);
    if !ceil {
        return span / s + 1;
    }
    let out = span.div_ceil(s) + 1;
    // As PyTorch and onnxruntime do: the last window must start inside the input or its
    // leading padding.
    if (out - 1) * s >= size + begin {
        out - 1
    } else {
        out
    }
}

/// Pooling over each whole plane (GlobalAveragePool, GlobalMaxPool, spatial ReduceMean/Max).
fn global_pool(method: PoolMethod) -> PoolParam {
    PoolParam { method, kernel: [0, 0], stride: [1, 1], pad: [0, 0], global: true, round_mode: RoundMode::Ceil, exclude_pad: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_sizes_round_as_onnx_says() {
        assert_eq!(onnx_pool_size(112, 3, 2, 1, 1, false), 56);
        assert_eq!(onnx_pool_size(112, 3, 2, 1, 1, true), 57);
        assert_eq!(onnx_pool_size(6, 3, 2, 0, 0, false), 2);
        assert_eq!(onnx_pool_size(6, 3, 2, 0, 0, true), 3);
        assert_eq!(onnx_pool_size(5, 2, 2, 1, 1, true), 3);
        // TensorFlow's SAME for an even input, stride 2: all the padding at the end.
        assert_eq!(onnx_pool_size(8, 3, 2, 0, 1, false), 4);
    }

    #[test]
    fn channel_constants() {
        let shape = [1, 3, 4, 4];
        assert_eq!(channel_values(&[3, 1, 1], &[1., 2., 3.], &shape), Some(vec![1., 2., 3.]));
        assert_eq!(channel_values(&[1, 3, 1, 1], &[1., 2., 3.], &shape), Some(vec![1., 2., 3.]));
        assert_eq!(channel_values(&[], &[2.], &shape), Some(vec![2.; 3]));
        assert_eq!(channel_values(&[3], &[1., 2., 3.], &shape), None, "a vector broadcasts along the last axis");
        assert_eq!(channel_values(&[3, 4, 1], &[0.; 12], &shape), None);
    }

    #[test]
    fn transposes() {
        assert_eq!(transpose(&[1., 2., 3., 4., 5., 6.], 2, 3), vec![1., 4., 2., 5., 3., 6.]);
    }
}
