//! Activation maximization in pixel space with hand-designed priors (Yosinski et al. 2015,
//! Mahendran & Vedaldi): the baseline family DGN-AM is compared against. No generator:
//! the image itself is optimized, and jitter, L2 decay, blur and clipping keep it from
//! becoming high-frequency noise.

use crate::graph::{unit_offset, CpuNet, UnitRef};
use crate::rng::Rng;
use anyhow::{ensure, Context, Result};

/// The priors and step of pixel-space AM. The defaults are the demo's, tuned on LeNet
/// (inputs in [0, 1]).
#[derive(Clone, Debug, PartialEq)]
pub struct PixelPriors {
    pub iters: usize,
    /// Mean absolute pixel change of one step: the gradient is divided by its per-sample
    /// mean |g|, so the step size does not depend on the unit's scale.
    pub lr: f32,
    /// `x *= 1 - l2_decay` after each step.
    pub l2_decay: f32,
    /// Blur every this many iterations (0: never).
    pub blur_every: usize,
    /// Gaussian blur standard deviation in pixels.
    pub blur_sigma: f32,
    /// Largest random shift, in pixels, along each axis.
    pub jitter: usize,
    /// The valid input range; every iteration ends by clamping into it.
    pub clip: (f32, f32),
}

impl Default for PixelPriors {
    fn default() -> Self {
        PixelPriors { iters: 200, lr: 0.05, l2_decay: 0.1, blur_every: 3, blur_sigma: 0.8, jitter: 2, clip: (0.0, 1.0) }
    }
}

impl PixelPriors {
    /// The demo's priors for one-channel nets with inputs in [0, 1]; for colour nets in
    /// Caffe's space (BGR, 0-255 minus the ImageNet mean) the same priors scaled by 255.
    pub fn for_channels(channels: usize) -> PixelPriors {
        let d = PixelPriors::default();
        if channels == 1 {
            return d;
        }
        let mean = crate::preprocess::IMAGENET_MEAN_BGR;
        let lo = -mean.iter().fold(0f32, |m, &v| m.max(v));
        let hi = 255.0 - mean.iter().fold(f32::MAX, |m, &v| m.min(v));
        PixelPriors { lr: d.lr * 255.0, clip: (lo, hi), ..d }
    }
}

/// What `pixel_am` returns.
#[derive(Clone, Debug)]
pub struct PixelRun {
    /// The final images, N x C x H x W as the net's input.
    pub images: Vec<f32>,
    /// `activations[i][n]`: sample n's unit at iteration i (on that iteration's jittered image).
    pub activations: Vec<Vec<f32>>,
    /// (iterations done, images) every `frame_every` iterations, the first and last included.
    pub frames: Vec<(usize, Vec<f32>)>,
}

