//! The CUDA backend. Without a GPU: every kernel source compiles with NVRTC (when libnvrtc
//! is found; `REQUIRE_NVRTC=1` makes a missing NVRTC a failure). With a GPU (`--ignored`;
//! `REQUIRE_GPU=1` makes a missing GPU a failure): every op forward and backward, and
//! CaffeNet and the fc6 generator at real shapes, against the CPU backend to
//! `|gpu - cpu| <= 1e-4 * max|cpu| + 1e-5`.
//!
//! Whole nets are compared two ways: forward end to end (every blob), and backward node by
//! node from the CPU's own forward values and a random output gradient. End-to-end gradients
//! are not compared: a max-pooling window whose two largest inputs differ by f32 rounding may
//! pick a different winner on each backend, which moves a gradient entry to a neighbouring
//! pixel (both answers are right).

mod common;

use common::shipped;
use dgnam::device::cuda::compile;
use dgnam::device::cuda::Precision;
use dgnam::device::{Backend, Cpu, Cuda};
use dgnam::synth::kernels::DgnKernels;
use dgnam::caffe::netdef::parse_netdef;
use dgnam::graph::{CpuNet, Net, Op};
use dgnam::rng::Rng;

fn env_on(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// The GPU backend, or None (saying why) when there is no GPU and REQUIRE_GPU is not set.
fn gpu() -> Option<Cuda> {
    let why = match Cuda::probe() {
        Ok(Some(_)) => return Some(Cuda::new(Precision::F32).expect("a GPU is present but the CUDA backend failed to start")),
        Ok(None) => "no CUDA driver found".to_string(),
        Err(e) => format!("{e:#}"),
    };
    assert!(!env_on("REQUIRE_GPU"), "REQUIRE_GPU=1 but there is no usable GPU: {why}");
    eprintln!("skipped: needs a CUDA GPU ({why})");
    None
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    if !compile::nvrtc_present() {
        assert!(!env_on("REQUIRE_NVRTC"), "REQUIRE_NVRTC=1 but libnvrtc.so.13 is not on the library path");
        eprintln!("skipped: NVRTC (libnvrtc.so.13) not found; set LD_LIBRARY_PATH to check the kernels");
        return;
    }
    for arch in ["sm_80", "sm_90"] {
        let report = compile::check_all(arch, &dgnam::app::kernel_sources()).unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("{report}");
        for compile::KernelSource { name, text: source } in dgnam::app::kernel_sources() {
            let ptx = compile::compile(name, source, &compile::options(arch).unwrap()).unwrap();
            let entries = compile::entry_points(&ptx);
            assert!(!entries.is_empty(), "{name} defines no kernel");
            for (entry, params) in entries {
                assert!(!params.contains(&compile::ParamKind::Other), "{name}: {entry} has a parameter of an unexpected type");
            }
        }
    }
}

#[test]
fn every_kernel_runs_right_under_the_host_emulation() {
    // tools/kernel_emu compiles kernels/*.cu with g++ under a small CUDA emulation and
    // checks every kernel against double-precision references (about a minute on 2 cores).
    // It guards the kernels' logic on machines without a GPU; REQUIRE_KERNEL_EMU=1 (CI)
    // makes a missing g++ a failure.
    let gxx = std::process::Command::new("g++").arg("--version").output().is_ok_and(|o| o.status.success());
    if !gxx {
        assert!(!env_on("REQUIRE_KERNEL_EMU"), "REQUIRE_KERNEL_EMU=1 but g++ is not installed");
        eprintln!("skipped: g++ not found, so the kernels were not run under the host emulation");
        return;
    }
    let out = std::process::Command::new("bash").arg(common::root().join("tools/kernel_emu/run.sh")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(out.status.success() && text.contains("\n0 failures"), "kernel emulation: {failed:?}\n{}", String::from_utf8_lossy(&out.stderr));
    let checked = text.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(checked >= 90, "only {checked} kernel checks ran");
}

#[test]
fn the_ptx_cache_serves_the_second_compilation() {
    if !compile::nvrtc_present() {
        eprintln!("skipped: NVRTC not found");
        return;
    }
    let dir = common::scratch("ptx-cache");
    std::env::set_var("DGNAM_CACHE_DIR", &dir);
    let compile::KernelSource { name, text: source } = dgnam::app::kernel_sources()[0];
    let first = compile::compile_cached(name, source, "sm_90").unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1, "one PTX file per source and architecture");
    let path = files[0].as_ref().unwrap().path();
    // A cached file is used as it is: mark it and see the mark come back.
    std::fs::write(&path, format!("{first}// cached\n")).unwrap();
    assert!(compile::compile_cached(name, source, "sm_90").unwrap().ends_with("// cached\n"));
    std::env::remove_var("DGNAM_CACHE_DIR");
}

/// Panics unless `|gpu - cpu| <= 1e-4 * max|cpu| + 1e-5` everywhere.
fn assert_close(gpu: &[f32], cpu: &[f32], what: &str) {
    assert_within(gpu, cpu, what, 1e-4);
}

/// Panics unless `|gpu - cpu| <= rel * max|cpu| + 1e-5` everywhere.
fn assert_within(gpu: &[f32], cpu: &[f32], what: &str, rel: f32) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
    let tol = rel * scale + 1e-5;
    let bad: Vec<usize> = (0..gpu.len()).filter(|&i| !((gpu[i] - cpu[i]).abs() <= tol || (gpu[i].is_nan() && cpu[i].is_nan()))).collect();
    if let Some(&i) = bad.first() {
        let worst = bad.iter().copied().max_by(|&a, &b| (gpu[a] - cpu[a]).abs().total_cmp(&(gpu[b] - cpu[b]).abs())).unwrap();
        panic!(
            "{what}: {} of {} entries differ; first index {i}: gpu {} vs cpu {}; worst index {worst}: gpu {} vs cpu {} (max |cpu| {scale}, tolerance {tol})",
            bad.len(), gpu.len(), gpu[i], cpu[i], gpu[worst], cpu[worst]
        );
    }
}

