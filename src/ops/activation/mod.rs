//! Element-wise functions of one blob: ReLU and leaky ReLU (Caffe's `negative_slope`; the DGN
//! generators use 0.3), and the [`Activation`]s the ONNX nets bring: Sigmoid, HardSigmoid,
//! HardSwish and Clip (ReLU6).

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use crate::ir::Activation;
use crate::ops::Dx;
use anyhow::{bail, Result};

pub use cpu::{activation_backward, activation_forward, relu_backward, relu_forward, relu_in_place};

pub trait ActivationKernels: Backend {
    /// `y = x > 0 ? x : slope * x`
    fn relu_forward(&self, slope: f32, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// `dx += dy * (x > 0 ? 1 : slope)`, from the layer's input `x`.
    fn relu_backward(&self, slope: f32, x: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    /// `relu_backward`, or with `Dx::Overwrite` `dx = dy * (x > 0 ? 1 : slope)` whatever `dx`
    /// held. By default the buffer is zeroed first.
    fn relu_backward_into(&self, slope: f32, x: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf, to: Dx) -> Result<()> {
        to.clear(self, dx)?;
        self.relu_backward(slope, x, dy, dx)
    }
    /// `y = f(x)`
    fn activation_forward(&self, f: Activation, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// `dx += dy * f'(x)`, from the layer's input `x` (Sigmoid: from its output `y`).
    fn activation_backward(&self, f: Activation, x: &Self::Buf, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    /// Whether `silu_forward` and `silu_backward_into` run here; where they do not,
    /// `Net::fuse_silus` leaves Sigmoid and Mul apart and neither is called.
    fn fuses_silu(&self) -> bool {
        false
    }
    /// `y = x * sigmoid(x)`, with the Sigmoid's and the product's own arithmetic.
    fn silu_forward(&self, _x: &Self::Buf, _y: &mut Self::Buf) -> Result<()> {
        bail!("{}: no fused SiLU here (Net::fuse_silus keeps Sigmoid and Mul apart)", self.name())
    }
    /// `dx += dy * sigmoid(x) + (dy * x) * (s * (1 - s))`, in the order the Mul's backward pass
    /// and then the Sigmoid's would add them; `Dx::Overwrite` as elsewhere.
    fn silu_backward_into(&self, _x: &Self::Buf, _dy: &Self::Buf, _dx: &mut Self::Buf, _to: Dx) -> Result<()> {
        bail!("{}: no fused SiLU here (Net::fuse_silus keeps Sigmoid and Mul apart)", self.name())
    }
    /// `activation_backward`, or with `Dx::Overwrite` `dx = dy * f'(x)` whatever `dx` held.
    /// By default the buffer is zeroed first.
    fn activation_backward_into(
        &self,
        f: Activation,
        x: &Self::Buf,
        y: &Self::Buf,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
        to: Dx,
    ) -> Result<()> {
        to.clear(self, dx)?;
        self.activation_backward(f, x, y, dy, dx)
    }
}