/// Maximizes, for each sample n of the batch, unit `units[n]` of `layer` by gradient
/// ascent on the input, starting from `init`. One backward pass serves the whole batch:
/// the seed has a single 1 per sample, so each image receives the gradient of its own
/// unit only. `seeds` drive the jitter: one seed per sample gives each its own stream (a
/// sample then moves as it would alone), a single seed one stream for the whole batch.
pub fn pixel_am(
    net: &CpuNet<f32>,
    layer: &str,
    units: &[UnitRef],
    priors: &PixelPriors,
    init: &[f32],
    seeds: &[u64],
    frame_every: Option<usize>,
) -> Result<PixelRun> {
    let input = net.plan.inputs[0];
    let in_shape = net.plan.blobs[input].shape.clone();
    ensure!(in_shape.len() == 4, "pixel_am needs an N x C x H x W input, the net has {:?}", in_shape);
    let (n, c, h, w) = (in_shape[0], in_shape[1], in_shape[2], in_shape[3]);
    let per_image = c * h * w;
    ensure!(units.len() == n, "{} units for a batch of {n}: give one unit per sample", units.len());
    ensure!(init.len() == n * per_image, "initial images have {} values, the net's input needs {}", init.len(), n * per_image);
    ensure!(priors.clip.0 < priors.clip.1, "clip range {:?} is empty", priors.clip);
    ensure!(seeds.len() == 1 || seeds.len() == n, "{} jitter seeds for a batch of {n}: give one, or one per sample", seeds.len());

    let out = net.plan.layer_output(layer)?;
    let out_shape = &net.plan.blobs[out].shape;
    let per_out: usize = out_shape[1..].iter().product();
    let offsets: Vec<usize> =
        units.iter().enumerate().map(|(i, &u)| Ok(i * per_out + unit_offset(out_shape, u, layer)?)).collect::<Result<_>>()?;
    let mut seed_grad = vec![0f32; n * per_out];
    for &o in &offsets {
        seed_grad[o] = 1.0;
    }

    let mut rngs: Vec<Rng> = seeds.iter().map(|&s| Rng::new(s)).collect();
    let mut st = net.state()?;
    let mut x = init.to_vec();
    let mut shifted = vec![0f32; x.len()];
    let mut grad = vec![0f32; x.len()];
    let mut run = PixelRun { images: vec![], activations: Vec::with_capacity(priors.iters), frames: vec![] };
    let every = frame_every.map(|e| e.max(1));

    for it in 0..priors.iters {
        if every.is_some_and(|e| it % e == 0) {
            run.frames.push((it, x.clone()));
        }
        // Jitter: the net sees a shifted image, so no pixel pattern is tied to one position.
        let j = priors.jitter as i64;
        let shared = rngs.len() == 1;
        let shifts: Vec<(i64, i64)> = (0..n)
            .map(|s| {
                let rng = &mut rngs[if shared { 0 } else { s }];
                (rand_shift(rng, j), rand_shift(rng, j))
            })
            .collect();
        for (s, &(dx, dy)) in shifts.iter().enumerate() {
            let r = s * per_image..(s + 1) * per_image;
            roll(&x[r.clone()], &mut shifted[r], c, h, w, dx, dy);
        }
        net.forward(&mut st, &[&shifted])?;
        run.activations.push(offsets.iter().map(|&o| st.value(out)[o]).collect());
        net.backward(&mut st, &[(out, &seed_grad)], false)?;
        let g = st.grad(input).context("the unit does not depend on the input")?;
        // The gradient is with respect to the shifted image: shift it back onto x.
        for (s, &(dx, dy)) in shifts.iter().enumerate() {
            let r = s * per_image..(s + 1) * per_image;
            roll(&g[r.clone()], &mut grad[r], c, h, w, -dx, -dy);
        }
        for (xs, gs) in x.chunks_mut(per_image).zip(grad.chunks(per_image)) {
            let mean_abs = gs.iter().map(|v| v.abs() as f64).sum::<f64>() / per_image as f64;
            // A dead unit (zero or broken gradient) just keeps its image.
            if mean_abs > 0.0 && mean_abs.is_finite() {
                let step = (priors.lr as f64 / mean_abs) as f32;
                xs.iter_mut().zip(gs).for_each(|(xv, gv)| *xv += step * gv);
            }
        }
        let keep = 1.0 - priors.l2_decay;
        x.iter_mut().for_each(|v| *v *= keep);
        if priors.blur_every > 0 && (it + 1) % priors.blur_every == 0 {
            gaussian_blur(&mut x, n * c, h, w, priors.blur_sigma);
        }
        let (lo, hi) = priors.clip;
        x.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
    }
    if every.is_some() {
        run.frames.push((priors.iters, x.clone()));
    }
    run.images = x;
    Ok(run)
}

/// Uniform integer in [-j, j].
fn rand_shift(rng: &mut Rng, j: i64) -> i64 {
    if j == 0 {
        return 0;
    }
    (rng.next_u64() % (2 * j as u64 + 1)) as i64 - j
}

/// Circular shift of each of the `c` H x W planes of `src` by (dx, dy) into `dst`:
/// `dst[y][x] = src[y - dy][x - dx]`, wrapping. Wrapping makes (-dx, -dy) the exact
/// inverse, which is what carries the gradient back.
pub fn roll(src: &[f32], dst: &mut [f32], c: usize, h: usize, w: usize, dx: i64, dy: i64) {
    assert!(src.len() == c * h * w && dst.len() == src.len(), "roll: buffers do not hold {c}x{h}x{w}");
    let (hi, wi) = (h as i64, w as i64);
    for p in 0..c {
        let (s, d) = (&src[p * h * w..(p + 1) * h * w], &mut dst[p * h * w..(p + 1) * h * w]);
        for y in 0..h {
            let sy = (y as i64 - dy).rem_euclid(hi) as usize;
            for x in 0..w {
                let sx = (x as i64 - dx).rem_euclid(wi) as usize;
                d[y * w + x] = s[sy * w + sx];
            }
        }
    }
}

