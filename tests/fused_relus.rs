//! `Net::fuse_relus`: a ReLU run inside the convolution before it gives the bits of the two
//! layers run apart, forward, backward to the input and to the weights, in both ways the CPU
//! runs convolutions; and it leaves alone every ReLU it must not take. `Net::fuse_silus`
//! likewise for a Sigmoid and the Mul of its input and output.

mod common;

use common::shipped;
use dgnam::caffe::netdef::parse_netdef;
use dgnam::device::Cpu;
use dgnam::graph::{CpuNet, Op};
use dgnam::rng::Rng;
use dgnam::synth::dgn::{fuse_relus, Dgn, Objective, Schedule};

/// Every kind of layer before a ReLU the pass meets, and every reason to leave one alone.
const NET: &str = r#"
name: "fusion"
input: "data"
input_shape { dim: 2 dim: 6 dim: 12 dim: 12 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "relu_conv" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "up" type: "Deconvolution" bottom: "conv" top: "up"
        convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 } }
layer { name: "relu_up" type: "ReLU" bottom: "up" top: "up" relu_param { negative_slope: 0.3 } }
layer { name: "dw" type: "Convolution" bottom: "up" top: "dw"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 6 } }
layer { name: "relu_dw" type: "ReLU" bottom: "dw" top: "dw" relu_param { negative_slope: 0.1 } }
layer { name: "pw" type: "Convolution" bottom: "dw" top: "pw"
        convolution_param { num_output: 4 kernel_size: 1 stride: 2 } }
layer { name: "relu_pw" type: "ReLU" bottom: "pw" top: "pw" }
layer { name: "grouped" type: "Convolution" bottom: "pw" top: "grouped"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "negative" type: "ReLU" bottom: "grouped" top: "grouped" relu_param { negative_slope: -0.5 } }
layer { name: "shared" type: "Convolution" bottom: "grouped" top: "shared"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "split" type: "Split" bottom: "shared" top: "shared_a" top: "shared_b" }
layer { name: "relu_shared" type: "ReLU" bottom: "shared_a" top: "shared_a" }
layer { name: "sum" type: "Eltwise" bottom: "shared_a" bottom: "shared_b" top: "sum" }
layer { name: "apart" type: "Convolution" bottom: "sum" top: "apart"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu_apart" type: "ReLU" bottom: "apart" top: "apart_relu" }
layer { name: "fc" type: "InnerProduct" bottom: "apart_relu" top: "fc" inner_product_param { num_output: 7 } }
layer { name: "relu_fc" type: "ReLU" bottom: "fc" top: "fc" }
layer { name: "out" type: "InnerProduct" bottom: "fc" top: "out" inner_product_param { num_output: 3 } }
"#;

/// The output, the input gradient and every weight gradient of `net` on 1 and 3 threads (2
/// images: one image per thread, then one image at a time with its products split).
fn run(net: &CpuNet<'_, f32>, x: &[f32], seed: &[f32]) -> Vec<Vec<f32>> {
    let out = net.plan.layer_output("out").unwrap();
    let mut all = Vec::new();
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut st = net.state().unwrap();
            net.forward(&mut st, &[x]).unwrap();
            net.backward(&mut st, &[(out, seed)], true).unwrap();
            all.push(st.value(out).clone());
            all.push(st.grad(net.plan.inputs[0]).unwrap().clone());
            all.extend(st.param_grads.iter().flatten().cloned());
        });
    }
    all
}

