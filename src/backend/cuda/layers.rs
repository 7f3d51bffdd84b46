//! Launches of the non-GEMM kernels: pooling, LRN, softmax, element-wise ops and the
//! per-channel reductions, each checking its buffers against the sizes the kernel touches.

use super::{blocks_of, ensure_len, grid_for, launch, Cuda};
use crate::caffe::{LrnParam, LrnRegion};
use crate::ops::pool::PoolGeom;
use anyhow::Result;
use cudarc::driver::CudaSlice;

type Buf = CudaSlice<f32>;

fn pool_args(g: &PoolGeom) -> [i32; 11] {
    [g.batch * g.channels, g.in_h, g.in_w, g.out_h, g.out_w, g.kernel[0], g.kernel[1], g.stride[0], g.stride[1], g.pad[0], g.pad[1]]
        .map(|v| v as i32)
}

/// LRN constants: (scale's additive constant, window-sum multiplier, backward coefficient).
fn lrn_constants(p: &LrnParam) -> (f32, f32, f32) {
    let n = p.local_size as f32;
    let big_n = match p.region {
        LrnRegion::AcrossChannels => n,
        LrnRegion::WithinChannel => n * n,
    };
    let add = match p.region {
        LrnRegion::AcrossChannels => p.k,
        LrnRegion::WithinChannel => 1.0,
    };
    (add, p.alpha / big_n, 2.0 * p.alpha * p.beta / big_n)
}

impl Cuda {
    pub(super) fn max_pool_forward(&self, g: &PoolGeom, x: &Buf, y: &mut Buf, argmax: &mut CudaSlice<u32>) -> Result<()> {
        ensure_len(x, g.input_len(), "pooling input")?;
        ensure_len(y, g.output_len(), "pooling output")?;
        ensure_len(argmax, g.output_len(), "pooling winners")?;
        let [p, h, w, oh, ow, kh, kw, sh, sw, ph, pw] = pool_args(g);
        launch!(self, "max_pool_forward", grid_for(g.output_len()); x, y, argmax, &p, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw)
    }

    pub(super) fn max_pool_backward(&self, g: &PoolGeom, dy: &Buf, argmax: &CudaSlice<u32>, dx: &mut Buf) -> Result<()> {
        ensure_len(dx, g.input_len(), "pooling input gradient")?;
        ensure_len(dy, g.output_len(), "pooling output gradient")?;
        ensure_len(argmax, g.output_len(), "pooling winners")?;
        let [p, h, w, oh, ow, kh, kw, sh, sw, ph, pw] = pool_args(g);
        launch!(self, "max_pool_backward", grid_for(g.input_len()); dy, argmax, dx, &p, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw)
    }

    pub(super) fn ave_pool_forward(&self, g: &PoolGeom, x: &Buf, y: &mut Buf) -> Result<()> {
        ensure_len(x, g.input_len(), "pooling input")?;
        ensure_len(y, g.output_len(), "pooling output")?;
        let [p, h, w, oh, ow, kh, kw, sh, sw, ph, pw] = pool_args(g);
        launch!(self, "ave_pool_forward", grid_for(g.output_len()); x, y, &p, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw)
    }

    pub(super) fn ave_pool_backward(&self, g: &PoolGeom, dy: &Buf, dx: &mut Buf) -> Result<()> {
        ensure_len(dx, g.input_len(), "pooling input gradient")?;
        ensure_len(dy, g.output_len(), "pooling output gradient")?;
        let [p, h, w, oh, ow, kh, kw, sh, sw, ph, pw] = pool_args(g);
        launch!(self, "ave_pool_backward", grid_for(g.input_len()); dy, dx, &p, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw)
    }

