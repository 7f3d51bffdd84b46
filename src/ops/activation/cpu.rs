//! ReLU and leaky ReLU (Caffe `negative_slope`; the DGN generators use 0.3), and the
//! [`Activation`]s: the CPU reference.

use super::ActivationKernels;
// Elements per thread's share of a pass: the CPU's one size for passes over memory.
use crate::device::cpu::PASS_CHUNK as CHUNK;
use crate::device::Cpu;
use crate::ir::Activation;
use crate::ops::Dx;
use crate::real::Real;
use anyhow::Result;
use rayon::prelude::*;

crate::multiversion! {
    /// `y = x > 0 ? x : slope * x`. Strictly positive, as Caffe: `x == 0` takes the slope branch.
    pub fn relu_forward<T: Real>(negative_slope: T, x: &[T], y: &mut [T]) {
        assert_eq!(x.len(), y.len(), "relu_forward: x and y differ in length");
        for (yi, &xi) in y.iter_mut().zip(x) {
            *yi = relu(negative_slope, xi);
        }
    }
}

crate::multiversion! {
    /// `relu_forward` with y its own input: a ReLU fused into the pass that wrote y.
    pub fn relu_in_place<T: Real>(negative_slope: T, y: &mut [T]) {
        for v in y {
            *v = relu(negative_slope, *v);
        }
    }
}

#[inline(always)]
fn relu<T: Real>(negative_slope: T, x: T) -> T {
    if x > T::ZERO {
        x
    } else {
        negative_slope * x
    }
}

/// `dx += dy * (x > 0 ? 1 : slope)`. `x` is the layer input: with an in-place ReLU the graph
/// must keep the input, since the output's sign cannot tell x = 0 apart when slope = 0.
pub fn relu_backward<T: Real>(negative_slope: T, x: &[T], dy: &[T], dx: &mut [T]) {
    relu_backward_to(negative_slope, x, dy, dx, false)
}

crate::multiversion! {
    /// `relu_backward`, or with `overwrite` `dx = dy * (x > 0 ? 1 : slope)` whatever `dx` held.
    pub fn relu_backward_to<T: Real>(negative_slope: T, x: &[T], dy: &[T], dx: &mut [T], overwrite: bool) {
        assert_eq!(x.len(), dy.len(), "relu_backward: x and dy differ in length");
        assert_eq!(x.len(), dx.len(), "relu_backward: x and dx differ in length");
        let slope = |xi: T, dyi: T| if xi > T::ZERO { dyi } else { negative_slope * dyi };
        if overwrite {
            for ((dxi, &dyi), &xi) in dx.iter_mut().zip(dy).zip(x) {
                *dxi = slope(xi, dyi);
            }
        } else {
            for ((dxi, &dyi), &xi) in dx.iter_mut().zip(dy).zip(x) {
                *dxi += slope(xi, dyi);
            }
        }
    }
}

/// Sigmoid as `activation_forward` computes it.
#[inline(always)]
fn sigmoid<T: Real>(v: T) -> T {
    T::ONE / (T::ONE + (-v).exp_inline())
}

crate::multiversion! {
    /// `y = x * sigmoid(x)`: the Sigmoid's value, then the product as Eltwise PROD forms it.
    pub fn silu_forward<T: Real>(x: &[T], y: &mut [T]) {
        assert_eq!(x.len(), y.len(), "silu_forward: x and y differ in length");
        for (yi, &v) in y.iter_mut().zip(x) {
            *yi = v * sigmoid(v);
        }
    }
}

crate::multiversion! {
    /// The fused SiLU's data gradient: `dx (+)= dy * s`, then `+= (dy * x) * (s * (1 - s))`,
    /// the Mul's backward pass and then the Sigmoid's, each rounded as they round it.
    pub fn silu_backward<T: Real>(x: &[T], dy: &[T], dx: &mut [T], overwrite: bool) {
        assert_eq!(x.len(), dy.len(), "silu_backward: x and dy differ in length");
        assert_eq!(x.len(), dx.len(), "silu_backward: x and dx differ in length");
        if overwrite {
            for ((d, &g), &v) in dx.iter_mut().zip(dy).zip(x) {
                let s = sigmoid(v);
                *d = g * s + (g * v) * (s * (T::ONE - s));
            }
        } else {
            for ((d, &g), &v) in dx.iter_mut().zip(dy).zip(x) {
                let s = sigmoid(v);
                *d = (*d + g * s) + (g * v) * (s * (T::ONE - s));
            }
        }
    }
}

