//! Caffe model (deploy prototxt + trained caffemodel) into a dgnam weights file.
//!
//! A trained caffemodel holds the TRAIN net (data and loss layers included); the deploy
//! net's learnable layers are matched to it by name and every blob's shape is checked.

use crate::caffe::{caffemodel, netdef, Blob, LayerBlobs, NetDef};
use crate::device::{Cpu, FromMapped};
use crate::graph::{same_shape_ignoring_leading_ones, CpuNet, Net, ParamSpec, Plan};
use crate::ir::InputSpace;
use crate::ops::Kernels;
use crate::real::Real;
use crate::tensor::fmt_shape;
use crate::weights::{self, TensorData};
use anyhow::{ensure, Context, Result};
use std::path::Path;

/// A deploy definition with the blobs of a trained model.
pub struct CaffeModel {
    pub prototxt: String,
    pub def: NetDef,
    pub layers: Vec<LayerBlobs>,
}

pub fn load(prototxt: &Path, model: &Path) -> Result<CaffeModel> {
    let text = std::fs::read_to_string(prototxt).with_context(|| format!("cannot read {}", prototxt.display()))?;
    let def = netdef::parse_netdef(&text).with_context(|| format!("{}", prototxt.display()))?;
    let layers = caffemodel::read_caffemodel(model)?;
    Ok(CaffeModel { prototxt: text, def, layers })
}

/// For each parameter the plan needs, the stored blob with the same layer name and index.
pub fn match_blobs<'p, 'm>(plan: &'p Plan, layers: &'m [LayerBlobs]) -> Result<Vec<(&'p ParamSpec, &'m Blob)>> {
    let mut out = Vec::new();
    for node in plan.nodes.iter().filter(|n| !n.params.is_empty()) {
        let stored = layers
            .iter()
            .find(|l| l.name == node.layer)
            .with_context(|| format!("the caffemodel has no layer '{}' ({}) that the net needs", node.layer, node.type_name))?;
        ensure!(
            stored.blobs.len() == node.params.len(),
            "layer '{}': the caffemodel stores {} blob(s), the net needs {}",
            node.layer,
            stored.blobs.len(),
            node.params.len()
        );
        for (spec, blob) in node.params.iter().zip(&stored.blobs) {
            ensure!(
                blob.data.len() == spec.len() && same_shape_ignoring_leading_ones(&blob.shape, &spec.shape),
                "layer '{}' blob {}: the caffemodel has shape {}, the net needs {}",
                node.layer,
                spec.index,
                fmt_shape(&blob.shape),
                fmt_shape(&spec.shape)
            );
            crate::graph::ensure_finite(&blob.data, || format!("layer '{}' blob {} in the caffemodel", node.layer, spec.index))?;
            out.push((spec, blob));
        }
    }
    Ok(out)
}

impl CaffeModel {
    /// The net with the caffemodel's weights on the CPU, without writing a weights file.
    pub fn net<T: Real>(&self, batch: usize) -> Result<CpuNet<'_, T>> {
        self.net_on(batch, Cpu::new())
    }

    /// The same on any device.
    pub fn net_on<'m, B: Kernels + FromMapped<'m>>(&'m self, batch: usize, device: B) -> Result<Net<B>> {
        let plan = Plan::new(&self.def, batch)?;
        let blobs: Vec<&Blob> = match_blobs(&plan, &self.layers)?.into_iter().map(|(_, b)| b).collect();
        let mut next = blobs.into_iter();
        Net::new(plan, device, |dev, _| {
            let data = &next.next().context("parameter count changed")?.data;
            Ok((dev.param_from_mapped(data)?, data.len()))
        })
    }

    /// Writes the deploy text and every matched blob (in the net's own shapes) to `out`.
    pub fn write_weights(&self, out: &Path) -> Result<(usize, usize)> {
        self.write_weights_in_space(out, InputSpace::Caffe)
    }

    /// The same, recording the input space the net expects.
    pub fn write_weights_in_space(&self, out: &Path, space: InputSpace) -> Result<(usize, usize)> {
        let plan = Plan::new(&self.def, 1)?;
        let matched = match_blobs(&plan, &self.layers)?;
        let tensors: Vec<TensorData> = matched
            .iter()
            .map(|(spec, blob)| TensorData { layer: &spec.layer, index: spec.index as u32, shape: &spec.shape, data: &blob.data })
            .collect();
        weights::write_in_space(out, &self.prototxt, space, &tensors).with_context(|| format!("writing {}", out.display()))?;
        Ok((tensors.len(), plan.param_count()))
    }
}

/// An ONNX model as a net definition (stored as prototxt text) with its blobs.
pub fn load_onnx(model: &Path) -> Result<CaffeModel> {
    let parsed = crate::onnx::proto::read_model(model)?;
    let imported = crate::onnx::import(&parsed).with_context(|| format!("{}", model.display()))?;
    let prototxt = crate::caffe::write::netdef_to_prototxt(&imported.def);
    // What the weights file will hold must read back as the same net.
    let again = netdef::parse_netdef(&prototxt).with_context(|| format!("{}: the translated net does not read back", model.display()))?;
    ensure!(again == imported.def, "{}: the translated net does not read back unchanged", model.display());
    Ok(CaffeModel { prototxt, def: imported.def, layers: imported.layers })
}

/// `dgnam-convert --onnx`: nothing is written unless the whole model translates.
pub fn convert_onnx(model: &Path, out: &Path, space: InputSpace) -> Result<(usize, usize)> {
    let m = load_onnx(model)?;
    m.write_weights_in_space(out, space).with_context(|| format!("{}", model.display()))
}

pub fn convert(prototxt: &Path, model: &Path, out: &Path) -> Result<(usize, usize)> {
    let m = load(prototxt, model)?;
    m.write_weights(out).with_context(|| format!("{} with {}", prototxt.display(), model.display()))
}

/// A weights file for a prototxt with random weights (`Net::random` with this seed): real
/// shapes for tests and benchmarks where the trained weights are not at hand.
pub fn write_random(prototxt: &Path, seed: u64, out: &Path) -> Result<(usize, usize)> {
    let text = std::fs::read_to_string(prototxt).with_context(|| format!("cannot read {}", prototxt.display()))?;
    let def = netdef::parse_netdef(&text).with_context(|| format!("{}", prototxt.display()))?;
    let net = CpuNet::<f32>::random(&def, 1, seed, Cpu::new())?;
    let mut tensors = Vec::new();
    for (i, node) in net.plan.nodes.iter().enumerate() {
        for spec in &node.params {
            tensors.push(TensorData { layer: &spec.layer, index: spec.index as u32, shape: &spec.shape, data: net.param(i, spec.index) });
        }
    }
    weights::write(out, &text, &tensors).with_context(|| format!("writing {}", out.display()))?;
    Ok((tensors.len(), net.plan.param_count()))
}
