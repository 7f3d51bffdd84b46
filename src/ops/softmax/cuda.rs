//! Softmax on the GPU: `kernels/softmax.cu`, one block per (outer, inner) column.

use super::SoftmaxKernels;
use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{block_per_item, blocks_of, ensure_len, launch, Cuda};
use anyhow::Result;
use cudarc::driver::CudaSlice;

pub const SOURCE: KernelSource = KernelSource {
    name: "softmax.cu",
    text: include_str!("../../../kernels/softmax.cu"),
    launches: &[block_per_item("softmax_forward"), block_per_item("softmax_backward")],
};

type Buf = CudaSlice<f32>;

impl SoftmaxKernels for Cuda {
    fn softmax_forward(&self, outer: usize, channels: usize, inner: usize, x: &Buf, y: &mut Buf) -> Result<()> {
        ensure_len(x, outer * channels * inner, "softmax input")?;
        ensure_len(y, outer * channels * inner, "softmax output")?;
        if outer * inner == 0 || channels == 0 {
            return Ok(());
        }
        launch!(self, SOURCE, "softmax_forward", blocks_of(outer * inner); x, y, &(channels as i32), &(inner as i32))
    }

    fn softmax_backward(&self, outer: usize, channels: usize, inner: usize, y: &Buf, dy: &Buf, dx: &mut Buf) -> Result<()> {
        for (b, what) in [(y, "softmax output"), (dy, "softmax output gradient"), (&*dx, "softmax input gradient")] {
            ensure_len(b, outer * channels * inner, what)?;
        }
        if outer * inner == 0 || channels == 0 {
            return Ok(());
        }
        launch!(self, SOURCE, "softmax_backward", blocks_of(outer * inner); y, dy, dx, &(channels as i32), &(inner as i32))
    }
}
