//! Real Caffe models and Caffe's own reference outputs, reproduced.

mod common;

use common::{argmax, assert_matches_caffe, fixture, load_fixture, LoadedFixture};
use dgnam::convert;
use dgnam::ops::cases::{self, Fixture};
use dgnam::preprocess::{load_image, ChannelOrder, Mean, Preprocess};

/// Runs one single-layer OpenCV/Caffe fixture net and compares its `output` blob to the
/// output real Caffe computed.
fn check_opencv_layer(f: &Fixture) {
    let LoadedFixture { model, input, expected } = load_fixture(f);
    let net = model.net::<f32>(input.shape[0]).unwrap();
    let mut st = net.state().unwrap();
    net.forward(&mut st, &[&input.data]).unwrap();
    let out = net.plan.layer_output("output").unwrap();
    assert_matches_caffe(f, "on the CPU", &net.plan.blobs[out].shape, st.value(out), &expected);
}

/// Grouped convolution and deconvolution, the inner product on axis 3, padded max and
/// average pooling, LRN across and within channels, softmax: every fixture in the ops' tables.
#[test]
fn every_op_fixture_matches_caffe() {
    let all = cases::fixtures();
    for f in &all {
        check_opencv_layer(f);
    }
    let families: std::collections::BTreeSet<&str> = all.iter().map(|f| f.family).collect();
    assert_eq!(families.into_iter().collect::<Vec<_>>(), ["conv", "inner_product", "lrn", "pool", "softmax"]);
}

#[test]
fn every_opencv_fixture_net_is_in_an_op_table() {
    let listed: Vec<&str> = cases::fixtures().iter().map(|f| f.name).collect();
    let mut shipped = Vec::new();
    for entry in std::fs::read_dir(fixture("caffe/opencv_layers")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".prototxt") {
            shipped.push(stem.to_string());
        }
    }
    assert_eq!(shipped.len(), 8);
    for stem in &shipped {
        assert!(listed.contains(&stem.as_str()), "{stem}.prototxt is in no op's FIXTURES");
    }
}

fn lenet_probabilities(dir: &str) -> Vec<f32> {
    let m = convert::load(&fixture(&format!("caffe/{dir}/lenet.prototxt")), &fixture(&format!("caffe/{dir}/lenet_iter_10000.caffemodel")))
        .unwrap();
    let pre = Preprocess { order: ChannelOrder::Bgr, mean: Mean::None, scale: 0.00390625, std: None };
    let x = load_image(&fixture("caffe/lenet_mnist/mnist_sample_image.png"), 1, 28, 28, &pre).unwrap();
    let net = m.net::<f32>(1).unwrap();
    let mut st = net.state().unwrap();
    net.forward(&mut st, &[&x.data]).unwrap();
    st.value(net.plan.layer_output("prob").unwrap()).clone()
}

#[test]
fn lenet_new_format_reads_the_sample_digit_as_zero() {
    let p = lenet_probabilities("lenet_mnist");
    assert_eq!(p.len(), 10);
    assert_eq!(argmax(&p), 0, "probabilities {p:?}");
    assert!(p[0] > 0.999, "p(0) = {}", p[0]);
}

#[test]
fn lenet_v1_format_reads_the_sample_digit_as_zero() {
    let p = lenet_probabilities("lenet_mnist_v1");
    assert_eq!(argmax(&p), 0, "probabilities {p:?}");
    assert!(p[0] > 0.999, "p(0) = {}", p[0]);
}

#[test]
fn cifar10_v1_and_new_prototxts_give_identical_outputs() {
    let model = fixture("caffe/cifar10_quick_v1/cifar10_quick_iter_5000.caffemodel");
    let v1 = convert::load(&fixture("caffe/cifar10_quick_v1/cifar10_quick.prototxt"), &model).unwrap();
    let new = convert::load(&fixture("caffe/cifar10_quick_v1/cifar10_quick_newformat.prototxt"), &model).unwrap();
    let mut rng = dgnam::rng::Rng::new(3);
    let x: Vec<f32> = (0..2 * 3 * 32 * 32).map(|_| rng.uniform(-120.0, 120.0) as f32).collect();
    let mut outs = Vec::new();
    for m in [&v1, &new] {
        let net = m.net::<f32>(2).unwrap();
        let mut st = net.state().unwrap();
        net.forward(&mut st, &[&x]).unwrap();
        let last = net.plan.last_output();
        assert_eq!(net.plan.blobs[last].shape, vec![2, 10]);
        outs.push(st.value(last).clone());
    }
    assert_eq!(outs[0], outs[1]);
    let sum: f32 = outs[0][..10].iter().sum();
    assert!((sum - 1.0).abs() < 1e-5, "softmax sums to {sum}");
}
