//! Depthwise convolution (one input and one output channel per group, as MobileNet's and
//! EfficientNet's) computed directly, plane by plane: the column path's GEMMs would have one
//! row each and its column buffer k*k copies of the input. Every plane of every image is
//! independent, so the planes are shared among the threads and a sample's result does not
//! depend on its batch or on the thread count.
//!
//! The forward and backward-data passes copy a plane once into a padded form split by
//! stride phase (`Phases`), where every tap is a fixed shift, and then add the taps as
//! `shifted_sums`: each output starts at its bias (forward: plus y where beta is 1; backward:
//! 0, the sum then added to dx, where no bias is given) and the taps are added in the order
//! (ki, kj) forward, and with kernel rows from the last backward, the order in which output
//! rows reach a row of dx. Terms that fall in the padding are exact zeros. The weight gradient sums each tap over the positions whose input lies inside the
//! image (`valid_range`).

use super::{add_channel_sums, valid_range, Start};
use crate::device::cpu::with_scratch;
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

/// Output positions per block of `shifted_sums`: its running sums stay in vector registers
/// (4 AVX-512 or 8 AVX2 registers of f32).
const LANES: usize = 64;

/// `out[i] = start + sum over t of ws[t] * src[offs[t] + i]`, the terms added in the order of
/// `ws`, for every i of `out` (a multiple of LANES long); `start` None starts from what `out`
/// holds. The stride-1 reads at a fixed offset per tap let every tap be one vector load and
/// one multiply and add per vector of the sums, which stay in registers across the taps.
#[inline(always)]
fn shifted_sums<T: Real>(src: &[T], ws: &[T], offs: &[usize], start: Option<T>, out: &mut [T]) {
    assert_eq!(ws.len(), offs.len(), "one offset per weight");
    assert_eq!(out.len() % LANES, 0, "the sums come in whole blocks");
    assert!(offs.iter().all(|&o| o + out.len() <= src.len()), "a tap reads past its source");
    for (block, sums) in out.chunks_exact_mut(LANES).enumerate() {
        let base = block * LANES;
        let mut acc: [T; LANES] = match start {
            Some(v) => [v; LANES],
            None => sums.try_into().expect("a block of LANES sums"),
        };
        for (&w, &o) in ws.iter().zip(offs) {
            // SAFETY: o + base + LANES <= o + out.len() <= src.len(), asserted above; the
            // bounds are checked once per call so that the sums are never spilled for a
            // check inside the loop.
            let s: &[T; LANES] = unsafe { &*src.as_ptr().add(o + base).cast::<[T; LANES]>() };
            for l in 0..LANES {
                acc[l] += w * s[l];
            }
        }
        sums.copy_from_slice(&acc);
    }
}

/// One plane's padded input split by stride phase, as `shifted_sums` reads it. Phase
/// (pr, pc) holds the padded rows r = pr and the columns c = pc (mod the stride), entry
/// (r / s_h, c / s_w) at row width `width`; in that layout output (oh, ow) of tap (ki, kj)
/// reads entry (oh + d_h ki / s_h, ow + d_w kj / s_w) of phase (d_h ki % s_h, d_w kj % s_w),
/// that is position oh * width + ow plus an offset of the tap's own. Only the phases some
/// tap reads are kept (a stride wider than the kernel leaves most of them unread). The
/// outputs are computed at oh * width + ow too: the columns from out_w to width are wasted
/// work (their values are discarded), and the rows never wrap for the columns kept.
struct Phases {
    /// (pr, pc) of each phase kept, in the order of `phase_of`.
    kept: Vec<(usize, usize)>,
    /// Entries per row of a phase, and rows of it.
    width: usize,
    rows: usize,
    /// Each tap's (ki, kj order) phase, as an index into `kept`, and offset inside it.
    phase_of: Vec<usize>,
    inner: Vec<usize>,
}

