//! Concat and Slice on the GPU: `kernels/concat.cu`, one strided copy per part.

use super::ConcatKernels;
use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{ensure_len, grid_for, grid_stride, launch, Cuda};
use anyhow::Result;
use cudarc::driver::CudaSlice;

pub const SOURCE: KernelSource =
    KernelSource { name: "concat.cu", text: include_str!("../../../kernels/concat.cu"), launches: &[grid_stride("concat_copy")] };

type Buf = CudaSlice<f32>;

impl ConcatKernels for Cuda {
    fn concat_forward(&self, outer: usize, inner: usize, channels: &[usize], x: &[&Buf], y: &mut Buf) -> Result<()> {
        let row = channels.iter().sum::<usize>() * inner;
        ensure_len(y, outer * row, "concatenation")?;
        let mut start = 0;
        for (part, &c) in x.iter().zip(channels) {
            let block = c * inner;
            ensure_len(part, outer * block, "concatenated input")?;
            if !part.is_empty() {
                launch!(self, SOURCE, "concat_copy", grid_for(part.len());
                    &mut *y, *part, &(part.len() as i64), &(block as i64), &(row as i64), &(start as i64), &0i32)?;
            }
            start += block;
        }
        Ok(())
    }

    fn concat_backward(&self, outer: usize, inner: usize, channels: &[usize], dy: &Buf, dx: &mut [Buf]) -> Result<()> {
        let row = channels.iter().sum::<usize>() * inner;
        ensure_len(dy, outer * row, "concatenation gradient")?;
        let mut start = 0;
        for (part, &c) in dx.iter_mut().zip(channels) {
            let block = c * inner;
            ensure_len(part, outer * block, "concatenated input gradient")?;
            if !part.is_empty() {
                let n = part.len();
                launch!(self, SOURCE, "concat_copy", grid_for(n);
                    dy, &mut *part, &(n as i64), &(block as i64), &(row as i64), &(start as i64), &1i32)?;
            }
            start += block;
        }
        Ok(())
    }

    fn slice_forward(&self, outer: usize, inner: usize, channels: &[usize], x: &Buf, y: &mut [Buf]) -> Result<()> {
        let row = channels.iter().sum::<usize>() * inner;
        ensure_len(x, outer * row, "sliced input")?;
        let mut start = 0;
        for (part, &c) in y.iter_mut().zip(channels) {
            let block = c * inner;
            ensure_len(part, outer * block, "slice")?;
            if !part.is_empty() {
                let n = part.len();
                launch!(self, SOURCE, "concat_copy", grid_for(n);
                    x, &mut *part, &(n as i64), &(block as i64), &(row as i64), &(start as i64), &2i32)?;
            }
            start += block;
        }
        Ok(())
    }

    fn slice_backward(&self, outer: usize, inner: usize, channels: &[usize], dy: &[&Buf], dx: &mut Buf) -> Result<()> {
        let row = channels.iter().sum::<usize>() * inner;
        ensure_len(dx, outer * row, "sliced input gradient")?;
        let mut start = 0;
        for (part, &c) in dy.iter().zip(channels) {
            let block = c * inner;
            ensure_len(part, outer * block, "slice gradient")?;
            if !part.is_empty() {
                launch!(self, SOURCE, "concat_copy", grid_for(part.len());
                    &mut *dx, *part, &(part.len() as i64), &(block as i64), &(row as i64), &(start as i64), &3i32)?;
            }
            start += block;
        }
        Ok(())
    }
}
