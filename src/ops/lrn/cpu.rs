//! Local response normalization, both Caffe regions. `dims` = [batch, channels, height, width].
//!
//! ACROSS_CHANNELS: `scale = k + alpha/n * sum_{|c'-c| <= (n-1)/2} x_c'^2`.
//! WITHIN_CHANNEL:  `scale = 1 + alpha/(n*n) * sum_{n x n window around (h,w)} x^2` (Caffe builds it
//! from AVE pooling with pad (n-1)/2, whose divisor is always n*n there, and ignores k).
//! Both: `y = x * scale^-beta`.
//!
//! Both windows are symmetric, so "the outputs whose window contains p" is the window around p:
//! `dx_p = dy_p * scale_p^-beta - 2*alpha*beta/N * x_p * sum_{q in window(p)} dy_q * y_q / scale_q`
//! with N = n (across) or n*n (within). Window sums are running sums, O(1) per element whatever
//! n is, and kept in f64 so the add-then-subtract of a running sum does not drift in f32.

use super::LrnKernels;
use crate::device::Cpu;
use crate::ir::{LrnParam, LrnRegion};
use crate::ops::Aux;
use crate::real::Real;
use anyhow::Result;
use rayon::prelude::*;

/// `dst[i*stride] = sum of src[j*stride] over |j - i| <= half, 0 <= j < len` (zero padded).
fn window_sum(src: &[f64], dst: &mut [f64], len: usize, stride: usize, half: usize) {
    let mut sum = 0.0;
    for j in 0..half.min(len) {
        sum += src[j * stride];
    }
    for i in 0..len {
        if i + half < len {
            sum += src[(i + half) * stride];
        }
        dst[i * stride] = sum;
        if i >= half {
            sum -= src[(i - half) * stride];
        }
    }
}

/// Sums `src` (one image, [c, h, w]) over each element's WITHIN_CHANNEL window into `dst`;
/// `tmp` is scratch of the same size (the window is separable: rows, then columns). The
/// ACROSS_CHANNELS window is `across_channels`, a running sum over whole planes.
#[inline(always)]
fn within_channel_sum([c, h, w]: [usize; 3], half: usize, src: &[f64], tmp: &mut [f64], dst: &mut [f64]) {
    let hw = h * w;
    for plane in 0..c {
        let s = &src[plane * hw..][..hw];
        let t = &mut tmp[plane * hw..][..hw];
        let d = &mut dst[plane * hw..][..hw];
        for row in 0..h {
            window_sum(&s[row * w..], &mut t[row * w..], w, 1, half);
        }
        for col in 0..w {
            window_sum(&t[col..], &mut d[col..], h, w, half);
        }
    }
}

/// (additive constant, multiplier of the window sum, N of the gradient formula).
fn coefficients(p: &LrnParam) -> (f64, f64, f64) {
    let n = p.local_size as f64;
    match p.region {
        LrnRegion::AcrossChannels => (p.k as f64, p.alpha as f64 / n, n),
        LrnRegion::WithinChannel => (1.0, p.alpha as f64 / (n * n), n * n),
    }
}

fn check_lengths(dims: [usize; 4], what: &str, slices: &[(&str, usize)]) {
    let count: usize = dims.iter().product();
    for (name, len) in slices {
        assert_eq!(*len, count, "{what}: {name} has {len} elements, dims {dims:?} need {count}");
    }
}

/// `y = x * s^-beta` for each element; one loop per common beta so each vectorizes
/// (0.75, Caffe's default and CaffeNet's: `1/(sqrt(s)*sqrt(sqrt(s)))`).
#[inline(always)]
fn pow_neg_beta<T: Real>(beta: f64, s: &[T], p: &mut [T]) {
    if beta == 0.75 {
        for (p, &s) in p.iter_mut().zip(s) {
            let r = s.sqrt();
            *p = T::ONE / (r * r.sqrt());
        }
    } else if beta == 0.5 {
        for (p, &s) in p.iter_mut().zip(s) {
            *p = T::ONE / s.sqrt();
        }
    } else if beta == 1.0 {
        for (p, &s) in p.iter_mut().zip(s) {
            *p = T::ONE / s;
        }
    } else {
        let nb = T::from_f64(-beta);
        for (p, &s) in p.iter_mut().zip(s) {
            *p = s.powf(nb);
        }
    }
}

