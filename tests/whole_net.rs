//! Whole nets: input gradients against finite differences, in-place semantics, and the
//! real DGN-AM nets built at their real shapes with random weights.

mod common;

use common::shipped;
use dgnam::app::input_gradient;
use dgnam::caffe::netdef::parse_netdef;
use dgnam::device::Cpu;
use dgnam::graph::{CpuNet, UnitRef};
use dgnam::rng::Rng;

const SMALL_NET: &str = r#"
name: "small"
input: "data"
input_shape { dim: 2 dim: 3 dim: 9 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "relu2" type: "ReLU" bottom: "fc" top: "fc" }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" }
layer { name: "out" type: "InnerProduct" bottom: "fc" top: "out" inner_product_param { num_output: 3 } }
"#;

fn unit_sum(net: &CpuNet<'_, f64>, x: &[f64], layer: &str, offset: usize) -> f64 {
    let mut st = net.state().unwrap();
    net.forward(&mut st, &[x]).unwrap();
    let id = net.plan.layer_output(layer).unwrap();
    let per = st.value(id).len() / net.plan.batch;
    (0..net.plan.batch).map(|n| st.value(id)[n * per + offset]).sum()
}

#[test]
fn input_gradient_of_a_unit_matches_finite_differences() {
    let def = parse_netdef(SMALL_NET).unwrap();
    let net = CpuNet::<f64>::random(&def, 2, 11, Cpu::new()).unwrap();
    let mut rng = Rng::new(5);
    let x = rng.uniform_vec(2 * 3 * 9 * 8, -1.0, 1.0);
    for (layer, unit) in [("out", 1usize), ("fc", 2), ("conv1", 3)] {
        let u = UnitRef { unit, xy: None };
        let g = input_gradient(&net, &x, layer, u).unwrap();
        let shape = &net.plan.blobs[net.plan.layer_output(layer).unwrap()].shape;
        let offset = dgnam::graph::unit_offset(shape, u, layer).unwrap();
        let eps = 1e-6;
        let mut xp = x.clone();
        let mut worst = 0f64;
        for i in 0..x.len() {
            xp[i] = x[i] + eps;
            let up = unit_sum(&net, &xp, layer, offset);
            xp[i] = x[i] - eps;
            let down = unit_sum(&net, &xp, layer, offset);
            xp[i] = x[i];
            let fd = (up - down) / (2.0 * eps);
            worst = worst.max((fd - g[i]).abs() / (1.0 + fd.abs()));
        }
        assert!(worst < 1e-6, "{layer}[{unit}]: worst relative error {worst:e}");
        assert!(g.iter().any(|v| v.abs() > 1e-8), "{layer}[{unit}]: gradient vanished");
    }
}

#[test]
fn a_layer_output_is_taken_before_later_in_place_layers() {
    let def = parse_netdef(SMALL_NET).unwrap();
    let net = CpuNet::<f32>::random(&def, 2, 11, Cpu::new()).unwrap();
    let mut rng = Rng::new(9);
    let x: Vec<f32> = (0..2 * 3 * 9 * 8).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let mut st = net.state().unwrap();
    net.forward(&mut st, &[&x]).unwrap();
    let fc = st.value(net.plan.layer_output("fc").unwrap());
    let relu = st.value(net.plan.layer_output("relu2").unwrap());
    assert!(fc.iter().any(|&v| v < 0.0), "fc output should keep its negative, pre-ReLU values");
    assert!(relu.iter().all(|&v| v >= 0.0));
    // A unit that is negative before relu2 still has a gradient at "fc" (pre-ReLU objective).
    let neg = fc.iter().position(|&v| v < 0.0).unwrap();
    let (n, unit) = (neg / 5, neg % 5);
    let net1 = CpuNet::<f32>::random(&def, 1, 11, Cpu::new()).unwrap();
    let g1 = input_gradient(&net1, &x[n * 216..(n + 1) * 216], "fc", UnitRef { unit, xy: None }).unwrap();
    assert!(g1.iter().any(|v| v.abs() > 0.0), "pre-ReLU unit lost its gradient");
}

fn check_real_net(file: &str, batch: usize, last: &str, last_shape: &[usize]) -> Vec<f32> {
    let text = std::fs::read_to_string(shipped(file)).unwrap();
    let def = parse_netdef(&text).unwrap();
    let net = CpuNet::<f32>::random(&def, batch, 1, Cpu::new()).unwrap();
    let input = &net.plan.blobs[net.plan.inputs[0]];
    assert_eq!(input.shape[0], batch);
    let mut rng = Rng::new(2);
    let x: Vec<f32> = (0..input.len()).map(|_| rng.normal() as f32).collect();
    let mut st = net.state().unwrap();
    net.forward(&mut st, &[&x]).unwrap();
    let id = net.plan.layer_output(last).unwrap();
    assert_eq!(net.plan.blobs[id].shape, last_shape);
    let out = st.value(id).clone();
    assert!(out.iter().all(|v| v.is_finite()), "{file}: non-finite output");
    assert!(out.iter().any(|&v| v != 0.0), "{file}: all-zero output");
    out
}

