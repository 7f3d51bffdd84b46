//! `dgnam.synthesize` and `dgnam.demo`: the commands themselves (`app::synthesize`,
//! `run_demo`), run into `out_dir` or, without one, into a temporary folder that is removed
//! afterwards; the results are read back from the files they wrote, so what Python gets is
//! exactly what the command line writes.

use crate::arrays;
use crate::errors::{to_py, OrRaise};
use crate::net::{parse_precision, Net};
use crate::progress::PyProgress;
use anyhow::{Context, Result};
use dgnam::app::{self, DeviceSpec, Placement};
use dgnam::device::cpu::on_pool;
use dgnam::device::cuda::Precision;
use dgnam::graph::Plan;
use dgnam::io::Progress;
use dgnam::npy;
use dgnam::synth::options::{Maximize, SynthOptions, UnitSel, Units};
use dgnam::synth::render::{to_rgb, Render};
use dgnam::synth::shard::Seeds;
use numpy::PyUntypedArrayMethods;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A folder of its own under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> PyResult<TempDir> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dgnam-python-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display())).or_raise(&[])?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A net argument: a `dgnam.Net` (its file, device and precision) or a path.
fn net_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(PathBuf, Option<(DeviceSpec, Precision)>)> {
    if let Ok(net) = obj.cast::<Net>() {
        let net = net.get();
        return Ok((net.path(), Some((DeviceSpec { device: net.device(), ordinal: 0 }, net.precision()))));
    }
    let path = obj.extract::<PathBuf>().map_err(|_| PyValueError::new_err(format!("{what}: give a path or a dgnam.Net")))?;
    Ok((path, None))
}

/// `units` as the command's `--units` reads it: None (945, the command's default), "all",
/// a string ("945,643", "945+643"), an int, or a sequence of ints, "a+b" strings and
/// (a, b) pairs.
fn units_arg(units: Option<&Bound<'_, PyAny>>) -> PyResult<Units> {
    let bad = |e: anyhow::Error| PyValueError::new_err(format!("units: {e:#}"));
    let Some(u) = units.filter(|u| !u.is_none()) else { return Ok(Units::List(vec![UnitSel::One(945)])) };
    if let Ok(s) = u.extract::<String>() {
        return Units::parse(&s).map_err(bad);
    }
    if let Ok(n) = u.extract::<usize>() {
        return Ok(Units::List(vec![UnitSel::One(n)]));
    }
    let items: Vec<Bound<'_, PyAny>> =
        u.try_iter().and_then(|it| it.collect()).map_err(|_| PyValueError::new_err("units: give 'all', a unit, or a list of units"))?;
    let mut list = Vec::with_capacity(items.len());
    for item in items {
        if let Ok(n) = item.extract::<usize>() {
            list.push(UnitSel::One(n));
        } else if let Ok((a, b)) = item.extract::<(usize, usize)>() {
            list.push(UnitSel::Two(a, b));
        } else if let Ok(s) = item.extract::<String>() {
            list.push(UnitSel::parse(&s).map_err(bad)?);
        } else {
            return Err(PyValueError::new_err(format!("units: {item} is not a unit (an int, 'a+b' or a pair (a, b))")));
        }
    }
    if list.is_empty() {
        return Err(PyValueError::new_err("units: no units given"));
    }
    Ok(Units::List(list))
}

/// An array to save as a .npy file: its shape and values.
type PendingNpy = (PathBuf, Vec<usize>, Vec<f32>);

/// `init_code`: a path to an (N, code) .npy, or an array, to be saved as
/// `dir/init_code.npy` for the command to read (a 1-D array is one row) once the
/// arguments are known to be good.
fn init_code_arg(init: Option<&Bound<'_, PyAny>>, dir: &Path) -> PyResult<(Option<PathBuf>, Option<PendingNpy>)> {
    let Some(init) = init.filter(|i| !i.is_none()) else { return Ok((None, None)) };
    if let Ok(p) = init.extract::<PathBuf>() {
        return Ok((Some(p), None));
    }
    let a = arrays::float32(init)?;
    let shape = match a.shape() {
        [n] => vec![1, *n],
        [n, c] => vec![*n, *c],
        s => return Err(PyValueError::new_err(format!("init_code: needs shape (N, code), got {s:?}"))),
    };
    let path = dir.join("init_code.npy");
    Ok((Some(path.clone()), Some((path, shape, arrays::slice(&a)?.to_vec()))))
}

