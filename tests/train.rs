//! `dgnam train-generator` end to end on the shipped LeNet and digits: the losses fall, a
//! resumed run is the run that never stopped, the result is a generator `synthesize`
//! loads, and bad input fails cleanly with nothing written.

mod common;

use common::{converted_lenet, fixture, onnx_convert, scratch, shipped};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn dgnam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dgnam")).args(args).env("RAYON_NUM_THREADS", "1").output().unwrap()
}

/// `train-generator` of the shipped prior's prototxt on LeNet's ip1 with the shipped
/// digits, plus `extra` flags.
fn train(net: &Path, out: &Path, extra: &[&str]) -> Output {
    let generator = shipped("demo/generator-ip1.prototxt");
    let digits = shipped("demo/digits.npy");
    let mut args = vec![
        "train-generator",
        "--device",
        "cpu",
        "--net",
        s(net),
        "--layer",
        "ip1",
        "--generator-def",
        s(&generator),
        "--images-npy",
        s(&digits),
        "-o",
        s(out),
    ];
    args.extend_from_slice(extra);
    dgnam(&args)
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

fn log(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("train-log.json")).unwrap()).unwrap()
}

fn mean_of(steps: &[Value], key: &str) -> f64 {
    steps.iter().map(|r| r[key].as_f64().unwrap()).sum::<f64>() / steps.len() as f64
}