/// What `across_channels` does with the planes of one image: the methods are
/// `#[inline(always)]` in every implementation, so they are compiled inside the AVX-512 and
/// AVX2 builds of the pass that calls it (a closure's body would be compiled apart, at
/// baseline x86-64).
trait Planes {
    /// Fills `t` with plane `e`'s terms of the window sum.
    fn term(&mut self, e: usize, t: &mut [f64]);
    /// Uses the window sum around channel `ch`.
    fn visit(&mut self, ch: usize, sum: &[f64]);
}

/// The channel window of one image as a running sum over whole planes, kept in f64: plane
/// `ch + half` enters (its terms kept in a ring of `2*half + 1` planes), `planes.visit(ch,
/// sum)` sees the window around `ch`, then plane `ch - half` leaves. The same additions in
/// the same order as `window_sum`.
#[inline(always)]
fn across_channels(c: usize, hw: usize, half: usize, planes: &mut impl Planes) {
    let slots = 2 * half + 1;
    let mut ring = vec![0.0; slots * hw];
    let mut sum = vec![0.0; hw];
    // Plane e's terms into its ring slot and onto the sum.
    #[inline(always)]
    fn enter(planes: &mut impl Planes, e: usize, hw: usize, slots: usize, sum: &mut [f64], ring: &mut [f64]) {
        let slot = &mut ring[(e % slots) * hw..][..hw];
        planes.term(e, slot);
        for (s, &t) in sum.iter_mut().zip(slot.iter()) {
            *s += t;
        }
    }
    for e in 0..half.min(c) {
        enter(planes, e, hw, slots, &mut sum, &mut ring);
    }
    for ch in 0..c {
        if ch + half < c {
            enter(planes, ch + half, hw, slots, &mut sum, &mut ring);
        }
        planes.visit(ch, &sum);
        if ch >= half {
            let slot = &ring[((ch - half) % slots) * hw..][..hw];
            for (s, &t) in sum.iter_mut().zip(slot) {
                *s -= t;
            }
        }
    }
}

/// One plane of the forward pass: scale = k + a * sum, y = x * scale^-beta.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn finish_forward<T: Real>(k: f64, a: f64, beta: f64, sum: &[f64], xs: &[T], ys: &mut [T], ss: &mut [T], pw: &mut [T]) {
    for (s, &v) in ss.iter_mut().zip(sum) {
        *s = T::from_f64(k + a * v);
    }
    pow_neg_beta(beta, ss, pw);
    for ((y, &x), &p) in ys.iter_mut().zip(xs).zip(pw.iter()) {
        *y = x * p;
    }
}

/// One plane of dy * y / scale, the backward pass's windowed term.
#[inline(always)]
fn ratio_plane<T: Real>(dy: &[T], y: &[T], scale: &[T], t: &mut [f64]) {
    for (t, ((&d, &y), &s)) in t.iter_mut().zip(dy.iter().zip(y).zip(scale)) {
        *t = d.to_f64() * y.to_f64() / s.to_f64();
    }
}

/// One plane of the backward pass: dx += dy * scale^-beta - coef * x * window.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn finish_backward<T: Real>(beta: f64, coef: f64, window: &[f64], x: &[T], dy: &[T], scale: &[T], dx: &mut [T], pw: &mut [T]) {
    pow_neg_beta(beta, scale, pw);
    let ins = dy.iter().zip(x).zip(pw.iter()).zip(window);
    for (dx, (((&d, &x), &p), &win)) in dx.iter_mut().zip(ins) {
        *dx += T::from_f64(d.to_f64() * p.to_f64() - coef * x.to_f64() * win);
    }
}

