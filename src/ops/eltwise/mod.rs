//! Eltwise SUM (with per-input coefficients), PROD and MAX over equally shaped blobs. MAX's
//! ties follow Caffe's loop exactly: inputs 0 and 1 compare with `x0 > x1` (a tie goes to 1),
//! and each later input wins only when strictly greater.

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use crate::ir::EltwiseOp;
use crate::ops::{Aux, Dx};
use anyhow::Result;

pub use cpu::{eltwise_backward, eltwise_forward};

pub trait EltwiseKernels: Backend + Sized {
    /// `coeffs` are SUM's per-input coefficients (empty: all 1). MAX keeps its winners in `aux`.
    fn eltwise_forward(&self, op: EltwiseOp, coeffs: &[f32], x: &[&Self::Buf], y: &mut Self::Buf, aux: &mut Aux<Self>) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn eltwise_backward(
        &self,
        op: EltwiseOp,
        coeffs: &[f32],
        x: &[&Self::Buf],
        aux: &Aux<Self>,
        dy: &Self::Buf,
        dx: &mut [Self::Buf],
    ) -> Result<()>;
    /// `eltwise_backward`, each `dx[i]` added into or overwritten as `to[i]` says. By default
    /// the buffers to overwrite are zeroed first.
    #[allow(clippy::too_many_arguments)]
    fn eltwise_backward_into(
        &self,
        op: EltwiseOp,
        coeffs: &[f32],
        x: &[&Self::Buf],
        aux: &Aux<Self>,
        dy: &Self::Buf,
        dx: &mut [Self::Buf],
        to: &[Dx],
    ) -> Result<()> {
        dx.iter_mut().zip(to).try_for_each(|(d, t)| t.clear(self, d))?;
        self.eltwise_backward(op, coeffs, x, aux, dy, dx)
    }
}
