//! `Backend for Cuda`: buffers and the per-op dispatch, mirroring `backend::cpu` op by op.

use super::{blocks_of, driver_err, ensure_len, grid_for, launch, Cuda, CudaAux};
use crate::backend::Backend;
use crate::caffe::EltwiseOp;
use crate::graph::Op;
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

type Buf = CudaSlice<f32>;

fn bias_of(p: &[Buf], has: bool) -> Option<&Buf> {
    if has {
        Some(&p[1])
    } else {
        None
    }
}

fn weight_and_bias(pg: &mut [Buf], bias: bool) -> (&mut Buf, Option<&mut Buf>) {
    let (w, rest) = pg.split_at_mut(1);
    (&mut w[0], if bias { Some(&mut rest[0]) } else { None })
}

fn check_crop(src_len: usize, s: [usize; 4], offset: [usize; 2], hw: [usize; 2], dst_len: usize) -> Result<()> {
    if offset[0] + hw[0] > s[2] || offset[1] + hw[1] > s[3] || src_len != s.iter().product::<usize>() || dst_len != s[0] * s[1] * hw[0] * hw[1] {
        bail!("crop of {}x{} at {:?} does not fit a {:?} blob", hw[0], hw[1], offset, s);
    }
    Ok(())
}

impl Cuda {
    fn crop_launch(&self, big: &Buf, small: &Buf, s: [usize; 4], offset: [usize; 2], hw: [usize; 2], backward: bool) -> Result<()> {
        if small.is_empty() {
            return Ok(());
        }
        let [sh, sw, dh, dw, oy, ox] = [s[2], s[3], hw[0], hw[1], offset[0], offset[1]].map(|v| v as i32);
        launch!(self, "crop", grid_for(small.len()); big, small, &(small.len() as i64), &sh, &sw, &dh, &dw, &oy, &ox, &(backward as i32))
    }

    /// Sizes the aux buffer of a node on its first pass; later passes reuse it.
    fn argmax_aux<'a>(&self, aux: &'a mut CudaAux, len: usize) -> Result<&'a mut CudaSlice<u32>> {
        if !matches!(aux, CudaAux::Argmax(a) if a.len() == len) {
            *aux = CudaAux::Argmax(self.stream.alloc_zeros::<u32>(len.max(1)).map_err(driver_err("allocation"))?);
        }
        match aux {
            CudaAux::Argmax(a) => Ok(a),
            _ => unreachable!(),
        }
    }

    fn eltwise_forward(&self, op: EltwiseOp, coeffs: &[f32], x: &[&Buf], y: &mut Buf, aux: &mut CudaAux) -> Result<()> {
        let coeff = |i: usize| if coeffs.is_empty() { 1.0 } else { coeffs[i] };
        for xi in x {
            ensure_len(xi, y.len(), "Eltwise input")?;
        }
        match op {
            EltwiseOp::Sum => {
                for (i, xi) in x.iter().enumerate() {
                    self.axpby(coeff(i), xi, if i == 0 { 0.0 } else { 1.0 }, y)?;
                }
            }
            EltwiseOp::Prod => {
                self.axpby(1.0, x[0], 0.0, y)?;
                for xi in &x[1..] {
                    self.mul_assign(xi, y)?;
                }
            }
            EltwiseOp::Max => {
                if x.len() < 2 {
                    bail!("Eltwise MAX needs at least two inputs");
                }
                let n = y.len();
                let a = self.argmax_aux(aux, n)?;
                launch!(self, "eltwise_max_first", grid_for(n); x[0], x[1], &mut *y, &mut *a, &(n as i64))?;
                for (i, xi) in x.iter().enumerate().skip(2) {
                    launch!(self, "eltwise_max_next", grid_for(n); *xi, &mut *y, &mut *a, &(n as i64), &(i as u32))?;
                }
            }
        }
        Ok(())
    }

    fn eltwise_backward(&self, op: EltwiseOp, coeffs: &[f32], x: &[&Buf], dy: &Buf, aux: &CudaAux, dx: &mut [Buf]) -> Result<()> {
        let n = dy.len();
        for d in dx.iter() {
            ensure_len(d, n, "Eltwise input gradient")?;
        }
        match op {
            EltwiseOp::Sum => {
                for (i, d) in dx.iter_mut().enumerate() {
                    self.axpby(if coeffs.is_empty() { 1.0 } else { coeffs[i] }, dy, 1.0, d)?;
                }
            }
            EltwiseOp::Prod => {
                // dx_i += dy * prod_{j != i} x_j, built in a scratch blob (exact for zero inputs).
                let mut tmp = self.scratch(&self.scratch.tmp, n)?;
                let mut t = tmp.slice_mut(..n);
                for (i, d) in dx.iter_mut().enumerate() {
                    launch!(self, "axpby", grid_for(n); dy, &mut t, &(n as i64), &1.0f32, &0.0f32)?;
                    for (j, xj) in x.iter().enumerate() {
                        if j != i {
                            ensure_len(xj, n, "Eltwise input")?;
                            launch!(self, "mul_assign", grid_for(n); *xj, &mut t, &(n as i64))?;
                        }
                    }
                    launch!(self, "axpby", grid_for(n); &t.as_view(), d, &(n as i64), &1.0f32, &1.0f32)?;
                }
            }
            EltwiseOp::Max => {
                let CudaAux::Argmax(a) = aux else { bail!("Eltwise MAX backward without a forward pass") };
                ensure_len(a, n, "Eltwise winners")?;
                for (i, d) in dx.iter_mut().enumerate() {
                    launch!(self, "eltwise_max_backward", grid_for(n); dy, a, d, &(n as i64), &(i as u32))?;
                }
            }
        }
        Ok(())
    }
}