/// Normalized 1-D Gaussian taps, radius ceil(3 sigma).
fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as i64;
    let k: Vec<f32> = (-r..=r).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = k.iter().sum();
    k.into_iter().map(|v| v / total).collect()
}

/// Separable Gaussian blur of `planes` H x W planes in place. Borders repeat the edge
/// pixel, so a constant image stays exactly constant (no darkening at the edges).
pub fn gaussian_blur(data: &mut [f32], planes: usize, h: usize, w: usize, sigma: f32) {
    assert_eq!(data.len(), planes * h * w, "gaussian_blur: buffer does not hold {planes}x{h}x{w}");
    if sigma <= 0.0 {
        return;
    }
    let k = gaussian_kernel(sigma);
    let r = (k.len() / 2) as i64;
    let mut tmp = vec![0f32; h * w];
    for plane in data.chunks_mut(h * w) {
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0f32;
                for (t, &kv) in k.iter().enumerate() {
                    let sx = (x as i64 + t as i64 - r).clamp(0, w as i64 - 1) as usize;
                    acc += kv * plane[y * w + sx];
                }
                tmp[y * w + x] = acc;
            }
        }
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0f32;
                for (t, &kv) in k.iter().enumerate() {
                    let sy = (y as i64 + t as i64 - r).clamp(0, h as i64 - 1) as usize;
                    acc += kv * tmp[sy * w + x];
                }
                plane[y * w + x] = acc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_a_constant_image_and_spreads_an_impulse_symmetrically() {
        let (h, w) = (7, 9);
        let mut flat = vec![0.3f32; h * w];
        gaussian_blur(&mut flat, 1, h, w, 0.8);
        let sum: f32 = flat.iter().sum();
        assert!((sum - 0.3 * (h * w) as f32).abs() < 1e-4, "sum {sum}");
        assert!(flat.iter().all(|&v| (v - 0.3).abs() < 1e-6), "{flat:?}");

        let mut imp = vec![0f32; h * w];
        let (cy, cx) = (3, 4);
        imp[cy * w + cx] = 1.0;
        gaussian_blur(&mut imp, 1, h, w, 0.8);
        let at = |y: usize, x: usize| imp[y * w + x];
        // Far enough from the borders, nothing is lost.
        assert!((imp.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(at(cy, cx) < 1.0 && at(cy, cx) > at(cy, cx + 1) && at(cy, cx + 1) > at(cy, cx + 2) && at(cy, cx + 2) > 0.0);
        for d in 1..=3 {
            assert!((at(cy, cx - d) - at(cy, cx + d)).abs() < 1e-7);
            assert!((at(cy - d, cx) - at(cy + d, cx)).abs() < 1e-7);
            assert!((at(cy - d, cx + d) - at(cy + d, cx - d)).abs() < 1e-7);
        }
        // Isotropic: the same distance along x and y gets the same weight.
        assert!((at(cy, cx + 2) - at(cy + 2, cx)).abs() < 1e-7);
    }

    #[test]
    fn roll_shifts_and_the_inverse_restores() {
        let (c, h, w) = (2, 4, 5);
        let src: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        let mut moved = vec![0f32; src.len()];
        roll(&src, &mut moved, c, h, w, 2, -1);
        // dst[y][x] = src[y + 1][x - 2]: pixel (x=2, y=0) of plane 1 comes from (0, 1).
        assert_eq!(moved[h * w + 2], src[h * w + w]);
        assert_eq!(moved[0], src[w + 3]); // wraps: x - 2 = -2 -> 3
        assert_ne!(moved, src);
        let mut back = vec![0f32; src.len()];
        roll(&moved, &mut back, c, h, w, -2, 1);
        assert_eq!(back, src);
    }

    #[test]
    fn shifts_stay_within_the_jitter() {
        let mut rng = Rng::new(3);
        let s: Vec<i64> = (0..1000).map(|_| rand_shift(&mut rng, 2)).collect();
        assert!(s.iter().all(|v| (-2..=2).contains(v)));
        assert!((-2..=2).all(|v| s.contains(&v)));
    }
}
