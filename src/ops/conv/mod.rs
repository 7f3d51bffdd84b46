//! Convolution and deconvolution (Caffe semantics), grouped, strided, padded, dilated. The
//! deconvolution is not a second implementation: its forward pass is the convolution's
//! backward-data pass, its backward-data pass the convolution's forward pass, and its weight
//! gradient the convolution's with input and output swapped. `ConvGeom` (in `crate::ir`) of
//! a deconvolution is that of the convolution it transposes.

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use crate::ops::Dx;
use anyhow::Result;

pub use crate::ir::ConvGeom;
pub use cpu::{conv_backward_data, conv_backward_weights, conv_forward, deconv_backward_data, deconv_backward_weights, deconv_forward};

/// A ReLU fused into a convolution's output pass (`Net::fuse_relus`): its slope, at least 0,
/// so the signs of the output after it tell which inputs were positive.
#[derive(Clone, Copy)]
pub struct FusedRelu<'a, B> {
    pub slope: f32,
    /// The layer's output after the ReLU (the backward pass masks the output gradient by it).
    pub y: &'a B,
}

pub trait ConvKernels: Backend {
    /// Whether `relu` below runs inside the convolution's own passes. Where it does not,
    /// `Net::fuse_relus` leaves the ReLUs as layers of their own and no kernel gets one.
    fn fuses_relu(&self) -> bool;
    /// y = conv(x) + bias (overwrites y), then the fused ReLU of that slope if given.
    /// x: [N, C, H, W], w: [O, C/group, kh, kw].
    fn conv_forward(
        &self,
        g: &ConvGeom,
        x: &Self::Buf,
        w: &Self::Param,
        bias: Option<&Self::Param>,
        relu: Option<f32>,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// dx += conv^T(dy), with dy first masked as a fused ReLU's backward pass would
    /// (`dy * (y > 0 ? 1 : slope)`) when `relu` is given.
    fn conv_backward_data(
        &self,
        g: &ConvGeom,
        dy: &Self::Buf,
        w: &Self::Param,
        relu: Option<FusedRelu<'_, Self::Buf>>,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    /// `conv_backward_data`, or with `Dx::Overwrite` `dx = conv^T(dy)` whatever `dx` held.
    /// By default the buffer is zeroed first.
    fn conv_backward_data_into(
        &self,
        g: &ConvGeom,
        dy: &Self::Buf,
        w: &Self::Param,
        relu: Option<FusedRelu<'_, Self::Buf>>,
        dx: &mut Self::Buf,
        to: Dx,
    ) -> Result<()> {
        to.clear(self, dx)?;
        self.conv_backward_data(g, dy, w, relu, dx)
    }
    /// dw += dy col(x)^T; db += the sums of dy per output channel.
    fn conv_backward_weights(
        &self,
        g: &ConvGeom,
        x: &Self::Buf,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
    ) -> Result<()>;
    /// y = conv^T(x) + bias (overwrites y), then the fused ReLU if given.
    fn deconv_forward(
        &self,
        g: &ConvGeom,
        x: &Self::Buf,
        w: &Self::Param,
        bias: Option<&Self::Param>,
        relu: Option<f32>,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// dx += conv(dy), dy masked first when `relu` is given (as `conv_backward_data`).
    fn deconv_backward_data(
        &self,
        g: &ConvGeom,
        dy: &Self::Buf,
        w: &Self::Param,
        relu: Option<FusedRelu<'_, Self::Buf>>,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    /// `deconv_backward_data`, or with `Dx::Overwrite` `dx = conv(dy)` whatever `dx` held.
    /// By default the buffer is zeroed first.
    fn deconv_backward_data_into(
        &self,
        g: &ConvGeom,
        dy: &Self::Buf,
        w: &Self::Param,
        relu: Option<FusedRelu<'_, Self::Buf>>,
        dx: &mut Self::Buf,
        to: Dx,
    ) -> Result<()> {
        to.clear(self, dx)?;
        self.deconv_backward_data(g, dy, w, relu, dx)
    }
    fn deconv_backward_weights(
        &self,
        g: &ConvGeom,
        x: &Self::Buf,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
    ) -> Result<()>;
}
