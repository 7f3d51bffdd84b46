//! Convolution and deconvolution (Caffe semantics), grouped, strided, padded, dilated. The
//! deconvolution is not a second implementation: its forward pass is the convolution's
//! backward-data pass, its backward-data pass the convolution's forward pass, and its weight
//! gradient the convolution's with input and output swapped. `ConvGeom` (in `crate::ir`) of
//! a deconvolution is that of the convolution it transposes.

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use anyhow::Result;

pub use crate::ir::ConvGeom;
pub use cpu::{conv_backward_data, conv_backward_weights, conv_forward, deconv_backward_data, deconv_backward_weights, deconv_forward};

pub trait ConvKernels: Backend {
    /// y = conv(x) + bias (overwrites y). x: [N, C, H, W], w: [O, C/group, kh, kw].
    fn conv_forward(&self, g: &ConvGeom, x: &Self::Buf, w: &Self::Param, bias: Option<&Self::Param>, y: &mut Self::Buf) -> Result<()>;
    /// dx += conv^T(dy)
    fn conv_backward_data(&self, g: &ConvGeom, dy: &Self::Buf, w: &Self::Param, dx: &mut Self::Buf) -> Result<()>;
    /// dw += dy col(x)^T; db += the sums of dy per output channel.
    fn conv_backward_weights(
        &self,
        g: &ConvGeom,
        x: &Self::Buf,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
    ) -> Result<()>;
    /// y = conv^T(x) + bias (overwrites y).
    fn deconv_forward(&self, g: &ConvGeom, x: &Self::Buf, w: &Self::Param, bias: Option<&Self::Param>, y: &mut Self::Buf) -> Result<()>;
    /// dx += conv(dy)
    fn deconv_backward_data(&self, g: &ConvGeom, dy: &Self::Buf, w: &Self::Param, dx: &mut Self::Buf) -> Result<()>;
    fn deconv_backward_weights(
        &self,
        g: &ConvGeom,
        x: &Self::Buf,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
    ) -> Result<()>;
}
