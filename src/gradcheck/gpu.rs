//! Each layer forward and backward on another device (the GPU) against the CPU reference in
//! f32, from the same inputs: the CPU's own forward values of the layer's bottoms, a random
//! output gradient, zeroed input and weight gradients. Generic over the other device, so the
//! comparison itself runs (against a second CPU backend) where there is no GPU.

use crate::device::Cpu;
use crate::graph::{CpuNet, Net, Op, State};
use crate::ops::{self, Kernels};
use crate::rng::Rng;
use anyhow::Result;

/// SPEC section 6, per blob: `|gpu - cpu| <= REL * max|cpu| + ABS` in f32.
pub const REL: f64 = 1e-4;
pub const ABS: f64 = 1e-5;

/// How far one blob (or the worst of several) is from the CPU's.
#[derive(Clone, Debug, PartialEq)]
pub struct Diff {
    /// `max |gpu - cpu| / max |cpu|` (the plain `max |gpu - cpu|` where the CPU's blob is zero).
    pub err: f64,
    pub pass: bool,
    /// Which blob and where its largest difference is.
    pub worst: String,
}

impl Diff {
    const NONE: Diff = Diff { err: 0.0, pass: true, worst: String::new() };

    /// `got` (the other device's) against `want` (the CPU's); NaN matches only NaN.
    pub fn of(got: &[f32], want: &[f32], what: &str) -> Diff {
        let scale = want.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        let (mut diff, mut at) = (0f64, 0usize);
        for (i, (&g, &c)) in got.iter().zip(want).enumerate() {
            let d = if g.is_nan() || c.is_nan() {
                if g.is_nan() && c.is_nan() {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                (g as f64 - c as f64).abs()
            };
            if d > diff {
                (diff, at) = (d, i);
            }
        }
        let pass = got.len() == want.len() && diff <= REL * scale + ABS;
        let err = if scale > 0.0 { diff / scale } else { diff };
        let worst = match (got.get(at), want.get(at)) {
            (Some(g), Some(c)) if got.len() == want.len() => format!("{what} at index {at}: gpu {g} vs cpu {c}"),
            _ => format!("{what}: {} values vs {}", got.len(), want.len()),
        };
        Diff { err, pass, worst }
    }

    /// The worse of the two (a failure before a larger error that passes).
    pub fn worse(self, other: Diff) -> Diff {
        if (other.pass, -other.err) < (self.pass, -self.err) {
            other
        } else {
            self
        }
    }
}

/// One layer on both devices.
#[derive(Clone, Debug)]
pub struct Compared {
    pub forward: Diff,
    /// None for layers that only copy their data (Dropout, Reshape, Flatten, Split): the
    /// graph, not the layer, moves their gradients.
    pub backward: Option<Diff>,
}

/// Random inputs for every input of `cpu`, and its forward pass on them: the values each
/// layer's comparison starts from.
pub fn reference<'w>(cpu: &CpuNet<'w, f32>, rng: &mut Rng) -> Result<State<Cpu<'w, f32>>> {
    let inputs: Vec<Vec<f32>> = cpu.plan.inputs.iter().map(|&i| random(rng, cpu.plan.blobs[i].len())).collect();
    let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let mut st = cpu.state()?;
    cpu.forward(&mut st, &refs)?;
    Ok(st)
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.uniform_vec(n, -1.0, 1.0).into_iter().map(|v| v as f32).collect()
}

