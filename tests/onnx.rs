//! ONNX import: torch-exported fixtures against onnxruntime's outputs, hand-built graphs
//! for what the exporters rarely emit, and bad models that must fail cleanly.

mod common;

use common::{fixture, forward_cpu as forward, onnx_convert as convert, scratch};
use dgnam::ir::InputSpace;
use dgnam::npy;
use dgnam::weights::WeightsFile;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed conversion: non-zero exit, one line on stderr, no output file. Returns the line.
fn refused(o: &Output, out: &Path) -> String {
    assert!(!o.status.success(), "conversion succeeded: {}", String::from_utf8_lossy(&o.stdout));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "not one error line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "{} was written", out.display());
    err
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// Every case of a fixture's JSON: the converted net's outputs at the named tensors (the
/// graph output and one intermediate, both by ONNX name) against onnxruntime's.
fn check_fixture(name: &str) {
    let dir = scratch(&format!("onnx-{name}"));
    let root = fixture("onnx");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join(format!("{name}.json"))).unwrap()).unwrap();
    let net = dir.join(format!("{name}.dgnw"));
    let o = convert(&root.join(meta["model"].as_str().unwrap()), &net, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(WeightsFile::open(&net).unwrap().header.input_space, InputSpace::Torchvision);
    let mut batches = vec![];
    for case in meta["cases"].as_array().unwrap() {
        let batch = case["batch"].as_u64().unwrap();
        batches.push(batch);
        let outputs = case["outputs"].as_object().unwrap();
        let names: Vec<&str> = outputs.keys().map(String::as_str).collect();
        assert!(names.contains(&meta["intermediate"].as_str().unwrap()));
        let out_dir = dir.join(format!("b{batch}"));
        let o = forward(&net, &root.join(case["input"].as_str().unwrap()), &names, &out_dir);
        assert!(o.status.success(), "{}", stderr(&o));
        for (tensor, file) in outputs {
            let want = npy::read(&root.join(file.as_str().unwrap())).unwrap();
            // SPEC 9: `/` in a layer name becomes `_` in the file name.
            let got = npy::read(&out_dir.join(format!("{}.npy", tensor.replace('/', "_")))).unwrap();
            assert_eq!(got.shape, want.shape, "{name} batch {batch} {tensor}");
            assert_eq!(got.shape[0] as u64, batch);
            let scale = max_abs(&want.data).max(1e-3);
            let err = got.data.iter().zip(&want.data).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            assert!(err < 1e-5, "{name} batch {batch} {tensor}: relative error {err}");
            assert!(scale > 1e-3, "{name} {tensor}: a reference of zeros checks nothing");
        }
    }
    assert_eq!(batches, vec![1, 3]);
}

/// ConvTranspose built node by node (tools/make-onnx-op-fixtures.py): pads that differ
/// between the sides, output_padding inside and beyond the full output (bias alone there),
/// output_shape, auto_pad SAME_UPPER and SAME_LOWER, dilations with groups.
#[test]
fn conv_transpose_attributes_match_onnxruntime_at_batch_1_and_3() {
    check_fixture("convtranspose_attrs");
}

/// AveragePool with count_include_pad 0 (floor, ceil, stride 1) and 1, and a Pad node with
/// negative pads (a crop), built node by node (tools/make-onnx-op-fixtures.py).
#[test]
fn average_pool_without_the_padding_and_negative_pads_match_onnxruntime_at_batch_1_and_3() {
    check_fixture("pool_pad_attrs");
}

/// ReduceMean and ReduceMax over the spatial axes, with and without keepdims, axes as an
/// attribute (opset 17) and as an input (opset 18): global pooling, then a Flatten.
#[test]
fn spatial_reductions_match_onnxruntime_at_batch_1_and_3() {
    check_fixture("reduce_attrs");
    check_fixture("reduce_attrs18");
}

/// ShuffleNet's channel shuffle as torch exports it (Reshape to [N, g, C/g, H, W],
/// Transpose [0, 2, 1, 3, 4], Reshape back) in 2 and 3 groups: one ShuffleChannel layer each.
#[test]
fn channel_shuffles_match_onnxruntime_at_batch_1_and_3() {
    check_fixture("shuffle_attrs");
}

/// Slice of a tensor (channels in the middle; the last columns by a negative start and an
/// end past the axis; everything, an identity) and Split by sizes and into equal parts, at
/// opsets 11 (split an attribute), 17 and 18 (num_outputs): Caffe Slice layers.
#[test]
fn slices_and_splits_match_onnxruntime_at_batch_1_and_3() {
    check_fixture("slice_attrs");
    check_fixture("split_attrs11");
    check_fixture("split_attrs18");
}

/// Erf, and the exact GELU as torch's exporter writes it at opset 17 (Div, Erf, Add, Mul,
/// Mul) and as opset 20's Gelu op.
#[test]
fn erf_and_the_exact_gelu_match_onnxruntime_at_batch_1_and_3() {
    check_fixture("gelu_attrs");
    check_fixture("gelu_attrs20");
}

/// torch's `x.view(x.size(0), -1)` and `x.view(x.size(0), x.size(1) * x.size(2) * x.size(3))`,
/// exported at opset 11 with a dynamic batch (tools/make-onnx-shape-fixtures.py): Shape,
/// Gather, Unsqueeze, Mul and Concat evaluated at conversion into two Reshapes.
#[test]
fn view_shape_arithmetic_matches_onnxruntime_at_batch_1_and_3() {
    check_fixture("view_flatten");
}

/// Grouped conv, LRN, ceil-mode MaxPool, Flatten, Gemm, Softmax; opset 11, fixed batch 1
/// run at batch 3.
#[test]
fn tiny_alexnet_matches_onnxruntime_at_batch_1_and_3() {
    check_fixture("tiny_alexnet");
}

/// Conv+BatchNorm folded, BatchNorm after an Add kept (as Scale), LeakyRelu, Concat,
/// padded floor-mode AveragePool, GlobalAveragePool; opset 17, dynamic batch.
#[test]
fn tiny_resnet_matches_onnxruntime_at_batch_1_and_3() {
    check_fixture("tiny_resnet");
}

/// The same net through opset 9: BatchNormalization 9, Flatten, Gemm, and a Pad node that
/// the exporter puts before the padded AveragePool (folded into the pooling's padding).
#[test]
fn tiny_resnet_opset9_matches_onnxruntime_at_batch_1_and_3() {
    check_fixture("tiny_resnet_opset9");
}

/// HardSwish, ReLU6 and clamps (Clip with constant inputs, one bound absent), HardSigmoid
/// and Sigmoid gates of squeeze-and-excitation (Mul of [N,C,H,W] by [N,C,1,1], the gate
/// first), SiLU (Sigmoid times its input), a depthwise Conv; opset 17, dynamic batch.
#[test]
fn tiny_mobile_matches_onnxruntime_at_batch_1_and_3() {
    check_fixture("tiny_mobile");
}

/// The same net through opset 9: HardSwish as x * HardSigmoid(x), Clip's bounds as attributes.
#[test]
fn tiny_mobile_opset9_matches_onnxruntime_at_batch_1_and_3() {
    check_fixture("tiny_mobile_opset9");
}

/// torchvision's MobileNet v3 small (narrow, random weights; see PROVENANCE.md): Hardswish,
/// Hardsigmoid-gated squeeze-and-excitation, depthwise and grouped convs with folded
/// BatchNorm, residual Adds; compared at the stem's Hardswish, the first gated Mul and the
/// logits.
#[test]
fn torchvision_mobilenet_v3_small_matches_onnxruntime_at_batch_1_and_3() {
    check_fixture("mobilenet_v3_small");
}

