//! Convolution and deconvolution on the GPU: `kernels/conv.cu` (im2col, col2im) and the
//! SGEMM of `ops::gemm`, one batched launch per run of images. The deconvolution's passes are
//! the convolution's with roles swapped, as on the CPU.

use super::ConvKernels;
use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{grid_for, grid_stride, launch, Cuda, COL_BUDGET};
use crate::ir::ConvGeom;
use crate::ops::gemm::cuda::{Gemm, Operand};
use anyhow::{bail, Result};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};

pub const SOURCE: KernelSource = KernelSource {
    name: "conv.cu",
    text: include_str!("../../../kernels/conv.cu"),
    launches: &[
        // Known shortfalls (dgnam kernels): full occupancy at 256 threads allows 32 registers.
        grid_stride("im2col").below_full(6, "36 registers on sm_90, 32 on sm_80"),
        grid_stride("col2im"),
    ],
};

type Buf = CudaSlice<f32>;

impl ConvKernels for Cuda {
    fn conv_forward(&self, g: &ConvGeom, x: &Buf, w: &Buf, bias: Option<&Buf>, y: &mut Buf) -> Result<()> {
        self.conv_apply(g, x, w, y, 0.0)?;
        match bias {
            Some(b) => self.bias_add(y, b, g.out_channels, g.out_h * g.out_w),
            None => Ok(()),
        }
    }

    fn conv_backward_data(&self, g: &ConvGeom, dy: &Buf, w: &Buf, dx: &mut Buf) -> Result<()> {
        self.conv_transpose(g, dy, w, dx, true)
    }

    fn conv_backward_weights(&self, g: &ConvGeom, x: &Buf, dy: &Buf, dw: &mut Buf, db: Option<&mut Buf>) -> Result<()> {
        self.conv_weight_grad(g, x, dy, dw)?;
        match db {
            Some(db) => self.channel_sums(dy, None, db, g.batch, g.out_channels, g.out_h * g.out_w),
            None => Ok(()),
        }
    }

    fn deconv_forward(&self, g: &ConvGeom, x: &Buf, w: &Buf, bias: Option<&Buf>, y: &mut Buf) -> Result<()> {
        self.conv_transpose(g, x, w, y, false)?;
        match bias {
            Some(b) => self.bias_add(y, b, g.in_channels, g.in_h * g.in_w),
            None => Ok(()),
        }
    }

    fn deconv_backward_data(&self, g: &ConvGeom, dy: &Buf, w: &Buf, dx: &mut Buf) -> Result<()> {
        self.conv_apply(g, dy, w, dx, 1.0)
    }

    fn deconv_backward_weights(&self, g: &ConvGeom, x: &Buf, dy: &Buf, dw: &mut Buf, db: Option<&mut Buf>) -> Result<()> {
        // The convolution's weight gradient with input and output swapped.
        self.conv_weight_grad(g, dy, x, dw)?;
        match db {
            Some(db) => self.channel_sums(dy, None, db, g.batch, g.in_channels, g.in_h * g.in_w),
            None => Ok(()),
        }
    }
}

impl Cuda {
    fn conv_geom_args(g: &ConvGeom) -> [i32; 13] {
        [
            g.in_channels,
            g.in_h,
            g.in_w,
            g.out_h,
            g.out_w,
            g.kernel[0],
            g.kernel[1],
            g.stride[0],
            g.stride[1],
            g.pad[0],
            g.pad[1],
            g.dilation[0],
            g.dilation[1],
        ]
        .map(|v| v as i32)
    }

    fn im2col(&self, g: &ConvGeom, x: &CudaView<f32>, images: usize, col: &mut CudaViewMut<f32>) -> Result<()> {
        let [c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw] = Self::conv_geom_args(g);
        let n = images * col_len(g);
        launch!(self, SOURCE, "im2col", grid_for(n); x, col, &(images as i32), &c, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw, &dh, &dw)
    }

    fn col2im(&self, g: &ConvGeom, col: &CudaView<f32>, images: usize, accumulate: bool, x: &mut CudaViewMut<f32>) -> Result<()> {
        let [c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw] = Self::conv_geom_args(g);
        let n = images * g.in_channels * g.in_h * g.in_w;
        launch!(self, SOURCE, "col2im", grid_for(n); col, x, &(images as i32), &(accumulate as i32), &c, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw, &dh, &dw)
    }

    /// Images per GEMM launch: the whole batch, unless the column buffer would pass COL_BUDGET.
    fn runs(&self, g: &ConvGeom) -> usize {
        if g.is_pointwise() {
            g.batch.max(1)
        } else {
            (COL_BUDGET / col_len(g).max(1)).clamp(1, g.batch.max(1))
        }
    }

