//! Eltwise SUM, PROD and MAX over equally shaped blobs: the CPU reference.

use super::EltwiseKernels;
// Elements per thread's share of a pass: the CPU's one size for passes over memory.
use crate::device::cpu::PASS_CHUNK as CHUNK;
use crate::device::Cpu;
use crate::ir::EltwiseOp;
use crate::ops::{Aux, Dx};
use crate::real::Real;
use anyhow::Result;
use rayon::prelude::*;

/// Coefficients are per input and only meaningful for SUM; PROD and MAX ignore them.
fn check_eltwise<T>(what: &str, coeffs: &[T], n: usize) {
    assert!(n > 0, "{what}: no inputs");
    assert!(coeffs.is_empty() || coeffs.len() == n, "{what}: {} coefficients for {n} inputs", coeffs.len());
}

/// SUM and PROD run over blocks of this many outputs, one input at a time, so each input's
/// loop vectorizes while the block stays in L1.
const BLOCK: usize = 512;

crate::multiversion! {
/// Eltwise over equally sized inputs. SUM: y = sum coeff_i x_i (coeffs empty = all 1). PROD: product.
/// MAX: max, with `argmax[j]` the winning input. Ties follow Caffe's loop exactly: inputs 0 and 1
/// are compared with `x0 > x1` (a tie goes to 1), each later input wins only when strictly greater.
/// `argmax` is written only for MAX (it may be empty otherwise).
pub fn eltwise_forward<T: Real>(op: EltwiseOp, coeffs: &[T], inputs: &[&[T]], y: &mut [T], argmax: &mut [u32]) {
    let len = y.len();
    check_eltwise("eltwise_forward", coeffs, inputs.len());
    for (i, x) in inputs.iter().enumerate() {
        assert_eq!(x.len(), len, "eltwise_forward: input {i} has {} elements, y has {len}", x.len());
    }
    let coeff = |i: usize| if coeffs.is_empty() { T::ONE } else { coeffs[i] };
    match op {
        // Each output's terms in input order, from 0 (SUM) or from input 0 (PROD).
        EltwiseOp::Sum => {
            for (b, yb) in y.chunks_mut(BLOCK).enumerate() {
                let (at, n) = (b * BLOCK, yb.len());
                yb.fill(T::ZERO);
                for (i, x) in inputs.iter().enumerate() {
                    let c = coeff(i);
                    for (yj, &xj) in yb.iter_mut().zip(&x[at..at + n]) {
                        *yj += c * xj;
                    }
                }
            }
        }
        EltwiseOp::Prod => {
            for (b, yb) in y.chunks_mut(BLOCK).enumerate() {
                let (at, n) = (b * BLOCK, yb.len());
                yb.copy_from_slice(&inputs[0][at..at + n]);
                for x in &inputs[1..] {
                    for (yj, &xj) in yb.iter_mut().zip(&x[at..at + n]) {
                        *yj *= xj;
                    }
                }
            }
        }
        EltwiseOp::Max => {
            assert_eq!(argmax.len(), len, "eltwise_forward: argmax has {} elements, y has {len}", argmax.len());
            for j in 0..len {
                let (mut best, mut val) = match inputs {
                    [a, b, ..] if a[j] > b[j] => (0, a[j]),
                    [_, b, ..] => (1, b[j]), // Caffe's `else`: ties (and NaN) go to input 1
                    [a] => (0, a[j]),
                    [] => unreachable!(),
                };
                for (i, x) in inputs.iter().enumerate().skip(2) {
                    if x[j] > val {
                        (best, val) = (i, x[j]);
                    }
                }
                y[j] = val;
                argmax[j] = best as u32;
            }
        }
    }
}

}

crate::multiversion! {
/// `eltwise_backward` writing the gradients that `to` says to overwrite, for SUM and a
/// two-input PROD with both overwritten; false (nothing written) for the rest.
pub fn eltwise_backward_overwrite<T: Real>(op: EltwiseOp, coeffs: &[T], inputs: &[&[T]], dy: &[T], dxs: &mut [&mut [T]], to: &[Dx]) -> bool {
    match (op, inputs, &mut *dxs, to) {
        (EltwiseOp::Sum, _, _, _) => {
            for (i, dx) in dxs.iter_mut().enumerate() {
                let c = if coeffs.is_empty() { T::ONE } else { coeffs[i] };
                match to[i] {
                    Dx::Add => dx.iter_mut().zip(dy).for_each(|(d, &g)| *d += c * g),
                    Dx::Overwrite => dx.iter_mut().zip(dy).for_each(|(d, &g)| *d = c * g),
                }
            }
            true
        }
        (EltwiseOp::Prod, [a, b], [da, db], [Dx::Overwrite, Dx::Overwrite]) => {
            for ((((da, db), &g), &xa), &xb) in da.iter_mut().zip(db.iter_mut()).zip(dy).zip(*a).zip(*b) {
                *da = g * xb;
                *db = g * xa;
            }
            true
        }
        _ => false,
    }
}
}

