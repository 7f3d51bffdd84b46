//! DGN-AM's own device operations, an extension of the ops for the synthesis loop: the center
//! crop or bilinear resize between generator and classifier and the change of input space
//! after it (each with its backward), the per-sample gradient normalizer and the code update.
//! CPU reference and CUDA launcher (`kernels/dgn.cu`) side by side.

use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{block_per_item, blocks_of, driver_err, grid_for, grid_stride, launch, Cuda};
use crate::device::Cpu;
use crate::ops::Kernels;
use crate::real::Real;
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

pub const SOURCE: KernelSource = KernelSource {
    name: "dgn.cu",
    text: include_str!("../../kernels/dgn.cu"),
    launches: &[
        grid_stride("crop"),
        grid_stride("resize_bilinear"),
        grid_stride("resize_bilinear_backward"),
        grid_stride("channel_affine"),
        block_per_item("mean_abs_rows"),
        grid_stride("dgn_update"),
    ],
};

/// A per-channel affine map with a channel permutation over 3-channel images:
/// `y[c] = scale[c] * x[perm[c]] + bias[c]`. A change of input space (`synth::view`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChannelAffine {
    pub perm: [usize; 3],
    pub scale: [f64; 3],
    pub bias: [f64; 3],
}

/// The bilinear taps of output coordinate `o` on an axis of `input` values resized to
/// `output`: (i0, i1, w1), the output being `(1 - w1) x[i0] + w1 x[i1]`. Half-pixel centres,
/// as torch's `interpolate(mode="bilinear", align_corners=False)`: the source coordinate is
/// `max(0, (o + 0.5) * input / output - 0.5)`, computed in f32 as the CUDA kernel does.
pub fn bilinear_tap(o: usize, input: usize, output: usize) -> (usize, usize, f32) {
    let s = ((o as f32 + 0.5) * (input as f32 / output as f32) - 0.5).max(0.0);
    let i0 = (s as usize).min(input - 1);
    let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
    (i0, i1, s - i0 as f32)
}

pub trait DgnKernels: Kernels {
    /// Copies the `dst_hw` window at `offset` (y, x) out of every channel of `src`, an
    /// N x C x H x W blob, into `dst` (N x C x dst_h x dst_w). DGN-AM's center crop.
    fn crop(&self, src: &Self::Buf, src_shape: [usize; 4], offset: [usize; 2], dst_hw: [usize; 2], dst: &mut Self::Buf) -> Result<()>;
    /// The crop's backward: adds `dy` (N x C x dst_h x dst_w) into the window of `dx`.
    fn crop_backward(
        &self,
        dy: &Self::Buf,
        src_shape: [usize; 4],
        offset: [usize; 2],
        dst_hw: [usize; 2],
        dx: &mut Self::Buf,
    ) -> Result<()>;
    /// Bilinear resize of every plane of `src` (N x C x H x W) to `dst_hw` (`bilinear_tap`;
    /// no antialiasing), into `dst` (N x C x dst_h x dst_w).
    fn resize(&self, src: &Self::Buf, src_shape: [usize; 4], dst_hw: [usize; 2], dst: &mut Self::Buf) -> Result<()>;
    /// The resize's backward, its exact adjoint: adds the transpose of the resize applied
    /// to `dy` (N x C x dst_h x dst_w) into `dx` (N x C x H x W).
    fn resize_backward(&self, dy: &Self::Buf, src_shape: [usize; 4], dst_hw: [usize; 2], dx: &mut Self::Buf) -> Result<()>;
    /// `dst[n, c] = scale[c] * src[n, perm[c]] + bias[c]` over an N x 3 x H x W `shape`.
    fn channel_affine(&self, src: &Self::Buf, shape: [usize; 4], map: &ChannelAffine, dst: &mut Self::Buf) -> Result<()>;
    /// Its backward: `dx[n, perm[c]] += scale[c] * dy[n, c]`.
    fn channel_affine_backward(&self, dy: &Self::Buf, shape: [usize; 4], map: &ChannelAffine, dx: &mut Self::Buf) -> Result<()>;
    /// mean |x| of each row of a rows x cols buffer (the normalizer of DGN-AM's step).
    fn mean_abs_rows(&self, x: &Self::Buf, rows: usize, cols: usize) -> Result<Vec<Self::Scalar>>;
    /// DGN-AM's update of a rows x cols code, per row r with `scale[r] = Some(s)`:
    /// `code += s * grad; code = clamp(code, 0, upper) (when upper is given, one bound per
    /// column); code *= decay (when decay is in (0, 1))`. Rows whose scale is None are left
    /// exactly as they are (their optimization has stopped).
    #[allow(clippy::too_many_arguments)]
    fn dgn_update(
        &self,
        code: &mut Self::Buf,
        grad: &Self::Buf,
        rows: usize,
        cols: usize,
        scale: &[Option<Self::Scalar>],
        upper: Option<&Self::Buf>,
        decay: Self::Scalar,
    ) -> Result<()>;
}