fn random(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    rng.uniform_vec(n, lo, hi).into_iter().map(|v| v as f32).collect()
}

/// Forward end to end on both backends (every blob compared), then each node's forward and
/// backward (data and weight gradients) on the GPU from the CPU's values of its bottoms.
/// Generic over the second backend so the harness itself is tested (CPU against CPU) on
/// machines without a GPU.
fn compare<B: DgnKernels<Scalar = f32>>(other: B, proto: &str, batch: usize, seed: u64) {
    compare_within(other, proto, batch, seed, 1e-4)
}

fn compare_within<B: DgnKernels<Scalar = f32>>(other: B, proto: &str, batch: usize, seed: u64, rel: f32) {
    let assert_close = |g: &[f32], c: &[f32], what: &str| assert_within(g, c, what, rel);
    let def = parse_netdef(proto).unwrap();
    let cpu = CpuNet::<f32>::random(&def, batch, seed, Cpu::new()).unwrap();
    let gpu = Net::<B>::random(&def, batch, seed, other).unwrap();
    let mut rng = Rng::new(seed + 1);
    let inputs: Vec<Vec<f32>> = cpu.plan.inputs.iter().map(|&i| random(&mut rng, cpu.plan.blobs[i].len(), -1.0, 1.0)).collect();
    let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let mut cs = cpu.state().unwrap();
    let mut gs = gpu.state().unwrap();
    cpu.forward(&mut cs, &refs).unwrap();
    gpu.forward(&mut gs, &refs).unwrap();
    // A second pass reuses every buffer and must give the same answer.
    gpu.forward(&mut gs, &refs).unwrap();
    for (id, blob) in cpu.plan.blobs.iter().enumerate() {
        let g = gpu.backend.download(gs.value(id)).unwrap();
        assert_close(&g, cs.value(id), &format!("{} forward, blob '{}' ({id})", cpu.plan.name, blob.name));
    }
    let (cb, gb) = (&cpu.backend, &gpu.backend);
    for (i, node) in cpu.plan.nodes.iter().enumerate() {
        let what = |s: &str| format!("layer '{}' ({}) {s}", node.layer, node.type_name);
        let xs: Vec<&Vec<f32>> = node.bottoms.iter().map(|&b| cs.value(b)).collect();
        let gx: Vec<_> = xs.iter().map(|x| { let mut b = gb.alloc(x.len()).unwrap(); gb.upload(&mut b, x).unwrap(); b }).collect();
        let gx_refs: Vec<_> = gx.iter().collect();
        let mut cy: Vec<Vec<f32>> = node.tops.iter().map(|&t| vec![0.0; cpu.plan.blobs[t].len()]).collect();
        let mut gy: Vec<_> = node.tops.iter().map(|&t| gb.alloc(cpu.plan.blobs[t].len()).unwrap()).collect();
        let (mut caux, mut gaux) = (Default::default(), Default::default());
        dgnam::ops::forward(cb, &node.op, cpu.node_params(i), &xs, &mut cy, &mut caux).unwrap();
        dgnam::ops::forward(gb, &node.op, gpu.node_params(i), &gx_refs, &mut gy, &mut gaux).unwrap();
        for (t, (g, c)) in gy.iter().zip(&cy).enumerate() {
            assert_close(&gb.download(g).unwrap(), c, &what(&format!("forward top {t}")));
        }
        if let Op::Copy = node.op {
            continue;
        }
        let dy = random(&mut rng, cy[0].len(), -1.0, 1.0);
        let mut gdy = gb.alloc(dy.len()).unwrap();
        gb.upload(&mut gdy, &dy).unwrap();
        // Backward adds: start both from the same nonzero gradients.
        let start: Vec<Vec<f32>> = xs.iter().map(|x| random(&mut rng, x.len(), -0.5, 0.5)).collect();
        let pstart: Vec<Vec<f32>> = node.params.iter().map(|p| random(&mut rng, p.len(), -0.5, 0.5)).collect();
        let mut cdx = start.clone();
        let mut cdp = pstart.clone();
        let upload = |v: &Vec<f32>| { let mut b = gb.alloc(v.len()).unwrap(); gb.upload(&mut b, v).unwrap(); b };
        let mut gdx: Vec<_> = start.iter().map(upload).collect();
        let mut gdp: Vec<_> = pstart.iter().map(upload).collect();
        let gy0 = gb.alloc(cy[0].len()).unwrap();
        let mut gy0 = gy0;
        gb.upload(&mut gy0, &cy[0]).unwrap();
        dgnam::ops::backward(cb, &node.op, cpu.node_params(i), &xs, &cy[0], &dy, &caux, &mut cdx, Some(&mut cdp)).unwrap();
        dgnam::ops::backward(gb, &node.op, gpu.node_params(i), &gx_refs, &gy0, &gdy, &gaux, &mut gdx, Some(&mut gdp)).unwrap();
        for (b, (g, c)) in gdx.iter().zip(&cdx).enumerate() {
            assert_close(&gb.download(g).unwrap(), c, &what(&format!("backward, gradient of bottom {b}")));
        }
        for (p, (g, c)) in gdp.iter().zip(&cdp).enumerate() {
            assert_close(&gb.download(g).unwrap(), c, &what(&format!("backward, gradient of parameter {p}")));
        }
    }
}

