//! ReLU on the GPU: `kernels/activation.cu`.

use super::ActivationKernels;
use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{ensure_len, grid_for, grid_stride, launch, Cuda};
use anyhow::Result;
use cudarc::driver::CudaSlice;

pub const SOURCE: KernelSource = KernelSource {
    name: "activation.cu",
    text: include_str!("../../../kernels/activation.cu"),
    launches: &[grid_stride("relu_forward"), grid_stride("relu_backward")],
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
}
