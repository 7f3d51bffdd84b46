//! DGN-AM's objectives against f64 central differences: the value and gradient of the
//! paper's two-unit objective (eq. 2), and the whole loop's d objective / d code through a
//! small generator, the center crop and a small classifier, for one unit's activation, for
//! eq. 2 and for `--objective prob` (the unit's softmax probability).

use dgnam::caffe::netdef::parse_netdef;
use dgnam::device::Cpu;
use dgnam::graph::Net;
use dgnam::rng::Rng;
use dgnam::synth::dgn::{center_crop_offset, Dgn, Objective, Schedule};
use dgnam::synth::kernels::DgnKernels;

const GENERATOR: &str = "name: 'g' input: 'code' input_shape { dim: 1 dim: 6 }
layer { name: 'fc' type: 'InnerProduct' bottom: 'code' top: 'fc' inner_product_param { num_output: 75 } }
layer { name: 'r' type: 'Reshape' bottom: 'fc' top: 'r' reshape_param { shape { dim: 1 dim: 3 dim: 5 dim: 5 } } }
layer { name: 'relu' type: 'ReLU' bottom: 'r' top: 'r' relu_param { negative_slope: 0.3 } }
layer { name: 'conv' type: 'Convolution' bottom: 'r' top: 'img' convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }";

const CLASSIFIER: &str = "name: 'c' input: 'data' input_shape { dim: 1 dim: 3 dim: 3 dim: 3 }
layer { name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv' convolution_param { num_output: 4 kernel_size: 2 } }
layer { name: 'relu' type: 'ReLU' bottom: 'conv' top: 'conv' }
layer { name: 'fc' type: 'InnerProduct' bottom: 'conv' top: 'fc' inner_product_param { num_output: 3 } }
layer { name: 'prob' type: 'Softmax' bottom: 'fc' top: 'prob' }";

type Net64 = Net<Cpu<'static, f64>>;

fn nets(seed: u64) -> (Net64, Net64) {
    let g = Net::random(&parse_netdef(GENERATOR).unwrap(), 1, seed, Cpu::new()).unwrap();
    let c = Net::random(&parse_netdef(CLASSIFIER).unwrap(), 1, seed + 1, Cpu::new()).unwrap();
    (g, c)
}

/// The objective of `code` computed directly: G, the center crop, the classifier.
fn objective_of(g: &Net64, c: &Net64, blob: &str, obj: &Objective, code: &[f64]) -> f64 {
    let mut gs = g.state().unwrap();
    g.forward(&mut gs, &[code]).unwrap();
    let img = gs.value(g.plan.last_output());
    let mut crop = vec![0.0; 27];
    let offset = center_crop_offset([5, 5], [3, 3]);
    c.backend.crop(img, [1, 3, 5, 5], offset, [3, 3], &mut crop).unwrap();
    let mut cs = c.state().unwrap();
    c.forward(&mut cs, &[&crop]).unwrap();
    obj.value(cs.value(c.plan.layer_output(blob).unwrap()))
}

/// Finite differences of the objective in the code.
fn numeric_gradient(g: &Net64, c: &Net64, blob: &str, obj: &Objective, code: &[f64]) -> Vec<f64> {
    let eps = 1e-6;
    (0..code.len())
        .map(|i| {
            let mut p = code.to_vec();
            p[i] += eps;
            let up = objective_of(g, c, blob, obj, &p);
            p[i] -= 2.0 * eps;
            let down = objective_of(g, c, blob, obj, &p);
            (up - down) / (2.0 * eps)
        })
        .collect()
}

/// Two iterations of the loop with a constant step of 1, no bounds and no decay: the code it
/// reports is `code + g / mean|g|`, so the loop's own normalized gradient is the difference.
fn check_loop_gradient(blob: &str, obj: Objective, seed: u64) {
    let (g, c) = nets(seed);
    let mut rng = Rng::new(seed + 7);
    let code: Vec<f64> = rng.uniform_vec(6, 0.2, 1.5);
    let id = c.plan.layer_output(blob).unwrap();
    let mut dgn = Dgn::new(&g, &c, id, None).unwrap();
    let schedule = Schedule { iters: 2, lr: 1.0, lr_end: 1.0, decay: 1.0 };
    let r = dgn.run(&code, std::slice::from_ref(&obj), &schedule, None, &mut |_| {}).unwrap();
    assert!(r.failed[0].is_none() && r.stopped_at[0].is_none(), "{blob} {obj:?}: the loop stopped");
    let looped: Vec<f64> = r.codes[0].iter().zip(&code).map(|(a, b)| a - b).collect();
    let numeric = numeric_gradient(&g, &c, blob, &obj, &code);
    let mean_abs = numeric.iter().map(|v| v.abs()).sum::<f64>() / numeric.len() as f64;
    assert!(mean_abs > 1e-8, "{blob} {obj:?}: the objective does not depend on the code");
    for (i, (l, n)) in looped.iter().zip(&numeric).enumerate() {
        let want = n / mean_abs;
        assert!((l - want).abs() <= 1e-5 * (1.0 + want.abs()), "{blob} {obj:?}: code entry {i}: loop step {l}, finite differences {want}");
    }
    // The objective the loop reported at its first iteration is the one computed directly.
    let direct = objective_of(&g, &c, blob, &obj, &code);
    assert!((r.activations[0][0] - direct).abs() <= 1e-9 * (1.0 + direct.abs()), "{blob} {obj:?}: {} vs {direct}", r.activations[0][0]);
}

#[test]
fn one_unit_through_generator_crop_and_classifier() {
    check_loop_gradient("fc", Objective::Single(1), 11);
}

#[test]
fn the_two_unit_objective_through_the_whole_loop() {
    check_loop_gradient("fc", Objective::Pair { a: 0, b: 2, gamma: 0.5 }, 12);
}

#[test]
fn the_probability_objective_through_the_whole_loop() {
    check_loop_gradient("prob", Objective::Single(2), 13);
}

#[test]
fn the_two_unit_objective_value_and_gradient() {
    let mut rng = Rng::new(5);
    for gamma in [0.0, 0.3, 1.0, 2.5] {
        for _ in 0..20 {
            let row: Vec<f64> = rng.uniform_vec(4, -2.0, 2.0);
            let obj = Objective::Pair { a: 1, b: 3, gamma };
            let (x, y) = (row[1], row[3]);
            assert!((obj.value(&row) - (x + y - gamma * (x - y).abs())).abs() < 1e-12);
            if (x - y).abs() < 1e-3 {
                continue; // the kink of |a1 - a2|
            }
            let mut analytic = vec![0.0; 4];
            obj.gradient(&row, &mut analytic);
            for i in 0..4 {
                let mut p = row.clone();
                p[i] += 1e-6;
                let up = obj.value(&p);
                p[i] -= 2e-6;
                let numeric = (up - obj.value(&p)) / 2e-6;
                assert!((numeric - analytic[i]).abs() < 1e-6, "gamma {gamma}, entry {i}: {numeric} vs {}", analytic[i]);
            }
        }
    }
}
