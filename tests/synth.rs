//! The DGN-AM loop: against a plain reimplementation, its invariants, batching, and the
//! synthesize command's outputs and resume.

mod common;

use common::{converted_lenet, fixture, scratch};
use dgnam::caffe::netdef::parse_netdef;
use dgnam::device::Cpu;
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
    let net = converted_lenet(&dir);
    let out = dir.join("out");
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam"))
        .args([
            "synthesize",
            "--generator",
            "none",
            "--net",
            s(&net),
            "--layer",
            "ip2",
            "--units",
            "3,8",
            "--iters",
            "60",
            "--out-dir",
            s(&out),
        ])
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
        [
            "synthesize",
            "--generator",
            s(&g),
            "--net",
            s(&c),
            "--bounds",
            "none",
            "--units",
            "all",
            "--batch",
            "1",
            "--iters",
            "20000",
            "--save-every",
            "5000",
            "--out-dir",
            s(out),
        ]
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

fn read_bytes(dir: &Path, stem: &str, ext: &str) -> Vec<u8> {
    std::fs::read(dir.join(format!("{stem}.{ext}"))).unwrap_or_else(|e| panic!("{stem}.{ext}: {e}"))
}

#[track_caller]
fn assert_same_unit(a: &Path, b: &Path, stem: &str) {
    for ext in ["image.npy", "code.npy", "png"] {
        assert!(read_bytes(a, stem, ext) == read_bytes(b, stem, ext), "{stem}.{ext} differs between {} and {}", a.display(), b.display());
    }
}

#[test]
fn a_units_start_depends_on_the_unit_not_its_position_or_batch() {
    let dir = scratch("synth-keyed");
    let (g, c) = tiny_weight_files(&dir);
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let r = synthesize(&g, &c, &out, extra);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        out
    };
    let alone = run("alone", &["--units", "2"]);
    for (name, batch) in [("all-1", "1"), ("all-3", "3"), ("all-5", "5")] {
        assert_same_unit(&alone, &run(name, &["--units", "all", "--batch", batch]), "fc8_0002");
    }
    let three = run("three", &["--units", "3"]);
    assert_same_unit(&three, &run("one-three", &["--units", "1,3"]), "fc8_0003");
    assert_same_unit(&three, &run("four-three", &["--units", "4,0,3", "--batch", "2"]), "fc8_0003");
    // Different units start differently.
    assert_ne!(read_bytes(&alone, "fc8_0002", "code.npy"), read_bytes(&three, "fc8_0003", "code.npy"));
    // A conv unit at the default position is the unit at the center.
    let center = run("center", &["--layer", "conv1", "--units", "1"]);
    let given = run("given", &["--layer", "conv1", "--units", "0,1", "--xy", "2,2"]);
    assert_same_unit(&center, &given, "conv1_0001");
}

#[test]
fn pixel_space_units_are_the_same_alone_and_in_a_batch() {
    let dir = scratch("synth-pixels-keyed");
    let net = converted_lenet(&dir);
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args = vec!["synthesize", "--generator", "none", "--net", s(&net), "--layer", "ip2", "--iters", "12", "--out-dir", s(&out)];
        args.extend_from_slice(extra);
        let r = Command::new(env!("CARGO_BIN_EXE_dgnam")).args(&args).output().unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        out
    };
    let alone = run("alone", &["--units", "3"]);
    assert_same_unit(&alone, &run("pair", &["--units", "1,3", "--batch", "1"]), "ip2_0003");
    assert_same_unit(&alone, &run("batch", &["--units", "8,3,5", "--batch", "3"]), "ip2_0003");
    let all = run("all", &["--units", "all", "--batch", "4"]);
    assert_same_unit(&alone, &all, "ip2_0003");
    assert_ne!(read_bytes(&all, "ip2_0003", "image.npy"), read_bytes(&all, "ip2_0004", "image.npy"));
}

