//! 3 x 3 convolutions of stride 1 by Winograd's minimal filtering, F(4 x 4, 3 x 3) (Lavin
//! and Gray, 2015): each 6 x 6 tile of the input (tiles 4 apart) is transformed (B^T d B),
//! multiplied position by position with the transformed weights (G w G^T, made once per
//! parameter and kept), and transformed back (A^T m A) into a 4 x 4 tile of the output.
//! The 36 positions are 36 GEMMs over the channels, 36 multiplies where the direct sum
//! takes 144, so on large maps with many channels the pass costs well under half the
//! column path's (measured in docs/benchmarks.md). The transposed pass is the same
//! correlation of dy with the kernel flipped and its channels swapped, padded by 2 - pad.
//! Grouped convolutions (CaffeNet's conv4 and conv5) transform every channel the same way
//! and run each position's product group by group.
//!
//! The transforms run on whole rows of tiles at once, so their loops are vector loops: an
//! input row is first split by column phase (mod 4), which puts every term of a tile's
//! horizontal transform at one offset per phase. Every tile's value is the same sum
//! whichever thread computes it or how the images are shared out, so the thread count
//! changes no bit; the band of tile rows, which sets each GEMM's width and so its path in
//! the GEMM crate, depends on the shape alone.

use super::{per_image, Fused, Start};
use crate::device::cpu::with_scratch;
use crate::ir::ConvGeom;
use crate::ops::gemm::cpu::{gemm_on, Threads};
use crate::real::Real;
use rayon::prelude::*;

/// Outputs per tile side.
const M: usize = 4;
/// Inputs per tile side (M + 3 - 1).
const A: usize = 6;
/// Positions per tile.
const P: usize = A * A;

/// Values of one band's transformed input and products together, at most (but at least one
/// row of tiles): the band is the unit a thread works through before the next.
const BAND_VALUES: usize = 1 << 20;

/// The kernel-side transform G (6 x 3).
const G: [[f64; 3]; A] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// The smallest convolution this pass takes: channels on each side, and positions per
/// image (13 x 13 is 16 tiles, the fewest at which the products won, measured at 256 and
/// 384 channels; 10 x 10 and 7 x 7 maps lost). Maps under `SMALL_MAP` positions also need
/// `SMALL_MAP_PAIRS` channel pairs (32 x 32 channels on 13 x 13 and 16 x 16 maps lost in
/// the transposed pass, 64 x 64 won). Below these the transforms cost more than the
/// multiplies saved (docs/benchmarks.md, the eighteenth session).
const MIN_CHANNELS: usize = 32;
const MIN_POSITIONS: usize = 13 * 13;
const SMALL_MAP: usize = 32 * 32;
const SMALL_MAP_PAIRS: usize = 64 * 64;

/// One correlation as this module computes it: a 3 x 3 kernel at stride 1, `pad` zeros
/// around the input, `out = in + 2 pad - 2`; the channels in `group` groups (each output
/// channel reads the input channels of its group alone).
#[derive(Clone, Copy, Debug)]
struct Corr {
    in_c: usize,
    in_h: usize,
    in_w: usize,
    out_c: usize,
    out_h: usize,
    out_w: usize,
    pad: [usize; 2],
    group: usize,
}

impl Corr {
    /// A convolution's forward pass (and a deconvolution's backward-data pass).
    fn forward(g: &ConvGeom) -> Self {
        Corr {
            in_c: g.in_channels,
            in_h: g.in_h,
            in_w: g.in_w,
            out_c: g.out_channels,
            out_h: g.out_h,
            out_w: g.out_w,
            pad: g.pad,
            group: g.group,
        }
    }

    /// A convolution's backward-data pass (and a deconvolution's forward pass): dy correlated
    /// with the flipped kernel, padded so that dx has the input's size.
    fn transposed(g: &ConvGeom) -> Self {
        Corr {
            in_c: g.out_channels,
            in_h: g.out_h,
            in_w: g.out_w,
            out_c: g.in_channels,
            out_h: g.in_h,
            out_w: g.in_w,
            pad: [2 - g.pad[0], 2 - g.pad[1]],
            group: g.group,
        }
    }

