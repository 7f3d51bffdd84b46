//! `dgnam bench` end to end on the CPU (quick mode: one run per measurement), and the
//! backward contract the kernel benchmark relies on: an empty dx skips the data gradient.

mod common;

use common::{fixture, scratch, NodeRun};
use dgnam::caffe::netdef::parse_netdef;
use dgnam::device::Cpu;
use dgnam::graph::{CpuNet, Op};
use dgnam::ops;
use dgnam::rng::Rng;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn bench_json(args: &[&str], json: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_dgnam"))
        .args(["bench", "--device", "cpu", "--quick", "--json", json.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn positive(v: &Value, what: &str) -> f64 {
    let x = v.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x}");
    x
}

#[test]
fn kernel_json_has_every_layer_in_every_direction() {
    let dir = scratch("bench-kernels");
    let v = bench_json(&["--kernel-batch", "1"], &dir.join("k.json"));
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["batch"], 1);
    positive(&v["peak"]["gflops"], "peak GFLOP/s");
    assert_eq!(v["peak"]["kind"], "fp32", "the CPU is rated against its FP32 GEMM");
    positive(&v["peak"]["bandwidth_gbps"], "peak GB/s");
    let kernels = v["kernels"].as_array().unwrap();
    for k in kernels {
        let what = format!("{} {}", k["name"], k["direction"]);
        assert!(k["shape"].as_str().is_some_and(|s| s.contains("->")), "{what}: shape {}", k["shape"]);
        assert!(["forward", "backward-data", "backward-weights"].contains(&k["direction"].as_str().unwrap()), "{what}");
        positive(&k["ms"], &format!("{what} ms"));
        let rates = [&k["gflops"], &k["gbps"]].iter().filter(|r| !r.is_null()).count();
        assert_eq!(rates, 1, "{what}: exactly one of gflops and gbps");
        positive(if k["gflops"].is_null() { &k["gbps"] } else { &k["gflops"] }, &format!("{what} rate"));
        positive(&k["percent_of_peak"], &format!("{what} percent of peak"));
    }
    let has = |name: &str, dir: &str| kernels.iter().any(|k| k["name"] == name && k["direction"] == dir);
    let all = ["forward", "backward-data", "backward-weights"];
    let weighted = [
        "caffenet/conv1",
        "caffenet/conv2",
        "caffenet/conv3",
        "caffenet/conv4",
        "caffenet/conv5",
        "caffenet/fc6",
        "caffenet/fc7",
        "caffenet/fc8",
        "generator/defc7",
        "generator/defc6",
        "generator/defc5",
        "generator/deconv5",
        "generator/conv5_1",
        "generator/deconv4",
        "generator/conv4_1",
        "generator/deconv3",
        "generator/conv3_1",
        "generator/deconv2",
        "generator/deconv1",
        "generator/deconv0",
    ];
    for name in weighted {
        for d in all {
            assert!(has(name, d), "{name} {d} missing");
        }
    }
    for name in [
        "caffenet/pool1",
        "caffenet/pool2",
        "caffenet/pool5",
        "caffenet/norm1",
        "caffenet/norm2",
        "caffenet/relu1",
        "generator/relu_deconv1",
        "caffenet/prob",
        "dgn/crop",
    ] {
        assert!(has(name, "forward") && has(name, "backward-data") && !has(name, "backward-weights"), "{name}");
    }
    let gemm = kernels.iter().find(|k| k["name"] == "caffenet/fc6").unwrap();
    assert!(gemm["gflops"].is_number() && gemm["shape"].as_str().unwrap().starts_with("1x256x6x6 -> 1x4096"));
    let pool = kernels.iter().find(|k| k["name"] == "caffenet/pool1").unwrap();
    assert!(pool["gbps"].is_number());
    check_by_type(&v);
}

/// The time by layer type adds up each type's kernels in each direction.
fn check_by_type(v: &Value) {
    let kernels = v["kernels"].as_array().unwrap();
    let types = v["by_type"].as_array().unwrap();
    assert!(!types.is_empty());
    let mut counted = 0;
    for t in types {
        let of_type: Vec<&Value> = kernels.iter().filter(|k| k["type"] == t["type"] && k["direction"] == t["direction"]).collect();
        assert_eq!(t["kernels"], of_type.len(), "{t}");
        let sum: f64 = of_type.iter().map(|k| k["ms"].as_f64().unwrap()).sum();
        let ms = positive(&t["ms"], "by_type ms");
        assert!((ms - sum).abs() <= 1e-9 * sum, "{t}: {ms} ms, its kernels {sum} ms");
        counted += of_type.len();
    }
    assert_eq!(counted, kernels.len(), "every kernel is in one type's sum");
    let ms: Vec<f64> = types.iter().map(|t| t["ms"].as_f64().unwrap()).collect();
    assert!(ms.windows(2).all(|w| w[0] >= w[1]), "largest first: {ms:?}");
}

/// `--layers`: the kernel benchmark of any net's layers (a prototxt alone, then after a
/// generator's), named after the file, in every direction, with the time by type.
#[test]
fn layers_of_any_net() {
    let dir = scratch("bench-layers");
    let clf = fixture("tiny/classifier.prototxt");
    let v = bench_json(&["--layers", "--net", clf.to_str().unwrap(), "--kernel-batch", "2"], &dir.join("l.json"));
    assert_eq!(v["batch"], 2);
    let kernels = v["kernels"].as_array().unwrap();
    let names: Vec<&str> = kernels.iter().filter(|k| k["direction"] == "forward").map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "classifier/conv1",
            "classifier/relu1",
            "classifier/norm1",
            "classifier/pool1",
            "classifier/fc6",
            "classifier/relu6",
            "classifier/fc8",
            "classifier/prob"
        ]
    );
    let conv = kernels.iter().find(|k| k["name"] == "classifier/conv1").unwrap();
    assert!(conv["shape"].as_str().unwrap().starts_with("2x3x6x6 -> 2x4x4x4"), "{}", conv["shape"]);
    assert_eq!(kernels.iter().filter(|k| k["direction"] == "backward-weights").count(), 3, "conv1, fc6 and fc8 have weights");
    check_by_type(&v);
    let generator = fixture("tiny/generator.prototxt");
    let v = bench_json(&["--layers", "--net", clf.to_str().unwrap(), "--generator", generator.to_str().unwrap()], &dir.join("g.json"));
    let kernels = v["kernels"].as_array().unwrap();
    let first = kernels[0]["name"].as_str().unwrap();
    assert!(first.starts_with("generator/"), "the generator's layers come first: {first}");
    assert!(kernels.iter().any(|k| k["name"] == "dgn/crop"), "and the crop between the two");
    check_by_type(&v);
    // --layers needs a net.
    let out = Command::new(env!("CARGO_BIN_EXE_dgnam")).args(["bench", "--device", "cpu", "--layers"]).output().unwrap();
    assert!(!out.status.success());
}