    pub(super) fn lrn_forward(&self, dims: [usize; 4], p: &LrnParam, x: &Buf, y: &mut Buf, scale: &mut Buf) -> Result<()> {
        let n: usize = dims.iter().product();
        for (b, what) in [(x, "LRN input"), (&*y, "LRN output"), (&*scale, "LRN scale")] {
            ensure_len(b, n, what)?;
        }
        let (add, mul, _) = lrn_constants(p);
        let within = matches!(p.region, LrnRegion::WithinChannel) as i32;
        let [_, c, h, w] = dims.map(|v| v as i32);
        let half = ((p.local_size.max(1) - 1) / 2) as i32;
        launch!(self, "lrn_forward", grid_for(n); x, y, scale, &(n as i64), &c, &h, &w, &half, &within, &add, &mul, &p.beta)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn lrn_backward(&self, dims: [usize; 4], p: &LrnParam, x: &Buf, y: &Buf, scale: &Buf, dy: &Buf, dx: &mut Buf) -> Result<()> {
        let n: usize = dims.iter().product();
        for (b, what) in [(x, "LRN input"), (y, "LRN output"), (scale, "LRN scale"), (dy, "LRN output gradient"), (&*dx, "LRN input gradient")] {
            ensure_len(b, n, what)?;
        }
        let (_, _, coef) = lrn_constants(p);
        let within = matches!(p.region, LrnRegion::WithinChannel) as i32;
        let [_, c, h, w] = dims.map(|v| v as i32);
        let half = ((p.local_size.max(1) - 1) / 2) as i32;
        launch!(self, "lrn_backward", grid_for(n); x, y, scale, dy, dx, &(n as i64), &c, &h, &w, &half, &within, &p.beta, &coef)
    }

    pub(super) fn softmax_forward(&self, outer: usize, channels: usize, inner: usize, x: &Buf, y: &mut Buf) -> Result<()> {
        ensure_len(x, outer * channels * inner, "softmax input")?;
        ensure_len(y, outer * channels * inner, "softmax output")?;
        if outer * inner == 0 || channels == 0 {
            return Ok(());
        }
        launch!(self, "softmax_forward", blocks_of(outer * inner); x, y, &(channels as i32), &(inner as i32))
    }

    pub(super) fn softmax_backward(&self, outer: usize, channels: usize, inner: usize, y: &Buf, dy: &Buf, dx: &mut Buf) -> Result<()> {
        for (b, what) in [(y, "softmax output"), (dy, "softmax output gradient"), (&*dx, "softmax input gradient")] {
            ensure_len(b, outer * channels * inner, what)?;
        }
        if outer * inner == 0 || channels == 0 {
            return Ok(());
        }
        launch!(self, "softmax_backward", blocks_of(outer * inner); y, dy, dx, &(channels as i32), &(inner as i32))
    }

    pub(super) fn relu_forward(&self, slope: f32, x: &Buf, y: &mut Buf) -> Result<()> {
        ensure_len(y, x.len(), "ReLU output")?;
        launch!(self, "relu_forward", grid_for(x.len()); x, y, &(x.len() as i64), &slope)
    }

    pub(super) fn relu_backward(&self, slope: f32, x: &Buf, dy: &Buf, dx: &mut Buf) -> Result<()> {
        ensure_len(dy, x.len(), "ReLU output gradient")?;
        ensure_len(dx, x.len(), "ReLU input gradient")?;
        launch!(self, "relu_backward", grid_for(x.len()); x, dy, dx, &(x.len() as i64), &slope)
    }

    /// y = a * x + b * y (b == 0 overwrites y).
    pub(super) fn axpby(&self, a: f32, x: &Buf, b: f32, y: &mut Buf) -> Result<()> {
        ensure_len(y, x.len(), "destination")?;
        if x.is_empty() {
            return Ok(());
        }
        launch!(self, "axpby", grid_for(x.len()); x, y, &(x.len() as i64), &a, &b)
    }

    /// y *= x
    pub(super) fn mul_assign(&self, x: &Buf, y: &mut Buf) -> Result<()> {
        ensure_len(y, x.len(), "destination")?;
        launch!(self, "mul_assign", grid_for(x.len()); x, y, &(x.len() as i64))
    }

    /// y[o][c][i] += bias[c] for y viewed as [outer, channels, inner].
    pub(super) fn bias_add(&self, y: &mut Buf, bias: &Buf, channels: usize, inner: usize) -> Result<()> {
        ensure_len(bias, channels, "bias")?;
        if y.is_empty() {
            return Ok(());
        }
        if !y.len().is_multiple_of((channels * inner).max(1)) {
            anyhow::bail!("a blob of {} values is not a whole number of {channels} x {inner} blocks", y.len());
        }
        let n = y.len();
        launch!(self, "bias_add", grid_for(n); &mut *y, bias, &(n as i64), &(channels as i32), &(inner as i32))
    }

    /// out[c] += sum over outer and inner of dy (or of dy * x).
    pub(super) fn channel_sums(&self, dy: &Buf, x: Option<&Buf>, out: &mut Buf, outer: usize, channels: usize, inner: usize) -> Result<()> {
        ensure_len(dy, outer * channels * inner, "gradient")?;
        ensure_len(out, channels, "per-channel gradient")?;
        if let Some(x) = x {
            ensure_len(x, dy.len(), "input")?;
        }
        if channels == 0 {
            return Ok(());
        }
        launch!(self, "channel_sums", blocks_of(channels); dy, x.unwrap_or(dy), &(x.is_some() as i32), out, &(outer as i32), &(channels as i32), &(inner as i32))
    }

    /// Copies `part` ([outer, block]) into columns start.. of `whole` ([outer, row]).
    pub(super) fn concat_forward(&self, part: &Buf, whole: &mut Buf, outer: usize, block: usize, row: usize, start: usize) -> Result<()> {
        ensure_len(whole, outer * row, "concatenation")?;
        ensure_len(part, outer * block, "concatenated input")?;
        if part.is_empty() {
            return Ok(());
        }
        launch!(self, "concat_copy", grid_for(part.len()); &mut *whole, part, &(part.len() as i64), &(block as i64), &(row as i64), &(start as i64), &0i32)
    }

    /// The transpose: `part` += its columns of `whole`.
    pub(super) fn concat_backward(&self, whole: &Buf, part: &mut Buf, outer: usize, block: usize, row: usize, start: usize) -> Result<()> {
        ensure_len(whole, outer * row, "concatenation gradient")?;
        ensure_len(part, outer * block, "concatenated input gradient")?;
        if part.is_empty() {
            return Ok(());
        }
        let n = part.len();
        launch!(self, "concat_copy", grid_for(n); whole, &mut *part, &(n as i64), &(block as i64), &(row as i64), &(start as i64), &1i32)
    }
}