    /// Input and output channels per group.
    fn per_group(&self) -> (usize, usize) {
        (self.in_c / self.group, self.out_c / self.group)
    }

    fn tiles_w(&self) -> usize {
        self.out_w.div_ceil(M)
    }

    fn tiles_h(&self) -> usize {
        self.out_h.div_ceil(M)
    }

    /// Rows of tiles per band (`BAND_VALUES`).
    fn band_rows(&self) -> usize {
        let per_row = P * (self.in_c + self.out_c) * self.tiles_w();
        (BAND_VALUES / per_row.max(1)).clamp(1, self.tiles_h().max(1))
    }

    fn in_plane(&self) -> usize {
        self.in_h * self.in_w
    }

    fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }
}

/// Whether `g`'s forward pass (and backward-data pass, its padding being at most 2) goes
/// this way: a 3 x 3 kernel at stride 1, enough channels in each group (each group's are
/// one product) and a large enough map.
fn eligible(g: &ConvGeom) -> bool {
    let (cg, og) = (g.in_channels / g.group, g.out_channels / g.group);
    g.kernel == [3, 3]
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.pad[0] <= 2
        && g.pad[1] <= 2
        && cg >= MIN_CHANNELS
        && og >= MIN_CHANNELS
        && {
            let positions = g.in_h.min(g.out_h) * g.in_w.min(g.out_w);
            positions >= MIN_POSITIONS && (positions >= SMALL_MAP || cg * og >= SMALL_MAP_PAIRS)
        }
}

/// Whether a convolution's forward pass (a deconvolution's backward-data pass) takes this way.
pub fn applies(g: &ConvGeom) -> bool {
    eligible(g)
}

/// Whether a convolution's backward-data pass (a deconvolution's forward pass) takes this way.
pub fn applies_transposed(g: &ConvGeom) -> bool {
    eligible(g)
}

/// G w G^T for every output channel and each input channel of its group:
/// `[position][out][in of the group]`, from `kernel(o, c)`, the 3 x 3 taps of output channel
/// o and the group's input channel c (`in_c` of them). Computed in f64, rounded once.
fn transform_kernels<T: Real>(out_c: usize, in_c: usize, kernel: impl Fn(usize, usize) -> [[f64; 3]; 3]) -> Vec<T> {
    let mut u = vec![T::ZERO; P * out_c * in_c];
    for o in 0..out_c {
        for c in 0..in_c {
            let k = kernel(o, c);
            // t = G k (6 x 3), then t G^T (6 x 6).
            let mut t = [[0.0; 3]; A];
            for (q, row) in t.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|r| G[q][r] * k[r][j]).sum();
                }
            }
            for q in 0..A {
                for s in 0..A {
                    let v: f64 = (0..3).map(|j| t[q][j] * G[s][j]).sum();
                    u[(q * A + s) * out_c * in_c + o * in_c + c] = T::from_f64(v);
                }
            }
        }
    }
    u
}

/// The forward pass's transformed weights (`applies`): w is [O, C / group, 3, 3].
pub fn weights<T: Real>(g: &ConvGeom, w: &[T]) -> Vec<T> {
    let c = g.in_channels / g.group;
    let tap = |o: usize, ci: usize, r: usize, j: usize| w[((o * c + ci) * 3 + r) * 3 + j].to_f64();
    transform_kernels(g.out_channels, c, |o, ci| std::array::from_fn(|r| std::array::from_fn(|j| tap(o, ci, r, j))))
}

/// The transposed pass's transformed weights (`applies_transposed`): the kernel of input
/// channel c to output channel o (of c's group) is w[o][c] turned by 180 degrees.
pub fn transposed_weights<T: Real>(g: &ConvGeom, w: &[T]) -> Vec<T> {
    let (c, og) = (g.in_channels / g.group, g.out_channels / g.group);
    let tap = |o: usize, ci: usize, r: usize, j: usize| w[((o * c + ci) * 3 + 2 - r) * 3 + 2 - j].to_f64();
    transform_kernels(g.in_channels, og, |ci, ol| {
        let o = ci / c * og + ol;
        std::array::from_fn(|r| std::array::from_fn(|j| tap(o, ci % c, r, j)))
    })
}

