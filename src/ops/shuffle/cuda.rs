//! Channel shuffle on the GPU: `kernels/shuffle.cu`.

use super::ShuffleKernels;
use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{ensure_len, grid_for, grid_stride, launch, Cuda};
use anyhow::{ensure, Result};
use cudarc::driver::CudaSlice;

pub const SOURCE: KernelSource = KernelSource {
    name: "shuffle.cu",
    text: include_str!("../../../kernels/shuffle.cu"),
    launches: &[grid_stride("shuffle_channels").below_full(6, "34-36 registers: the 64-bit channel and plane arithmetic")],
};

type Buf = CudaSlice<f32>;

/// `[outer, channels, group, inner]`, as the trait's arguments.
fn run(dev: &Cuda, [outer, channels, group, inner]: [usize; 4], src: &Buf, dst: &mut Buf, add: bool) -> Result<()> {
    ensure!(group > 0 && channels.is_multiple_of(group) && channels <= i32::MAX as usize, "shuffle: {channels} channels in {group} groups");
    let n = outer * channels * inner;
    ensure_len(src, n, "ShuffleChannel source")?;
    ensure_len(dst, n, "ShuffleChannel destination")?;
    if n == 0 {
        return Ok(());
    }
    launch!(dev, SOURCE, "shuffle_channels", grid_for(n);
        src, dst, &(n as i64), &(channels as i32), &(group as i32), &(inner as i64), &(add as i32))
}

impl ShuffleKernels for Cuda {
    fn shuffle_forward(&self, outer: usize, channels: usize, group: usize, inner: usize, x: &Buf, y: &mut Buf) -> Result<()> {
        run(self, [outer, channels, group, inner], x, y, false)
    }

    fn shuffle_backward(&self, outer: usize, channels: usize, group: usize, inner: usize, dy: &Buf, dx: &mut Buf) -> Result<()> {
        run(self, [outer, channels, channels / group, inner], dy, dx, true)
    }
}
