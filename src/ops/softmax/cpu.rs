//! Softmax over the middle axis of [outer, channels, inner] (Caffe's axis 1 when
//! outer = batch and inner = height * width).

use super::SoftmaxKernels;
use crate::device::Cpu;
use crate::real::Real;
use anyhow::Result;

/// `y_c = exp(x_c - max) / sum_c' exp(x_c' - max)`; subtracting the max keeps exp in range.
pub fn softmax_forward<T: Real>(outer: usize, channels: usize, inner: usize, x: &[T], y: &mut [T]) {
    let count = outer * channels * inner;
    assert_eq!(x.len(), count, "softmax_forward: x has {} elements, expected {count}", x.len());
    assert_eq!(y.len(), count, "softmax_forward: y has {} elements, expected {count}", y.len());
    if channels == 0 {
        return;
    }
    for o in 0..outer {
        for i in 0..inner {
            let at = |c: usize| o * channels * inner + c * inner + i;
            let max = (0..channels).map(|c| x[at(c)]).fold(x[at(0)], T::max);
            let mut sum = 0.0f64; // accumulated wide: thousands of classes in f32 lose digits
            for c in 0..channels {
                let e = (x[at(c)] - max).exp();
                y[at(c)] = e;
                sum += e.to_f64();
            }
            let inv = T::from_f64(1.0 / sum);
            for c in 0..channels {
                y[at(c)] *= inv;
            }
        }
    }
}

/// `dx_c += y_c * (dy_c - sum_c' dy_c' * y_c')`, from the forward's output.
pub fn softmax_backward<T: Real>(outer: usize, channels: usize, inner: usize, y: &[T], dy: &[T], dx: &mut [T]) {
    let count = outer * channels * inner;
    for (name, len) in [("y", y.len()), ("dy", dy.len()), ("dx", dx.len())] {
        assert_eq!(len, count, "softmax_backward: {name} has {len} elements, expected {count}");
    }
    for o in 0..outer {
        for i in 0..inner {
            let at = |c: usize| o * channels * inner + c * inner + i;
            let dot: f64 = (0..channels).map(|c| dy[at(c)].to_f64() * y[at(c)].to_f64()).sum();
            let dot = T::from_f64(dot);
            for c in 0..channels {
                dx[at(c)] += y[at(c)] * (dy[at(c)] - dot);
            }
        }
    }
}

impl<T: Real> SoftmaxKernels for Cpu<'_, T> {
    fn softmax_forward(&self, outer: usize, channels: usize, inner: usize, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        softmax_forward(outer, channels, inner, x, y);
        Ok(())
    }

    fn softmax_backward(&self, outer: usize, channels: usize, inner: usize, y: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        softmax_backward(outer, channels, inner, y, dy, dx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{self, Rng};

    #[test]
    fn forward_by_hand_over_strided_channels() {
        // outer 1, channels 3, inner 2: column i holds one distribution.
        let x = [1.0f64, 0.0, 2.0, 0.0, 3.0, 0.0];
        let mut y = [0.0; 6];
        softmax_forward(1, 3, 2, &x, &mut y);
        let z = 1f64.exp() + 2f64.exp() + 3f64.exp();
        let want = [1f64.exp() / z, 1.0 / 3.0, 2f64.exp() / z, 1.0 / 3.0, 3f64.exp() / z, 1.0 / 3.0];
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-15, "{y:?} vs {want:?}");
        }
    }

    #[test]
    fn stable_for_large_inputs_and_rows_sum_to_one() {
        let x = [1000.0f32, 1001.0, 1002.0, -1000.0, -1001.0, -1002.0];
        let mut y = [0.0f32; 6];
        softmax_forward(2, 3, 1, &x, &mut y);
        assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
        let z = 1.0 + (-1f64).exp() + (-2f64).exp();
        let want = [(-2f64).exp() / z, (-1f64).exp() / z, 1.0 / z, 1.0 / z, (-1f64).exp() / z, (-2f64).exp() / z];
        for (a, b) in y.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{y:?} vs {want:?}");
        }
        for row in y.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    /// An OpenCV/Caffe fixture array, as (shape, data).
    fn read_npy(name: &str) -> (Vec<usize>, Vec<f32>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/caffe/opencv_layers").join(name);
        let t = crate::npy::read(&path).unwrap();
        (t.shape, t.data)
    }

    #[test]
    fn matches_caffe() {
        let (shape, x) = read_npy("blob.npy");
        let (cshape, want) = read_npy("layer_softmax.npy");
        assert_eq!(shape, cshape);
        let mut y = vec![0.0f32; x.len()];
        softmax_forward(shape[0], shape[1], shape[2] * shape[3], &x, &mut y);
        let max_ref = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let max_err = y.iter().zip(&want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(max_err <= 1e-5 * max_ref, "max error {max_err}, max |caffe| {max_ref}");
    }

    #[test]
    fn gradcheck_and_accumulation() {
        let (outer, channels, inner) = (2, 5, 3);
        let n = outer * channels * inner;
        let mut rng = Rng::new(5);
        let x = rng.uniform_vec(n, -3.0, 3.0);
        let r = rng.uniform_vec(n, -1.0, 1.0);
        let forward = |xp: &[f64]| {
            let mut y = vec![0.0; n];
            softmax_forward(outer, channels, inner, xp, &mut y);
            y
        };
        let y = forward(&x);
        let mut dx = vec![0.0; n];
        softmax_backward(outer, channels, inner, &y, &r, &mut dx);
        gradcheck::check("softmax", &x, &dx, |xp| gradcheck::dot(&forward(xp), &r));
        let once = dx.clone();
        softmax_backward(outer, channels, inner, &y, &r, &mut dx);
        for (a, b) in dx.iter().zip(&once) {
            assert!((a - 2.0 * b).abs() <= 1e-15);
        }
    }
}