fn check_crop(src_len: usize, s: [usize; 4], offset: [usize; 2], hw: [usize; 2], dst_len: usize) -> Result<()> {
    if offset[0] + hw[0] > s[2]
        || offset[1] + hw[1] > s[3]
        || src_len != s.iter().product::<usize>()
        || dst_len != s[0] * s[1] * hw[0] * hw[1]
    {
        bail!("crop of {}x{} at {:?} does not fit a {:?} blob", hw[0], hw[1], offset, s);
    }
    Ok(())
}

fn check_resize(src_len: usize, s: [usize; 4], hw: [usize; 2], dst_len: usize) -> Result<()> {
    if s.contains(&0) || hw.contains(&0) || src_len != s.iter().product::<usize>() || dst_len != s[0] * s[1] * hw[0] * hw[1] {
        bail!("resize of a {:?} blob to {}x{}: the buffers or sizes do not fit", s, hw[0], hw[1]);
    }
    Ok(())
}

fn check_affine(src_len: usize, s: [usize; 4], map: &ChannelAffine, dst_len: usize) -> Result<()> {
    let mut seen = map.perm;
    seen.sort_unstable();
    if s[1] != 3 || seen != [0, 1, 2] || src_len != s.iter().product::<usize>() || dst_len != src_len {
        bail!("channel_affine over a {:?} blob with channels {:?}: needs 3 channels and a permutation of them", s, map.perm);
    }
    Ok(())
}

fn check_update(code: usize, grad: usize, rows: usize, cols: usize, scales: usize, upper: Option<usize>) -> Result<()> {
    if code != rows * cols || grad != code || scales != rows || upper.is_some_and(|u| u != cols) {
        bail!("dgn_update: code, gradient, scales and bounds disagree on {rows}x{cols}");
    }
    Ok(())
}