fn check_steps(v: &Value, batches: &[u64]) {
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), batches.len());
    for (s, &b) in steps.iter().zip(batches) {
        assert_eq!(s["batch"], b);
        let t = positive(&s["median_s"], "median_s");
        let rate = positive(&s["image_iterations_per_s"], "image_iterations_per_s");
        assert!((rate - b as f64 / t).abs() <= 1e-9 * rate);
        let projected = positive(&s["projected_s_1000_classes_200_iters"], "projected");
        assert!((projected - 200_000.0 / rate).abs() <= 1e-9 * projected);
    }
}

#[test]
fn step_json_sweeps_batches_with_and_without_a_generator() {
    let dir = scratch("bench-steps");
    let (clf, generator) = (fixture("tiny/classifier.prototxt"), fixture("tiny/generator.prototxt"));
    let net = ["--net", clf.to_str().unwrap(), "--batch", "1,2"];
    let v = bench_json(&[&net[..], &["--generator", generator.to_str().unwrap()]].concat(), &dir.join("dgn.json"));
    assert!(v["generator"].as_str().unwrap().ends_with("generator.prototxt"));
    check_steps(&v, &[1, 2]);
    let v = bench_json(&[&net[..], &["--generator", "none", "--iters", "4"]].concat(), &dir.join("clf.json"));
    assert!(v["generator"].is_null());
    assert_eq!(v["iters"], 4);
    check_steps(&v, &[1, 2]);
}