#[test]
fn decay_outside_the_half_open_unit_interval_is_refused() {
    let dir = scratch("synth-decay");
    let (g, c) = tiny_weight_files(&dir);
    for bad in ["0", "1.5", "-0.5", "NaN", "inf"] {
        let out = dir.join(format!("out-{bad}"));
        let r = synthesize(&g, &c, &out, &["--units", "1", "--decay", bad]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "--decay {bad}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("device:")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].starts_with("error: --decay"), "{err}");
        assert!(!out.exists(), "--decay {bad}: output written");
    }
    // 1 means no decay, and is accepted.
    let r = synthesize(&g, &c, &dir.join("out-1"), &["--units", "1", "--decay", "1"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

/// The tiny classifier with `units` outputs at fc8, as a weights file.
fn tiny_classifier_with(dir: &Path, units: usize) -> std::path::PathBuf {
    let text = std::fs::read_to_string(fixture("tiny/classifier.prototxt")).unwrap();
    let proto = dir.join(format!("clf{units}.prototxt"));
    let changed = text.replace(
        "top: \"fc8\" inner_product_param { num_output: 5 }",
        &format!("top: \"fc8\" inner_product_param {{ num_output: {units} }}"),
    );
    assert_ne!(changed, text);
    std::fs::write(&proto, changed).unwrap();
    let out = dir.join(format!("clf{units}.dgnw"));
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam-convert"))
        .args(["--prototxt", s(&proto), "--random-weights", "22", "-o", s(&out)])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    out
}

fn labels_in(out: &Path) -> Vec<String> {
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    summary["units"].as_array().unwrap().iter().map(|u| u["label"].as_str().unwrap().to_string()).collect()
}

#[test]
fn labels_follow_the_number_of_units_or_the_labels_flag() {
    let dir = scratch("synth-labels");
    let (g, c5) = tiny_weight_files(&dir);
    let run = |c: &Path, name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args = vec!["--units", "0,1", "--iters", "1"];
        args.extend_from_slice(extra);
        let r = synthesize(&g, c, &out, &args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        labels_in(&out)
    };
    assert_eq!(run(&tiny_classifier_with(&dir, 1000), "imagenet", &[]), ["tench", "goldfish"]);
    assert_eq!(run(&tiny_classifier_with(&dir, 205), "places", &[]), ["abbey", "airport terminal"]);
    assert_eq!(run(&c5, "none", &[]), ["fc8 #0", "fc8 #1"]);
    let names = dir.join("names.txt");
    std::fs::write(&names, "cat\ndog, a good one\nbird\nfish\nfrog\n").unwrap();
    assert_eq!(run(&c5, "given", &["--labels", s(&names)]), ["cat", "dog, a good one"]);
    // A list that does not fit the layer is an error naming the flag.
    std::fs::write(&names, "cat\ndog\n").unwrap();
    let r = synthesize(&g, &c5, &dir.join("bad"), &["--units", "0", "--labels", s(&names)]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--labels"), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn label_files_parse_in_each_shipped_format() {
    let imagenet = dgnam::synth::run::read_labels(&common::shipped("synset_words.txt")).unwrap();
    assert_eq!((imagenet.len(), imagenet[945].as_str()), (1000, "bell pepper"));
    let places = dgnam::synth::run::read_labels(&common::shipped("categoryIndex_places205.txt")).unwrap();
    assert_eq!(places.len(), 205);
    assert_eq!((places[0].as_str(), places[13].as_str(), places[204].as_str()), ("abbey", "apartment building/outdoor", "yard"));
}

/// A generator whose code is 4x2x2 (the size of the tiny classifier's pool1), like the
/// pool5 generator's 256x6x6 for CaffeNet.
fn pool_generator(dir: &Path) -> std::path::PathBuf {
    let proto = dir.join("gen-pool.prototxt");
    std::fs::write(
        &proto,
        r#"name: "tiny_pool_generator"
input: "feat"
input_shape { dim: 1 dim: 4 dim: 2 dim: 2 }
layer { name: "defc" type: "InnerProduct" bottom: "feat" top: "defc" inner_product_param { num_output: 48 } }
layer { name: "relu_defc" type: "ReLU" bottom: "defc" top: "defc" relu_param { negative_slope: 0.3 } }
layer { name: "reshape" type: "Reshape" bottom: "defc" top: "reshape_defc" reshape_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "deconv0" type: "Deconvolution" bottom: "reshape_defc" top: "deconv0" convolution_param { num_output: 3 kernel_size: 4 stride: 2 pad: 1 } }
"#,
    )
    .unwrap();
    let out = dir.join("gen-pool.dgnw");
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam-convert"))
        .args(["--prototxt", s(&proto), "--random-weights", "23", "-o", s(&out)])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    out
}

#[test]
fn init_image_encodes_at_the_layer_that_fits_the_generator() {
    let dir = scratch("synth-encoder");
    let (_, c) = tiny_weight_files(&dir);
    let g = pool_generator(&dir);
    let pics = write_pictures(&dir.join("pics"), 1);
    let out = dir.join("out");
    let r = synthesize(&g, &c, &out, &["--units", "2", "--init-image", s(&pics[0]), "--iters", "1"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let code = dgnam::npy::read(&out.join("fc8_0002.code.npy")).unwrap();
    // pool1 of the image, computed here directly.
    let file = dgnam::weights::WeightsFile::open(&c).unwrap();
    let net = CpuNet::<f32>::from_weights(&file, 1, dgnam::device::Cpu::new()).unwrap();
    let x = dgnam::app::read_input(&pics[0], &file.netdef().unwrap(), &dgnam::preprocess::Preprocess::default_for(3)).unwrap();
    let mut st = net.state().unwrap();
    net.forward(&mut st, &[&x.data]).unwrap();
    assert_eq!(code.shape, vec![1, 16]);
    assert_eq!(&code.data, st.value(net.plan.blob_by_name("pool1").unwrap()));
    let same =
        synthesize(&g, &c, &dir.join("out2"), &["--units", "2", "--init-image", s(&pics[0]), "--iters", "1", "--encoder-layer", "pool1"]);
    assert!(same.status.success());
    assert_eq!(read_bytes(&out, "fc8_0002", "code.npy"), read_bytes(&dir.join("out2"), "fc8_0002", "code.npy"));

    // A layer of another size is refused, naming the flag.
    let r = synthesize(&g, &c, &dir.join("bad"), &["--units", "2", "--init-image", s(&pics[0]), "--encoder-layer", "fc6"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("--encoder-layer fc6") && err.contains("16"), "{err}");
    assert!(!dir.join("bad").exists());
}

#[test]
fn the_code_layer_and_its_shipped_bounds_follow_the_generator() {
    use dgnam::synth::run::{code_layer, shipped_bounds};
    let def = parse_netdef(&std::fs::read_to_string(common::shipped("caffenet.prototxt")).unwrap()).unwrap();
    let plan = dgnam::graph::Plan::new(&def, 2).unwrap();
    let layer = |n: usize, given: Option<&str>, gen: &str| code_layer(&plan, n, given, Some(Path::new(gen)));
    assert_eq!(layer(4096, None, "weights/generator-fc6.dgnw").unwrap().as_deref(), Some("fc6"));
    assert_eq!(layer(4096, None, "mine.dgnw").unwrap().as_deref(), Some("fc6"));
    assert_eq!(layer(4096, None, "weights/generator-fc7.dgnw").unwrap().as_deref(), Some("fc7"));
    assert_eq!(layer(9216, None, "weights/generator-pool5.dgnw").unwrap().as_deref(), Some("pool5"));
    assert_eq!(layer(1234, None, "g.dgnw").unwrap(), None);
    assert_eq!(layer(4096, Some("fc7"), "g.dgnw").unwrap().as_deref(), Some("fc7"));
    let e = layer(9216, Some("fc6"), "g.dgnw").unwrap_err().to_string();
    assert!(e.contains("--encoder-layer fc6") && e.contains("4096") && e.contains("9216"), "{e}");

    let dir = common::shipped("act_range");
    let (p, note) = shipped_bounds(&dir, "fc6").unwrap();
    assert_eq!((p, note), (dir.join("3x/fc6.txt"), None));
    // pool5 has no 3x bounds: 2x, and a note saying which file.
    let (p, note) = shipped_bounds(&dir, "pool5").unwrap();
    assert_eq!(p, dir.join("2x/pool5.txt"));
    assert!(note.unwrap().contains("2x/pool5.txt"));
    assert_eq!(dgnam::synth::run::read_bounds(&p).unwrap().len(), 9216);
    assert!(shipped_bounds(&dir, "conv9").unwrap_err().to_string().contains("--bounds"));
}

#[test]
fn a_conv_unit_also_gets_its_image_cropped_to_its_receptive_field() {
    let dir = scratch("synth-field");
    let (g, c) = tiny_weight_files(&dir);
    let out = dir.join("out");
    // conv1 is a 3x3 convolution over the 6x6 input: unit (1, 2) sees columns 1..4, rows 2..5.
    let r = synthesize(&g, &c, &out, &["--layer", "conv1", "--units", "2", "--xy", "1,2"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let full = image::open(out.join("conv1_0002.png")).unwrap().to_rgb8();
    let field = image::open(out.join("conv1_0002.field.png")).unwrap().to_rgb8();
    assert_eq!(field.dimensions(), (3, 3));
    assert_eq!(field, image::imageops::crop_imm(&full, 1, 2, 3, 3).to_image());
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let u = &summary["units"][0];
    assert_eq!(u["field"], serde_json::json!([1, 2, 4, 5]));
    assert_eq!(u["field_png"], "conv1_0002.field.png");
    // Output units see everything: no crop.
    let r = synthesize(&g, &c, &out, &["--units", "1"]);
    assert!(r.status.success());
    assert!(!out.join("fc8_0001.field.png").exists());
}

#[test]
fn default_bounds_fall_back_to_2x_and_say_which_file() {
    let dir = scratch("synth-bounds-2x");
    // The tiny classifier with pool1 called pool5: the 16-value generator's code layer.
    let text = std::fs::read_to_string(fixture("tiny/classifier.prototxt")).unwrap().replace("pool1", "pool5");
    let proto = dir.join("clf-pool5.prototxt");
    std::fs::write(&proto, text).unwrap();
    let c = dir.join("clf-pool5.dgnw");
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam-convert"))
        .args(["--prototxt", s(&proto), "--random-weights", "22", "-o", s(&c)])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let g = pool_generator(&dir);
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam"))
        .args(["synthesize", "--generator", s(&g), "--net", s(&c), "--units", "1", "--iters", "2", "--out-dir", s(&dir.join("out"))])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("bounds: no 3x bounds for pool5; using") && err.contains("2x/pool5.txt"), "{err}");
    // CaffeNet's 9216 pool5 bounds do not fit this tiny code: an error, after the note.
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("9216 bounds given for a code of 16"), "{err}");
}

/// The files are written by a background thread while the next batch computes: a write
/// that fails (here a directory stands where unit 2's PNG goes) still ends the run with
/// one error line naming the file, the batches before it stay written and listed, and
/// nothing after it is written.
#[test]
fn a_failed_write_ends_the_run_cleanly_and_keeps_the_batches_before_it() {
    let dir = scratch("synth-write-error");
    let (g, c) = tiny_weight_files(&dir);
    let out = dir.join("out");
    std::fs::create_dir_all(out.join("fc8_0002.png")).unwrap();
    let r = synthesize(&g, &c, &out, &["--units", "all", "--batch", "1"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "the run succeeded: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| !l.starts_with("device: ")).collect();
    assert_eq!(errors.len(), 1, "not one error line: {err}");
    assert!(errors[0].starts_with("error: cannot write ") && errors[0].contains("fc8_0002.png") && !err.contains("panicked"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains(".tmp")).collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let listed: Vec<i64> = summary["units"].as_array().unwrap().iter().map(|u| u["unit"].as_i64().unwrap()).collect();
    assert_eq!(listed, vec![0, 1]);
    for stem in ["fc8_0000", "fc8_0001"] {
        assert!(out.join(format!("{stem}.code.npy")).exists(), "{stem}");
    }
    for stem in ["fc8_0003", "fc8_0004"] {
        assert!(!out.join(format!("{stem}.png")).exists(), "{stem} was written after the failure");
    }
    assert!(!out.join("index.html").exists());
    // With the obstacle gone, a rerun finishes the other three.
    std::fs::remove_dir(out.join("fc8_0002.png")).unwrap();
    let r = synthesize(&g, &c, &out, &["--units", "all", "--batch", "1"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("3 units done, 2 already there"), "{}", String::from_utf8_lossy(&r.stdout));
}
