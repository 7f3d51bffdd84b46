//! Concat along one axis: input i viewed as [outer, channels[i] * inner], the output as
//! [outer, sum(channels) * inner].

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use anyhow::Result;

pub use cpu::{concat_backward, concat_forward};

pub trait ConcatKernels: Backend {
    fn concat_forward(&self, outer: usize, inner: usize, channels: &[usize], x: &[&Self::Buf], y: &mut Self::Buf) -> Result<()>;
    /// Each `dx[i] +=` its slice of `dy`.
    fn concat_backward(&self, outer: usize, inner: usize, channels: &[usize], dy: &Self::Buf, dx: &mut [Self::Buf]) -> Result<()>;
}