#[test]
fn caffenet_builds_at_real_shapes() {
    for batch in [1, 4] {
        let fc8 = check_real_net("caffenet.prototxt", batch, "fc8", &[batch, 1000]);
        let prob = check_real_net("caffenet.prototxt", batch, "prob", &[batch, 1000]);
        // prob is the softmax of fc8, image by image.
        for n in 0..batch {
            let (logits, p) = (&fc8[n * 1000..(n + 1) * 1000], &prob[n * 1000..(n + 1) * 1000]);
            let max = logits.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
            let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
            for (i, (&l, &q)) in logits.iter().zip(p).enumerate() {
                let want = (l as f64 - max).exp() / sum;
                assert!((q as f64 - want).abs() <= 1e-4 * want + 1e-9, "image {n}, class {i}: prob {q}, softmax of fc8 {want}");
            }
        }
    }
}

#[test]
fn fc6_generator_builds_at_real_shapes() {
    for batch in [1, 4] {
        check_real_net("generator-fc6.prototxt", batch, "deconv0", &[batch, 3, 256, 256]);
    }
}

#[test]
fn googlenet_builds_at_real_shapes() {
    for batch in [1, 4] {
        check_real_net("googlenet.prototxt", batch, "loss3/classifier", &[batch, 1000]);
    }
}

#[test]
fn caffenet_gradient_reaches_the_input_and_batching_changes_nothing() {
    let def = parse_netdef(&std::fs::read_to_string(shipped("caffenet.prototxt")).unwrap()).unwrap();
    let net2 = CpuNet::<f32>::random(&def, 2, 1, Cpu::new()).unwrap();
    let net1 = CpuNet::<f32>::random(&def, 1, 1, Cpu::new()).unwrap();
    let mut rng = Rng::new(4);
    let x: Vec<f32> = (0..2 * 3 * 227 * 227).map(|_| rng.normal() as f32 * 50.0).collect();
    let u = UnitRef { unit: 945, xy: None };
    let g2 = input_gradient(&net2, &x, "fc8", u).unwrap();
    let half = x.len() / 2;
    let g1 = input_gradient(&net1, &x[half..], "fc8", u).unwrap();
    assert!(g1.iter().all(|v| v.is_finite()) && g1.iter().any(|&v| v != 0.0));
    let err = common::rel_err(&g2[half..], &g1);
    assert!(err < 1e-5, "sample 1 of a batch of 2 differs from a single run: {err:e}");
}

