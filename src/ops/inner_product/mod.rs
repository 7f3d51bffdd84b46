//! InnerProduct: x [rows, k] times the weights [n, k] transposed, plus a bias.

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use anyhow::Result;

pub use cpu::{inner_product_backward_data, inner_product_backward_weights, inner_product_forward};

#[allow(clippy::too_many_arguments)]
pub trait InnerProductKernels: Backend {
    /// y = x w^T + bias (overwrites y).
    fn inner_product_forward(
        &self,
        rows: usize,
        k: usize,
        n: usize,
        x: &Self::Buf,
        w: &Self::Param,
        bias: Option<&Self::Param>,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// dx += dy w
    fn inner_product_backward_data(
        &self,
        rows: usize,
        k: usize,
        n: usize,
        dy: &Self::Buf,
        w: &Self::Param,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    /// dw += dy^T x; db += the column sums of dy.
    fn inner_product_backward_weights(
        &self,
        rows: usize,
        k: usize,
        n: usize,
        x: &Self::Buf,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
    ) -> Result<()>;
}
