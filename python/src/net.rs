//! `dgnam.Net`: a net file opened once, then run forward and backward on arrays of any
//! batch, as `dgnam forward`, `dgnam backward` and `dgnam info` run it.

use crate::arrays;
use crate::errors::OrRaise;
use anyhow::{ensure, Context, Result};
use dgnam::app::{self, Device};
use dgnam::caffe::NetDef;
use dgnam::device::cpu::on_pool;
use dgnam::device::cuda::Precision;
use dgnam::device::{Cpu, Cuda, FromMapped};
use dgnam::graph::{self, Plan, UnitRef};
use dgnam::io::NetSource;
use dgnam::ops::Kernels;
use dgnam::tensor::fmt_shape;
use numpy::PyUntypedArrayMethods;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;

/// A net (a .dgnw weights file, or a bare .prototxt with seeded random weights, seed 0)
/// on a device: "auto" (a usable GPU, else the CPU), "cpu" or "cuda"; precision "f32" or
/// "tf32" (GPU only).
#[pyclass(module = "dgnam", frozen)]
pub struct Net {
    source: NetSource,
    device: Device,
    precision: Precision,
    device_line: String,
}

/// What runs on a built net, whichever its device.
trait OnNet: Sync {
    type Output: Send;
    fn run<B: Kernels<Scalar = f32>>(&self, net: &graph::Net<B>) -> Result<Self::Output>;
}

impl Net {
    pub fn path(&self) -> PathBuf {
        self.source.path.clone()
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The net at `batch` on its device, and `job` run on it. A .dgnw's weights are used
    /// where they are mapped on the CPU (uploaded once per call to a GPU).
    fn with_net<J: OnNet>(&self, batch: usize, job: &J) -> Result<J::Output> {
        fn build<'w, B: Kernels + FromMapped<'w>>(src: &'w NetSource, batch: usize, backend: B) -> Result<graph::Net<B>> {
            match &src.file {
                Some(file) => graph::Net::from_weights(file, batch, backend),
                None => src.build(batch, 0, backend),
            }
        }
        on_pool(|| match self.device {
            Device::Cuda => job.run(&build(&self.source, batch, Cuda::new(self.precision)?)?),
            Device::Cpu | Device::Auto => job.run(&build(&self.source, batch, Cpu::<f32>::new())?),
        })
    }
}

/// Refuses an input the net cannot take, as `dgnam forward` refuses an input file.
fn check_input(def: &NetDef, shape: &[usize], data: &[f32]) -> Result<()> {
    let declared = &def.inputs.first().context("the net declares no input")?.shape;
    ensure!(
        shape.len() == declared.len() && shape.first().is_some_and(|&n| n > 0) && shape[1..] == declared[1..],
        "x: input shape {} does not fit the net's input {} (any batch size)",
        fmt_shape(shape),
        fmt_shape(declared)
    );
    graph::ensure_finite(data, || "x".to_string())
}

struct Forward<'a> {
    x: &'a [f32],
    layers: &'a [String],
}

impl OnNet for Forward<'_> {
    /// (layer, shape, values) per requested layer.
    type Output = Vec<(String, Vec<usize>, Vec<f32>)>;
    fn run<B: Kernels<Scalar = f32>>(&self, net: &graph::Net<B>) -> Result<Self::Output> {
        let wanted: Vec<(String, graph::BlobId)> = if self.layers.is_empty() {
            let id = net.plan.last_output();
            let name = net.plan.nodes.last().map_or(net.plan.blobs[id].name.clone(), |n| n.layer.clone());
            vec![(name, id)]
        } else {
            self.layers.iter().map(|l| Ok((l.clone(), net.plan.layer_output(l)?))).collect::<Result<_>>()?
        };
        let mut st = net.state()?;
        net.forward(&mut st, &[self.x])?;
        wanted.into_iter().map(|(name, id)| Ok((name, net.plan.blobs[id].shape.clone(), net.backend.download(st.value(id))?))).collect()
    }
}

struct Backward<'a> {
    x: &'a [f32],
    layer: &'a str,
    unit: UnitRef,
}

impl OnNet for Backward<'_> {
    type Output = Vec<f32>;
    fn run<B: Kernels<Scalar = f32>>(&self, net: &graph::Net<B>) -> Result<Vec<f32>> {
        app::input_gradient(net, self.x, self.layer, self.unit)
    }
}

/// `layers` as forward takes it: None (the last layer), one name, or a sequence of names.
fn layer_names(layers: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match layers {
        None => Ok(Vec::new()),
        Some(l) if l.is_none() => Ok(Vec::new()),
        Some(l) => match l.extract::<String>() {
            Ok(one) => Ok(vec![one]),
            Err(_) => l.extract::<Vec<String>>().map_err(|_| PyValueError::new_err("layers: give a layer name or a list of layer names")),
        },
    }
}

pub fn parse_precision(precision: &str) -> PyResult<Precision> {
    precision.parse().map_err(|e: String| PyValueError::new_err(format!("precision: {e}")))
}

#[pymethods]
impl Net {
    #[new]
    #[pyo3(signature = (path, device = "auto", precision = "f32"))]
    fn new(py: Python<'_>, path: PathBuf, device: &str, precision: &str) -> PyResult<Self> {
        let precision = parse_precision(precision)?;
        let device: Device = device.parse().map_err(|e: String| PyValueError::new_err(format!("device: {e}")))?;
        let inputs = [path.clone()];
        let source = py.detach(|| NetSource::open(&path)).or_raise(&inputs)?;
        let (device, device_line) = py.detach(|| app::resolve_device(device, precision)).or_raise(&[])?;
        Ok(Net { source, device, precision, device_line })
    }

