//! Caffe BatchNorm (inference, global statistics) and Scale; x viewed as [outer, channels, inner].

use super::NormKernels;
use crate::device::cpu::CpuParam;
use crate::device::cpu::PASS_CHUNK;
use crate::device::Cpu;
use crate::ops::Dx;
use crate::real::Real;
use anyhow::Result;
use rayon::prelude::*;

fn check_len(what: &str, name: &str, len: usize, want: usize) {
    assert_eq!(len, want, "{what}: {name} has {len} elements, expected {want}");
}

/// Caffe stores running sums plus a scale factor s; the statistics are blob / s, with
/// 1/s taken as 0 when s == 0 (Caffe's rule for an untrained net).
fn inverse_scale_factor<T: Real>(s: T) -> T {
    if s == T::ZERO {
        T::ZERO
    } else {
        T::ONE / s
    }
}

/// Calls `f(c, range of one channel's contiguous run)` for every run of x.
fn for_each_run(outer: usize, channels: usize, inner: usize, mut f: impl FnMut(usize, std::ops::Range<usize>)) {
    for o in 0..outer {
        for c in 0..channels {
            let start = (o * channels + c) * inner;
            f(c, start..start + inner);
        }
    }
}

/// Calls `f(c, dst run, src run)` for every channel's contiguous run of `dst` and `src` (both
/// [outer, channels, inner]), runs grouped into tasks of about `PASS_CHUNK` values across
/// the pool: each run is the same loop wherever it runs.
fn par_runs<T: Real>(channels: usize, inner: usize, dst: &mut [T], src: &[T], f: impl Fn(usize, &mut [T], &[T]) + Sync + Send) {
    if inner == 0 || channels == 0 {
        return;
    }
    let runs_per_task = (PASS_CHUNK / inner).max(1);
    dst.par_chunks_mut(inner)
        .zip(src.par_chunks(inner))
        .enumerate()
        .with_min_len(runs_per_task)
        .for_each(|(k, (d, s))| f(k % channels, d, s));
}

/// Caffe BatchNorm at inference (use_global_stats): stored blobs mean[c], variance[c] and a scale factor s (blob 2, one value);
/// the statistics are mean/s and variance/s, with 1/s taken as 0 when s == 0 (Caffe's rule).
/// y = (x - mean/s) / sqrt(variance/s + eps).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward<T: Real>(
    outer: usize,
    channels: usize,
    inner: usize,
    mean: &[T],
    variance: &[T],
    scale_factor: T,
    eps: T,
    x: &[T],
    y: &mut [T],
) {
    let count = outer * channels * inner;
    check_len("batch_norm_forward", "mean", mean.len(), channels);
    check_len("batch_norm_forward", "variance", variance.len(), channels);
    check_len("batch_norm_forward", "x", x.len(), count);
    check_len("batch_norm_forward", "y", y.len(), count);
    let inv_s = inverse_scale_factor(scale_factor);
    for_each_run(outer, channels, inner, |c, run| {
        let m = mean[c] * inv_s;
        let inv_std = T::ONE / (variance[c] * inv_s + eps).sqrt();
        for (yi, &xi) in y[run.clone()].iter_mut().zip(&x[run]) {
            *yi = (xi - m) * inv_std;
        }
    });
}

/// `dx += dy / sqrt(variance/s + eps)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_data<T: Real>(
    outer: usize,
    channels: usize,
    inner: usize,
    variance: &[T],
    scale_factor: T,
    eps: T,
    dy: &[T],
    dx: &mut [T],
) {
    let count = outer * channels * inner;
    check_len("batch_norm_backward_data", "variance", variance.len(), channels);
    check_len("batch_norm_backward_data", "dy", dy.len(), count);
    check_len("batch_norm_backward_data", "dx", dx.len(), count);
    let inv_s = inverse_scale_factor(scale_factor);
    for_each_run(outer, channels, inner, |c, run| {
        let inv_std = T::ONE / (variance[c] * inv_s + eps).sqrt();
        for (d, &g) in dx[run.clone()].iter_mut().zip(&dy[run]) {
            *d += g * inv_std;
        }
    });
}

