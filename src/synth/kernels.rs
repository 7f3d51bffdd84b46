//! DGN-AM's own device operations, an extension of the ops for the synthesis loop: the center
//! crop between generator and classifier (and its backward), the per-sample gradient
//! normalizer and the code update. CPU reference and CUDA launcher (`kernels/dgn.cu`) side by
//! side.

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
    launches: &[grid_stride("crop"), block_per_item("mean_abs_rows"), grid_stride("dgn_update")],
};

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

impl Cuda {
    fn crop_launch(&self, big: &Buf, small: &Buf, s: [usize; 4], offset: [usize; 2], hw: [usize; 2], backward: bool) -> Result<()> {
        if small.is_empty() {
            return Ok(());
        }
        let [sh, sw, dh, dw, oy, ox] = [s[2], s[3], hw[0], hw[1], offset[0], offset[1]].map(|v| v as i32);
        launch!(self, SOURCE, "crop", grid_for(small.len()); big, small, &(small.len() as i64), &sh, &sw, &dh, &dw, &oy, &ox, &(backward as i32))
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