/// The CPU's results do not depend on the vector instructions it runs with: tiny_mobile
/// (depthwise convolutions, SiLU's sigmoid, HardSwish, the eltwise products, GEMMs) gives the
/// same bytes forward and in its input gradient at every level `DGNAM_CPU` selects.
#[test]
fn the_cpu_gives_the_same_bits_at_every_vector_width() {
    let dir = scratch("onnx-levels");
    let root = fixture("onnx");
    let net = dir.join("tiny_mobile.dgnw");
    let o = convert(&root.join("tiny_mobile.onnx"), &net, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let input = root.join("tiny_mobile.b3.input.npy");
    let levels = ["base", "v3", "v4"];
    let here = dgnam::device::simd::level();
    if here < dgnam::device::simd::Level::V4 {
        eprintln!("NOTE: this CPU runs at most {}: the levels above it run as it does, so fewer builds are compared", here.name());
    }
    let mut results: Vec<(Vec<u8>, Vec<u8>)> = vec![];
    for level in levels {
        let out = dir.join(level);
        let run = |args: &[&std::ffi::OsStr]| {
            let o = Command::new(env!("CARGO_BIN_EXE_dgnam")).env("DGNAM_CPU", level).args(args).output().unwrap();
            assert!(o.status.success(), "DGNAM_CPU={level}: {}", stderr(&o));
        };
        let grad = dir.join(format!("{level}.grad.npy"));
        run(&[
            "forward".as_ref(),
            "--net".as_ref(),
            net.as_os_str(),
            "--input".as_ref(),
            input.as_os_str(),
            "--out-dir".as_ref(),
            out.as_os_str(),
            "--device".as_ref(),
            "cpu".as_ref(),
        ]);
        run(&[
            "backward".as_ref(),
            "--net".as_ref(),
            net.as_os_str(),
            "--input".as_ref(),
            input.as_os_str(),
            "--device".as_ref(),
            "cpu".as_ref(),
            "--layer".as_ref(),
            "logits".as_ref(),
            "--unit".as_ref(),
            "3".as_ref(),
            "--out".as_ref(),
            grad.as_os_str(),
        ]);
        results.push((std::fs::read(out.join("logits.npy")).unwrap(), std::fs::read(&grad).unwrap()));
    }
    let grad = npy::read(&dir.join("base.grad.npy")).unwrap();
    assert!(grad.data.iter().any(|&v| v != 0.0), "an input gradient of zeros compares nothing");
    for (level, r) in levels.iter().zip(&results).skip(1) {
        assert!(r.0 == results[0].0, "logits at DGNAM_CPU={level} differ from the baseline build's");
        assert!(r.1 == results[0].1, "the input gradient at DGNAM_CPU={level} differs from the baseline build's");
    }
}

#[test]
fn input_space_flag_is_recorded() {
    let dir = scratch("onnx-space");
    let net = dir.join("caffe.dgnw");
    let o = convert(&fixture("onnx/tiny_alexnet.onnx"), &net, &["--input-space", "caffe"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(WeightsFile::open(&net).unwrap().header.input_space, InputSpace::Caffe);
    let info = Command::new(env!("CARGO_BIN_EXE_dgnam")).arg("info").arg(&net).output().unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("input space: caffe"), "{}", stderr(&info));
    let bad = dir.join("bad.dgnw");
    let o = convert(&fixture("onnx/tiny_alexnet.onnx"), &bad, &["--input-space", "bgr"]);
    assert!(!o.status.success() && !bad.exists());
    // A Caffe model's space is Caffe's: the flag is refused there.
    let o = Command::new(env!("CARGO_BIN_EXE_dgnam-convert"))
        .arg("--prototxt")
        .arg(fixture("tiny/classifier.prototxt"))
        .args(["--random-weights", "1", "--input-space", "torchvision", "-o"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(refused(&o, &bad).contains("--input-space applies to --onnx models only"));
}

#[test]
fn truncated_or_corrupt_models_are_one_clear_error() {
    let dir = scratch("onnx-corrupt");
    let bytes = std::fs::read(fixture("onnx/tiny_alexnet.onnx")).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2..bytes.len() / 2 + 16].fill(0xff);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("third", bytes[..bytes.len() / 3].to_vec()),
        ("half", bytes[..bytes.len() / 2].to_vec()),
        ("last-byte", bytes[..bytes.len() - 1].to_vec()),
        ("flipped", flipped),
        ("text", b"this is not a model\n".to_vec()),
    ];
    for (name, data) in cases {
        let model = dir.join(format!("{name}.onnx"));
        std::fs::write(&model, data).unwrap();
        let out = dir.join(format!("{name}.dgnw"));
        let err = refused(&convert(&model, &out, &[]), &out);
        assert!(err.contains(&model.display().to_string()), "{name}: the error does not name the file: {err}");
        assert!(!err.contains("caffemodel"), "{name}: {err}");
    }
    let out = dir.join("missing.dgnw");
    let err = refused(&convert(&dir.join("missing.onnx"), &out, &[]), &out);
    assert!(err.contains("missing.onnx"), "{err}");
}

// A minimal protobuf writer for hand-built graphs.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint(out: &mut Vec<u8>, field: u32, v: u64) {
    varint(out, (field as u64) << 3);
    varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, (field as u64) << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_f32(out: &mut Vec<u8>, field: u32, v: f32) {
    varint(out, (field as u64) << 3 | 5);
    out.extend_from_slice(&v.to_le_bytes());
}

enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Str(&'static str),
    Tensor(Vec<u8>),
}

fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, Attr)]) -> Vec<u8> {
    let mut n = vec![];
    for i in inputs {
        put_bytes(&mut n, 1, i.as_bytes());
    }
    for o in outputs {
        put_bytes(&mut n, 2, o.as_bytes());
    }
    put_bytes(&mut n, 3, name.as_bytes());
    put_bytes(&mut n, 4, op.as_bytes());
    for (key, value) in attrs {
        let mut a = vec![];
        put_bytes(&mut a, 1, key.as_bytes());
        match value {
            Attr::Int(v) => {
                put_varint(&mut a, 3, *v as u64);
                put_varint(&mut a, 20, 2);
            }
            Attr::Ints(vs) => {
                for v in vs {
                    put_varint(&mut a, 8, *v as u64);
                }
                put_varint(&mut a, 20, 7);
            }
            Attr::Float(v) => {
                put_f32(&mut a, 2, *v);
                put_varint(&mut a, 20, 1);
            }
            Attr::Str(s) => {
                put_bytes(&mut a, 4, s.as_bytes());
                put_varint(&mut a, 20, 3);
            }
            Attr::Tensor(t) => {
                put_bytes(&mut a, 5, t);
                put_varint(&mut a, 20, 4);
            }
        }
        put_bytes(&mut n, 5, &a);
    }
    n
}

fn tensor(name: &str, dims: &[i64], values: &[f32]) -> Vec<u8> {
    let mut t = vec![];
    for &d in dims {
        put_varint(&mut t, 1, d as u64);
    }
    put_varint(&mut t, 2, 1);
    put_bytes(&mut t, 8, name.as_bytes());
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    put_bytes(&mut t, 9, &raw);
    t
}

fn int64_tensor(name: &str, values: &[i64]) -> Vec<u8> {
    let mut t = vec![];
    put_varint(&mut t, 1, values.len() as u64);
    put_varint(&mut t, 2, 7);
    put_bytes(&mut t, 8, name.as_bytes());
    for &v in values {
        put_varint(&mut t, 7, v as u64);
    }
    t
}

fn value_info(name: &str, dims: &[i64]) -> Vec<u8> {
    let mut shape = vec![];
    for &d in dims {
        let mut dim = vec![];
        if d > 0 {
            put_varint(&mut dim, 1, d as u64);
        } else {
            put_bytes(&mut dim, 2, b"N");
        }
        put_bytes(&mut shape, 1, &dim);
    }
    let mut tt = vec![];
    put_varint(&mut tt, 1, 1);
    put_bytes(&mut tt, 2, &shape);
    let mut ty = vec![];
    put_bytes(&mut ty, 1, &tt);
    let mut v = vec![];
    put_bytes(&mut v, 1, name.as_bytes());
    put_bytes(&mut v, 2, &ty);
    v
}

/// A model with one input and one output, the given nodes and initializers.
fn model(opset: u64, input: (&str, &[i64]), output: &str, nodes: &[Vec<u8>], inits: &[Vec<u8>]) -> Vec<u8> {
    let mut g = vec![];
    for n in nodes {
        put_bytes(&mut g, 1, n);
    }
    put_bytes(&mut g, 2, b"hand");
    for t in inits {
        put_bytes(&mut g, 5, t);
    }
    put_bytes(&mut g, 11, &value_info(input.0, input.1));
    put_bytes(&mut g, 12, &value_info(output, &[]));
    let mut op = vec![];
    put_bytes(&mut op, 1, b"");
    put_varint(&mut op, 2, opset);
    let mut m = vec![];
    put_varint(&mut m, 1, 8);
    put_bytes(&mut m, 8, &op);
    put_bytes(&mut m, 7, &g);
    m
}