/// y = conv(x) + beta * y (beta 0 or 1), plus `bias` per channel where given; `u` from
/// `weights`.
pub fn forward<T: Real>(g: &ConvGeom, x: &[T], u: &[T], bias: Option<&[T]>, y: &mut [T], beta: T, fused: Fused<'_, T>) {
    let c = Corr::forward(g);
    correlate(&c, c.band_rows(), x, u, y, beta != T::ZERO, bias, fused)
}

/// The convolution's transposed pass after what `start` says; `u` from `transposed_weights`.
pub fn transpose<T: Real>(g: &ConvGeom, dy: &[T], u: &[T], dx: &mut [T], start: Start<'_, T>, fused: Fused<'_, T>) {
    let (add, bias) = match start {
        Start::Add => (true, None),
        Start::Overwrite(b) => (false, b),
    };
    let c = Corr::transposed(g);
    correlate(&c, c.band_rows(), dy, u, dx, add, bias, fused)
}

/// y = corr(x) (+ y where `add`) (+ bias), then the fused ReLU, image by image, `band` tile
/// rows at a time.
#[allow(clippy::too_many_arguments)]
fn correlate<T: Real>(c: &Corr, band: usize, x: &[T], u: &[T], y: &mut [T], add: bool, bias: Option<&[T]>, fused: Fused<'_, T>) {
    assert_eq!(u.len(), P * c.in_c / c.group * c.out_c, "winograd: transformed weights do not match {c:?}");
    if let Some(b) = bias {
        assert_eq!(b.len(), c.out_c, "winograd: bias has the wrong length");
    }
    let (x_img, y_img) = (c.in_c * c.in_plane(), c.out_c * c.out_plane());
    let tw = c.tiles_w();
    per_image(x, x_img, y, y_img, |n, xn, yn, threads| {
        let cols = band * tw;
        with_scratch(P * (c.in_c + c.out_c) * cols + fused.input_len(x_img), |scratch: &mut [T]| {
            let (v, rest) = scratch.split_at_mut(P * c.in_c * cols);
            let (m, masked) = rest.split_at_mut(P * c.out_c * cols);
            let xn = fused.mask_input(n, xn, masked);
            for i0 in (0..c.tiles_h()).step_by(band) {
                let rows = (i0, (i0 + band).min(c.tiles_h()));
                let tb = (rows.1 - rows.0) * tw;
                band_pass(c, threads, xn, u, &mut v[..P * c.in_c * tb], &mut m[..P * c.out_c * tb], yn, rows, add, bias);
            }
        });
        fused.finish_output(yn);
    });
}

/// One band of tile rows `rows` of one image: the input transform into `v` ([in][position]
/// [tile]), the 36 products into `m` ([position][out][tile]), the output transform into y.
/// Where the image has the pool to itself (`Threads::Blocks`), each step's channels or
/// positions go across it.
#[allow(clippy::too_many_arguments)]
fn band_pass<T: Real>(
    c: &Corr,
    threads: Threads,
    xn: &[T],
    u: &[T],
    v: &mut [T],
    m: &mut [T],
    yn: &mut [T],
    rows: (usize, usize),
    add: bool,
    bias: Option<&[T]>,
) {
    let tb = (rows.1 - rows.0) * c.tiles_w();
    let across = threads == Threads::Blocks && rayon::current_num_threads() > 1;
    let (in_plane, out_plane) = (c.in_plane(), c.out_plane());
    each(across, v, P * tb, |ci, vc| input_tiles(c, &xn[ci * in_plane..(ci + 1) * in_plane], rows.0, rows.1, vc));
    let v = &*v;
    let (cg, og) = c.per_group();
    let weights = c.out_c * cg;
    each(across, m, c.out_c * tb, |p, mp| {
        for (gi, mg) in mp.chunks_mut(og * tb).enumerate() {
            let (a, b) = (&u[p * weights + gi * og * cg..][..og * cg], &v[gi * cg * P * tb + p * tb..]);
            gemm_on(Threads::One, og, cg, tb, T::ONE, a, cg as isize, 1, b, (P * tb) as isize, 1, T::ZERO, mg, tb as isize, 1)
        }
    });
    let m = &*m;
    each(across, &mut yn[..c.out_c * out_plane], out_plane, |k, yk| {
        output_tiles(c, m, k, tb, rows.0, rows.1, yk, add, bias.map_or(T::ZERO, |b| b[k]))
    });
}

