//! ReLU and leaky ReLU (Caffe `negative_slope`; the DGN generators use 0.3).

use super::ActivationKernels;
use crate::device::Cpu;
use crate::real::Real;
use anyhow::Result;

/// `y = x > 0 ? x : slope * x`. Strictly positive, as Caffe: `x == 0` takes the slope branch.
pub fn relu_forward<T: Real>(negative_slope: T, x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len(), "relu_forward: x and y differ in length");
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = if xi > T::ZERO { xi } else { negative_slope * xi };
    }
}

/// `dx += dy * (x > 0 ? 1 : slope)`. `x` is the layer input: with an in-place ReLU the graph
/// must keep the input, since the output's sign cannot tell x = 0 apart when slope = 0.
pub fn relu_backward<T: Real>(negative_slope: T, x: &[T], dy: &[T], dx: &mut [T]) {
    assert_eq!(x.len(), dy.len(), "relu_backward: x and dy differ in length");
    assert_eq!(x.len(), dx.len(), "relu_backward: x and dx differ in length");
    for ((dxi, &dyi), &xi) in dx.iter_mut().zip(dy).zip(x) {
        *dxi += if xi > T::ZERO { dyi } else { negative_slope * dyi };
    }
}

impl<T: Real> ActivationKernels for Cpu<'_, T> {
    fn relu_forward(&self, slope: f32, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        relu_forward(T::from_f32(slope), x, y);
        Ok(())
    }

    fn relu_backward(&self, slope: f32, x: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        relu_backward(T::from_f32(slope), x, dy, dx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{self, Rng};

    #[test]
    fn leaky_relu_forward_by_hand() {
        let x = [-2.0f32, -0.5, 0.0, 0.25, 3.0];
        let mut y = [9.0f32; 5];
        relu_forward(0.3, &x, &mut y);
        let want = [-0.6f32, -0.15, 0.0, 0.25, 3.0];
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-7, "{y:?} vs {want:?}");
        }
        relu_forward(0.0, &x, &mut y);
        assert_eq!(y, [0.0, 0.0, 0.0, 0.25, 3.0]);
    }

    #[test]
    fn backward_uses_slope_at_zero_and_accumulates() {
        let x = [-1.0f64, 0.0, 2.0];
        let dy = [1.0f64, 1.0, 1.0];
        let mut dx = [0.0f64; 3];
        relu_backward(0.3, &x, &dy, &mut dx);
        assert_eq!(dx, [0.3, 0.3, 1.0]);
        relu_backward(0.3, &x, &dy, &mut dx);
        assert_eq!(dx, [0.6, 0.6, 2.0]);
    }

    #[test]
    fn gradcheck_leaky_relu() {
        let mut rng = Rng::new(1);
        for slope in [0.0, 0.3] {
            // Keep inputs away from the kink so finite differences do not straddle it.
            let x: Vec<f64> = rng.uniform_vec(37, -2.0, 2.0).into_iter().map(|v| if v.abs() < 0.01 { v + 0.05 } else { v }).collect();
            let r = rng.uniform_vec(37, -1.0, 1.0);
            let mut dx = vec![0.0; 37];
            relu_backward(slope, &x, &r, &mut dx);
            gradcheck::check("leaky relu", &x, &dx, |xp| {
                let mut y = vec![0.0; xp.len()];
                relu_forward(slope, xp, &mut y);
                gradcheck::dot(&y, &r)
            });
        }
    }
}
