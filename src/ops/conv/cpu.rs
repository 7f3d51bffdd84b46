//! Convolution and deconvolution (Caffe semantics), by im2col / col2im plus one GEMM per
//! image and group. Deconvolution is not a second implementation: its forward pass is the
//! convolution's backward-data pass, its backward-data pass the convolution's forward pass,
//! and its weight gradient the convolution's with the roles of input and output swapped.
//! (A sub-pixel-phase deconvolution, one GEMM per phase and no col2im, was tried: no faster
//! on the fc6 generator once each image's GEMM ran on its own thread, so it is gone.)
//! Depthwise convolutions (`depthwise`) are computed directly instead, plane by plane, and
//! large 3 x 3 convolutions of stride 1 by Winograd's transform (`winograd`).

mod depthwise;
mod winograd;

use super::{ConvKernels, FusedRelu};
use crate::device::cpu::CpuParam;
use crate::device::cpu::{with_scratch, SharedMut};
use crate::device::Cpu;
use crate::ir::ConvGeom;
use crate::ops::activation::{relu_backward, relu_in_place};
use crate::ops::gemm::cpu::{gemm, gemm_on, gemm_raw, Threads};
use crate::ops::Dx;
use crate::real::Real;
use anyhow::Result;
use rayon::prelude::*;

/// The column buffer for one whole image (all groups), allocated once per call.
fn col_buffer<T: Real>(g: &ConvGeom) -> Vec<T> {
    if g.is_pointwise() {
        Vec::new()
    } else {
        vec![T::ZERO; g.in_channels * g.kernel[0] * g.kernel[1] * g.out_plane()]
    }
}

/// Output positions o in 0..out whose input coordinate o*stride + offset lies in 0..size,
/// as a range, so the copy loops below need no per-element test.
pub(super) fn valid_range(out: usize, size: usize, offset: isize, stride: usize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if offset >= 0 { 0 } else { (-offset + s - 1) / s };
    let room = size as isize - offset;
    let hi = if room <= 0 { 0 } else { ((room + s - 1) / s).min(out as isize) };
    let lo = lo.min(hi);
    (lo as usize, hi as usize)
}

/// Visits every row (channel, ki, kj) of one image's column matrix with, per output row oh
/// whose input row is inside the image, the input offset of the first valid output column.
/// Shared by im2col and col2im so the two are transposes of each other by construction.
#[inline(always)]
fn for_each_col_row(g: &ConvGeom, mut row_fn: impl FnMut(usize, usize, (usize, usize), (usize, usize), usize, usize)) {
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [ph, pw] = g.pad;
    let [dh, dw] = g.dilation;
    for c in 0..g.in_channels {
        for ki in 0..kh {
            let h_off = (ki * dh) as isize - ph as isize;
            let hr = valid_range(g.out_h, g.in_h, h_off, sh);
            for kj in 0..kw {
                let w_off = (kj * dw) as isize - pw as isize;
                let mut wr = valid_range(g.out_w, g.in_w, w_off, sw);
                if wr.0 == wr.1 {
                    wr = (0, 0); // keeps iw0 a valid (empty) slice start
                }
                let row = (c * kh + ki) * kw + kj;
                // Input column of output column wr.0 (in range by construction of wr).
                let iw0 = if wr.1 > 0 { wr.0 * sw + kj * dw - pw } else { 0 };
                row_fn(row, c, hr, wr, ki * dh, iw0);
            }
        }
    }
}

/// Whether im2col and col2im may take the rows of taps kj and kj + 1 together: stride 2
/// across, dilation 1 and an even kernel width, where the two taps read neighbouring columns
/// of x (2 ow + kj - pw and one more), so both rows go in one pass over interleaved pairs,
/// which vectorizes, instead of two strided loops.
fn pairs_of_taps(g: &ConvGeom) -> bool {
    g.stride[1] == 2 && g.dilation[1] == 1 && g.kernel[1].is_multiple_of(2)
}

/// Taps kj and kj + 1 of one (channel, ki): the column row of kj (kj + 1's is the next),
/// and the output columns whose input column is inside the image for each tap and for both.
struct TapPair {
    row: usize,
    kj: usize,
    a: (usize, usize),
    b: (usize, usize),
    both: (usize, usize),
}

/// Visits every pair of taps of one image's column matrix (`pairs_of_taps`) with its channel,
/// ki * dh and the output rows in `rows` whose input row is inside the image. Shared by the
/// paired im2col and col2im so the two are transposes of each other by construction.
#[inline(always)]
fn for_each_tap_pair(g: &ConvGeom, rows: &std::ops::Range<usize>, mut pair_fn: impl FnMut(usize, usize, (usize, usize), TapPair)) {
    let (sh, ph, pw) = (g.stride[0], g.pad[0], g.pad[1]);
    let ([kh, kw], dh) = (g.kernel, g.dilation[0]);
    for c in 0..g.in_channels {
        for ki in 0..kh {
            let (h_lo, h_hi) = valid_range(g.out_h, g.in_h, (ki * dh) as isize - ph as isize, sh);
            let inside = (h_lo.clamp(rows.start, rows.end), h_hi.clamp(rows.start, rows.end));
            for kj in (0..kw).step_by(2) {
                let a = valid_range(g.out_w, g.in_w, kj as isize - pw as isize, 2);
                let b = valid_range(g.out_w, g.in_w, (kj + 1) as isize - pw as isize, 2);
                let lo = a.0.max(b.0);
                let both = (lo, a.1.min(b.1).max(lo));
                pair_fn(c, ki * dh, inside, TapPair { row: (c * kh + ki) * kw + kj, kj, a, b, both });
            }
        }
    }
}

/// im2col by pairs of taps (`pairs_of_taps`).
#[inline(always)]
fn im2col_pairs<T: Real>(g: &ConvGeom, x: &[T], rows: std::ops::Range<usize>, col: &mut [T]) {
    let (ow_n, plane, sh, ph, pw) = (g.out_w, g.in_plane(), g.stride[0], g.pad[0], g.pad[1]);
    let width = rows.len() * ow_n;
    for_each_tap_pair(
        g,
        &rows,
        #[inline(always)]
        |c, kh_off, (lo, hi), t| {
            let src_plane = &x[c * plane..(c + 1) * plane];
            let (ra, rb) = col[t.row * width..(t.row + 2) * width].split_at_mut(width);
            for (i, oh) in rows.clone().enumerate() {
                let (a, b) = (&mut ra[i * ow_n..(i + 1) * ow_n], &mut rb[i * ow_n..(i + 1) * ow_n]);
                if oh < lo || oh >= hi {
                    a.fill(T::ZERO);
                    b.fill(T::ZERO);
                    continue;
                }
                let ih = oh * sh + kh_off - ph;
                let src = &src_plane[ih * g.in_w..(ih + 1) * g.in_w];
                // The ends where only one tap of the pair is inside the image.
                for (taps, (w_lo, w_hi), k) in [(&mut *a, t.a, t.kj), (&mut *b, t.b, t.kj + 1)] {
                    taps[..w_lo].fill(T::ZERO);
                    taps[w_hi.max(w_lo)..].fill(T::ZERO);
                    for ow in (w_lo..w_hi).filter(|&ow| ow < t.both.0 || ow >= t.both.1) {
                        taps[ow] = src[2 * ow + k - pw];
                    }
                }
                if t.both.0 < t.both.1 {
                    let first = 2 * t.both.0 + t.kj - pw;
                    let pairs = &src[first..first + 2 * (t.both.1 - t.both.0)];
                    let both = t.both.0..t.both.1;
                    for ((p, q), s) in a[both.clone()].iter_mut().zip(&mut b[both]).zip(pairs.chunks_exact(2)) {
                        *p = s[0];
                        *q = s[1];
                    }
                }
            }
        },
    );
}

crate::multiversion! {
/// col[(c*kh + ki)*kw + kj][(oh - rows.start)*out_w + ow] = x[c][oh*sh - ph + ki*dh][ow*sw - pw + kj*dw]
/// for the output rows oh in `rows`, 0 outside the image.
fn im2col<T: Real>(g: &ConvGeom, x: &[T], rows: std::ops::Range<usize>, col: &mut [T]) {
    if pairs_of_taps(g) {
        im2col_pairs(g, x, rows, col)
    } else {
        im2col_rows(g, x, rows, col)
    }
}
}

/// im2col one column row at a time.
#[inline(always)]
fn im2col_rows<T: Real>(g: &ConvGeom, x: &[T], rows: std::ops::Range<usize>, col: &mut [T]) {
    let (ow_n, plane, sh, sw, ph) = (g.out_w, g.in_plane(), g.stride[0], g.stride[1], g.pad[0]);
    let width = rows.len() * ow_n;
    // inline(always): a closure the compiler keeps apart is built without the caller's
    // vector instructions (it ran as baseline x86-64 code).
    for_each_col_row(
        g,
        #[inline(always)]
        |row, c, (h_lo, h_hi), (w_lo, w_hi), kh_off, iw0| {
            let (lo, hi) = (h_lo.clamp(rows.start, rows.end), h_hi.clamp(rows.start, rows.end));
            let dst_row = &mut col[row * width..(row + 1) * width];
            let src_plane = &x[c * plane..(c + 1) * plane];
            dst_row[..(lo - rows.start) * ow_n].fill(T::ZERO);
            dst_row[(hi - rows.start) * ow_n..].fill(T::ZERO);
            for (i, dst) in dst_row[(lo - rows.start) * ow_n..(hi - rows.start) * ow_n].chunks_exact_mut(ow_n).enumerate() {
                let ih = (lo + i) * sh + kh_off - ph;
                dst[..w_lo].fill(T::ZERO);
                dst[w_hi..].fill(T::ZERO);
                let dst = &mut dst[w_lo..w_hi];
                let src = &src_plane[ih * g.in_w..(ih + 1) * g.in_w];
                if sw == 1 {
                    dst.copy_from_slice(&src[iw0..iw0 + dst.len()]);
                } else if !dst.is_empty() {
                    let src = &src[iw0..=iw0 + (dst.len() - 1) * sw];
                    for (q, d) in dst.iter_mut().enumerate() {
                        *d = src[q * sw];
                    }
                }
            }
        },
    );
}