/// `f(i, chunk)` on every chunk of `len` values of `buf`, across the pool or in turn.
fn each<T: Send>(across: bool, buf: &mut [T], len: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if across {
        buf.par_chunks_mut(len).enumerate().for_each(|(i, chunk)| f(i, chunk));
    } else {
        buf.chunks_mut(len).enumerate().for_each(|(i, chunk)| f(i, chunk));
    }
}

/// `N` disjoint rows of `len` values of `buf`, the first at `base`, `stride` apart.
fn rows_mut<T, const N: usize>(buf: &mut [T], base: usize, stride: usize, len: usize) -> [&mut [T]; N] {
    let mut chunks = buf[base..].chunks_mut(stride);
    std::array::from_fn(|_| &mut chunks.next().expect("winograd: row past the buffer")[..len])
}

/// `N` rows of `len` values of `buf`, the first at `base`, `stride` apart.
fn rows<T, const N: usize>(buf: &[T], base: usize, stride: usize, len: usize) -> [&[T]; N] {
    std::array::from_fn(|i| &buf[base + i * stride..][..len])
}

crate::multiversion! {
    /// B^T d for six rows d at once, element by element: the input transform's one step.
    fn input_step<T: Real>(d: [&[T]; 6], o: [&mut [T]; 6]) {
        let [d0, d1, d2, d3, d4, d5] = d;
        let [o0, o1, o2, o3, o4, o5] = o;
        let len = o0.len();
        let (d0, d1, d2, d3, d4, d5) = (&d0[..len], &d1[..len], &d2[..len], &d3[..len], &d4[..len], &d5[..len]);
        let (o1, o2, o3, o4, o5) = (&mut o1[..len], &mut o2[..len], &mut o3[..len], &mut o4[..len], &mut o5[..len]);
        let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
        for j in 0..len {
            let (a0, a1, a2, a3, a4, a5) = (d0[j], d1[j], d2[j], d3[j], d4[j], d5[j]);
            o0[j] = four * a0 - five * a2 + a4;
            o1[j] = (a3 + a4) - four * (a1 + a2);
            o2[j] = four * (a1 - a2) + (a4 - a3);
            o3[j] = two * (a3 - a1) + (a4 - a2);
            o4[j] = two * (a1 - a3) + (a4 - a2);
            o5[j] = four * a1 - five * a3 + a5;
        }
    }
}

crate::multiversion! {
    /// A^T m for six rows m at once: the output transform's one step.
    fn output_step<T: Real>(m: [&[T]; 6], o: [&mut [T]; 4]) {
        let [m0, m1, m2, m3, m4, m5] = m;
        let [o0, o1, o2, o3] = o;
        let len = o0.len();
        let (m0, m1, m2, m3, m4, m5) = (&m0[..len], &m1[..len], &m2[..len], &m3[..len], &m4[..len], &m5[..len]);
        let (o1, o2, o3) = (&mut o1[..len], &mut o2[..len], &mut o3[..len]);
        let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
        for j in 0..len {
            let (s12, d12) = (m1[j] + m2[j], m1[j] - m2[j]);
            let (s34, d34) = (m3[j] + m4[j], m3[j] - m4[j]);
            o0[j] = m0[j] + s12 + s34;
            o1[j] = d12 + two * d34;
            o2[j] = s12 + four * s34;
            o3[j] = d12 + eight * d34 + m5[j];
        }
    }
}