/// The CPU's results do not depend on its thread count: a net with every parallel CPU path
/// (a strided deconvolution, slice, concat and scale, grouped convolutions, LRN, max and
/// average pooling, inner products) gives the same bits, forward and backward, on 1, 2, 3
/// and 5 threads. Its 2 images take every way of
/// running convolutions: one image per thread (1 and 2 threads); one image at a time with
/// its 4 groups across the pool (3 threads, and the ungrouped deconvolution's product split
/// over it); with each group's product split over the pool (5 threads); and, for the
/// first convolution (576 column rows, 10 bands; 12 outputs keep it off Winograd's way),
/// with its bands across the pool (3 and 5).
#[test]
fn cpu_results_do_not_depend_on_the_thread_count() {
    let text = r#"
name: "threads"
input: "data"
input_shape { dim: 2 dim: 64 dim: 64 dim: 64 }
layer { name: "wide" type: "Convolution" bottom: "data" top: "wide"
        convolution_param { num_output: 12 kernel_size: 3 pad: 1 } }
layer { name: "up" type: "Deconvolution" bottom: "wide" top: "up"
        convolution_param { num_output: 8 kernel_size: 4 stride: 2 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "up" top: "up" relu_param { negative_slope: 0.3 } }
layer { name: "split" type: "Slice" bottom: "up" top: "a" top: "b" slice_param { axis: 1 slice_point: 3 } }
layer { name: "cat" type: "Concat" bottom: "b" bottom: "a" top: "cat" }
layer { name: "scale" type: "Scale" bottom: "cat" top: "sc" scale_param { bias_term: true } }
layer { name: "conv" type: "Convolution" bottom: "sc" top: "conv"
        convolution_param { num_output: 12 kernel_size: 3 stride: 2 group: 4 } }
layer { name: "pw" type: "Convolution" bottom: "conv" top: "pw" convolution_param { num_output: 8 kernel_size: 1 group: 4 } }
layer { name: "norm" type: "LRN" bottom: "pw" top: "norm" lrn_param { local_size: 5 alpha: 0.01 beta: 0.75 } }
layer { name: "pool" type: "Pooling" bottom: "norm" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "apool" type: "Pooling" bottom: "pool" top: "apool" pooling_param { pool: AVE kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "apool" top: "fc" inner_product_param { num_output: 37 } }
"#;
    same_bits_on_1_2_3_and_5_threads(text);
}

/// The thread-count test for products the crate would compute by another path if they were
/// cut carelessly (k > 512 on maps of at most 64 positions): a 1x1 convolution of 600
/// channels to 128 on 7 x 7 maps (row blocks of 64 x 49 or fewer would round differently,
/// and did: DenseNet-121's last block gave other logits on 2 threads than on 1), then a
/// 3x3 to 32 channels (1152 terms) and a 3x3 to 96 at stride 2.
#[test]
fn cpu_results_on_small_maps_do_not_depend_on_the_thread_count() {
    same_bits_on_1_2_3_and_5_threads(
        r#"
name: "small_maps"
input: "data"
input_shape { dim: 2 dim: 600 dim: 7 dim: 7 }
layer { name: "pw" type: "Convolution" bottom: "data" top: "pw" convolution_param { num_output: 128 kernel_size: 1 } }
layer { name: "c3" type: "Convolution" bottom: "pw" top: "c3" convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
layer { name: "s2" type: "Convolution" bottom: "c3" top: "s2" convolution_param { num_output: 96 kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "s2" top: "fc" inner_product_param { num_output: 10 } }
"#,
    );
}

/// The thread-count test for a forward pass banded only where its products are split over
/// the pool (a column buffer of 27 rows: 3 channels, 3x3, on 128 x 128 maps, and a 7x7
/// stride-2 convolution of those 16 channels), and the transposed passes of both, which
/// must not be banded that way (banding the first one's col2im at 3 threads fails this).
#[test]
fn cpu_results_of_few_row_convolutions_do_not_depend_on_the_thread_count() {
    same_bits_on_1_2_3_and_5_threads(
        r#"
name: "few_rows"
input: "data"
input_shape { dim: 2 dim: 3 dim: 128 dim: 128 }
layer { name: "c3" type: "Convolution" bottom: "data" top: "c3" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "c7" type: "Convolution" bottom: "c3" top: "c7" convolution_param { num_output: 8 kernel_size: 7 stride: 2 pad: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "c7" top: "fc" inner_product_param { num_output: 10 } }
"#,
    );
}

/// The thread-count test for 3x3 convolutions of stride 1 that take Winograd's way: a
/// convolution with a fused ReLU, a deconvolution (its forward pass the transposed
/// correlation) with one, and an unpadded convolution, on maps that are not a whole number
/// of 4 x 4 tiles.
#[test]
fn cpu_results_of_winograd_convolutions_do_not_depend_on_the_thread_count() {
    same_bits_on_1_2_3_and_5_threads(
        r#"
name: "winograd"
input: "data"
input_shape { dim: 2 dim: 32 dim: 38 dim: 41 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 40 kernel_size: 3 pad: 1 } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "d2" type: "Deconvolution" bottom: "c1" top: "d2" convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
layer { name: "r2" type: "ReLU" bottom: "d2" top: "d2" relu_param { negative_slope: 0.2 } }
layer { name: "c3" type: "Convolution" bottom: "d2" top: "c3" convolution_param { num_output: 36 kernel_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "c3" top: "fc" inner_product_param { num_output: 10 } }
"#,
    );
}

/// A net's output and input gradient (seeded at its layer `fc`) are the same bits on 1, 2,
/// 3 and 5 threads.
fn same_bits_on_1_2_3_and_5_threads(text: &str) {
    let def = parse_netdef(text).unwrap();
    let net = CpuNet::<f32>::random(&def, 2, 11, Cpu::new()).unwrap();
    let mut rng = Rng::new(12);
    let x: Vec<f32> = (0..net.plan.blobs[net.plan.inputs[0]].len()).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let fc = net.plan.layer_output("fc").unwrap();
    let seed: Vec<f32> = (0..net.plan.blobs[fc].len()).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut st = net.state().unwrap();
            net.forward(&mut st, &[&x]).unwrap();
            net.backward(&mut st, &[(fc, &seed)], false).unwrap();
            (st.value(fc).clone(), st.grad(net.plan.inputs[0]).unwrap().clone())
        })
    };
    let one = run(1);
    assert!(one.1.iter().any(|v| *v != 0.0));
    assert_eq!(one, run(2), "2 threads");
    assert_eq!(one, run(3), "3 threads");
    assert_eq!(one, run(5), "5 threads");
}