#[test]
fn a_short_run_lowers_both_losses_and_logs_every_step() {
    let dir = scratch("train-short");
    let net = converted_lenet(&dir);
    let out = dir.join("run").join("g.dgnw");
    let r = train(
        &net,
        &out,
        &["--comparator-layer", "conv2", "--loss-weights", "image=1,feature=0.05", "--steps", "60", "--batch", "16", "--lr", "1e-3"],
    );
    assert_ok(&r);
    let log = log(&dir.join("run"));
    let steps = log["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 60);
    for (i, rec) in steps.iter().enumerate() {
        assert_eq!(rec["step"].as_u64(), Some(i as u64 + 1));
        let (img, feat, loss) = (rec["loss_image"].as_f64().unwrap(), rec["loss_feature"].as_f64().unwrap(), rec["loss"].as_f64().unwrap());
        assert!((loss - (img + 0.05 * feat)).abs() <= 1e-9 * loss.max(1.0), "step {i}: {loss} vs {img} + 0.05 * {feat}");
        assert!(rec["loss_adversarial"].is_null());
        assert!(rec["seconds"].as_f64().unwrap() >= 0.0);
    }
    let (first, last) = (&steps[..10], &steps[50..]);
    for key in ["loss_image", "loss_feature", "loss"] {
        let (a, b) = (mean_of(first, key), mean_of(last, key));
        assert!(b < 0.25 * a, "{key}: the first 10 steps average {a}, the last 10 {b}");
    }
    let options = &log["options"];
    assert_eq!(options["layer"], "ip1");
    assert_eq!(options["comparator_layer"], "conv2");
    assert_eq!(options["image_count"], 1797);
    assert_eq!(options["steps"], 60);
    assert_eq!(options["loss_weights"]["feature"], 0.05);
    assert!(dir.join("run/g.reconstructions.png").is_file());
    let grid = image::open(dir.join("run/g.reconstructions.png")).unwrap();
    assert!(grid.width() > 8 * 112 && grid.height() > 2 * 112, "{}x{}", grid.width(), grid.height());
}

#[test]
fn a_resumed_run_is_bit_identical_to_one_that_never_stopped() {
    let dir = scratch("train-resume");
    let net = converted_lenet(&dir);
    let common = ["--comparator-layer", "conv2", "--batch", "8", "--seed", "5", "--checkpoint-every", "3"];
    let whole = dir.join("whole/g.dgnw");
    assert_ok(&train(&net, &whole, &[&common[..], &["--steps", "7"]].concat()));
    let split = dir.join("split/g.dgnw");
    assert_ok(&train(&net, &split, &[&common[..], &["--steps", "4"]].concat()));
    let first = std::fs::read(&split).unwrap();
    assert_ok(&train(&net, &split, &[&common[..], &["--steps", "7", "--resume"]].concat()));
    let (a, b) = (std::fs::read(&whole).unwrap(), std::fs::read(&split).unwrap());
    assert_ne!(first, b, "the resumed run did not train");
    assert!(a == b, "the resumed generator differs from the uninterrupted one");
    let (la, lb) = (log(&dir.join("whole")), log(&dir.join("split")));
    let losses = |l: &Value| l["steps"].as_array().unwrap().iter().map(|r| r["loss"].as_f64().unwrap()).collect::<Vec<_>>();
    assert_eq!(losses(&la), losses(&lb));
    assert_eq!(losses(&la).len(), 7);
    // Checkpoints at steps 3 and 6 left grids; only the newest checkpoint's weights remain.
    for d in ["whole", "split"] {
        assert!(dir.join(d).join("g.reconstructions-000003.png").is_file());
        assert!(dir.join(d).join("g.reconstructions-000006.png").is_file());
        assert!(dir.join(d).join("g.checkpoint-000007.dgnw").is_file());
        assert!(!dir.join(d).join("g.checkpoint-000006.dgnw").exists());
    }
    // A different seed is a different run: resuming it is refused.
    let r = train(&net, &split, &["--comparator-layer", "conv2", "--batch", "8", "--seed", "6", "--steps", "9", "--resume"]);
    assert_clean_failure(&r, "seed");
    // So is a resume with nothing left to do.
    assert_clean_failure(&train(&net, &split, &[&common[..], &["--steps", "7", "--resume"]].concat()), "leaves nothing to do");
}

#[test]
fn the_trained_generator_loads_in_synthesize() {
    let dir = scratch("train-synth");
    let net = converted_lenet(&dir);
    let out = dir.join("g.dgnw");
    assert_ok(&train(&net, &out, &["--steps", "3", "--batch", "4"]));
    let synth = dir.join("synth");
    let r = dgnam(&[
        "synthesize",
        "--device",
        "cpu",
        "--net",
        s(&net),
        "--generator",
        s(&out),
        "--layer",
        "ip2",
        "--units",
        "3",
        "--bounds",
        "none",
        "--iters",
        "4",
        "--out-dir",
        s(&synth),
    ]);
    assert_ok(&r);
    let image = dgnam::npy::read(&synth.join("ip2_0003.image.npy")).unwrap();
    assert_eq!(image.shape, vec![1, 1, 28, 28]);
    let code = dgnam::npy::read(&synth.join("ip2_0003.code.npy")).unwrap();
    assert_eq!(code.shape, vec![1, 500]);
}

#[test]
fn a_folder_of_pngs_trains_too() {
    let dir = scratch("train-pngs");
    let net = converted_lenet(&dir);
    let pics = dir.join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    let digits = dgnam::npy::read(&shipped("demo/digits.npy")).unwrap();
    for i in 0..5 {
        let img = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(digits.data[i * 784 + (y * 28 + x) as usize] * 255.0) as u8]));
        img.save(pics.join(format!("d{i}.png"))).unwrap();
    }
    let out = dir.join("g.dgnw");
    let generator = shipped("demo/generator-ip1.prototxt");
    let r = dgnam(&[
        "train-generator",
        "--device",
        "cpu",
        "--net",
        s(&net),
        "--layer",
        "ip1",
        "--generator-def",
        s(&generator),
        "--images",
        s(&pics),
        "--scale",
        "0.00390625",
        "--steps",
        "2",
        "--batch",
        "2",
        "-o",
        s(&out),
    ]);
    assert_ok(&r);
    assert_eq!(log(&dir)["options"]["image_count"], 5);
    assert!(out.is_file());
}

/// A failure as users should see it: exit 1, one stderr line starting "error:" that
/// mentions `needle`, never a panic.
#[track_caller]
fn assert_clean_failure(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected exit 1, stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("device:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: ") && !err.contains("panicked"), "stderr: {err}");
    assert!(lines[0].contains(needle), "'{needle}' missing from: {}", lines[0]);
}