impl Phases {
    fn new(g: &ConvGeom) -> Phases {
        let [sh, sw] = g.stride;
        let (padded_h, padded_w) = (g.in_h + 2 * g.pad[0], g.in_w + 2 * g.pad[1]);
        let (rows, width) = (padded_h.div_ceil(sh), padded_w.div_ceil(sw));
        let (mut kept, mut phase_of, mut inner) = (Vec::new(), Vec::new(), Vec::new());
        for ki in 0..g.kernel[0] {
            let r = ki * g.dilation[0];
            for kj in 0..g.kernel[1] {
                let c = kj * g.dilation[1];
                let phase = (r % sh, c % sw);
                let q = kept.iter().position(|&k| k == phase).unwrap_or_else(|| {
                    kept.push(phase);
                    kept.len() - 1
                });
                phase_of.push(q);
                inner.push((r / sh) * width + c / sw);
            }
        }
        Phases { kept, width, rows, phase_of, inner }
    }

    fn plane(&self) -> usize {
        self.rows * self.width
    }

    /// The computed outputs of a plane, whole blocks.
    fn wide_outputs(&self, g: &ConvGeom) -> usize {
        (g.out_h * self.width).next_multiple_of(LANES)
    }

    /// The sums computed for one phase of dx in the backward-data pass, whole blocks.
    fn phase_sums(&self) -> usize {
        self.plane().next_multiple_of(LANES)
    }
}

/// Along one axis of `size` values padded by `pad`, the positions of phase `phase` of stride
/// `s`: the first one's index in the phase and in the image, and how many there are (the
/// rest follow one apart in the phase, `s` apart in the image).
#[inline(always)]
fn phase_span(size: usize, pad: usize, s: usize, phase: usize) -> (usize, usize, usize) {
    let first = (phase + s - pad % s) % s;
    let count = if first < size { (size - first).div_ceil(s) } else { 0 };
    ((first + pad) / s, first, count)
}

/// Copies image plane `xp` into phase `(pr, pc)` laid out as in `Phases`, the positions
/// inside the image only.
#[inline(always)]
fn gather_phase<T: Real>(g: &ConvGeom, ph: &Phases, (pr, pc): (usize, usize), xp: &[T], phase: &mut [T]) {
    let [sh, sw] = g.stride;
    let (a0, ih0, rows) = phase_span(g.in_h, g.pad[0], sh, pr);
    let (b0, iw0, cols) = phase_span(g.in_w, g.pad[1], sw, pc);
    for r in 0..rows {
        let (a, ih) = (a0 + r, ih0 + r * sh);
        let (img, dst) = (&xp[ih * g.in_w..(ih + 1) * g.in_w], &mut phase[a * ph.width + b0..][..cols]);
        for (d, &v) in dst.iter_mut().zip(img[iw0..].iter().step_by(sw)) {
            *d = v;
        }
    }
}

/// The reverse of `gather_phase`: phase `(pr, pc)` into the image plane `xp`, added to what
/// it holds (`add`) or over it.
#[inline(always)]
fn scatter_phase<T: Real>(g: &ConvGeom, ph: &Phases, (pr, pc): (usize, usize), phase: &[T], xp: &mut [T], add: bool) {
    let [sh, sw] = g.stride;
    let (a0, ih0, rows) = phase_span(g.in_h, g.pad[0], sh, pr);
    let (b0, iw0, cols) = phase_span(g.in_w, g.pad[1], sw, pc);
    for r in 0..rows {
        let (a, ih) = (a0 + r, ih0 + r * sh);
        let (img, src) = (&mut xp[ih * g.in_w..(ih + 1) * g.in_w], &phase[a * ph.width + b0..][..cols]);
        let img = img[iw0..].iter_mut().step_by(sw).zip(src);
        if add {
            img.for_each(|(d, &v)| *d += v);
        } else {
            img.for_each(|(d, &v)| *d = v);
        }
    }
}