/// Gradients with respect to the stored mean and variance blobs (scale factor held constant).
/// With v = variance/s + eps: dmean += -sum(dy) / (s * sqrt(v)),
/// dvariance += -sum(dy * (x - mean/s)) / (2 * s * v^1.5).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_weights<T: Real>(
    outer: usize,
    channels: usize,
    inner: usize,
    mean: &[T],
    variance: &[T],
    scale_factor: T,
    eps: T,
    x: &[T],
    dy: &[T],
    dmean: &mut [T],
    dvariance: &mut [T],
) {
    let count = outer * channels * inner;
    let what = "batch_norm_backward_weights";
    check_len(what, "mean", mean.len(), channels);
    check_len(what, "variance", variance.len(), channels);
    check_len(what, "dmean", dmean.len(), channels);
    check_len(what, "dvariance", dvariance.len(), channels);
    check_len(what, "x", x.len(), count);
    check_len(what, "dy", dy.len(), count);
    let inv_s = inverse_scale_factor(scale_factor).to_f64();
    // Per-channel sums over outer * inner elements, accumulated in f64.
    let (mut sum_dy, mut sum_dy_xc) = (vec![0.0f64; channels], vec![0.0f64; channels]);
    for_each_run(outer, channels, inner, |c, run| {
        let m = mean[c].to_f64() * inv_s;
        for (&g, &xi) in dy[run.clone()].iter().zip(&x[run]) {
            sum_dy[c] += g.to_f64();
            sum_dy_xc[c] += g.to_f64() * (xi.to_f64() - m);
        }
    });
    for c in 0..channels {
        let v = variance[c].to_f64() * inv_s + eps.to_f64();
        dmean[c] += T::from_f64(-sum_dy[c] * inv_s / v.sqrt());
        dvariance[c] += T::from_f64(-0.5 * sum_dy_xc[c] * inv_s / (v * v.sqrt()));
    }
}

/// Caffe Scale layer with a learned per-channel gamma (and optional beta): y = x * gamma[c] + beta[c].
pub fn scale_forward<T: Real>(outer: usize, channels: usize, inner: usize, x: &[T], gamma: &[T], beta: Option<&[T]>, y: &mut [T]) {
    let count = outer * channels * inner;
    check_len("scale_forward", "gamma", gamma.len(), channels);
    if let Some(b) = beta {
        check_len("scale_forward", "beta", b.len(), channels);
    }
    check_len("scale_forward", "x", x.len(), count);
    check_len("scale_forward", "y", y.len(), count);
    par_runs(channels, inner, y, x, |c, y, x| {
        let (g, b) = (gamma[c], beta.map_or(T::ZERO, |b| b[c]));
        for (yi, &xi) in y.iter_mut().zip(x) {
            *yi = xi * g + b;
        }
    });
}

/// `dx += dy * gamma[c]`.
pub fn scale_backward_data<T: Real>(outer: usize, channels: usize, inner: usize, gamma: &[T], dy: &[T], dx: &mut [T]) {
    scale_backward_data_into(outer, channels, inner, gamma, dy, dx, Dx::Add)
}

/// `dx += dy * gamma[c]`, or with `Dx::Overwrite` `dx = dy * gamma[c]`.
pub fn scale_backward_data_into<T: Real>(outer: usize, channels: usize, inner: usize, gamma: &[T], dy: &[T], dx: &mut [T], to: Dx) {
    let count = outer * channels * inner;
    check_len("scale_backward_data", "gamma", gamma.len(), channels);
    check_len("scale_backward_data", "dy", dy.len(), count);
    check_len("scale_backward_data", "dx", dx.len(), count);
    par_runs(channels, inner, dx, dy, |c, dx, dy| match to {
        Dx::Add => dx.iter_mut().zip(dy).for_each(|(d, &g)| *d += g * gamma[c]),
        Dx::Overwrite => dx.iter_mut().zip(dy).for_each(|(d, &g)| *d = g * gamma[c]),
    });
}

