//! Local response normalization, both Caffe regions (ACROSS_CHANNELS and WITHIN_CHANNEL);
//! `dims` = [batch, channels, height, width]. The formulas are in `cpu.rs`.

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use crate::ir::LrnParam;
use crate::ops::Aux;
use anyhow::Result;

pub use cpu::{lrn_backward, lrn_forward};

pub trait LrnKernels: Backend + Sized {
    /// y = x * scale^-beta; the scales are kept in `aux` for the backward pass.
    fn lrn_forward(&self, dims: [usize; 4], p: &LrnParam, x: &Self::Buf, y: &mut Self::Buf, aux: &mut Aux<Self>) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn lrn_backward(
        &self,
        dims: [usize; 4],
        p: &LrnParam,
        x: &Self::Buf,
        y: &Self::Buf,
        aux: &Aux<Self>,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;
}