/// A small discriminator for LeNet's 1x28x28 images, ending in `logits` values.
fn discriminator(logits: usize) -> String {
    format!(
        "input: 'image' input_shape {{ dim: 1 dim: 1 dim: 28 dim: 28 }}
        layer {{ name: 'conv1' type: 'Convolution' bottom: 'image' top: 'conv1' convolution_param {{ num_output: 8 kernel_size: 4 stride: 2 pad: 1 }} }}
        layer {{ name: 'relu1' type: 'ReLU' bottom: 'conv1' top: 'conv1' relu_param {{ negative_slope: 0.2 }} }}
        layer {{ name: 'conv2' type: 'Convolution' bottom: 'conv1' top: 'conv2' convolution_param {{ num_output: 16 kernel_size: 4 stride: 2 pad: 1 }} }}
        layer {{ name: 'relu2' type: 'ReLU' bottom: 'conv2' top: 'conv2' relu_param {{ negative_slope: 0.2 }} }}
        layer {{ name: 'logit' type: 'InnerProduct' bottom: 'conv2' top: 'logit' inner_product_param {{ num_output: {logits} }} }}"
    )
}

#[test]
fn an_adversarial_run_trains_its_discriminator_and_resumes_exactly() {
    let dir = scratch("train-adversarial");
    let net = converted_lenet(&dir);
    let d = write(&dir, "d.prototxt", &discriminator(1));
    let common = [
        "--comparator-layer",
        "conv2",
        "--discriminator-def",
        s(&d),
        "--loss-weights",
        "image=1,feature=0.05,adversarial=0.5",
        "--batch",
        "16",
        "--lr",
        "1e-3",
        "--checkpoint-every",
        "20",
    ];
    let whole = dir.join("whole/g.dgnw");
    assert_ok(&train(&net, &whole, &[&common[..], &["--steps", "40"]].concat()));
    let steps = log(&dir.join("whole"))["steps"].as_array().unwrap().clone();
    assert_eq!(steps.len(), 40);
    for r in &steps {
        let (img, feat, adv) =
            (r["loss_image"].as_f64().unwrap(), r["loss_feature"].as_f64().unwrap(), r["loss_adversarial"].as_f64().unwrap());
        let total = r["loss"].as_f64().unwrap();
        assert!((total - (img + 0.05 * feat + 0.5 * adv)).abs() <= 1e-9 * total, "{r}");
        assert!(adv > 0.0 && r["loss_discriminator"].as_f64().unwrap() > 0.0, "{r}");
    }
    // D learns to tell G's images from real ones faster than G learns to fool it.
    let (d0, d1) = (mean_of(&steps[..5], "loss_discriminator"), mean_of(&steps[35..], "loss_discriminator"));
    assert!(d1 < d0, "the discriminator's loss went from {d0} to {d1}");
    assert!(mean_of(&steps[35..], "loss_image") < 0.25 * mean_of(&steps[..5], "loss_image"));

    let split = dir.join("split/g.dgnw");
    assert_ok(&train(&net, &split, &[&common[..], &["--steps", "20"]].concat()));
    assert_ok(&train(&net, &split, &[&common[..], &["--steps", "40", "--resume"]].concat()));
    assert!(std::fs::read(&whole).unwrap() == std::fs::read(&split).unwrap(), "the resumed adversarial run differs");
    assert_eq!(log(&dir.join("split"))["steps"].as_array().unwrap()[39]["loss_discriminator"], steps[39]["loss_discriminator"]);
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_input_is_one_error_line_and_writes_nothing() {
    let dir = scratch("train-errors");
    let net = converted_lenet(&dir);
    let ip = |name: &str, bottom: &str, n: usize| {
        format!(
            "layer {{ name: '{name}' type: 'InnerProduct' bottom: '{bottom}' top: '{name}' inner_product_param {{ num_output: {n} }} }}"
        )
    };
    let reshape = |c: usize, h: usize| {
        format!(
            "layer {{ name: 'r' type: 'Reshape' bottom: 'fc' top: 'r' reshape_param {{ shape {{ dim: 1 dim: {c} dim: {h} dim: {h} }} }} }}"
        )
    };
    let small = write(
        &dir,
        "small.prototxt",
        &format!("input: 'code' input_shape {{ dim: 1 dim: 500 }} {} {}", ip("fc", "code", 400), reshape(1, 20)),
    );
    let colour = write(
        &dir,
        "colour.prototxt",
        &format!("input: 'code' input_shape {{ dim: 1 dim: 500 }} {} {}", ip("fc", "code", 3 * 784), reshape(3, 28)),
    );
    let short_code = write(
        &dir,
        "code10.prototxt",
        &format!("input: 'code' input_shape {{ dim: 1 dim: 10 }} {} {}", ip("fc", "code", 784), reshape(1, 28)),
    );
    let two_logits = write(&dir, "two.prototxt", &discriminator(2));
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let wrong_npy = dir.join("wrong.npy");
    dgnam::npy::write(&wrong_npy, &[2, 1, 20, 20], &[0.5; 800]).unwrap();
    let digits = shipped("demo/digits.npy");
    let generator = shipped("demo/generator-ip1.prototxt");
    let out_dir = dir.join("out");
    let out = out_dir.join("g.dgnw");
    let base = |g: &Path, data: [&str; 2], extra: &[&str]| -> Output {
        let mut args =
            vec!["train-generator", "--device", "cpu", "--net", s(&net), "--generator-def", s(g), data[0], data[1], "-o", s(&out)];
        if !extra.contains(&"--layer") {
            args.extend_from_slice(&["--layer", "ip1"]);
        }
        args.extend_from_slice(extra);
        dgnam(&args)
    };
    let npy = ["--images-npy", s(&digits)];
    let cases: Vec<(Output, &str)> = vec![
        (base(&small, npy, &[]), "its output 1x20x20 cannot be cropped to the classifier's input 1x28x28"),
        (base(&colour, npy, &[]), "its output 3x28x28 cannot be cropped"),
        (base(&short_code, npy, &[]), "its code has 10 values, layer 'ip1' of the classifier gives 500"),
        (base(&generator, ["--images", s(&empty)], &[]), "holds no .png or .jpg images"),
        (base(&generator, ["--images", s(&dir.join("nowhere"))], &[]), "cannot read the folder"),
        (base(&generator, ["--images-npy", s(&wrong_npy)], &[]), "shape 2x1x20x20 is not N x 1x28x28"),
        (base(&generator, npy, &["--layer", "ip7"]), "has no layer 'ip7'"),
        (base(&generator, npy, &["--comparator-layer", "conv9"]), "--comparator-layer conv9"),
        (base(&generator, npy, &["--discriminator-def", s(&generator)]), "its input 500 is not the classifier's input 1x28x28"),
        (base(&generator, npy, &["--discriminator-def", s(&two_logits)]), "gives 2 values per image, a discriminator gives one logit"),
        (base(&generator, npy, &["--loss-weights", "adversarial=1"]), "needs --discriminator-def"),
        (base(&generator, npy, &["--loss-weights", "feature=1"]), "needs --comparator-layer"),
        (base(&generator, npy, &["--loss-weights", "image=0"]), "nothing to learn"),
        (base(&generator, npy, &["--steps", "0"]), "--steps must be at least 1"),
        (base(&generator, npy, &["--lr", "-1"]), "--lr -1: must be a positive number"),
        (base(&generator, npy, &["--resume"]), "no checkpoint to resume from"),
        (base(&dir.join("missing.prototxt"), npy, &[]), "missing.prototxt"),
    ];
    for (r, needle) in &cases {
        assert_clean_failure(r, needle);
        assert!(!out_dir.exists(), "a failed run ('{needle}') wrote {}", out_dir.display());
    }
}

#[test]
fn a_net_not_in_caffe_space_is_refused_and_nothing_is_written() {
    // A generator's images are Caffe-space (synthesize maps them into the net's space), so
    // training one against a torchvision-space net would give wrong images without an error.
    let dir = scratch("train-torchvision-space");
    let generator = write(
        &dir,
        "g.prototxt",
        "input: 'code' input_shape { dim: 1 dim: 6 }
        layer { name: 'fc' type: 'InnerProduct' bottom: 'code' top: 'fc' inner_product_param { num_output: 768 } }
        layer { name: 'r' type: 'Reshape' bottom: 'fc' top: 'r' reshape_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }",
    );
    let images = dir.join("x.npy");
    dgnam::npy::write(&images, &[4, 3, 16, 16], &[0.5; 4 * 768]).unwrap();
    let run = |space: &str| {
        let net = dir.join(format!("{space}.dgnw"));
        let c = onnx_convert(&fixture("onnx/tiny_resnet.onnx"), &net, &["--input-space", space]);
        assert_ok(&c);
        let out = dir.join(space).join("g.dgnw");
        let args = ["--generator-def", s(&generator), "--images-npy", s(&images), "--steps", "2", "--batch", "2", "-o", s(&out)];
        let r = dgnam(&[&["train-generator", "--device", "cpu", "--net", s(&net), "--layer", "logits"], &args[..]].concat());
        (r, out)
    };
    let (r, out) = run("torchvision");
    assert_clean_failure(&r, "the net takes torchvision input, and train-generator");
    assert_clean_failure(&r, "is done for Caffe-space nets only");
    assert!(!out.parent().unwrap().exists(), "a refused run wrote {}", out.parent().unwrap().display());
    // The same ONNX net recorded in Caffe space trains.
    let (r, out) = run("caffe");
    assert_ok(&r);
    assert!(out.is_file());
}

#[test]
fn training_does_not_depend_on_the_thread_count() {
    let dir = scratch("train-threads");
    let net = converted_lenet(&dir);
    let mut files = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.join(format!("t{threads}/g.dgnw"));
        let generator = shipped("demo/generator-ip1.prototxt");
        let digits = shipped("demo/digits.npy");
        let r = Command::new(env!("CARGO_BIN_EXE_dgnam"))
            .args(["train-generator", "--device", "cpu", "--net", s(&net), "--layer", "ip1", "--generator-def", s(&generator)])
            .args(["--images-npy", s(&digits), "--comparator-layer", "conv2", "--steps", "4", "--batch", "16", "-o", s(&out)])
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert_ok(&r);
        files.push(std::fs::read(&out).unwrap());
    }
    assert!(files[0] == files[1], "1 and 2 threads trained different generators");
}