impl<T: Real> DgnKernels for Cpu<'_, T> {
    fn crop(&self, src: &Vec<T>, s: [usize; 4], offset: [usize; 2], hw: [usize; 2], dst: &mut Vec<T>) -> Result<()> {
        check_crop(src.len(), s, offset, hw, dst.len())?;
        for (plane, out) in src.chunks_exact(s[2] * s[3]).zip(dst.chunks_exact_mut(hw[0] * hw[1])) {
            for (y, row) in out.chunks_exact_mut(hw[1]).enumerate() {
                let start = (y + offset[0]) * s[3] + offset[1];
                row.copy_from_slice(&plane[start..start + hw[1]]);
            }
        }
        Ok(())
    }

    fn crop_backward(&self, dy: &Vec<T>, s: [usize; 4], offset: [usize; 2], hw: [usize; 2], dx: &mut Vec<T>) -> Result<()> {
        check_crop(dx.len(), s, offset, hw, dy.len())?;
        for (plane, g) in dx.chunks_exact_mut(s[2] * s[3]).zip(dy.chunks_exact(hw[0] * hw[1])) {
            for (y, row) in g.chunks_exact(hw[1]).enumerate() {
                let start = (y + offset[0]) * s[3] + offset[1];
                plane[start..start + hw[1]].iter_mut().zip(row).for_each(|(a, &b)| *a += b);
            }
        }
        Ok(())
    }

    fn resize(&self, src: &Vec<T>, s: [usize; 4], hw: [usize; 2], dst: &mut Vec<T>) -> Result<()> {
        check_resize(src.len(), s, hw, dst.len())?;
        let xs: Vec<_> = (0..hw[1]).map(|x| bilinear_tap(x, s[3], hw[1])).collect();
        for (plane, out) in src.chunks_exact(s[2] * s[3]).zip(dst.chunks_exact_mut(hw[0] * hw[1])) {
            for (y, row) in out.chunks_exact_mut(hw[1]).enumerate() {
                let (y0, y1, wy) = bilinear_tap(y, s[2], hw[0]);
                let wy = T::from_f32(wy);
                let (top, bottom) = (&plane[y0 * s[3]..(y0 + 1) * s[3]], &plane[y1 * s[3]..(y1 + 1) * s[3]]);
                for (v, &(x0, x1, wx)) in row.iter_mut().zip(&xs) {
                    let wx = T::from_f32(wx);
                    let t = (T::ONE - wx) * top[x0] + wx * top[x1];
                    let b = (T::ONE - wx) * bottom[x0] + wx * bottom[x1];
                    *v = (T::ONE - wy) * t + wy * b;
                }
            }
        }
        Ok(())
    }

    fn resize_backward(&self, dy: &Vec<T>, s: [usize; 4], hw: [usize; 2], dx: &mut Vec<T>) -> Result<()> {
        check_resize(dx.len(), s, hw, dy.len())?;
        let xs: Vec<_> = (0..hw[1]).map(|x| bilinear_tap(x, s[3], hw[1])).collect();
        let w = s[3];
        for (plane, g) in dx.chunks_exact_mut(s[2] * w).zip(dy.chunks_exact(hw[0] * hw[1])) {
            for (y, row) in g.chunks_exact(hw[1]).enumerate() {
                let (y0, y1, wy) = bilinear_tap(y, s[2], hw[0]);
                let wy = T::from_f32(wy);
                for (&g, &(x0, x1, wx)) in row.iter().zip(&xs) {
                    let wx = T::from_f32(wx);
                    let (gt, gb) = ((T::ONE - wy) * g, wy * g);
                    plane[y0 * w + x0] += (T::ONE - wx) * gt;
                    plane[y0 * w + x1] += wx * gt;
                    plane[y1 * w + x0] += (T::ONE - wx) * gb;
                    plane[y1 * w + x1] += wx * gb;
                }
            }
        }
        Ok(())
    }

    fn channel_affine(&self, src: &Vec<T>, s: [usize; 4], map: &ChannelAffine, dst: &mut Vec<T>) -> Result<()> {
        check_affine(src.len(), s, map, dst.len())?;
        let plane = s[2] * s[3];
        for (x, y) in src.chunks_exact(3 * plane).zip(dst.chunks_exact_mut(3 * plane)) {
            for (c, out) in y.chunks_exact_mut(plane).enumerate() {
                let (a, b) = (T::from_f64(map.scale[c]), T::from_f64(map.bias[c]));
                let from = &x[map.perm[c] * plane..(map.perm[c] + 1) * plane];
                out.iter_mut().zip(from).for_each(|(o, &v)| *o = a * v + b);
            }
        }
        Ok(())
    }

    fn channel_affine_backward(&self, dy: &Vec<T>, s: [usize; 4], map: &ChannelAffine, dx: &mut Vec<T>) -> Result<()> {
        check_affine(dx.len(), s, map, dy.len())?;
        let plane = s[2] * s[3];
        for (g, d) in dy.chunks_exact(3 * plane).zip(dx.chunks_exact_mut(3 * plane)) {
            for (c, gc) in g.chunks_exact(plane).enumerate() {
                let a = T::from_f64(map.scale[c]);
                let to = &mut d[map.perm[c] * plane..(map.perm[c] + 1) * plane];
                to.iter_mut().zip(gc).for_each(|(t, &v)| *t += a * v);
            }
        }
        Ok(())
    }

    fn mean_abs_rows(&self, x: &Vec<T>, rows: usize, cols: usize) -> Result<Vec<T>> {
        if x.len() != rows * cols || cols == 0 {
            bail!("mean_abs_rows: {} values are not {rows} rows of {cols}", x.len());
        }
        // Accumulate in f64: a 4096-wide row of small gradients loses digits in f32.
        Ok(x.chunks_exact(cols).map(|r| T::from_f64(r.iter().map(|v| v.abs().to_f64()).sum::<f64>() / cols as f64)).collect())
    }

    fn dgn_update(
        &self,
        code: &mut Vec<T>,
        grad: &Vec<T>,
        rows: usize,
        cols: usize,
        scale: &[Option<T>],
        upper: Option<&Vec<T>>,
        decay: T,
    ) -> Result<()> {
        check_update(code.len(), grad.len(), rows, cols, scale.len(), upper.map(|u| u.len()))?;
        let decays = decay > T::ZERO && decay < T::ONE;
        for ((c, g), s) in code.chunks_exact_mut(cols).zip(grad.chunks_exact(cols)).zip(scale) {
            let Some(s) = *s else { continue };
            for (j, (c, &g)) in c.iter_mut().zip(g).enumerate() {
                let mut v = *c + s * g;
                if let Some(u) = upper {
                    v = v.max(T::ZERO).min(u[j]);
                }
                *c = if decays { v * decay } else { v };
            }
        }
        Ok(())
    }
}