/// col2im_add by pairs of taps (`pairs_of_taps`). An element of x is reached from taps of
/// one parity only, so each element adds the same terms in the same order as the general
/// loop: the same bits.
#[inline(always)]
fn col2im_add_pairs<T: Real>(g: &ConvGeom, col: &[T], rows: std::ops::Range<usize>, x: &mut [T]) {
    let (ow_n, plane, sh, ph, pw) = (g.out_w, g.in_plane(), g.stride[0], g.pad[0], g.pad[1]);
    let width = rows.len() * ow_n;
    for_each_tap_pair(
        g,
        &rows,
        #[inline(always)]
        |c, kh_off, (lo, hi), t| {
            let dst_plane = &mut x[c * plane..(c + 1) * plane];
            for oh in lo..hi {
                let ih = oh * sh + kh_off - ph;
                let at = (oh - rows.start) * ow_n;
                let (a, b) = (&col[t.row * width + at..][..ow_n], &col[(t.row + 1) * width + at..][..ow_n]);
                let dst = &mut dst_plane[ih * g.in_w..(ih + 1) * g.in_w];
                // The ends where only one tap of the pair is inside the image.
                for (taps, (w_lo, w_hi), k) in [(a, t.a, t.kj), (b, t.b, t.kj + 1)] {
                    for ow in (w_lo..w_hi).filter(|&ow| ow < t.both.0 || ow >= t.both.1) {
                        dst[2 * ow + k - pw] += taps[ow];
                    }
                }
                if t.both.0 < t.both.1 {
                    let first = 2 * t.both.0 + t.kj - pw;
                    let pairs = &mut dst[first..first + 2 * (t.both.1 - t.both.0)];
                    let both = t.both.0..t.both.1;
                    for ((d, &p), &q) in pairs.chunks_exact_mut(2).zip(&a[both.clone()]).zip(&b[both]) {
                        d[0] += p;
                        d[1] += q;
                    }
                }
            }
        },
    );
}

crate::multiversion! {
/// The transpose of im2col: x[c][ih][iw] += every column entry (of the output rows `rows`)
/// that im2col read from there.
fn col2im_add<T: Real>(g: &ConvGeom, col: &[T], rows: std::ops::Range<usize>, x: &mut [T]) {
    if pairs_of_taps(g) {
        col2im_add_pairs(g, col, rows, x)
    } else {
        col2im_add_rows(g, col, rows, x)
    }
}
}

/// col2im_add one column row at a time.
#[inline(always)]
fn col2im_add_rows<T: Real>(g: &ConvGeom, col: &[T], rows: std::ops::Range<usize>, x: &mut [T]) {
    let (ow_n, plane, sh, sw, ph) = (g.out_w, g.in_plane(), g.stride[0], g.stride[1], g.pad[0]);
    let width = rows.len() * ow_n;
    // inline(always): a closure the compiler keeps apart is built without the caller's
    // vector instructions (it ran as baseline x86-64 code).
    for_each_col_row(
        g,
        #[inline(always)]
        |row, c, (h_lo, h_hi), (w_lo, w_hi), kh_off, iw0| {
            let (lo, hi) = (h_lo.clamp(rows.start, rows.end), h_hi.clamp(rows.start, rows.end));
            let src_row = &col[row * width..(row + 1) * width];
            let dst_plane = &mut x[c * plane..(c + 1) * plane];
            for (i, src) in src_row[(lo - rows.start) * ow_n..(hi - rows.start) * ow_n].chunks_exact(ow_n).enumerate() {
                let ih = (lo + i) * sh + kh_off - ph;
                let src = &src[w_lo..w_hi];
                let dst = &mut dst_plane[ih * g.in_w..(ih + 1) * g.in_w];
                if sw == 1 {
                    for (d, s) in dst[iw0..iw0 + src.len()].iter_mut().zip(src) {
                        *d += *s;
                    }
                } else if !src.is_empty() {
                    let dst = &mut dst[iw0..=iw0 + (src.len() - 1) * sw];
                    for (q, s) in src.iter().enumerate() {
                        dst[q * sw] += *s;
                    }
                }
            }
        },
    );
}

/// Column values below which im2col and col2im stay on the calling thread.
const SPLIT_COLUMN_VALUES: usize = 16 * 1024;

/// Input channels per block when im2col or col2im splits its band over the pool: only where
/// the products are split too (`Threads::Blocks`, fewer images than threads; otherwise
/// each thread has an image of its own) and the band is large enough, else every channel.
fn channels_per_block(g: &ConvGeom, threads: Threads, width: usize) -> usize {
    let workers = rayon::current_num_threads();
    let values = g.in_channels * g.kernel[0] * g.kernel[1] * width;
    if threads != Threads::Blocks || workers < 2 || values < SPLIT_COLUMN_VALUES || g.in_plane() == 0 {
        return g.in_channels.max(1);
    }
    // A few blocks per thread, so a thread that finishes early takes another.
    g.in_channels.div_ceil(4 * workers).max(1)
}

/// `im2col` with blocks of input channels across the pool where `channels_per_block` says
/// so. A channel's column rows come from its own input plane alone: the same columns.
fn im2col_on<T: Real>(threads: Threads, g: &ConvGeom, x: &[T], rows: std::ops::Range<usize>, col: &mut [T]) {
    let width = rows.len() * g.out_w;
    let (taps, plane) = (g.kernel[0] * g.kernel[1], g.in_plane());
    channel_blocks(g, threads, width, col, taps * width, x, plane, |sub, cb, xb| im2col(sub, xb, rows.clone(), cb));
}

/// `col2im_add` with blocks of input channels across the pool where `channels_per_block`
/// says so. An input plane receives only its own channel's column rows, each element its
/// terms in the same order: the same bits.
fn col2im_add_on<T: Real>(threads: Threads, g: &ConvGeom, col: &[T], rows: std::ops::Range<usize>, x: &mut [T]) {
    let width = rows.len() * g.out_w;
    let (taps, plane) = (g.kernel[0] * g.kernel[1], g.in_plane());
    channel_blocks(g, threads, width, x, plane, col, taps * width, |sub, xb, cb| col2im_add(sub, cb, rows.clone(), xb));
}

/// Runs `f(geometry, dst, src)` on the whole of `dst` and `src`, or, where
/// `channels_per_block` splits them, on blocks of input channels across the pool (`dst_per`
/// and `src_per` values per channel), each with the geometry of its own channels.
#[allow(clippy::too_many_arguments)]
fn channel_blocks<T: Real>(
    g: &ConvGeom,
    threads: Threads,
    width: usize,
    dst: &mut [T],
    dst_per: usize,
    src: &[T],
    src_per: usize,
    f: impl Fn(&ConvGeom, &mut [T], &[T]) + Sync + Send,
) {
    let per = channels_per_block(g, threads, width);
    if per >= g.in_channels {
        return f(g, dst, src);
    }
    let (dst, src) = (&mut dst[..g.in_channels * dst_per], &src[..g.in_channels * src_per]);
    dst.par_chunks_mut(per * dst_per).zip(src.par_chunks(per * src_per)).for_each(|(d, s)| {
        let sub = ConvGeom { in_channels: d.len() / dst_per, ..*g };
        f(&sub, d, s)
    });
}

/// y[n][c][..] += bias[c].
fn add_channel_bias<T: Real>(y: &mut [T], channels: usize, plane: usize, bias: &[T]) {
    assert_eq!(bias.len(), channels, "bias has the wrong length");
    if plane == 0 {
        return;
    }
    for (i, map) in y.chunks_exact_mut(plane).enumerate() {
        let b = bias[i % channels];
        map.iter_mut().for_each(|v| *v += b);
    }
}

/// db[c] += sum over images and positions of dy[n][c][..].
fn add_channel_sums<T: Real>(dy: &[T], channels: usize, plane: usize, db: &mut [T]) {
    assert_eq!(db.len(), channels, "bias gradient has the wrong length");
    if plane == 0 {
        return;
    }
    for (i, map) in dy.chunks_exact(plane).enumerate() {
        // Sum each map on its own first: fewer rounding steps than adding into db directly.
        let mut s = T::ZERO;
        for &v in map {
            s += v;
        }
        db[i % channels] += s;
    }
}

/// Runs `f(a_n, b_n, threads)` on every image's slices of `a` and `b`: images across the
/// pool, each product on its own thread, when there are at least as many images as threads
/// (one product per core packs and computes best); otherwise one image at a time with each
/// product's rows split over the pool.
fn per_image<A: Sync, B: Send>(a: &[A], a_img: usize, b: &mut [B], b_img: usize, f: impl Fn(usize, &[A], &mut [B], Threads) + Sync + Send) {
    let images = a.len() / a_img.max(1);
    if images >= rayon::current_num_threads() {
        a.par_chunks(a_img).zip(b.par_chunks_mut(b_img)).enumerate().for_each(|(n, (an, bn))| f(n, an, bn, Threads::One));
    } else {
        a.chunks(a_img).zip(b.chunks_mut(b_img)).enumerate().for_each(|(n, (an, bn))| f(n, an, bn, Threads::Blocks));
    }
}

/// Runs `f(gi, dst_gi, threads)` for each of `groups` groups, `dst_gi` being group `gi`'s
/// `group_len` values of `dst`. Where the products would each be split over the pool
/// (`Threads::Blocks`, fewer images than threads) and there are at least as many groups
/// as threads, the groups go across the pool instead, each product on one thread: every
/// thread then packs only its own group's B, where a split product packs all of B on each
/// thread. Either way each product's bits are the same (`Threads` changes no bit).
fn per_group<T: Send>(
    threads: Threads,
    groups: usize,
    dst: &mut [T],
    group_len: usize,
    f: impl Fn(usize, &mut [T], Threads) + Sync + Send,
) {
    let dst = &mut dst[..groups * group_len];
    if threads == Threads::Blocks && groups >= rayon::current_num_threads() {
        dst.par_chunks_mut(group_len).enumerate().for_each(|(gi, d)| f(gi, d, Threads::One));
    } else {
        dst.chunks_mut(group_len).enumerate().for_each(|(gi, d)| f(gi, d, threads));
    }
}

