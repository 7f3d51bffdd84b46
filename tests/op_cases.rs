//! Every case of every op family (`dgnam::ops::cases`), in f64 on the CPU: the data gradient
//! and every weight gradient against central finite differences of `sum(output * r)` for a
//! random `r`, with random inputs and random weights. The geometries of the Caffe fixtures
//! (`cases::fixtures()`) get the same check, on a sample of their larger inputs.

mod common;

use common::{fixture_prototxt, NodeRun};
use dgnam::caffe::netdef::parse_netdef;
use dgnam::device::Cpu;
use dgnam::gradcheck::numeric::{check_net, Fd, Part};
use dgnam::graph::{Net, Op};
use dgnam::ops::cases::{self, Case};
use dgnam::ops::gradcheck::{check, EPS, TOLERANCE};
use dgnam::ops::{self, Dx};
use dgnam::rng::Rng;

/// Entries checked per weight array and per fixture input (each costs two forward passes).
const MAX_ENTRIES: usize = 200;

fn check_case(case: &Case, seed: u64) {
    let label = format!("{} case `{}`", case.family, case.layers.split_whitespace().collect::<Vec<_>>().join(" "));
    check_one(&label, &case.prototxt(), seed, false);
}

/// The f64 check of one net (`dgnam::gradcheck::numeric::check_net`, as `dgnam gradcheck`
/// runs it on each layer): the data gradient at every entry (or at a sample, with
/// `sample_input`) and a sample of every weight gradient, at batch 2.
fn check_one(label: &str, prototxt: &str, seed: u64, sample_input: bool) {
    let def = parse_netdef(prototxt).unwrap_or_else(|e| panic!("{label}: {e:#}"));
    let mut net = Net::random(&def, 2, seed, Cpu::<f64>::new()).unwrap();
    let mut rng = Rng::new(seed + 1);
    let inputs: Vec<Vec<f64>> = net.plan.inputs.iter().map(|&i| rng.uniform_vec(net.plan.blobs[i].len(), -1.0, 1.0)).collect();
    let out = net.plan.last_output();
    let seeds = [(out, rng.uniform_vec(net.plan.blobs[out].len(), -1.0, 1.0))];
    let data_samples = if sample_input { MAX_ENTRIES } else { usize::MAX };
    let fd = Fd { eps: EPS, tolerance: TOLERANCE, data_samples, param_samples: MAX_ENTRIES };
    let checks = check_net(&mut net, &inputs, &seeds, &fd, &mut rng).unwrap_or_else(|e| panic!("{label}: {e:#}"));
    assert!(checks.iter().any(|c| c.part == Part::Input(0)), "{label}: the data gradient was not checked");
    for c in &checks {
        let what = match &c.part {
            Part::Input(k) => format!("data gradient of input {k}"),
            Part::Param { node, index } => {
                format!("layer '{}' weight gradient {index} ({} values)", net.plan.nodes[*node].layer, c.shape.iter().product::<usize>())
            }
        };
        if let Some(w) = c.outcome.worst.filter(|_| !c.outcome.passes(TOLERANCE)) {
            panic!(
                "{label}: {what}: gradient mismatch at index {}: finite difference {} vs analytic {} (rel err {:e})",
                w.index, w.numeric, w.analytic, w.rel_err
            );
        }
        assert!(c.nonzero, "{label}: {what}: gradient is all zero, the check is vacuous");
        assert!(c.outcome.checked > c.outcome.kinks, "{label}: {what}: most coordinates sit at kinks ({c:?})");
    }
}

#[test]
fn every_op_case_passes_the_f64_gradient_check() {
    let all = cases::all();
    assert!(all.len() >= 30, "the case tables shrank to {}", all.len());
    for (k, case) in all.iter().enumerate() {
        check_case(case, 100 + k as u64);
    }
}

#[test]
fn every_caffe_fixture_geometry_passes_the_f64_gradient_check() {
    let all = cases::fixtures();
    assert!(all.len() >= 8, "the fixture tables shrank to {}", all.len());
    for (k, f) in all.iter().enumerate() {
        check_one(&format!("{} fixture {}", f.family, f.name), &fixture_prototxt(f), 300 + k as u64, true);
    }
}