type Buf = CudaSlice<f32>;

/// `n` as the 32-bit index of the kernels that take one (their 64-bit division would spill
/// registers): under 2^30, so a grid-stride step past it cannot overflow.
fn small_index(n: usize, kernel: &str) -> Result<i32> {
    if n >= 1 << 30 {
        bail!("{kernel}: {n} values are more than one launch indexes (2^30); use a smaller batch");
    }
    Ok(n as i32)
}

impl Cuda {
    fn crop_launch(&self, big: &Buf, small: &Buf, s: [usize; 4], offset: [usize; 2], hw: [usize; 2], backward: bool) -> Result<()> {
        if small.is_empty() {
            return Ok(());
        }
        let [sh, sw, dh, dw, oy, ox] = [s[2], s[3], hw[0], hw[1], offset[0], offset[1]].map(|v| v as i32);
        launch!(self, SOURCE, "crop", grid_for(small.len()); big, small, &(small.len() as i64), &sh, &sw, &dh, &dw, &oy, &ox, &(backward as i32))
    }

    fn affine_launch(&self, x: &Buf, y: &Buf, s: [usize; 4], map: &ChannelAffine, backward: bool) -> Result<()> {
        if y.is_empty() {
            return Ok(());
        }
        let [p0, p1, p2] = map.perm.map(|p| p as i32);
        let [a0, a1, a2] = map.scale.map(|v| v as f32);
        let [b0, b1, b2] = map.bias.map(|v| v as f32);
        let (n, plane) = (small_index(y.len(), "channel_affine")?, (s[2] * s[3]) as i32);
        launch!(self, SOURCE, "channel_affine", grid_for(y.len());
            x, y, &n, &plane, &p0, &p1, &p2, &a0, &a1, &a2, &b0, &b1, &b2, &(backward as i32))
    }
}

