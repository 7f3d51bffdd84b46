//! BatchNorm and Scale on the GPU: `kernels/norm.cu`; Scale's parameter gradients are
//! per-channel sums (`elementwise.cu`).

use super::NormKernels;
use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{block_per_item, blocks_of, ensure_len, grid_for, grid_stride, launch, Cuda};
use anyhow::Result;
use cudarc::driver::CudaSlice;

pub const SOURCE: KernelSource = KernelSource {
    name: "norm.cu",
    text: include_str!("../../../kernels/norm.cu"),
    launches: &[
        // Known shortfalls (dgnam kernels): full occupancy at 256 threads allows 32 registers.
        grid_stride("scale_forward").below_full(6, "34 registers"),
        grid_stride("scale_backward_data").below_full(6, "34 registers"),
        grid_stride("batch_norm_forward").below_full(6, "34 registers"),
        grid_stride("batch_norm_backward_data").below_full(6, "34 registers"),
        block_per_item("batch_norm_backward_weights").below_full(6, "38 registers"),
    ],
};

type Buf = CudaSlice<f32>;

impl NormKernels for Cuda {
    fn batch_norm_forward(&self, outer: usize, channels: usize, inner: usize, eps: f32, p: &[Buf], x: &Buf, y: &mut Buf) -> Result<()> {
        let n = outer * channels * inner;
        ensure_len(x, n, "BatchNorm input")?;
        ensure_len(y, n, "BatchNorm output")?;
        launch!(self, SOURCE, "batch_norm_forward", grid_for(n);
            x, &p[0], &p[1], &p[2], y, &(n as i64), &(channels as i32), &(inner as i32), &eps)
    }

    fn batch_norm_backward_data(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        eps: f32,
        p: &[Buf],
        dy: &Buf,
        dx: &mut Buf,
    ) -> Result<()> {
        let n = outer * channels * inner;
        ensure_len(dy, n, "BatchNorm output gradient")?;
        ensure_len(dx, n, "BatchNorm input gradient")?;
        launch!(self, SOURCE, "batch_norm_backward_data", grid_for(n);
            &p[1], &p[2], dy, dx, &(n as i64), &(channels as i32), &(inner as i32), &eps)
    }

    fn batch_norm_backward_weights(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        eps: f32,
        p: &[Buf],
        x: &Buf,
        dy: &Buf,
        dparams: &mut [Buf],
    ) -> Result<()> {
        let n = outer * channels * inner;
        ensure_len(dy, n, "BatchNorm output gradient")?;
        ensure_len(x, n, "BatchNorm input")?;
        let (dmean, rest) = dparams.split_at_mut(1);
        launch!(self, SOURCE, "batch_norm_backward_weights", blocks_of(channels);
            x, dy, &p[0], &p[1], &p[2], &mut dmean[0], &mut rest[0],
            &(outer as i32), &(channels as i32), &(inner as i32), &eps)
    }

    fn scale_forward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Buf,
        gamma: &Buf,
        beta: Option<&Buf>,
        y: &mut Buf,
    ) -> Result<()> {
        let n = outer * channels * inner;
        ensure_len(x, n, "Scale input")?;
        ensure_len(y, n, "Scale output")?;
        launch!(self, SOURCE, "scale_forward", grid_for(n);
            x, gamma, beta.unwrap_or(gamma), &(beta.is_some() as i32), y,
            &(n as i64), &(channels as i32), &(inner as i32))
    }

    fn scale_backward_data(&self, outer: usize, channels: usize, inner: usize, gamma: &Buf, dy: &Buf, dx: &mut Buf) -> Result<()> {
        let n = outer * channels * inner;
        ensure_len(dy, n, "Scale output gradient")?;
        ensure_len(dx, n, "Scale input gradient")?;
        launch!(self, SOURCE, "scale_backward_data", grid_for(n);
            gamma, dy, dx, &(n as i64), &(channels as i32), &(inner as i32))
    }

    fn scale_backward_weights(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Buf,
        dy: &Buf,
        dgamma: &mut Buf,
        dbeta: Option<&mut Buf>,
    ) -> Result<()> {
        ensure_len(dy, outer * channels * inner, "Scale output gradient")?;
        self.channel_sums(dy, Some(x), dgamma, outer, channels, inner)?;
        if let Some(db) = dbeta {
            self.channel_sums(dy, None, db, outer, channels, inner)?;
        }
        Ok(())
    }

    // The learned Scale's kernels, with the factors from a blob.
    fn scale_by_blob_forward(&self, outer: usize, channels: usize, inner: usize, x: &Buf, s: &Buf, y: &mut Buf) -> Result<()> {
        ensure_len(s, channels, "Scale factors")?;
        self.scale_forward(outer, channels, inner, x, s, None, y)
    }

    fn scale_by_blob_backward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Buf,
        s: &Buf,
        dy: &Buf,
        dx: &mut Buf,
        ds: &mut Buf,
    ) -> Result<()> {
        ensure_len(s, channels, "Scale factors")?;
        self.scale_backward_data(outer, channels, inner, s, dy, dx)?;
        self.scale_backward_weights(outer, channels, inner, x, dy, ds, None)
    }
}