#[test]
fn fused_relus_give_the_bits_of_separate_layers() {
    let def = parse_netdef(NET).unwrap();
    let apart = CpuNet::<f32>::random(&def, 2, 31, Cpu::new()).unwrap();
    let mut fused = CpuNet::<f32>::random(&def, 2, 31, Cpu::new()).unwrap();
    assert_eq!(fused.fuse_relus(&[]), 4);
    // Not fused: a negative slope (its output's signs do not give its input's), a blob that
    // a Split also hands to another layer, a ReLU that is not in place, one after an inner
    // product.
    assert_eq!(fused.fused_layers(), ["conv", "up", "dw", "pw"]);
    let mut rng = Rng::new(32);
    let x: Vec<f32> = (0..apart.plan.blobs[apart.plan.inputs[0]].len()).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let seed: Vec<f32> = (0..6).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let want = run(&apart, &x, &seed);
    // The ReLUs cut: some of each fused layer's outputs are negative before them.
    let mut st = apart.state().unwrap();
    apart.forward(&mut st, &[&x]).unwrap();
    for layer in ["conv", "up", "dw", "pw"] {
        let v = st.value(apart.plan.layer_output(layer).unwrap());
        assert!(v.iter().any(|&a| a < 0.0) && v.iter().any(|&a| a > 0.0), "{layer}: its ReLU changes nothing");
    }
    assert!(want[1].iter().any(|&v| v != 0.0), "the input gradient is zero");
    assert_eq!(run(&fused, &x, &seed), want);
}

#[test]
fn a_blob_the_caller_reads_is_not_fused_away() {
    let def = parse_netdef(NET).unwrap();
    let apart = CpuNet::<f32>::random(&def, 2, 31, Cpu::new()).unwrap();
    let mut fused = CpuNet::<f32>::random(&def, 2, 31, Cpu::new()).unwrap();
    let up = fused.plan.layer_output("up").unwrap();
    assert_eq!(fused.fuse_relus(&[up]), 3);
    assert_eq!(fused.fused_layers(), ["conv", "dw", "pw"]);
    let mut rng = Rng::new(33);
    let x: Vec<f32> = (0..apart.plan.blobs[apart.plan.inputs[0]].len()).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let (mut a, mut f) = (apart.state().unwrap(), fused.state().unwrap());
    apart.forward(&mut a, &[&x]).unwrap();
    fused.forward(&mut f, &[&x]).unwrap();
    assert!(a.value(up).iter().any(|&v| v < 0.0), "up's own output has negative values before relu_up");
    assert_eq!(f.value(up), a.value(up));
    // The names still give the outputs after the ReLUs.
    for name in ["conv", "dw", "pw", "out"] {
        let id = fused.plan.blob_by_name(name).unwrap();
        assert_eq!(f.value(id), a.value(id), "{name}");
    }
}

/// The DGN-AM loop at real shapes (CaffeNet, the fc6 generator, random weights) gives the
/// same codes, images and activations with the ReLUs fused.
#[test]
fn the_dgn_am_loop_is_unchanged_by_fusing_at_real_shapes() {
    let read = |f: &str| parse_netdef(&std::fs::read_to_string(shipped(f)).unwrap()).unwrap();
    let (gen_def, clf_def) = (read("generator-fc6.prototxt"), read("caffenet.prototxt"));
    let batch = 2;
    let run = |fuse: bool| {
        let mut gen = CpuNet::<f32>::random(&gen_def, batch, 2, Cpu::new()).unwrap();
        let mut clf = CpuNet::<f32>::random(&clf_def, batch, 3, Cpu::new()).unwrap();
        let fc8 = clf.plan.layer_output("fc8").unwrap();
        if fuse {
            // CaffeNet's relu1-relu5 (relu6 and relu7 follow inner products); the generator's
            // leaky ReLUs after its convolutions and deconvolutions (deconv0 has none).
            assert_eq!(fuse_relus(&mut gen, &mut clf, &[fc8]), 5 + 8);
            assert_eq!(clf.fused_layers(), ["conv1", "conv2", "conv3", "conv4", "conv5"]);
            let gen_layers = ["deconv5", "conv5_1", "deconv4", "conv4_1", "deconv3", "conv3_1", "deconv2", "deconv1"];
            assert_eq!(gen.fused_layers(), gen_layers);
        }
        let mut dgn = Dgn::new(&gen, &clf, fc8, None).unwrap();
        let mut rng = Rng::new(8);
        let init: Vec<f32> = (0..batch * 4096).map(|_| rng.uniform(0.0, 1.0) as f32).collect();
        let objectives = [Objective::Single(945), Objective::Single(643)];
        let r = dgn.run(&init, &objectives, &Schedule { iters: 3, ..Schedule::default() }, None, &mut |_| {}).unwrap();
        (r.codes, r.images, r.activations)
    };
    let apart = run(false);
    assert!(apart.0[0].iter().zip(&apart.0[1]).any(|(a, b)| a != b));
    assert_eq!(run(true), apart);
}

