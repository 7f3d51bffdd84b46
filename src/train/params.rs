//! A trained net's weights live on the host (what Adam updates and checkpoints store);
//! these move them to and from the net on its device.

use crate::device::Cpu;
use crate::graph::{CpuNet, Net, Plan, State};
use crate::ops::Kernels;
use anyhow::Result;

/// A net on `device` with `params` (one vector per parameter blob, in plan order).
pub fn net_from_host<B: Kernels<Scalar = f32>>(plan: Plan, device: B, params: &[Vec<f32>]) -> Result<Net<B>> {
    let mut next = params.iter();
    Net::new(plan, device, |dev, spec| {
        let v = next.next().ok_or_else(|| anyhow::anyhow!("no weights given for layer '{}'", spec.layer))?;
        Ok((dev.param_from_host(v)?, v.len()))
    })
}

/// Host copies of a CPU net's weights, in plan order.
pub fn host_params(net: &CpuNet<f32>) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for (i, node) in net.plan.nodes.iter().enumerate() {
        out.extend((0..node.params.len()).map(|j| net.param(i, j).to_vec()));
    }
    out
}

/// Replaces every weight of `net` with `params`.
pub fn set_params<B: Kernels<Scalar = f32>>(net: &mut Net<B>, params: &[Vec<f32>]) -> Result<()> {
    let mut k = 0;
    for i in 0..net.plan.nodes.len() {
        for j in 0..net.plan.nodes[i].params.len() {
            *net.param_mut(i, j) = net.backend.param_from_host(&params[k])?;
            k += 1;
        }
    }
    Ok(())
}

/// The weight gradients of the last `backward(.., weight_grads = true)`, in plan order
/// (zeros for a layer the seeds did not reach).
pub fn weight_grads<B: Kernels<Scalar = f32>>(net: &Net<B>, st: &State<B>) -> Result<Vec<Vec<f32>>> {
    let mut grads = Vec::new();
    for (i, node) in net.plan.nodes.iter().enumerate() {
        let have = &st.param_grads[i];
        for (j, spec) in node.params.iter().enumerate() {
            grads.push(if have.len() == node.params.len() { net.backend.download(&have[j])? } else { vec![0.0; spec.len()] });
        }
    }
    Ok(grads)
}

/// The seeded starting weights of a net file (a `.dgnw`'s own, a prototxt's random ones).
pub fn initial(source: &crate::io::NetSource, seed: u64) -> Result<Vec<Vec<f32>>> {
    Ok(host_params(&source.build(1, seed, Cpu::<f32>::new())?))
}
