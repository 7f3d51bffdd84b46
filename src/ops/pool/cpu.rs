//! MAX and AVE pooling on the CPU: the reference, over the windows of `PoolGeom::windows`.
//!
//! MAX forward runs over whole output rows: the windows that lie wholly inside the input (all
//! but the padded or clipped ones at the edges) are updated together, one (row, column) of
//! their windows at a time in the same row-major order as the scalar loop, so the lanes run
//! in parallel while every output still sees its inputs in Caffe's order (first max wins).
//! Planes go to rayon's threads; a plane's result never depends on how they are split.

use super::PoolKernels;
use crate::device::Cpu;
use crate::ir::{PoolGeom, Window};
use crate::ops::{Aux, Dx};
use crate::real::Real;
use anyhow::Result;
use rayon::prelude::*;

fn assert_lens(g: &PoolGeom, input: usize, output: usize) {
    assert_eq!(input, g.input_len(), "pooling: input length does not match {g:?}");
    assert_eq!(output, g.output_len(), "pooling: output length does not match {g:?}");
}

/// Marks an output whose window holds no real input; its gradient goes nowhere.
const NO_ARGMAX: u32 = u32::MAX;

/// About this many input elements per rayon task (whole planes).
const TASK_ELEMENTS: usize = 1 << 15;

fn planes_per_task(in_plane: usize) -> usize {
    (TASK_ELEMENTS / in_plane.max(1)).max(1)
}

/// One output by the scalar loop: ties keep the first maximum, as Caffe; an empty window
/// (possible only without padding) keeps Caffe's -FLT_MAX and no winner. Branch-free
/// selects: the winners of random data are unpredictable.
#[inline(always)]
fn max_window<T: Real>(xp: &[T], in_w: usize, wh: &Window, wc: &Window) -> (T, u32) {
    let (mut best, mut arg) = (T::from_f32(f32::MIN), NO_ARGMAX);
    if wh.start < wh.end && wc.start < wc.end {
        arg = (wh.start * in_w + wc.start) as u32;
        best = xp[arg as usize];
    }
    for ih in wh.start..wh.end {
        let base = ih * in_w + wc.start;
        for (iw, &v) in xp[base..base + wc.end - wc.start].iter().enumerate() {
            let better = v > best;
            best = if better { v } else { best };
            arg = if better { (base + iw) as u32 } else { arg };
        }
    }
    (best, arg)
}

/// The output columns `lo..hi` whose windows are whole: `kernel` wide, so not clipped by
/// padding or the edge, and so starting `stride` apart.
fn whole_columns(g: &PoolGeom, ww: &[Window]) -> (usize, usize) {
    let whole = |ow: usize| ww[ow].end - ww[ow].start == g.kernel[1];
    let lo = (0..ww.len()).find(|&ow| whole(ow)).unwrap_or(ww.len());
    let hi = (lo..ww.len()).find(|&ow| !whole(ow)).unwrap_or(ww.len());
    (lo, hi)
}

/// A block of planes; `S` is the column stride when known at compile time (0: use `s`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn max_planes<T: Real, const S: usize>(
    g: &PoolGeom,
    hw: &[Window],
    ww: &[Window],
    (lo, hi): (usize, usize),
    s: usize,
    x: &[T],
    y: &mut [T],
    argmax: &mut [u32],
) {
    let s = if S == 0 { s } else { S };
    let (in_plane, out_plane) = g.planes();
    let (in_w, out_w, kw) = (g.in_w, g.out_w, g.kernel[1]);
    let n = hi - lo;
    let outs = y.chunks_exact_mut(out_plane).zip(argmax.chunks_exact_mut(out_plane));
    for (xp, (yp, ap)) in x.chunks_exact(in_plane.max(1)).zip(outs) {
        let rows = yp.chunks_exact_mut(out_w).zip(ap.chunks_exact_mut(out_w));
        for ((yr, ar), wh) in rows.zip(hw) {
            for ow in (0..lo).chain(hi..out_w) {
                (yr[ow], ar[ow]) = max_window(xp, in_w, wh, &ww[ow]);
            }
            if n == 0 {
                continue;
            }
            let (yr, ar) = (&mut yr[lo..hi], &mut ar[lo..hi]);
            if wh.start == wh.end {
                yr.fill(T::from_f32(f32::MIN));
                ar.fill(NO_ARGMAX);
                continue;
            }
            // The same order as `max_window`: the window's first element, then each
            // (row, column) of the window in row-major order, every lane at once.
            for ih in wh.start..wh.end {
                for kk in 0..kw {
                    let base = ih * in_w + ww[lo].start + kk;
                    assert!(base + (n - 1) * s < xp.len());
                    if ih == wh.start && kk == 0 {
                        for (i, (yv, av)) in yr.iter_mut().zip(ar.iter_mut()).enumerate() {
                            // SAFETY: i < n and the last index was checked above.
                            *yv = unsafe { *xp.get_unchecked(base + i * s) };
                            *av = (base + i * s) as u32;
                        }
                    }
                    let base32 = base as u32;
                    for (i, (yv, av)) in yr.iter_mut().zip(ar.iter_mut()).enumerate() {
                        // SAFETY: as above.
                        let v = unsafe { *xp.get_unchecked(base + i * s) };
                        let better = v > *yv;
                        *yv = if better { v } else { *yv };
                        *av = if better { base32 + (i * s) as u32 } else { *av };
                    }
                }
            }
        }
    }
}