crate::multiversion! {
    /// One plane of `forward`: channel `c`'s output `yp` from its input `xp`. `offs` are the
    /// taps' offsets into the kept phases laid end to end, which `scratch` holds, followed by
    /// the wide outputs.
    fn forward_plane<T: Real>(g: &ConvGeom, ph: &Phases, offs: &[usize], wc: &[T], b: T, beta: T, xp: &[T], yp: &mut [T], scratch: &mut [T]) {
        let plane = ph.plane();
        let n = ph.wide_outputs(g);
        let (src, wide) = scratch.split_at_mut(ph.kept.len() * plane + n);
        src.fill(T::ZERO);
        for (q, &phase) in ph.kept.iter().enumerate() {
            gather_phase(g, ph, phase, xp, &mut src[q * plane..(q + 1) * plane]);
        }
        let wide = &mut wide[..n];
        let start = if beta == T::ZERO {
            // Every output starts at its bias, then the taps are added in (ki, kj) order.
            Some(b)
        } else {
            for oh in 0..g.out_h {
                for (w, &y) in wide[oh * ph.width..][..g.out_w].iter_mut().zip(&yp[oh * g.out_w..(oh + 1) * g.out_w]) {
                    *w = if b != T::ZERO { y + b } else { y };
                }
            }
            None
        };
        shifted_sums(src, wc, offs, start, wide);
        for oh in 0..g.out_h {
            yp[oh * g.out_w..(oh + 1) * g.out_w].copy_from_slice(&wide[oh * ph.width..][..g.out_w]);
        }
    }
}

/// Scratch values per thread for one plane of `forward`.
fn forward_scratch(g: &ConvGeom, ph: &Phases) -> usize {
    ph.kept.len() * ph.plane() + 2 * ph.wide_outputs(g)
}

/// y = conv(x) + beta * y (beta 0 or 1) + bias per channel.
pub fn forward<T: Real>(g: &ConvGeom, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T], beta: T) {
    let (ihw, ohw, kk) = (g.in_plane(), g.out_plane(), g.kernel[0] * g.kernel[1]);
    if ohw == 0 || ihw == 0 {
        return;
    }
    let ph = Phases::new(g);
    let offs: Vec<usize> = ph.phase_of.iter().zip(&ph.inner).map(|(&q, &i)| q * ph.plane() + i).collect();
    let len = forward_scratch(g, &ph);
    // Each plane's loops run in `forward_plane`, built for this CPU's vector instructions
    // (in the pool's closure itself they were built for baseline x86-64).
    y.par_chunks_mut(ohw).zip(x.par_chunks(ihw)).enumerate().for_each(|(plane, (yp, xp))| {
        let c = plane % g.in_channels;
        let b = bias.map_or(T::ZERO, |b| b[c]);
        with_scratch(len, |scratch: &mut [T]| forward_plane(g, &ph, &offs, &w[c * kk..(c + 1) * kk], b, beta, xp, yp, scratch));
    });
}

/// For `transpose`: the taps that reach each kept phase of dx, as indices into the kernel,
/// in the order the sums add them (kernel rows from the last, columns from the first: the
/// order of the output rows that reach a dx row), with their offsets into the wide dy.
struct TransposeTaps {
    /// Kernel indices, phase after phase; `ends[q]` closes phase q's.
    taps: Vec<usize>,
    offs: Vec<usize>,
    ends: Vec<usize>,
    /// Zeros in front of the wide dy: the largest offset inside a phase.
    front: usize,
}

