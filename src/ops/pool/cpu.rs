//! MAX and AVE pooling on the CPU: the reference, over the windows of `PoolGeom::windows`.

use super::PoolKernels;
use crate::device::Cpu;
use crate::ir::PoolGeom;
use crate::ops::Aux;
use crate::real::Real;
use anyhow::Result;

fn assert_lens(g: &PoolGeom, input: usize, output: usize) {
    assert_eq!(input, g.input_len(), "pooling: input length does not match {g:?}");
    assert_eq!(output, g.output_len(), "pooling: output length does not match {g:?}");
}

/// Marks an output whose window holds no real input; its gradient goes nowhere.
const NO_ARGMAX: u32 = u32::MAX;

/// y = max over each window (first maximum wins, as in Caffe); argmax[i] = h*in_w + w of
/// the winner within its plane. An empty window (see `windows`) yields -FLT_MAX, as in Caffe.
pub fn max_pool_forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T], argmax: &mut [u32]) {
    assert_lens(g, x.len(), y.len());
    assert_eq!(argmax.len(), y.len(), "pooling: argmax length");
    let (hw, ww) = g.windows();
    let (in_plane, out_plane) = g.planes();
    if out_plane == 0 {
        return;
    }
    let outs = y.chunks_exact_mut(out_plane).zip(argmax.chunks_exact_mut(out_plane));
    let planes = x.chunks_exact(in_plane.max(1)).zip(outs);
    for (xp, (yp, ap)) in planes {
        let mut o = 0;
        for wh in &hw {
            for wc in &ww {
                // Ties keep the first maximum, as Caffe; an empty window (possible only
                // without padding) keeps Caffe's -FLT_MAX and no winner. Branch-free
                // selects: the winners of random data are unpredictable.
                let (mut best, mut arg) = (T::from_f32(f32::MIN), NO_ARGMAX);
                if wh.start < wh.end && wc.start < wc.end {
                    arg = (wh.start * g.in_w + wc.start) as u32;
                    best = xp[arg as usize];
                }
                for ih in wh.start..wh.end {
                    let base = ih * g.in_w + wc.start;
                    for (iw, &v) in xp[base..base + wc.end - wc.start].iter().enumerate() {
                        let better = v > best;
                        best = if better { v } else { best };
                        arg = if better { (base + iw) as u32 } else { arg };
                    }
                }
                yp[o] = best;
                ap[o] = arg;
                o += 1;
            }
        }
    }
}

/// dx[argmax] += dy.
pub fn max_pool_backward<T: Real>(g: &PoolGeom, dy: &[T], argmax: &[u32], dx: &mut [T]) {
    assert_lens(g, dx.len(), dy.len());
    assert_eq!(argmax.len(), dy.len(), "pooling: argmax length");
    let (in_plane, out_plane) = g.planes();
    if out_plane == 0 || in_plane == 0 {
        return;
    }
    let grads = dy.chunks_exact(out_plane).zip(argmax.chunks_exact(out_plane));
    for (dxp, (dyp, ap)) in dx.chunks_exact_mut(in_plane).zip(grads) {
        for (&d, &a) in dyp.iter().zip(ap) {
            if a != NO_ARGMAX {
                dxp[a as usize] += d;
            }
        }
    }
}

/// y = sum over the window's real inputs / the window's area clipped to the padded input.
pub fn ave_pool_forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
    assert_lens(g, x.len(), y.len());
    let (hw, ww) = g.windows();
    let (in_plane, out_plane) = g.planes();
    if out_plane == 0 {
        return;
    }
    for (xp, yp) in x.chunks_exact(in_plane.max(1)).zip(y.chunks_exact_mut(out_plane)) {
        for (yv, (wh, wc)) in yp.iter_mut().zip(hw.iter().flat_map(|h| ww.iter().map(move |w| (h, w)))) {
            let mut sum = T::ZERO;
            for ih in wh.start..wh.end {
                for &v in &xp[ih * g.in_w + wc.start..ih * g.in_w + wc.end] {
                    sum += v;
                }
            }
            *yv = sum / T::from_f64((wh.padded_len * wc.padded_len) as f64);
        }
    }
}