/// The forward pass's planes: terms x^2, then each plane's scale and output.
struct ForwardPlanes<'a, T> {
    hw: usize,
    coef: (f64, f64, f64),
    x: &'a [T],
    y: &'a mut [T],
    scale: &'a mut [T],
    pw: Vec<T>,
}

impl<T: Real> ForwardPlanes<'_, T> {
    #[inline(always)]
    fn plane(&mut self, ch: usize, sum: &[f64]) {
        let r = ch * self.hw..(ch + 1) * self.hw;
        let (k, a, beta) = self.coef;
        finish_forward(k, a, beta, sum, &self.x[r.clone()], &mut self.y[r.clone()], &mut self.scale[r], &mut self.pw);
    }
}

impl<T: Real> Planes for ForwardPlanes<'_, T> {
    #[inline(always)]
    fn term(&mut self, e: usize, t: &mut [f64]) {
        for (t, &v) in t.iter_mut().zip(&self.x[e * self.hw..][..self.hw]) {
            let v = v.to_f64();
            *t = v * v;
        }
    }

    #[inline(always)]
    fn visit(&mut self, ch: usize, sum: &[f64]) {
        self.plane(ch, sum);
    }
}

/// The backward pass's planes: terms dy * y / scale, then each plane's data gradient.
struct BackwardPlanes<'a, T> {
    hw: usize,
    beta: f64,
    coef: f64,
    x: &'a [T],
    y: &'a [T],
    scale: &'a [T],
    dy: &'a [T],
    dx: &'a mut [T],
    pw: Vec<T>,
}

impl<T: Real> BackwardPlanes<'_, T> {
    #[inline(always)]
    fn plane(&mut self, ch: usize, window: &[f64]) {
        let r = ch * self.hw..(ch + 1) * self.hw;
        let (x, dy, scale) = (&self.x[r.clone()], &self.dy[r.clone()], &self.scale[r.clone()]);
        finish_backward(self.beta, self.coef, window, x, dy, scale, &mut self.dx[r], &mut self.pw);
    }
}

impl<T: Real> Planes for BackwardPlanes<'_, T> {
    #[inline(always)]
    fn term(&mut self, e: usize, t: &mut [f64]) {
        let r = e * self.hw..(e + 1) * self.hw;
        ratio_plane(&self.dy[r.clone()], &self.y[r.clone()], &self.scale[r], t);
    }

    #[inline(always)]
    fn visit(&mut self, ch: usize, sum: &[f64]) {
        self.plane(ch, sum);
    }
}

crate::multiversion! {
    /// One image of the forward pass.
    fn forward_image<T: Real>(p: &LrnParam, chw: [usize; 3], x: &[T], y: &mut [T], scale: &mut [T]) {
        let [c, h, w] = chw;
        let hw = h * w;
        let half = (p.local_size.max(1) - 1) / 2;
        let (k, a, _) = coefficients(p);
        let mut planes = ForwardPlanes { hw, coef: (k, a, p.beta as f64), x, y, scale, pw: vec![T::ZERO; hw] };
        match p.region {
            LrnRegion::AcrossChannels => across_channels(c, hw, half, &mut planes),
            LrnRegion::WithinChannel => {
                let image = c * hw;
                let sq: Vec<f64> = x.iter().map(|&v| v.to_f64() * v.to_f64()).collect();
                let (mut tmp, mut sum) = (vec![0.0; image], vec![0.0; image]);
                within_channel_sum([c, h, w], half, &sq, &mut tmp, &mut sum);
                for ch in 0..c {
                    planes.plane(ch, &sum[ch * hw..][..hw]);
                }
            }
        }
    }
}

