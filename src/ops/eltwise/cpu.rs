//! Eltwise SUM, PROD and MAX over equally shaped blobs: the CPU reference.

use super::EltwiseKernels;
use crate::device::Cpu;
use crate::ir::EltwiseOp;
use crate::ops::Aux;
use crate::real::Real;
use anyhow::Result;

/// Coefficients are per input and only meaningful for SUM; PROD and MAX ignore them.
fn check_eltwise<T>(what: &str, coeffs: &[T], n: usize) {
    assert!(n > 0, "{what}: no inputs");
    assert!(coeffs.is_empty() || coeffs.len() == n, "{what}: {} coefficients for {n} inputs", coeffs.len());
}

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
        EltwiseOp::Sum => {
            for (j, yj) in y.iter_mut().enumerate() {
                *yj = inputs.iter().enumerate().fold(T::ZERO, |s, (i, x)| s + coeff(i) * x[j]);
            }
        }
        EltwiseOp::Prod => {
            for (j, yj) in y.iter_mut().enumerate() {
                *yj = inputs[1..].iter().fold(inputs[0][j], |p, x| p * x[j]);
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
                for ((d, &g), &x) in da.iter_mut().zip(dy).zip(*b) {
                    *d += g * x;
                }
                for ((d, &g), &x) in db.iter_mut().zip(dy).zip(*a) {
                    *d += g * x;
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

impl<T: Real> EltwiseKernels for Cpu<'_, T> {
    fn eltwise_forward(&self, op: EltwiseOp, coeffs: &[f32], x: &[&Vec<T>], y: &mut Vec<T>, aux: &mut Aux<Self>) -> Result<()> {
        let coeffs: Vec<T> = coeffs.iter().map(|&c| T::from_f32(c)).collect();
        let xs: Vec<&[T]> = x.iter().map(|v| v.as_slice()).collect();
        let argmax: &mut [u32] = if op == EltwiseOp::Max { aux.index(self, y.len())? } else { &mut [] };
        eltwise_forward(op, &coeffs, &xs, y, argmax);
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
        let coeffs: Vec<T> = coeffs.iter().map(|&c| T::from_f32(c)).collect();
        let argmax: &[u32] = if op == EltwiseOp::Max { aux.indices("Eltwise MAX")? } else { &[] };
        let xs: Vec<&[T]> = x.iter().map(|v| v.as_slice()).collect();
        let mut refs: Vec<&mut [T]> = dx.iter_mut().map(|v| v.as_mut_slice()).collect();
        eltwise_backward(op, &coeffs, &xs, argmax, dy, &mut refs);
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
}
