//! The f64 finite-difference check of a net on the CPU reference: every input's data
//! gradient and every parameter's gradient of `sum over outputs of (y * r)` against central
//! differences, on a sample of coordinates. The ops' case tables (`tests/op_cases.rs`) and
//! `dgnam gradcheck` (one layer at a time, and the whole net) run through here.

use crate::device::Cpu;
use crate::graph::{BlobId, Net, State};
use crate::ops::gradcheck::{central_differences, sample, Outcome, Rng};
use anyhow::{Context, Result};

type CpuF64<'w> = Net<Cpu<'w, f64>>;

/// How the check samples and steps.
#[derive(Clone, Copy, Debug)]
pub struct Fd {
    /// The central differences' step.
    pub eps: f64,
    /// The pass threshold on the relative error.
    pub tolerance: f64,
    /// At most about this many coordinates per input (every one when there are fewer).
    pub data_samples: usize,
    /// The same per parameter blob.
    pub param_samples: usize,
}

/// Which blob a check is about.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// The gradient of the net's input `k`.
    Input(usize),
    /// The gradient of parameter `index` of node `node`.
    Param { node: usize, index: usize },
}

/// The check of one blob's gradient.
#[derive(Clone, Debug)]
pub struct BlobCheck {
    pub part: Part,
    pub shape: Vec<usize>,
    pub outcome: Outcome,
    /// Whether the analytic gradient has a nonzero entry (else a passing check says little).
    pub nonzero: bool,
}

/// The root mean square: the scale relative errors are taken against.
fn rms(v: &[f64]) -> f64 {
    (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// `sum_k (y_k - y0_k) . r_k` over the seeded outputs after a forward pass: the loss less
/// its value at the unmoved point, so outputs a step does not reach add exactly nothing.
fn shifted_loss<'w>(
    net: &CpuF64<'w>,
    st: &mut State<Cpu<'w, f64>>,
    inputs: &[Vec<f64>],
    seeds: &[(BlobId, Vec<f64>)],
    y0: &[Vec<f64>],
) -> Result<f64> {
    let refs: Vec<&[f64]> = inputs.iter().map(Vec::as_slice).collect();
    net.forward(st, &refs)?;
    Ok(seeds.iter().zip(y0).map(|((id, r), y0)| st.value(*id).iter().zip(y0).zip(r).map(|((y, y0), r)| (y - y0) * r).sum::<f64>()).sum())
}

/// Checks the gradients of `sum over seeds (output * r)` with respect to every input and
/// every parameter of `net` at `inputs` (BatchNorm's scale factor, a stored constant, is not
/// a weight and is left out).
pub fn check_net(net: &mut CpuF64, inputs: &[Vec<f64>], seeds: &[(BlobId, Vec<f64>)], fd: &Fd, rng: &mut Rng) -> Result<Vec<BlobCheck>> {
    let refs: Vec<&[f64]> = inputs.iter().map(Vec::as_slice).collect();
    let mut grads = net.state()?;
    net.forward(&mut grads, &refs)?;
    let y0: Vec<Vec<f64>> = seeds.iter().map(|(id, _)| grads.value(*id).clone()).collect();
    let seed_refs: Vec<(BlobId, &[f64])> = seeds.iter().map(|(id, r)| (*id, r.as_slice())).collect();
    net.backward(&mut grads, &seed_refs, true)?;
    let mut st = net.state()?;
    let mut checks = Vec::new();
    for (k, &id) in net.plan.inputs.iter().enumerate() {
        let len = net.plan.blobs[id].len();
        let analytic = grads.grad(id).cloned().unwrap_or_else(|| vec![0.0; len]);
        let entries = sample(len, fd.data_samples, &analytic, rng);
        let mut moved = inputs.to_vec();
        let outcome = central_differences(&analytic, entries, fd.eps, rms(&analytic), fd.tolerance, |change| {
            if let Some((i, d)) = change {
                moved[k][i] = inputs[k][i] + d;
            }
            let l = shifted_loss(net, &mut st, &moved, seeds, &y0);
            if let Some((i, _)) = change {
                moved[k][i] = inputs[k][i];
            }
            l
        })?;
        let nonzero = analytic.iter().any(|&g| g != 0.0);
        checks.push(BlobCheck { part: Part::Input(k), shape: net.plan.blobs[id].shape.clone(), outcome, nonzero });
    }
    for node in 0..net.plan.nodes.len() {
        for index in 0..net.plan.nodes[node].params.len() {
            if net.plan.nodes[node].type_name == "BatchNorm" && index == 2 {
                continue;
            }
            let shape = net.plan.nodes[node].params[index].shape.clone();
            let analytic = grads.param_grads[node].get(index).context("the backward pass left no weight gradient")?;
            let entries = sample(analytic.len(), fd.param_samples, analytic, rng);
            let outcome = central_differences(analytic, entries, fd.eps, rms(analytic), fd.tolerance, |change| {
                let Some((i, d)) = change else {
                    return shifted_loss(net, &mut st, inputs, seeds, &y0);
                };
                let old = net.param_mut(node, index)[i];
                net.param_mut(node, index)[i] = old + d;
                let l = shifted_loss(net, &mut st, inputs, seeds, &y0);
                net.param_mut(node, index)[i] = old;
                l
            })?;
            let nonzero = analytic.iter().any(|&g| g != 0.0);
            checks.push(BlobCheck { part: Part::Param { node, index }, shape, outcome, nonzero });
        }
    }
    Ok(checks)
}

/// Checks the gradient of one output entry (`blob`, flat `offset`) with respect to the
/// net's first input at `inputs`, on about `samples` of its coordinates.
pub fn check_unit(net: &CpuF64, inputs: &[Vec<f64>], blob: BlobId, offset: usize, fd: &Fd, rng: &mut Rng) -> Result<BlobCheck> {
    let mut seed = vec![0.0; net.plan.blobs[blob].len()];
    seed[offset] = 1.0;
    let seeds = [(blob, seed)];
    let refs: Vec<&[f64]> = inputs.iter().map(Vec::as_slice).collect();
    let mut st = net.state()?;
    net.forward(&mut st, &refs)?;
    let y0 = vec![st.value(blob).clone()];
    net.backward(&mut st, &[(blob, &seeds[0].1)], false)?;
    let input = net.plan.inputs[0];
    let len = net.plan.blobs[input].len();
    let analytic = st.grad(input).cloned().unwrap_or_else(|| vec![0.0; len]);
    let entries = sample(len, fd.data_samples, &analytic, rng);
    let mut moved = inputs.to_vec();
    let outcome = central_differences(&analytic, entries, fd.eps, rms(&analytic), fd.tolerance, |change| {
        if let Some((i, d)) = change {
            moved[0][i] = inputs[0][i] + d;
        }
        let l = shifted_loss(net, &mut st, &moved, &seeds, &y0);
        if let Some((i, _)) = change {
            moved[0][i] = inputs[0][i];
        }
        l
    })?;
    let nonzero = analytic.iter().any(|&g| g != 0.0);
    Ok(BlobCheck { part: Part::Input(0), shape: net.plan.blobs[input].shape.clone(), outcome, nonzero })
}