    /// y = conv(x) + beta * y, no bias. x: [N, C, H, W], w: [O, C/group, kh, kw].
    fn conv_apply(&self, g: &ConvGeom, x: &CudaSlice<f32>, w: &CudaSlice<f32>, y: &mut CudaSlice<f32>, beta: f32) -> Result<()> {
        check_conv(g, x.len(), w.len(), y.len())?;
        let (og, kk, ohw) = (g.out_channels / g.group, g.group_rows(), g.out_h * g.out_w);
        let (x_img, y_img) = (g.in_channels * g.in_h * g.in_w, g.out_channels * ohw);
        let run = self.runs(g);
        let mut col = self.scratch(&self.scratch.col, if g.is_pointwise() { 0 } else { run * col_len(g) })?;
        let wv = w.as_view();
        for n0 in (0..g.batch).step_by(run) {
            let nb = run.min(g.batch - n0);
            let xv = x.slice(n0 * x_img..(n0 + nb) * x_img);
            let bv = if g.is_pointwise() {
                xv
            } else {
                self.im2col(g, &xv, nb, &mut col.slice_mut(..))?;
                col.slice(..)
            };
            let b_img = if g.is_pointwise() { x_img } else { col_len(g) };
            let mut yv = y.slice_mut(n0 * y_img..(n0 + nb) * y_img);
            let spec = Gemm { m: og, n: ohw, k: kk, alpha: 1.0, beta, batch: nb * g.group, zdiv: g.group };
            self.gemm(
                &spec,
                (&wv, Operand::new(kk, false, [0, og * kk])),
                (&bv, Operand::new(ohw, false, [b_img, kk * ohw])),
                (&mut yv, Operand::new(ohw, false, [y_img, og * ohw])),
            )?;
        }
        Ok(())
    }

    /// dx (+)= conv^T(dy): per group col = W^T dy, then col2im. `accumulate = false`
    /// overwrites dx (the deconvolution's forward pass).
    fn conv_transpose(
        &self,
        g: &ConvGeom,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        dx: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        check_conv(g, dx.len(), w.len(), dy.len())?;
        let (og, kk, ohw) = (g.out_channels / g.group, g.group_rows(), g.out_h * g.out_w);
        let (x_img, y_img) = (g.in_channels * g.in_h * g.in_w, g.out_channels * ohw);
        let run = self.runs(g);
        let mut col = self.scratch(&self.scratch.col, if g.is_pointwise() { 0 } else { run * col_len(g) })?;
        let wv = w.as_view();
        for n0 in (0..g.batch).step_by(run) {
            let nb = run.min(g.batch - n0);
            let dyv = dy.slice(n0 * y_img..(n0 + nb) * y_img);
            let a = (&wv, Operand::new(kk, true, [0, og * kk]));
            let b = (&dyv, Operand::new(ohw, false, [y_img, og * ohw]));
            let mut dxv = dx.slice_mut(n0 * x_img..(n0 + nb) * x_img);
            if g.is_pointwise() {
                let spec =
                    Gemm { m: kk, n: ohw, k: og, alpha: 1.0, beta: if accumulate { 1.0 } else { 0.0 }, batch: nb * g.group, zdiv: g.group };
                self.gemm(&spec, a, b, (&mut dxv, Operand::new(ohw, false, [x_img, kk * ohw])))?;
            } else {
                let spec = Gemm { m: kk, n: ohw, k: og, alpha: 1.0, beta: 0.0, batch: nb * g.group, zdiv: g.group };
                self.gemm(&spec, a, b, (&mut col.slice_mut(..), Operand::new(ohw, false, [col_len(g), kk * ohw])))?;
                self.col2im(g, &col.slice(..), nb, accumulate, &mut dxv)?;
            }
        }
        Ok(())
    }

    /// dw += dy col(x)^T, per image and group (images in sequence: they add into one dw).
    fn conv_weight_grad(&self, g: &ConvGeom, x: &CudaSlice<f32>, dy: &CudaSlice<f32>, dw: &mut CudaSlice<f32>) -> Result<()> {
        check_conv(g, x.len(), dw.len(), dy.len())?;
        let (og, kk, ohw) = (g.out_channels / g.group, g.group_rows(), g.out_h * g.out_w);
        let (x_img, y_img) = (g.in_channels * g.in_h * g.in_w, g.out_channels * ohw);
        let run = self.runs(g);
        let mut col = self.scratch(&self.scratch.col, if g.is_pointwise() { 0 } else { run * col_len(g) })?;
        let mut dwv = dw.as_view_mut();
        for n0 in (0..g.batch).step_by(run) {
            let nb = run.min(g.batch - n0);
            if !g.is_pointwise() {
                self.im2col(g, &x.slice(n0 * x_img..(n0 + nb) * x_img), nb, &mut col.slice_mut(..))?;
            }
            for i in 0..nb {
                let n = n0 + i;
                let bv =
                    if g.is_pointwise() { x.slice(n * x_img..(n + 1) * x_img) } else { col.slice(i * col_len(g)..(i + 1) * col_len(g)) };
                let dyv = dy.slice(n * y_img..(n + 1) * y_img);
                let spec = Gemm { m: og, n: kk, k: ohw, alpha: 1.0, beta: 1.0, batch: g.group, zdiv: g.group };
                self.gemm(
                    &spec,
                    (&dyv, Operand::new(ohw, false, [0, og * ohw])),
                    (&bv, Operand::new(ohw, true, [0, kk * ohw])),
                    (&mut dwv, Operand::new(kk, false, [0, og * kk])),
                )?;
            }
        }
        Ok(())
    }
}

/// One image's column matrix, all groups.
fn col_len(g: &ConvGeom) -> usize {
    g.in_channels * g.kernel[0] * g.kernel[1] * g.out_h * g.out_w
}

fn check_conv(g: &ConvGeom, input: usize, w: usize, output: usize) -> Result<()> {
    if input != g.input_len() || w != g.weight_len() || output != g.output_len() {
        bail!("convolution buffers of {input}, {w} and {output} values do not fit {g:?}");
    }
    Ok(())
}