crate::multiversion! {
    /// One image of the backward pass, added into `dx`.
    fn backward_image<T: Real>(p: &LrnParam, chw: [usize; 3], x: &[T], y: &[T], scale: &[T], dy: &[T], dx: &mut [T]) {
        let [c, h, w] = chw;
        let hw = h * w;
        let half = (p.local_size.max(1) - 1) / 2;
        let (_, _, big_n) = coefficients(p);
        let (alpha, beta) = (p.alpha as f64, p.beta as f64);
        let coef = 2.0 * alpha * beta / big_n;
        let mut planes = BackwardPlanes { hw, beta, coef, x, y, scale, dy, dx, pw: vec![T::ZERO; hw] };
        match p.region {
            LrnRegion::AcrossChannels => across_channels(c, hw, half, &mut planes),
            LrnRegion::WithinChannel => {
                let image = c * hw;
                let mut rat = vec![0.0; image];
                for (ch, t) in rat.chunks_exact_mut(hw.max(1)).enumerate() {
                    planes.term(ch, t);
                }
                let (mut tmp, mut sum) = (vec![0.0; image], vec![0.0; image]);
                within_channel_sum([c, h, w], half, &rat, &mut tmp, &mut sum);
                for ch in 0..c {
                    planes.plane(ch, &sum[ch * hw..][..hw]);
                }
            }
        }
    }
}

/// Overwrites `y` and `scale` (the latter is what the backward pass needs). Images go to
/// rayon's threads, each computed alone: its bits do not depend on the batch.
pub fn lrn_forward<T: Real>(dims: [usize; 4], p: &LrnParam, x: &[T], y: &mut [T], scale: &mut [T]) {
    check_lengths(dims, "lrn_forward", &[("x", x.len()), ("y", y.len()), ("scale", scale.len())]);
    let [_, c, h, w] = dims;
    let image = c * h * w;
    if image == 0 {
        return;
    }
    let outs = y.par_chunks_mut(image).zip(scale.par_chunks_mut(image));
    x.par_chunks(image).zip(outs).for_each(|(xi, (yi, si))| forward_image(p, [c, h, w], xi, yi, si));
}

/// Adds the input gradient into `dx`, from the forward's `x`, `y` and `scale`.
#[allow(clippy::too_many_arguments)]
pub fn lrn_backward<T: Real>(dims: [usize; 4], p: &LrnParam, x: &[T], y: &[T], scale: &[T], dy: &[T], dx: &mut [T]) {
    check_lengths(dims, "lrn_backward", &[("x", x.len()), ("y", y.len()), ("scale", scale.len()), ("dy", dy.len()), ("dx", dx.len())]);
    let [_, c, h, w] = dims;
    let image = c * h * w;
    if image == 0 {
        return;
    }
    let ins = x.par_chunks(image).zip(y.par_chunks(image)).zip(scale.par_chunks(image)).zip(dy.par_chunks(image));
    dx.par_chunks_mut(image).zip(ins).for_each(|(dxi, (((xi, yi), si), dyi))| backward_image(p, [c, h, w], xi, yi, si, dyi, dxi));
}

