//! Constant padding of H and W, by different amounts on each side: `Pad` layers, which the
//! ONNX importer puts before a Conv or pool whose pads differ between the two sides (the
//! engine's own padding is symmetric) and for ONNX Pad nodes it cannot fold. The value is
//! 0 before a Conv or an average, -inf before a max (so, as ONNX's own pool pads, it never
//! wins); gradients of the padding are dropped.

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use crate::ir::PadGeom;
use anyhow::Result;

pub use cpu::{pad_backward, pad_forward};

pub trait PadKernels: Backend {
    /// y = x placed at (`before`) inside a plane of `value`.
    fn pad_forward(&self, g: &PadGeom, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// dx += the part of dy over x.
    fn pad_backward(&self, g: &PadGeom, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
}