fn op_net(body: &str, input_shape: &str) -> String {
    format!("name: \"op\"\ninput: \"data\"\ninput_shape {{ {input_shape} }}\n{body}")
}

fn compare_ops(cases: &[String], input_shape: &str, batches: &[usize]) {
    if gpu().is_none() {
        return;
    }
    for body in cases {
        for &batch in batches {
            compare(Cuda::new(Precision::F32).unwrap(), &op_net(body, input_shape), batch, 7 + batch as u64);
        }
    }
}

/// A CUDA backend computing matrix products in TF32.
fn tf32() -> Option<Cuda> {
    let mut cuda = gpu()?;
    cuda.set_precision(Precision::Tf32).expect("TF32 needs compute capability 8.0");
    Some(cuda)
}

const SHAPE: &str = "dim: 2 dim: 6 dim: 11 dim: 10";

fn layers(kind: &str, param: &str, variants: &[&str]) -> Vec<String> {
    variants
        .iter()
        .map(|v| format!("layer {{ name: \"l\" type: \"{kind}\" bottom: \"data\" top: \"l\" {param} {{ {v} }} }}"))
        .collect()
}

fn conv_cases() -> Vec<String> {
    layers("Convolution", "convolution_param", &[
        "num_output: 8 kernel_size: 3",
        "num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 group: 2",
        "num_output: 4 kernel_size: 3 dilation: 2 pad: 2 group: 2 bias_term: false",
        "num_output: 9 kernel_size: 1 group: 3",
        "num_output: 5 kernel_size: 5 stride: 3 pad: 2",
    ])
}

