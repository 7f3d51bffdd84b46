//! `dgnam gradcheck` end to end: it passes on every shipped net definition, fails naming the
//! layer when a gradient is deliberately wrong (the test-only DGNAM_TEST_WRONG_BACKWARD
//! hook of `dgnam::ops::backward`), writes the JSON the issue names, and fails cleanly on
//! bad input and on `--device cuda` without a GPU.

mod common;

use common::{converted_lenet, fixture, scratch, shipped};
use dgnam::device::{Cpu, Cuda};
use dgnam::gradcheck::{run, GradcheckOptions};
use dgnam::io::Silent;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A small net with a layer of each kind the shipped nets use, an in-place ReLU, a blob
/// read by three layers, and layers with two bottoms.
const SMALL: &str = r#"name: "small"
input: "data"
input_shape { dim: 1 dim: 3 dim: 17 dim: 15 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 } }
layer { name: "a" type: "Convolution" bottom: "norm1" top: "a" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "b" type: "Convolution" bottom: "norm1" top: "b" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "a" top: "cat" }
layer { name: "drop" type: "Dropout" bottom: "cat" top: "cat" }
layer { name: "fc" type: "InnerProduct" bottom: "cat" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"#;

fn dgnam(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dgnam"));
    cmd.args(args).env_remove("DGNAM_TEST_WRONG_BACKWARD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn small_net(dir: &Path) -> PathBuf {
    let path = dir.join("small.prototxt");
    std::fs::write(&path, SMALL).unwrap();
    path
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A failure as users should see it: exit 1, one stderr line "error: ..." naming `needle`.
#[track_caller]
fn assert_clean_failure(out: &Output, needle: &str) {
    let (_, err) = text(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "'{needle}' missing from: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `dgnam gradcheck` on a shipped prototxt (seeded random weights) passes, a line per layer.
fn shipped_net_passes(name: &str) {
    let dir = scratch(&format!("gradcheck-{name}"));
    let json = dir.join("report.json");
    let net = shipped(&format!("{name}.prototxt"));
    // Fewer coordinates than the defaults keep the suite short; every layer is checked.
    let out = dgnam(&["gradcheck", "--net", s(&net), "--samples", "8", "--net-samples", "4", "--json", s(&json)], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{name}:\n{stdout}\n{stderr}");
    let report = read_json(&json);
    assert_eq!(report["pass"], true, "{name}");
    let layers = report["layers"].as_array().unwrap();
    let def = dgnam::io::read_netdef(&net).unwrap().0;
    assert_eq!(layers.len(), def.layers.len(), "{name}: one line per layer");
    let layer_lines = stdout.lines().filter(|l| l.ends_with("  pass") && !l.starts_with("whole net:"));
    assert_eq!(layer_lines.count(), layers.len(), "{name}:\n{stdout}");
    for l in layers {
        assert!(l["data_rel_err"].as_f64().unwrap() < 1e-6, "{name}: {l}");
        assert!(l["coordinates"].as_u64().unwrap() > 0, "{name}: {l}");
    }
    assert_eq!(report["net"]["pass"], true, "{name}");
    assert!(report["gpu"].is_null());
    assert!(stdout.contains("whole net: d ") && stdout.contains("all pass"), "{name}:\n{stdout}");
}

#[test]
fn caffenet_passes() {
    shipped_net_passes("caffenet");
}

#[test]
fn googlenet_passes() {
    shipped_net_passes("googlenet");
}

#[test]
fn places205_passes() {
    shipped_net_passes("places205");
}

#[test]
fn the_three_generators_pass() {
    for name in ["generator-fc6", "generator-fc7", "generator-pool5"] {
        shipped_net_passes(name);
    }
}

#[test]
fn converted_caffe_models_pass_with_their_trained_weights() {
    let dir = scratch("gradcheck-trained");
    let cifar = dir.join("cifar.dgnw");
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam-convert"))
        .arg("--prototxt")
        .arg(fixture("caffe/cifar10_quick_v1/cifar10_quick_newformat.prototxt"))
        .arg("--caffemodel")
        .arg(fixture("caffe/cifar10_quick_v1/cifar10_quick_iter_5000.caffemodel"))
        .arg("-o")
        .arg(&cifar)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for net in [converted_lenet(&dir), cifar] {
        let out = dgnam(&["gradcheck", "--net", s(&net)], &[]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success() && stdout.contains("all pass"), "{}:\n{stdout}\n{stderr}", net.display());
    }
}

#[test]
fn the_json_holds_every_layer_the_whole_net_and_no_gpu() {
    let dir = scratch("gradcheck-json");
    let net = small_net(&dir);
    let json = dir.join("report.json");
    let out = dgnam(&["gradcheck", "--net", s(&net), "--json", s(&json)], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("wrote {}", json.display())), "{stdout}");
    let report = read_json(&json);
    assert_eq!(report["pass"], true);
    let layers = report["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l["layer"].as_str().unwrap()).collect();
    assert_eq!(names, ["conv1", "relu1", "pool1", "norm1", "a", "b", "sum", "cat", "drop", "fc", "prob"]);
    for l in layers {
        for key in ["layer", "type", "data_rel_err", "weight_rel_err", "pass"] {
            assert!(l.get(key).is_some(), "{key} missing from {l}");
        }
        let weighted = ["Convolution", "InnerProduct"].contains(&l["type"].as_str().unwrap());
        assert_eq!(l["weight_rel_err"].is_f64(), weighted, "{l}");
        assert!(l["data_rel_err"].as_f64().unwrap() < 1e-6 && l["pass"] == true, "{l}");
    }
    assert_eq!(layers[0]["type"], "Convolution");
    // conv1's 17x15 input divided by 8 is 3x2, the width grown to give 2 outputs at stride 2.
    assert_eq!(layers[0]["input_shapes"], serde_json::json!([[2, 3, 3, 3]]));
    // Two bottoms, each checked.
    assert_eq!(layers[6]["input_shapes"].as_array().unwrap().len(), 2);
    assert!(report["net"]["input_rel_err"].as_f64().unwrap() < 1e-5 && report["net"]["pass"] == true);
    assert!(report["gpu"].is_null());

    // A layer checked on its own gives what it gave among all of them.
    let one = dir.join("one.json");
    assert!(dgnam(&["gradcheck", "--net", s(&net), "--layers", "norm1", "--json", s(&one)], &[]).status.success());
    let alone = read_json(&one);
    assert_eq!(alone["layers"].as_array().unwrap().len(), 1);
    assert_eq!(alone["layers"][0]["data_rel_err"], layers[3]["data_rel_err"]);
    // Only `--layers all` checks the whole net.
    assert!(alone["net"].is_null());
}

#[test]
fn a_wrong_gradient_fails_naming_the_layer_and_its_worst_coordinate() {
    let dir = scratch("gradcheck-wrong");
    let net = small_net(&dir);
    let json = dir.join("report.json");
    let out = dgnam(&["gradcheck", "--net", s(&net), "--json", s(&json)], &[("DGNAM_TEST_WRONG_BACKWARD", "Lrn")]);
    let (stdout, stderr) = text(&out);
    assert_clean_failure(&out, "norm1");
    assert!(stderr.contains("the whole net"), "{stderr}");
    let line = stdout.lines().find(|l| l.starts_with("norm1 ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("FAIL") && line.contains("worst: data gradient of bottom 'pool1' (2x6x"), "{line}");
    assert!(line.contains(" at [") && line.contains("finite difference") && line.contains("analytic"), "{line}");
    assert!(stdout.lines().filter(|l| l.contains("  FAIL")).count() == 2, "only norm1 and the whole net fail:\n{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    // The report is still written, and says the same.
    let report = read_json(&json);
    assert_eq!(report["pass"], false);
    let norm1 = report["layers"].as_array().unwrap().iter().find(|l| l["layer"] == "norm1").unwrap().clone();
    assert_eq!(norm1["pass"], false);
    // The data gradient came out twice over: |a - 2a| / (rms + 2|a|), up to a third.
    let err = norm1["data_rel_err"].as_f64().unwrap();
    assert!(err > 0.2 && err <= 1.0 / 3.0 + 1e-9, "{norm1}");
    assert_eq!(report["net"]["pass"], false);

    // A wrong data gradient of a layer with weights: its weight gradients still pass.
    let out = dgnam(&["gradcheck", "--net", s(&net), "--layers", "conv1,fc"], &[("DGNAM_TEST_WRONG_BACKWARD", "InnerProduct")]);
    let (stdout, _) = text(&out);
    assert_clean_failure(&out, "fc");
    let fc = stdout.lines().find(|l| l.starts_with("fc ")).unwrap();
    assert!(fc.contains("FAIL") && fc.contains("weights  ") && !fc.contains("weights         -"), "{fc}");
    assert!(stdout.lines().find(|l| l.starts_with("conv1 ")).unwrap().ends_with("pass"), "{stdout}");
}

#[test]
fn bad_input_is_one_error_line_and_no_report() {
    let dir = scratch("gradcheck-bad");
    let net = small_net(&dir);
    let json = dir.join("report.json");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["gradcheck", "--net", s(&net), "--json", s(&json)].iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        dgnam(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    };
    assert_clean_failure(&run(&["--layers", "conv1,nope"]), "no layer 'nope'");
    assert_clean_failure(&run(&["--layers", ","]), "--layers");
    assert_clean_failure(&run(&["--scale", "0.5"]), "--scale 0.5");
    assert_clean_failure(&run(&["--eps", "0"]), "--eps");
    assert_clean_failure(&run(&["--batch", "0"]), "--batch");
    let missing = dir.join("absent.prototxt");
    assert_clean_failure(&dgnam(&["gradcheck", "--net", s(&missing), "--json", s(&json)], &[]), "absent.prototxt");
    let missing = dir.join("absent.dgnw");
    assert_clean_failure(&dgnam(&["gradcheck", "--net", s(&missing), "--json", s(&json)], &[]), "fetch-weights.sh");
    // Flags clap cannot read are one line too (exit 2).
    let out = run(&["--scale", "big"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out).1.lines().count(), 1, "{}", text(&out).1);
    assert!(!json.exists(), "a report was written despite the errors");
}

#[test]
fn without_a_gpu_device_cuda_is_one_error_line_and_no_report() {
    if matches!(Cuda::probe(), Ok(Some(_))) {
        eprintln!("skipped: this machine has a GPU");
        return;
    }
    let dir = scratch("gradcheck-no-gpu");
    let net = small_net(&dir);
    let json = dir.join("report.json");
    for device in ["cuda", "both"] {
        let out = dgnam(&["gradcheck", "--net", s(&net), "--device", device, "--json", s(&json)], &[]);
        assert_clean_failure(&out, &format!("--device {device}: no usable GPU"));
        assert!(text(&out).0.is_empty(), "nothing on stdout: {}", text(&out).0);
        assert!(!json.exists());
    }
}

#[test]
fn the_gpu_comparison_runs_against_a_second_cpu_backend() {
    // The GPU part is generic over the other device: a second CPU backend is an exact copy.
    let dir = scratch("gradcheck-other");
    let mut o = GradcheckOptions::new(small_net(&dir));
    o.device = dgnam::gradcheck::CheckDevice::Cuda;
    let mut rows = Vec::new();
    let report = run(&o, Some(Cpu::<f32>::new()), &Silent, &mut |r| rows.push(r.to_string())).unwrap();
    let gpu = report.gpu.as_ref().unwrap();
    assert_eq!(gpu.len(), 11);
    assert!(report.layers.is_empty() && report.net.is_none() && report.pass());
    for g in gpu {
        assert!(g.pass && g.forward_err == 0.0, "{g:?}");
        // Dropout only copies: the graph, not the layer, moves its gradient.
        assert_eq!(g.backward_err.is_none(), g.type_name == "Dropout", "{g:?}");
    }
    assert!(rows.iter().all(|r| r.starts_with("gpu ") && r.ends_with("pass")), "{rows:?}");
    let json = report.to_json();
    assert_eq!(json["gpu"].as_array().unwrap().len(), 11);
    assert!(json["gpu"][0].get("forward_err").is_some() && json["gpu"][0].get("backward_err").is_some());
    assert!(json["net"].is_null() && json["layers"].as_array().unwrap().is_empty());
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn shipped_nets_match_the_cpu_on_the_gpu() {
    // Through the library, not the binary: the test executable may run on another machine.
    let why = match Cuda::probe() {
        Ok(Some(_)) => None,
        Ok(None) => Some("no CUDA driver found".to_string()),
        Err(e) => Some(format!("{e:#}")),
    };
    if let Some(why) = why {
        assert!(std::env::var("REQUIRE_GPU").as_deref() != Ok("1"), "REQUIRE_GPU=1 but there is no usable GPU: {why}");
        eprintln!("skipped: needs a CUDA GPU ({why})");
        return;
    }
    for name in ["caffenet", "generator-fc6", "googlenet"] {
        let mut o = GradcheckOptions::new(shipped(&format!("{name}.prototxt")));
        (o.device, o.samples, o.net_samples) = (dgnam::gradcheck::CheckDevice::Both, 8, 4);
        let cuda = Cuda::new(dgnam::device::cuda::Precision::F32).unwrap();
        let mut rows = Vec::new();
        let report = run(&o, Some(cuda), &Silent, &mut |r| rows.push(r.to_string())).unwrap();
        let gpu = report.gpu.as_ref().unwrap();
        assert_eq!(gpu.len(), report.layers.len(), "{name}");
        assert!(report.pass(), "{name}:\n{}", rows.join("\n"));
        eprintln!("{name}:\n{}", rows.join("\n"));
    }
}