fn write_model(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, PathBuf) {
    let path = dir.join(format!("{name}.onnx"));
    std::fs::write(&path, bytes).unwrap();
    (path, dir.join(format!("{name}.dgnw")))
}

#[test]
fn unsupported_op_names_node_and_op_and_writes_nothing() {
    let dir = scratch("onnx-unsupported");
    let nodes = [node("first", "Relu", &["x"], &["r"], &[]), node("squash", "Tanh", &["r"], &["y"], &[])];
    let (path, out) = write_model(&dir, "tanh", &model(13, ("x", &[1, 2, 3, 3]), "y", &nodes, &[]));
    let err = refused(&convert(&path, &out, &[]), &out);
    assert!(err.contains("node 'squash' (Tanh): unsupported op"), "{err}");
}

/// What the engine cannot compute the same way yet is refused with the reason.
#[test]
fn semantics_the_engine_lacks_are_refused_clearly() {
    let dir = scratch("onnx-refused");
    let w = tensor("w", &[2, 2, 3, 3], &[0.1; 36]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "negative-transpose-pads",
            model(
                13,
                ("x", &[1, 2, 6, 6]),
                "y",
                &[node("c", "ConvTranspose", &["x", "w"], &["y"], &[("pads", Attr::Ints(vec![-1, 0, 1, 1]))])],
                std::slice::from_ref(&w),
            ),
            "node 'c' (ConvTranspose): negative pads [-1, 0, 1, 1] (ONNX allows none for ConvTranspose)",
        ),
        (
            "transpose-cropped-away",
            model(
                13,
                ("x", &[1, 2, 1, 1]),
                "y",
                &[node("c", "ConvTranspose", &["x", "w"], &["y"], &[("pads", Attr::Ints(vec![2, 0, 1, 0]))])],
                std::slice::from_ref(&w),
            ),
            "node 'c' (ConvTranspose): pads [2, 0, 1, 0] and output_padding [0, 0] leave an empty output for a 1x1 input",
        ),
        (
            "asymmetric-average-without-pads",
            model(
                13,
                ("x", &[1, 2, 6, 6]),
                "y",
                &[node(
                    "a",
                    "AveragePool",
                    &["x"],
                    &["y"],
                    &[("kernel_shape", Attr::Ints(vec![3, 3])), ("pads", Attr::Ints(vec![0, 0, 1, 1]))],
                )],
                &[],
            ),
            "node 'a' (AveragePool): pads [0, 0, 1, 1] that differ between the sides, left out of the average (count_include_pad 0), are not supported yet",
        ),
        (
            // ONNX drops the last ceil-mode window (it starts past the input); Caffe keeps it unpadded.
            "ceil-window",
            model(
                13,
                ("x", &[1, 2, 5, 5]),
                "y",
                &[node(
                    "p",
                    "MaxPool",
                    &["x"],
                    &["y"],
                    &[("kernel_shape", Attr::Ints(vec![1, 1])), ("strides", Attr::Ints(vec![3, 3])), ("ceil_mode", Attr::Int(1))],
                )],
                &[],
            ),
            "node 'p' (MaxPool): ceil_mode 1 gives a 2x2 output for a 5x5 input, the engine's pooling gives 3x3: not supported yet",
        ),
        (
            "reduce-channels",
            model(13, ("x", &[1, 2, 3, 3]), "y", &[node("r", "ReduceMean", &["x"], &["y"], &[("axes", Attr::Ints(vec![1]))])], &[]),
            "node 'r' (ReduceMean): axes [1] of a rank-4 tensor are not supported (only the spatial axes 2 and 3 of NCHW)",
        ),
        (
            "reduce-all",
            model(13, ("x", &[1, 2, 3, 3]), "y", &[node("r", "ReduceMax", &["x"], &["y"], &[])], &[]),
            "node 'r' (ReduceMax): a reduction over all axes is not supported (only the spatial axes 2 and 3)",
        ),
        (
            "transpose-5d-of-input",
            model(13, ("x", &[1, 2, 3, 3, 1]), "y", &[node("t", "Transpose", &["x"], &["y"], &[("perm", Attr::Ints(vec![0, 2, 1, 3, 4]))])], &[]),
            "node 't' (Transpose): perm [0, 2, 1, 3, 4] is supported only as a channel shuffle, read by Reshape nodes alone (not a graph output)",
        ),
        (
            "gelu-tanh",
            model(20, ("x", &[1, 2, 3, 3]), "y", &[node("g", "Gelu", &["x"], &["y"], &[("approximate", Attr::Str("tanh"))])], &[]),
            "node 'g' (Gelu): approximate 'tanh' is not supported (only the exact form, 'none')",
        ),
        (
            "slice-step",
            model(
                13,
                ("x", &[1, 4, 3, 3]),
                "y",
                &[node("s", "Slice", &["x", "st", "en", "ax", "step"], &["y"], &[])],
                &[int64_tensor("st", &[0]), int64_tensor("en", &[4]), int64_tensor("ax", &[1]), int64_tensor("step", &[2])],
            ),
            "node 's' (Slice): step 2 is not supported (only 1)",
        ),
        (
            "slice-batch",
            model(
                13,
                ("x", &[4, 2, 3, 3]),
                "y",
                &[node("s", "Slice", &["x", "st", "en", "ax"], &["y"], &[])],
                &[int64_tensor("st", &[1]), int64_tensor("en", &[3]), int64_tensor("ax", &[0])],
            ),
            "node 's' (Slice): slicing the batch axis is not supported",
        ),
        (
            "slice-two-axes",
            model(
                13,
                ("x", &[1, 4, 3, 3]),
                "y",
                &[node("s", "Slice", &["x", "st", "en", "ax"], &["y"], &[])],
                &[int64_tensor("st", &[1, 1]), int64_tensor("en", &[3, 3]), int64_tensor("ax", &[1, 2])],
            ),
            "node 's' (Slice): slicing more than one axis is not supported",
        ),
        (
            "split-uneven",
            model(13, ("x", &[1, 5, 3, 3]), "y", &[node("s", "Split", &["x"], &["y", "z"], &[("axis", Attr::Int(1))])], &[]),
            "node 's' (Split): 5 values along axis 1 do not split into 2 equal parts",
        ),
        (
            "softmax-axes",
            model(11, ("x", &[1, 2, 3, 3]), "y", &[node("s", "Softmax", &["x"], &["y"], &[])], &[]),
            "node 's' (Softmax): softmax over several axes (opset 11, shape 1x2x3x3) is not supported yet",
        ),
        (
            "broadcast",
            model(
                13,
                ("x", &[1, 2, 3, 3]),
                "y",
                &[node("p", "GlobalAveragePool", &["x"], &["g"], &[]), node("a", "Add", &["x", "g"], &["y"], &[])],
                &[],
            ),
            "node 'a' (Add): broadcasting between shapes 1x2x3x3 and 1x2x1x1 is not supported yet",
        ),
        (
            "pad-channels",
            model(
                13,
                ("x", &[1, 2, 3, 3]),
                "y",
                &[node("pad", "Pad", &["x", "pads"], &["y"], &[])],
                &[int64_tensor("pads", &[0, 1, 0, 0, 0, 1, 0, 0])],
            ),
            "node 'pad' (Pad): pads [0, 1, 0, 0, 0, 1, 0, 0] are not supported yet",
        ),
        ("opset", model(6, ("x", &[1, 2]), "y", &[node("r", "Relu", &["x"], &["y"], &[])], &[]), "opset 6 is not supported"),
        (
            "dynamic-size",
            model(13, ("x", &[1, 2, 0, 4]), "y", &[node("r", "Relu", &["x"], &["y"], &[])], &[]),
            "graph input 'x': axis 2 has no fixed size",
        ),
    ];
    for (name, bytes, want) in cases {
        let (path, out) = write_model(&dir, name, &bytes);
        let err = refused(&convert(&path, &out, &[]), &out);
        assert!(err.contains(want), "{name}: {err}");
    }
}

