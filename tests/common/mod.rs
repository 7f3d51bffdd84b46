//! Shared helpers for the integration tests: fixture paths and scratch directories.
#![allow(dead_code)]

use dgnam::caffe::caffemodel::read_caffemodel;
use dgnam::caffe::netdef::parse_netdef;
use dgnam::convert::CaffeModel;
use dgnam::npy;
use dgnam::ops::cases::Fixture;
use dgnam::tensor::Tensor;
use std::path::{Path, PathBuf};

/// The repository root: where the crate was built, or (for test executables copied to
/// another machine, as `.gpu/` is) the current directory when that path is gone.
pub fn root() -> &'static Path {
    let built = Path::new(env!("CARGO_MANIFEST_DIR"));
    if built.join("weights").is_dir() {
        built
    } else {
        Path::new(".")
    }
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// The prototxt of one of the ops' Caffe fixtures (`dgnam::ops::cases::Fixture`).
pub fn fixture_prototxt(f: &Fixture) -> String {
    std::fs::read_to_string(fixture("caffe/opencv_layers").join(format!("{}.prototxt", f.name))).unwrap()
}

/// One of the ops' Caffe fixtures, loaded: the net with its caffemodel's weights (if it has
/// any), the input, and the output real Caffe computed.
pub struct LoadedFixture {
    pub model: CaffeModel,
    pub input: Tensor,
    pub expected: Tensor,
}

pub fn load_fixture(f: &Fixture) -> LoadedFixture {
    let dir = fixture("caffe/opencv_layers");
    let prototxt = fixture_prototxt(f);
    let def = parse_netdef(&prototxt).unwrap();
    let weights = dir.join(format!("{}.caffemodel", f.name));
    let layers = if weights.exists() { read_caffemodel(&weights).unwrap() } else { vec![] };
    LoadedFixture {
        model: CaffeModel { prototxt, def, layers },
        input: npy::read(&dir.join(f.input)).unwrap(),
        expected: npy::read(&dir.join(format!("{}.npy", f.name))).unwrap(),
    }
}

/// The fixture's `output` blob, computed on some device, against Caffe's within 1e-5 of
/// the largest value.
pub fn assert_matches_caffe(f: &Fixture, where_: &str, shape: &[usize], got: &[f32], expected: &Tensor) {
    assert_eq!(shape, expected.shape.as_slice(), "{} fixture {}: output shape", f.family, f.name);
    let err = rel_err(got, &expected.data);
    assert!(err <= 1e-5, "{} fixture {} {where_}: relative error {err:e} against Caffe", f.family, f.name);
}

pub fn shipped(rel: &str) -> PathBuf {
    root().join("weights").join(rel)
}

/// A fresh, empty scratch directory unique to this test. Those that earlier runs of the
/// same test left behind (their process gone) are removed first, so /tmp holds at most
/// one per test name.
pub fn scratch(name: &str) -> PathBuf {
    let tmp = std::env::temp_dir();
    let suffix = format!("-{name}");
    for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let pid = file.strip_prefix("dgnam-test-").and_then(|r| r.strip_suffix(suffix.as_str()));
        if let Some(pid) = pid.filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tmp.join(format!("dgnam-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The real LeNet fixture converted by `dgnam-convert` into `dir/lenet.dgnw`.
pub fn converted_lenet(dir: &Path) -> PathBuf {
    let out = dir.join("lenet.dgnw");
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_dgnam-convert"))
        .arg("--prototxt")
        .arg(fixture("caffe/lenet_mnist/lenet.prototxt"))
        .arg("--caffemodel")
        .arg(fixture("caffe/lenet_mnist/lenet_iter_10000.caffemodel"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    out
}

/// `dgnam-convert --onnx MODEL -o OUT EXTRA...`.
pub fn onnx_convert(model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dgnam-convert"))
        .arg("--onnx")
        .arg(model)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// `dgnam forward --device cpu` of `input` through `net`, writing each of `layers` (the
/// net's output when empty) into `out_dir`.
pub fn forward_cpu(net: &Path, input: &Path, layers: &[&str], out_dir: &Path) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_dgnam"));
    c.arg("forward").arg("--net").arg(net).arg("--input").arg(input).arg("--out-dir").arg(out_dir).arg("--device").arg("cpu");
    for l in layers {
        c.arg("--layer").arg(l);
    }
    c.output().unwrap()
}

pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// max |a - b| / max |b|: the relative error the Caffe reference checks use.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let diff = a.iter().zip(b).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale.max(1e-30)
}

/// The tiny test nets (tests/fixtures/tiny) converted with seeded random weights into
/// `dir`: (generator, classifier).
pub fn tiny_weight_files(dir: &Path) -> (PathBuf, PathBuf) {
    let (g, c) = (dir.join("gen.dgnw"), dir.join("clf.dgnw"));
    for (proto, seed, out) in [("tiny/generator.prototxt", "21", &g), ("tiny/classifier.prototxt", "22", &c)] {
        let r = std::process::Command::new(env!("CARGO_BIN_EXE_dgnam-convert"))
            .arg("--prototxt")
            .arg(fixture(proto))
            .args(["--random-weights", seed, "-o"])
            .arg(out)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    (g, c)
}

/// One node of a CPU net run forward on random inputs: its bottoms `xs`, tops `y`, a random
/// gradient `dys` for each top, and what the forward pass kept (`aux`). What a test of that
/// node's backward pass starts from.
pub struct NodeRun {
    pub xs: Vec<Vec<f32>>,
    pub y: Vec<Vec<f32>>,
    pub dys: Vec<Vec<f32>>,
    pub aux: dgnam::ops::Aux<dgnam::device::Cpu<'static, f32>>,
}

impl NodeRun {
    /// Node `i` of `net`, its inputs and top gradients drawn from `rng` (normal, sd 1).
    pub fn new(net: &dgnam::graph::CpuNet<'static, f32>, i: usize, rng: &mut dgnam::rng::Rng) -> NodeRun {
        let (plan, node) = (&net.plan, &net.plan.nodes[i]);
        let mut blob = |id: usize| rng.normal_vec_f32(plan.blobs[id].len(), 1.0);
        let xs: Vec<Vec<f32>> = node.bottoms.iter().map(|&id| blob(id)).collect();
        let dys: Vec<Vec<f32>> = node.tops.iter().map(|&id| blob(id)).collect();
        let mut y: Vec<Vec<f32>> = node.tops.iter().map(|&id| vec![0.0; plan.blobs[id].len()]).collect();
        let mut aux = Default::default();
        let x: Vec<&Vec<f32>> = xs.iter().collect();
        dgnam::ops::forward(&net.backend, &node.op, net.node_params(i), &x, &mut y, &mut aux).unwrap();
        NodeRun { xs, y, dys, aux }
    }

    pub fn x(&self) -> Vec<&Vec<f32>> {
        self.xs.iter().collect()
    }

    pub fn dy(&self) -> Vec<&Vec<f32>> {
        self.dys.iter().collect()
    }
}
