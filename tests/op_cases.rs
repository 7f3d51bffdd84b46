//! Every case of every op family (`dgnam::ops::cases`), in f64 on the CPU: the data gradient
//! and every weight gradient against central finite differences of `sum(output * r)` for a
//! random `r`, with random inputs and random weights. The geometries of the Caffe fixtures
//! (`cases::fixtures()`) get the same check, on a sample of their larger inputs.

mod common;

use common::fixture_prototxt;
use dgnam::caffe::netdef::parse_netdef;
use dgnam::device::Cpu;
use dgnam::graph::{Net, Plan};
use dgnam::ops::cases::{self, Case};
use dgnam::ops::gradcheck::{check, check_entries, dot};
use dgnam::rng::Rng;
use std::borrow::Cow;

type Params = Vec<Vec<Vec<f64>>>;

/// Entries checked per weight array and per fixture input (each costs two forward passes).
const MAX_ENTRIES: usize = 200;

/// Every entry of `0..n` when there are few; otherwise one random entry in each run of
/// `n / MAX_ENTRIES`, plus the first and the last.
fn sample(n: usize, rng: &mut Rng) -> Vec<usize> {
    let stride = n.div_ceil(MAX_ENTRIES).max(1);
    let mut entries: Vec<usize> = (0..n).step_by(stride).map(|s| s + (rng.next_u64() % stride.min(n - s) as u64) as usize).collect();
    entries.extend([0, n - 1]);
    entries
}

/// A net of the case's plan with exactly these weights.
fn net_with(plan: &Plan, params: &Params) -> Net<Cpu<'static, f64>> {
    let mut flat = params.iter().flatten();
    Net::new(plan.clone(), Cpu::new(), |_, _| {
        let p = flat.next().expect("one array per parameter").clone();
        let n = p.len();
        Ok((Cow::Owned(p), n))
    })
    .unwrap()
}

fn loss(net: &Net<Cpu<'static, f64>>, x: &[f64], r: &[f64]) -> f64 {
    let mut st = net.state().unwrap();
    net.forward(&mut st, &[x]).unwrap();
    dot(st.value(net.plan.last_output()), r)
}

fn check_case(case: &Case, seed: u64) {
    let label = format!("{} case `{}`", case.family, case.layers.split_whitespace().collect::<Vec<_>>().join(" "));
    check_net(&label, &case.prototxt(), seed, false);
}

/// The f64 check of one net: the data gradient at every entry (or at a sample, with
/// `sample_input`) and a sample of every weight gradient.
fn check_net(label: &str, prototxt: &str, seed: u64, sample_input: bool) {
    let def = parse_netdef(prototxt).unwrap_or_else(|e| panic!("{label}: {e:#}"));
    let base = Net::random(&def, 2, seed, Cpu::<f64>::new()).unwrap();
    let plan = base.plan.clone();
    let params: Params = (0..plan.nodes.len()).map(|i| base.node_params(i).iter().map(|p| p.to_vec()).collect()).collect();
    let net = net_with(&plan, &params);
    let mut rng = Rng::new(seed + 1);
    let input = plan.inputs[0];
    let x: Vec<f64> = rng.uniform_vec(plan.blobs[input].len(), -1.0, 1.0);
    let out = plan.last_output();
    let r: Vec<f64> = rng.uniform_vec(plan.blobs[out].len(), -1.0, 1.0);
    let mut st = net.state().unwrap();
    net.forward(&mut st, &[&x]).unwrap();
    net.backward(&mut st, &[(out, &r)], true).unwrap();
    let what = |part: &str| format!("{label}: {part}");
    let dx = st.grad(input).expect("the output depends on the input");
    if sample_input {
        check_entries(&what("data gradient"), &x, dx, sample(x.len(), &mut rng), |xp| loss(&net, xp, &r));
    } else {
        check(&what("data gradient"), &x, dx, |xp| loss(&net, xp, &r));
    }
    for (i, node) in plan.nodes.iter().enumerate() {
        for (j, spec) in node.params.iter().enumerate() {
            // Caffe's BatchNorm scale factor (blob 2) is a constant, not a learned weight.
            if node.type_name == "BatchNorm" && j == 2 {
                continue;
            }
            let analytic = &st.param_grads[i][j];
            let n = spec.len();
            let entries = sample(n, &mut rng);
            check_entries(
                &what(&format!("layer '{}' weight gradient {j} ({n} values)", spec.layer)),
                &params[i][j],
                analytic,
                entries,
                |wp| {
                    let mut p = params.clone();
                    p[i][j] = wp.to_vec();
                    loss(&net_with(&plan, &p), &x, &r)
                },
            );
        }
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
        check_net(&format!("{} fixture {}", f.family, f.name), &fixture_prototxt(f), 300 + k as u64, true);
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