impl DgnKernels for Cuda {
    fn crop(&self, src: &Buf, s: [usize; 4], offset: [usize; 2], hw: [usize; 2], dst: &mut Buf) -> Result<()> {
        check_crop(src.len(), s, offset, hw, dst.len())?;
        self.crop_launch(src, dst, s, offset, hw, false)
    }

    fn crop_backward(&self, dy: &Buf, s: [usize; 4], offset: [usize; 2], hw: [usize; 2], dx: &mut Buf) -> Result<()> {
        check_crop(dx.len(), s, offset, hw, dy.len())?;
        self.crop_launch(dx, dy, s, offset, hw, true)
    }

    fn resize(&self, src: &Buf, s: [usize; 4], hw: [usize; 2], dst: &mut Buf) -> Result<()> {
        check_resize(src.len(), s, hw, dst.len())?;
        let ([ih, iw, oh, ow], n) = ([s[2], s[3], hw[0], hw[1]].map(|v| v as i32), dst.len());
        launch!(self, SOURCE, "resize_bilinear", grid_for(n); src, &mut *dst, &(n as i64), &ih, &iw, &oh, &ow)
    }

    fn resize_backward(&self, dy: &Buf, s: [usize; 4], hw: [usize; 2], dx: &mut Buf) -> Result<()> {
        check_resize(dx.len(), s, hw, dy.len())?;
        let ([ih, iw, oh, ow], n) = ([s[2], s[3], hw[0], hw[1]].map(|v| v as i32), dx.len());
        let n = small_index(n, "resize_bilinear_backward")?;
        launch!(self, SOURCE, "resize_bilinear_backward", grid_for(n as usize); dy, &mut *dx, &n, &ih, &iw, &oh, &ow)
    }

    fn channel_affine(&self, src: &Buf, s: [usize; 4], map: &ChannelAffine, dst: &mut Buf) -> Result<()> {
        check_affine(src.len(), s, map, dst.len())?;
        self.affine_launch(src, dst, s, map, false)
    }

    fn channel_affine_backward(&self, dy: &Buf, s: [usize; 4], map: &ChannelAffine, dx: &mut Buf) -> Result<()> {
        check_affine(dx.len(), s, map, dy.len())?;
        self.affine_launch(dx, dy, s, map, true)
    }

    fn mean_abs_rows(&self, x: &Buf, rows: usize, cols: usize) -> Result<Vec<f32>> {
        if x.len() != rows * cols || cols == 0 {
            bail!("mean_abs_rows: {} values are not {rows} rows of {cols}", x.len());
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        let mut out = self.scratch(&self.scratch.small, rows)?;
        launch!(self, SOURCE, "mean_abs_rows", blocks_of(rows); x, &mut *out, &(cols as i32))?;
        let host = self.stream.clone_dtoh(&out.slice(..rows)).map_err(driver_err("download"))?;
        self.synchronize()?;
        Ok(host)
    }

    fn dgn_update(
        &self,
        code: &mut Buf,
        grad: &Buf,
        rows: usize,
        cols: usize,
        scale: &[Option<f32>],
        upper: Option<&Buf>,
        decay: f32,
    ) -> Result<()> {
        check_update(code.len(), grad.len(), rows, cols, scale.len(), upper.map(|u| u.len()))?;
        if code.is_empty() {
            return Ok(());
        }
        // Per row: the step, then whether the row is still being optimized.
        let mut host: Vec<f32> = scale.iter().map(|s| s.unwrap_or(0.0)).collect();
        host.extend(scale.iter().map(|s| if s.is_some() { 1.0 } else { 0.0 }));
        let mut small = self.scratch(&self.scratch.small, 2 * rows)?;
        self.stream.memcpy_htod(&host, &mut small.slice_mut(..2 * rows)).map_err(driver_err("upload"))?;
        let step = small.slice(..rows);
        let active = small.slice(rows..2 * rows);
        let decays = (decay > 0.0 && decay < 1.0) as i32;
        let n = code.len();
        launch!(self, SOURCE, "dgn_update", grid_for(n);
            code, grad, &step, &active, upper.unwrap_or(grad), &(upper.is_some() as i32),
            &(n as i64), &(cols as i32), &decay, &decays)
    }
}

#[cfg(test)]
mod tests {
    use super::DgnKernels;
    use crate::device::Cpu;
    use crate::ops::gradcheck;
    use crate::synth::dgn::center_crop_offset;