/// MatMul then Add of a vector becomes one InnerProduct with bias; Identity, Dropout, a
/// per-channel Mul and Sub and a floor-mode MaxPool with padding compute what ONNX defines.
#[test]
fn hand_built_graph_computes_onnx_semantics() {
    let dir = scratch("onnx-hand");
    // x: 1x2x3x3 -> MaxPool k2 s2 p1 (floor: 2x2) -> Mul by [2, -1] per channel -> Sub 1 ->
    // Identity -> Flatten (8) -> MatMul 8x3 -> Add [1, 2, 3] -> Dropout.
    let w: Vec<f32> = (0..24).map(|i| (i as f32 - 11.5) / 10.0).collect();
    let nodes = [
        node(
            "pool",
            "MaxPool",
            &["x"],
            &["p"],
            &[("kernel_shape", Attr::Ints(vec![2, 2])), ("strides", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![1, 1, 1, 1]))],
        ),
        node("mul", "Mul", &["p", "gain"], &["m"], &[]),
        node("sub", "Sub", &["m", "one"], &["s"], &[]),
        node("id", "Identity", &["s"], &["i"], &[]),
        node("flat", "Flatten", &["i"], &["f"], &[("axis", Attr::Int(1))]),
        node("mm", "MatMul", &["f", "w"], &["mm_out"], &[]),
        node("bias", "Add", &["mm_out", "b"], &["fc"], &[]),
        node("drop", "Dropout", &["fc"], &["y"], &[("ratio", Attr::Float(0.5))]),
    ];
    let inits =
        [tensor("gain", &[2, 1, 1], &[2.0, -1.0]), tensor("one", &[], &[1.0]), tensor("w", &[8, 3], &w), tensor("b", &[3], &[1., 2., 3.])];
    let (path, out) = write_model(&dir, "hand", &model(13, ("x", &[0, 2, 3, 3]), "y", &nodes, &inits));
    let o = convert(&path, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let def = WeightsFile::open(&out).unwrap().netdef().unwrap();
    let names: Vec<&str> = def.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["p", "m", "s", "i", "f", "fc", "y"], "MatMul and Add are one layer named after the Add");

    // Two samples, though the model declares a dynamic batch.
    let x: Vec<f32> = (0..36).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
    let input = dir.join("x.npy");
    npy::write(&input, &[2, 2, 3, 3], &x).unwrap();
    let o = forward(&out, &input, &["y", "p"], &dir.join("fwd"));
    assert!(o.status.success(), "{}", stderr(&o));
    let got = npy::read(&dir.join("fwd/y.npy")).unwrap();
    let pooled = npy::read(&dir.join("fwd/p.npy")).unwrap();
    assert_eq!(pooled.shape, vec![2, 2, 2, 2], "floor rounding: (3 + 2 - 2) / 2 + 1 = 2");
    assert_eq!(got.shape, vec![2, 3]);
    for n in 0..2 {
        let mut flat = vec![];
        for c in 0..2 {
            for oy in 0..2usize {
                for ox in 0..2usize {
                    let mut m = f32::MIN;
                    for y in (oy * 2).saturating_sub(1)..(oy * 2 + 1).min(3) {
                        for xx in (ox * 2).saturating_sub(1)..(ox * 2 + 1).min(3) {
                            m = m.max(x[((n * 2 + c) * 3 + y) * 3 + xx]);
                        }
                    }
                    assert_eq!(pooled.data[((n * 2 + c) * 2 + oy) * 2 + ox], m);
                    flat.push(m * [2.0, -1.0][c] - 1.0);
                }
            }
        }
        for j in 0..3 {
            let want = [1., 2., 3.][j] + (0..8).map(|k| flat[k] * w[k * 3 + j]).sum::<f32>();
            let g = got.data[n * 3 + j];
            assert!((g - want).abs() < 1e-5, "sample {n} output {j}: {g} vs {want}");
        }
    }
}

/// Pads that differ between the sides: a Conv's as zeros of a Pad layer before it, a
/// MaxPool's as -inf (a window over padding and negative inputs keeps its largest input);
/// a Pad node read by a MaxPool, with a value, as a Pad layer (its value competes in the max).
#[test]
fn asymmetric_pads_and_pad_nodes_compute_onnx_semantics() {
    let dir = scratch("onnx-pads");
    let x: Vec<f32> = (0..9).map(|i| i as f32 - 6.0).collect();
    // x as ONNX pads it: `value` outside the 3x3 plane, `top` rows and `left` columns first.
    let at = |r: i64, c: i64, top: i64, left: i64, value: f32| {
        let (r, c) = (r - top, c - left);
        if (0..3).contains(&r) && (0..3).contains(&c) {
            x[(r * 3 + c) as usize]
        } else {
            value
        }
    };
    let close = |got: &[f32], want: &[f32], what: &str| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{what}: {got:?} vs {want:?}");
        }
    };

    // Conv k2 s2, pads bottom and right only: 2x2.
    let w = [1.0f32, 2.0, 3.0, 4.0];
    let conv = node("c", "Conv", &["x", "w"], &["y"], &[("strides", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![0, 0, 1, 1]))]);
    let bytes = model(13, ("x", &[1, 1, 3, 3]), "y", &[conv], &[tensor("w", &[1, 1, 2, 2], &w)]);
    let y = run_hand_model(&dir, "conv", &bytes, (&[1, 1, 3, 3], &x), "y");
    assert_eq!(y.shape, vec![1, 1, 2, 2]);
    let want: Vec<f32> =
        (0..4).map(|o| (0..4).map(|k| w[k] * at((o / 2 * 2 + k / 2) as i64, (o % 2 * 2 + k % 2) as i64, 0, 0, 0.0)).sum()).collect();
    close(&y.data, &want, "asymmetric conv");

    // MaxPool k2 s2, pads top and left only: window (0, 0) holds one input, -6.
    let attrs = [("kernel_shape", Attr::Ints(vec![2, 2])), ("strides", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![1, 1, 0, 0]))];
    let bytes = model(13, ("x", &[1, 1, 3, 3]), "y", &[node("m", "MaxPool", &["x"], &["y"], &attrs)], &[]);
    let y = run_hand_model(&dir, "maxpool", &bytes, (&[1, 1, 3, 3], &x), "y");
    let want: Vec<f32> = (0..4)
        .map(|o| {
            (0..4).map(|k| at((o / 2 * 2 + k / 2) as i64, (o % 2 * 2 + k % 2) as i64, 1, 1, f32::NEG_INFINITY)).fold(f32::MIN, f32::max)
        })
        .collect();
    assert_eq!(want[0], -6.0);
    close(&y.data, &want, "asymmetric max pool");

    // Pad (left 1, bottom 1, value -2.5), then MaxPool k2 s1: the value wins over -6 and -5.
    let nodes = [
        node("pad", "Pad", &["x", "pads", "value"], &["p"], &[]),
        node("m", "MaxPool", &["p"], &["y"], &[("kernel_shape", Attr::Ints(vec![2, 2]))]),
    ];
    let inits = [int64_tensor("pads", &[0, 0, 0, 1, 0, 0, 1, 0]), tensor("value", &[], &[-2.5])];
    let bytes = model(13, ("x", &[1, 1, 3, 3]), "y", &nodes, &inits);
    let y = run_hand_model(&dir, "pad-max", &bytes, (&[1, 1, 3, 3], &x), "y");
    assert_eq!(y.shape, vec![1, 1, 3, 3]);
    let want: Vec<f32> =
        (0..9).map(|o| (0..4).map(|k| at((o / 3 + k / 2) as i64, (o % 3 + k % 2) as i64, 0, 1, -2.5)).fold(f32::MIN, f32::max)).collect();
    assert_eq!(want[0], -2.5);
    close(&y.data, &want, "Pad then max pool");
    let p = run_hand_model(&dir, "pad-max-p", &bytes, (&[1, 1, 3, 3], &x), "p");
    assert_eq!(p.shape, vec![1, 1, 4, 4], "the Pad node's output is a layer of its own");

    // auto_pad SAME_UPPER, Conv k2 s2 on 3x3: 2x2 outputs, the one pixel of padding at the
    // end (the same as the explicit pads above); SAME_LOWER, MaxPool k2 s1: 3x3 outputs, the
    // pixel at the start.
    let conv = node("c", "Conv", &["x", "w"], &["y"], &[("strides", Attr::Ints(vec![2, 2])), ("auto_pad", Attr::Str("SAME_UPPER"))]);
    let bytes = model(13, ("x", &[1, 1, 3, 3]), "y", &[conv], &[tensor("w", &[1, 1, 2, 2], &w)]);
    let y = run_hand_model(&dir, "same-upper", &bytes, (&[1, 1, 3, 3], &x), "y");
    let want: Vec<f32> =
        (0..4).map(|o| (0..4).map(|k| w[k] * at((o / 2 * 2 + k / 2) as i64, (o % 2 * 2 + k % 2) as i64, 0, 0, 0.0)).sum()).collect();
    close(&y.data, &want, "SAME_UPPER conv");
    let attrs = [("kernel_shape", Attr::Ints(vec![2, 2])), ("auto_pad", Attr::Str("SAME_LOWER"))];
    let bytes = model(13, ("x", &[1, 1, 3, 3]), "y", &[node("m", "MaxPool", &["x"], &["y"], &attrs)], &[]);
    let y = run_hand_model(&dir, "same-lower", &bytes, (&[1, 1, 3, 3], &x), "y");
    let want: Vec<f32> = (0..9)
        .map(|o| (0..4).map(|k| at((o / 3 + k / 2) as i64, (o % 3 + k % 2) as i64, 1, 1, f32::NEG_INFINITY)).fold(f32::MIN, f32::max))
        .collect();
    close(&y.data, &want, "SAME_LOWER max pool");
}