impl Backend for Cuda {
    type Scalar = f32;
    type Buf = Buf;
    type Param = Buf;
    type Aux = CudaAux;

    fn name(&self) -> String {
        format!("cuda ({})", self.info.describe(self.precision))
    }

    fn alloc(&self, len: usize) -> Result<Buf> {
        if len == 0 {
            return self.stream.null().map_err(driver_err("allocation"));
        }
        self.stream.alloc_zeros::<f32>(len).map_err(driver_err("allocation"))
    }

    fn zero(&self, buf: &mut Buf) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.stream.memset_zeros(buf).map_err(driver_err("memset"))
    }

    fn param_from_host(&self, data: &[f32]) -> Result<Buf> {
        let mut buf = self.alloc(data.len())?;
        self.upload(&mut buf, data)?;
        Ok(buf)
    }

    fn upload(&self, buf: &mut Buf, data: &[f32]) -> Result<()> {
        if buf.len() != data.len() {
            bail!("upload of {} values into a buffer of {}", data.len(), buf.len());
        }
        if data.is_empty() {
            return Ok(());
        }
        self.stream.memcpy_htod(data, buf).map_err(driver_err("upload"))
    }

    fn download(&self, buf: &Buf) -> Result<Vec<f32>> {
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        let host = self.stream.clone_dtoh(buf).map_err(driver_err("download"))?;
        self.synchronize()?;
        Ok(host)
    }

    fn copy(&self, src: &Buf, dst: &mut Buf) -> Result<()> {
        if src.len() != dst.len() {
            bail!("copy of {} values into a buffer of {}", src.len(), dst.len());
        }
        if src.is_empty() {
            return Ok(());
        }
        self.stream.memcpy_dtod(src, dst).map_err(driver_err("copy"))
    }

    fn add_assign(&self, dst: &mut Buf, src: &Buf) -> Result<()> {
        self.axpby(1.0, src, 1.0, dst)
    }

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
        launch!(self, "mean_abs_rows", blocks_of(rows); x, &mut *out, &(cols as i32))?;
        let host = self.stream.clone_dtoh(&out.slice(..rows)).map_err(driver_err("download"))?;
        self.synchronize()?;
        Ok(host)
    }

    fn dgn_update(&self, code: &mut Buf, grad: &Buf, rows: usize, cols: usize, scale: &[Option<f32>], upper: Option<&Buf>, decay: f32) -> Result<()> {
        if code.len() != rows * cols || grad.len() != code.len() || scale.len() != rows || upper.is_some_and(|u| u.len() != cols) {
            bail!("dgn_update: code, gradient, scales and bounds disagree on {rows}x{cols}");
        }
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
        launch!(self, "dgn_update", grid_for(n);
            code, grad, &step, &active, upper.unwrap_or(grad), &(upper.is_some() as i32),
            &(n as i64), &(cols as i32), &decay, &decays)
    }

    fn forward(&self, op: &Op, p: &[Buf], x: &[&Buf], y: &mut [Buf], aux: &mut CudaAux) -> Result<()> {
        match op {
            Op::Conv { geom: g, bias } => {
                self.conv_apply(g, x[0], &p[0], &mut y[0], 0.0)?;
                if let Some(b) = bias_of(p, *bias) {
                    self.bias_add(&mut y[0], b, g.out_channels, g.out_h * g.out_w)?;
                }
            }
            Op::Deconv { geom: g, bias } => {
                self.conv_transpose(g, x[0], &p[0], &mut y[0], false)?;
                if let Some(b) = bias_of(p, *bias) {
                    self.bias_add(&mut y[0], b, g.in_channels, g.in_h * g.in_w)?;
                }
            }
            Op::InnerProduct { rows, k, n, bias } => {
                self.inner_product(*rows, *k, *n, x[0], &p[0], &mut y[0])?;
                if let Some(b) = bias_of(p, *bias) {
                    self.bias_add(&mut y[0], b, *n, 1)?;
                }
            }
            Op::Relu { slope } => self.relu_forward(*slope, x[0], &mut y[0])?,
            Op::Copy => {
                for t in y.iter_mut() {
                    self.copy(x[0], t)?;
                }
            }
            Op::MaxPool(g) => {
                let a = self.argmax_aux(aux, g.output_len())?;
                self.max_pool_forward(g, x[0], &mut y[0], a)?;
            }
            Op::AvePool(g) => self.ave_pool_forward(g, x[0], &mut y[0])?,
            Op::Lrn { dims, param } => {
                let len = x[0].len();
                if !matches!(aux, CudaAux::Scale(s) if s.len() == len) {
                    *aux = CudaAux::Scale(self.alloc(len)?);
                }
                let CudaAux::Scale(s) = aux else { unreachable!() };
                self.lrn_forward(*dims, param, x[0], &mut y[0], s)?;
            }
            Op::Softmax { outer, channels, inner } => self.softmax_forward(*outer, *channels, *inner, x[0], &mut y[0])?,
            Op::Concat { outer, inner, channels } => {
                let row = channels.iter().sum::<usize>() * inner;
                let mut start = 0;
                for (xi, &c) in x.iter().zip(channels) {
                    self.concat_forward(xi, &mut y[0], *outer, c * inner, row, start)?;
                    start += c * inner;
                }
            }
            Op::Eltwise { op, coeffs } => self.eltwise_forward(*op, coeffs, x, &mut y[0], aux)?,
            Op::BatchNorm { outer, channels, inner, eps } => {
                let n = outer * channels * inner;
                ensure_len(x[0], n, "BatchNorm input")?;
                ensure_len(&y[0], n, "BatchNorm output")?;
                launch!(self, "batch_norm_forward", grid_for(n);
                    x[0], &p[0], &p[1], &p[2], &mut y[0], &(n as i64), &(*channels as i32), &(*inner as i32), eps)?;
            }
            Op::Scale { outer, channels, inner, bias } => {
                let n = outer * channels * inner;
                ensure_len(x[0], n, "Scale input")?;
                ensure_len(&y[0], n, "Scale output")?;
                launch!(self, "scale_forward", grid_for(n);
                    x[0], &p[0], bias_of(p, *bias).unwrap_or(&p[0]), &(*bias as i32), &mut y[0],
                    &(n as i64), &(*channels as i32), &(*inner as i32))?;
            }
        }
        Ok(())
    }

    fn backward(
        &self,
        op: &Op,
        p: &[Buf],
        x: &[&Buf],
        y: &Buf,
        dy: &Buf,
        aux: &CudaAux,
        dx: &mut [Buf],
        dparams: Option<&mut [Buf]>,
    ) -> Result<()> {
        let data = !dx.is_empty();
        match op {
            Op::Conv { geom: g, bias } => {
                if data {
                    self.conv_transpose(g, dy, &p[0], &mut dx[0], true)?;
                }
                if let Some(pg) = dparams {
                    let (dw, db) = weight_and_bias(pg, *bias);
                    self.conv_weight_grad(g, x[0], dy, dw)?;
                    if let Some(db) = db {
                        self.channel_sums(dy, None, db, g.batch, g.out_channels, g.out_h * g.out_w)?;
                    }
                }
            }
            Op::Deconv { geom: g, bias } => {
                if data {
                    self.conv_apply(g, dy, &p[0], &mut dx[0], 1.0)?;
                }
                if let Some(pg) = dparams {
                    let (dw, db) = weight_and_bias(pg, *bias);
                    // The convolution's weight gradient with input and output swapped.
                    self.conv_weight_grad(g, dy, x[0], dw)?;
                    if let Some(db) = db {
                        self.channel_sums(dy, None, db, g.batch, g.in_channels, g.in_h * g.in_w)?;
                    }
                }
            }
            Op::InnerProduct { rows, k, n, bias } => {
                if data {
                    self.inner_product_data_grad(*rows, *k, *n, dy, &p[0], &mut dx[0])?;
                }
                if let Some(pg) = dparams {
                    let (dw, db) = weight_and_bias(pg, *bias);
                    self.inner_product_weight_grad(*rows, *k, *n, x[0], dy, dw)?;
                    if let Some(db) = db {
                        self.channel_sums(dy, None, db, *rows, *n, 1)?;
                    }
                }
            }
            Op::BatchNorm { outer, channels, inner, eps } => {
                let n = outer * channels * inner;
                ensure_len(dy, n, "BatchNorm output gradient")?;
                if data {
                    ensure_len(&dx[0], n, "BatchNorm input gradient")?;
                    launch!(self, "batch_norm_backward_data", grid_for(n);
                        &p[1], &p[2], dy, &mut dx[0], &(n as i64), &(*channels as i32), &(*inner as i32), eps)?;
                }
                if let Some(pg) = dparams {
                    let (dmean, rest) = pg.split_at_mut(1);
                    ensure_len(x[0], n, "BatchNorm input")?;
                    launch!(self, "batch_norm_backward_weights", blocks_of(*channels);
                        x[0], dy, &p[0], &p[1], &p[2], &mut dmean[0], &mut rest[0],
                        &(*outer as i32), &(*channels as i32), &(*inner as i32), eps)?;
                }
            }
            Op::Scale { outer, channels, inner, bias } => {
                let n = outer * channels * inner;
                ensure_len(dy, n, "Scale output gradient")?;
                if data {
                    ensure_len(&dx[0], n, "Scale input gradient")?;
                    launch!(self, "scale_backward_data", grid_for(n);
                        &p[0], dy, &mut dx[0], &(n as i64), &(*channels as i32), &(*inner as i32))?;
                }
                if let Some(pg) = dparams {
                    let (dw, db) = weight_and_bias(pg, *bias);
                    self.channel_sums(dy, Some(x[0]), dw, *outer, *channels, *inner)?;
                    if let Some(db) = db {
                        self.channel_sums(dy, None, db, *outer, *channels, *inner)?;
                    }
                }
            }
            // The rest have no parameters: only a data gradient to skip.
            _ if !data => {}
            Op::Relu { slope } => self.relu_backward(*slope, x[0], dy, &mut dx[0])?,
            Op::Copy => bail!("Copy nodes are handled by the graph"),
            Op::MaxPool(g) => match aux {
                CudaAux::Argmax(a) => self.max_pool_backward(g, dy, a, &mut dx[0])?,
                _ => bail!("max pooling backward without a forward pass"),
            },
            Op::AvePool(g) => self.ave_pool_backward(g, dy, &mut dx[0])?,
            Op::Lrn { dims, param } => match aux {
                CudaAux::Scale(s) => self.lrn_backward(*dims, param, x[0], y, s, dy, &mut dx[0])?,
                _ => bail!("LRN backward without a forward pass"),
            },
            Op::Softmax { outer, channels, inner } => self.softmax_backward(*outer, *channels, *inner, y, dy, &mut dx[0])?,
            Op::Concat { outer, inner, channels } => {
                let row = channels.iter().sum::<usize>() * inner;
                let mut start = 0;
                for (d, &c) in dx.iter_mut().zip(channels) {
                    self.concat_backward(dy, d, *outer, c * inner, row, start)?;
                    start += c * inner;
                }
            }
            Op::Eltwise { op, coeffs } => self.eltwise_backward(*op, coeffs, x, dy, aux, dx)?,
        }
        Ok(())
    }
}