fn deconv_cases() -> Vec<String> {
    layers("Deconvolution", "convolution_param", &[
        "num_output: 4 kernel_size: 4 stride: 2 pad: 1",
        "num_output: 6 kernel_h: 3 kernel_w: 2 stride: 2 group: 2",
        "num_output: 3 kernel_size: 3 pad: 1 bias_term: false",
        "num_output: 4 kernel_size: 1 group: 2",
    ])
}

fn inner_product_cases() -> Vec<String> {
    // num_output 7 over 660 inputs has one output tile and K >= 512: split-K, with a ragged
    // last slice.
    layers("InnerProduct", "inner_product_param", &["num_output: 7", "num_output: 130 bias_term: false", "num_output: 5 axis: 2"])
}

fn pool_cases() -> Vec<String> {
    layers("Pooling", "pooling_param", &[
        "pool: MAX kernel_size: 3 stride: 2",
        "pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad: 1",
        "pool: AVE kernel_size: 3 stride: 2 pad: 1",
        "pool: AVE kernel_size: 2 stride: 3",
        "pool: MAX global_pooling: true",
        "pool: AVE global_pooling: true",
    ])
}

fn pointwise_cases() -> Vec<String> {
    let mut v = layers("LRN", "lrn_param", &[
        "local_size: 5 alpha: 0.3 beta: 0.75 k: 2",
        "local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL",
    ]);
    v.extend(layers("ReLU", "relu_param", &["", "negative_slope: 0.3"]));
    for kind in ["Softmax", "Dropout", "Flatten"] {
        v.push(format!("layer {{ name: \"l\" type: \"{kind}\" bottom: \"data\" top: \"l\" }}"));
    }
    v
}

fn combining_cases() -> Vec<String> {
    let split = "layer { name: \"a\" type: \"ReLU\" bottom: \"data\" top: \"a\" relu_param { negative_slope: 0.5 } }\n\
                 layer { name: \"b\" type: \"Scale\" bottom: \"data\" top: \"b\" scale_param { bias_term: true } }\n";
    [
        "layer { name: \"c\" type: \"Concat\" bottom: \"a\" bottom: \"b\" bottom: \"a\" top: \"c\" }",
        "layer { name: \"c\" type: \"Concat\" bottom: \"a\" bottom: \"b\" top: \"c\" concat_param { axis: 2 } }",
        "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"data\" top: \"e\" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1 } }",
        "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"data\" top: \"e\" eltwise_param { operation: PROD } }",
        "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"data\" top: \"e\" eltwise_param { operation: MAX } }",
        "layer { name: \"n\" type: \"BatchNorm\" bottom: \"b\" top: \"n\" batch_norm_param { eps: 0.001 } }",
        "layer { name: \"s\" type: \"Scale\" bottom: \"a\" top: \"s\" scale_param { bias_term: false } }",
        "layer { name: \"s\" type: \"Split\" bottom: \"a\" top: \"s1\" top: \"s2\" }",
    ]
    .iter()
    .map(|l| format!("{split}{l}"))
    .collect()
}

