//! Everything that is a matrix product, on the one SGEMM kernel: convolution (im2col + GEMM
//! per image and group, in one batched launch per run of images), its backward passes,
//! deconvolution (the same three passes with roles swapped) and inner product.

use super::{grid_for, launch, Cuda, Precision};
use crate::ops::conv::ConvGeom;
use anyhow::{bail, Result};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig};

/// One stored matrix operand: leading dimension, whether it is stored transposed, and the
/// offsets of batch entry z: (z / zdiv) * strides[0] + (z % zdiv) * strides[1].
#[derive(Clone, Copy)]
pub(super) struct Operand {
    pub ld: usize,
    pub trans: bool,
    pub strides: [usize; 2],
}

impl Operand {
    pub fn new(ld: usize, trans: bool, strides: [usize; 2]) -> Self {
        Operand { ld, trans, strides }
    }

    /// Elements a rows x cols operand (as used) spans, for the last batch entry.
    fn extent(&self, rows: usize, cols: usize, batch: usize, zdiv: usize) -> usize {
        let (stored_rows, stored_cols) = if self.trans { (cols, rows) } else { (rows, cols) };
        if rows == 0 || cols == 0 || batch == 0 {
            return 0;
        }
        // The largest batch offset: the last entry, or the end of the previous full run.
        let (z1, z2) = ((batch - 1) / zdiv, (batch - 1) % zdiv);
        let mut offset = z1 * self.strides[0] + z2 * self.strides[1];
        if z1 > 0 {
            offset = offset.max((z1 - 1) * self.strides[0] + (zdiv - 1) * self.strides[1]);
        }
        offset + (stored_rows - 1) * self.ld + stored_cols
    }
}

/// C (m x n) = alpha * op(A) (m x k) * op(B) (k x n) + beta * C over `batch` products.
pub(super) struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub batch: usize,
    pub zdiv: usize,
}

fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| anyhow::anyhow!("{what} {v} is too large for the GPU kernels"))
}

