//! MAX and AVE pooling with Caffe's exact window arithmetic (`crate::ir::PoolGeom`, the one
//! Rust copy; `kernels/pool.cu` is the CUDA one): MAX ignores padding, AVE divides by the
//! window clipped to the padded (not the real) extent.

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use crate::ops::{Aux, Dx};
use anyhow::Result;

pub use crate::ir::PoolGeom;
pub use cpu::{ave_pool_backward, ave_pool_forward, max_pool_backward, max_pool_forward};

pub trait PoolKernels: Backend + Sized {
    /// y = the max of each window; the winners are kept in `aux` for the backward pass.
    fn max_pool_forward(&self, g: &PoolGeom, x: &Self::Buf, y: &mut Self::Buf, aux: &mut Aux<Self>) -> Result<()>;
    /// dx += dy routed to each window's winner.
    fn max_pool_backward(&self, g: &PoolGeom, dy: &Self::Buf, aux: &Aux<Self>, dx: &mut Self::Buf) -> Result<()>;
    fn ave_pool_forward(&self, g: &PoolGeom, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    fn ave_pool_backward(&self, g: &PoolGeom, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    /// `ave_pool_backward`, or with `Dx::Overwrite` into a `dx` whose values do not matter.
    /// By default the buffer is zeroed first.
    fn ave_pool_backward_into(&self, g: &PoolGeom, dy: &Self::Buf, dx: &mut Self::Buf, to: Dx) -> Result<()> {
        to.clear(self, dx)?;
        self.ave_pool_backward(g, dy, dx)
    }
}