#[test]
fn the_comparison_harness_runs_cpu_against_cpu() {
    let all = [conv_cases(), deconv_cases(), inner_product_cases(), pool_cases(), pointwise_cases(), combining_cases()].concat();
    for body in &all {
        compare(Cpu::<f32>::new(), &op_net(body, SHAPE), 2, 3);
    }
    compare(Cpu::<f32>::new(), &op_net("layer { name: \"s\" type: \"Softmax\" bottom: \"data\" top: \"s\" }", "dim: 3 dim: 1000"), 8, 3);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn convolution_matches_the_cpu() {
    compare_ops(&conv_cases(), SHAPE, &[1, 3]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn deconvolution_matches_the_cpu() {
    compare_ops(&deconv_cases(), SHAPE, &[1, 3]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn inner_product_matches_the_cpu() {
    compare_ops(&inner_product_cases(), SHAPE, &[1, 4]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn pooling_matches_the_cpu() {
    compare_ops(&pool_cases(), SHAPE, &[1, 2]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn lrn_relu_softmax_and_copies_match_the_cpu() {
    compare_ops(&pointwise_cases(), SHAPE, &[1, 2]);
    let softmax = ["layer { name: \"s\" type: \"Softmax\" bottom: \"data\" top: \"s\" }".to_string()];
    compare_ops(&softmax, "dim: 3 dim: 1000", &[1, 8]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn concat_eltwise_batchnorm_scale_match_the_cpu() {
    compare_ops(&combining_cases(), SHAPE, &[1, 2]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn crop_mean_abs_and_dgn_update_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    let mut rng = Rng::new(3);
    let s = [2, 3, 19, 17];
    let (offset, hw) = ([4, 3], [11, 9]);
    let src = random(&mut rng, s.iter().product(), -1.0, 1.0);
    let up = |b: &Cuda, v: &[f32]| { let mut d = b.alloc(v.len()).unwrap(); b.upload(&mut d, v).unwrap(); d };
    let mut cdst = vec![0.0; 2 * 3 * 11 * 9];
    let mut gdst = gpu.alloc(cdst.len()).unwrap();
    cpu.crop(&src, s, offset, hw, &mut cdst).unwrap();
    gpu.crop(&up(&gpu, &src), s, offset, hw, &mut gdst).unwrap();
    assert_close(&gpu.download(&gdst).unwrap(), &cdst, "crop");
    let dy = random(&mut rng, cdst.len(), -1.0, 1.0);
    let mut cdx = src.clone();
    let mut gdx = up(&gpu, &src);
    cpu.crop_backward(&dy, s, offset, hw, &mut cdx).unwrap();
    gpu.crop_backward(&up(&gpu, &dy), s, offset, hw, &mut gdx).unwrap();
    assert_close(&gpu.download(&gdx).unwrap(), &cdx, "crop backward");

    let (rows, cols) = (5, 4096);
    let grad = random(&mut rng, rows * cols, -1e-3, 1e-3);
    let ggrad = up(&gpu, &grad);
    assert_close(&gpu.mean_abs_rows(&ggrad, rows, cols).unwrap(), &cpu.mean_abs_rows(&grad, rows, cols).unwrap(), "mean_abs_rows");
    let code = random(&mut rng, rows * cols, -1.0, 3.0);
    let upper = random(&mut rng, cols, 0.5, 2.0);
    let scale = [Some(100.0), None, Some(-50.0), Some(1e3), None];
    for (bound, decay) in [(true, 0.99), (false, 1.0), (true, 0.0)] {
        let mut ccode = code.clone();
        let mut gcode = up(&gpu, &code);
        let gupper = up(&gpu, &upper);
        cpu.dgn_update(&mut ccode, &grad, rows, cols, &scale, bound.then_some(&upper), decay).unwrap();
        gpu.dgn_update(&mut gcode, &ggrad, rows, cols, &scale, bound.then_some(&gupper), decay).unwrap();
        let got = gpu.download(&gcode).unwrap();
        assert_close(&got, &ccode, "dgn_update");
        for r in [1, 4] {
            assert_eq!(got[r * cols..(r + 1) * cols], code[r * cols..(r + 1) * cols], "a stopped row changed");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn matrix_products_in_tf32_match_the_cpu_to_tf32_rounding() {
    // TF32 keeps 10 mantissa bits (relative rounding 2^-11 per input): 4e-3 of the largest
    // output is loose for that and far below what a wrong fragment layout gives.
    if gpu().is_none() {
        return;
    }
    for body in [conv_cases(), deconv_cases(), inner_product_cases()].concat() {
        for batch in [1, 3] {
            compare_within(tf32().unwrap(), &op_net(&body, SHAPE), batch, 7 + batch as u64, 4e-3);
        }
    }
    let big = "layer { name: \"l\" type: \"Convolution\" bottom: \"data\" top: \"l\" convolution_param { num_output: 96 kernel_size: 5 pad: 2 } }";
    compare_within(tf32().unwrap(), &op_net(big, "dim: 2 dim: 64 dim: 27 dim: 27"), 2, 5, 4e-3);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn tf32_lands_close_to_f32_on_the_dgn_am_loop() {
    let Some(cuda) = gpu() else { return };
    let opts = dgnam::bench::StepOptions::resolve(Some(shipped("caffenet.prototxt")), Some(shipped("generator-fc6.prototxt")), Some("4"), None, false).unwrap();
    let e = dgnam::bench::precision_error(&cuda, &opts, 4, 20).unwrap();
    eprint!("{}", e.row());
    assert!(e.objective < 1e-2, "objective: {e:?}");
    // Loose: a wrong fragment layout or operand gives errors of order 1.
    assert!(e.update < 0.2, "first update: {e:?}");
    assert!(e.objective > 0.0 && e.update > 0.0, "TF32 gave bit-identical results to f32: is it in use? {e:?}");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn caffenet_matches_the_cpu_at_batch_1_and_8() {
    let proto = std::fs::read_to_string(shipped("caffenet.prototxt")).unwrap();
    for batch in [1, 8] {
        let Some(cuda) = gpu() else { return };
        compare(cuda, &proto, batch, 11);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn fc6_generator_matches_the_cpu_at_batch_1_and_8() {
    let proto = std::fs::read_to_string(shipped("generator-fc6.prototxt")).unwrap();
    for batch in [1, 8] {
        let Some(cuda) = gpu() else { return };
        compare(cuda, &proto, batch, 12);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn input_gradients_run_on_the_gpu() {
    // The app's path end to end on a small net without max pooling (no near-tie winners).
    let Some(cuda) = gpu() else { return };
    let proto = "name: \"small\"\ninput: \"data\"\ninput_shape { dim: 3 dim: 3 dim: 9 dim: 8 }\n\
        layer { name: \"conv1\" type: \"Convolution\" bottom: \"data\" top: \"conv1\" convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }\n\
        layer { name: \"relu1\" type: \"ReLU\" bottom: \"conv1\" top: \"conv1\" relu_param { negative_slope: 0.1 } }\n\
        layer { name: \"norm1\" type: \"LRN\" bottom: \"conv1\" top: \"norm1\" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 } }\n\
        layer { name: \"pool1\" type: \"Pooling\" bottom: \"norm1\" top: \"pool1\" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }\n\
        layer { name: \"fc\" type: \"InnerProduct\" bottom: \"pool1\" top: \"fc\" inner_product_param { num_output: 5 } }\n\
        layer { name: \"prob\" type: \"Softmax\" bottom: \"fc\" top: \"prob\" }\n";
    let def = parse_netdef(proto).unwrap();
    let cpu = CpuNet::<f32>::random(&def, 3, 5, Cpu::new()).unwrap();
    let gpu = Net::<Cuda>::random(&def, 3, 5, cuda).unwrap();
    let x = random(&mut Rng::new(9), 3 * 3 * 9 * 8, -1.0, 1.0);
    for (layer, unit) in [("prob", 2), ("fc", 1), ("conv1", 3)] {
        let u = dgnam::graph::UnitRef { unit, xy: None };
        let g = dgnam::app::input_gradient(&gpu, &x, layer, u).unwrap();
        let c = dgnam::app::input_gradient(&cpu, &x, layer, u).unwrap();
        assert_close(&g, &c, &format!("input gradient of {layer}[{unit}]"));
    }
}

/// The DGN-AM loop on `backend` with the tiny generator and classifier of the synthesis
/// tests: per-iteration activations and the final codes.
fn tiny_dgn<B: DgnKernels<Scalar = f32>>(gen_backend: B, clf_backend: B, units: &[usize]) -> (Vec<Vec<f64>>, Vec<Vec<f32>>) {
    use dgnam::synth::dgn::{Dgn, Objective, Schedule};
    let read = |p: &str| parse_netdef(&std::fs::read_to_string(common::fixture(p)).unwrap()).unwrap();
    let gen = Net::random(&read("tiny/generator.prototxt"), units.len(), 21, gen_backend).unwrap();
    let clf = Net::random(&read("tiny/classifier.prototxt"), units.len(), 22, clf_backend).unwrap();
    let fc8 = clf.plan.layer_output("fc8").unwrap();
    let bounds = [3.0f32, 2.0, 4.0, 1.5, 3.0, 2.5, 5.0, 2.0];
    let mut dgn = Dgn::new(&gen, &clf, fc8, Some(&bounds)).unwrap();
    let init: Vec<f32> = units.iter().flat_map(|&u| dgnam::synth::run::random_code(0, u, 8)).collect();
    let objectives: Vec<Objective> = units.iter().map(|&u| Objective::Single(u)).collect();
    let r = dgn.run(&init, &objectives, &Schedule { iters: 10, lr: 2.0, lr_end: 1e-10, decay: 0.9 }, None, &mut |_| {}).unwrap();
    (r.activations, r.codes)
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn the_dgn_am_loop_runs_on_the_gpu_like_on_the_cpu() {
    let Some(cuda) = gpu() else { return };
    let units = [0usize, 3, 4];
    let (ga, gc) = tiny_dgn(cuda.share(), cuda, &units);
    let (ca, cc) = tiny_dgn(Cpu::new(), Cpu::new(), &units);
    for n in 0..units.len() {
        let g: Vec<f32> = ga[n].iter().map(|&v| v as f32).collect();
        let c: Vec<f32> = ca[n].iter().map(|&v| v as f32).collect();
        // Normalized steps amplify rounding a little over 10 iterations.
        let scale = c.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in g.iter().zip(&c).enumerate() {
            assert!((x - y).abs() <= 1e-3 * scale + 1e-4, "unit {}: iteration {i}: gpu {x} cpu {y}", units[n]);
        }
        let cs = cc[n].iter().fold(0f32, |m, v| m.max(v.abs()));
        for (x, y) in gc[n].iter().zip(&cc[n]) {
            assert!((x - y).abs() <= 1e-3 * cs + 1e-4, "unit {}: final code gpu {x} cpu {y}", units[n]);
        }
    }
}
