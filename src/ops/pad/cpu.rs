//! Padding: the CPU reference.

use super::PadKernels;
use crate::device::Cpu;
use crate::ir::PadGeom;
use crate::real::Real;
use anyhow::Result;

fn check(what: &str, g: &PadGeom, x: usize, y: usize) {
    assert_eq!(x, g.planes() * g.in_h() * g.in_w(), "{what}: the input has {x} values for {g:?}");
    assert_eq!(y, g.planes() * g.out_h() * g.out_w(), "{what}: the output has {y} values for {g:?}");
}

/// Each plane of x copied into a plane of `value` at row `before[0]`, column `before[1]`
/// (a negative side: the rows or columns of x that fall outside are dropped).
pub fn pad_forward<T: Real>(g: &PadGeom, x: &[T], y: &mut [T]) {
    check("pad_forward", g, x.len(), y.len());
    let (h, w, oh, ow) = (g.in_h(), g.in_w(), g.out_h(), g.out_w());
    let ((xr, yr, rows), (xc, yc, cols)) = (g.overlap(0), g.overlap(1));
    y.fill(T::from_f32(g.value));
    for p in 0..g.planes() {
        for i in 0..rows {
            let src = &x[(p * h + xr + i) * w + xc..][..cols];
            y[(p * oh + yr + i) * ow + yc..][..cols].copy_from_slice(src);
        }
    }
}

/// dx += dy over the copied region; the padding's gradient goes nowhere, and the cropped
/// part of x gets none.
pub fn pad_backward<T: Real>(g: &PadGeom, dy: &[T], dx: &mut [T]) {
    check("pad_backward", g, dx.len(), dy.len());
    let (h, w, oh, ow) = (g.in_h(), g.in_w(), g.out_h(), g.out_w());
    let ((xr, yr, rows), (xc, yc, cols)) = (g.overlap(0), g.overlap(1));
    for p in 0..g.planes() {
        for i in 0..rows {
            let src = &dy[(p * oh + yr + i) * ow + yc..][..cols];
            for (d, &s) in dx[(p * h + xr + i) * w + xc..][..cols].iter_mut().zip(src) {
                *d += s;
            }
        }
    }
}

impl<T: Real> PadKernels for Cpu<'_, T> {
    fn pad_forward(&self, g: &PadGeom, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        pad_forward(g, x, y);
        Ok(())
    }

    fn pad_backward(&self, g: &PadGeom, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        pad_backward(g, dy, dx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{self, Rng};

    #[test]
    fn pads_each_side_by_hand() {
        // One 2x2 plane, one row above, two columns right, value -1.
        let g = PadGeom { dims: [1, 1, 2, 2], before: [1, 0], after: [0, 2], value: -1.0 };
        let mut y = vec![0.0f32; 3 * 4];
        pad_forward(&g, &[1.0, 2.0, 3.0, 4.0], &mut y);
        assert_eq!(y, [-1., -1., -1., -1., 1., 2., -1., -1., 3., 4., -1., -1.]);
        let mut dx = vec![10.0f32; 4];
        pad_backward(&g, &(0..12).map(|v| v as f32).collect::<Vec<_>>(), &mut dx);
        assert_eq!(dx, [14.0, 15.0, 18.0, 19.0]);
    }

    #[test]
    fn crops_by_negative_sides_by_hand() {
        // One 3x3 plane: the first row and the last column cropped, one column of 9 added left.
        let g = PadGeom { dims: [1, 1, 3, 3], before: [-1, 1], after: [0, -1], value: 9.0 };
        let mut y = vec![0.0f32; 2 * 3];
        pad_forward(&g, &(1..=9).map(|v| v as f32).collect::<Vec<_>>(), &mut y);
        assert_eq!(y, [9., 4., 5., 9., 7., 8.]);
        let mut dx = vec![0.0f32; 9];
        pad_backward(&g, &[10., 1., 2., 20., 3., 4.], &mut dx);
        assert_eq!(dx, [0., 0., 0., 1., 2., 0., 3., 4., 0.]);
    }

    #[test]
    fn gradcheck_pad() {
        let mut rng = Rng::new(4);
        for (before, after) in [([0, 2], [1, 1]), ([-1, 2], [1, -2])] {
            let g = PadGeom { dims: [2, 3, 4, 5], before, after, value: 0.5 };
            let n = 2 * 3 * 4 * 5;
            let x = rng.uniform_vec(n, -1.0, 1.0);
            let r = rng.uniform_vec(2 * 3 * g.out_h() * g.out_w(), -1.0, 1.0);
            let mut dx = vec![0.0; n];
            pad_backward(&g, &r, &mut dx);
            gradcheck::check("pad", &x, &dx, |xp| {
                let mut y = vec![0.0; r.len()];
                pad_forward(&g, xp, &mut y);
                gradcheck::dot(&y, &r)
            });
        }
    }
}
