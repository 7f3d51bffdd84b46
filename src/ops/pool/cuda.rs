//! Pooling on the GPU: `kernels/pool.cu`, one thread per output (forward) or input (backward).

use super::PoolKernels;
use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{ensure_len, grid_for, grid_stride, launch, Cuda};
use crate::ir::PoolGeom;
use crate::ops::Aux;
use anyhow::Result;
use cudarc::driver::CudaSlice;

pub const SOURCE: KernelSource = KernelSource {
    name: "pool.cu",
    text: include_str!("../../../kernels/pool.cu"),
    launches: &[
        // Known shortfalls (dgnam kernels): full occupancy at 256 threads allows 32 registers.
        grid_stride("max_pool_forward").below_full(6, "40 registers on sm_90, 32 on sm_80"),
        grid_stride("max_pool_backward"),
        grid_stride("ave_pool_forward"),
        grid_stride("ave_pool_backward").below_full(6, "36-37 registers"),
        grid_stride("ave_pool_forward_exclude_pad"),
        // Known shortfall: the real windows' extents on top of the padded ones (ONNX count_include_pad 0).
        grid_stride("ave_pool_backward_exclude_pad").below_full(4, "47-50 registers"),
    ],
};

type Buf = CudaSlice<f32>;

fn pool_args(g: &PoolGeom) -> [i32; 11] {
    [g.batch * g.channels, g.in_h, g.in_w, g.out_h, g.out_w, g.kernel[0], g.kernel[1], g.stride[0], g.stride[1], g.pad[0], g.pad[1]]
        .map(|v| v as i32)
}

impl PoolKernels for Cuda {
    fn max_pool_forward(&self, g: &PoolGeom, x: &Buf, y: &mut Buf, aux: &mut Aux<Self>) -> Result<()> {
        let argmax = aux.index(self, g.output_len())?;
        ensure_len(x, g.input_len(), "pooling input")?;
        ensure_len(y, g.output_len(), "pooling output")?;
        ensure_len(argmax, g.output_len().max(1), "pooling winners")?;
        let [p, h, w, oh, ow, kh, kw, sh, sw, ph, pw] = pool_args(g);
        launch!(self, SOURCE, "max_pool_forward", grid_for(g.output_len()); x, y, argmax, &p, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw)
    }

    fn max_pool_backward(&self, g: &PoolGeom, dy: &Buf, aux: &Aux<Self>, dx: &mut Buf) -> Result<()> {
        let argmax = aux.indices("max pooling")?;
        ensure_len(dx, g.input_len(), "pooling input gradient")?;
        ensure_len(dy, g.output_len(), "pooling output gradient")?;
        ensure_len(argmax, g.output_len().max(1), "pooling winners")?;
        let [p, h, w, oh, ow, kh, kw, sh, sw, ph, pw] = pool_args(g);
        launch!(self, SOURCE, "max_pool_backward", grid_for(g.input_len()); dy, argmax, dx, &p, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw)
    }

    fn ave_pool_forward(&self, g: &PoolGeom, x: &Buf, y: &mut Buf) -> Result<()> {
        ensure_len(x, g.input_len(), "pooling input")?;
        ensure_len(y, g.output_len(), "pooling output")?;
        let [p, h, w, oh, ow, kh, kw, sh, sw, ph, pw] = pool_args(g);
        let name = if g.exclude_pad { "ave_pool_forward_exclude_pad" } else { "ave_pool_forward" };
        launch!(self, SOURCE, name, grid_for(g.output_len()); x, y, &p, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw)
    }

    fn ave_pool_backward(&self, g: &PoolGeom, dy: &Buf, dx: &mut Buf) -> Result<()> {
        ensure_len(dx, g.input_len(), "pooling input gradient")?;
        ensure_len(dy, g.output_len(), "pooling output gradient")?;
        let [p, h, w, oh, ow, kh, kw, sh, sw, ph, pw] = pool_args(g);
        let name = if g.exclude_pad { "ave_pool_backward_exclude_pad" } else { "ave_pool_backward" };
        launch!(self, SOURCE, name, grid_for(g.input_len()); dy, dx, &p, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw)
    }
}