/// Every op of a net with random weights: backward(dx, None) gives the full backward's data
/// gradient, backward([], Some(dparams)) its weight gradients, bit for bit.
fn split_backward_matches_full(proto: &str) {
    let def = parse_netdef(proto).unwrap();
    let net = CpuNet::<f32>::random(&def, 2, 3, Cpu::new()).unwrap();
    let (plan, b) = (&net.plan, &net.backend);
    let mut rng = Rng::new(4);
    let mut weighted = 0;
    for (i, node) in plan.nodes.iter().enumerate() {
        if matches!(node.op, Op::Copy) {
            continue;
        }
        let run = NodeRun::new(&net, i, &mut rng);
        let (x, y, dy, aux) = (run.x(), &run.y, run.dy(), &run.aux);
        let zeros = || -> Vec<Vec<f32>> { node.bottoms.iter().map(|&id| vec![0.0; plan.blobs[id].len()]).collect() };
        let pzeros = || -> Vec<Vec<f32>> { node.params.iter().map(|s| vec![0.0; s.len()]).collect() };
        let p = net.node_params(i);
        let (mut dx, mut dp) = (zeros(), pzeros());
        ops::backward(b, &node.op, p, &x, &y[0], &dy, aux, &mut dx, Some(&mut dp)).unwrap();
        let mut dx_only = zeros();
        ops::backward(b, &node.op, p, &x, &y[0], &dy, aux, &mut dx_only, None).unwrap();
        assert_eq!(dx_only, dx, "{}: data gradient", node.layer);
        let mut dp_only = pzeros();
        ops::backward(b, &node.op, p, &x, &y[0], &dy, aux, &mut [], Some(&mut dp_only)).unwrap();
        assert_eq!(dp_only, dp, "{}: weight gradients", node.layer);
        if !node.params.is_empty() {
            assert!(dp.iter().any(|g| g.iter().any(|&v| v != 0.0)), "{}: weight gradients are zero", node.layer);
            weighted += 1;
        }
        // Nothing to do at all: an op without parameters and no dx.
        ops::backward(b, &node.op, p, &x, &y[0], &dy, aux, &mut [], None).unwrap();
    }
    assert!(weighted > 0);
}

#[test]
fn backward_with_an_empty_dx_computes_only_weight_gradients() {
    for f in ["tiny/classifier.prototxt", "tiny/generator.prototxt"] {
        split_backward_matches_full(&std::fs::read_to_string(fixture(f)).unwrap());
    }
    split_backward_matches_full(
        r#"name: "mixed"
input: "data"
input_shape { dim: 1 dim: 3 dim: 6 dim: 6 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "c1" top: "bn" }
layer { name: "sc" type: "Scale" bottom: "bn" top: "sc" scale_param { bias_term: true } }
layer { name: "c2" type: "Convolution" bottom: "data" top: "c2" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "sc" bottom: "c2" top: "sum" }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "c2" top: "cat" }
layer { name: "ap" type: "Pooling" bottom: "cat" top: "ap" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
"#,
    );
}

#[test]
fn kernel_versions_need_a_gpu_and_say_so_without_writing() {
    // The CPU has one version of each loop: --versions is one clear error there, and with
    // --device cuda on a machine without a GPU it names the missing GPU. No JSON is written.
    let dir = scratch("bench-versions");
    let json = dir.join("v.json");
    for (device, says) in [("cpu", "needs --device cuda"), ("auto", "needs --device cuda")] {
        let out = Command::new(env!("CARGO_BIN_EXE_dgnam"))
            .args(["bench", "--versions", "--quick", "--device", device, "--json", json.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if device == "auto" && dgnam::device::Cuda::probe().is_ok_and(|p| p.is_some()) {
            continue; // a GPU is here: auto picks it and the versions run
        }
        assert!(!out.status.success(), "{device}: {err}");
        assert!(err.lines().any(|l| l.starts_with("error: ") && l.contains(says)), "{device}: {err}");
        assert!(!json.exists(), "{device}: wrote {}", json.display());
    }
}
