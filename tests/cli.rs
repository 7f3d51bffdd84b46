//! The command-line tools end to end, and how they fail on bad input: one clear error
//! line, a non-zero exit, and no output written.

mod common;

use common::{converted_lenet, fixture, scratch};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dgnam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dgnam")).args(args).output().unwrap()
}

fn convert(prototxt: &Path, model: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dgnam-convert"))
        .args(["--prototxt", s(prototxt), "--caffemodel", s(model), "-o", s(out)])
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A failure as users should see it: exit 1, exactly one stderr line starting "error:",
/// mentioning `needle`, and never a panic.
#[track_caller]
fn assert_clean_failure(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected exit 1, stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("device:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    assert!(lines[0].contains(needle), "'{needle}' missing from: {}", lines[0]);
}

fn lenet() -> (PathBuf, PathBuf) {
    (fixture("caffe/lenet_mnist/lenet.prototxt"), fixture("caffe/lenet_mnist/lenet_iter_10000.caffemodel"))
}

#[test]
fn convert_info_forward_backward_on_lenet() {
    let dir = scratch("lenet-e2e");
    let net = converted_lenet(&dir);
    let info = dgnam(&["info", s(&net)]);
    assert!(info.status.success());
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("ip1") && text.contains("InnerProduct") && text.contains("400500"), "{text}");
    assert!(text.contains("431080 parameters"), "{text}");

    let image = fixture("caffe/lenet_mnist/mnist_sample_image.png");
    let out_dir = dir.join("fwd");
    let r = dgnam(&[
        "forward",
        "--net",
        s(&net),
        "--input",
        s(&image),
        "--scale",
        "0.00390625",
        "--layer",
        "prob",
        "--layer",
        "ip1",
        "--out-dir",
        s(&out_dir),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("device: cpu"));
    let prob = dgnam::npy::read(&out_dir.join("prob.npy")).unwrap();
    assert_eq!(prob.shape, vec![1, 10]);
    assert!(prob.data[0] > 0.999, "{:?}", prob.data);
    // ip1 is written as the layer produced it, before the in-place relu1.
    let ip1 = dgnam::npy::read(&out_dir.join("ip1.npy")).unwrap();
    assert_eq!(ip1.shape, vec![1, 500]);
    assert!(ip1.data.iter().any(|&v| v < 0.0));

    let grad = dir.join("grad.npy");
    let r = dgnam(&[
        "backward",
        "--net",
        s(&net),
        "--input",
        s(&image),
        "--scale",
        "0.00390625",
        "--layer",
        "ip2",
        "--unit",
        "0",
        "--out",
        s(&grad),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let g = dgnam::npy::read(&grad).unwrap();
    assert_eq!(g.shape, vec![1, 1, 28, 28]);
    assert!(g.data.iter().any(|&v| v != 0.0));

    // An .npy input with a batch of 3 gives 3 rows; conv units take --xy.
    let x = dir.join("x.npy");
    let data: Vec<f32> = (0..3 * 784).map(|i| ((i * 7919) % 256) as f32 / 256.0).collect();
    dgnam::npy::write(&x, &[3, 1, 28, 28], &data).unwrap();
    let r = dgnam(&["forward", "--net", s(&net), "--input", s(&x), "--out-dir", s(&out_dir)]);
    assert!(r.status.success());
    assert_eq!(dgnam::npy::read(&out_dir.join("prob.npy")).unwrap().shape, vec![3, 10]);
    let r = dgnam(&["backward", "--net", s(&net), "--input", s(&x), "--layer", "conv2", "--unit", "7", "--xy", "2,3", "--out", s(&grad)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(dgnam::npy::read(&grad).unwrap().shape, vec![3, 1, 28, 28]);
}

#[test]
fn v1_lenet_converts_with_its_legacy_blob_shapes() {
    let dir = scratch("lenet-v1");
    let out = dir.join("v1.dgnw");
    let r = convert(&fixture("caffe/lenet_mnist_v1/lenet.prototxt"), &fixture("caffe/lenet_mnist_v1/lenet_iter_10000.caffemodel"), &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let w = dgnam::weights::WeightsFile::open(&out).unwrap();
    // Stored [1,1,500,800] in the caffemodel, kept in the net's own [500,800].
    assert_eq!(w.tensor("ip1", 0).unwrap().0.shape, vec![500, 800]);
}

#[test]
fn truncated_and_corrupted_caffemodels_fail_cleanly_without_output() {
    let dir = scratch("bad-caffemodel");
    let (p, m) = lenet();
    let bytes = std::fs::read(&m).unwrap();
    for (i, cut) in [10usize, 1000, bytes.len() / 2, bytes.len() - 3].into_iter().enumerate() {
        let bad = dir.join(format!("trunc{i}.caffemodel"));
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let out = dir.join(format!("trunc{i}.dgnw"));
        assert_clean_failure(&convert(&p, &bad, &out), "caffemodel");
        assert!(!out.exists());
    }
    let mut corrupt = bytes.clone();
    for b in corrupt.iter_mut().take(64) {
        *b = 0xff;
    }
    let bad = dir.join("corrupt.caffemodel");
    std::fs::write(&bad, &corrupt).unwrap();
    let out = dir.join("corrupt.dgnw");
    assert_clean_failure(&convert(&p, &bad, &out), "corrupt.caffemodel");
    assert!(!out.exists());
}

#[test]
fn a_caffemodel_of_another_net_is_rejected_by_layer_name() {
    let dir = scratch("mismatch");
    let (p, _) = lenet();
    let out = dir.join("x.dgnw");
    let r = convert(&p, &fixture("caffe/cifar10_quick_v1/cifar10_quick_iter_5000.caffemodel"), &out);
    assert_clean_failure(&r, "conv1");
    assert!(!out.exists());
}

#[test]
fn bad_prototxts_fail_cleanly() {
    let dir = scratch("bad-prototxt");
    let (p, m) = lenet();
    let text = std::fs::read_to_string(&p).unwrap();
    let cases = [
        ("unknown.prototxt", text.replace("\"Pooling\"", "\"FancyPool\""), "FancyPool"),
        ("truncated.prototxt", text[..text.len() / 2].to_string(), "truncated.prototxt"),
        ("garbage.prototxt", "layer { name: \"a\" type: \"ReLU\" bottom: [[[".to_string(), "garbage.prototxt"),
    ];
    for (name, body, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let out = dir.join(format!("{name}.dgnw"));
        assert_clean_failure(&convert(&path, &m, &out), needle);
        assert!(!out.exists());
        assert_clean_failure(&dgnam(&["info", s(&path)]), needle);
    }
}

#[test]
fn damaged_weights_files_fail_cleanly_without_output() {
    let dir = scratch("bad-dgnw");
    let net = converted_lenet(&dir);
    let bytes = std::fs::read(&net).unwrap();
    let image = fixture("caffe/lenet_mnist/mnist_sample_image.png");
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("truncated".into(), bytes[..bytes.len() - 100].to_vec()),
        ("header-only".into(), bytes[..200].to_vec()),
        ("empty".into(), vec![]),
    ];
    let mut flipped = bytes.clone();
    let last = flipped.len() - 8;
    flipped[last] ^= 1;
    cases.push(("flipped-data".into(), flipped));
    let mut bad_offset = bytes.clone();
    bad_offset[50] ^= 0x40;
    cases.push(("bad-header".into(), bad_offset));
    for (name, body) in cases {
        let path = dir.join(format!("{name}.dgnw"));
        std::fs::write(&path, body).unwrap();
        let out_dir = dir.join(format!("out-{name}"));
        let r = dgnam(&["forward", "--net", s(&path), "--input", s(&image), "--out-dir", s(&out_dir)]);
        assert_clean_failure(&r, &format!("{name}.dgnw"));
        assert!(!out_dir.exists(), "{name}: output written despite the error");
        assert_clean_failure(&dgnam(&["info", s(&path)]), &format!("{name}.dgnw"));
    }
    let missing = dir.join("absent.dgnw");
    assert_clean_failure(&dgnam(&["forward", "--net", s(&missing), "--input", s(&image), "--out-dir", s(&dir)]), "fetch-weights.sh");
}

#[test]
fn wrong_inputs_and_flags_fail_cleanly_without_output() {
    let dir = scratch("bad-input");
    let net = converted_lenet(&dir);
    let wrong = dir.join("wrong.npy");
    dgnam::npy::write(&wrong, &[1, 3, 28, 28], &vec![0.0; 3 * 784]).unwrap();
    let out_dir = dir.join("out");
    assert_clean_failure(&dgnam(&["forward", "--net", s(&net), "--input", s(&wrong), "--out-dir", s(&out_dir)]), "1x3x28x28");
    let image = fixture("caffe/lenet_mnist/mnist_sample_image.png");
    assert_clean_failure(
        &dgnam(&["forward", "--net", s(&net), "--input", s(&image), "--layer", "nope", "--out-dir", s(&out_dir)]),
        "'nope'",
    );
    let not_image = dir.join("fake.png");
    std::fs::write(&not_image, b"this is not a png").unwrap();
    assert_clean_failure(&dgnam(&["forward", "--net", s(&net), "--input", s(&not_image), "--out-dir", s(&out_dir)]), "fake.png");
    assert!(!out_dir.exists());
    let grad = dir.join("g.npy");
    assert_clean_failure(
        &dgnam(&["backward", "--net", s(&net), "--input", s(&image), "--layer", "ip2", "--unit", "10", "--out", s(&grad)]),
        "unit 10",
    );
    assert_clean_failure(
        &dgnam(&["backward", "--net", s(&net), "--input", s(&image), "--layer", "conv1", "--unit", "0", "--xy", "99,0", "--out", s(&grad)]),
        "99",
    );
    assert!(!grad.exists());
    assert_clean_failure(
        &dgnam(&["forward", "--net", s(&net), "--input", s(&image), "--device", "cuda", "--out-dir", s(&out_dir)]),
        "cuda",
    );
}

#[test]
fn image_preprocessing_with_a_binaryproto_mean_matches_the_npy_path() {
    let dir = scratch("cifar-mean");
    let model = fixture("caffe/cifar10_quick_v1/cifar10_quick_iter_5000.caffemodel");
    let net = dir.join("cifar.dgnw");
    assert!(convert(&fixture("caffe/cifar10_quick_v1/cifar10_quick_newformat.prototxt"), &model, &net).status.success());
    // A 40x36 picture: resized to 32x32, kept in RGB order (CIFAR's), minus the mean image.
    let png = dir.join("pic.png");
    image::RgbImage::from_fn(40, 36, |x, y| image::Rgb([(x * 6) as u8, (y * 7) as u8, ((x + y) * 3) as u8])).save(&png).unwrap();
    let mean = fixture("caffe/cifar10_quick_v1/mean.binaryproto");
    let out_a = dir.join("a");
    let r = dgnam(&[
        "forward",
        "--net",
        s(&net),
        "--input",
        s(&png),
        "--channel-order",
        "rgb",
        "--mean-file",
        s(&mean),
        "--out-dir",
        s(&out_a),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));

    let resized = image::imageops::resize(&image::open(&png).unwrap().to_rgb8(), 32, 32, image::imageops::FilterType::Triangle);
    let m = dgnam::preprocess::read_mean_file(&mean).unwrap();
    let mut x = vec![0f32; 3 * 1024];
    for (i, p) in resized.pixels().enumerate() {
        for c in 0..3 {
            x[c * 1024 + i] = p.0[c] as f32 - m.data[c * 1024 + i];
        }
    }
    let npy = dir.join("x.npy");
    dgnam::npy::write(&npy, &[1, 3, 32, 32], &x).unwrap();
    let out_b = dir.join("b");
    assert!(dgnam(&["forward", "--net", s(&net), "--input", s(&npy), "--out-dir", s(&out_b)]).status.success());
    let a = dgnam::npy::read(&out_a.join("prob.npy")).unwrap();
    let b = dgnam::npy::read(&out_b.join("prob.npy")).unwrap();
    assert_eq!(a.shape, vec![1, 10]);
    assert_eq!(a.data, b.data);
}

#[test]
fn non_finite_inputs_and_weights_are_refused() {
    let dir = scratch("non-finite");
    let net = converted_lenet(&dir);
    let x = dir.join("nan.npy");
    let mut data = vec![0.1f32; 784];
    data[100] = f32::NAN;
    dgnam::npy::write(&x, &[1, 1, 28, 28], &data).unwrap();
    let out_dir = dir.join("out");
    assert_clean_failure(&dgnam(&["forward", "--net", s(&net), "--input", s(&x), "--out-dir", s(&out_dir)]), "non-finite");
    assert!(!out_dir.exists());

    // A weights file whose checksums are fine but which holds an infinity.
    let file = dgnam::weights::WeightsFile::open(&net).unwrap();
    let owned: Vec<(String, u32, Vec<usize>, Vec<f32>)> = file
        .header
        .tensors
        .iter()
        .map(|e| {
            let mut d = file.tensor(&e.layer, e.index).unwrap().1.to_vec();
            if e.layer == "conv2" && e.index == 0 {
                d[7] = f32::INFINITY;
            }
            (e.layer.clone(), e.index, e.shape.clone(), d)
        })
        .collect();
    let tensors: Vec<dgnam::weights::TensorData> =
        owned.iter().map(|(l, i, sh, d)| dgnam::weights::TensorData { layer: l, index: *i, shape: sh, data: d }).collect();
    let bad = dir.join("inf.dgnw");
    dgnam::weights::write(&bad, &file.header.prototxt, &tensors).unwrap();
    let x = dir.join("ok.npy");
    dgnam::npy::write(&x, &[1, 1, 28, 28], &vec![0.1; 784]).unwrap();
    assert_clean_failure(&dgnam(&["forward", "--net", s(&bad), "--input", s(&x), "--out-dir", s(&out_dir)]), "layer 'conv2' blob 0");
    assert!(!out_dir.exists());
}

#[test]
fn flag_errors_are_one_line_too() {
    let r = dgnam(&["synthesize", "--objective", "nope"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: invalid value 'nope' for '--objective") && err.contains("activation, prob"), "{err}");
    let r = dgnam(&["synthesize", "--render", "sepia"]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("[possible values: paper, mean]"));
    // Help still prints in full, on stdout.
    let r = dgnam(&["synthesize", "--help"]);
    assert!(r.status.success());
    for flag in ["--encoder-layer", "--labels", "--decay", "--objective"] {
        assert!(String::from_utf8_lossy(&r.stdout).contains(flag), "{flag} missing from the help");
    }
}