/// The transformed tiles of tile rows i0..i1 of one input channel's plane into `vc`
/// ([position][tile]).
fn input_tiles<T: Real>(c: &Corr, plane: &[T], i0: usize, i1: usize, vc: &mut [T]) {
    let (tw, nb) = (c.tiles_w(), i1 - i0);
    let tb = nb * tw;
    // The band's input split into 16 phases, Q[rp][cp][I][J] = x[4 (i0 + I) + rp - pad]
    // [4 J + cp - pad] (zero outside the image): tap (r, u) of tile (i, j) is phase
    // (r % 4, u % 4) at (i + r / 4, j + u / 4). With `seg` = tw + 1 values per phase row,
    // every tap of every tile of the band is one offset into its phase, so each transform
    // step is one long vector loop over the band's tiles (and one spare tile per row,
    // whose values are dropped; the extra value per phase keeps its last taps inside).
    let seg = tw + 1;
    let (phase, flat) = ((nb + 1) * seg + 1, nb * seg);
    with_scratch(M * M * phase + 2 * P * flat, |buf: &mut [T]| {
        let (q, rest) = buf.split_at_mut(M * M * phase);
        let (h, vt) = rest.split_at_mut(P * flat);
        for rp in 0..M {
            for big_i in 0..=nb {
                let ih = (M * (i0 + big_i) + rp) as isize - c.pad[0] as isize;
                let src = (ih >= 0 && ih < c.in_h as isize).then(|| &plane[ih as usize * c.in_w..][..c.in_w]);
                for cp in 0..M {
                    let dst = &mut q[(rp * M + cp) * phase + big_i * seg..][..seg];
                    let Some(src) = src else {
                        dst.fill(T::ZERO);
                        continue;
                    };
                    for (jj, d) in dst.iter_mut().enumerate() {
                        let iw = (M * jj + cp) as isize - c.pad[1] as isize;
                        *d = if iw >= 0 && (iw as usize) < c.in_w { src[iw as usize] } else { T::ZERO };
                    }
                }
            }
        }
        // Across each tap row (h: [tap row][position across][tile]), then down.
        for r in 0..A {
            let d = std::array::from_fn(|u| &q[((r % M) * M + u % M) * phase + (r / M) * seg + u / M..][..flat]);
            input_step(d, rows_mut(h, r * A * flat, flat, flat));
        }
        for s in 0..A {
            input_step(rows(h, s * flat, A * flat, flat), rows_mut(vt, s * flat, A * flat, flat));
        }
        for (p, dst) in vc[..P * tb].chunks_exact_mut(tb).enumerate() {
            for (i, row) in dst.chunks_exact_mut(tw).enumerate() {
                row.copy_from_slice(&vt[p * flat + i * seg..][..tw]);
            }
        }
    });
}