/// What a ReLU fused into a pass (`Net::fuse_relus`) adds to it.
#[derive(Clone, Copy)]
enum Fused<'a, T> {
    No,
    /// A forward pass: the ReLU of this slope on each image's output, while it is in cache.
    Out(T),
    /// A backward-data pass: each image's output gradient masked first, as the ReLU's own
    /// backward pass would leave it (`y`, the output after the ReLU, gives the signs).
    In {
        slope: T,
        y: &'a [T],
    },
}

impl<'a, T: Real> Fused<'a, T> {
    fn forward(relu: Option<f32>) -> Self {
        relu.map_or(Fused::No, |s| Fused::Out(T::from_f32(s)))
    }

    /// For a backward-data pass whose output gradient has `dy_len` values.
    fn backward(relu: Option<(f32, &'a [T])>, dy_len: usize) -> Self {
        relu.map_or(Fused::No, |(s, y)| {
            assert_eq!(y.len(), dy_len, "conv: the fused ReLU's output does not match dy");
            Fused::In { slope: T::from_f32(s), y }
        })
    }

    /// Scratch values `mask_input` needs for one image of `len`.
    fn input_len(self, len: usize) -> usize {
        if let Fused::In { .. } = self {
            len
        } else {
            0
        }
    }

    /// Image `n` (of `len` values) of the pass's input: `xn` itself, or masked into `buf`.
    fn mask_input<'b>(self, n: usize, xn: &'b [T], buf: &'b mut [T]) -> &'b [T] {
        match self {
            Fused::In { slope, y } => {
                let len = xn.len();
                buf[..len].fill(T::ZERO);
                relu_backward(slope, &y[n * len..(n + 1) * len], xn, &mut buf[..len]);
                &buf[..len]
            }
            _ => xn,
        }
    }

    /// The ReLU on a finished output, where one is fused into the forward pass.
    fn finish_output(self, yn: &mut [T]) {
        if let Fused::Out(slope) = self {
            relu_in_place(slope, yn);
        }
    }
}

/// Column buffers are filled a band of output rows at a time, so a band's columns are
/// still in cache (L2) when the GEMM reads them or col2im adds them up: at most about this
/// many values per band...
const BAND_VALUES: usize = 256 * 1024;
/// ...but at least this many columns, so each band's GEMM stays wide enough to run fast.
const BAND_MIN_COLUMNS: usize = 256;

/// Column buffers with fewer rows than this are filled whole where each image's products
/// run on one thread: conv1 (363 rows) and the deconv0 backward pass (48) measured 20 %
/// slower in bands, deconv1 and deconv2 (512 and 1024 rows) 10-30 % faster (batch 8,
/// 2-core Xeon, best of 6). Where an image's products are split over the pool
/// (`Threads::Blocks`), the forward pass bands every column buffer: VGG-16's first
/// convolution (27 rows) 2.68 / 2.26 / 2.51 -> 1.74 / 1.44 / 1.63 ms at batch 1 (2-core
/// Zen 4 EPYC), the others level. The transposed pass keeps this rule at any thread count:
/// its col2im adds a band at a time, so banding there would change the order of the sums.
const BAND_MIN_COL_ROWS: usize = 512;

/// Which column buffers a pass fills in bands (`BAND_MIN_COL_ROWS` says why).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Banding {
    /// Those of at least `BAND_MIN_COL_ROWS` rows: the transposed pass, and the forward
    /// pass where each image's products run on one thread.
    Large,
    /// Every one: the forward pass where an image's products are split over the pool.
    Every,
}

impl Banding {
    fn forward(threads: Threads) -> Self {
        if threads == Threads::Blocks {
            Banding::Every
        } else {
            Banding::Large
        }
    }
}

/// Output rows per band of the column buffer (all of them for a pointwise convolution,
/// which reads its input in place). In the forward pass bands change no bit: each band's
/// product has at least `BAND_MIN_COLUMNS` columns, so it takes the whole product's path
/// (`gemm::cpu`), whose blocks of k depend on k alone.
fn band_rows(g: &ConvGeom, banding: Banding) -> usize {
    let col_rows = g.in_channels * g.kernel[0] * g.kernel[1];
    let min_rows = if banding == Banding::Every { 1 } else { BAND_MIN_COL_ROWS };
    if g.is_pointwise() || col_rows < min_rows {
        return g.out_h.max(1);
    }
    let per_row = (col_rows * g.out_w).max(1);
    (BAND_VALUES / per_row).max(BAND_MIN_COLUMNS.div_ceil(g.out_w.max(1))).clamp(1, g.out_h.max(1))
}

/// The bands of output rows of one image.
fn bands(g: &ConvGeom, banding: Banding) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let step = band_rows(g, banding);
    (0..g.out_h).step_by(step).map(move |r| r..(r + step).min(g.out_h))
}

/// Values in one band's column buffer (all groups; none for a pointwise convolution).
fn band_len(g: &ConvGeom, banding: Banding) -> usize {
    if g.is_pointwise() {
        0
    } else {
        g.in_channels * g.kernel[0] * g.kernel[1] * band_rows(g, banding) * g.out_w
    }
}

/// The forms of a convolution's weights a net keeps with the parameter (`CpuParam::derived`).
const TRANSPOSED_FORM: usize = 0;
const WINOGRAD_FORM: usize = 1;
const WINOGRAD_TRANSPOSED_FORM: usize = 2;

/// `kept`, or else the form `make` derives, made for this call alone.
fn kept_or_made<'a, T: Real>(kept: Option<&'a [T]>, made: &'a mut Vec<T>, make: impl FnOnce() -> Vec<T>) -> &'a [T] {
    kept.unwrap_or_else(|| {
        *made = make();
        made
    })
}

/// y = conv(x) + beta * y (beta is 0 or 1), plus `bias` per output channel when given.
/// `u`: the weights as `winograd::weights` gives them, where kept.
#[allow(clippy::too_many_arguments)]
fn conv_apply<T: Real>(g: &ConvGeom, x: &[T], w: &[T], u: Option<&[T]>, bias: Option<&[T]>, y: &mut [T], beta: T, fused: Fused<'_, T>) {
    if depthwise::applies(g) {
        // Direct plane by plane: the fused ReLU as a pass of its own over the whole batch.
        let mut masked = vec![T::ZERO; fused.input_len(x.len())];
        depthwise::forward(g, fused.mask_input(0, x, &mut masked), w, bias, y, beta);
        fused.finish_output(y);
    } else if winograd::applies(g) {
        let mut made = Vec::new();
        winograd::forward(g, x, kept_or_made(u, &mut made, || winograd::weights(g, w)), bias, y, beta, fused);
    } else {
        columns_apply(g, x, w, bias, y, beta, fused)
    }
}

/// `conv_apply` by columns, image by image (the bias on each image's output while it is
/// still in cache, on that image's thread), a band of output rows at a time.
fn columns_apply<T: Real>(g: &ConvGeom, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T], beta: T, fused: Fused<'_, T>) {
    let (og, kk, ohw) = (g.out_channels / g.group, g.group_rows(), g.out_plane());
    let (x_img, y_img) = (g.in_channels * g.in_plane(), g.out_channels * ohw);
    per_image(x, x_img, y, y_img, |n, xn, yn, threads| {
        let across = bands_across_pool(g, threads);
        let col_len = if across { 0 } else { band_len(g, Banding::forward(threads)) };
        with_scratch(col_len + fused.input_len(x_img), |scratch: &mut [T]| {
            let (col, masked) = scratch.split_at_mut(col_len);
            let xn = fused.mask_input(n, xn, masked);
            if across {
                return bands_on_pool(g, xn, w, yn, beta);
            }
            for rows in bands(g, Banding::forward(threads)) {
                let (first, n) = (rows.start * g.out_w, rows.len() * g.out_w);
                // The band's columns: B with n columns, rows `stride` apart.
                let (src, stride): (&[T], usize) = if g.is_pointwise() {
                    (&xn[first..], ohw)
                } else {
                    im2col_on(threads, g, xn, rows, col);
                    (&col[..], n)
                };
                per_group(threads, g.group, yn, og * ohw, |gi, y_gi, threads| {
                    gemm_on(
                        threads,
                        og,
                        kk,
                        n,
                        T::ONE,
                        &w[gi * og * kk..(gi + 1) * og * kk],
                        kk as isize,
                        1,
                        &src[gi * kk * stride..],
                        stride as isize,
                        1,
                        beta,
                        &mut y_gi[first..],
                        ohw as isize,
                        1,
                    )
                });
            }
        });
        if let Some(b) = bias {
            add_channel_bias(yn, g.out_channels, ohw, b);
        }
        fused.finish_output(yn);
    });
}

/// Whether `columns_apply` runs the bands of an image across the pool, each band's columns
/// and products on one thread: where the products would each be split over the pool
/// (`Threads::Blocks`, fewer images than threads), the image has at least as many bands
/// as there are threads, and fewer groups (with more, `per_group` puts whole groups on the
/// threads). A split product packs all of the band's columns on every thread and the
/// columns are filled by all threads at once; a band per thread packs only its own, and
/// fills them in its own cache. Each product is the same one either way, so are the bits
/// (`Threads` changes none).
fn bands_across_pool(g: &ConvGeom, threads: Threads) -> bool {
    let workers = rayon::current_num_threads();
    threads == Threads::Blocks
        && workers >= 2
        && !g.is_pointwise()
        && g.group < workers
        && g.out_h.div_ceil(band_rows(g, Banding::Every)) >= workers
}

/// One image's output `yn` = conv(xn) + beta * yn, its bands across the pool
/// (`bands_across_pool`), each band's columns in its thread's scratch.
fn bands_on_pool<T: Real>(g: &ConvGeom, xn: &[T], w: &[T], yn: &mut [T], beta: T) {
    let (og, kk, ohw) = (g.out_channels / g.group, g.group_rows(), g.out_plane());
    assert!(yn.len() >= g.out_channels * ohw, "conv: output too short for {g:?}");
    let out = SharedMut::new(yn);
    bands(g, Banding::Every).collect::<Vec<_>>().into_par_iter().for_each(|rows| {
        let (first, n) = (rows.start * g.out_w, rows.len() * g.out_w);
        with_scratch(band_len(g, Banding::Every), |col: &mut [T]| {
            im2col(g, xn, rows, col);
            for gi in 0..g.group {
                let offset = gi * og * ohw + first;
                // SAFETY: `yn` is borrowed mutably for the whole loop, and this band's
                // products write only columns first..first + n of each output row, which
                // no other band writes; `offset` + the product's extent lies inside `yn`
                // (gemm_raw checks it against the length given).
                unsafe {
                    gemm_raw(
                        Threads::One,
                        og,
                        kk,
                        n,
                        T::ONE,
                        &w[gi * og * kk..(gi + 1) * og * kk],
                        kk as isize,
                        1,
                        &col[gi * kk * n..],
                        n as isize,
                        1,
                        beta,
                        out.at(offset),
                        out.len_from(offset),
                        ohw as isize,
                        1,
                    )
                }
            }
        })
    });
}