#[test]
fn the_gradient_check_catches_a_wrong_gradient() {
    // The same check on a deliberately wrong analytic gradient must fail.
    let result = std::panic::catch_unwind(|| {
        let x = [0.3f64, -0.7, 1.1];
        let wrong = [2.0 * 0.3, -2.0 * 0.7, 2.0 * 1.1 + 1e-3];
        check("x^2 with one entry off", &x, &wrong, |xp| xp.iter().map(|v| v * v).sum());
    });
    assert!(result.is_err());
}

/// Each op's backward pass told to overwrite its data gradients (`Dx::Overwrite`, what the
/// graph asks of the first layer to reach a blob) writes into buffers full of NaN exactly
/// what it adds into zeroed ones; with only the first gradient overwritten, the others still
/// add. Returns the nodes checked.
fn overwriting_matches_adding_to_zero(label: &str, prototxt: &str) -> usize {
    let def = parse_netdef(prototxt).unwrap_or_else(|e| panic!("{label}: {e:#}"));
    let net = Net::random(&def, 2, 5, Cpu::<f32>::new()).unwrap();
    let (plan, b) = (&net.plan, &net.backend);
    let mut rng = Rng::new(6);
    let mut checked = 0;
    for (i, node) in plan.nodes.iter().enumerate() {
        if matches!(node.op, Op::Copy) || node.bottoms.is_empty() {
            continue;
        }
        let run = NodeRun::new(&net, i, &mut rng);
        let (x, y, dy, aux) = (run.x(), &run.y, run.dy(), &run.aux);
        let filled = |v: f32| -> Vec<Vec<f32>> { node.bottoms.iter().map(|&id| vec![v; plan.blobs[id].len()]).collect() };
        let p = net.node_params(i);
        let mut added = filled(0.0);
        ops::backward(b, &node.op, p, &x, &y[0], &dy, aux, &mut added, None).unwrap();
        let mut ways = vec![vec![Dx::Overwrite; node.bottoms.len()]];
        if node.bottoms.len() > 1 {
            ways.push((0..node.bottoms.len()).map(|k| if k == 0 { Dx::Overwrite } else { Dx::Add }).collect());
        }
        for to in ways {
            let mut written = filled(f32::NAN);
            for (w, t) in written.iter_mut().zip(&to) {
                if *t == Dx::Add {
                    w.fill(0.0);
                }
            }
            ops::backward_into(b, &node.op, p, &x, &y[0], &dy, aux, &mut written, &to, None).unwrap();
            for (k, (w, a)) in written.iter().zip(&added).enumerate() {
                if let Some(j) = (0..w.len()).find(|&j| w[j] != a[j]) {
                    panic!("{label}: layer '{}' ({to:?}), gradient {k}[{j}]: {} written, {} added", node.layer, w[j], a[j]);
                }
            }
        }
        checked += 1;
    }
    checked
}

#[test]
fn backward_passes_that_overwrite_their_gradients_write_what_they_would_add_to_zero() {
    let mut checked = 0;
    for case in cases::all() {
        checked += overwriting_matches_adding_to_zero(case.family, &case.prototxt());
    }
    // Shapes the cases are too small for: Winograd's convolution and deconvolution (with
    // fused ReLUs), a 1x1 convolution, a concatenation.
    checked += overwriting_matches_adding_to_zero(
        "winograd",
        r#"name: "w"
input: "data"
input_shape { dim: 2 dim: 32 dim: 38 dim: 41 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 40 kernel_size: 3 pad: 1 } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "d2" type: "Deconvolution" bottom: "c1" top: "d2" convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
layer { name: "r2" type: "ReLU" bottom: "d2" top: "d2" relu_param { negative_slope: 0.2 } }
layer { name: "p" type: "Convolution" bottom: "d2" top: "p" convolution_param { num_output: 16 kernel_size: 1 } }
layer { name: "cat" type: "Concat" bottom: "p" bottom: "d2" top: "cat" }
layer { name: "s" type: "Scale" bottom: "cat" top: "s" scale_param { bias_term: true } }
"#,
    );
    assert!(checked >= 40, "only {checked} nodes checked");
}