/// LeNet's post-ReLU ip1 codes and its predictions for a batch of digits, and the shipped
/// prior's reconstructions from those codes.
#[test]
fn the_shipped_prior_reconstructs_real_digits_that_lenet_still_recognizes() {
    use dgnam::device::Cpu;
    use dgnam::graph::CpuNet;
    let file = shipped("demo/generator-ip1.dgnw");
    assert!(std::fs::metadata(&file).unwrap().len() < 5 << 20, "the shipped prior is over 5 MB");
    let weights = dgnam::weights::WeightsFile::open(&file).unwrap();
    let m = dgnam::convert::load(&shipped("demo/lenet.prototxt"), &shipped("demo/lenet_iter_10000.caffemodel")).unwrap();
    let digits = dgnam::npy::read(&shipped("demo/digits.npy")).unwrap();
    let labels = dgnam::npy::read(&shipped("demo/digits-labels.npy")).unwrap();
    assert_eq!((digits.shape.clone(), labels.shape.clone()), (vec![1797, 1, 28, 28], vec![1797]));
    let n = 200;
    let lenet = m.net::<f32>(n).unwrap();
    let generator = CpuNet::<f32>::from_weights(&weights, n, Cpu::new()).unwrap();
    // Every 9th digit: all ten classes, spread over the writers.
    let picks: Vec<usize> = (0..n).map(|i| i * 9).collect();
    let x: Vec<f32> = picks.iter().flat_map(|&i| digits.data[i * 784..(i + 1) * 784].to_vec()).collect();
    let run = |images: &[f32]| {
        let mut st = lenet.state().unwrap();
        lenet.forward(&mut st, &[images]).unwrap();
        let code = st.value(lenet.plan.blob_by_name("ip1").unwrap()).clone(); // after relu1
        let probs = st.value(lenet.plan.layer_output("prob").unwrap()).clone();
        let predicted: Vec<usize> = probs.chunks(10).map(common::argmax).collect();
        (code, predicted)
    };
    let (codes, before) = run(&x);
    assert!(codes.iter().all(|&v| v >= 0.0));
    let mut st = generator.state().unwrap();
    generator.forward(&mut st, &[&codes]).unwrap();
    let recon = st.value(generator.plan.last_output()).clone();
    assert_eq!(recon.len(), x.len());
    let sq: f64 = recon.iter().zip(&x).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / n as f64;
    let energy: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
    assert!(sq < 0.05 * energy, "reconstruction error {sq} per digit against {energy} of signal");
    let (_, after) = run(&recon);
    let label = |i: usize| labels.data[picks[i]] as usize;
    let right_before = (0..n).filter(|&i| before[i] == label(i)).count();
    let right_after = (0..n).filter(|&i| after[i] == label(i)).count();
    assert!(
        right_after as f64 >= 0.95 * right_before as f64,
        "LeNet: {right_before} right on the digits, {right_after} on their reconstructions"
    );

    // The shipped bounds are act-range's over the same digits.
    let dir = scratch("shipped-prior");
    let net = converted_lenet(&dir);
    for k in ["1", "3"] {
        let out = dir.join(format!("{k}x.txt"));
        let r = dgnam(&[
            "act-range",
            "--device",
            "cpu",
            "--net",
            s(&net),
            "--layer",
            "ip1",
            "--images-npy",
            s(&shipped("demo/digits.npy")),
            "--sigma",
            k,
            "-o",
            s(&out),
        ]);
        assert_ok(&r);
        let shipped_text = std::fs::read_to_string(shipped(&format!("demo/act_range/{k}x/ip1.txt"))).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), shipped_text, "{k}x bounds differ from act-range's");
        assert_eq!(shipped_text.split_whitespace().count(), 500);
    }
}