/// dx[window] += dy / divisor, the transpose of the forward pass.
pub fn ave_pool_backward<T: Real>(g: &PoolGeom, dy: &[T], dx: &mut [T]) {
    assert_lens(g, dx.len(), dy.len());
    let (hw, ww) = g.windows();
    let (in_plane, out_plane) = g.planes();
    if out_plane == 0 || in_plane == 0 {
        return;
    }
    for (dxp, dyp) in dx.chunks_exact_mut(in_plane).zip(dy.chunks_exact(out_plane)) {
        for (&d, (wh, wc)) in dyp.iter().zip(hw.iter().flat_map(|h| ww.iter().map(move |w| (h, w)))) {
            let share = d / T::from_f64((wh.padded_len * wc.padded_len) as f64);
            for ih in wh.start..wh.end {
                for v in &mut dxp[ih * g.in_w + wc.start..ih * g.in_w + wc.end] {
                    *v += share;
                }
            }
        }
    }
}

impl<T: Real> PoolKernels for Cpu<'_, T> {
    fn max_pool_forward(&self, g: &PoolGeom, x: &Vec<T>, y: &mut Vec<T>, aux: &mut Aux<Self>) -> Result<()> {
        max_pool_forward(g, x, y, aux.index(self, g.output_len())?);
        Ok(())
    }

    fn max_pool_backward(&self, g: &PoolGeom, dy: &Vec<T>, aux: &Aux<Self>, dx: &mut Vec<T>) -> Result<()> {
        max_pool_backward(g, dy, aux.indices("max pooling")?, dx);
        Ok(())
    }

    fn ave_pool_forward(&self, g: &PoolGeom, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        ave_pool_forward(g, x, y);
        Ok(())
    }

    fn ave_pool_backward(&self, g: &PoolGeom, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        ave_pool_backward(g, dy, dx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, dot, Rng};

    fn size(h: usize, w: usize, k: [usize; 2], s: [usize; 2], p: [usize; 2]) -> (usize, usize) {
        let g = PoolGeom::new(1, 1, h, w, k, s, p).unwrap();
        (g.out_h, g.out_w)
    }

    #[test]
    fn output_sizes_and_errors() {
        // ceil((6 + 2 - 3)/2) + 1 = 4; the last window starts at 5 < 6 + 1, kept.
        assert_eq!(size(6, 6, [3, 3], [2, 2], [1, 1]), (4, 4));
        // ceil((5 + 2 - 2)/2) + 1 = 4, but window 3 starts at 6 - 1 = 5 = H: dropped.
        assert_eq!(size(5, 5, [2, 2], [2, 2], [1, 1]), (3, 3));
        // The Caffe fixture geometry.
        assert_eq!(size(75, 113, [3, 5], [2, 1], [2, 1]), (39, 111));
        // CIFAR-10 and CaffeNet: ceil rounding without pad.
        assert_eq!(size(32, 32, [3, 3], [2, 2], [0, 0]), (16, 16));
        assert_eq!(size(55, 55, [3, 3], [2, 2], [0, 0]), (27, 27));
        assert_eq!(size(13, 13, [3, 3], [2, 2], [0, 0]), (6, 6));
        assert!(PoolGeom::new(1, 1, 5, 5, [3, 3], [2, 2], [3, 0]).is_err()); // pad >= kernel
        assert!(PoolGeom::new(1, 1, 5, 5, [0, 3], [2, 2], [0, 0]).is_err());
        assert!(PoolGeom::new(1, 1, 5, 5, [3, 3], [1, 0], [0, 0]).is_err());
        assert!(PoolGeom::new(1, 1, 2, 5, [5, 3], [1, 1], [1, 0]).is_err()); // 5 > 2 + 2
        assert!(PoolGeom::new(1, 1, 2, 5, [4, 3], [1, 1], [1, 0]).is_ok());
        let g = PoolGeom::global(2, 3, 6, 5);
        assert_eq!((g.out_h, g.out_w, g.kernel, g.stride, g.pad), (1, 1, [6, 5], [1, 1], [0, 0]));
        assert_eq!((g.input_len(), g.output_len()), (180, 6));
    }

    #[test]
    fn ave_pool_padded_divisors() {
        // All-ones 4x4, k3 s2 p1 -> 3x3. Each output = (real cells) / (window clipped to the
        // padded extent 6x6 starting at -1): corners count padding, the far edge does not.
        let g = PoolGeom::new(1, 1, 4, 4, [3, 3], [2, 2], [1, 1]).unwrap();
        assert_eq!((g.out_h, g.out_w), (3, 3));
        let mut y = vec![0.0; 9];
        ave_pool_forward(&g, &[1.0; 16], &mut y);
        let want = [4.0 / 9.0, 6.0 / 9.0, 2.0 / 6.0, 6.0 / 9.0, 1.0, 3.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0, 1.0 / 4.0];
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-15, "{y:?} vs {want:?}");
        }
        // Unpadded ceil-rounded: the last window is clipped to the input and divides by its size.
        let g = PoolGeom::new(1, 1, 1, 5, [1, 2], [1, 2], [0, 0]).unwrap();
        let mut y = vec![0.0; 3];
        ave_pool_forward(&g, &[1.0, 3.0, 5.0, 7.0, 9.0], &mut y);
        assert_eq!(y, vec![2.0, 6.0, 9.0]);
    }

    #[test]
    fn max_pool_hand_worked() {
        #[rustfmt::skip]
        let x = [
            1.0, 5.0, 2.0, 0.0,
            3.0, 4.0, 8.0, 8.0,
            -1.0, -2.0, 0.5, 7.0,
            -4.0, -3.0, 6.0, 1.0,
        ];
        let g = PoolGeom::new(1, 1, 4, 4, [2, 2], [2, 2], [0, 0]).unwrap();
        let (mut y, mut arg) = (vec![0.0; 4], vec![0u32; 4]);
        max_pool_forward(&g, &x, &mut y, &mut arg);
        assert_eq!(y, vec![5.0, 8.0, -1.0, 7.0]);
        assert_eq!(arg, vec![1, 6, 8, 11]); // ties: the first maximum (row-major) wins
                                            // Padding is ignored, not a zero: all-negative input keeps negative maxima.
        let xn: Vec<f64> = (0..9).map(|i| -1.0 - i as f64).collect();
        let g = PoolGeom::new(1, 1, 3, 3, [2, 2], [2, 2], [1, 1]).unwrap();
        assert_eq!((g.out_h, g.out_w), (2, 2));
        let (mut y, mut arg) = (vec![0.0; 4], vec![0u32; 4]);
        max_pool_forward(&g, &xn, &mut y, &mut arg);
        assert_eq!(y, vec![-1.0, -2.0, -4.0, -5.0]);
        assert_eq!(arg, vec![0, 1, 3, 4]);
        let mut dx = vec![0.0; 9];
        max_pool_backward(&g, &[1.0, 2.0, 3.0, 4.0], &arg, &mut dx);
        assert_eq!(dx, vec![1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn empty_last_window_matches_caffe() {
        // H=5, k1 s3 p0: ceil(4/3) + 1 = 3 outputs, the last window starts at 6, past the
        // input; Caffe keeps it (the drop rule needs pad > 0) and it reads nothing.
        let g = PoolGeom::new(1, 1, 5, 1, [1, 1], [3, 1], [0, 0]).unwrap();
        assert_eq!((g.out_h, g.out_w), (3, 1));
        let x = [3.0, 4.0, 5.0, 6.0, 7.0];
        let (mut y, mut arg) = (vec![0.0; 3], vec![0u32; 3]);
        max_pool_forward(&g, &x, &mut y, &mut arg);
        assert_eq!(y, vec![3.0, 6.0, f32::MIN as f64]);
        let mut dx = vec![0.0; 5];
        max_pool_backward(&g, &[1.0, 2.0, 4.0], &arg, &mut dx);
        assert_eq!(dx, vec![1.0, 0.0, 0.0, 2.0, 0.0]);
        let mut y = vec![1.0; 3];
        ave_pool_forward(&g, &x, &mut y);
        assert_eq!(y, vec![3.0, 6.0, 0.0]);
        let mut dx = vec![0.0; 5];
        ave_pool_backward(&g, &[1.0, 2.0, 4.0], &mut dx);
        assert_eq!(dx, vec![1.0, 0.0, 0.0, 2.0, 0.0]);
    }

    #[test]
    fn global_pooling() {
        let g = PoolGeom::global(1, 2, 2, 3);
        let x = [1.0, 2.0, 9.0, 4.0, 5.0, 6.0, -1.0, -2.0, -3.0, -4.0, -5.0, -0.5];
        let (mut y, mut arg) = (vec![0.0; 2], vec![0u32; 2]);
        max_pool_forward(&g, &x, &mut y, &mut arg);
        assert_eq!((y.clone(), arg), (vec![9.0, -0.5], vec![2, 5]));
        ave_pool_forward(&g, &x, &mut y);
        assert_eq!(y, vec![27.0 / 6.0, -15.5 / 6.0]);
    }

    /// (batch, channels, h, w, kernel, stride, pad), None = global: overlapping, padded,
    /// ceil-rounded, dropped-last-window and asymmetric geometries.
    type Case = Option<(usize, usize, usize, usize, [usize; 2], [usize; 2], [usize; 2])>;
    const CASES: [Case; 6] = [
        Some((2, 2, 6, 6, [3, 3], [2, 2], [1, 1])),
        Some((1, 3, 5, 5, [2, 2], [2, 2], [1, 1])),
        Some((2, 1, 7, 9, [3, 5], [2, 1], [2, 1])),
        Some((1, 2, 8, 7, [3, 3], [2, 2], [0, 0])),
        Some((1, 1, 4, 4, [3, 3], [2, 2], [1, 1])),
        None,
    ];

    fn geom(c: &Case) -> PoolGeom {
        match *c {
            Some((n, ch, h, w, k, s, p)) => PoolGeom::new(n, ch, h, w, k, s, p).unwrap(),
            None => PoolGeom::global(2, 3, 5, 4),
        }
    }

    fn max_out(g: &PoolGeom, x: &[f64]) -> Vec<f64> {
        let (mut y, mut arg) = (vec![0.0; g.output_len()], vec![0u32; g.output_len()]);
        max_pool_forward(g, x, &mut y, &mut arg);
        y
    }

    fn ave_out(g: &PoolGeom, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; g.output_len()];
        ave_pool_forward(g, x, &mut y);
        y
    }

    #[test]
    fn max_pool_gradients() {
        let mut rng = Rng::new(31);
        for c in &CASES {
            let g = geom(c);
            // Distinct values spaced far beyond the finite-difference step: no ties flip.
            let mut x: Vec<f64> = (0..g.input_len()).map(|i| i as f64 * 0.01).collect();
            for i in (1..x.len()).rev() {
                x.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            let r = rng.uniform_vec(g.output_len(), -1.0, 1.0);
            let (mut y, mut arg) = (vec![0.0; g.output_len()], vec![0u32; g.output_len()]);
            max_pool_forward(&g, &x, &mut y, &mut arg);
            let mut dx = vec![0.0; x.len()];
            max_pool_backward(&g, &r, &arg, &mut dx);
            check(&format!("max pool {c:?}"), &x, &dx, |x| dot(&max_out(&g, x), &r));
        }
    }

    #[test]
    fn ave_pool_gradients() {
        let mut rng = Rng::new(32);
        for c in &CASES {
            let g = geom(c);
            let x = rng.uniform_vec(g.input_len(), -1.0, 1.0);
            let r = rng.uniform_vec(g.output_len(), -1.0, 1.0);
            let mut dx = vec![0.0; x.len()];
            ave_pool_backward(&g, &r, &mut dx);
            check(&format!("ave pool {c:?}"), &x, &dx, |x| dot(&ave_out(&g, x), &r));
        }
    }

    #[test]
    fn backward_accumulates() {
        let mut rng = Rng::new(33);
        let g = geom(&CASES[0]);
        let x = rng.uniform_vec(g.input_len(), -1.0, 1.0);
        let dy = rng.uniform_vec(g.output_len(), -1.0, 1.0);
        let (mut y, mut arg) = (vec![0.0; g.output_len()], vec![0u32; g.output_len()]);
        max_pool_forward(&g, &x, &mut y, &mut arg);
        let (mut dmax, mut dave) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        max_pool_backward(&g, &dy, &arg, &mut dmax);
        ave_pool_backward(&g, &dy, &mut dave);
        let (once_max, once_ave) = (dmax.clone(), dave.clone());
        max_pool_backward(&g, &dy, &arg, &mut dmax);
        ave_pool_backward(&g, &dy, &mut dave);
        for (twice, once) in [(&dmax, &once_max), (&dave, &once_ave)] {
            assert!(once.iter().any(|v| *v != 0.0));
            for (a, b) in twice.iter().zip(once.iter()) {
                assert!((a - 2.0 * b).abs() < 1e-12, "{a} is not twice {b}");
            }
        }
    }
}