crate::multiversion! {
/// Each `dxs[i] +=` its gradient. PROD uses `dy * prod_{j != i} x_j` computed directly, so a zero
/// input gives exact gradients (no division by the output).
pub fn eltwise_backward<T: Real>(op: EltwiseOp, coeffs: &[T], inputs: &[&[T]], argmax: &[u32], dy: &[T], dxs: &mut [&mut [T]]) {
    let len = dy.len();
    check_eltwise("eltwise_backward", coeffs, dxs.len());
    for (i, dx) in dxs.iter().enumerate() {
        assert_eq!(dx.len(), len, "eltwise_backward: gradient {i} has {} elements, dy has {len}", dx.len());
    }
    match op {
        EltwiseOp::Sum => {
            for (i, dx) in dxs.iter_mut().enumerate() {
                let c = if coeffs.is_empty() { T::ONE } else { coeffs[i] };
                for (d, &g) in dx.iter_mut().zip(dy) {
                    *d += c * g;
                }
            }
        }
        EltwiseOp::Prod => {
            assert_eq!(inputs.len(), dxs.len(), "eltwise_backward: {} inputs for {} gradients", inputs.len(), dxs.len());
            for x in inputs {
                assert_eq!(x.len(), len, "eltwise_backward: an input differs in length from dy");
            }
            if let ([a, b], [da, db]) = (inputs, &mut *dxs) {
                // Two inputs (SiLU's x * sigmoid(x), a gate): the same products as below,
                // `dy * x_other`, in straight loops.
                // One pass over dy for both.
                for ((((da, db), &g), &xa), &xb) in da.iter_mut().zip(db.iter_mut()).zip(dy).zip(*a).zip(*b) {
                    *da += g * xb;
                    *db += g * xa;
                }
                return;
            }
            for (i, dx) in dxs.iter_mut().enumerate() {
                for (j, d) in dx.iter_mut().enumerate() {
                    let others = inputs.iter().enumerate().filter(|&(k, _)| k != i).fold(dy[j], |p, (_, x)| p * x[j]);
                    *d += others;
                }
            }
        }
        EltwiseOp::Max => {
            assert_eq!(argmax.len(), len, "eltwise_backward: argmax has {} elements, dy has {len}", argmax.len());
            for (i, dx) in dxs.iter_mut().enumerate() {
                for ((d, &g), &w) in dx.iter_mut().zip(dy).zip(argmax) {
                    if w as usize == i {
                        *d += g;
                    }
                }
            }
        }
    }
}

}

