//! Depthwise convolution (one input and one output channel per group, as MobileNet's and
//! EfficientNet's) computed directly, plane by plane: the column path's GEMMs would have one
//! row each and its column buffer k*k copies of the input. Every plane of every image is
//! independent, so the planes are shared among the threads and a sample's result does not
//! depend on its batch or on the thread count. Row by row of the output, the taps are added
//! in the order (ki, kj), each over the positions whose input lies inside the image
//! (`valid_range`).

use super::{add_channel_sums, valid_range, Start};
use crate::ir::ConvGeom;
use crate::real::Real;
use rayon::prelude::*;

/// Whether `g` is depthwise: as many groups as input and output channels (more than one).
pub fn applies(g: &ConvGeom) -> bool {
    g.group > 1 && g.in_channels == g.group && g.out_channels == g.group
}

/// One tap's reach: its weight index, the output rows and columns whose input is inside the
/// image, and the input row and column of output (0, 0) (possibly negative).
struct Tap {
    index: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    h_off: isize,
    w_off: isize,
}

fn taps(g: &ConvGeom) -> Vec<Tap> {
    let mut taps = Vec::with_capacity(g.kernel[0] * g.kernel[1]);
    for ki in 0..g.kernel[0] {
        let h_off = (ki * g.dilation[0]) as isize - g.pad[0] as isize;
        for kj in 0..g.kernel[1] {
            let w_off = (kj * g.dilation[1]) as isize - g.pad[1] as isize;
            taps.push(Tap {
                index: ki * g.kernel[1] + kj,
                rows: valid_range(g.out_h, g.in_h, h_off, g.stride[0]),
                cols: valid_range(g.out_w, g.in_w, w_off, g.stride[1]),
                h_off,
                w_off,
            });
        }
    }
    taps
}

/// The input index of output (oh, ow) for `tap` (inside the image by construction).
#[inline(always)]
fn input_at(g: &ConvGeom, tap: &Tap, oh: usize, ow: usize) -> usize {
    let ih = (oh * g.stride[0]) as isize + tap.h_off;
    let iw = (ow * g.stride[1]) as isize + tap.w_off;
    ih as usize * g.in_w + iw as usize
}

crate::multiversion! {
    /// One plane of `forward`: channel `c`'s output `yp` from its input `xp`.
    fn forward_plane<T: Real>(g: &ConvGeom, taps: &[Tap], wc: &[T], b: T, beta: T, xp: &[T], yp: &mut [T]) {
        if beta == T::ZERO {
            yp.fill(b);
        } else if b != T::ZERO {
            yp.iter_mut().for_each(|v| *v += b);
        }
        // Row by row, every tap into one output row while it is in L1.
        for oh in 0..g.out_h {
            let row = &mut yp[oh * g.out_w..(oh + 1) * g.out_w];
            for tap in taps.iter().filter(|t| (t.rows.0..t.rows.1).contains(&oh)) {
                let wv = wc[tap.index];
                if g.stride[1] == 1 {
                    let start = input_at(g, tap, oh, tap.cols.0);
                    let n = tap.cols.1 - tap.cols.0;
                    for (v, &xv) in row[tap.cols.0..tap.cols.1].iter_mut().zip(&xp[start..start + n]) {
                        *v += wv * xv;
                    }
                } else {
                    for ow in tap.cols.0..tap.cols.1 {
                        row[ow] += wv * xp[input_at(g, tap, oh, ow)];
                    }
                }
            }
        }
    }
}

/// y = conv(x) + beta * y (beta 0 or 1) + bias per channel.
pub fn forward<T: Real>(g: &ConvGeom, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T], beta: T) {
    let (ihw, ohw, kk) = (g.in_plane(), g.out_plane(), g.kernel[0] * g.kernel[1]);
    if ohw == 0 || ihw == 0 {
        return;
    }
    let taps = taps(g);
    // Each plane's loops run in `forward_plane`, built for this CPU's vector instructions
    // (in the pool's closure itself they were built for baseline x86-64).
    y.par_chunks_mut(ohw).zip(x.par_chunks(ihw)).enumerate().for_each(|(plane, (yp, xp))| {
        let c = plane % g.in_channels;
        let b = bias.map_or(T::ZERO, |b| b[c]);
        forward_plane(g, &taps, &w[c * kk..(c + 1) * kk], b, beta, xp, yp);
    });
}

crate::multiversion! {
    /// One plane of `transpose`: channel `c`'s dx `xp` (already started) from its dy `yp`.
    fn transpose_plane<T: Real>(g: &ConvGeom, taps: &[Tap], wc: &[T], yp: &[T], xp: &mut [T]) {
        for oh in 0..g.out_h {
            let row = &yp[oh * g.out_w..(oh + 1) * g.out_w];
            for tap in taps.iter().filter(|t| (t.rows.0..t.rows.1).contains(&oh)) {
                let wv = wc[tap.index];
                if g.stride[1] == 1 {
                    let start = input_at(g, tap, oh, tap.cols.0);
                    let n = tap.cols.1 - tap.cols.0;
                    for (v, &d) in xp[start..start + n].iter_mut().zip(&row[tap.cols.0..tap.cols.1]) {
                        *v += wv * d;
                    }
                } else {
                    for ow in tap.cols.0..tap.cols.1 {
                        xp[input_at(g, tap, oh, ow)] += wv * row[ow];
                    }
                }
            }
        }
    }
}