/// SiLUs the way ONNX exports them (Sigmoid, then Mul of its input and output, either
/// order), and two that `Net::fuse_silus` must leave apart: an input that a third layer
/// reads, a Sigmoid output that a second layer reads.
const SILUS: &str = r#"
name: "silus"
input: "data"
input_shape { dim: 2 dim: 4 dim: 9 dim: 9 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "s1" type: "Sigmoid" bottom: "c1" top: "s1" }
layer { name: "m1" type: "Eltwise" bottom: "c1" bottom: "s1" top: "m1" eltwise_param { operation: PROD } }
layer { name: "c2" type: "Convolution" bottom: "m1" top: "c2" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "s2" type: "Sigmoid" bottom: "c2" top: "s2" }
layer { name: "m2" type: "Eltwise" bottom: "s2" bottom: "c2" top: "m2" eltwise_param { operation: PROD } }
layer { name: "c3" type: "Convolution" bottom: "m2" top: "c3" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "s3" type: "Sigmoid" bottom: "c3" top: "s3" }
layer { name: "m3" type: "Eltwise" bottom: "c3" bottom: "s3" top: "m3" eltwise_param { operation: PROD } }
layer { name: "res" type: "Eltwise" bottom: "m3" bottom: "c3" top: "res" }
layer { name: "s4" type: "Sigmoid" bottom: "res" top: "s4" }
layer { name: "m4" type: "Eltwise" bottom: "res" bottom: "s4" top: "m4" eltwise_param { operation: PROD } }
layer { name: "both" type: "Eltwise" bottom: "m4" bottom: "s4" top: "both" }
layer { name: "out" type: "InnerProduct" bottom: "both" top: "out" inner_product_param { num_output: 3 } }
"#;

#[test]
fn fused_silus_give_the_bits_of_separate_layers() {
    let def = parse_netdef(SILUS).unwrap();
    let apart = CpuNet::<f32>::random(&def, 2, 41, Cpu::new()).unwrap();
    let mut fused = CpuNet::<f32>::random(&def, 2, 41, Cpu::new()).unwrap();
    let steps = fused.step_ops().len();
    assert_eq!(fused.fuse_silus(&[]), 2);
    let ops = fused.step_ops();
    assert_eq!((ops.len(), ops.iter().filter(|o| matches!(o, Op::Silu)).count()), (steps - 2, 2));
    // Kept: the blob an objective reads.
    let mut kept = CpuNet::<f32>::random(&def, 2, 41, Cpu::new()).unwrap();
    assert_eq!(kept.fuse_silus(&[kept.plan.layer_output("s2").unwrap()]), 1);
    let mut rng = Rng::new(42);
    let x: Vec<f32> = (0..apart.plan.blobs[apart.plan.inputs[0]].len()).map(|_| rng.uniform(-3.0, 3.0) as f32).collect();
    let seed: Vec<f32> = (0..6).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let want = run(&apart, &x, &seed);
    assert!(want[1].iter().any(|&g| g != 0.0), "the input gradient is zero");
    for (k, (a, b)) in run(&fused, &x, &seed).iter().zip(&want).enumerate() {
        assert_eq!(a.len(), b.len());
        if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
            panic!("result {k}[{i}]: fused {} against apart {}", a[i], b[i]);
        }
    }
}