fn assert_lens(g: &ConvGeom, input: usize, w: usize, output: usize) {
    assert_eq!(input, g.input_len(), "conv: input length does not match {g:?}");
    assert_eq!(w, g.weight_len(), "conv: weight length does not match {g:?}");
    assert_eq!(output, g.output_len(), "conv: output length does not match {g:?}");
}

/// y = conv(x) + bias (overwrites y). x: [N, C, H, W], w: [O, C/group, kh, kw], y: [N, O, OH, OW].
pub fn conv_forward<T: Real>(g: &ConvGeom, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T]) {
    conv_forward_fused(g, x, w, None, bias, None, y)
}

/// `conv_forward`, then the ReLU of slope `relu` (at least 0) on each image in its pass.
/// `u`: the weights as `winograd::weights` gives them, read in place of `w` where given.
pub fn conv_forward_fused<T: Real>(g: &ConvGeom, x: &[T], w: &[T], u: Option<&[T]>, bias: Option<&[T]>, relu: Option<f32>, y: &mut [T]) {
    assert_lens(g, x.len(), w.len(), y.len());
    conv_apply(g, x, w, u, bias, y, T::ZERO, Fused::forward(relu));
}

/// dx += conv^T(dy): per group, col = W^T dy, then col2im; image by image, a band of
/// output rows at a time.
pub fn conv_backward_data<T: Real>(g: &ConvGeom, dy: &[T], w: &[T], dx: &mut [T]) {
    conv_backward_data_fused(g, dy, w, None, None, None, dx, Dx::Add)
}

/// `conv_backward_data` of a convolution with a fused ReLU `(slope, y)`: each image's dy is
/// masked as `relu_backward` from the output after the ReLU would leave it, then used.
/// `wt`: the weights as `transposed_weights` gives them, read in place of `w` where given;
/// `ut` likewise as `winograd::transposed_weights` gives them. With `Dx::Overwrite`,
/// `dx = conv^T(dy)` whatever it held.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_data_fused<T: Real>(
    g: &ConvGeom,
    dy: &[T],
    w: &[T],
    wt: Option<&[T]>,
    ut: Option<&[T]>,
    relu: Option<(f32, &[T])>,
    dx: &mut [T],
    to: Dx,
) {
    assert_lens(g, dx.len(), w.len(), dy.len());
    let start = match to {
        Dx::Add => Start::Add,
        Dx::Overwrite => Start::Overwrite(None),
    };
    transpose_apply(g, dy, w, wt, ut, dx, start, Fused::backward(relu, dy.len()));
}

/// What `transpose_apply` does with what dx held.
#[derive(Clone, Copy)]
pub(super) enum Start<'a, T> {
    /// dx += conv^T(dy).
    Add,
    /// dx = conv^T(dy) + bias per input channel (a deconvolution's forward).
    Overwrite(Option<&'a [T]>),
}

/// `conv_backward_data` after what `start` says.
#[allow(clippy::too_many_arguments)]
fn transpose_apply<T: Real>(
    g: &ConvGeom,
    dy: &[T],
    w: &[T],
    wt: Option<&[T]>,
    ut: Option<&[T]>,
    dx: &mut [T],
    start: Start<'_, T>,
    fused: Fused<'_, T>,
) {
    if depthwise::applies(g) {
        let mut masked = vec![T::ZERO; fused.input_len(dy.len())];
        depthwise::transpose(g, fused.mask_input(0, dy, &mut masked), w, dx, start);
        fused.finish_output(dx);
    } else if winograd::applies_transposed(g) {
        let mut made = Vec::new();
        winograd::transpose(g, dy, kept_or_made(ut, &mut made, || winograd::transposed_weights(g, w)), dx, start, fused);
    } else {
        columns_transpose(g, dy, w, wt, dx, start, fused)
    }
}

/// Maps of at most this many positions read the weights transposed (`transposed_weights`)
/// in their transposed passes. The fc6 generator's forward passes at batch 8 (2-core AMD
/// EPYC, AVX2, 3 alternating runs of 20): deconv4 20.8-21.2 -> 12.9-14.2 ms, conv5_1
/// 9.4-9.7 -> 7.1-7.5 ms, deconv5 (16 positions) 2.3-2.8 -> 1.8-2.3 ms. On maps of 169
/// positions and more (CaffeNet's conv2-conv5 backward-data, the generator's 16 x 16 layers)
/// it was slower (docs/benchmarks.md).
const TRANSPOSED_WEIGHTS_MAX_POSITIONS: usize = 64;

/// The weights of `g` as its transposed passes read them best, or None to read them as
/// stored. These passes multiply by W^T: given W as stored, the GEMM crate packs it again
/// for every image and band, which costs more than the product when a map has few
/// positions and the weights are large; given W^T row by row it reads the weights where
/// they are. The sums are the same either way, bit for bit. The copy is kept with the
/// parameter (`CpuParam::derived`), so a net makes it once.
fn weights_for_transpose<'a, T: Real>(g: &ConvGeom, w: &'a CpuParam<'_, T>) -> Option<&'a [T]> {
    let eligible = g.out_plane() <= TRANSPOSED_WEIGHTS_MAX_POSITIONS && !depthwise::applies(g) && !winograd::applies_transposed(g);
    eligible.then(|| w.derived(TRANSPOSED_FORM, |w| transposed_weights(g, w)))
}

/// The Winograd form of the weights for the forward pass of `g`, where it takes that way.
fn winograd_weights<'a, T: Real>(g: &ConvGeom, w: &'a CpuParam<'_, T>) -> Option<&'a [T]> {
    winograd::applies(g).then(|| w.derived(WINOGRAD_FORM, |w| winograd::weights(g, w)))
}

/// The Winograd form of the weights for the transposed pass of `g`, where it takes that way.
fn winograd_transposed_weights<'a, T: Real>(g: &ConvGeom, w: &'a CpuParam<'_, T>) -> Option<&'a [T]> {
    winograd::applies_transposed(g).then(|| w.derived(WINOGRAD_TRANSPOSED_FORM, |w| winograd::transposed_weights(g, w)))
}

/// Each group's og x kk block of the weights as kk x og, row-major.
fn transposed_weights<T: Real>(g: &ConvGeom, w: &[T]) -> Vec<T> {
    let (og, kk) = (g.out_channels / g.group, g.group_rows());
    let mut t = vec![T::ZERO; w.len()];
    for (src, dst) in w.chunks_exact(og * kk).zip(t.chunks_exact_mut(og * kk)) {
        for (o, row) in src.chunks_exact(kk).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                dst[k * og + o] = v;
            }
        }
    }
    t
}

/// `transpose_apply` by columns, each image's zeroing and bias on that image's thread.
fn columns_transpose<T: Real>(g: &ConvGeom, dy: &[T], w: &[T], wt: Option<&[T]>, dx: &mut [T], start: Start<'_, T>, fused: Fused<'_, T>) {
    let (og, kk, ohw) = (g.out_channels / g.group, g.group_rows(), g.out_plane());
    // W^T of each group: as stored (column-major) or transposed (row-major).
    let (a, a_rs, a_cs) = match wt {
        Some(t) => (t, og as isize, 1),
        None => (w, 1, kk as isize),
    };
    let (x_img, y_img) = (g.in_channels * g.in_plane(), g.out_channels * ohw);
    per_image(dy, y_img, dx, x_img, |n, dy_n, dxn, threads| {
        if let Start::Overwrite(_) = start {
            dxn.fill(T::ZERO);
        }
        with_scratch(band_len(g, Banding::Large) + fused.input_len(y_img), |scratch: &mut [T]| {
            let (col, masked) = scratch.split_at_mut(band_len(g, Banding::Large));
            let dy_n = fused.mask_input(n, dy_n, masked);
            let pointwise = g.is_pointwise();
            for rows in bands(g, Banding::Large) {
                let (first, n) = (rows.start * g.out_w, rows.len() * g.out_w);
                // Pointwise: accumulate straight into dx; otherwise fill the band's columns.
                let (dst, offset, stride, beta): (&mut [T], usize, usize, T) =
                    if pointwise { (&mut *dxn, first, ohw, T::ONE) } else { (&mut *col, 0, n, T::ZERO) };
                per_group(threads, g.group, dst, kk * stride, |gi, dst_gi, threads| {
                    gemm_on(
                        threads,
                        kk,
                        og,
                        n,
                        T::ONE,
                        &a[gi * og * kk..(gi + 1) * og * kk],
                        a_rs,
                        a_cs,
                        &dy_n[gi * og * ohw + first..],
                        ohw as isize,
                        1,
                        beta,
                        &mut dst_gi[offset..],
                        stride as isize,
                        1,
                    )
                });
                if !pointwise {
                    col2im_add_on(threads, g, col, rows, dxn);
                }
            }
        });
        if let Start::Overwrite(Some(b)) = start {
            add_channel_bias(dxn, g.in_channels, g.in_plane(), b);
        }
        fused.finish_output(dxn);
    });
}

/// dw += dy col^T per image and group; db += per-channel sums of dy.
pub fn conv_backward_weights<T: Real>(g: &ConvGeom, x: &[T], dy: &[T], dw: &mut [T], db: Option<&mut [T]>) {
    assert_lens(g, x.len(), dw.len(), dy.len());
    if depthwise::applies(g) {
        depthwise::weights(g, x, dy, dw, db)
    } else {
        columns_weights(g, x, dy, dw, db)
    }
}