/// Node `i` forward and backward on `other` (the same plan and weights as `cpu`) against
/// the CPU, from the CPU's values `cs` of its bottoms.
pub fn compare_node<G: Kernels<Scalar = f32>>(
    cpu: &CpuNet<f32>,
    cs: &State<Cpu<'_, f32>>,
    other: &Net<G>,
    i: usize,
    rng: &mut Rng,
) -> Result<Compared> {
    let node = &cpu.plan.nodes[i];
    let (cb, gb) = (&cpu.backend, &other.backend);
    let upload = |v: &[f32]| -> Result<G::Buf> {
        let mut b = gb.alloc(v.len())?;
        gb.upload(&mut b, v)?;
        Ok(b)
    };
    let xs: Vec<&Vec<f32>> = node.bottoms.iter().map(|&b| cs.value(b)).collect();
    let gx = xs.iter().map(|x| upload(x)).collect::<Result<Vec<_>>>()?;
    let gx_refs: Vec<&G::Buf> = gx.iter().collect();
    let lens: Vec<usize> = node.tops.iter().map(|&t| cpu.plan.blobs[t].len()).collect();
    let mut cy: Vec<Vec<f32>> = lens.iter().map(|&n| vec![0.0; n]).collect();
    let mut gy = lens.iter().map(|&n| gb.alloc(n)).collect::<Result<Vec<_>>>()?;
    let (mut caux, mut gaux) = (Default::default(), Default::default());
    ops::forward(cb, &node.op, cpu.node_params(i), &xs, &mut cy, &mut caux)?;
    ops::forward(gb, &node.op, other.node_params(i), &gx_refs, &mut gy, &mut gaux)?;
    let mut forward = Diff::NONE;
    for (t, (g, c)) in gy.iter().zip(&cy).enumerate() {
        forward = forward.worse(Diff::of(&gb.download(g)?, c, &format!("forward, top {t}")));
    }
    if let Op::Copy = node.op {
        return Ok(Compared { forward, backward: None });
    }
    let dy: Vec<Vec<f32>> = cy.iter().map(|c| random(rng, c.len())).collect();
    let gdy = dy.iter().map(|d| upload(d)).collect::<Result<Vec<_>>>()?;
    let gy0 = upload(&cy[0])?;
    let (dy, gdy): (Vec<&Vec<f32>>, Vec<&G::Buf>) = (dy.iter().collect(), gdy.iter().collect());
    let mut cdx: Vec<Vec<f32>> = xs.iter().map(|x| vec![0.0; x.len()]).collect();
    let mut cdp: Vec<Vec<f32>> = node.params.iter().map(|p| vec![0.0; p.len()]).collect();
    let mut gdx = cdx.iter().map(|v| gb.alloc(v.len())).collect::<Result<Vec<_>>>()?;
    let mut gdp = cdp.iter().map(|v| gb.alloc(v.len())).collect::<Result<Vec<_>>>()?;
    ops::backward(cb, &node.op, cpu.node_params(i), &xs, &cy[0], &dy, &caux, &mut cdx, Some(&mut cdp))?;
    ops::backward(gb, &node.op, other.node_params(i), &gx_refs, &gy0, &gdy, &gaux, &mut gdx, Some(&mut gdp))?;
    let mut backward = Diff::NONE;
    for (b, (g, c)) in gdx.iter().zip(&cdx).enumerate() {
        backward = backward.worse(Diff::of(&gb.download(g)?, c, &format!("backward, gradient of bottom {b}")));
    }
    for (p, (g, c)) in gdp.iter().zip(&cdp).enumerate() {
        backward = backward.worse(Diff::of(&gb.download(g)?, c, &format!("backward, gradient of parameter {p}")));
    }
    Ok(Compared { forward, backward: Some(backward) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tolerance_is_specs_per_blob_bound() {
        let cpu = [1.0f32, -2.0, 0.5];
        assert_eq!(Diff::of(&cpu, &cpu, "same"), Diff { err: 0.0, pass: true, worst: "same at index 0: gpu 1 vs cpu 1".into() });
        // 1e-4 * 2 + 1e-5 = 2.1e-4 allowed.
        assert!(Diff::of(&[1.0002, -2.0, 0.5], &cpu, "x").pass);
        let d = Diff::of(&[1.0, -2.0, 0.5003], &cpu, "x");
        assert!(!d.pass && (d.err - 1.5e-4).abs() < 1e-6 && d.worst.contains("index 2"), "{d:?}");
        assert!(!Diff::of(&[1.0, f32::NAN, 0.5], &cpu, "x").pass);
        assert!(Diff::of(&[f32::NAN], &[f32::NAN], "x").pass);
        assert!(Diff::of(&[1e-6], &[0.0], "x").pass && !Diff::of(&[1e-4], &[0.0], "x").pass);
        assert!(!Diff::of(&[1.0], &cpu, "x").pass);
        // The worse of two: a failure wins over a larger passing error.
        let (fail, big) = (Diff { err: 1e-6, pass: false, worst: "a".into() }, Diff { err: 1e-5, pass: true, worst: "b".into() });
        assert_eq!(big.clone().worse(fail.clone()).worst, "a");
        assert_eq!(fail.worse(big).worst, "a");
    }
}
