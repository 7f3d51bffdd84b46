//! Softmax over the middle axis of [outer, channels, inner] (Caffe's axis 1 when outer is
//! the batch and inner the spatial size).

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use anyhow::Result;

pub use cpu::{softmax_backward, softmax_forward};

pub trait SoftmaxKernels: Backend {
    fn softmax_forward(&self, outer: usize, channels: usize, inner: usize, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// dx += the softmax's Jacobian (from its output `y`) applied to dy.
    #[allow(clippy::too_many_arguments)]
    fn softmax_backward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        y: &Self::Buf,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;
}