/// Every truncation and a few thousand byte changes of a real model: the reader and the
/// translation may refuse, never panic, and a cut file is never accepted.
#[test]
fn mutated_models_never_panic() {
    let bytes = std::fs::read(fixture("onnx/tiny_resnet.onnx")).unwrap();
    let dir = Path::new(".");
    let attempt = |b: &[u8]| dgnam::onnx::proto::parse_model(b, dir).and_then(|m| dgnam::onnx::import(&m).map(|_| ()));
    attempt(&bytes).unwrap();
    for cut in 0..bytes.len() {
        // A cut at a field boundary of the model itself can leave a well-formed prefix; the
        // graph field comes before the opset, so such a prefix has no opset and is refused.
        assert!(attempt(&bytes[..cut]).is_err(), "a model cut to {cut} bytes was accepted");
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut m = bytes.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % m.len() as u64) as usize;
            m[at] = next() as u8;
        }
        let _ = attempt(&m);
    }
}

fn external_tensor(name: &str, dims: &[i64], location: &str, offset: usize) -> Vec<u8> {
    let mut t = vec![];
    for &d in dims {
        put_varint(&mut t, 1, d as u64);
    }
    put_varint(&mut t, 2, 1);
    put_bytes(&mut t, 8, name.as_bytes());
    for (key, value) in [("location", location.to_string()), ("offset", offset.to_string())] {
        let mut e = vec![];
        put_bytes(&mut e, 1, key.as_bytes());
        put_bytes(&mut e, 2, value.as_bytes());
        put_bytes(&mut t, 13, &e);
    }
    put_varint(&mut t, 14, 1);
    t
}

fn run_hand_model(dir: &Path, name: &str, bytes: &[u8], input: (&[usize], &[f32]), layer: &str) -> dgnam::tensor::Tensor {
    let (path, out) = write_model(dir, name, bytes);
    let o = convert(&path, &out, &[]);
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    let x = dir.join(format!("{name}.x.npy"));
    npy::write(&x, input.0, input.1).unwrap();
    let o = forward(&out, &x, &[layer], &dir.join(name));
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    npy::read(&dir.join(name).join(format!("{layer}.npy"))).unwrap()
}