crate::multiversion! {
    fn max_pool_block<T: Real>(g: &PoolGeom, hw: &[Window], ww: &[Window], cols: (usize, usize), x: &[T], y: &mut [T], argmax: &mut [u32]) {
        match g.stride[1] {
            1 => max_planes::<T, 1>(g, hw, ww, cols, 1, x, y, argmax),
            2 => max_planes::<T, 2>(g, hw, ww, cols, 2, x, y, argmax),
            3 => max_planes::<T, 3>(g, hw, ww, cols, 3, x, y, argmax),
            s => max_planes::<T, 0>(g, hw, ww, cols, s, x, y, argmax),
        }
    }
}

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
    let cols = whole_columns(g, &ww);
    let per = planes_per_task(in_plane);
    let outs = y.par_chunks_mut(out_plane * per).zip(argmax.par_chunks_mut(out_plane * per));
    x.par_chunks(in_plane.max(1) * per).zip(outs).for_each(|(xb, (yb, ab))| max_pool_block(g, &hw, &ww, cols, xb, yb, ab));
}

/// dx[argmax] += dy.
pub fn max_pool_backward<T: Real>(g: &PoolGeom, dy: &[T], argmax: &[u32], dx: &mut [T]) {
    assert_lens(g, dx.len(), dy.len());
    assert_eq!(argmax.len(), dy.len(), "pooling: argmax length");
    let (in_plane, out_plane) = g.planes();
    if out_plane == 0 || in_plane == 0 {
        return;
    }
    let per = planes_per_task(in_plane);
    let grads = dy.par_chunks(out_plane * per).zip(argmax.par_chunks(out_plane * per));
    dx.par_chunks_mut(in_plane * per).zip(grads).for_each(|(dxb, (dyb, ab))| {
        let grads = dyb.chunks_exact(out_plane).zip(ab.chunks_exact(out_plane));
        for (dxp, (dyp, ap)) in dxb.chunks_exact_mut(in_plane).zip(grads) {
            for (&d, &a) in dyp.iter().zip(ap) {
                if a != NO_ARGMAX {
                    dxp[a as usize] += d;
                }
            }
        }
    });
}

/// y = sum over the window's real inputs / the window's area clipped to the padded input
/// (with `exclude_pad`, to the input). Blocks of planes across the pool, as max pooling.
pub fn ave_pool_forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
    assert_lens(g, x.len(), y.len());
    let (hw, ww) = g.windows();
    let (in_plane, out_plane) = g.planes();
    if out_plane == 0 {
        return;
    }
    let per = planes_per_task(in_plane);
    x.par_chunks(in_plane.max(1) * per).zip(y.par_chunks_mut(out_plane * per)).for_each(|(xb, yb)| {
        for (xp, yp) in xb.chunks_exact(in_plane.max(1)).zip(yb.chunks_exact_mut(out_plane)) {
            for (yv, (wh, wc)) in yp.iter_mut().zip(hw.iter().flat_map(|h| ww.iter().map(move |w| (h, w)))) {
                let mut sum = T::ZERO;
                for ih in wh.start..wh.end {
                    for &v in &xp[ih * g.in_w + wc.start..ih * g.in_w + wc.end] {
                        sum += v;
                    }
                }
                *yv = sum / T::from_f64(g.divisor(wh, wc) as f64);
            }
        }
    });
}

/// dx[window] += dy / divisor, the transpose of the forward pass.
pub fn ave_pool_backward<T: Real>(g: &PoolGeom, dy: &[T], dx: &mut [T]) {
    ave_pool_backward_into(g, dy, dx, Dx::Add)
}