fn write_npy((path, shape, data): &PendingNpy) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    npy::write(path, shape, data)
}

fn seeds_arg(seeds: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Seeds>> {
    let Some(s) = seeds.filter(|s| !s.is_none()) else { return Ok(None) };
    if let Ok(text) = s.extract::<String>() {
        return Seeds::parse(&text).map(Some).map_err(|e| PyValueError::new_err(format!("seeds: {e:#}")));
    }
    let list = s.extract::<Vec<u64>>().map_err(|_| PyValueError::new_err("seeds: give a list of seeds or 'A..B'"))?;
    if list.is_empty() {
        return Err(PyValueError::new_err("seeds: no seeds given"));
    }
    Ok(Some(Seeds(list)))
}

fn objective_arg(value: &str) -> PyResult<Maximize> {
    match value {
        "activation" => Ok(Maximize::Activation),
        "prob" => Ok(Maximize::Prob),
        _ => Err(PyValueError::new_err(format!("objective: '{value}' is neither activation nor prob"))),
    }
}

fn render_arg(value: &str) -> PyResult<Render> {
    match value {
        "paper" => Ok(Render::Paper),
        "mean" => Ok(Render::Mean),
        _ => Err(PyValueError::new_err(format!("render: '{value}' is neither paper nor mean"))),
    }
}

/// The file stems of the run's units, in order (as the command names their files).
fn stems(o: &SynthOptions, net: &Path) -> Result<Vec<String>> {
    let sels = match &o.units {
        Units::List(l) => l.clone(),
        Units::All => {
            let (def, _) = dgnam::io::read_netdef(net)?;
            let plan = Plan::new(&def, 1)?;
            let count = plan.blobs[plan.layer_output(&o.layer)?].shape.get(1).copied().unwrap_or(0);
            (0..count).map(UnitSel::One).collect()
        }
    };
    let seeds = o.seed_list();
    let mut out = Vec::new();
    for sel in &sels {
        for seed in &seeds {
            let stem = sel.stem(&o.layer);
            out.push(if seeds.len() > 1 { format!("{stem}_s{seed}") } else { stem });
        }
    }
    Ok(out)
}

/// One unit's files and its summary entry, as read back from the run's folder.
struct UnitFiles {
    entry: serde_json::Value,
    image: dgnam::tensor::Tensor,
    code: dgnam::tensor::Tensor,
    rgb: Vec<u8>,
}

/// The units `stems` that the summary of `dir` lists, in that order.
fn read_units(dir: &Path, stems: &[String], render: Render) -> Result<Vec<(String, UnitFiles)>> {
    let summary = dir.join("summary.json");
    let text = std::fs::read_to_string(&summary).with_context(|| format!("cannot read {}", summary.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}", summary.display()))?;
    let units = doc["units"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for stem in stems {
        let png = format!("{stem}.png");
        let Some(entry) = units.iter().find(|u| u["png"].as_str() == Some(png.as_str())) else { continue };
        let image = npy::read(&dir.join(format!("{stem}.image.npy")))?;
        let code = npy::read(&dir.join(format!("{stem}.code.npy")))?;
        let (c, h, w) = match image.shape[..] {
            [1, c, h, w] => (c, h, w),
            _ => anyhow::bail!("{stem}.image.npy: shape {:?} is not 1 x C x H x W", image.shape),
        };
        let rgb = to_rgb(&image.data, c, h, w, render).into_raw();
        out.push((stem.clone(), UnitFiles { entry: entry.clone(), image, code, rgb }));
    }
    Ok(out)
}

/// A JSON value as a Python object.
fn py_json<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (v.to_string(),))
}

/// The preferred images of `units` of `layer` of the classifier `net`, through `generator`
/// (None or "none": pixel-space AM with the hand-designed priors), as `dgnam synthesize`
/// makes them; see the stubs (dgnam/__init__.pyi) for every argument.
#[pyfunction]
#[pyo3(signature = (
    net, generator, layer = "fc8", units = None, iters = 200, lr = None, lr_end = 1e-10, decay = 0.99,
    bounds = None, seed = 0, batch = None, init_code = None, out_dir = None, progress = true, *,
    xy = None, objective = "activation", gamma = 0.0, seeds = None, init_image = None,
    encoder_layer = None, labels = None, render = "paper", save_every = None, device = None, precision = None
))]
#[allow(clippy::too_many_arguments)]
pub fn synthesize<'py>(
    py: Python<'py>,
    net: &Bound<'py, PyAny>,
    generator: Option<&Bound<'py, PyAny>>,
    layer: &str,
    units: Option<&Bound<'py, PyAny>>,
    iters: usize,
    lr: Option<f64>,
    lr_end: f64,
    decay: f64,
    bounds: Option<PathBuf>,
    seed: u64,
    batch: Option<usize>,
    init_code: Option<&Bound<'py, PyAny>>,
    out_dir: Option<PathBuf>,
    progress: bool,
    xy: Option<(usize, usize)>,
    objective: &str,
    gamma: f64,
    seeds: Option<&Bound<'py, PyAny>>,
    init_image: Option<PathBuf>,
    encoder_layer: Option<String>,
    labels: Option<PathBuf>,
    render: &str,
    save_every: Option<usize>,
    device: Option<&str>,
    precision: Option<&str>,
) -> PyResult<Bound<'py, PyList>> {
    let (net_path, net_place) = net_arg(net, "net")?;
    let gen_path = match generator.filter(|g| !g.is_none()) {
        None => PathBuf::from("none"),
        Some(g) => net_arg(g, "generator")?.0,
    };
    let spec: DeviceSpec = match device {
        Some(d) => d.parse().map_err(|e: String| PyValueError::new_err(format!("device: {e}")))?,
        None => net_place.map_or(DeviceSpec { device: app::Device::Auto, ordinal: 0 }, |p| p.0),
    };
    let precision = match precision {
        Some(p) => parse_precision(p)?,
        None => net_place.map_or(Precision::F32, |p| p.1),
    };
    let temp = match out_dir {
        Some(_) => None,
        None => Some(TempDir::new()?),
    };
    let dir = out_dir.clone().unwrap_or_else(|| temp.as_ref().map(|t| t.0.clone()).unwrap_or_default());

    let mut o = SynthOptions::new(layer, units_arg(units)?);
    o.net = Some(net_path.clone());
    o.generator = Some(gen_path.clone());
    o.xy = xy;
    o.objective = objective_arg(objective)?;
    o.gamma = gamma;
    o.iters = iters;
    o.lr = lr;
    o.lr_end = lr_end;
    o.decay = decay;
    o.bounds = bounds.clone();
    o.seed = seed;
    o.seeds = seeds_arg(seeds)?;
    o.init_image = init_image.clone();
    o.encoder_layer = encoder_layer;
    o.labels = labels.clone();
    o.batch = batch;
    o.out_dir = dir.clone();
    o.render = render_arg(render)?;
    o.save_every = save_every;
    let (init_path, init_array) = init_code_arg(init_code, &dir)?;
    o.init_code = init_path;
    o.check().or_raise(&[])?;
    if let Some(pending) = &init_array {
        write_npy(pending).or_raise(&[])?;
    }

    let inputs: Vec<PathBuf> =
        [Some(&net_path), Some(&gen_path), bounds.as_ref(), o.init_code.as_ref(), init_image.as_ref(), labels.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
    let bar = PyProgress::new(progress);
    let (resolved, line) = py.detach(|| app::resolve_device_on(spec, precision)).or_raise(&[])?;
    bar.message(&line);
    let place = Placement { device: resolved, ordinal: spec.ordinal, precision, shard: None };
    let report = py.detach(|| on_pool(|| app::synthesize(&o, &place, &bar))).or_raise(&inputs)?;
    if !report.failed.is_empty() {
        let names: Vec<&str> = report.failed.iter().map(|(u, _)| u.as_str()).collect();
        return Err(PyRuntimeError::new_err(format!("{} unit(s) went non-finite and were skipped: {}", names.len(), names.join(", "))));
    }
    let read = py.detach(|| read_units(&dir, &stems(&o, &net_path)?, o.render)).map_err(|e| to_py(&e, &[]))?;

    let results = PyList::empty(py);
    for (stem, u) in read {
        let d = PyDict::new(py);
        let e = &u.entry;
        d.set_item("layer", py_json(py, &e["layer"])?)?;
        match e["unit"].as_array() {
            Some(pair) => d.set_item("unit", PyTuple::new(py, pair.iter().map(|v| v.as_u64()))?)?,
            None => d.set_item("unit", e["unit"].as_u64())?,
        }
        d.set_item("seed", py_json(py, &e["seed"])?)?;
        d.set_item("xy", xy)?;
        d.set_item("label", py_json(py, &e["label"])?)?;
        let [_, c, h, w] = u.image.shape[..] else { unreachable!("read_units checked the shape") };
        d.set_item("image", arrays::owned(py, &[c, h, w], u.image.data)?)?;
        d.set_item("rgb", arrays::owned(py, &[h, w, 3], u.rgb)?)?;
        let code_len = u.code.data.len();
        d.set_item("code", arrays::owned(py, &[code_len], u.code.data)?)?;
        let acts: Vec<f64> = e["activations"].as_array().map(|a| a.iter().filter_map(|v| v.as_f64()).collect()).unwrap_or_default();
        let n = acts.len();
        d.set_item("activations", arrays::owned(py, &[n], acts)?)?;
        d.set_item("probability", py_json(py, &e["probability"])?)?;
        d.set_item("stopped_at", py_json(py, &e["stopped_at"])?)?;
        d.set_item("seconds", py_json(py, &e["seconds"])?)?;
        if out_dir.is_some() {
            let files = PyDict::new(py);
            for (key, ext) in [("png", "png"), ("image", "image.npy"), ("code", "code.npy")] {
                files.set_item(key, dir.join(format!("{stem}.{ext}")).display().to_string())?;
            }
            d.set_item("files", files)?;
        } else {
            d.set_item("files", py.None())?;
        }
        results.append(d)?;
    }
    drop(temp);
    Ok(results)
}