impl Cuda {
    pub(super) fn gemm(&self, g: &Gemm, a: (&CudaView<f32>, Operand), b: (&CudaView<f32>, Operand), c: (&mut CudaViewMut<f32>, Operand)) -> Result<()> {
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(());
        }
        let zdiv = g.zdiv.max(1);
        for (what, len, op, rows, cols) in [
            ("A", a.0.len(), a.1, g.m, g.k),
            ("B", b.0.len(), b.1, g.k, g.n),
            ("C", c.0.len(), c.1, g.m, g.n),
        ] {
            let need = op.extent(rows, cols, g.batch, zdiv);
            if need > len {
                bail!("GEMM operand {what} needs {need} values, has {len}");
            }
        }
        if c.1.trans {
            bail!("GEMM output cannot be transposed");
        }
        let kernel = match self.precision {
            Precision::F32 => "sgemm",
            Precision::Tf32 => "sgemm_tf32",
        };
        let Some((ks, splits)) = self.split_k(g) else {
            return self.launch_gemm(kernel, g, zdiv, a, b, c);
        };
        // Split-K: a product with too few output tiles to fill the GPU (inner products at
        // small batch) computes `splits` partial products over slices of K into scratch,
        // then one pass sums them into C in a fixed order.
        let (m, n) = (g.m, g.n);
        let mut ws = self.scratch(&self.scratch.splitk, splits * m * n)?;
        let a_k = if a.1.trans { a.1.ld } else { 1 };
        let b_k = if b.1.trans { 1 } else { b.1.ld };
        let full = g.k / ks;
        let part = |kk: usize, batch: usize| Gemm { m, n, k: kk, alpha: 1.0, beta: 0.0, batch, zdiv: 1 };
        if full > 0 {
            self.launch_gemm(
                kernel,
                &part(ks, full),
                1,
                (a.0, Operand::new(a.1.ld, a.1.trans, [ks * a_k, 0])),
                (b.0, Operand::new(b.1.ld, b.1.trans, [ks * b_k, 0])),
                (&mut ws.slice_mut(..), Operand::new(n, false, [m * n, 0])),
            )?;
        }
        let rest = g.k - full * ks;
        if rest > 0 {
            let (av, bv) = (a.0.slice(full * ks * a_k..), b.0.slice(full * ks * b_k..));
            self.launch_gemm(
                kernel,
                &part(rest, 1),
                1,
                (&av, Operand::new(a.1.ld, a.1.trans, [0, 0])),
                (&bv, Operand::new(b.1.ld, b.1.trans, [0, 0])),
                (&mut ws.slice_mut(full * m * n..), Operand::new(n, false, [0, 0])),
            )?;
        }
        let (mi, ni, ldc, si) = (i32_of(m, "M")?, i32_of(n, "N")?, i32_of(c.1.ld, "ldc")?, i32_of(splits, "splits")?);
        launch!(self, "splitk_reduce", grid_for(m * n); &*ws, &si, &mi, &ni, &g.alpha, &g.beta, c.0, &ldc)
    }

    /// (K per slice, slices) when a single product has fewer 64 x 64 output tiles than a few
    /// per multiprocessor and a long K; None to run it whole.
    fn split_k(&self, g: &Gemm) -> Option<(usize, usize)> {
        let tiles = g.m.div_ceil(64) * g.n.div_ceil(64);
        let sms = self.info.sms;
        if g.batch != 1 || g.k < 512 || tiles >= sms {
            return None;
        }
        let want = (4 * sms).div_ceil(tiles).min(g.k / 256).min(32);
        if want < 2 {
            return None;
        }
        let ks = g.k.div_ceil(want).next_multiple_of(16);
        Some((ks, g.k.div_ceil(ks)))
    }

    fn launch_gemm(&self, kernel: &str, g: &Gemm, zdiv: usize, a: (&CudaView<f32>, Operand), b: (&CudaView<f32>, Operand), c: (&mut CudaViewMut<f32>, Operand)) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (g.n.div_ceil(64) as u32, g.m.div_ceil(64) as u32, g.batch as u32),
            // kernels/gemm.cu: SGEMM_THREADS and TC_THREADS.
            block_dim: (if kernel == "sgemm_tf32" { 128 } else { 64 }, 1, 1),
            shared_mem_bytes: 0,
        };
        let (m, n, k) = (i32_of(g.m, "M")?, i32_of(g.n, "N")?, i32_of(g.k, "K")?);
        let (lda, ldb, ldc) = (i32_of(a.1.ld, "lda")?, i32_of(b.1.ld, "ldb")?, i32_of(c.1.ld, "ldc")?);
        let s = |op: &Operand, i: usize| op.strides[i] as i64;
        launch!(self, kernel, cfg;
            &m, &n, &k, &g.alpha,
            a.0, &lda, &(a.1.trans as i32), &s(&a.1, 0), &s(&a.1, 1),
            b.0, &ldb, &(b.1.trans as i32), &s(&b.1, 0), &s(&b.1, 1),
            &g.beta, c.0, &ldc, &s(&c.1, 0), &s(&c.1, 1), &i32_of(zdiv, "zdiv")?)
    }

    fn conv_geom_args(g: &ConvGeom) -> [i32; 13] {
        [
            g.in_channels, g.in_h, g.in_w, g.out_h, g.out_w, g.kernel[0], g.kernel[1],
            g.stride[0], g.stride[1], g.pad[0], g.pad[1], g.dilation[0], g.dilation[1],
        ]
        .map(|v| v as i32)
    }

    fn im2col(&self, g: &ConvGeom, x: &CudaView<f32>, images: usize, col: &mut CudaViewMut<f32>) -> Result<()> {
        let [c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw] = Self::conv_geom_args(g);
        let n = images * col_len(g);
        launch!(self, "im2col", grid_for(n); x, col, &(images as i32), &c, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw, &dh, &dw)
    }

    fn col2im(&self, g: &ConvGeom, col: &CudaView<f32>, images: usize, accumulate: bool, x: &mut CudaViewMut<f32>) -> Result<()> {
        let [c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw] = Self::conv_geom_args(g);
        let n = images * g.in_channels * g.in_h * g.in_w;
        launch!(self, "col2im", grid_for(n); col, x, &(images as i32), &(accumulate as i32), &c, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw, &dh, &dw)
    }

    /// Images per GEMM launch: the whole batch, unless the column buffer would pass COL_BUDGET.
    fn runs(&self, g: &ConvGeom) -> usize {
        if is_pointwise(g) {
            g.batch.max(1)
        } else {
            (super::COL_BUDGET / col_len(g).max(1)).clamp(1, g.batch.max(1))
        }
    }

    /// y = conv(x) + beta * y, no bias. x: [N, C, H, W], w: [O, C/group, kh, kw].
    pub(super) fn conv_apply(&self, g: &ConvGeom, x: &CudaSlice<f32>, w: &CudaSlice<f32>, y: &mut CudaSlice<f32>, beta: f32) -> Result<()> {
        check_conv(g, x.len(), w.len(), y.len())?;
        let (og, kk, ohw) = (g.out_channels / g.group, group_rows(g), g.out_h * g.out_w);
        let (x_img, y_img) = (g.in_channels * g.in_h * g.in_w, g.out_channels * ohw);
        let run = self.runs(g);
        let mut col = self.scratch(&self.scratch.col, if is_pointwise(g) { 0 } else { run * col_len(g) })?;
        let wv = w.as_view();
        for n0 in (0..g.batch).step_by(run) {
            let nb = run.min(g.batch - n0);
            let xv = x.slice(n0 * x_img..(n0 + nb) * x_img);
            let bv = if is_pointwise(g) {
                xv
            } else {
                self.im2col(g, &xv, nb, &mut col.slice_mut(..))?;
                col.slice(..)
            };
            let b_img = if is_pointwise(g) { x_img } else { col_len(g) };
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
    pub(super) fn conv_transpose(&self, g: &ConvGeom, dy: &CudaSlice<f32>, w: &CudaSlice<f32>, dx: &mut CudaSlice<f32>, accumulate: bool) -> Result<()> {
        check_conv(g, dx.len(), w.len(), dy.len())?;
        let (og, kk, ohw) = (g.out_channels / g.group, group_rows(g), g.out_h * g.out_w);
        let (x_img, y_img) = (g.in_channels * g.in_h * g.in_w, g.out_channels * ohw);
        let run = self.runs(g);
        let mut col = self.scratch(&self.scratch.col, if is_pointwise(g) { 0 } else { run * col_len(g) })?;
        let wv = w.as_view();
        for n0 in (0..g.batch).step_by(run) {
            let nb = run.min(g.batch - n0);
            let dyv = dy.slice(n0 * y_img..(n0 + nb) * y_img);
            let a = (&wv, Operand::new(kk, true, [0, og * kk]));
            let b = (&dyv, Operand::new(ohw, false, [y_img, og * ohw]));
            let mut dxv = dx.slice_mut(n0 * x_img..(n0 + nb) * x_img);
            if is_pointwise(g) {
                let spec = Gemm { m: kk, n: ohw, k: og, alpha: 1.0, beta: if accumulate { 1.0 } else { 0.0 }, batch: nb * g.group, zdiv: g.group };
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
    pub(super) fn conv_weight_grad(&self, g: &ConvGeom, x: &CudaSlice<f32>, dy: &CudaSlice<f32>, dw: &mut CudaSlice<f32>) -> Result<()> {
        check_conv(g, x.len(), dw.len(), dy.len())?;
        let (og, kk, ohw) = (g.out_channels / g.group, group_rows(g), g.out_h * g.out_w);
        let (x_img, y_img) = (g.in_channels * g.in_h * g.in_w, g.out_channels * ohw);
        let run = self.runs(g);
        let mut col = self.scratch(&self.scratch.col, if is_pointwise(g) { 0 } else { run * col_len(g) })?;
        let mut dwv = dw.as_view_mut();
        for n0 in (0..g.batch).step_by(run) {
            let nb = run.min(g.batch - n0);
            if !is_pointwise(g) {
                self.im2col(g, &x.slice(n0 * x_img..(n0 + nb) * x_img), nb, &mut col.slice_mut(..))?;
            }
            for i in 0..nb {
                let n = n0 + i;
                let bv = if is_pointwise(g) { x.slice(n * x_img..(n + 1) * x_img) } else { col.slice(i * col_len(g)..(i + 1) * col_len(g)) };
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

    /// y = x w^T (+ beta y); x [rows, k], w [n, k], y [rows, n].
    pub(super) fn inner_product(&self, rows: usize, k: usize, n: usize, x: &CudaSlice<f32>, w: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
        check_ip(rows, k, n, x.len(), w.len(), y.len())?;
        let spec = Gemm { m: rows, n, k, alpha: 1.0, beta: 0.0, batch: 1, zdiv: 1 };
        self.gemm(&spec, (&x.as_view(), Operand::new(k, false, [0, 0])), (&w.as_view(), Operand::new(k, true, [0, 0])), (&mut y.as_view_mut(), Operand::new(n, false, [0, 0])))
    }

    /// dx += dy w
    pub(super) fn inner_product_data_grad(&self, rows: usize, k: usize, n: usize, dy: &CudaSlice<f32>, w: &CudaSlice<f32>, dx: &mut CudaSlice<f32>) -> Result<()> {
        check_ip(rows, k, n, dx.len(), w.len(), dy.len())?;
        let spec = Gemm { m: rows, n: k, k: n, alpha: 1.0, beta: 1.0, batch: 1, zdiv: 1 };
        self.gemm(&spec, (&dy.as_view(), Operand::new(n, false, [0, 0])), (&w.as_view(), Operand::new(k, false, [0, 0])), (&mut dx.as_view_mut(), Operand::new(k, false, [0, 0])))
    }

    /// dw += dy^T x
    pub(super) fn inner_product_weight_grad(&self, rows: usize, k: usize, n: usize, x: &CudaSlice<f32>, dy: &CudaSlice<f32>, dw: &mut CudaSlice<f32>) -> Result<()> {
        check_ip(rows, k, n, x.len(), dw.len(), dy.len())?;
        let spec = Gemm { m: n, n: k, k: rows, alpha: 1.0, beta: 1.0, batch: 1, zdiv: 1 };
        self.gemm(&spec, (&dy.as_view(), Operand::new(n, true, [0, 0])), (&x.as_view(), Operand::new(k, false, [0, 0])), (&mut dw.as_view_mut(), Operand::new(k, false, [0, 0])))
    }
}

/// A 1x1 stride-1 unpadded convolution reads its input directly as the column matrix.
fn is_pointwise(g: &ConvGeom) -> bool {
    g.kernel == [1, 1] && g.stride == [1, 1] && g.pad == [0, 0]
}

/// Rows of one group's column matrix (= one group's weight row length).
fn group_rows(g: &ConvGeom) -> usize {
    (g.in_channels / g.group) * g.kernel[0] * g.kernel[1]
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

fn check_ip(rows: usize, k: usize, n: usize, x: usize, w: usize, y: usize) -> Result<()> {
    if x != rows * k || w != n * k || y != rows * n {
        bail!("inner product buffers of {x}, {w} and {y} values do not fit {rows} x {k} -> {n}");
    }
    Ok(())
}