#[test]
fn a_run_killed_in_mid_flight_resumes_to_the_same_generator() {
    let dir = scratch("train-kill");
    let net = converted_lenet(&dir);
    let generator = shipped("demo/generator-ip1.prototxt");
    let digits = shipped("demo/digits.npy");
    let args = |out: &Path| -> Vec<String> {
        [
            "train-generator",
            "--device",
            "cpu",
            "--net",
            s(&net),
            "--layer",
            "ip1",
            "--generator-def",
            s(&generator),
            "--images-npy",
            s(&digits),
            "--batch",
            "8",
            "--steps",
            "200",
            "--checkpoint-every",
            "7",
            "-o",
            s(out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let whole = dir.join("whole/g.dgnw");
    assert_ok(&dgnam(&args(&whole).iter().map(String::as_str).collect::<Vec<_>>()));

    let killed = dir.join("killed/g.dgnw");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dgnam")).args(args(&killed)).env("RAYON_NUM_THREADS", "1").spawn().unwrap();
    // Kill it once a checkpoint exists (with luck between two writes, or during one).
    let sidecar = dir.join("killed/g.checkpoint.json");
    let t0 = std::time::Instant::now();
    while !sidecar.exists() && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it could be killed");
    assert!(!killed.exists(), "a killed run wrote its final generator");
    let mut resume = args(&killed);
    resume.push("--resume".into());
    assert_ok(&dgnam(&resume.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(std::fs::read(&whole).unwrap() == std::fs::read(&killed).unwrap(), "the killed and resumed run differs");
    let leftovers: Vec<String> = std::fs::read_dir(dir.join("killed"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.contains(".tmp") || (n.starts_with("g.checkpoint-") && n != "g.checkpoint-000200.dgnw"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