crate::multiversion! {
    /// `y = f(x)`. HardSwish is `x * clamp(x + 3, 0, 6) / 6`, PyTorch's order of operations.
    /// Sigmoid's exponential is `Real::exp_inline`, so its loop vectorizes.
    pub fn activation_forward<T: Real>(f: Activation, x: &[T], y: &mut [T]) {
        assert_eq!(x.len(), y.len(), "activation_forward: x and y differ in length");
        match f {
            Activation::Sigmoid => {
                for (yi, &v) in y.iter_mut().zip(x) {
                    *yi = T::ONE / (T::ONE + (-v).exp_inline());
                }
            }
            Activation::HardSigmoid { alpha, beta } => {
                let (a, b) = (T::from_f32(alpha), T::from_f32(beta));
                for (yi, &v) in y.iter_mut().zip(x) {
                    *yi = (a * v + b).max(T::ZERO).min(T::ONE);
                }
            }
            Activation::HardSwish => {
                let (three, six) = (T::from_f32(3.0), T::from_f32(6.0));
                for (yi, &v) in y.iter_mut().zip(x) {
                    *yi = v * (v + three).max(T::ZERO).min(six) / six;
                }
            }
            Activation::Clip { min, max } => {
                let (lo, hi) = (T::from_f32(min), T::from_f32(max));
                for (yi, &v) in y.iter_mut().zip(x) {
                    *yi = v.max(lo).min(hi);
                }
            }
            Activation::Erf => {
                for (yi, &v) in y.iter_mut().zip(x) {
                    *yi = T::from_f64(erf(v.to_f64()));
                }
            }
        }
    }
}

crate::multiversion! {
    /// `dx += dy * f'(x)`. Sigmoid's derivative is `y (1 - y)`, from the output `y`. At the
    /// kinks: HardSigmoid passes the gradient only strictly inside (0, 1) and HardSwish uses
    /// `x / 3 + 1/2` on [-3, 3], as PyTorch; Clip passes it on [min, max] inclusive, as Caffe.
    pub fn activation_backward<T: Real>(f: Activation, x: &[T], y: &[T], dy: &[T], dx: &mut [T]) {
        assert_eq!(x.len(), dy.len(), "activation_backward: x and dy differ in length");
        assert_eq!(x.len(), dx.len(), "activation_backward: x and dx differ in length");
        // Each variant's own loop of `dx += dy * slope`, the slope from x (or y).
        let dxs = dx.iter_mut().zip(dy);
        match f {
            Activation::Sigmoid => {
                assert_eq!(y.len(), dy.len(), "activation_backward: y and dy differ in length");
                for ((dxi, &dyi), &yi) in dxs.zip(y) {
                    *dxi += dyi * (yi * (T::ONE - yi));
                }
            }
            Activation::HardSigmoid { alpha, beta } => {
                let (a, b) = (T::from_f32(alpha), T::from_f32(beta));
                for ((dxi, &dyi), &v) in dxs.zip(x) {
                    let u = a * v + b;
                    *dxi += dyi * if u > T::ZERO && u < T::ONE { a } else { T::ZERO };
                }
            }
            Activation::HardSwish => {
                let (three, half) = (T::from_f32(3.0), T::from_f32(0.5));
                for ((dxi, &dyi), &v) in dxs.zip(x) {
                    let slope = if v < -three {
                        T::ZERO
                    } else if v <= three {
                        v / three + half
                    } else {
                        T::ONE
                    };
                    *dxi += dyi * slope;
                }
            }
            Activation::Clip { min, max } => {
                let (lo, hi) = (T::from_f32(min), T::from_f32(max));
                for ((dxi, &dyi), &v) in dxs.zip(x) {
                    *dxi += dyi * if v >= lo && v <= hi { T::ONE } else { T::ZERO };
                }
            }
            Activation::Erf => {
                for ((dxi, &dyi), &v) in dxs.zip(x) {
                    let v = v.to_f64();
                    *dxi += dyi * T::from_f64(std::f64::consts::FRAC_2_SQRT_PI * (-v * v).exp());
                }
            }
        }
    }
}