/// `ave_pool_backward`, or with `Dx::Overwrite` into a `dx` whose values do not matter (each
/// plane zeroed on its task, while in cache, before the windows add into it).
pub fn ave_pool_backward_into<T: Real>(g: &PoolGeom, dy: &[T], dx: &mut [T], to: Dx) {
    assert_lens(g, dx.len(), dy.len());
    let (hw, ww) = g.windows();
    let (in_plane, out_plane) = g.planes();
    if out_plane == 0 || in_plane == 0 {
        return;
    }
    let per = planes_per_task(in_plane);
    dx.par_chunks_mut(in_plane * per).zip(dy.par_chunks(out_plane * per)).for_each(|(dxb, dyb)| {
        for (dxp, dyp) in dxb.chunks_exact_mut(in_plane).zip(dyb.chunks_exact(out_plane)) {
            if to == Dx::Overwrite {
                dxp.fill(T::ZERO);
            }
            for (&d, (wh, wc)) in dyp.iter().zip(hw.iter().flat_map(|h| ww.iter().map(move |w| (h, w)))) {
                let share = d / T::from_f64(g.divisor(wh, wc) as f64);
                for ih in wh.start..wh.end {
                    for v in &mut dxp[ih * g.in_w + wc.start..ih * g.in_w + wc.end] {
                        *v += share;
                    }
                }
            }
        }
    });
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

    fn ave_pool_backward_into(&self, g: &PoolGeom, dy: &Vec<T>, dx: &mut Vec<T>, to: Dx) -> Result<()> {
        ave_pool_backward_into(g, dy, dx, to);
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
    fn ave_pool_excluding_the_padding_divides_by_the_pixels_inside() {
        // All-ones 4x4, k3 s2 p1: every output is 1 when only real pixels count; on a ramp,
        // the corner averages its 2x2 real pixels.
        let g = PoolGeom { exclude_pad: true, ..PoolGeom::new(1, 1, 4, 4, [3, 3], [2, 2], [1, 1]).unwrap() };
        let mut y = vec![0.0; 9];
        ave_pool_forward(&g, &[1.0; 16], &mut y);
        assert_eq!(y, vec![1.0; 9]);
        let ramp: Vec<f64> = (0..16).map(f64::from).collect();
        ave_pool_forward(&g, &ramp, &mut y);
        assert_eq!(y[0], (0.0 + 1.0 + 4.0 + 5.0) / 4.0);
        // The backward shares each output's gradient among the same pixels.
        let mut dx = vec![0.0; 16];
        ave_pool_backward(&g, &[4.0, 0., 0., 0., 0., 0., 0., 0., 0.], &mut dx);
        assert_eq!(&dx[..6], &[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
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
            for exclude_pad in [false, true] {
                let g = PoolGeom { exclude_pad, ..geom(c) };
                let x = rng.uniform_vec(g.input_len(), -1.0, 1.0);
                let r = rng.uniform_vec(g.output_len(), -1.0, 1.0);
                let mut dx = vec![0.0; x.len()];
                ave_pool_backward(&g, &r, &mut dx);
                check(&format!("ave pool {c:?} exclude_pad {exclude_pad}"), &x, &dx, |x| dot(&ave_out(&g, x), &r));
            }
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

    /// Each plane computed alone: a batch gives the bits of its images run one at a time,
    /// and the row path (whole windows at once) gives the scalar loop's bits and winners.
    #[test]
    fn batch_matches_images_alone() {
        let mut rng = Rng::new(34);
        for (k, s, p, h, w) in [(3, 2, 0, 55, 55), (3, 2, 0, 13, 13), (3, 2, 1, 12, 17), (2, 1, 1, 9, 40), (5, 3, 2, 20, 31)] {
            let (n, c) = (3, 5);
            let g = PoolGeom::new(n, c, h, w, [k, k], [s, s], [p, p]).unwrap();
            // Coarse values: many ties, so the first-maximum rule is exercised.
            let x: Vec<f32> = (0..g.input_len()).map(|_| (rng.uniform_vec(1, -4.0, 4.0)[0]).round() as f32).collect();
            let (mut y, mut arg) = (vec![0.0f32; g.output_len()], vec![0u32; g.output_len()]);
            max_pool_forward(&g, &x, &mut y, &mut arg);
            let (hw, ww) = g.windows();
            let (in_plane, out_plane) = g.planes();
            for (plane, (yp, ap)) in y.chunks(out_plane).zip(arg.chunks(out_plane)).enumerate() {
                let xp = &x[plane * in_plane..][..in_plane];
                let want: Vec<(f32, u32)> = hw.iter().flat_map(|a| ww.iter().map(move |b| max_window(xp, w, a, b))).collect();
                let got: Vec<(f32, u32)> = yp.iter().copied().zip(ap.iter().copied()).collect();
                assert_eq!(got, want, "plane {plane} of {g:?}");
            }
            let dy: Vec<f32> = rng.uniform_vec(g.output_len(), -1.0, 1.0).iter().map(|&v| v as f32).collect();
            let mut dx = vec![0.0f32; x.len()];
            max_pool_backward(&g, &dy, &arg, &mut dx);
            let one = PoolGeom { batch: 1, ..g };
            let (img_in, img_out) = (c * in_plane, c * out_plane);
            for i in 0..n {
                let (mut y1, mut a1) = (vec![0.0f32; img_out], vec![0u32; img_out]);
                max_pool_forward(&one, &x[i * img_in..][..img_in], &mut y1, &mut a1);
                assert_eq!(
                    y1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    y[i * img_out..][..img_out].iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
                assert_eq!(a1, arg[i * img_out..][..img_out]);
                let mut dx1 = vec![0.0f32; img_in];
                max_pool_backward(&one, &dy[i * img_out..][..img_out], &a1, &mut dx1);
                assert_eq!(
                    dx1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    dx[i * img_in..][..img_in].iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }
}
