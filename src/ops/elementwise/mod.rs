//! Element-wise arithmetic the graph and other ops build on: adding one blob into another
//! (gradient accumulation), and on the GPU the `axpby`, product, per-channel bias and
//! per-channel sum kernels that the convolution, inner product, Eltwise and Scale launchers
//! compose (`kernels/elementwise.cu`). On the CPU each op's reference does these inline.

pub mod cuda;

use crate::device::{Backend, Cpu};
use crate::real::Real;
use anyhow::{ensure, Result};

pub trait ElementwiseKernels: Backend {
    /// dst += src
    fn add_assign(&self, dst: &mut Self::Buf, src: &Self::Buf) -> Result<()>;
}

impl<T: Real> ElementwiseKernels for Cpu<'_, T> {
    fn add_assign(&self, dst: &mut Vec<T>, src: &Vec<T>) -> Result<()> {
        ensure!(dst.len() == src.len(), "adding {} values into a buffer of {}", src.len(), dst.len());
        dst.iter_mut().zip(src).for_each(|(a, &b)| *a += b);
        Ok(())
    }
}