/// The error function in f64, to about 1e-16 (std's is not stable yet). Below |x| = 2.5:
/// erf(x) = 2/sqrt(pi) exp(-x^2) * sum over n of (2x^2)^n x / (1 * 3 * ... * (2n + 1)), whose
/// terms are all positive (nothing cancels) and fall once n passes x^2. From 2.5 on,
/// 1 - erfc(x), with erfc(x) = exp(-x^2) / sqrt(pi) / K(x) and Laplace's continued fraction
/// K(x) = x + (1/2) / (x + 1 / (x + (3/2) / (x + 2 / ...))), taken 60 levels deep: that keeps
/// 1 - erf exact to its own rounding (the series' rounding near 1 would not be monotonic).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let magnitude = if a < 2.5 {
        let (x2, mut term, mut sum) = (2.0 * a * a, a, a);
        let mut n = 0.0;
        // About 30 terms at 2.5.
        while term > sum * 1e-17 {
            term *= x2 / (2.0 * n + 3.0);
            sum += term;
            n += 1.0;
        }
        std::f64::consts::FRAC_2_SQRT_PI * (-a * a).exp() * sum
    } else {
        let mut t = a;
        for k in (1..=60).rev() {
            t = a + (k as f64 / 2.0) / t;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * t)
    };
    magnitude.copysign(x)
}