/// `dgamma[c] += sum dy * x`, `dbeta[c] += sum dy` over the channel's elements.
pub fn scale_backward_weights<T: Real>(
    outer: usize,
    channels: usize,
    inner: usize,
    x: &[T],
    dy: &[T],
    dgamma: &mut [T],
    dbeta: Option<&mut [T]>,
) {
    let count = outer * channels * inner;
    check_len("scale_backward_weights", "x", x.len(), count);
    check_len("scale_backward_weights", "dy", dy.len(), count);
    check_len("scale_backward_weights", "dgamma", dgamma.len(), channels);
    // Each channel's sums on one thread, over its runs in order: the same sums on any pool.
    let sums: Vec<(f64, f64)> = (0..channels)
        .into_par_iter()
        .with_min_len((PASS_CHUNK / (outer * inner).max(1)).max(1))
        .map(|c| {
            let (mut sum_dy_x, mut sum_dy) = (0.0f64, 0.0f64);
            for o in 0..outer {
                let start = (o * channels + c) * inner;
                for (&g, &xi) in dy[start..start + inner].iter().zip(&x[start..start + inner]) {
                    sum_dy_x += g.to_f64() * xi.to_f64();
                    sum_dy += g.to_f64();
                }
            }
            (sum_dy_x, sum_dy)
        })
        .collect();
    for (d, &(sum_dy_x, _)) in dgamma.iter_mut().zip(&sums) {
        *d += T::from_f64(sum_dy_x);
    }
    if let Some(db) = dbeta {
        check_len("scale_backward_weights", "dbeta", db.len(), channels);
        for (d, &(_, sum_dy)) in db.iter_mut().zip(&sums) {
            *d += T::from_f64(sum_dy);
        }
    }
}

impl<'w, T: Real> NormKernels for Cpu<'w, T> {
    fn batch_norm_forward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        eps: f32,
        p: &[CpuParam<'w, T>],
        x: &Vec<T>,
        y: &mut Vec<T>,
    ) -> Result<()> {
        batch_norm_forward(outer, channels, inner, &p[0], &p[1], p[2][0], T::from_f32(eps), x, y);
        Ok(())
    }