/// `conv_backward_weights` by columns.
fn columns_weights<T: Real>(g: &ConvGeom, x: &[T], dy: &[T], dw: &mut [T], db: Option<&mut [T]>) {
    let (og, kk, ohw) = (g.out_channels / g.group, g.group_rows(), g.out_plane());
    let (x_img, y_img) = (g.in_channels * g.in_plane(), g.out_channels * ohw);
    let mut col = col_buffer::<T>(g);
    for n in 0..g.batch {
        let xn = &x[n * x_img..(n + 1) * x_img];
        let dy_n = &dy[n * y_img..(n + 1) * y_img];
        let src: &[T] = if g.is_pointwise() {
            xn
        } else {
            im2col(g, xn, 0..g.out_h, &mut col);
            &col
        };
        for gi in 0..g.group {
            gemm(
                og,
                ohw,
                kk,
                T::ONE,
                &dy_n[gi * og * ohw..(gi + 1) * og * ohw],
                ohw as isize,
                1,
                &src[gi * kk * ohw..(gi + 1) * kk * ohw],
                1,
                ohw as isize,
                T::ONE,
                &mut dw[gi * og * kk..(gi + 1) * og * kk],
                kk as isize,
                1,
            );
        }
    }
    if let Some(db) = db {
        add_channel_sums(dy, g.out_channels, ohw, db);
    }
}

/// Deconvolution forward (y overwritten): the convolution's backward-data pass plus bias.
/// x: deconv input [N, g.out_channels, g.out_h, g.out_w]; y: [N, g.in_channels, g.in_h, g.in_w].
pub fn deconv_forward<T: Real>(g: &ConvGeom, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T]) {
    deconv_forward_fused(g, x, w, None, None, bias, None, y)
}

/// `deconv_forward`, then the ReLU of slope `relu` (at least 0) on each image in its pass;
/// `wt` and `ut` as in `conv_backward_data_fused`.
#[allow(clippy::too_many_arguments)]
pub fn deconv_forward_fused<T: Real>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    wt: Option<&[T]>,
    ut: Option<&[T]>,
    bias: Option<&[T]>,
    relu: Option<f32>,
    y: &mut [T],
) {
    assert_lens(g, y.len(), w.len(), x.len());
    transpose_apply(g, x, w, wt, ut, y, Start::Overwrite(bias), Fused::forward(relu));
}

/// dx += the convolution's forward pass of dy (no bias).
pub fn deconv_backward_data<T: Real>(g: &ConvGeom, dy: &[T], w: &[T], dx: &mut [T]) {
    deconv_backward_data_fused(g, dy, w, None, None, dx, Dx::Add)
}

/// `deconv_backward_data` with a fused ReLU `(slope, y)` and `to`, as
/// `conv_backward_data_fused`; `u` as in `conv_forward_fused`.
pub fn deconv_backward_data_fused<T: Real>(
    g: &ConvGeom,
    dy: &[T],
    w: &[T],
    u: Option<&[T]>,
    relu: Option<(f32, &[T])>,
    dx: &mut [T],
    to: Dx,
) {
    assert_lens(g, dy.len(), w.len(), dx.len());
    let beta = match to {
        Dx::Add => T::ONE,
        Dx::Overwrite => T::ZERO,
    };
    conv_apply(g, dy, w, u, None, dx, beta, Fused::backward(relu, dy.len()));
}

/// dw += the convolution's weight gradient with x and dy swapped; db (g.in_channels) += sums of dy.
pub fn deconv_backward_weights<T: Real>(g: &ConvGeom, x: &[T], dy: &[T], dw: &mut [T], db: Option<&mut [T]>) {
    assert_lens(g, dy.len(), dw.len(), x.len());
    conv_backward_weights(g, dy, x, dw, None);
    if let Some(db) = db {
        add_channel_sums(dy, g.in_channels, g.in_plane(), db);
    }
}

fn fused_input<'a, T>(relu: Option<FusedRelu<'a, Vec<T>>>) -> Option<(f32, &'a [T])> {
    relu.map(|r| (r.slope, r.y.as_slice()))
}

impl<'w, T: Real> ConvKernels for Cpu<'w, T> {
    fn fuses_relu(&self) -> bool {
        true
    }

    fn conv_forward(
        &self,
        g: &ConvGeom,
        x: &Vec<T>,
        w: &CpuParam<'w, T>,
        bias: Option<&CpuParam<'w, T>>,
        relu: Option<f32>,
        y: &mut Vec<T>,
    ) -> Result<()> {
        conv_forward_fused(g, x, w, winograd_weights(g, w), bias.map(|b| &**b), relu, y);
        Ok(())
    }

    fn conv_backward_data(
        &self,
        g: &ConvGeom,
        dy: &Vec<T>,
        w: &CpuParam<'w, T>,
        relu: Option<FusedRelu<'_, Vec<T>>>,
        dx: &mut Vec<T>,
    ) -> Result<()> {
        self.conv_backward_data_into(g, dy, w, relu, dx, Dx::Add)
    }

    fn conv_backward_data_into(
        &self,
        g: &ConvGeom,
        dy: &Vec<T>,
        w: &CpuParam<'w, T>,
        relu: Option<FusedRelu<'_, Vec<T>>>,
        dx: &mut Vec<T>,
        to: Dx,
    ) -> Result<()> {
        let (wt, ut) = (weights_for_transpose(g, w), winograd_transposed_weights(g, w));
        conv_backward_data_fused(g, dy, w, wt, ut, fused_input(relu), dx, to);
        Ok(())
    }

    fn conv_backward_weights(&self, g: &ConvGeom, x: &Vec<T>, dy: &Vec<T>, dw: &mut Vec<T>, db: Option<&mut Vec<T>>) -> Result<()> {
        conv_backward_weights(g, x, dy, dw, db.map(|b| b.as_mut_slice()));
        Ok(())
    }

    fn deconv_forward(
        &self,
        g: &ConvGeom,
        x: &Vec<T>,
        w: &CpuParam<'w, T>,
        bias: Option<&CpuParam<'w, T>>,
        relu: Option<f32>,
        y: &mut Vec<T>,
    ) -> Result<()> {
        deconv_forward_fused(g, x, w, weights_for_transpose(g, w), winograd_transposed_weights(g, w), bias.map(|b| &**b), relu, y);
        Ok(())
    }

    fn deconv_backward_data(
        &self,
        g: &ConvGeom,
        dy: &Vec<T>,
        w: &CpuParam<'w, T>,
        relu: Option<FusedRelu<'_, Vec<T>>>,
        dx: &mut Vec<T>,
    ) -> Result<()> {
        self.deconv_backward_data_into(g, dy, w, relu, dx, Dx::Add)
    }

    fn deconv_backward_data_into(
        &self,
        g: &ConvGeom,
        dy: &Vec<T>,
        w: &CpuParam<'w, T>,
        relu: Option<FusedRelu<'_, Vec<T>>>,
        dx: &mut Vec<T>,
        to: Dx,
    ) -> Result<()> {
        deconv_backward_data_fused(g, dy, w, winograd_weights(g, w), fused_input(relu), dx, to);
        Ok(())
    }

