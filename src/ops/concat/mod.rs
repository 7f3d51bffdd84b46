//! Concat along one axis, and its inverse Slice: part i viewed as [outer, channels[i] *
//! inner], the whole as [outer, sum(channels) * inner]. Concat makes the whole from the
//! parts, Slice the parts from the whole; each one's backward pass is the other's copy,
//! adding.

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use anyhow::Result;

pub use cpu::{concat_backward, concat_forward, slice_backward, slice_forward};

pub trait ConcatKernels: Backend {
    fn concat_forward(&self, outer: usize, inner: usize, channels: &[usize], x: &[&Self::Buf], y: &mut Self::Buf) -> Result<()>;
    /// Each `dx[i] +=` its slice of `dy`.
    fn concat_backward(&self, outer: usize, inner: usize, channels: &[usize], dy: &Self::Buf, dx: &mut [Self::Buf]) -> Result<()>;
    /// Each `dx[i] =` its slice of `dy`, whatever it held. By default the buffers are zeroed first.
    fn concat_backward_overwrite(
        &self,
        outer: usize,
        inner: usize,
        channels: &[usize],
        dy: &Self::Buf,
        dx: &mut [Self::Buf],
    ) -> Result<()> {
        for d in dx.iter_mut() {
            self.zero(d)?;
        }
        self.concat_backward(outer, inner, channels, dy, dx)
    }
    /// Each `y[i]` = its part of `x`.
    fn slice_forward(&self, outer: usize, inner: usize, channels: &[usize], x: &Self::Buf, y: &mut [Self::Buf]) -> Result<()>;
    /// `dx +=` each `dy[i]` in its part.
    fn slice_backward(&self, outer: usize, inner: usize, channels: &[usize], dy: &[&Self::Buf], dx: &mut Self::Buf) -> Result<()>;
}