    fn batch_norm_backward_data(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        eps: f32,
        p: &[CpuParam<'w, T>],
        dy: &Vec<T>,
        dx: &mut Vec<T>,
    ) -> Result<()> {
        batch_norm_backward_data(outer, channels, inner, &p[1], p[2][0], T::from_f32(eps), dy, dx);
        Ok(())
    }

    fn batch_norm_backward_weights(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        eps: f32,
        p: &[CpuParam<'w, T>],
        x: &Vec<T>,
        dy: &Vec<T>,
        dparams: &mut [Vec<T>],
    ) -> Result<()> {
        let (dmean, rest) = dparams.split_at_mut(1);
        batch_norm_backward_weights(outer, channels, inner, &p[0], &p[1], p[2][0], T::from_f32(eps), x, dy, &mut dmean[0], &mut rest[0]);
        Ok(())
    }

    fn scale_forward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Vec<T>,
        gamma: &CpuParam<'w, T>,
        beta: Option<&CpuParam<'w, T>>,
        y: &mut Vec<T>,
    ) -> Result<()> {
        scale_forward(outer, channels, inner, x, gamma, beta.map(|b| &**b), y);
        Ok(())
    }

    fn scale_backward_data(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        gamma: &CpuParam<'w, T>,
        dy: &Vec<T>,
        dx: &mut Vec<T>,
    ) -> Result<()> {
        scale_backward_data(outer, channels, inner, gamma, dy, dx);
        Ok(())
    }

    fn scale_backward_data_into(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        gamma: &CpuParam<'w, T>,
        dy: &Vec<T>,
        dx: &mut Vec<T>,
        to: Dx,
    ) -> Result<()> {
        scale_backward_data_into(outer, channels, inner, gamma, dy, dx, to);
        Ok(())
    }

    fn scale_backward_weights(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Vec<T>,
        dy: &Vec<T>,
        dgamma: &mut Vec<T>,
        dbeta: Option<&mut Vec<T>>,
    ) -> Result<()> {
        scale_backward_weights(outer, channels, inner, x, dy, dgamma, dbeta.map(|b| b.as_mut_slice()));
        Ok(())
    }

    // The learned Scale's reference, with the factors from a blob.
    fn scale_by_blob_forward(&self, outer: usize, channels: usize, inner: usize, x: &Vec<T>, s: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        scale_forward(outer, channels, inner, x, s, None, y);
        Ok(())
    }

    fn scale_by_blob_backward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Vec<T>,
        s: &Vec<T>,
        dy: &Vec<T>,
        dx: &mut Vec<T>,
        ds: &mut Vec<T>,
    ) -> Result<()> {
        self.scale_by_blob_backward_into(outer, channels, inner, x, s, dy, dx, ds, [Dx::Add; 2])
    }