impl<T: Real> LrnKernels for Cpu<'_, T> {
    fn lrn_forward(&self, dims: [usize; 4], p: &LrnParam, x: &Vec<T>, y: &mut Vec<T>, aux: &mut Aux<Self>) -> Result<()> {
        lrn_forward(dims, p, x, y, aux.buf(self, x.len())?);
        Ok(())
    }

    fn lrn_backward(
        &self,
        dims: [usize; 4],
        p: &LrnParam,
        x: &Vec<T>,
        y: &Vec<T>,
        aux: &Aux<Self>,
        dy: &Vec<T>,
        dx: &mut Vec<T>,
    ) -> Result<()> {
        lrn_backward(dims, p, x, y, aux.values("LRN")?, dy, dx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{self, Rng};

    fn param(region: LrnRegion, local_size: usize, alpha: f32, beta: f32, k: f32) -> LrnParam {
        LrnParam { region, local_size, alpha, beta, k }
    }

    fn forward(dims: [usize; 4], p: &LrnParam, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut y = vec![0.0; x.len()];
        let mut s = vec![0.0; x.len()];
        lrn_forward(dims, p, x, &mut y, &mut s);
        (y, s)
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol, "index {i}: got {g}, want {w}");
        }
    }

    #[test]
    fn across_channels_by_hand() {
        // alpha/n = 1, beta = 1/2, k = 1: scale_c = 1 + sum of squares of the neighbours.
        let p = param(LrnRegion::AcrossChannels, 3, 3.0, 0.5, 1.0);
        let (y, s) = forward([1, 4, 1, 1], &p, &[1.0, 2.0, 3.0, 4.0]);
        assert_close(&s, &[6.0, 15.0, 30.0, 26.0], 1e-12);
        let want = [1.0 / 6f64.sqrt(), 2.0 / 15f64.sqrt(), 3.0 / 30f64.sqrt(), 4.0 / 26f64.sqrt()];
        assert_close(&y, &want, 1e-12);
    }

    #[test]
    fn within_channel_by_hand_ignores_k() {
        // alpha/(n*n) = 1, beta = 1: y = x / (1 + sum of squares in the clipped 3x3 window).
        let p = param(LrnRegion::WithinChannel, 3, 9.0, 1.0, 5.0);
        let x: Vec<f64> = (1..=9).map(|v| v as f64).collect();
        let (y, s) = forward([1, 1, 3, 3], &p, &x);
        let sq = |idx: &[usize]| 1.0 + idx.iter().map(|&i| x[i] * x[i]).sum::<f64>();
        let want_s = [
            sq(&[0, 1, 3, 4]),
            sq(&[0, 1, 2, 3, 4, 5]),
            sq(&[1, 2, 4, 5]),
            sq(&[0, 1, 3, 4, 6, 7]),
            sq(&[0, 1, 2, 3, 4, 5, 6, 7, 8]),
            sq(&[1, 2, 4, 5, 7, 8]),
            sq(&[3, 4, 6, 7]),
            sq(&[3, 4, 5, 6, 7, 8]),
            sq(&[4, 5, 7, 8]),
        ];
        assert_eq!(want_s[0], 47.0);
        assert_eq!(want_s[4], 286.0);
        assert_close(&s, &want_s, 1e-12);
        let want_y: Vec<f64> = x.iter().zip(&want_s).map(|(v, s)| v / s).collect();
        assert_close(&y, &want_y, 1e-12);
    }

    /// An OpenCV/Caffe fixture array, as (shape, data).
    fn read_npy(name: &str) -> (Vec<usize>, Vec<f32>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/caffe/opencv_layers").join(name);
        let t = crate::npy::read(&path).unwrap();
        (t.shape, t.data)
    }

    fn check_against_caffe(file: &str, p: &LrnParam) {
        let (shape, x) = read_npy("blob.npy");
        let (cshape, want) = read_npy(file);
        assert_eq!(shape, cshape);
        let dims = [shape[0], shape[1], shape[2], shape[3]];
        let mut y = vec![0.0f32; x.len()];
        let mut s = vec![0.0f32; x.len()];
        lrn_forward(dims, p, &x, &mut y, &mut s);
        let max_ref = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let max_err = y.iter().zip(&want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(max_err <= 1e-5 * max_ref, "{file}: max error {max_err}, max |caffe| {max_ref}");
    }

    #[test]
    fn across_channels_matches_caffe() {
        check_against_caffe("layer_lrn_channels.npy", &param(LrnRegion::AcrossChannels, 5, 1.1, 0.75, 1.0));
    }

    #[test]
    fn within_channel_matches_caffe() {
        // k is deliberately not 1: Caffe ignores it for this region.
        check_against_caffe("layer_lrn_spatial.npy", &param(LrnRegion::WithinChannel, 5, 0.9, 0.75, 2.0));
    }

    fn gradcheck_lrn(dims: [usize; 4], p: &LrnParam, seed: u64) {
        let mut rng = Rng::new(seed);
        let count: usize = dims.iter().product();
        let x = rng.uniform_vec(count, -2.0, 2.0);
        let r = rng.uniform_vec(count, -1.0, 1.0);
        let (y, s) = forward(dims, p, &x);
        let mut dx = vec![0.0; count];
        lrn_backward(dims, p, &x, &y, &s, &r, &mut dx);
        gradcheck::check(&format!("lrn {p:?} {dims:?}"), &x, &dx, |xp| gradcheck::dot(&forward(dims, p, xp).0, &r));
        // Accumulates: a second call doubles it.
        let once = dx.clone();
        lrn_backward(dims, p, &x, &y, &s, &r, &mut dx);
        for (a, b) in dx.iter().zip(&once) {
            assert!((a - 2.0 * b).abs() <= 1e-12 * (1.0 + b.abs()));
        }
    }

    #[test]
    fn gradcheck_across_channels() {
        gradcheck_lrn([2, 7, 3, 4], &param(LrnRegion::AcrossChannels, 3, 0.7, 0.75, 1.5), 11);
        gradcheck_lrn([2, 7, 3, 4], &param(LrnRegion::AcrossChannels, 5, 1.1, 0.6, 1.0), 12);
        // Window wider than the channel count.
        gradcheck_lrn([1, 2, 2, 3], &param(LrnRegion::AcrossChannels, 5, 1.3, 0.75, 2.0), 13);
    }

    #[test]
    fn gradcheck_within_channel() {
        gradcheck_lrn([2, 3, 5, 6], &param(LrnRegion::WithinChannel, 3, 0.9, 0.75, 1.0), 21);
        gradcheck_lrn([1, 2, 4, 3], &param(LrnRegion::WithinChannel, 5, 1.2, 0.5, 1.0), 22);
    }

    /// Each image computed alone: a batch gives the bits of its images run one at a time.
    #[test]
    fn batch_matches_images_alone() {
        let mut rng = Rng::new(41);
        for p in [
            param(LrnRegion::AcrossChannels, 5, 1e-4, 0.75, 1.0),
            param(LrnRegion::AcrossChannels, 3, 0.7, 0.6, 1.5),
            param(LrnRegion::WithinChannel, 3, 0.9, 0.75, 1.0),
        ] {
            let dims = [5, 11, 7, 9];
            let image = 11 * 7 * 9;
            let f = |v: Vec<f64>| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let x = f(rng.uniform_vec(5 * image, -30.0, 30.0));
            let dy = f(rng.uniform_vec(5 * image, -1.0, 1.0));
            let (mut y, mut s, mut dx) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
            lrn_forward(dims, &p, &x, &mut y, &mut s);
            lrn_backward(dims, &p, &x, &y, &s, &dy, &mut dx);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for i in 0..5 {
                let r = i * image..(i + 1) * image;
                let one = [1, 11, 7, 9];
                let (mut y1, mut s1, mut dx1) = (vec![0.0f32; image], vec![0.0f32; image], vec![0.0f32; image]);
                lrn_forward(one, &p, &x[r.clone()], &mut y1, &mut s1);
                lrn_backward(one, &p, &x[r.clone()], &y1, &s1, &dy[r.clone()], &mut dx1);
                assert_eq!(bits(&y1), bits(&y[r.clone()]), "{p:?} image {i} y");
                assert_eq!(bits(&s1), bits(&s[r.clone()]), "{p:?} image {i} scale");
                assert_eq!(bits(&dx1), bits(&dx[r]), "{p:?} image {i} dx");
            }
        }
    }
}
