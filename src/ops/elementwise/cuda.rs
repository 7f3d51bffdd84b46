//! `kernels/elementwise.cu`: y = a x + b y, y *= x, per-channel bias and per-channel sums.

use super::ElementwiseKernels;
use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{block_per_item, blocks_of, ensure_len, grid_for, grid_stride, launch, Cuda};
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

pub const SOURCE: KernelSource = KernelSource {
    name: "elementwise.cu",
    text: include_str!("../../../kernels/elementwise.cu"),
    launches: &[grid_stride("axpby"), grid_stride("mul_assign"), grid_stride("bias_add"), block_per_item("channel_sums")],
};

type Buf = CudaSlice<f32>;

impl ElementwiseKernels for Cuda {
    fn add_assign(&self, dst: &mut Buf, src: &Buf) -> Result<()> {
        self.axpby(1.0, src, 1.0, dst)
    }
}

impl Cuda {
    /// y = a * x + b * y (b == 0 overwrites y).
    pub(crate) fn axpby(&self, a: f32, x: &Buf, b: f32, y: &mut Buf) -> Result<()> {
        ensure_len(y, x.len(), "destination")?;
        if x.is_empty() {
            return Ok(());
        }
        launch!(self, SOURCE, "axpby", grid_for(x.len()); x, y, &(x.len() as i64), &a, &b)
    }

    /// y *= x
    pub(crate) fn mul_assign(&self, x: &Buf, y: &mut Buf) -> Result<()> {
        ensure_len(y, x.len(), "destination")?;
        launch!(self, SOURCE, "mul_assign", grid_for(x.len()); x, y, &(x.len() as i64))
    }

    /// y[o][c][i] += bias[c] for y viewed as [outer, channels, inner].
    pub(crate) fn bias_add(&self, y: &mut Buf, bias: &Buf, channels: usize, inner: usize) -> Result<()> {
        ensure_len(bias, channels, "bias")?;
        if y.is_empty() {
            return Ok(());
        }
        if !y.len().is_multiple_of((channels * inner).max(1)) {
            bail!("a blob of {} values is not a whole number of {channels} x {inner} blocks", y.len());
        }
        let n = y.len();
        launch!(self, SOURCE, "bias_add", grid_for(n); &mut *y, bias, &(n as i64), &(channels as i32), &(inner as i32))
    }

    /// out[c] += sum over outer and inner of dy (or of dy * x).
    pub(crate) fn channel_sums(&self, dy: &Buf, x: Option<&Buf>, out: &mut Buf, outer: usize, channels: usize, inner: usize) -> Result<()> {
        ensure_len(dy, outer * channels * inner, "gradient")?;
        ensure_len(out, channels, "per-channel gradient")?;
        if let Some(x) = x {
            ensure_len(x, dy.len(), "input")?;
        }
        if channels == 0 {
            return Ok(());
        }
        launch!(self, SOURCE, "channel_sums", blocks_of(channels); dy, x.unwrap_or(dy), &(x.is_some() as i32), out, &(outer as i32), &(channels as i32), &(inner as i32))
    }
}