/// `dgnam demo`: LeNet's ten digits by pixel-space AM and by DGN-AM through the shipped
/// prior, as the command makes them (into `out_dir`, or a temporary folder).
#[pyfunction]
#[pyo3(signature = (out_dir = None, iters = 200, seed = 0, progress = true))]
pub fn demo<'py>(py: Python<'py>, out_dir: Option<PathBuf>, iters: usize, seed: u64, progress: bool) -> PyResult<Bound<'py, PyDict>> {
    let temp = match out_dir {
        Some(_) => None,
        None => Some(TempDir::new()?),
    };
    let dir = out_dir.clone().unwrap_or_else(|| temp.as_ref().map(|t| t.0.clone()).unwrap_or_default());
    let bar = PyProgress::new(progress);
    let report = py.detach(|| on_pool(|| dgnam::synth::demo::run_demo(&dir, iters, seed, &bar))).or_raise(&[])?;
    let decode = |p: &Path| -> Result<(Vec<usize>, Vec<u8>)> {
        let img = image::open(p).with_context(|| format!("cannot read {}", p.display()))?.to_rgb8();
        Ok((vec![img.height() as usize, img.width() as usize, 3], img.into_raw()))
    };
    let out = PyDict::new(py);
    for (key, rows) in [("pixel_am", &report.pixel), ("dgn_am", &report.dgn)] {
        let list = PyList::empty(py);
        for (i, r) in rows.iter().enumerate() {
            let d = PyDict::new(py);
            d.set_item("digit", r.digit)?;
            d.set_item("image", arrays::owned(py, &[1, 28, 28], r.image.clone())?)?;
            let (shape, rgb) = decode(&r.png).map_err(|e| to_py(&e, &[]))?;
            d.set_item("rgb", arrays::owned(py, &shape, rgb)?)?;
            d.set_item("activation", r.activation)?;
            d.set_item("probability", r.probability)?;
            d.set_item("nearest", (r.nearest.0, r.nearest.1))?;
            if key == "dgn_am" {
                let code = report.codes[i].clone();
                d.set_item("code", arrays::owned(py, &[code.len()], code)?)?;
            }
            list.append(d)?;
        }
        out.set_item(key, list)?;
    }
    let (shape, montage) = decode(&report.montage).map_err(|e| to_py(&e, &[]))?;
    out.set_item("montage", arrays::owned(py, &shape, montage)?)?;
    out.set_item("summary", report.summary())?;
    drop(temp);
    Ok(out)
}
