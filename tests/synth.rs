//! The DGN-AM loop: against a plain reimplementation, its invariants, batching, and the
//! synthesize command's outputs and resume.

mod common;

use common::{fixture, scratch};
use dgnam::device::Cpu;
use dgnam::caffe::netdef::parse_netdef;
use dgnam::graph::{unit_offset, CpuNet, UnitRef};
use dgnam::real::Real;
use dgnam::synth::dgn::{Dgn, Objective, Schedule};
use dgnam::synth::run::random_code;
use std::path::Path;
use std::process::Command;

fn tiny<T: Real>(batch: usize) -> (CpuNet<'static, T>, CpuNet<'static, T>) {
    let g = parse_netdef(&std::fs::read_to_string(fixture("tiny/generator.prototxt")).unwrap()).unwrap();
    let c = parse_netdef(&std::fs::read_to_string(fixture("tiny/classifier.prototxt")).unwrap()).unwrap();
    (CpuNet::<T>::random(&g, batch, 21, Cpu::new()).unwrap(), CpuNet::<T>::random(&c, batch, 22, Cpu::new()).unwrap())
}

const BOUNDS: [f32; 8] = [3.0, 2.0, 4.0, 1.5, 3.0, 2.5, 5.0, 2.0];

fn schedule() -> Schedule {
    Schedule { iters: 10, lr: 2.0, lr_end: 1e-10, decay: 0.9 }
}

/// The algorithm of SPEC section 2 written out plainly for one code, in f64.
fn reference(code0: &[f64], unit: usize, s: &Schedule) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (gen, clf) = tiny::<f64>(1);
    let fc8 = clf.plan.layer_output("fc8").unwrap();
    let (gen_in, gen_out, clf_in) = (gen.plan.inputs[0], gen.plan.last_output(), clf.plan.inputs[0]);
    let mut code = code0.to_vec();
    let (mut image, mut result_code, mut acts) = (vec![], vec![], vec![]);
    for i in 0..s.iters {
        let step = s.lr + (s.lr_end - s.lr) * i as f64 / s.iters as f64;
        let mut gs = gen.state().unwrap();
        gen.forward(&mut gs, &[&code]).unwrap();
        let x0 = gs.value(gen_out);
        let mut img = vec![0.0; 3 * 36];
        for c in 0..3 {
            for y in 0..6 {
                for x in 0..6 {
                    img[c * 36 + y * 6 + x] = x0[c * 64 + (y + 1) * 8 + x + 1];
                }
            }
        }
        let mut cs = clf.state().unwrap();
        clf.forward(&mut cs, &[&img]).unwrap();
        acts.push(cs.value(fc8)[unit]);
        let mut seed = vec![0.0; 5];
        seed[unit] = 1.0;
        clf.backward(&mut cs, &[(fc8, &seed)], false).unwrap();
        let dimg = cs.grad(clf_in).unwrap();
        let mut dx0 = vec![0.0; 3 * 64];
        for c in 0..3 {
            for y in 0..6 {
                for x in 0..6 {
                    dx0[c * 64 + (y + 1) * 8 + x + 1] = dimg[c * 36 + y * 6 + x];
                }
            }
        }
        gen.backward(&mut gs, &[(gen_out, &dx0)], false).unwrap();
        let g = gs.grad(gen_in).unwrap().clone();
        image = img;
        result_code = code.clone();
        let mean = g.iter().map(|v| v.abs()).sum::<f64>() / g.len() as f64;
        if mean == 0.0 || !mean.is_finite() {
            break;
        }
        for (j, c) in code.iter_mut().enumerate() {
            *c = (*c + step / mean * g[j]).clamp(0.0, BOUNDS[j] as f64) * s.decay;
        }
    }
    (image, result_code, acts)
}

