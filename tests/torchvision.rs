//! torchvision's own classifier architectures (ResNet-18 with its BatchNormalization kept in
//! the graph, SqueezeNet 1.1, GoogLeNet, EfficientNet-B0, MobileNet v3 small), at narrow
//! widths with random weights, exported to ONNX and converted: forward at intermediate
//! tensors against onnxruntime, and the logits and the input gradient of one logit against
//! PyTorch autograd in float64, each to 1e-4 of the largest value (issue 15). Fixtures:
//! `tools/make-torchvision-fixtures.py`, see tests/fixtures/torchvision/PROVENANCE.md.

mod common;

use common::{fixture, forward_cpu, onnx_convert, scratch};
use dgnam::npy;
use dgnam::tensor::Tensor;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

#[track_caller]
fn succeeded(o: Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The largest difference between `got` and `want`, relative to the largest |want|.
fn relative_error(got: &Tensor, want: &Tensor, what: &str) -> f32 {
    assert_eq!(got.shape, want.shape, "{what}");
    let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 1e-4, "{what}: a reference of zeros checks nothing");
    got.data.iter().zip(&want.data).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

fn check(name: &str) {
    let dir = scratch(&format!("torchvision-{name}"));
    let root = fixture("torchvision");
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(root.join(format!("{name}.json"))).unwrap()).unwrap();
    let net = dir.join(format!("{name}.dgnw"));
    let model = root.join(meta["model"].as_str().unwrap());
    succeeded(onnx_convert(&model, &net, &[]));
    let unit = meta["unit"].as_u64().unwrap().to_string();
    let file = |key: &Value| npy::read(&root.join(key.as_str().unwrap())).unwrap();
    let mut batches = vec![];
    for case in meta["cases"].as_array().unwrap() {
        let batch = case["batch"].as_u64().unwrap();
        batches.push(batch);
        let input = root.join(case["input"].as_str().unwrap());
        let out_dir = dir.join(format!("b{batch}"));
        let outputs = case["outputs"].as_object().unwrap();
        assert_eq!(outputs.len(), 3, "{name}: the logits and two intermediate tensors");
        let layers: Vec<&str> = outputs.keys().map(String::as_str).collect();
        succeeded(forward_cpu(&net, &input, &layers, &out_dir));
        let got = |tensor: &str| npy::read(&out_dir.join(format!("{}.npy", tensor.replace('/', "_")))).unwrap();
        for (tensor, reference) in outputs {
            let err = relative_error(&got(tensor), &file(reference), &format!("{name} b{batch} {tensor}"));
            assert!(err < 1e-4, "{name} batch {batch} {tensor}: {err} from onnxruntime");
        }
        let err = relative_error(&got("logits"), &file(&case["logits_torch64"]), &format!("{name} b{batch} logits"));
        assert!(err < 1e-4, "{name} batch {batch}: logits {err} from PyTorch in float64");

        let grad = dir.join(format!("grad-b{batch}.npy"));
        let mut c = Command::new(env!("CARGO_BIN_EXE_dgnam"));
        c.args(["backward", "--device", "cpu", "--net"]).arg(&net).arg("--input").arg(&input);
        succeeded(c.args(["--layer", "logits", "--unit", &unit, "--out"]).arg(&grad).output().unwrap());
        let got = npy::read(Path::new(&grad)).unwrap();
        let err = relative_error(&got, &file(&case["input_grad_torch64"]), &format!("{name} b{batch} input gradient"));
        assert!(err < 1e-4, "{name} batch {batch}: the input gradient of logit {unit} is {err} from PyTorch autograd in float64");
    }
    assert_eq!(batches, vec![1, 2]);
}

#[test]
fn resnet18_with_batchnorm_matches_onnxruntime_and_pytorch_float64() {
    check("resnet18");
}

#[test]
fn squeezenet1_1_matches_onnxruntime_and_pytorch_float64() {
    check("squeezenet1_1");
}

#[test]
fn googlenet_matches_onnxruntime_and_pytorch_float64() {
    check("googlenet");
}

#[test]
fn efficientnet_b0_with_squeeze_and_excitation_matches_onnxruntime_and_pytorch_float64() {
    check("efficientnet_b0");
}

#[test]
fn mobilenet_v3_small_matches_onnxruntime_and_pytorch_float64() {
    check("mobilenet_v3_small");
}

/// x.chunk(2, dim=1) (two Slice layers, each with a top nothing reads), Concat and the
/// channel shuffle (ShuffleChannel) in every block.
#[test]
fn shufflenet_v2_with_slices_and_channel_shuffles_matches_onnxruntime_and_pytorch_float64() {
    check("shufflenet_v2");
}
