//! Caffe BatchNorm (inference, the stored global statistics) and Scale, with its factors
//! learned or, with a second bottom, computed (squeeze-and-excitation); blobs viewed as
//! [outer, channels, inner]. BatchNorm's parameters are Caffe's three blobs: the running sums
//! of mean and variance and their scale factor (the statistics are blob / factor).

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use crate::ops::Dx;
use anyhow::Result;

pub use cpu::{
    batch_norm_backward_data, batch_norm_backward_weights, batch_norm_forward, scale_backward_data, scale_backward_weights, scale_forward,
};

#[allow(clippy::too_many_arguments)]
pub trait NormKernels: Backend {
    /// y = (x - mean/s) / sqrt(variance/s + eps), `p` = [mean, variance, s].
    fn batch_norm_forward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        eps: f32,
        p: &[Self::Param],
        x: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    fn batch_norm_backward_data(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        eps: f32,
        p: &[Self::Param],
        dy: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    /// Adds the gradients with respect to the stored mean and variance into `dparams[0..2]`
    /// (the scale factor gets none).
    fn batch_norm_backward_weights(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        eps: f32,
        p: &[Self::Param],
        x: &Self::Buf,
        dy: &Self::Buf,
        dparams: &mut [Self::Buf],
    ) -> Result<()>;
    /// y = x * gamma[c] (+ beta[c])
    fn scale_forward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Self::Buf,
        gamma: &Self::Param,
        beta: Option<&Self::Param>,
        y: &mut Self::Buf,
    ) -> Result<()>;
    fn scale_backward_data(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        gamma: &Self::Param,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    /// `scale_backward_data`, or with `Dx::Overwrite` `dx = dy * gamma[c]` whatever `dx`
    /// held. By default the buffer is zeroed first.
    #[allow(clippy::too_many_arguments)]
    fn scale_backward_data_into(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        gamma: &Self::Param,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
        to: Dx,
    ) -> Result<()> {
        to.clear(self, dx)?;
        self.scale_backward_data(outer, channels, inner, gamma, dy, dx)
    }
    fn scale_backward_weights(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Self::Buf,
        dy: &Self::Buf,
        dgamma: &mut Self::Buf,
        dbeta: Option<&mut Self::Buf>,
    ) -> Result<()>;
    /// y = x * s[c], the factors a computed blob (Caffe's Scale with two bottoms).
    fn scale_by_blob_forward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Self::Buf,
        s: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// dx += dy * s[c] and ds[c] += sum over outer and inner of dy * x.
    fn scale_by_blob_backward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Self::Buf,
        s: &Self::Buf,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
        ds: &mut Self::Buf,
    ) -> Result<()>;
    /// `scale_by_blob_backward`, with `dx` and `ds` each added into or overwritten as `to`
    /// says. By default the buffers to overwrite are zeroed first.
    #[allow(clippy::too_many_arguments)]
    fn scale_by_blob_backward_into(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Self::Buf,
        s: &Self::Buf,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
        ds: &mut Self::Buf,
        to: [Dx; 2],
    ) -> Result<()> {
        to[0].clear(self, dx)?;
        to[1].clear(self, ds)?;
        self.scale_by_blob_backward(outer, channels, inner, x, s, dy, dx, ds)
    }
}