impl<T: Real> EltwiseKernels for Cpu<'_, T> {
    fn eltwise_forward(&self, op: EltwiseOp, coeffs: &[f32], x: &[&Vec<T>], y: &mut Vec<T>, aux: &mut Aux<Self>) -> Result<()> {
        let coeffs: Vec<T> = coeffs.iter().map(|&c| T::from_f32(c)).collect();
        let xs: Vec<&[T]> = x.iter().map(|v| v.as_slice()).collect();
        if op == EltwiseOp::Max {
            let n = y.len();
            eltwise_forward(op, &coeffs, &xs, y, aux.index(self, n)?);
            return Ok(());
        }
        // Elementwise, so splitting it among the threads changes no value.
        y.par_chunks_mut(CHUNK).enumerate().for_each(|(k, yc)| {
            let at = k * CHUNK;
            let parts: Vec<&[T]> = xs.iter().map(|x| &x[at..at + yc.len()]).collect();
            eltwise_forward(op, &coeffs, &parts, yc, &mut []);
        });
        Ok(())
    }

    fn eltwise_backward(
        &self,
        op: EltwiseOp,
        coeffs: &[f32],
        x: &[&Vec<T>],
        aux: &Aux<Self>,
        dy: &Vec<T>,
        dx: &mut [Vec<T>],
    ) -> Result<()> {
        let add = vec![Dx::Add; dx.len()];
        self.eltwise_backward_into(op, coeffs, x, aux, dy, dx, &add)
    }

    // SUM and two-input PROD write the gradients to overwrite; for the rest such a gradient
    // is zeroed chunk by chunk, just before the chunk adds into it while it is in cache.
    fn eltwise_backward_into(
        &self,
        op: EltwiseOp,
        coeffs: &[f32],
        x: &[&Vec<T>],
        aux: &Aux<Self>,
        dy: &Vec<T>,
        dx: &mut [Vec<T>],
        to: &[Dx],
    ) -> Result<()> {
        assert_eq!(to.len(), dx.len(), "eltwise_backward: {} gradients, {} ways to write them", dx.len(), to.len());
        let coeffs: Vec<T> = coeffs.iter().map(|&c| T::from_f32(c)).collect();
        let argmax: &[u32] = if op == EltwiseOp::Max { aux.indices("Eltwise MAX")? } else { &[] };
        let xs: Vec<&[T]> = x.iter().map(|v| v.as_slice()).collect();
        let len = dy.len();
        for (i, d) in dx.iter().enumerate() {
            assert_eq!(d.len(), len, "eltwise_backward: gradient {i} has {} elements, dy has {len}", d.len());
        }
        // The k-th chunk of every gradient, to split the pass among the threads.
        let mut parts: Vec<Vec<&mut [T]>> = (0..len.div_ceil(CHUNK)).map(|_| Vec::with_capacity(dx.len())).collect();
        for d in dx.iter_mut() {
            for (k, c) in d.chunks_mut(CHUNK).enumerate() {
                parts[k].push(c);
            }
        }
        parts.into_par_iter().enumerate().for_each(|(k, mut dxc)| {
            let r = k * CHUNK..(k * CHUNK + CHUNK).min(len);
            let xc: Vec<&[T]> = xs.iter().map(|x| &x[r.clone()]).collect();
            if to.contains(&Dx::Overwrite) && eltwise_backward_overwrite(op, &coeffs, &xc, &dy[r.clone()], &mut dxc, to) {
                return;
            }
            for (c, &t) in dxc.iter_mut().zip(to) {
                if t == Dx::Overwrite {
                    c.fill(T::ZERO);
                }
            }
            let ac = if argmax.is_empty() { argmax } else { &argmax[r.clone()] };
            eltwise_backward(op, &coeffs, &xc, ac, &dy[r], &mut dxc);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{self, Rng};

    fn run(op: EltwiseOp, coeffs: &[f64], xs: &[Vec<f64>]) -> (Vec<f64>, Vec<u32>) {
        let ins: Vec<&[f64]> = xs.iter().map(|v| &v[..]).collect();
        let mut y = vec![0.0; xs[0].len()];
        let mut argmax = vec![u32::MAX; xs[0].len()];
        eltwise_forward(op, coeffs, &ins, &mut y, &mut argmax);
        (y, argmax)
    }

    fn grads(op: EltwiseOp, coeffs: &[f64], xs: &[Vec<f64>], argmax: &[u32], dy: &[f64]) -> Vec<Vec<f64>> {
        let ins: Vec<&[f64]> = xs.iter().map(|v| &v[..]).collect();
        let mut dxs: Vec<Vec<f64>> = xs.iter().map(|v| vec![0.0; v.len()]).collect();
        let mut views: Vec<&mut [f64]> = dxs.iter_mut().map(|v| &mut v[..]).collect();
        eltwise_backward(op, coeffs, &ins, argmax, dy, &mut views);
        dxs
    }

    #[test]
    fn eltwise_forward_by_hand() {
        let xs = vec![vec![1.0, -2.0, 3.0], vec![4.0, 0.0, -1.0], vec![0.5, 2.0, 3.0]];
        assert_eq!(run(EltwiseOp::Sum, &[], &xs).0, [5.5, 0.0, 5.0]);
        assert_eq!(run(EltwiseOp::Sum, &[1.0, -1.0, 2.0], &xs).0, [-2.0, 2.0, 10.0]);
        assert_eq!(run(EltwiseOp::Prod, &[], &xs).0, [2.0, 0.0, -9.0]);
        let (y, argmax) = run(EltwiseOp::Max, &[], &xs);
        assert_eq!(y, [4.0, 2.0, 3.0]);
        // Column 2: input 0 and 2 tie at 3.0; the earlier winner keeps it, as in Caffe.
        assert_eq!(argmax, [1, 2, 0]);
    }

    #[test]
    fn eltwise_max_ties_follow_caffe() {
        // Caffe compares inputs 0 and 1 with `>`, so their tie goes to 1; later inputs need `>`.
        let xs = vec![vec![1.0, 1.0], vec![1.0, 0.0], vec![1.0, 1.0]];
        assert_eq!(run(EltwiseOp::Max, &[], &xs).1, [1, 0]);
    }

    #[test]
    fn eltwise_prod_gradient_exact_with_zero() {
        let xs = vec![vec![0.0, 2.0], vec![3.0, 0.0], vec![5.0, 0.0]];
        let (y, argmax) = run(EltwiseOp::Prod, &[], &xs);
        assert_eq!(y, [0.0, 0.0]);
        let dxs = grads(EltwiseOp::Prod, &[], &xs, &argmax, &[1.0, 1.0]);
        assert_eq!(dxs, vec![vec![15.0, 0.0], vec![0.0, 0.0], vec![0.0, 0.0]]);
        let xs = vec![vec![0.0], vec![3.0], vec![5.0]];
        assert_eq!(grads(EltwiseOp::Prod, &[], &xs, &[0], &[2.0]), vec![vec![30.0], vec![0.0], vec![0.0]]);
    }

    #[test]
    fn gradcheck_eltwise_all_ops_and_accumulation() {
        let mut rng = Rng::new(9);
        let len = 23;
        let xs: Vec<Vec<f64>> = (0..3).map(|_| rng.uniform_vec(len, -2.0, 2.0)).collect();
        let r = rng.uniform_vec(len, -1.0, 1.0);
        let cases: [(EltwiseOp, Vec<f64>); 4] =
            [(EltwiseOp::Sum, vec![0.5, -1.5, 2.0]), (EltwiseOp::Sum, vec![]), (EltwiseOp::Prod, vec![]), (EltwiseOp::Max, vec![])];
        for (op, coeffs) in cases {
            let (_, argmax) = run(op, &coeffs, &xs);
            let dxs = grads(op, &coeffs, &xs, &argmax, &r);
            for i in 0..3 {
                gradcheck::check(&format!("eltwise {op:?} {coeffs:?} input {i}"), &xs[i], &dxs[i], |xp| {
                    let mut ys = xs.clone();
                    ys[i] = xp.to_vec();
                    gradcheck::dot(&run(op, &coeffs, &ys).0, &r)
                });
            }
            // Accumulation: a second backward into the same buffers doubles them.
            let ins: Vec<&[f64]> = xs.iter().map(|v| &v[..]).collect();
            let mut twice = dxs.clone();
            let mut views: Vec<&mut [f64]> = twice.iter_mut().map(|v| &mut v[..]).collect();
            eltwise_backward(op, &coeffs, &ins, &argmax, &r, &mut views);
            for (t, d) in twice.iter().zip(&dxs) {
                for (a, b) in t.iter().zip(d) {
                    assert!((a - 2.0 * b).abs() <= 1e-12, "{op:?}: {a} vs 2 * {b}");
                }
            }
        }
    }

    /// The backend's passes, split among the threads in chunks, give the very bits of the
    /// whole-slice passes, for every op and with more than one chunk and a short last one.
    #[test]
    fn split_passes_match_the_whole_slice_bit_for_bit() {
        let mut rng = Rng::new(9);
        let len = 2 * CHUNK + 1234;
        let cpu = Cpu::<f64>::default();
        let xs: Vec<Vec<f64>> = (0..3).map(|_| rng.uniform_vec(len, -2.0, 2.0)).collect();
        let dy = rng.uniform_vec(len, -1.0, 1.0);
        for (op, coeffs, n) in [
            (EltwiseOp::Sum, vec![0.5, -1.5, 2.0], 3),
            (EltwiseOp::Sum, vec![], 2),
            (EltwiseOp::Prod, vec![], 2),
            (EltwiseOp::Prod, vec![], 3),
            (EltwiseOp::Max, vec![], 3),
        ] {
            let (want_y, argmax) = run(op, &coeffs, &xs[..n]);
            let want_dx = grads(op, &coeffs, &xs[..n], &argmax, &dy);
            let refs: Vec<&Vec<f64>> = xs[..n].iter().collect();
            let c32: Vec<f32> = coeffs.iter().map(|&c| c as f32).collect();
            let (mut y, mut aux) = (vec![0.0; len], Aux::default());
            cpu.eltwise_forward(op, &c32, &refs, &mut y, &mut aux).unwrap();
            assert!(y.iter().zip(&want_y).all(|(a, b)| a.to_bits() == b.to_bits()), "{op:?} forward");
            let mut dx: Vec<Vec<f64>> = (0..n).map(|_| vec![0.0; len]).collect();
            cpu.eltwise_backward(op, &c32, &refs, &aux, &dy, &mut dx).unwrap();
            for (got, want) in dx.iter().zip(&want_dx) {
                assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "{op:?} backward");
            }
        }
    }
}
