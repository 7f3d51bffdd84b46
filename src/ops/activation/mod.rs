//! ReLU and leaky ReLU (Caffe's `negative_slope`; the DGN generators use 0.3).

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use anyhow::Result;

pub use cpu::{relu_backward, relu_forward};

pub trait ActivationKernels: Backend {
    /// `y = x > 0 ? x : slope * x`
    fn relu_forward(&self, slope: f32, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// `dx += dy * (x > 0 ? 1 : slope)`, from the layer's input `x`.
    fn relu_backward(&self, slope: f32, x: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
}
