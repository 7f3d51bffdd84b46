//! Concat along one axis: the CPU reference.

use super::ConcatKernels;
use crate::device::Cpu;
use crate::real::Real;
use anyhow::Result;

/// Concat along one axis: input i viewed as [outer, channels[i] * inner]; y is [outer, sum(channels) * inner].
pub fn concat_forward<T: Real>(outer: usize, inner: usize, channels: &[usize], inputs: &[&[T]], y: &mut [T]) {
    assert_eq!(channels.len(), inputs.len(), "concat_forward: {} channel counts for {} inputs", channels.len(), inputs.len());
    let row: usize = channels.iter().sum::<usize>() * inner;
    assert_eq!(y.len(), outer * row, "concat_forward: y has {} elements, expected {}", y.len(), outer * row);
    let mut start = 0;
    for (i, (&c, x)) in channels.iter().zip(inputs).enumerate() {
        let block = c * inner;
        assert_eq!(x.len(), outer * block, "concat_forward: input {i} has {} elements, expected {}", x.len(), outer * block);
        for o in 0..outer {
            y[o * row + start..][..block].copy_from_slice(&x[o * block..][..block]);
        }
        start += block;
    }
}

/// Each `dxs[i] +=` its slice of `dy`.
pub fn concat_backward<T: Real>(outer: usize, inner: usize, channels: &[usize], dy: &[T], dxs: &mut [&mut [T]]) {
    assert_eq!(channels.len(), dxs.len(), "concat_backward: {} channel counts for {} gradients", channels.len(), dxs.len());
    let row: usize = channels.iter().sum::<usize>() * inner;
    assert_eq!(dy.len(), outer * row, "concat_backward: dy has {} elements, expected {}", dy.len(), outer * row);
    let mut start = 0;
    for (i, (&c, dx)) in channels.iter().zip(dxs.iter_mut()).enumerate() {
        let block = c * inner;
        assert_eq!(dx.len(), outer * block, "concat_backward: gradient {i} has {} elements, expected {}", dx.len(), outer * block);
        for o in 0..outer {
            for (d, &g) in dx[o * block..][..block].iter_mut().zip(&dy[o * row + start..][..block]) {
                *d += g;
            }
        }
        start += block;
    }
}

impl<T: Real> ConcatKernels for Cpu<'_, T> {
    fn concat_forward(&self, outer: usize, inner: usize, channels: &[usize], x: &[&Vec<T>], y: &mut Vec<T>) -> Result<()> {
        let xs: Vec<&[T]> = x.iter().map(|v| v.as_slice()).collect();
        concat_forward(outer, inner, channels, &xs, y);
        Ok(())
    }

    fn concat_backward(&self, outer: usize, inner: usize, channels: &[usize], dy: &Vec<T>, dx: &mut [Vec<T>]) -> Result<()> {
        let mut refs: Vec<&mut [T]> = dx.iter_mut().map(|v| v.as_mut_slice()).collect();
        concat_backward(outer, inner, channels, dy, &mut refs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{self, Rng};

    #[test]
    fn concat_forward_by_hand_and_backward_accumulates() {
        // outer 2, inner 2; channels 1 and 2.
        let a = [1.0f64, 2.0, 3.0, 4.0];
        let b = [10.0f64, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0];
        let mut y = [0.0; 12];
        concat_forward(2, 2, &[1, 2], &[&a, &b], &mut y);
        assert_eq!(y, [1.0, 2.0, 10.0, 11.0, 12.0, 13.0, 3.0, 4.0, 20.0, 21.0, 22.0, 23.0]);
        let (mut da, mut db) = ([0.0; 4], [0.0; 8]);
        for _ in 0..2 {
            concat_backward(2, 2, &[1, 2], &y, &mut [&mut da[..], &mut db[..]]);
        }
        assert_eq!(da, a.map(|v| 2.0 * v));
        assert_eq!(db, b.map(|v| 2.0 * v));
    }

    #[test]
    fn gradcheck_concat_three_inputs() {
        let (outer, inner, channels) = (3, 5, [2usize, 1, 3]);
        let mut rng = Rng::new(3);
        let lens: Vec<usize> = channels.iter().map(|c| outer * c * inner).collect();
        let xs: Vec<Vec<f64>> = lens.iter().map(|&n| rng.uniform_vec(n, -1.0, 1.0)).collect();
        let total = outer * 6 * inner;
        let r = rng.uniform_vec(total, -1.0, 1.0);
        let mut dxs: Vec<Vec<f64>> = lens.iter().map(|&n| vec![0.0; n]).collect();
        {
            let mut views: Vec<&mut [f64]> = dxs.iter_mut().map(|v| &mut v[..]).collect();
            concat_backward(outer, inner, &channels, &r, &mut views);
        }
        for i in 0..3 {
            gradcheck::check(&format!("concat input {i}"), &xs[i], &dxs[i], |xp| {
                let mut ins: Vec<&[f64]> = xs.iter().map(|v| &v[..]).collect();
                ins[i] = xp;
                let mut y = vec![0.0; total];
                concat_forward(outer, inner, &channels, &ins, &mut y);
                gradcheck::dot(&y, &r)
            });
        }
    }
}