impl<T: Real> ActivationKernels for Cpu<'_, T> {
    // Both passes are elementwise, so splitting them among the threads changes no value.
    fn activation_forward(&self, f: Activation, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        assert_eq!(x.len(), y.len(), "activation_forward: x and y differ in length");
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| activation_forward(f, x, y));
        Ok(())
    }

    fn activation_backward(&self, f: Activation, x: &Vec<T>, y: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.activation_backward_into(f, x, y, dy, dx, Dx::Add)
    }

    // A gradient to overwrite is zeroed chunk by chunk while in cache (as eltwise_backward's).
    fn activation_backward_into(&self, f: Activation, x: &Vec<T>, y: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>, to: Dx) -> Result<()> {
        assert_eq!(x.len(), dx.len(), "activation_backward: x and dx differ in length");
        dx.par_chunks_mut(CHUNK).enumerate().for_each(|(k, dx)| {
            let r = k * CHUNK..k * CHUNK + dx.len();
            if to == Dx::Overwrite {
                dx.fill(T::ZERO);
            }
            // Only Sigmoid reads y (it may be empty for the others).
            let y = if y.len() == x.len() { &y[r.clone()] } else { &y[..] };
            activation_backward(f, &x[r.clone()], y, &dy[r], dx);
        });
        Ok(())
    }

    fn fuses_silu(&self) -> bool {
        true
    }

    fn silu_forward(&self, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        assert_eq!(x.len(), y.len(), "silu_forward: x and y differ in length");
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| silu_forward(x, y));
        Ok(())
    }

    fn silu_backward_into(&self, x: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>, to: Dx) -> Result<()> {
        assert_eq!(x.len(), dx.len(), "silu_backward: x and dx differ in length");
        assert_eq!(dy.len(), dx.len(), "silu_backward: dy and dx differ in length");
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
            .for_each(|(dx, (x, dy))| silu_backward(x, dy, dx, to == Dx::Overwrite));
        Ok(())
    }

    fn relu_forward(&self, slope: f32, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        assert_eq!(x.len(), y.len(), "relu_forward: x and y differ in length");
        let slope = T::from_f32(slope);
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| relu_forward(slope, x, y));
        Ok(())
    }

    fn relu_backward(&self, slope: f32, x: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.relu_backward_into(slope, x, dy, dx, Dx::Add)
    }

    fn relu_backward_into(&self, slope: f32, x: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>, to: Dx) -> Result<()> {
        assert_eq!(x.len(), dx.len(), "relu_backward: x and dx differ in length");
        assert_eq!(dy.len(), dx.len(), "relu_backward: dy and dx differ in length");
        let slope = T::from_f32(slope);
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
            .for_each(|(dx, (x, dy))| relu_backward_to(slope, x, dy, dx, to == Dx::Overwrite));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{self, Rng};

    /// The fused SiLU against a Sigmoid and an Eltwise PROD run apart, bit for bit: forward,
    /// and backward both adding into a gradient that holds values and overwriting one.
    #[test]
    fn fused_silu_gives_the_bits_of_sigmoid_and_mul() {
        use crate::ir::EltwiseOp;
        use crate::ops::eltwise::{eltwise_backward, eltwise_forward};
        let mut rng = Rng::new(7);
        let n = 1000;
        let x: Vec<f32> = (0..n).map(|_| rng.uniform(-9.0, 9.0) as f32).collect();
        let dy: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let prior: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let mut s = vec![0.0f32; n];
        activation_forward(Activation::Sigmoid, &x, &mut s);
        let mut y = vec![0.0f32; n];
        eltwise_forward(EltwiseOp::Prod, &[], &[&x, &s], &mut y, &mut []);
        let mut fused = vec![0.0f32; n];
        silu_forward(&x, &mut fused);
        assert!(fused.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()), "forward");
        for start in [prior.clone(), vec![0.0; n]] {
            // The Mul's backward pass first (it ran last), then the Sigmoid's.
            let (mut dx, mut ds) = (start.clone(), vec![0.0f32; n]);
            eltwise_backward(EltwiseOp::Prod, &[], &[&x, &s], &[], &dy, &mut [&mut dx, &mut ds]);
            activation_backward(Activation::Sigmoid, &x, &s, &ds, &mut dx);
            let mut added = start.clone();
            silu_backward(&x, &dy, &mut added, false);
            assert!(added.iter().zip(&dx).all(|(a, b)| a.to_bits() == b.to_bits()), "backward, adding");
            if start.iter().all(|&v| v == 0.0) {
                let mut written = vec![f32::NAN; n];
                silu_backward(&x, &dy, &mut written, true);
                assert!(written.iter().zip(&dx).all(|(a, b)| a == b), "backward, overwriting");
            }
        }
    }

    #[test]
    fn erf_matches_tabulated_values() {
        // erf to 16 digits (Abramowitz and Stegun's table 7.1 and its extensions).
        let table = [
            (0.0, 0.0),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (-1.5, -0.9661051464753108),
            (2.0, 0.9953222650189527),
            (3.0, 0.9999779095030014),
            (4.5, 0.9999999998033839),
        ];
        for (x, want) in table {
            let got = erf(x);
            assert!((got - want).abs() <= 1e-15 * want.abs(), "erf({x}) = {got}, want {want}");
        }
        assert_eq!(erf(6.5), 1.0);
        assert_eq!(erf(-40.0), -1.0);
        assert!(erf(f64::NAN).is_nan());
        // Near 1, erf is erfc's complement to the last bit of the result.
        for (x, erfc) in [(2.5, 4.069520174449589e-4), (4.0, 1.541725790028002e-8), (5.5, 7.357847917974398e-15)] {
            assert!(((1.0 - erf(x)) - erfc).abs() <= f64::EPSILON, "1 - erf({x}) = {}, want {erfc}", 1.0 - erf(x));
        }
        // Odd, and increasing across the switch at 2.5.
        let xs: Vec<f64> = (0..1300).map(|i| i as f64 * 0.005).collect();
        assert!(xs.windows(2).all(|w| erf(w[0]) <= erf(w[1])));
        assert!(xs.iter().all(|&x| erf(-x) == -erf(x)));
    }

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

    const ALL: [Activation; 5] = [
        Activation::Sigmoid,
        Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
        Activation::HardSwish,
        Activation::Clip { min: 0.0, max: 6.0 },
        Activation::Clip { min: f32::NEG_INFINITY, max: -1.0 },
    ];

    #[test]
    fn activations_by_hand() {
        let x = [-8.0f64, -3.0, -1.0, 0.0, 1.5, 3.0, 7.0];
        let run = |f| {
            let mut y = [f64::NAN; 7];
            activation_forward(f, &x, &mut y);
            y
        };
        let sigmoid = run(Activation::Sigmoid);
        assert_eq!(sigmoid[3], 0.5);
        assert!((sigmoid[4] - 1.0 / (1.0 + (-1.5f64).exp())).abs() < 1e-15 && sigmoid[0] < 1e-3);
        assert_eq!(run(Activation::HardSigmoid { alpha: 0.25, beta: 0.5 }), [0.0, 0.0, 0.25, 0.5, 0.875, 1.0, 1.0]);
        let hs = run(Activation::HardSwish);
        assert_eq!([hs[0], hs[1], hs[3], hs[5], hs[6]], [-0.0, -0.0, 0.0, 3.0, 7.0]);
        assert!((hs[2] + 1.0 / 3.0).abs() < 1e-15 && (hs[4] - 1.5 * 4.5 / 6.0).abs() < 1e-15);
        assert_eq!(run(Activation::Clip { min: 0.0, max: 6.0 }), [0.0, 0.0, 0.0, 0.0, 1.5, 3.0, 6.0]);
        assert_eq!(run(Activation::Clip { min: f32::NEG_INFINITY, max: -1.0 }), [-8.0, -3.0, -1.0, -1.0, -1.0, -1.0, -1.0]);
    }

    #[test]
    fn activation_gradients_at_the_kinks_and_accumulation() {
        let x = [-3.0f64, 3.0, 0.0, 6.0, -2.0, 2.0];
        let dy = [1.0f64; 6];
        let grad = |f, start: f64| {
            let mut y = [0.0; 6];
            activation_forward(f, &x, &mut y);
            let mut dx = [start; 6];
            activation_backward(f, &x, &y, &dy, &mut dx);
            dx
        };
        // HardSwish: x / 3 + 1/2 on [-3, 3] inclusive, as PyTorch
        assert_eq!(grad(Activation::HardSwish, 0.0), [-0.5, 1.5, 0.5, 1.0, -2.0 / 3.0 + 0.5, 2.0 / 3.0 + 0.5]);
        // HardSigmoid: strictly inside (0, 1), so not at x = +-2 where 0.25 x + 0.5 is 0 or 1
        assert_eq!(grad(Activation::HardSigmoid { alpha: 0.25, beta: 0.5 }, 0.0), [0.0, 0.0, 0.25, 0.0, 0.0, 0.0]);
        // Clip: [min, max] inclusive, as Caffe; added to what dx held
        assert_eq!(grad(Activation::Clip { min: 0.0, max: 6.0 }, 1.0), [1.0, 2.0, 2.0, 2.0, 1.0, 2.0]);
    }

    #[test]
    fn gradcheck_activations() {
        let mut rng = Rng::new(2);
        for f in ALL {
            // Away from the kinks (-3, 3 for HardSwish, -2.5, 2.5 for HardSigmoid, the bounds).
            let kinks = [-3.0, 3.0, -2.5, 2.5, 0.0, 6.0, -1.0];
            let x: Vec<f64> = rng
                .uniform_vec(61, -8.0, 8.0)
                .into_iter()
                .map(|v| if kinks.iter().any(|k| (v - k).abs() < 0.01) { v + 0.05 } else { v })
                .collect();
            let r = rng.uniform_vec(61, -1.0, 1.0);
            let mut y = vec![0.0; 61];
            activation_forward(f, &x, &mut y);
            let mut dx = vec![0.0; 61];
            activation_backward(f, &x, &y, &r, &mut dx);
            gradcheck::check(&format!("{f:?}"), &x, &dx, |xp| {
                let mut y = vec![0.0; xp.len()];
                activation_forward(f, xp, &mut y);
                gradcheck::dot(&y, &r)
            });
        }
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
