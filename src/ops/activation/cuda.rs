//! ReLU and the activations on the GPU: `kernels/activation.cu`.

use super::ActivationKernels;
use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{ensure_len, grid_for, grid_stride, launch, Cuda};
use crate::ir::Activation;
use anyhow::Result;
use cudarc::driver::CudaSlice;

pub const SOURCE: KernelSource = KernelSource {
    name: "activation.cu",
    text: include_str!("../../../kernels/activation.cu"),
    launches: &[
        grid_stride("relu_forward"),
        grid_stride("relu_backward"),
        grid_stride("sigmoid_forward"),
        grid_stride("sigmoid_backward"),
        grid_stride("hard_sigmoid_forward"),
        grid_stride("hard_sigmoid_backward"),
        grid_stride("hard_swish_forward"),
        grid_stride("hard_swish_backward"),
        grid_stride("clip_forward"),
        grid_stride("clip_backward"),
        grid_stride("erf_forward"),
        grid_stride("erf_backward"),
    ],
};

type Buf = CudaSlice<f32>;

impl ActivationKernels for Cuda {
    fn relu_forward(&self, slope: f32, x: &Buf, y: &mut Buf) -> Result<()> {
        ensure_len(y, x.len(), "ReLU output")?;
        launch!(self, SOURCE, "relu_forward", grid_for(x.len()); x, y, &(x.len() as i64), &slope)
    }

    fn relu_backward(&self, slope: f32, x: &Buf, dy: &Buf, dx: &mut Buf) -> Result<()> {
        ensure_len(dy, x.len(), "ReLU output gradient")?;
        ensure_len(dx, x.len(), "ReLU input gradient")?;
        launch!(self, SOURCE, "relu_backward", grid_for(x.len()); x, dy, dx, &(x.len() as i64), &slope)
    }

    fn activation_forward(&self, f: Activation, x: &Buf, y: &mut Buf) -> Result<()> {
        ensure_len(y, x.len(), "activation output")?;
        let n = x.len() as i64;
        let grid = grid_for(x.len());
        match f {
            Activation::Sigmoid => launch!(self, SOURCE, "sigmoid_forward", grid; x, y, &n),
            Activation::HardSigmoid { alpha, beta } => launch!(self, SOURCE, "hard_sigmoid_forward", grid; x, y, &n, &alpha, &beta),
            Activation::HardSwish => launch!(self, SOURCE, "hard_swish_forward", grid; x, y, &n),
            Activation::Clip { min, max } => launch!(self, SOURCE, "clip_forward", grid; x, y, &n, &min, &max),
            Activation::Erf => launch!(self, SOURCE, "erf_forward", grid; x, y, &n),
        }
    }

    fn activation_backward(&self, f: Activation, x: &Buf, y: &Buf, dy: &Buf, dx: &mut Buf) -> Result<()> {
        ensure_len(dy, x.len(), "activation output gradient")?;
        ensure_len(dx, x.len(), "activation input gradient")?;
        let n = x.len() as i64;
        let grid = grid_for(x.len());
        match f {
            Activation::Sigmoid => {
                ensure_len(y, x.len(), "Sigmoid output")?;
                launch!(self, SOURCE, "sigmoid_backward", grid; y, dy, dx, &n)
            }
            Activation::HardSigmoid { alpha, beta } => launch!(self, SOURCE, "hard_sigmoid_backward", grid; x, dy, dx, &n, &alpha, &beta),
            Activation::HardSwish => launch!(self, SOURCE, "hard_swish_backward", grid; x, dy, dx, &n),
            Activation::Clip { min, max } => launch!(self, SOURCE, "clip_backward", grid; x, dy, dx, &n, &min, &max),
            Activation::Erf => launch!(self, SOURCE, "erf_backward", grid; x, dy, dx, &n),
        }
    }
}