    fn deconv_backward_weights(&self, g: &ConvGeom, x: &Vec<T>, dy: &Vec<T>, dw: &mut Vec<T>, db: Option<&mut Vec<T>>) -> Result<()> {
        deconv_backward_weights(g, x, dy, dw, db.map(|b| b.as_mut_slice()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, dot, Rng};
    use std::borrow::Cow;

    fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths differ");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}: index {i}: {x} vs {y}");
        }
    }

    /// Convolution by its definition.
    fn naive_conv(g: &ConvGeom, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
        let (cg, og) = (g.in_channels / g.group, g.out_channels / g.group);
        let [kh, kw] = g.kernel;
        let mut y = vec![0.0; g.output_len()];
        for n in 0..g.batch {
            for o in 0..g.out_channels {
                for oh in 0..g.out_h {
                    for ow in 0..g.out_w {
                        let mut s = bias.map_or(0.0, |b| b[o]);
                        for c in 0..cg {
                            let ci = (o / og) * cg + c;
                            for ki in 0..kh {
                                for kj in 0..kw {
                                    let ih = (oh * g.stride[0] + ki * g.dilation[0]) as isize - g.pad[0] as isize;
                                    let iw = (ow * g.stride[1] + kj * g.dilation[1]) as isize - g.pad[1] as isize;
                                    if ih < 0 || iw < 0 || ih >= g.in_h as isize || iw >= g.in_w as isize {
                                        continue;
                                    }
                                    let xi = ((n * g.in_channels + ci) * g.in_h + ih as usize) * g.in_w + iw as usize;
                                    s += x[xi] * w[((o * cg + c) * kh + ki) * kw + kj];
                                }
                            }
                        }
                        y[((n * g.out_channels + o) * g.out_h + oh) * g.out_w + ow] = s;
                    }
                }
            }
        }
        y
    }

    /// The transpose of `naive_conv` (no bias): every output gradient times the kernel,
    /// added back where the convolution read.
    fn naive_conv_transpose(g: &ConvGeom, dy: &[f64], w: &[f64]) -> Vec<f64> {
        let (cg, og) = (g.in_channels / g.group, g.out_channels / g.group);
        let [kh, kw] = g.kernel;
        let mut dx = vec![0.0; g.input_len()];
        for n in 0..g.batch {
            for o in 0..g.out_channels {
                for oh in 0..g.out_h {
                    for ow in 0..g.out_w {
                        let d = dy[((n * g.out_channels + o) * g.out_h + oh) * g.out_w + ow];
                        for c in 0..cg {
                            let ci = (o / og) * cg + c;
                            for ki in 0..kh {
                                for kj in 0..kw {
                                    let ih = (oh * g.stride[0] + ki * g.dilation[0]) as isize - g.pad[0] as isize;
                                    let iw = (ow * g.stride[1] + kj * g.dilation[1]) as isize - g.pad[1] as isize;
                                    if ih < 0 || iw < 0 || ih >= g.in_h as isize || iw >= g.in_w as isize {
                                        continue;
                                    }
                                    let xi = ((n * g.in_channels + ci) * g.in_h + ih as usize) * g.in_w + iw as usize;
                                    dx[xi] += d * w[((o * cg + c) * kh + ki) * kw + kj];
                                }
                            }
                        }
                    }
                }
            }
        }
        dx
    }

    /// Caffe deconvolution by its definition: scatter every input pixel times the kernel.
    /// Params are the deconvolution's own (input channels ci, output channels co).
    #[allow(clippy::too_many_arguments)]
    fn naive_deconv(
        n_img: usize,
        ci: usize,
        h: usize,
        w_: usize,
        co: usize,
        k: [usize; 2],
        s: [usize; 2],
        p: [usize; 2],
        d: [usize; 2],
        group: usize,
        x: &[f64],
        w: &[f64],
        bias: Option<&[f64]>,
    ) -> (Vec<f64>, usize, usize) {
        let oh = s[0] * (h - 1) + d[0] * (k[0] - 1) + 1 - 2 * p[0];
        let ow = s[1] * (w_ - 1) + d[1] * (k[1] - 1) + 1 - 2 * p[1];
        let (cig, cog) = (ci / group, co / group);
        let mut y = vec![0.0; n_img * co * oh * ow];
        for n in 0..n_img {
            for c in 0..ci {
                for ih in 0..h {
                    for iw in 0..w_ {
                        let v = x[((n * ci + c) * h + ih) * w_ + iw];
                        for cl in 0..cog {
                            let out_c = (c / cig) * cog + cl;
                            for ki in 0..k[0] {
                                for kj in 0..k[1] {
                                    let yh = (ih * s[0] + ki * d[0]) as isize - p[0] as isize;
                                    let yw = (iw * s[1] + kj * d[1]) as isize - p[1] as isize;
                                    if yh < 0 || yw < 0 || yh >= oh as isize || yw >= ow as isize {
                                        continue;
                                    }
                                    y[((n * co + out_c) * oh + yh as usize) * ow + yw as usize] +=
                                        v * w[((c * cog + cl) * k[0] + ki) * k[1] + kj];
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(b) = bias {
            for (i, v) in y.iter_mut().enumerate() {
                *v += b[(i / (oh * ow)) % co];
            }
        }
        (y, oh, ow)
    }

    type Case = (usize, usize, usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], usize);

    /// (batch, in_c, h, w, out_c, kernel, stride, pad, dilation, group): odd sizes, asymmetric
    /// kernels, stride, pad, dilation 2, groups 1/2/3, the pointwise shortcut.
    const CASES: [Case; 7] = [
        (2, 3, 7, 6, 4, [3, 2], [2, 1], [1, 0], [1, 1], 1),
        (2, 4, 9, 8, 6, [3, 3], [1, 2], [2, 1], [2, 2], 2),
        (1, 6, 5, 7, 3, [1, 1], [1, 1], [0, 0], [1, 1], 3),
        (2, 3, 6, 5, 6, [2, 3], [3, 2], [1, 2], [2, 1], 3),
        (1, 2, 5, 4, 2, [1, 1], [2, 2], [0, 0], [1, 1], 1),
        (2, 6, 5, 5, 4, [5, 3], [1, 1], [2, 1], [1, 1], 2),
        (1, 2, 3, 4, 3, [3, 3], [2, 2], [2, 2], [2, 1], 1),
    ];

    fn conv_geom(c: &Case) -> ConvGeom {
        ConvGeom::new(c.0, c.1, c.2, c.3, c.4, c.5, c.6, c.7, c.8, c.9).unwrap()
    }

    fn deconv_geom(c: &Case) -> ConvGeom {
        ConvGeom::for_deconv(c.0, c.1, c.2, c.3, c.4, c.5, c.6, c.7, c.8, c.9).unwrap()
    }

    #[test]
    fn geometry_sizes_and_errors() {
        let g = ConvGeom::new(8, 3, 227, 227, 96, [11, 11], [4, 4], [0, 0], [1, 1], 1).unwrap();
        assert_eq!((g.out_h, g.out_w), (55, 55));
        assert_eq!(g.weight_len(), 96 * 3 * 121);
        assert_eq!(g.flops(), 2 * 8 * 96 * 55 * 55 * 3 * 121);
        let g = ConvGeom::new(1, 96, 27, 27, 256, [5, 5], [1, 1], [2, 2], [1, 1], 2).unwrap();
        assert_eq!((g.out_h, g.out_w, g.weight_len()), (27, 27, 256 * 48 * 25));
        // Dilation 2 makes a 3x3 kernel span 5: (7 + 0 - 5)/1 + 1 = 3; floor rounding: (8-3)/2+1 = 3.
        let g = ConvGeom::new(1, 1, 7, 8, 1, [3, 3], [1, 2], [0, 0], [2, 1], 1).unwrap();
        assert_eq!((g.out_h, g.out_w), (3, 3));
        assert!(ConvGeom::new(1, 1, 4, 4, 1, [3, 3], [1, 1], [0, 0], [2, 2], 1).is_err());
        assert!(ConvGeom::new(1, 1, 2, 2, 1, [5, 5], [1, 1], [1, 1], [1, 1], 1).is_err());
        assert!(ConvGeom::new(1, 1, 3, 3, 1, [5, 5], [1, 1], [1, 1], [1, 1], 1).is_ok());
        assert!(ConvGeom::new(1, 4, 5, 5, 6, [3, 3], [1, 1], [0, 0], [1, 1], 4).is_err());
        assert!(ConvGeom::new(1, 3, 5, 5, 6, [3, 3], [1, 1], [0, 0], [1, 1], 2).is_err());
        assert!(ConvGeom::new(1, 3, 5, 5, 6, [3, 0], [1, 1], [0, 0], [1, 1], 1).is_err());
        assert!(ConvGeom::new(1, 3, 5, 5, 6, [3, 3], [0, 1], [0, 0], [1, 1], 1).is_err());
        assert!(ConvGeom::new(1, 3, 5, 5, 6, [3, 3], [1, 1], [0, 0], [1, 0], 1).is_err());
        assert!(ConvGeom::new(1, 3, 5, 5, 6, [3, 3], [1, 1], [0, 0], [1, 1], 0).is_err());

        // DeePSiM-style upsampling: 4x4, k4 s2 p1 -> 8x8; the geometry is the conv 8x8 -> 4x4.
        let g = ConvGeom::for_deconv(2, 256, 4, 4, 128, [4, 4], [2, 2], [1, 1], [1, 1], 1).unwrap();
        assert_eq!((g.in_channels, g.in_h, g.in_w), (128, 8, 8));
        assert_eq!((g.out_channels, g.out_h, g.out_w), (256, 4, 4));
        assert_eq!(g.weight_len(), 256 * 128 * 16);
        // s*(H-1) + d*(k-1)+1 - 2p with asymmetric everything: 3*4 + 2*2+1 - 2 = 15; 1*2 + 3 - 0 = 5.
        let g = ConvGeom::for_deconv(1, 2, 5, 3, 4, [3, 3], [3, 1], [1, 0], [2, 1], 2).unwrap();
        assert_eq!((g.in_h, g.in_w, g.out_h, g.out_w), (15, 5, 5, 3));
        assert!(ConvGeom::for_deconv(1, 1, 1, 1, 1, [2, 2], [1, 1], [1, 1], [1, 1], 1).is_err());
        assert!(ConvGeom::for_deconv(1, 2, 3, 3, 3, [2, 2], [1, 1], [0, 0], [1, 1], 2).is_err());
    }

    #[test]
    fn conv_forward_hand_worked() {
        // 3x3 input 1..9, 3x3 box kernel, pad 1: every output is its neighbourhood sum, + bias 1.
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        let w = vec![1.0; 9];
        let g = ConvGeom::new(1, 1, 3, 3, 1, [3, 3], [1, 1], [1, 1], [1, 1], 1).unwrap();
        let mut y = vec![f64::NAN; 9]; // forward must overwrite
        conv_forward(&g, &x, &w, Some(&[1.0]), &mut y);
        assert_eq!(y, vec![13.0, 22.0, 17.0, 28.0, 46.0, 34.0, 25.0, 40.0, 29.0]);
        // Stride 2 picks the corners of that map.
        let g = ConvGeom::new(1, 1, 3, 3, 1, [3, 3], [2, 2], [1, 1], [1, 1], 1).unwrap();
        let mut y = vec![0.0; 4];
        conv_forward(&g, &x, &w, None, &mut y);
        assert_eq!(y, vec![12.0, 16.0, 24.0, 28.0]);
        // Orientation: a 2x2 kernel [[1,0],[0,-1]] is x[i][j] - x[i+1][j+1] (correlation, not flipped).
        let g = ConvGeom::new(1, 1, 3, 3, 1, [2, 2], [1, 1], [0, 0], [1, 1], 1).unwrap();
        let mut y = vec![0.0; 4];
        conv_forward(&g, &x, &[1.0, 2.0, 0.0, -1.0], None, &mut y);
        assert_eq!(y, vec![0.0, 2.0, 6.0, 8.0]); // x[i][j] + 2 x[i][j+1] - x[i+1][j+1]
                                                 // Groups: channel block g only feeds output block g.
        let g = ConvGeom::new(1, 2, 1, 1, 2, [1, 1], [1, 1], [0, 0], [1, 1], 2).unwrap();
        let mut y = vec![0.0; 2];
        conv_forward(&g, &[3.0, 5.0], &[2.0, 10.0], None, &mut y);
        assert_eq!(y, vec![6.0, 50.0]);
    }

    #[test]
    fn deconv_forward_hand_worked() {
        // x = [[1,0],[0,2]] scatters 1*w at (0,0) and 2*w at (1,1): 3x3 output.
        let x = [1.0, 0.0, 0.0, 2.0];
        let w = [1.0, 2.0, 3.0, 4.0];
        let g = ConvGeom::for_deconv(1, 1, 2, 2, 1, [2, 2], [1, 1], [0, 0], [1, 1], 1).unwrap();
        let mut y = vec![f64::NAN; 9];
        deconv_forward(&g, &x, &w, Some(&[0.5]), &mut y);
        assert_eq!(y, vec![1.5, 2.5, 0.5, 3.5, 6.5, 4.5, 0.5, 6.5, 8.5]);
        // Pad 1 crops one pixel from each border: only the centre remains.
        let g = ConvGeom::for_deconv(1, 1, 2, 2, 1, [2, 2], [1, 1], [1, 1], [1, 1], 1).unwrap();
        let mut y = vec![0.0; 1];
        deconv_forward(&g, &x, &w, None, &mut y);
        assert_eq!(y, vec![6.0]);
        // Stride 2 with a 2x2 kernel tiles copies of w scaled by each pixel, no overlap.
        let g = ConvGeom::for_deconv(1, 1, 1, 2, 1, [2, 2], [2, 2], [0, 0], [1, 1], 1).unwrap();
        let mut y = vec![0.0; 8];
        deconv_forward(&g, &[1.0, -1.0], &w, None, &mut y);
        assert_eq!(y, vec![1.0, 2.0, -1.0, -2.0, 3.0, 4.0, -3.0, -4.0]);
        // Weights are [C_in, C_out, kh, kw]: input channel 0 writes output channels 0 and 1.
        let g = ConvGeom::for_deconv(1, 1, 1, 1, 2, [1, 1], [1, 1], [0, 0], [1, 1], 1).unwrap();
        let mut y = vec![0.0; 2];
        deconv_forward(&g, &[2.0], &[3.0, 7.0], None, &mut y);
        assert_eq!(y, vec![6.0, 14.0]);
    }

    #[test]
    fn bands_of_output_rows_match_the_definition() {
        // Geometries whose column buffer is filled in several bands of output rows (the last
        // one shorter), strided and grouped: forward against the definition, backward-data
        // against the definition's transpose.
        let mut rng = Rng::new(17);
        for (c, o, [h, w], k, s, p, group) in
            [(64, 8, [23, 64], 3, 1, 1, 1), (48, 12, [41, 130], 4, 2, 1, 2), (32, 4, [30, 70], 5, 1, 2, 4)]
        {
            assert!(c * k * k >= BAND_MIN_COL_ROWS);
            let g = ConvGeom::new(2, c, h, w, o, [k, k], [s, s], [p, p], [1, 1], group).unwrap();
            let nbands = bands(&g, Banding::Large).count();
            assert!(nbands >= 3, "{g:?} has {nbands} bands");
            assert_eq!(bands(&g, Banding::Large).map(|r| r.len()).sum::<usize>(), g.out_h);
            let x = rng.uniform_vec(g.input_len(), -1.0, 1.0);
            let wt = rng.uniform_vec(g.weight_len(), -1.0, 1.0);
            let r = rng.uniform_vec(g.output_len(), -1.0, 1.0);
            let mut y = vec![0.0; g.output_len()];
            conv_forward(&g, &x, &wt, None, &mut y);
            close(&y, &naive_conv(&g, &x, &wt, None), 1e-12, &format!("forward {g:?}"));
            let mut dx = vec![0.0; g.input_len()];
            conv_backward_data(&g, &r, &wt, &mut dx);
            close(&dx, &naive_conv_transpose(&g, &r, &wt), 1e-12, &format!("backward-data {g:?}"));
        }
    }

    #[test]
    fn winograd_shapes_match_the_definition_through_every_entry() {
        // 3 x 3 convolutions that take Winograd's way (pads 0-2, maps not a whole number of
        // 4 x 4 tiles, 2 images, 1 to 3 groups): all four passes in f64 against the
        // definitions, adding where the pass adds; then in f32 the kept transformed weights
        // give the bits of the ones made per call, and the fused ReLU those of the ReLU as
        // a pass of its own.
        let mut rng = Rng::new(23);
        for (c, o, [h, w], p, group) in [
            (64, 66, [18, 19], 0, 1),
            (72, 64, [17, 21], 1, 1),
            (32, 33, [32, 34], 2, 1),
            (128, 128, [14, 15], 1, 2),
            (96, 99, [32, 33], 1, 3),
        ] {
            let g = ConvGeom::new(2, c, h, w, o, [3, 3], [1, 1], [p, p], [1, 1], group).unwrap();
            assert!(winograd::applies(&g) && winograd::applies_transposed(&g), "{g:?}");
            let x = rng.uniform_vec(g.input_len(), -1.0, 1.0);
            let wt = rng.uniform_vec(g.weight_len(), -1.0, 1.0);
            let dy = rng.uniform_vec(g.output_len(), -1.0, 1.0);
            let (bo, bi) = (rng.uniform_vec(o, -1.0, 1.0), rng.uniform_vec(c, -1.0, 1.0));
            let plus = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a + b).collect::<Vec<_>>();
            let mut y = vec![f64::NAN; g.output_len()];
            conv_forward(&g, &x, &wt, Some(&bo), &mut y);
            close(&y, &naive_conv(&g, &x, &wt, Some(&bo)), 1e-12, &format!("forward {g:?}"));
            let start = rng.uniform_vec(g.input_len(), -1.0, 1.0);
            let mut dx = start.clone();
            conv_backward_data(&g, &dy, &wt, &mut dx);
            close(&dx, &plus(&start, &naive_conv_transpose(&g, &dy, &wt)), 1e-12, &format!("backward-data {g:?}"));
            let mut y = vec![f64::NAN; g.input_len()];
            deconv_forward(&g, &dy, &wt, Some(&bi), &mut y);
            let (want, ..) = naive_deconv(2, o, g.out_h, g.out_w, c, [3, 3], [1, 1], [p, p], [1, 1], group, &dy, &wt, Some(&bi));
            close(&y, &want, 1e-12, &format!("deconvolution forward {g:?}"));
            let start = rng.uniform_vec(g.output_len(), -1.0, 1.0);
            let mut dd = start.clone();
            deconv_backward_data(&g, &x, &wt, &mut dd);
            close(&dd, &plus(&start, &naive_conv(&g, &x, &wt, None)), 1e-12, &format!("deconvolution backward-data {g:?}"));

            let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
            let (x, wt, dy, bo) = (to32(&x), to32(&wt), to32(&dy), to32(&bo));
            let (u, ut) = (winograd::weights(&g, &wt), winograd::transposed_weights(&g, &wt));
            let mut plain = vec![0f32; g.output_len()];
            conv_forward(&g, &x, &wt, Some(&bo), &mut plain);
            relu_in_place(0.25, &mut plain);
            let mut fused = vec![f32::NAN; g.output_len()];
            conv_forward_fused(&g, &x, &wt, Some(&u), Some(&bo), Some(0.25), &mut fused);
            assert_eq!(fused, plain, "forward, kept weights and fused ReLU {g:?}");
            let mut masked = vec![0f32; g.output_len()];
            relu_backward(0.25, &plain, &dy, &mut masked);
            let start = to32(&rng.uniform_vec(g.input_len(), -1.0, 1.0));
            let (mut want, mut got) = (start.clone(), start);
            conv_backward_data(&g, &masked, &wt, &mut want);
            conv_backward_data_fused(&g, &dy, &wt, None, Some(&ut), Some((0.25, &plain)), &mut got, Dx::Add);
            assert_eq!(got, want, "backward-data, kept weights and fused ReLU {g:?}");
            let mut want = vec![0f32; g.input_len()];
            deconv_forward(&g, &dy, &wt, None, &mut want);
            relu_in_place(0.0, &mut want);
            let mut got = vec![f32::NAN; g.input_len()];
            deconv_forward_fused(&g, &dy, &wt, None, Some(&ut), None, Some(0.0), &mut got);
            assert_eq!(got, want, "deconvolution forward, kept weights and fused ReLU {g:?}");
            assert!(want.iter().any(|&v| v > 0.0) && want.contains(&0.0), "vacuous ReLU");
        }
    }

    #[test]
    fn transposed_weights_give_the_bits_of_the_stored_ones() {
        // Small maps (where the CPU reads the weights transposed), groups, strides, a
        // pointwise case, 1 and 3 images; both transposed passes, in f32.
        let mut rng = Rng::new(41);
        let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        for (n, c, hw, o, k, stride, pad, group) in
            [(1, 8, 4, 6, 3, 1, 1, 1), (3, 6, 8, 4, 4, 2, 1, 2), (2, 16, 5, 32, 1, 1, 0, 4), (3, 4, 7, 8, 3, 2, 0, 1)]
        {
            let g = ConvGeom::new(n, c, hw, hw, o, [k, k], [stride, stride], [pad, pad], [1, 1], group).unwrap();
            assert!(g.out_plane() <= TRANSPOSED_WEIGHTS_MAX_POSITIONS, "{g:?}");
            let w = to32(rng.uniform_vec(g.weight_len(), -1.0, 1.0));
            let wt = transposed_weights(&g, &w);
            let dy = to32(rng.uniform_vec(g.output_len(), -1.0, 1.0));
            let start = to32(rng.uniform_vec(g.input_len(), -1.0, 1.0));
            let (mut want, mut got) = (start.clone(), start);
            conv_backward_data_fused(&g, &dy, &w, None, None, None, &mut want, Dx::Add);
            conv_backward_data_fused(&g, &dy, &w, Some(&wt), None, None, &mut got, Dx::Add);
            assert_eq!(got, want, "backward-data {g:?}");
            let bias = to32(rng.uniform_vec(c, -1.0, 1.0));
            let (mut want, mut got) = (vec![0f32; g.input_len()], vec![f32::NAN; g.input_len()]);
            deconv_forward_fused(&g, &dy, &w, None, None, Some(&bias), Some(0.3), &mut want);
            deconv_forward_fused(&g, &dy, &w, Some(&wt), None, Some(&bias), Some(0.3), &mut got);
            assert_eq!(got, want, "deconvolution forward {g:?}");
        }
    }

    #[test]
    fn the_derived_weights_follow_every_change_of_the_parameter() {
        let g = ConvGeom::new(1, 2, 3, 3, 3, [2, 2], [1, 1], [0, 0], [1, 1], 1).unwrap();
        let w: Vec<f32> = (0..g.weight_len()).map(|i| i as f32).collect();
        let mut p = CpuParam::new(Cow::Borrowed(&w[..]));
        let first = weights_for_transpose(&g, &p).unwrap().to_vec();
        assert_eq!(first, transposed_weights(&g, &w));
        // og = 3 rows of kk = 8: the transpose's second value is output channel 1's first.
        assert_eq!(first[1], w[8]);
        p[8] = -7.0;
        let second = weights_for_transpose(&g, &p).unwrap().to_vec();
        assert_eq!(second[1], -7.0, "a changed weight is seen, not the stale copy");
        assert_eq!(w[8], 8.0, "the borrowed values themselves are untouched");
    }

    #[test]
    fn paired_col2im_gives_the_bits_of_the_general_loop() {
        // Stride 2 across, even kernel widths, pads below, at and above the kernel, odd and
        // even widths, bands starting inside the image.
        let mut rng = Rng::new(23);
        for (kernel, pad, [h, w], stride_h) in
            [([4, 4], [1, 1], [9, 11], 2), ([3, 2], [0, 0], [7, 8], 1), ([2, 6], [1, 5], [6, 13], 2), ([5, 4], [2, 3], [10, 9], 3)]
        {
            let g = ConvGeom::new(1, 3, h, w, 2, kernel, [stride_h, 2], pad, [1, 1], 1).unwrap();
            for rows in [0..g.out_h, 1..g.out_h, 0..g.out_h / 2] {
                let n = g.in_channels * kernel[0] * kernel[1] * rows.len() * g.out_w;
                let col: Vec<f32> = rng.uniform_vec(n, -1.0, 1.0).into_iter().map(|v| v as f32).collect();
                let start: Vec<f32> = rng.uniform_vec(g.input_len(), -1.0, 1.0).into_iter().map(|v| v as f32).collect();
                let (mut want, mut got) = (start.clone(), start);
                col2im_add_rows(&g, &col, rows.clone(), &mut want);
                col2im_add_pairs(&g, &col, rows.clone(), &mut got);
                assert_eq!(got, want, "{g:?} rows {rows:?}");
            }
        }
    }

    #[test]
    fn paired_im2col_gives_the_general_loop_columns() {
        let mut rng = Rng::new(29);
        for (kernel, pad, [h, w], stride_h) in
            [([4, 4], [1, 1], [9, 11], 2), ([3, 2], [0, 0], [7, 8], 1), ([2, 6], [1, 5], [6, 13], 2), ([5, 4], [2, 3], [10, 9], 3)]
        {
            let g = ConvGeom::new(1, 3, h, w, 2, kernel, [stride_h, 2], pad, [1, 1], 1).unwrap();
            let x: Vec<f32> = rng.uniform_vec(g.input_len(), -1.0, 1.0).into_iter().map(|v| v as f32).collect();
            for rows in [0..g.out_h, 1..g.out_h, 0..g.out_h / 2] {
                let n = g.in_channels * kernel[0] * kernel[1] * rows.len() * g.out_w;
                let (mut want, mut got) = (vec![f32::NAN; n], vec![f32::NAN; n]);
                im2col_rows(&g, &x, rows.clone(), &mut want);
                im2col_pairs(&g, &x, rows.clone(), &mut got);
                assert_eq!(got, want, "{g:?} rows {rows:?}");
            }
        }
    }

    #[test]
    fn conv_matches_naive_reference() {
        let mut rng = Rng::new(11);
        for c in &CASES {
            let g = conv_geom(c);
            let x = rng.uniform_vec(g.input_len(), -1.0, 1.0);
            let w = rng.uniform_vec(g.weight_len(), -1.0, 1.0);
            let b = rng.uniform_vec(g.out_channels, -1.0, 1.0);
            let mut y = vec![0.0; g.output_len()];
            conv_forward(&g, &x, &w, Some(&b), &mut y);
            close(&y, &naive_conv(&g, &x, &w, Some(&b)), 1e-12, &format!("conv {c:?}"));
        }
    }

    #[test]
    fn deconv_matches_naive_reference() {
        let mut rng = Rng::new(12);
        for c in &CASES {
            let g = deconv_geom(c);
            let x = rng.uniform_vec(g.output_len(), -1.0, 1.0);
            let w = rng.uniform_vec(g.weight_len(), -1.0, 1.0);
            let b = rng.uniform_vec(g.in_channels, -1.0, 1.0);
            let mut y = vec![0.0; g.input_len()];
            deconv_forward(&g, &x, &w, Some(&b), &mut y);
            let (want, oh, ow) = naive_deconv(c.0, c.1, c.2, c.3, c.4, c.5, c.6, c.7, c.8, c.9, &x, &w, Some(&b));
            assert_eq!((g.in_h, g.in_w), (oh, ow));
            close(&y, &want, 1e-12, &format!("deconv {c:?}"));
        }
    }

    #[test]
    fn f32_path_agrees_with_f64() {
        let mut rng = Rng::new(13);
        let g = conv_geom(&CASES[1]);
        let x = rng.uniform_vec(g.input_len(), -1.0, 1.0);
        let w = rng.uniform_vec(g.weight_len(), -1.0, 1.0);
        let mut y64 = vec![0.0; g.output_len()];
        conv_forward(&g, &x, &w, None, &mut y64);
        let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let mut y32 = vec![0.0f32; g.output_len()];
        conv_forward(&g, &to32(&x), &to32(&w), None, &mut y32);
        let y32: Vec<f64> = y32.iter().map(|&v| v as f64).collect();
        close(&y32, &y64, 1e-5, "f32 vs f64");
    }

    fn conv_out(g: &ConvGeom, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; g.output_len()];
        conv_forward(g, x, w, Some(b), &mut y);
        y
    }

    fn deconv_out(g: &ConvGeom, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; g.input_len()];
        deconv_forward(g, x, w, Some(b), &mut y);
        y
    }

    #[test]
    fn conv_gradients() {
        let mut rng = Rng::new(14);
        for c in &CASES {
            let g = conv_geom(c);
            let x = rng.uniform_vec(g.input_len(), -1.0, 1.0);
            let w = rng.uniform_vec(g.weight_len(), -1.0, 1.0);
            let b = rng.uniform_vec(g.out_channels, -1.0, 1.0);
            let r = rng.uniform_vec(g.output_len(), -1.0, 1.0);
            let mut dx = vec![0.0; x.len()];
            conv_backward_data(&g, &r, &w, &mut dx);
            let mut dw = vec![0.0; w.len()];
            let mut db = vec![0.0; b.len()];
            conv_backward_weights(&g, &x, &r, &mut dw, Some(&mut db));
            check(&format!("conv dx {c:?}"), &x, &dx, |x| dot(&conv_out(&g, x, &w, &b), &r));
            check(&format!("conv dw {c:?}"), &w, &dw, |w| dot(&conv_out(&g, &x, w, &b), &r));
            check(&format!("conv db {c:?}"), &b, &db, |b| dot(&conv_out(&g, &x, &w, b), &r));
        }
    }

    #[test]
    fn deconv_gradients() {
        let mut rng = Rng::new(15);
        for c in &CASES {
            let g = deconv_geom(c);
            let x = rng.uniform_vec(g.output_len(), -1.0, 1.0);
            let w = rng.uniform_vec(g.weight_len(), -1.0, 1.0);
            let b = rng.uniform_vec(g.in_channels, -1.0, 1.0);
            let r = rng.uniform_vec(g.input_len(), -1.0, 1.0);
            let mut dx = vec![0.0; x.len()];
            deconv_backward_data(&g, &r, &w, &mut dx);
            let mut dw = vec![0.0; w.len()];
            let mut db = vec![0.0; b.len()];
            deconv_backward_weights(&g, &x, &r, &mut dw, Some(&mut db));
            check(&format!("deconv dx {c:?}"), &x, &dx, |x| dot(&deconv_out(&g, x, &w, &b), &r));
            check(&format!("deconv dw {c:?}"), &w, &dw, |w| dot(&deconv_out(&g, &x, w, &b), &r));
            check(&format!("deconv db {c:?}"), &b, &db, |b| dot(&deconv_out(&g, &x, &w, b), &r));
        }
    }

    #[test]
    fn backward_accumulates() {
        let mut rng = Rng::new(16);
        for c in [&CASES[0], &CASES[2]] {
            let g = conv_geom(c);
            let x = rng.uniform_vec(g.input_len(), -1.0, 1.0);
            let w = rng.uniform_vec(g.weight_len(), -1.0, 1.0);
            let dy = rng.uniform_vec(g.output_len(), -1.0, 1.0);
            let (mut dx1, mut dw1, mut db1) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; g.out_channels]);
            conv_backward_data(&g, &dy, &w, &mut dx1);
            conv_backward_weights(&g, &x, &dy, &mut dw1, Some(&mut db1));
            let (mut dx2, mut dw2, mut db2) = (dx1.clone(), dw1.clone(), db1.clone());
            conv_backward_data(&g, &dy, &w, &mut dx2);
            conv_backward_weights(&g, &x, &dy, &mut dw2, Some(&mut db2));
            let twice = |v: &[f64]| v.iter().map(|a| 2.0 * a).collect::<Vec<_>>();
            close(&dx2, &twice(&dx1), 1e-12, "conv dx accumulates");
            close(&dw2, &twice(&dw1), 1e-12, "conv dw accumulates");
            close(&db2, &twice(&db1), 1e-12, "conv db accumulates");

            // Deconv: x has the conv output's shape, dy the conv input's.
            let (mut dx1, mut dw1, mut db1) = (vec![0.0; dy.len()], vec![0.0; w.len()], vec![0.0; g.in_channels]);
            deconv_backward_data(&g, &x, &w, &mut dx1);
            deconv_backward_weights(&g, &dy, &x, &mut dw1, Some(&mut db1));
            let (mut dx2, mut dw2, mut db2) = (dx1.clone(), dw1.clone(), db1.clone());
            deconv_backward_data(&g, &x, &w, &mut dx2);
            deconv_backward_weights(&g, &dy, &x, &mut dw2, Some(&mut db2));
            close(&dx2, &twice(&dx1), 1e-12, "deconv dx accumulates");
            close(&dw2, &twice(&dw1), 1e-12, "deconv dw accumulates");
            close(&db2, &twice(&db1), 1e-12, "deconv db accumulates");
            assert!(dx1.iter().any(|v| *v != 0.0) && dw1.iter().any(|v| *v != 0.0), "vacuous check");
        }
    }

    #[test]
    #[should_panic(expected = "input length")]
    fn wrong_length_panics() {
        let g = ConvGeom::new(1, 1, 3, 3, 1, [2, 2], [1, 1], [0, 0], [1, 1], 1).unwrap();
        let mut y = vec![0.0f32; 4];
        conv_forward(&g, &[0.0; 8], &[0.0; 4], None, &mut y);
    }
}