impl TransposeTaps {
    fn new(g: &ConvGeom, ph: &Phases) -> TransposeTaps {
        let front = ph.inner.iter().copied().max().unwrap_or(0);
        let (mut taps, mut offs, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        for q in 0..ph.kept.len() {
            for ki in (0..g.kernel[0]).rev() {
                for kj in 0..g.kernel[1] {
                    let t = ki * g.kernel[1] + kj;
                    if ph.phase_of[t] == q {
                        taps.push(t);
                        offs.push(front - ph.inner[t]);
                    }
                }
            }
            ends.push(taps.len());
        }
        TransposeTaps { taps, offs, ends, front }
    }

    /// The wide dy: zeros in front, out_h rows of `width`, zeros to cover a whole phase's
    /// blocks of sums.
    fn dy_len(&self, ph: &Phases) -> usize {
        self.front + ph.phase_sums()
    }
}

crate::multiversion! {
    /// One plane of `transpose`: channel `c`'s dx `xp` += conv^T of its dy `yp`, or
    /// `= bias + conv^T` with `bias` given. Every kept phase of dx is one `shifted_sums`
    /// over the wide dy (zeros where the output has no value), the gather form of the taps'
    /// scatter, so the sums stay in registers; they start from the bias (or 0, and are then
    /// added to dx). Positions of dx in no kept phase get the bias alone. `scratch` holds
    /// the taps' weights, the wide dy and one phase of dx.
    fn transpose_plane<T: Real>(g: &ConvGeom, ph: &Phases, tt: &TransposeTaps, wc: &[T], bias: Option<T>, yp: &[T], xp: &mut [T], scratch: &mut [T]) {
        let (ws, rest) = scratch.split_at_mut(tt.taps.len());
        let (dyw, phase) = rest.split_at_mut(tt.dy_len(ph));
        for (v, &t) in ws.iter_mut().zip(&tt.taps) {
            *v = wc[t];
        }
        dyw.fill(T::ZERO);
        for oh in 0..g.out_h {
            dyw[tt.front + oh * ph.width..][..g.out_w].copy_from_slice(&yp[oh * g.out_w..(oh + 1) * g.out_w]);
        }
        if let Some(b) = bias {
            if ph.kept.len() < g.stride[0] * g.stride[1] {
                xp.fill(b);
            }
        }
        let phase = &mut phase[..ph.phase_sums()];
        let mut from = 0;
        for (q, &kept) in ph.kept.iter().enumerate() {
            let to = tt.ends[q];
            shifted_sums(dyw, &ws[from..to], &tt.offs[from..to], Some(bias.unwrap_or(T::ZERO)), phase);
            scatter_phase(g, ph, kept, phase, xp, bias.is_none());
            from = to;
        }
    }
}

/// dx = conv^T(dy) after what `start` says (added to dx, or over zeros plus a bias).
pub(super) fn transpose<T: Real>(g: &ConvGeom, dy: &[T], w: &[T], dx: &mut [T], start: Start<'_, T>) {
    let (ihw, ohw, kk) = (g.in_plane(), g.out_plane(), g.kernel[0] * g.kernel[1]);
    if ihw == 0 {
        return;
    }
    let ph = Phases::new(g);
    let tt = TransposeTaps::new(g, &ph);
    let len = tt.taps.len() + tt.dy_len(&ph) + ph.phase_sums();
    dx.par_chunks_mut(ihw).zip(dy.par_chunks(ohw.max(1))).enumerate().for_each(|(plane, (xp, yp))| {
        let c = plane % g.in_channels;
        let bias = match start {
            Start::Add => None,
            Start::Overwrite(bias) => Some(bias.map_or(T::ZERO, |b| b[c])),
        };
        if ohw > 0 {
            with_scratch(len, |scratch: &mut [T]| transpose_plane(g, &ph, &tt, &w[c * kk..(c + 1) * kk], bias, yp, xp, scratch));
        } else if let Some(b) = bias {
            xp.fill(b);
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
        // Several blocks of sums, stride and dilation 2 together, a stride wider than the
        // kernel (phases no tap reads), EfficientNet's 5x5 stride 2 on 7x7.
        (3, [20, 19], [3, 3], [2, 2], [1, 1], [2, 2]),
        (2, [17, 16], [5, 5], [1, 1], [2, 2], [1, 1]),
        (2, [13, 11], [1, 1], [3, 2], [0, 1], [1, 1]),
        (2, [7, 7], [5, 5], [2, 2], [2, 2], [1, 1]),
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