    fn scale_by_blob_backward_into(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Vec<T>,
        s: &Vec<T>,
        dy: &Vec<T>,
        dx: &mut Vec<T>,
        ds: &mut Vec<T>,
        to: [Dx; 2],
    ) -> Result<()> {
        scale_backward_data_into(outer, channels, inner, s, dy, dx, to[0]);
        if to[1] == Dx::Overwrite {
            ds.fill(T::ZERO);
        }
        scale_backward_weights(outer, channels, inner, x, dy, ds, None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{self, Rng};

    const DIMS: (usize, usize, usize) = (2, 3, 5);
    const COUNT: usize = 30;

    #[test]
    fn batch_norm_forward_by_hand() {
        // s = 2: mean = [2, -4]/2 = [1, -2], variance = [6, 16]/2 = [3, 8]; eps = 1.
        let x = [3.0f64, 5.0, 1.0, -2.0];
        let mut y = [0.0; 4];
        batch_norm_forward(1, 2, 2, &[2.0, -4.0], &[6.0, 16.0], 2.0, 1.0, &x, &mut y);
        assert_eq!(y, [1.0, 2.0, 1.0, 0.0]);
        // s = 0: statistics are zero, y = x / sqrt(eps).
        batch_norm_forward(1, 2, 2, &[2.0, -4.0], &[6.0, 16.0], 0.0, 4.0, &x, &mut y);
        assert_eq!(y, [1.5, 2.5, 0.5, -1.0]);
    }

    #[test]
    fn scale_forward_by_hand() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let mut y = [0.0f32; 8];
        // outer 2, channels 2, inner 2.
        scale_forward(2, 2, 2, &x, &[2.0, -1.0], Some(&[0.5, 1.0]), &mut y);
        assert_eq!(y, [2.5, 4.5, -2.0, -3.0, 10.5, 12.5, -6.0, -7.0]);
        scale_forward(2, 2, 2, &x, &[2.0, -1.0], None, &mut y);
        assert_eq!(y, [2.0, 4.0, -3.0, -4.0, 10.0, 12.0, -7.0, -8.0]);
    }

    fn bn(mean: &[f64], var: &[f64], s: f64, x: &[f64]) -> Vec<f64> {
        let (o, c, i) = DIMS;
        let mut y = vec![0.0; x.len()];
        batch_norm_forward(o, c, i, mean, var, s, 1e-3, x, &mut y);
        y
    }

    #[test]
    fn gradcheck_batch_norm() {
        let (o, c, i) = DIMS;
        let mut rng = Rng::new(31);
        let x = rng.uniform_vec(COUNT, -2.0, 2.0);
        let mean = rng.uniform_vec(c, -3.0, 3.0);
        let var = rng.uniform_vec(c, 1.0, 4.0);
        let r = rng.uniform_vec(COUNT, -1.0, 1.0);
        let s = 1.7;
        let mut dx = vec![0.0; COUNT];
        batch_norm_backward_data(o, c, i, &var, s, 1e-3, &r, &mut dx);
        gradcheck::check("batch norm data", &x, &dx, |xp| gradcheck::dot(&bn(&mean, &var, s, xp), &r));
        let (mut dmean, mut dvar) = (vec![0.0; c], vec![0.0; c]);
        batch_norm_backward_weights(o, c, i, &mean, &var, s, 1e-3, &x, &r, &mut dmean, &mut dvar);
        gradcheck::check("batch norm mean", &mean, &dmean, |mp| gradcheck::dot(&bn(mp, &var, s, &x), &r));
        gradcheck::check("batch norm variance", &var, &dvar, |vp| gradcheck::dot(&bn(&mean, vp, s, &x), &r));

        // Accumulation.
        let (dx1, dm1, dv1) = (dx.clone(), dmean.clone(), dvar.clone());
        batch_norm_backward_data(o, c, i, &var, s, 1e-3, &r, &mut dx);
        batch_norm_backward_weights(o, c, i, &mean, &var, s, 1e-3, &x, &r, &mut dmean, &mut dvar);
        for (twice, once) in [(&dx, &dx1), (&dmean, &dm1), (&dvar, &dv1)] {
            for (a, b) in twice.iter().zip(once) {
                assert!((a - 2.0 * b).abs() <= 1e-12 * (1.0 + b.abs()));
            }
        }
    }

    fn sc(x: &[f64], gamma: &[f64], beta: Option<&[f64]>) -> Vec<f64> {
        let (o, c, i) = DIMS;
        let mut y = vec![0.0; x.len()];
        scale_forward(o, c, i, x, gamma, beta, &mut y);
        y
    }

    #[test]
    fn gradcheck_scale() {
        let (o, c, i) = DIMS;
        let mut rng = Rng::new(41);
        let x = rng.uniform_vec(COUNT, -2.0, 2.0);
        let gamma = rng.uniform_vec(c, -2.0, 2.0);
        let beta = rng.uniform_vec(c, -1.0, 1.0);
        let r = rng.uniform_vec(COUNT, -1.0, 1.0);
        let mut dx = vec![0.0; COUNT];
        scale_backward_data(o, c, i, &gamma, &r, &mut dx);
        gradcheck::check("scale data", &x, &dx, |xp| gradcheck::dot(&sc(xp, &gamma, Some(&beta)), &r));
        let (mut dgamma, mut dbeta) = (vec![0.0; c], vec![0.0; c]);
        scale_backward_weights(o, c, i, &x, &r, &mut dgamma, Some(&mut dbeta));
        gradcheck::check("scale gamma", &gamma, &dgamma, |gp| gradcheck::dot(&sc(&x, gp, Some(&beta)), &r));
        gradcheck::check("scale beta", &beta, &dbeta, |bp| gradcheck::dot(&sc(&x, &gamma, Some(bp)), &r));

        // Accumulation, and no beta gradient asked for.
        let (dx1, dg1) = (dx.clone(), dgamma.clone());
        scale_backward_data(o, c, i, &gamma, &r, &mut dx);
        scale_backward_weights(o, c, i, &x, &r, &mut dgamma, None);
        for (twice, once) in [(&dx, &dx1), (&dgamma, &dg1)] {
            for (a, b) in twice.iter().zip(once) {
                assert!((a - 2.0 * b).abs() <= 1e-12 * (1.0 + b.abs()));
            }
        }
    }
}
