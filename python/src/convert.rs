//! `dgnam.convert`: `dgnam-convert` as a call.

use crate::errors::OrRaise;
use dgnam::ir::InputSpace;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

/// A deploy prototxt with its trained caffemodel, a prototxt with random weights from
/// `random_weights` (a seed), or an ONNX model (`onnx=`, with `input_space` "torchvision",
/// the default, or "caffe") into the weights file `out`. Returns {"path", "tensors",
/// "parameters"}. Nothing is written unless the whole model converts.
#[pyfunction]
#[pyo3(signature = (prototxt = None, caffemodel = None, out = None, *, onnx = None, input_space = None, random_weights = None))]
pub fn convert<'py>(
    py: Python<'py>,
    prototxt: Option<PathBuf>,
    caffemodel: Option<PathBuf>,
    out: Option<PathBuf>,
    onnx: Option<PathBuf>,
    input_space: Option<&str>,
    random_weights: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let out = out.ok_or_else(|| PyValueError::new_err("out: the .dgnw file to write is missing"))?;
    let space = match input_space {
        None | Some("torchvision") => InputSpace::Torchvision,
        Some("caffe") => InputSpace::Caffe,
        Some(s) => return Err(PyValueError::new_err(format!("input_space: '{s}' is neither torchvision nor caffe"))),
    };
    if onnx.is_some() && (prototxt.is_some() || caffemodel.is_some() || random_weights.is_some()) {
        return Err(PyValueError::new_err(
            "onnx= converts an ONNX model on its own: give no prototxt, caffemodel or random_weights with it",
        ));
    }
    if random_weights.is_some() && caffemodel.is_some() {
        return Err(PyValueError::new_err("give a caffemodel or random_weights, not both"));
    }
    // The same choice, and the same messages, as dgnam-convert's.
    let inputs: Vec<PathBuf> = [&onnx, &prototxt, &caffemodel].into_iter().flatten().cloned().collect();
    let (tensors, parameters) = py
        .detach(|| match (&onnx, &prototxt, &caffemodel, random_weights) {
            (None, ..) if input_space.is_some() => {
                Err(anyhow::anyhow!("--input-space applies to --onnx models only (Caffe models are caffe)"))
            }
            (Some(model), ..) => dgnam::convert::convert_onnx(model, &out, space),
            (None, Some(p), _, Some(seed)) => dgnam::convert::write_random(p, seed, &out),
            (None, Some(p), Some(model), None) => dgnam::convert::convert(p, model, &out),
            _ => Err(anyhow::anyhow!("give --onnx, or --prototxt with --caffemodel or --random-weights")),
        })
        .or_raise(&inputs)?;
    let d = PyDict::new(py);
    d.set_item("path", out.display().to_string())?;
    d.set_item("tensors", tensors)?;
    d.set_item("parameters", parameters)?;
    Ok(d)
}