    #[test]
    fn the_crop_takes_the_center_227_of_256_and_its_backward_fills_only_that_window() {
        let offset = center_crop_offset([256, 256], [227, 227]);
        assert_eq!(offset, [14, 14]);
        let s = [2, 3, 256, 256];
        // Each source value names its position: plane * 65536 + y * 256 + x.
        let src: Vec<f64> = (0..s.iter().product::<usize>()).map(|i| i as f64).collect();
        let cpu = Cpu::<f64>::new();
        let mut dst = vec![0.0; 2 * 3 * 227 * 227];
        cpu.crop(&src, s, offset, [227, 227], &mut dst).unwrap();
        for (i, &v) in dst.iter().enumerate() {
            let (plane, y, x) = (i / (227 * 227), i / 227 % 227, i % 227);
            assert_eq!(v, (plane * 65536 + (y + 14) * 256 + x + 14) as f64, "crop entry {i}");
        }
        // Backward adds ones into the window, twice: rows and columns 0..14 and 241..256
        // stay exactly zero.
        let ones = vec![1.0; dst.len()];
        let mut dx = vec![0.0; src.len()];
        cpu.crop_backward(&ones, s, offset, [227, 227], &mut dx).unwrap();
        cpu.crop_backward(&ones, s, offset, [227, 227], &mut dx).unwrap();
        for (i, &v) in dx.iter().enumerate() {
            let (y, x) = (i / 256 % 256, i % 256);
            let inside = (14..241).contains(&y) && (14..241).contains(&x);
            assert_eq!(v, if inside { 2.0 } else { 0.0 }, "crop gradient at y {y} x {x}");
        }
        assert!(cpu.crop(&src, s, [15, 15], [242, 242], &mut vec![0.0; 2 * 3 * 242 * 242]).is_err(), "a window past the edge is an error");
    }