/// Gemm with transB 0, alpha and beta; ConvTranspose; weights in an external data file.
#[test]
fn gemm_attributes_conv_transpose_and_external_data() {
    let dir = scratch("onnx-gemm");
    // y = 2 * x B + 0.5 * C, B 3x2 (transB 0).
    let b = [1., 2., 3., 4., 5., 6.];
    // B reaches the Gemm through an Identity, as exporters do with shared weights.
    let shared = node("shared", "Identity", &["b"], &["b2"], &[]);
    let attrs = [("alpha", Attr::Float(2.0)), ("beta", Attr::Float(0.5)), ("transB", Attr::Int(0))];
    let gemm = node("g", "Gemm", &["x", "b2", "c"], &["y"], &attrs);
    let bytes = model(13, ("x", &[2, 3]), "y", &[shared, gemm], &[tensor("b", &[3, 2], &b), tensor("c", &[2], &[10., 20.])]);
    let x = [1., 0., -1., 0.5, 2., 1.];
    let y = run_hand_model(&dir, "gemm", &bytes, (&[2, 3], &x), "y");
    for n in 0..2 {
        for j in 0..2 {
            let want = 2.0 * (0..3).map(|k| x[n * 3 + k] * b[k * 2 + j]).sum::<f32>() + 0.5 * [10., 20.][j];
            assert!((y.data[n * 2 + j] - want).abs() < 1e-5, "gemm [{n},{j}]: {} vs {want}", y.data[n * 2 + j]);
        }
    }

    // ConvTranspose, kernel 2 stride 2, one channel: each input pixel becomes w * x.
    let w = [1., -1., 0.5, 2.];
    let deconv = node("d", "ConvTranspose", &["x", "w", "bias"], &["y"], &[("strides", Attr::Ints(vec![2, 2]))]);
    let bytes = model(13, ("x", &[1, 1, 2, 2]), "y", &[deconv], &[tensor("w", &[1, 1, 2, 2], &w), tensor("bias", &[1], &[0.25])]);
    let x = [1., 2., 3., 4.];
    let y = run_hand_model(&dir, "deconv", &bytes, (&[1, 1, 2, 2], &x), "y");
    assert_eq!(y.shape, vec![1, 1, 4, 4]);
    for oy in 0..4 {
        for ox in 0..4 {
            let want = x[(oy / 2) * 2 + ox / 2] * w[(oy % 2) * 2 + ox % 2] + 0.25;
            assert!((y.data[oy * 4 + ox] - want).abs() < 1e-6, "deconv ({oy},{ox})");
        }
    }

    // The Conv weight lives at byte 8 of w.bin beside the model.
    let w: Vec<f32> = (0..8).map(|i| i as f32 - 3.0).collect();
    let mut file = vec![0u8; 8];
    file.extend(w.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(dir.join("w.bin"), &file).unwrap();
    let conv = node("c", "Conv", &["x", "w"], &["y"], &[]);
    let bytes = model(13, ("x", &[1, 2, 2, 2]), "y", &[conv], &[external_tensor("w", &[1, 2, 2, 2], "w.bin", 8)]);
    let x = [1., 1., 1., 1., 2., 2., 2., 2.];
    let y = run_hand_model(&dir, "external", &bytes, (&[1, 2, 2, 2], &x), "y");
    let want: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
    assert_eq!((y.shape.clone(), y.data[0]), (vec![1, 1, 1, 1], want));

    // A data file that is short, missing or outside the model's folder is refused.
    for (name, location, offset, why) in [
        ("short", "w.bin", 16, "lies outside"),
        ("missing", "nowhere.bin", 0, "cannot open external data"),
        ("escape", "../w.bin", 0, "must be a plain path beside the model"),
    ] {
        let conv = node("c", "Conv", &["x", "w"], &["y"], &[]);
        let bytes = model(13, ("x", &[1, 2, 2, 2]), "y", &[conv], &[external_tensor("w", &[1, 2, 2, 2], location, offset)]);
        let (path, out) = write_model(&dir, name, &bytes);
        let err = refused(&convert(&path, &out, &[]), &out);
        assert!(err.contains("tensor 'w'") && err.contains(why), "{name}: {err}");
    }
}

/// A Reshape to a shape from a Constant node (int64): `[1, -1]` on a model declared with
/// batch 1 keeps each sample's values together at batch 2, as Caffe's batch rule says.
#[test]
fn reshape_from_a_constant_node_runs_at_any_batch() {
    let dir = scratch("onnx-reshape");
    let mut shape = vec![];
    put_varint(&mut shape, 1, 2);
    put_varint(&mut shape, 2, 7);
    for v in [1i64, -1] {
        put_varint(&mut shape, 7, v as u64);
    }
    let nodes = [
        node("k", "Constant", &[], &["shape"], &[("value", Attr::Tensor(shape))]),
        node("r", "Reshape", &["x", "shape"], &["y"], &[]),
        node("s", "Softmax", &["y"], &["p"], &[("axis", Attr::Int(1))]),
    ];
    let bytes = model(13, ("x", &[1, 2, 2, 2]), "p", &nodes, &[]);
    let x: Vec<f32> = (0..16).map(|i| i as f32 / 4.0).collect();
    let y = run_hand_model(&dir, "reshape", &bytes, (&[2, 2, 2, 2], &x), "y");
    assert_eq!(y.shape, vec![2, 8]);
    assert_eq!(y.data, x);
    let probs = run_hand_model(&dir, "softmax", &bytes, (&[2, 2, 2, 2], &x), "p");
    for n in 0..2 {
        let row = &x[n * 8..n * 8 + 8];
        let total: f32 = row.iter().map(|v| v.exp()).sum();
        for (j, v) in row.iter().enumerate() {
            assert!((probs.data[n * 8 + j] - v.exp() / total).abs() < 1e-6);
        }
    }
}

/// An int64 scalar (rank 0), the value of a Constant node.
fn int64_scalar(value: i64) -> Vec<u8> {
    let mut t = vec![];
    put_varint(&mut t, 2, 7);
    put_varint(&mut t, 7, value as u64);
    t
}

/// torch's `x.view(x.size(0), -1)` as its TorchScript exporter writes it: Shape, Gather of
/// index 0, Unsqueeze (axes an attribute before opset 13, an input from 13), Concat with
/// [-1], Reshape; `tail` is what the Concat puts after the batch.
fn view_chain(opset: u64, x: &str, tail: &str, out: &str) -> Vec<Vec<u8>> {
    let mut nodes = vec![
        node("shape", "Shape", &[x], &["s"], &[]),
        node("zero", "Constant", &[], &["i0"], &[("value", Attr::Tensor(int64_scalar(0)))]),
        node("gather", "Gather", &["s", "i0"], &["n"], &[("axis", Attr::Int(0))]),
    ];
    if opset < 13 {
        nodes.push(node("unsqueeze", "Unsqueeze", &["n"], &["n1"], &[("axes", Attr::Ints(vec![0]))]));
    } else {
        nodes.push(node("axes", "Constant", &[], &["axes"], &[("value", Attr::Tensor(int64_tensor("", &[0])))]));
        nodes.push(node("unsqueeze", "Unsqueeze", &["n", "axes"], &["n1"], &[]));
    }
    nodes.push(node("minus", "Constant", &[], &["m1"], &[("value", Attr::Tensor(int64_tensor("", &[-1])))]));
    nodes.push(node("concat", "Concat", &["n1", tail], &["target"], &[("axis", Attr::Int(0))]));
    nodes.push(node("flat", "Reshape", &[x, "target"], &[out], &[]));
    nodes
}

/// The view chain at opset 9 and 13 becomes one Reshape (0 copies the batch, -1 infers)
/// and runs at batch 1 and 3: the shape nodes make no layers.
#[test]
fn shape_arithmetic_of_a_view_becomes_one_reshape_at_any_batch() {
    let dir = scratch("onnx-view-chain");
    let w: Vec<f32> = (0..24).map(|i| (i as f32 - 11.5) / 7.0).collect();
    let bias = [0.5, -1.0, 2.0];
    for opset in [9, 13] {
        let mut nodes = vec![node("relu", "Relu", &["x"], &["r"], &[])];
        nodes.extend(view_chain(opset, "r", "m1", "flat"));
        nodes.push(node("fc", "Gemm", &["flat", "w", "b"], &["y"], &[("transB", Attr::Int(1))]));
        let bytes = model(opset, ("x", &[0, 2, 2, 2]), "y", &nodes, &[tensor("w", &[3, 8], &w), tensor("b", &[3], &bias)]);
        for batch in [1usize, 3] {
            let name = format!("view{opset}b{batch}");
            let x: Vec<f32> = (0..8 * batch).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
            let y = run_hand_model(&dir, &name, &bytes, (&[batch, 2, 2, 2], &x), "y");
            assert_eq!(y.shape, vec![batch, 3], "{name}");
            for n in 0..batch {
                for j in 0..3 {
                    let want = bias[j] + (0..8).map(|k| x[n * 8 + k].max(0.0) * w[j * 8 + k]).sum::<f32>();
                    let got = y.data[n * 3 + j];
                    assert!((got - want).abs() < 1e-5, "{name} [{n},{j}]: {got} vs {want}");
                }
            }
            let def = WeightsFile::open(&dir.join(format!("{name}.dgnw"))).unwrap().netdef().unwrap();
            let layers: Vec<(&str, &str)> = def.layers.iter().map(|l| (l.name.as_str(), l.kind.type_name())).collect();
            assert_eq!(layers, [("r", "ReLU"), ("flat", "Reshape"), ("y", "InnerProduct")], "{name}");
        }
    }
}

/// `x.view(*x.shape[:2], x.shape[2] * x.shape[3])` written with Slice (attributes before
/// opset 10, inputs from 10; opset 15's Shape takes `end` instead), Squeeze, Mul, Unsqueeze
/// and Cast: one Reshape to [batch, 2, 6] at batch 1 and 3.
#[test]
fn slices_squeezes_and_casts_of_a_shape_evaluate_at_conversion() {
    let dir = scratch("onnx-shape-slices");
    for opset in [9u64, 13, 15] {
        let mut nodes = vec![node("shape", "Shape", &["x"], &["s"], &[])];
        let mut inits = vec![int64_tensor("axes0", &[0])];
        let mut slice = |nodes: &mut Vec<Vec<u8>>, out: &str, start: i64, end: i64| {
            if opset < 10 {
                let attrs = [("starts", Attr::Ints(vec![start])), ("ends", Attr::Ints(vec![end])), ("axes", Attr::Ints(vec![0]))];
                nodes.push(node(out, "Slice", &["s"], &[out], &attrs));
            } else {
                let (starts, ends) = (format!("{out}.starts"), format!("{out}.ends"));
                inits.extend([int64_tensor(&starts, &[start]), int64_tensor(&ends, &[end])]);
                nodes.push(node(out, "Slice", &["s", &starts, &ends, "axes0"], &[out], &[]));
            }
        };
        if opset >= 15 {
            nodes.push(node("lead", "Shape", &["x"], &["lead"], &[("end", Attr::Int(2))]));
        } else {
            slice(&mut nodes, "lead", 0, 2);
        }
        slice(&mut nodes, "h", 2, 3);
        slice(&mut nodes, "w", -1, i64::MAX);
        let axes = |op: &str, x: &str, out: &str| {
            if opset < 13 {
                node(out, op, &[x], &[out], &[("axes", Attr::Ints(vec![0]))])
            } else {
                node(out, op, &[x, "axes0"], &[out], &[])
            }
        };
        nodes.extend([
            axes("Squeeze", "h", "hs"),
            axes("Squeeze", "w", "ws"),
            node("hw", "Mul", &["hs", "ws"], &["hw"], &[]),
            axes("Unsqueeze", "hw", "hw1"),
            node("cast", "Cast", &["lead"], &["lead64"], &[("to", Attr::Int(7))]),
            node("concat", "Concat", &["lead64", "hw1"], &["target"], &[("axis", Attr::Int(0))]),
            node("flat", "Reshape", &["x", "target"], &["y"], &[]),
        ]);
        let bytes = model(opset, ("x", &[0, 2, 2, 3]), "y", &nodes, &inits);
        for batch in [1usize, 3] {
            let name = format!("slices{opset}b{batch}");
            let x: Vec<f32> = (0..12 * batch).map(|i| i as f32 * 0.5).collect();
            let y = run_hand_model(&dir, &name, &bytes, (&[batch, 2, 2, 3], &x), "y");
            assert_eq!((y.shape.clone(), &y.data), (vec![batch, 2, 6], &x), "{name}");
            let def = WeightsFile::open(&dir.join(format!("{name}.dgnw"))).unwrap().netdef().unwrap();
            assert_eq!(def.layers.len(), 1, "{name}: the shape nodes make no layers");
        }
    }
}

/// What the shape arithmetic cannot turn into the engine's Reshape, and every Transpose
/// but the one a transA Gemm cancels, is refused with one line naming the node.
#[test]
fn shape_arithmetic_and_transposes_the_engine_cannot_follow_are_refused() {
    let dir = scratch("onnx-shape-refused");
    let fc = |a: &str, trans_a: i64| node("fc", "Gemm", &[a, "w"], &["y"], &[("transA", Attr::Int(trans_a))]);
    let w = tensor("w", &[4, 2], &[0.5; 8]);
    let two = node("two", "Constant", &[], &["k2"], &[("value", Attr::Tensor(int64_scalar(2)))]);
    let mut late = view_chain(13, "x", "m1", "y");
    // Concat([-1], [batch]): the batch at position 1.
    let at = late.len() - 2;
    late[at] = node("concat", "Concat", &["m1", "n1"], &["target"], &[("axis", Attr::Int(0))]);
    let mut twice = view_chain(13, "x", "m1", "y");
    twice.insert(3, two.clone());
    twice.insert(4, node("twice", "Mul", &["n", "k2"], &["n2"], &[]));
    let image = |nodes: &[Vec<u8>]| model(13, ("x", &[0, 2, 2, 2]), "y", nodes, &[]);
    let matrix = |nodes: &[Vec<u8>]| model(13, ("x", &[0, 4]), "y", nodes, std::slice::from_ref(&w));
    let cases = [
        ("batch-late", image(&late), "node 'flat' (Reshape): the shape puts the batch at position 1; the engine's Reshape keeps it at axis 0"),
        ("batch-times", image(&twice), "node 'twice' (Mul): the batch Mul 2 depends on the batch, which is known only at run time"),
        (
            "gather-tensor",
            image(&[two.clone(), node("g", "Gather", &["x", "k2"], &["y"], &[])]),
            "node 'g' (Gather): supported only on integer values known at conversion (from Shape), not on 'x'",
        ),
        (
            // A graph that outputs its input's shape: the engine computes no such tensor.
            "shape-output",
            image(&[node("relu", "Relu", &["x"], &["r"], &[]), node("shape", "Shape", &["r"], &["y"], &[])]),
            "graph output 'y' is a shape value (integers worked out at conversion), not a tensor the engine computes",
        ),
        (
            "cast-float",
            image(&[node("shape", "Shape", &["x"], &["s"], &[]), node("c", "Cast", &["s"], &["y"], &[("to", Attr::Int(1))])]),
            "node 'c' (Cast): a Cast of an integer shape value to type 1 is not supported (only to int64, 7)",
        ),
        (
            "transpose-alone",
            matrix(&[node("t", "Transpose", &["x"], &["xt"], &[("perm", Attr::Ints(vec![1, 0]))]), fc("xt", 0)]),
            "node 't' (Transpose): perm [1, 0] is not supported (only perm [1, 0] read by nothing but a Gemm with transA 1, which cancels it)",
        ),
        (
            "transpose-also-read",
            matrix(&[
                node("t", "Transpose", &["x"], &["xt"], &[]),
                fc("xt", 1),
                node("r", "Relu", &["xt"], &["z"], &[]),
            ]),
            "node 't' (Transpose): perm [1, 0] is not supported (only perm [1, 0] read by nothing but a Gemm with transA 1, which cancels it)",
        ),
        (
            "transpose-4d",
            image(&[node("t", "Transpose", &["x"], &["y"], &[("perm", Attr::Ints(vec![0, 2, 3, 1]))])]),
            "node 't' (Transpose): perm [0, 2, 3, 1] is not supported (only perm [1, 0] read by nothing but a Gemm with transA 1, which cancels it)",
        ),
        (
            "trans-a-alone",
            matrix(&[fc("x", 1)]),
            "node 'fc' (Gemm): transA 1 is supported only on a Transpose's output (perm [1, 0]); alone it would contract over the batch axis",
        ),
    ];
    for (name, bytes, want) in cases {
        let (path, out) = write_model(&dir, name, &bytes);
        let err = refused(&convert(&path, &out, &[]), &out);
        assert_eq!(err.trim_end(), format!("error: {}: {want}", path.display()), "{name}");
    }
}

/// `Gemm(Transpose(x), B, transA 1)` is `x B`: one InnerProduct, the Transpose no layer.
#[test]
fn a_transpose_cancelled_by_gemm_trans_a_runs_at_any_batch() {
    let dir = scratch("onnx-trans-a");
    let b = [1., -2., 0.5, 3., -1., 4.];
    let c = [0.25, -0.75];
    let nodes = [
        node("t", "Transpose", &["x"], &["xt"], &[("perm", Attr::Ints(vec![1, 0]))]),
        node("fc", "Gemm", &["xt", "b", "c"], &["y"], &[("transA", Attr::Int(1)), ("alpha", Attr::Float(0.5))]),
    ];
    let bytes = model(13, ("x", &[0, 3]), "y", &nodes, &[tensor("b", &[3, 2], &b), tensor("c", &[2], &c)]);
    for batch in [1usize, 3] {
        let name = format!("trans_a_b{batch}");
        let x: Vec<f32> = (0..3 * batch).map(|i| i as f32 - 2.0).collect();
        let y = run_hand_model(&dir, &name, &bytes, (&[batch, 3], &x), "y");
        assert_eq!(y.shape, vec![batch, 2]);
        for n in 0..batch {
            for j in 0..2 {
                let want = 0.5 * (0..3).map(|k| x[n * 3 + k] * b[k * 2 + j]).sum::<f32>() + c[j];
                assert!((y.data[n * 2 + j] - want).abs() < 1e-5, "{name} [{n},{j}]");
            }
        }
        let def = WeightsFile::open(&dir.join(format!("{name}.dgnw"))).unwrap().netdef().unwrap();
        let layers: Vec<&str> = def.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(layers, ["y"]);
    }
}

/// A command that failed with one error line (after any device note) and wrote nothing
/// into `out`. Returns the line.
fn one_error_line(o: &Output, out: &Path) -> String {
    assert!(!o.status.success());
    let err = stderr(o);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(!err.contains("panicked") && !out.exists(), "{err}");
    errors[0].to_string()
}

fn dgnam(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dgnam"));
    c.args(args);
    for (flag, p) in paths {
        c.arg(flag).arg(p);
    }
    c.output().unwrap()
}

/// torchvision's preprocessing of one RGB pixel, computed here: (v / 255 - mean) / std.
fn torchvision_pixel(rgb: [u8; 3]) -> [f32; 3] {
    let (mean, std) = ([0.485f64, 0.456, 0.406], [0.229f64, 0.224, 0.225]);
    [0, 1, 2].map(|c| ((rgb[c] as f64 / 255.0 - mean[c]) / std[c]) as f32)
}

#[test]
fn image_files_on_a_torchvision_net_are_read_in_its_space() {
    // A PNG at the net's size gives what the same pixels normalized by hand give, and one of
    // another size is resized to the input first (forward, backward, act-range).
    let dir = scratch("onnx-space-images");
    let net = dir.join("alexnet.dgnw");
    assert!(convert(&fixture("onnx/tiny_alexnet.onnx"), &net, &[]).status.success());
    let side = WeightsFile::open(&net).unwrap().netdef().unwrap().inputs[0].shape.clone();
    let (h, w) = (side[2], side[3]);
    let rgb = [120u8, 60, 30];
    let png = dir.join("x.png");
    image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb(rgb)).save(&png).unwrap();
    let by_hand = dir.join("x.npy");
    let want = torchvision_pixel(rgb);
    npy::write(&by_hand, &side, &(0..3 * h * w).map(|i| want[i / (h * w)]).collect::<Vec<f32>>()).unwrap();
    let logits = |input: &Path, name: &str| {
        let out = dir.join(name);
        let o = forward(&net, input, &[], &out);
        assert!(o.status.success(), "{}", stderr(&o));
        npy::read(&out.join("logits.npy")).unwrap().data
    };
    let (from_png, from_npy) = (logits(&png, "png"), logits(&by_hand, "npy"));
    assert!(common::rel_err(&from_png, &from_npy) < 1e-5, "{from_png:?} vs {from_npy:?}");
    // A pure blue picture is not the pure red one: the channel order matters.
    let blue = dir.join("blue.png");
    image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([30, 60, 120])).save(&blue).unwrap();
    assert!(common::rel_err(&logits(&blue, "blue"), &from_npy) > 1e-3);

    let big = dir.join("pictures");
    std::fs::create_dir_all(&big).unwrap();
    for (i, c) in [[200u8, 10, 90], [5, 250, 128]].iter().enumerate() {
        image::RgbImage::from_pixel(2 * w as u32 + 3, h as u32 + 7, image::Rgb(*c)).save(big.join(format!("{i}.png"))).unwrap();
    }
    let grad = dir.join("grad.npy");
    let o = dgnam(
        &["backward", "--device", "cpu", "--layer", "logits", "--unit", "1"],
        &[("--net", &net), ("--input", &big.join("0.png")), ("--out", &grad)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(npy::read(&grad).unwrap().shape, side);
    let bounds = dir.join("bounds.txt");
    let o = dgnam(&["act-range", "--device", "cpu", "--layer", "logits"], &[("--net", &net), ("--images", &big), ("-o", &bounds)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&bounds).unwrap().split_whitespace().count(), from_npy.len());
}

#[test]
fn what_stays_caffe_space_is_refused_on_a_torchvision_net() {
    // Pixel-space synthesis's priors are Caffe-space, and torchvision's normalization is
    // for 3-channel images: each is one clear error. A .npy input runs.
    let dir = scratch("onnx-space-refused");
    let net = dir.join("alexnet.dgnw");
    assert!(convert(&fixture("onnx/tiny_alexnet.onnx"), &net, &[]).status.success());
    let out = dir.join("out");
    let args = ["synthesize", "--device", "cpu", "--generator", "none", "--layer", "logits", "--units", "0", "--iters", "2"];
    let o = dgnam(&args, &[("--net", &net), ("--out-dir", &out)]);
    let err = one_error_line(&o, &out);
    assert!(err.contains("takes torchvision input") && err.contains("--generator none"), "{err}");

    let nodes = [node("r", "Relu", &["x"], &["y"], &[])];
    let (path, grey) = write_model(&dir, "grey", &model(13, ("x", &[1, 1, 4, 4]), "y", &nodes, &[]));
    assert!(convert(&path, &grey, &[]).status.success());
    let png = dir.join("grey.png");
    image::GrayImage::from_pixel(4, 4, image::Luma([90])).save(&png).unwrap();
    let err = one_error_line(&forward(&grey, &png, &[], &out), &out);
    assert!(err.contains("torchvision") && err.contains("3-channel") && err.contains(".npy"), "{err}");
    let x = dir.join("x.npy");
    npy::write(&x, &[1, 1, 4, 4], &[0.5f32; 16]).unwrap();
    let o = forward(&grey, &x, &[], &out);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The Caffe-space 256 x 256 image of tools/make-space-fixtures.py.
fn formula_image() -> Vec<f32> {
    let mean = dgnam::preprocess::IMAGENET_MEAN_BGR;
    let mut v = Vec::with_capacity(3 * 256 * 256);
    for c in 0..3 {
        for y in 0..256 {
            for x in 0..256 {
                let (c, yf, xf) = (c as f64, y as f64, x as f64);
                let pixel = 127.5 + 100.0 * (0.05 * xf + 0.3 * c).sin() * (0.07 * yf + 0.2 * c).cos();
                v.push(pixel as f32 - mean[c as usize]);
            }
        }
    }
    v
}

#[test]
fn the_generator_image_in_torchvision_space_matches_torch_at_224_and_299() {
    // tests/fixtures/onnx/space_torchvision_*.npy: torch's center crop (224) and bilinear
    // interpolate (299, align_corners=False) of the same Caffe-space image, in float64.
    use dgnam::synth::view::{Fit, View};
    let root = fixture("onnx");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("space_torchvision.json")).unwrap()).unwrap();
    let image = formula_image();
    let cpu = dgnam::device::Cpu::<f32>::new();
    let cases = meta["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let side = case["side"].as_u64().unwrap() as usize;
        let rows: Vec<usize> = case["rows"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap() as usize).collect();
        let want = npy::read(&root.join(case["file"].as_str().unwrap())).unwrap();
        assert_eq!(want.shape, vec![3, rows.len(), side]);
        let mut view = View::new(&cpu, [1, 3, 256, 256], &[1, 3, side, side], InputSpace::Torchvision).unwrap();
        let expected_fit = if side == 224 { Fit::Crop { offset: [16, 16], hw: [224, 224] } } else { Fit::Resize { hw: [299, 299] } };
        assert_eq!(view.fit(), expected_fit);
        let mut got = vec![f32::NAN; 3 * side * side];
        view.forward(&cpu, &image, &mut got).unwrap();
        let mut worst = 0f32;
        for c in 0..3 {
            for (k, &y) in rows.iter().enumerate() {
                for x in 0..side {
                    let (g, t) = (got[(c * side + y) * side + x], want.data[(c * rows.len() + k) * side + x]);
                    assert!((g - t).abs() < 5e-5, "{side}: channel {c} row {y} column {x}: {g} vs torch {t}");
                    worst = worst.max((g - t).abs());
                }
            }
        }
        assert!(max_abs(&want.data) > 1.0 && worst < 5e-5, "{side}: worst {worst}");
    }
}