fn run_lib<T: Real>(units: &[usize], s: &Schedule) -> dgnam::synth::dgn::BatchResult<T> {
    let (gen, clf) = tiny::<T>(units.len());
    let fc8 = clf.plan.layer_output("fc8").unwrap();
    let mut dgn = Dgn::new(&gen, &clf, fc8, Some(&BOUNDS)).unwrap();
    let init: Vec<T> = units.iter().flat_map(|&u| random_code(0, u, 8)).map(T::from_f32).collect();
    let objectives: Vec<Objective> = units.iter().map(|&u| Objective::Single(u)).collect();
    dgn.run(&init, &objectives, s, None, &mut |_| {}).unwrap()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn the_loop_matches_a_plain_reimplementation() {
    let s = schedule();
    for unit in [0usize, 3] {
        let init: Vec<f64> = random_code(0, unit, 8).iter().map(|&v| v as f64).collect();
        let (image, code, acts) = reference(&init, unit, &s);
        let lib = run_lib::<f64>(&[unit], &s);
        assert_eq!(lib.activations[0].len(), 10);
        assert!(max_diff(&lib.activations[0], &acts) < 1e-9, "activations {:?} vs {:?}", lib.activations[0], acts);
        assert!(max_diff(&lib.codes[0], &code) < 1e-9);
        assert!(max_diff(&lib.images[0], &image) < 1e-9);
        assert!(acts.last().unwrap() > &acts[0], "the objective did not grow: {acts:?}");
        // The f32 production path follows the f64 reference closely.
        let lib32 = run_lib::<f32>(&[unit], &s);
        let a32: Vec<f64> = lib32.activations[0].clone();
        assert!(max_diff(&a32, &acts) < 1e-3 * acts.iter().fold(1.0f64, |m, v| m.max(v.abs())));
    }
}

#[test]
fn codes_stay_clamped_and_decayed_and_the_schedule_is_linear() {
    let s = schedule();
    assert_eq!(s.step(0), 2.0);
    assert!((s.step(5) - (2.0 + (1e-10 - 2.0) * 0.5)).abs() < 1e-12);
    assert!(s.step(9) > 0.0 && s.step(9) < s.step(8));
    let r = run_lib::<f64>(&[1, 2, 4], &s);
    for code in &r.codes {
        // The result code is either the unclipped start (one iteration) or a clamped, decayed one.
        for (j, &c) in code.iter().enumerate() {
            assert!(c >= 0.0 && c <= BOUNDS[j] as f64 * s.decay + 1e-12, "code[{j}] = {c}");
        }
    }
    // The first code is not clipped: with one iteration the result code is the raw start.
    let one = Schedule { iters: 1, ..s };
    let r1 = run_lib::<f64>(&[1], &one);
    let start: Vec<f64> = random_code(0, 1, 8).iter().map(|&v| v as f64).collect();
    assert_eq!(r1.codes[0], start);
    assert!(start.iter().any(|&v| v < 0.0), "the test needs a start with negative entries");
}

#[test]
fn a_batch_gives_the_same_numbers_as_single_runs() {
    let s = schedule();
    let batch = run_lib::<f32>(&[0, 3, 4], &s);
    for (n, unit) in [0usize, 3, 4].into_iter().enumerate() {
        let single = run_lib::<f32>(&[unit], &s);
        assert_eq!(batch.activations[n], single.activations[0], "unit {unit}");
        assert_eq!(batch.codes[n], single.codes[0], "unit {unit}");
        assert_eq!(batch.images[n], single.images[0], "unit {unit}");
    }
}

#[test]
fn hidden_units_are_taken_before_the_in_place_relu() {
    let (gen, clf) = tiny::<f64>(1);
    let conv1 = clf.plan.layer_output("conv1").unwrap();
    let shape = clf.plan.blobs[conv1].shape.clone();
    assert_eq!(shape, vec![1, 4, 4, 4]);
    let mut dgn = Dgn::new(&gen, &clf, conv1, None).unwrap();
    // Find a unit whose pre-ReLU value at the center is negative for this start.
    let init: Vec<f64> = random_code(0, 7, 8).iter().map(|&v| v as f64).collect();
    let mut found = false;
    for unit in 0..4 {
        let off = unit_offset(&shape, UnitRef { unit, xy: None }, "conv1").unwrap();
        let r = dgn.run(&init, &[Objective::Single(off)], &Schedule { iters: 1, ..schedule() }, None, &mut |_| {}).unwrap();
        if r.activations[0][0] < 0.0 {
            found = true; // a post-ReLU objective could never be negative
        }
    }
    assert!(found, "no conv1 unit is negative at the center for this start");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tiny_weight_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let convert = env!("CARGO_BIN_EXE_dgnam-convert");
    let g = dir.join("gen.dgnw");
    let c = dir.join("clf.dgnw");
    for (proto, seed, out) in [("tiny/generator.prototxt", "21", &g), ("tiny/classifier.prototxt", "22", &c)] {
        let r = Command::new(convert).args(["--prototxt", s(&fixture(proto)), "--random-weights", seed, "-o", s(out)]).output().unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    (g, c)
}

fn synthesize(g: &Path, c: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["synthesize", "--generator", s(g), "--net", s(c), "--bounds", "none", "--lr", "1", "--out-dir", s(out)];
    if !extra.contains(&"--iters") {
        args.extend_from_slice(&["--iters", "6"]);
    }
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_dgnam")).args(&args).output().unwrap()
}

#[test]
fn synthesize_writes_every_output_and_resumes() {
    let dir = scratch("synth-cli");
    let (g, c) = tiny_weight_files(&dir);
    let out = dir.join("out");
    let r = synthesize(&g, &c, &out, &["--units", "1,3", "--batch", "2", "--save-every", "2"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for stem in ["fc8_0001", "fc8_0003"] {
        for ext in ["png", "image.npy", "code.npy", "gif"] {
            assert!(out.join(format!("{stem}.{ext}")).exists(), "{stem}.{ext} missing");
        }
        let image = dgnam::npy::read(&out.join(format!("{stem}.image.npy"))).unwrap();
        assert_eq!(image.shape, vec![1, 3, 6, 6]);
        assert_eq!(dgnam::npy::read(&out.join(format!("{stem}.code.npy"))).unwrap().shape, vec![1, 8]);
        let png = image::open(out.join(format!("{stem}.png"))).unwrap();
        assert_eq!((png.width(), png.height()), (6, 6));
    }
    assert!(out.join("montage.png").exists());
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let units = summary["units"].as_array().unwrap();
    assert_eq!(units.len(), 2);
    for (u, want) in units.iter().zip([1, 3]) {
        assert_eq!(u["unit"], want);
        assert_eq!(u["layer"], "fc8");
        assert_eq!(u["activations"].as_array().unwrap().len(), 6);
        assert!(u["probability"].as_f64().unwrap() > 0.0);
        assert!(u["seconds"].as_f64().unwrap() >= 0.0);
        assert!(u["xy"].is_null());
        for k in ["label", "png", "image", "code"] {
            assert!(u[k].is_string(), "{k}");
        }
    }

    // The saved code reproduces the saved image through the generator (G(code) = image).
    let gen_file = dgnam::weights::WeightsFile::open(&g).unwrap();
    let gen = CpuNet::<f32>::from_weights(&gen_file, 1, dgnam::device::Cpu::new()).unwrap();
    let code = dgnam::npy::read(&out.join("fc8_0003.code.npy")).unwrap();
    let mut st = gen.state().unwrap();
    gen.forward(&mut st, &[&code.data]).unwrap();
    let x0 = st.value(gen.plan.last_output());
    let image = dgnam::npy::read(&out.join("fc8_0003.image.npy")).unwrap();
    for c in 0..3 {
        for y in 0..6 {
            for x in 0..6 {
                assert_eq!(image.data[c * 36 + y * 6 + x], x0[c * 64 + (y + 1) * 8 + x + 1]);
            }
        }
    }

    // A rerun over more units only computes the new ones; the summary lists each once.
    let before = std::fs::metadata(out.join("fc8_0001.png")).unwrap().modified().unwrap();
    let r = synthesize(&g, &c, &out, &["--units", "all", "--batch", "2"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("3 units done, 2 already there"), "{}", String::from_utf8_lossy(&r.stdout));
    assert_eq!(std::fs::metadata(out.join("fc8_0001.png")).unwrap().modified().unwrap(), before);
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let mut seen: Vec<i64> = summary["units"].as_array().unwrap().iter().map(|u| u["unit"].as_i64().unwrap()).collect();
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);
}

#[test]
fn two_unit_and_probability_objectives_and_hidden_units_run() {
    let dir = scratch("synth-objectives");
    let (g, c) = tiny_weight_files(&dir);
    let out = dir.join("out");
    let r = synthesize(&g, &c, &out, &["--units", "0+2", "--gamma", "0.5"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("fc8_0000+0002.png").exists());
    let r = synthesize(&g, &c, &out, &["--units", "4", "--objective", "prob"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = synthesize(&g, &c, &out, &["--layer", "conv1", "--units", "2", "--xy", "1,2"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let conv = summary["units"].as_array().unwrap().iter().find(|u| u["layer"] == "conv1").unwrap();
    assert_eq!(conv["xy"], serde_json::json!([1, 2]));
    assert!(conv["probability"].is_null());
    // Bad requests are one clear line.
    let r = synthesize(&g, &c, &out, &["--units", "9"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("unit 9 is out of range"));
    let r = synthesize(&g, &c, &out, &["--layer", "conv1", "--units", "1", "--objective", "prob"]);
    assert_eq!(r.status.code(), Some(1));
}

#[test]
fn init_code_and_missing_default_weights() {
    let dir = scratch("synth-init");
    let (g, c) = tiny_weight_files(&dir);
    let codes = dir.join("codes.npy");
    dgnam::npy::write(&codes, &[1, 8], &[0.5; 8]).unwrap();
    let out = dir.join("out");
    let r = synthesize(&g, &c, &out, &["--units", "0,1", "--init-code", s(&codes), "--iters", "1"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // One iteration: the result code is the given start, for every unit.
    for u in ["0000", "0001"] {
        assert_eq!(dgnam::npy::read(&out.join(format!("fc8_{u}.code.npy"))).unwrap().data, vec![0.5; 8]);
    }
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam"))
        .args(["synthesize", "--net", s(&dir.join("absent.dgnw")), "--generator", s(&g), "--out-dir", s(&out)])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("fetch-weights.sh"));
}

/// Post-ReLU fc6 of an image file through the tiny classifier, computed here directly.
fn fc6_of(c: &Path, image: &Path) -> Vec<f32> {
    let file = dgnam::weights::WeightsFile::open(c).unwrap();
    let def = file.netdef().unwrap();
    let net = CpuNet::<f32>::from_weights(&file, 1, dgnam::device::Cpu::new()).unwrap();
    let x = dgnam::app::read_input(image, &def, &dgnam::preprocess::Preprocess::default_for(3)).unwrap();
    let mut st = net.state().unwrap();
    net.forward(&mut st, &[&x.data]).unwrap();
    let v = st.value(net.plan.blob_by_name("fc6").unwrap()).clone();
    assert!(v.iter().all(|&a| a >= 0.0), "fc6 must be post-ReLU");
    v
}

fn write_pictures(dir: &Path, n: u32) -> Vec<std::path::PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let p = dir.join(format!("img{i}.png"));
            image::RgbImage::from_fn(9, 7, |x, y| image::Rgb([(x * 25 + i * 40) as u8, (y * 30) as u8, ((x * y + i * 7) * 5) as u8]))
                .save(&p)
                .unwrap();
            p
        })
        .collect()
}

#[test]
fn init_image_starts_from_the_images_fc6_code() {
    let dir = scratch("synth-init-image");
    let (g, c) = tiny_weight_files(&dir);
    let pics = write_pictures(&dir.join("pics"), 1);
    let out = dir.join("out");
    let r = synthesize(&g, &c, &out, &["--units", "2", "--init-image", s(&pics[0]), "--iters", "1"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let code = dgnam::npy::read(&out.join("fc8_0002.code.npy")).unwrap();
    assert!(code.data.iter().any(|&v| v > 0.0), "the test image gives an all-zero code");
    assert_eq!(code.data, fc6_of(&c, &pics[0]));
}

#[test]
fn act_range_is_mean_plus_k_sigma_of_post_relu_fc6() {
    let dir = scratch("act-range");
    let (_, c) = tiny_weight_files(&dir);
    let pics = write_pictures(&dir.join("pics"), 4);
    let out = dir.join("bounds.txt");
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam"))
        .args(["act-range", "--net", s(&c), "--layer", "fc6", "--images", s(&dir.join("pics")), "--sigma", "2", "-o", s(&out)])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 1);
    let got: Vec<f64> = text.split_whitespace().map(|t| t.parse().unwrap()).collect();
    let codes: Vec<Vec<f32>> = pics.iter().map(|p| fc6_of(&c, p)).collect();
    assert_eq!(got.len(), 8);
    for j in 0..8 {
        let vals: Vec<f64> = codes.iter().map(|v| v[j] as f64).collect();
        let mean = vals.iter().sum::<f64>() / 4.0;
        let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
        assert!((got[j] - (mean + 2.0 * sd).max(0.0)).abs() < 1e-3, "neuron {j}: {} vs {}", got[j], mean + 2.0 * sd);
    }
    // The bounds file is what synthesize reads back.
    assert_eq!(dgnam::synth::run::read_bounds(&out).unwrap().len(), 8);
}

#[test]
fn pixel_space_synthesis_without_a_generator_on_lenet() {
    let dir = scratch("synth-pixels");
    let net = dir.join("lenet.dgnw");
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam-convert"))
        .args(["--prototxt", s(&fixture("caffe/lenet_mnist/lenet.prototxt")), "--caffemodel", s(&fixture("caffe/lenet_mnist/lenet_iter_10000.caffemodel")), "-o", s(&net)])
        .output()
        .unwrap();
    assert!(r.status.success());
    let out = dir.join("out");
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam"))
        .args(["synthesize", "--generator", "none", "--net", s(&net), "--layer", "ip2", "--units", "3,8", "--iters", "60", "--out-dir", s(&out)])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for u in summary["units"].as_array().unwrap() {
        assert!(u["probability"].as_f64().unwrap() > 0.9, "{u}");
        let acts = u["activations"].as_array().unwrap();
        assert_eq!(acts.len(), 60);
        assert!(acts[59].as_f64().unwrap() > acts[0].as_f64().unwrap());
    }
    let image = dgnam::npy::read(&out.join("ip2_0003.image.npy")).unwrap();
    assert_eq!(image.shape, vec![1, 1, 28, 28]);
    assert!(image.data.iter().all(|&v| (0.0..=1.0).contains(&v)));
}

#[test]
fn a_non_finite_unit_is_skipped_and_reported_while_the_rest_go_on() {
    let dir = scratch("synth-nan");
    let (g, c) = tiny_weight_files(&dir);
    let codes = dir.join("codes.npy");
    let mut rows = vec![0.5f32; 16];
    rows[3] = f32::NAN; // unit 0 starts from a poisoned code, unit 1 from a clean one
    dgnam::npy::write(&codes, &[2, 8], &rows).unwrap();
    let out = dir.join("out");
    let r = synthesize(&g, &c, &out, &["--units", "0,1", "--init-code", s(&codes)]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("fc8_0000 skipped: the objective is NaN"), "{err}");
    assert!(err.lines().last().unwrap().contains("1 unit(s) went non-finite and were skipped: fc8_0000"), "{err}");
    assert!(out.join("fc8_0001.png").exists());
    assert!(!out.join("fc8_0000.png").exists());
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["units"].as_array().unwrap().len(), 1);
}

#[test]
fn a_run_killed_at_any_moment_resumes_and_lists_every_unit_once() {
    let dir = scratch("synth-kill");
    let (g, c) = tiny_weight_files(&dir);
    let out = dir.join("out");
    let args = |out: &Path| -> Vec<String> {
        ["synthesize", "--generator", s(&g), "--net", s(&c), "--bounds", "none", "--units", "all", "--batch", "1", "--iters", "20000", "--save-every", "5000", "--out-dir", s(out)]
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_dgnam")).args(args(&out)).stderr(std::process::Stdio::null()).spawn().unwrap();
    // Kill it (SIGKILL) once at least one unit is written but before the run ends.
    let started = std::time::Instant::now();
    while !out.join("summary.json").exists() && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let done_before = first["units"].as_array().unwrap().len();
    assert!((1..5).contains(&done_before), "the kill should land mid-run, {done_before} units were done");
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam")).args(args(&out)).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let mut units: Vec<i64> = summary["units"].as_array().unwrap().iter().map(|u| u["unit"].as_i64().unwrap()).collect();
    units.sort();
    assert_eq!(units, vec![0, 1, 2, 3, 4]);
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "a temporary file was left behind: {name}");
    }
    assert!(String::from_utf8_lossy(&r.stdout).contains(&format!("{} already there", done_before)));
}