    fn random(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    /// The resizes synthesize makes (up 256 -> 299 in miniature, down, mixed) and an
    /// identity, each forward against a plain bilinear sum and backward against f64 central
    /// differences of `sum(resize(x) * r)`.
    #[test]
    fn the_resize_is_bilinear_and_its_backward_is_its_adjoint() {
        let cpu = Cpu::<f64>::new();
        for (s, hw) in [([2, 3, 5, 7], [9, 11]), ([1, 2, 9, 8], [4, 3]), ([1, 1, 4, 6], [7, 5]), ([1, 2, 3, 4], [3, 4])] {
            let x = random(s.iter().product(), 1);
            let mut y = vec![f64::NAN; s[0] * s[1] * hw[0] * hw[1]];
            cpu.resize(&x, s, hw, &mut y).unwrap();
            for (i, &v) in y.iter().enumerate() {
                let (plane, oy, ox) = (i / (hw[0] * hw[1]), i / hw[1] % hw[0], i % hw[1]);
                // The weight of input (iy, ix) is the product of the two axes' weights.
                let axis = |o: usize, input: usize, output: usize, at: usize| {
                    let (i0, i1, w1) = super::bilinear_tap(o, input, output);
                    (if i0 == at { 1.0 - w1 as f64 } else { 0.0 }) + if i1 == at { w1 as f64 } else { 0.0 }
                };
                let mut want = 0.0;
                for iy in 0..s[2] {
                    for ix in 0..s[3] {
                        want += axis(oy, s[2], hw[0], iy) * axis(ox, s[3], hw[1], ix) * x[(plane * s[2] + iy) * s[3] + ix];
                    }
                }
                assert!((v - want).abs() < 1e-6, "resize {s:?} to {hw:?}: entry {i} is {v}, want {want}");
            }
            if s[2..] == hw {
                assert_eq!(y, x, "a resize to the same size is the identity");
            }
            let r = random(y.len(), 2);
            let mut dx = vec![0.0; x.len()];
            cpu.resize_backward(&r, s, hw, &mut dx).unwrap();
            let loss = |x: &[f64]| {
                let mut y = vec![0.0; r.len()];
                cpu.resize(&x.to_vec(), s, hw, &mut y).unwrap();
                gradcheck::dot(&y, &r)
            };
            gradcheck::check(&format!("resize {s:?} to {hw:?}"), &x, &dx, loss);
            // Backward adds into what is there.
            let mut twice = dx.clone();
            cpu.resize_backward(&r, s, hw, &mut twice).unwrap();
            assert!(twice.iter().zip(&dx).all(|(t, d)| (t - 2.0 * d).abs() < 1e-12));
        }
        // Half-pixel centres: 2 -> 4 reads at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        let mut y = vec![0.0; 4];
        cpu.resize(&vec![0.0, 1.0], [1, 1, 1, 2], [1, 4], &mut y).unwrap();
        assert_eq!(y, vec![0.0, 0.25, 0.75, 1.0]);
        assert!(cpu.resize(&vec![0.0; 6], [1, 1, 2, 2], [3, 3], &mut vec![0.0; 9]).is_err(), "a source of the wrong size is an error");
    }

    #[test]
    fn the_channel_affine_permutes_and_scales_and_its_backward_is_its_adjoint() {
        let cpu = Cpu::<f64>::new();
        let map = super::ChannelAffine { perm: [2, 0, 1], scale: [0.5, -2.0, 3.0], bias: [1.0, 0.0, -4.0] };
        let s = [2, 3, 2, 3];
        let x = random(s.iter().product(), 3);
        let mut y = vec![f64::NAN; x.len()];
        cpu.channel_affine(&x, s, &map, &mut y).unwrap();
        for (i, &v) in y.iter().enumerate() {
            let (n, c, p) = (i / 18, i / 6 % 3, i % 6);
            assert_eq!(v, map.scale[c] * x[n * 18 + map.perm[c] * 6 + p] + map.bias[c], "entry {i}");
        }
        let r = random(y.len(), 4);
        let mut dx = vec![0.0; x.len()];
        cpu.channel_affine_backward(&r, s, &map, &mut dx).unwrap();
        let loss = |x: &[f64]| {
            let mut y = vec![0.0; r.len()];
            cpu.channel_affine(&x.to_vec(), s, &map, &mut y).unwrap();
            gradcheck::dot(&y, &r)
        };
        gradcheck::check("channel_affine", &x, &dx, loss);
        let not_a_permutation = super::ChannelAffine { perm: [0, 0, 1], ..map };
        assert!(cpu.channel_affine(&x, s, &not_a_permutation, &mut y).is_err());
        assert!(cpu.channel_affine(&x[..12].to_vec(), [2, 2, 1, 3], &map, &mut vec![0.0; 12]).is_err(), "2 channels are an error");
    }

    #[test]
    fn every_kernel_file_is_embedded_by_its_owner() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/kernels");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        files.sort();
        let mut listed: Vec<String> = crate::ops::KERNEL_SOURCES.iter().chain([&super::SOURCE]).map(|s| s.name.to_string()).collect();
        listed.sort();
        assert_eq!(files, listed);
        // Each op's kernel file has the op's folder name (the GEMM included), and DGN-AM's is dgn.cu.
        let ops = concat!(env!("CARGO_MANIFEST_DIR"), "/src/ops");
        for f in files.iter().filter(|f| *f != "dgn.cu") {
            let folder = std::path::Path::new(ops).join(f.trim_end_matches(".cu"));
            assert!(folder.is_dir(), "kernels/{f} has no op folder {}", folder.display());
        }
    }
}