#[test]
fn synthesize_through_a_torchvision_onnx_net_raises_its_unit_and_is_batch_invariant() {
    // The tiny generator's 8 x 8 Caffe-space images, resized to tiny_resnet's 16 x 16 and
    // converted to torchvision space, through the converted ONNX net.
    let dir = scratch("onnx-synth");
    let net = dir.join("resnet.dgnw");
    assert!(convert(&fixture("onnx/tiny_resnet.onnx"), &net, &[]).status.success());
    let (gen, _) = common::tiny_weight_files(&dir);
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args = vec!["synthesize", "--device", "cpu", "--layer", "logits", "--bounds", "none", "--iters", "12"];
        args.extend_from_slice(extra);
        let o = dgnam(&args, &[("--net", &net), ("--generator", &gen), ("--out-dir", &out)]);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    };
    // Unit 3 alone (batch 1), and in --units all (6 units: batches of 4, the second padded).
    let alone = run("alone", &["--units", "3"]);
    let all = run("all", &["--units", "all", "--batch", "4"]);
    let stem = "logits_0003";
    for ext in ["image.npy", "code.npy", "png"] {
        let read = |d: &Path| std::fs::read(d.join(format!("{stem}.{ext}"))).unwrap();
        assert!(read(&alone) == read(&all), "{stem}.{ext} differs between --units 3 and --units all --batch 4");
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(alone.join("summary.json")).unwrap()).unwrap();
    let acts: Vec<f64> = summary["units"][0]["activations"].as_array().unwrap().iter().map(|a| a.as_f64().unwrap()).collect();
    assert_eq!(acts.len(), 12);
    // The random net's logits vary little with its input: from -0.208 to -0.187 here. A
    // wrong gradient (sign, channel order, adjoint) would not climb over 12 steps.
    assert!(acts[11] > acts[0] + 0.01 && acts[11] >= acts[6], "the unit's activation did not rise: {acts:?}");

    // image.npy is the net's input: forward on it gives the last activation, and the
    // generator's image of code.npy, resized and converted, is image.npy.
    let image = npy::read(&alone.join(format!("{stem}.image.npy"))).unwrap();
    assert_eq!(image.shape, vec![1, 3, 16, 16]);
    let o = forward(&net, &alone.join(format!("{stem}.image.npy")), &[], &dir.join("check"));
    assert!(o.status.success(), "{}", stderr(&o));
    let logits = npy::read(&dir.join("check/logits.npy")).unwrap();
    assert!((logits.data[3] as f64 - acts[11]).abs() <= 1e-5 * acts[11].abs().max(1.0), "{} vs {}", logits.data[3], acts[11]);
    let gen_file = WeightsFile::open(&gen).unwrap();
    let g = dgnam::graph::CpuNet::<f32>::from_weights(&gen_file, 1, dgnam::device::Cpu::new()).unwrap();
    let code = npy::read(&alone.join(format!("{stem}.code.npy"))).unwrap();
    let mut st = g.state().unwrap();
    g.forward(&mut st, &[&code.data]).unwrap();
    let cpu = dgnam::device::Cpu::<f32>::new();
    let mut view = dgnam::synth::view::View::new(&cpu, [1, 3, 8, 8], &[1, 3, 16, 16], InputSpace::Torchvision).unwrap();
    let mut again = vec![0f32; 3 * 16 * 16];
    view.forward(&cpu, st.value(g.plan.last_output()), &mut again).unwrap();
    assert_eq!(again, image.data);
    let png = image::open(alone.join(format!("{stem}.png"))).unwrap();
    assert_eq!((png.width(), png.height()), (16, 16));
}