/// dx = conv^T(dy) after what `start` says (added to dx, or over zeros plus a bias).
pub(super) fn transpose<T: Real>(g: &ConvGeom, dy: &[T], w: &[T], dx: &mut [T], start: Start<'_, T>) {
    let (ihw, ohw, kk) = (g.in_plane(), g.out_plane(), g.kernel[0] * g.kernel[1]);
    if ihw == 0 {
        return;
    }
    let taps = taps(g);
    dx.par_chunks_mut(ihw).zip(dy.par_chunks(ohw.max(1))).enumerate().for_each(|(plane, (xp, yp))| {
        let c = plane % g.in_channels;
        if let Start::Overwrite(bias) = start {
            xp.fill(bias.map_or(T::ZERO, |b| b[c]));
        }
        if ohw > 0 {
            transpose_plane(g, &taps, &w[c * kk..(c + 1) * kk], yp, xp);
        }
    });
}

/// dw += the correlation of dy with x per channel (images in order, each tap's sum over
/// one plane first); db += the sums of dy per channel.
pub fn weights<T: Real>(g: &ConvGeom, x: &[T], dy: &[T], dw: &mut [T], db: Option<&mut [T]>) {
    let (ihw, ohw, kk, c_n) = (g.in_plane(), g.out_plane(), g.kernel[0] * g.kernel[1], g.in_channels);
    if ohw > 0 && ihw > 0 {
        let taps = taps(g);
        dw.par_chunks_mut(kk).enumerate().for_each(|(c, wc)| {
            for n in 0..g.batch {
                let xp = &x[(n * c_n + c) * ihw..][..ihw];
                let yp = &dy[(n * c_n + c) * ohw..][..ohw];
                for tap in &taps {
                    let mut s = T::ZERO;
                    for oh in tap.rows.0..tap.rows.1 {
                        for ow in tap.cols.0..tap.cols.1 {
                            s += yp[oh * g.out_w + ow] * xp[input_at(g, tap, oh, ow)];
                        }
                    }
                    wc[tap.index] += s;
                }
            }
        });
    }
    if let Some(db) = db {
        add_channel_sums(dy, g.out_channels, ohw, db);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{columns_apply, columns_transpose, columns_weights, Fused};
    use super::*;
    use crate::ops::gradcheck::Rng;

    /// (channels, [h, w], kernel, stride, pad, dilation).
    type Case = (usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], [usize; 2]);

    /// MobileNet's 3x3 stride 1 and 2, EfficientNet's 5x5, dilation, odd and asymmetric
    /// sizes, a kernel larger than the input.
    const CASES: &[Case] = &[
        (4, [9, 8], [3, 3], [1, 1], [1, 1], [1, 1]),
        (3, [9, 10], [3, 3], [2, 2], [1, 1], [1, 1]),
        (5, [11, 7], [5, 5], [2, 1], [2, 2], [1, 1]),
        (2, [8, 9], [3, 2], [1, 2], [2, 0], [2, 1]),
        (3, [2, 3], [5, 5], [1, 1], [2, 2], [1, 1]),
    ];

    fn close(what: &str, a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = b.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-12 * scale, "{what}: element {i}: {x} against the column path's {y}");
        }
    }

    /// Every pass against the column path (im2col or col2im and one GEMM per group), which
    /// the gradient checks and Caffe's fixtures hold to the definition.
    #[test]
    fn every_pass_matches_the_column_path() {
        let mut rng = Rng::new(71);
        for &(c, [h, w], k, s, p, d) in CASES {
            let g = ConvGeom::new(2, c, h, w, c, k, s, p, d, c).unwrap();
            assert!(applies(&g));
            let x = rng.uniform_vec(g.input_len(), -1.0, 1.0);
            let wt = rng.uniform_vec(g.weight_len(), -1.0, 1.0);
            let bias = rng.uniform_vec(c, -1.0, 1.0);
            let dy = rng.uniform_vec(g.output_len(), -1.0, 1.0);
            let what = |pass: &str| format!("{pass} {g:?}");
            for beta in [0.0, 1.0] {
                let start = rng.uniform_vec(g.output_len(), -1.0, 1.0);
                let (mut got, mut want) = (start.clone(), start);
                forward(&g, &x, &wt, Some(&bias), &mut got, beta);
                columns_apply(&g, &x, &wt, Some(&bias), &mut want, beta, Fused::No);
                close(&what("forward"), &got, &want);
            }
            let start = rng.uniform_vec(g.input_len(), -1.0, 1.0);
            for overwrite in [false, true] {
                let mode = |b| if overwrite { Start::Overwrite(b) } else { Start::Add };
                let (mut got, mut want) = (start.clone(), start.clone());
                transpose(&g, &dy, &wt, &mut got, mode(Some(&bias)));
                columns_transpose(&g, &dy, &wt, None, &mut want, mode(Some(&bias)), Fused::No);
                close(&what("transpose"), &got, &want);
            }
            let start = rng.uniform_vec(g.weight_len(), -1.0, 1.0);
            let (mut got, mut want) = (start.clone(), start);
            let (mut db_got, mut db_want) = (vec![0.5; c], vec![0.5; c]);
            weights(&g, &x, &dy, &mut got, Some(&mut db_got));
            columns_weights(&g, &x, &dy, &mut want, Some(&mut db_want));
            close(&what("weights"), &got, &want);
            close(&what("bias"), &db_got, &db_want);
        }
    }

    #[test]
    fn grouped_convolutions_that_are_not_depthwise_keep_the_column_path() {
        let g = |c, o, group| ConvGeom::new(1, c, 5, 5, o, [3, 3], [1, 1], [1, 1], [1, 1], group).unwrap();
        assert!(!applies(&g(4, 8, 4)), "a channel multiplier of 2");
        assert!(!applies(&g(4, 4, 2)), "two channels per group");
        assert!(!applies(&g(1, 1, 1)), "one channel, one group");
        assert!(applies(&g(6, 6, 6)));
    }
}