    /// The outputs of `layers` (a name or a list; default: the last layer) for input `x`
    /// (N x C x H x W in the net's input space, any batch N): {layer: array}.
    #[pyo3(signature = (x, layers = None))]
    fn forward<'py>(&self, x: &Bound<'py, PyAny>, layers: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyDict>> {
        let py = x.py();
        let layers = layer_names(layers)?;
        let x = arrays::float32(x)?;
        let (shape, data) = (x.shape().to_vec(), arrays::slice(&x)?);
        let outputs = py
            .detach(|| {
                check_input(&self.source.def, &shape, data)?;
                self.with_net(shape[0], &Forward { x: data, layers: &layers })
            })
            .or_raise(&[])?;
        let dict = PyDict::new(py);
        for (name, shape, values) in outputs {
            dict.set_item(name, arrays::owned(py, &shape, values)?)?;
        }
        Ok(dict)
    }

    /// d(sum over the batch of layer[n, unit (, y, x)]) / d x, shaped like `x`; `xy` is the
    /// position (x, y) of a convolutional unit (default: the center of its map).
    #[pyo3(signature = (x, layer, unit, xy = None))]
    fn backward<'py>(&self, x: &Bound<'py, PyAny>, layer: &str, unit: usize, xy: Option<(usize, usize)>) -> PyResult<Bound<'py, PyAny>> {
        let py = x.py();
        let x = arrays::float32(x)?;
        let (shape, data) = (x.shape().to_vec(), arrays::slice(&x)?);
        let grad = py
            .detach(|| {
                check_input(&self.source.def, &shape, data)?;
                self.with_net(shape[0], &Backward { x: data, layer, unit: UnitRef { unit, xy } })
            })
            .or_raise(&[])?;
        Ok(arrays::owned(py, &shape, grad)?.into_any())
    }

    /// What `dgnam info` reports, as data: the inputs, every layer with its output shapes,
    /// parameter count and MFLOP (at the declared batch), the totals, and the weights file's
    /// input space; "text" is what `dgnam info` prints.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let def = &self.source.def;
        let batch = def.inputs.first().and_then(|i| i.shape.first().copied()).unwrap_or(1).max(1);
        let path = self.source.path.clone();
        let (plan, text) = py
            .detach(|| -> Result<(Plan, String)> {
                let plan = Plan::new(def, batch).with_context(|| format!("{}", path.display()))?;
                Ok((plan, app::info(&path)?))
            })
            .or_raise(std::slice::from_ref(&path))?;
        let d = PyDict::new(py);
        d.set_item("name", &plan.name)?;
        d.set_item("path", path.display().to_string())?;
        d.set_item("batch", batch)?;
        let inputs = PyList::empty(py);
        for &i in &plan.inputs {
            let e = PyDict::new(py);
            e.set_item("name", &plan.blobs[i].name)?;
            e.set_item("shape", plan.blobs[i].shape.clone())?;
            inputs.append(e)?;
        }
        d.set_item("inputs", inputs)?;
        let layers = PyList::empty(py);
        for node in &plan.nodes {
            let e = PyDict::new(py);
            e.set_item("name", &node.layer)?;
            e.set_item("type", node.type_name)?;
            let tops: Vec<Vec<usize>> = node.tops.iter().map(|&t| plan.blobs[t].shape.clone()).collect();
            e.set_item("outputs", tops)?;
            e.set_item("parameters", node.params.iter().map(|p| p.len()).sum::<usize>())?;
            e.set_item("mflop", node.forward_flops(&plan) as f64 / 1e6)?;
            layers.append(e)?;
        }
        d.set_item("layers", layers)?;
        d.set_item("parameters", plan.param_count())?;
        d.set_item("gflop", plan.flops() as f64 / 1e9)?;
        match &self.source.file {
            Some(f) => {
                d.set_item("weights", f.header.tensors.len())?;
                d.set_item("input_space", f.header.input_space.name())?;
            }
            None => {
                d.set_item("weights", py.None())?;
                d.set_item("input_space", py.None())?;
            }
        }
        d.set_item("text", text)?;
        Ok(d)
    }

    /// The file the net was read from.
    #[getter(path)]
    fn py_path(&self) -> String {
        self.source.path.display().to_string()
    }

    /// Where it runs: "cpu" or "cuda".
    #[getter(device)]
    fn py_device(&self) -> &'static str {
        match self.device {
            Device::Cuda => "cuda",
            Device::Cpu | Device::Auto => "cpu",
        }
    }

    /// The line the command line prints about the device, e.g. "device: cpu (no CUDA driver found)".
    #[getter]
    fn device_info(&self) -> String {
        self.device_line.clone()
    }

    #[getter(precision)]
    fn py_precision(&self) -> String {
        self.precision.to_string()
    }

    /// The input shape the net declares (its batch is only the default: any batch runs).
    #[getter]
    fn input_shape(&self) -> Vec<usize> {
        self.source.def.inputs.first().map(|i| i.shape.clone()).unwrap_or_default()
    }

    fn __repr__(&self) -> String {
        format!("dgnam.Net('{}', device='{}', precision='{}')", self.source.path.display(), self.py_device(), self.precision)
    }
}