/// Output channel k's tiles of tile rows i0..i1 from the products `m` ([position][out]
/// [tile]) into its plane `yk`: written, or added where `add`, then `bias` added. Both
/// transform steps are elementwise over the band's tiles.
#[allow(clippy::too_many_arguments)]
fn output_tiles<T: Real>(c: &Corr, m: &[T], k: usize, tb: usize, i0: usize, i1: usize, yk: &mut [T], add: bool, bias: T) {
    let tw = c.tiles_w();
    let per_position = c.out_c * tb;
    with_scratch(A * M * tb + M * M * tb, |buf: &mut [T]| {
        let (z, r) = buf.split_at_mut(A * M * tb);
        // Across (z: [row q][column v][tile]), then down (r: [row v'][column v][tile]).
        for q in 0..A {
            output_step(rows(m, q * A * per_position + k * tb, per_position, tb), rows_mut(z, q * M * tb, tb, tb));
        }
        for v in 0..M {
            output_step(rows(z, v * tb, M * tb, tb), rows_mut(r, v * tb, M * tb, tb));
        }
        for i in i0..i1 {
            let first = (i - i0) * tw;
            for vr in 0..M {
                let oh = i * M + vr;
                if oh >= c.out_h {
                    break;
                }
                let out = &mut yk[oh * c.out_w..(oh + 1) * c.out_w];
                for (ow, o) in out.iter_mut().enumerate() {
                    let value = r[(vr * M + ow % M) * tb + first + ow / M];
                    *o = if add { *o + value } else { value } + bias;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::Rng;

    /// The correlation of one image by its definition, in f64.
    fn naive(c: &Corr, x: &[f64], kernel: &dyn Fn(usize, usize, usize, usize) -> f64) -> Vec<f64> {
        let mut y = vec![0.0; c.out_c * c.out_plane()];
        for o in 0..c.out_c {
            for oh in 0..c.out_h {
                for ow in 0..c.out_w {
                    let mut s = 0.0;
                    for ci in 0..c.in_c {
                        for r in 0..3 {
                            for j in 0..3 {
                                let ih = (oh + r) as isize - c.pad[0] as isize;
                                let iw = (ow + j) as isize - c.pad[1] as isize;
                                if ih >= 0 && iw >= 0 && (ih as usize) < c.in_h && (iw as usize) < c.in_w {
                                    s += x[(ci * c.in_h + ih as usize) * c.in_w + iw as usize] * kernel(o, ci, r, j);
                                }
                            }
                        }
                    }
                    y[(o * c.out_h + oh) * c.out_w + ow] = s;
                }
            }
        }
        y
    }

    fn corr(in_c: usize, in_h: usize, in_w: usize, out_c: usize, pad: [usize; 2]) -> Corr {
        Corr { in_c, in_h, in_w, out_c, out_h: in_h + 2 * pad[0] - 2, out_w: in_w + 2 * pad[1] - 2, pad, group: 1 }
    }

    /// (correlation, batch, band rows): maps that are and are not multiples of 4, paddings
    /// 0-2 on each side, one band and several, one image (its steps across the pool) and
    /// three (images across the pool).
    fn cases() -> Vec<(Corr, usize, usize)> {
        vec![
            (corr(3, 9, 9, 2, [1, 1]), 1, 9),
            (corr(5, 17, 19, 4, [1, 1]), 1, 9),
            (corr(4, 13, 10, 3, [0, 2]), 3, 9),
            (corr(2, 16, 16, 6, [2, 0]), 2, 1),
            (corr(6, 11, 14, 5, [1, 2]), 1, 2),
            (corr(3, 6, 7, 3, [2, 2]), 3, 1),
        ]
    }

    /// Every case against the definition in f64, written over NaNs, added to what y held,
    /// with a bias and without, on 1 and 3 threads.
    #[test]
    fn the_correlation_matches_its_definition() {
        let mut rng = Rng::new(41);
        for (c, batch, band) in cases() {
            let x = rng.uniform_vec(batch * c.in_c * c.in_plane(), -1.0, 1.0);
            let w = rng.uniform_vec(c.out_c * c.in_c * 9, -1.0, 1.0);
            let bias = rng.uniform_vec(c.out_c, -1.0, 1.0);
            let y0 = rng.uniform_vec(batch * c.out_c * c.out_plane(), -1.0, 1.0);
            let kernel = |o: usize, ci: usize, r: usize, j: usize| w[((o * c.in_c + ci) * 3 + r) * 3 + j];
            let u: Vec<f64> =
                transform_kernels(c.out_c, c.in_c, |o, ci| std::array::from_fn(|r| std::array::from_fn(|j| kernel(o, ci, r, j))));
            let (x_img, y_img) = (c.in_c * c.in_plane(), c.out_c * c.out_plane());
            let want: Vec<f64> = x.chunks(x_img).flat_map(|xn| naive(&c, xn, &kernel)).collect();
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                for (add, with_bias) in [(false, false), (false, true), (true, false)] {
                    let mut y = if add { y0.clone() } else { vec![f64::NAN; y0.len()] };
                    let b = with_bias.then_some(&bias[..]);
                    pool.install(|| correlate(&c, band, &x, &u, &mut y, add, b, Fused::No));
                    for (i, (&got, &sum)) in y.iter().zip(&want).enumerate() {
                        let expect =
                            sum + if add { y0[i] } else { 0.0 } + if with_bias { bias[(i / c.out_plane()) % c.out_c] } else { 0.0 };
                        assert!((got - expect).abs() <= 1e-12 * (1.0 + expect.abs()), "{c:?} batch {batch} band {band} threads {threads} add {add} bias {with_bias}: index {i} (image {}): {got} vs {expect}", i / y_img);
                    }
                }
            }
        }
    }

    /// In f32 the transforms add rounding of their own: F(4x4, 3x3) loses about a digit
    /// against the direct sum. Here (64 channels) the worst error is 5.8e-6 of the largest
    /// output, the column path's 5.9e-7; rms 1.3e-5 against 2.3e-6.
    #[test]
    fn f32_error_is_small() {
        let mut rng = Rng::new(42);
        let c = corr(64, 20, 21, 32, [1, 1]);
        let x = rng.uniform_vec(c.in_c * c.in_plane(), -1.0, 1.0);
        let w = rng.uniform_vec(c.out_c * c.in_c * 9, -1.0, 1.0);
        let kernel = |o: usize, ci: usize, r: usize, j: usize| w[((o * c.in_c + ci) * 3 + r) * 3 + j];
        let want = naive(&c, &x, &kernel);
        let u: Vec<f32> = transform_kernels(c.out_c, c.in_c, |o, ci| std::array::from_fn(|r| std::array::from_fn(|j| kernel(o, ci, r, j))));
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut y = vec![0.0f32; want.len()];
        correlate(&c, c.band_rows(), &x32, &u, &mut y, false, None, Fused::No);
        let top = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = y.iter().zip(&want).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
        eprintln!("f32 winograd: worst error {worst:e} of largest {top}");
        assert!(worst <= 1e-5 * top, "worst error {worst} against largest value {top}");
    }

    #[test]
    fn the_shapes_that_take_this_way_are_those_measured_faster() {
        let geom = |c: usize, hw: usize, o: usize, stride: usize, pad: usize, group: usize| {
            ConvGeom::new(1, c, hw, hw, o, [3, 3], [stride, stride], [pad, pad], [1, 1], group).unwrap()
        };
        // VGG, ResNet, Inception v3, DenseNet's growth convolutions, CaffeNet's conv3, the
        // generator's conv4_1 and conv3_1 (deconvolutions of stride 1, pad 1).
        for (c, hw, o, pad) in [
            (64, 224, 64, 1),
            (256, 56, 256, 1),
            (512, 14, 512, 1),
            (64, 35, 96, 1),
            (128, 14, 32, 1),
            (256, 13, 384, 1),
            (256, 16, 256, 1),
            (128, 32, 128, 1),
            (32, 32, 32, 1),
            (64, 15, 64, 0),
        ] {
            let g = geom(c, hw, o, 1, pad, 1);
            assert!(applies(&g) && applies_transposed(&g), "{g:?}");
        }
        // Small maps, few channels, strides, groups.
        for (c, hw, o, stride, pad, group) in [
            (512, 7, 512, 1, 1, 1),
            (256, 10, 256, 1, 1, 1),
            (32, 16, 32, 1, 1, 1),
            (16, 128, 16, 1, 1, 1),
            (128, 56, 24, 1, 1, 1),
            (64, 56, 64, 2, 1, 1),
            (64, 56, 64, 1, 1, 8),
            (256, 13, 256, 1, 1, 8),
            (64, 15, 64, 1, 3, 1),
        ] {
            let g = geom(c, hw, o, stride, pad, group);
            assert!(!applies(&g) && !applies_transposed(&g), "{g:?}");
        }
        // Groups of enough channels each: CaffeNet's conv4 and conv5.
        for (c, o) in [(384, 384), (384, 256)] {
            let g = geom(c, 13, o, 1, 1, 2);
            assert!(applies(&g) && applies_transposed(&g), "{g:?}");
        }
        let g = ConvGeom::new(1, 64, 32, 32, 64, [3, 3], [1, 1], [1, 1], [2, 2], 1).unwrap();
        assert!(!applies(&g), "dilation 2");
    }
}
