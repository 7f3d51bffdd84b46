//! Padding on the GPU: `kernels/pad.cu`.

use super::PadKernels;
use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{ensure_len, grid_for, grid_stride, launch, Cuda};
use crate::ir::PadGeom;
use anyhow::Result;
use cudarc::driver::CudaSlice;

pub const SOURCE: KernelSource = KernelSource {
    name: "pad.cu",
    text: include_str!("../../../kernels/pad.cu"),
    launches: &[
        grid_stride("pad_forward"),
        // Known shortfall (dgnam kernels): 34 registers on sm_80 where full occupancy allows 32.
        grid_stride("pad_backward").below_full(6, "34 registers on sm_80, 32 on sm_90"),
    ],
};

type Buf = CudaSlice<f32>;

/// The sizes every launch passes: in_h, in_w, out_h, out_w, top, left.
fn sizes(g: &PadGeom) -> [i32; 6] {
    [g.in_h() as i64, g.in_w() as i64, g.out_h() as i64, g.out_w() as i64, g.before[0], g.before[1]].map(|v| v as i32)
}

impl PadKernels for Cuda {
    fn pad_forward(&self, g: &PadGeom, x: &Buf, y: &mut Buf) -> Result<()> {
        ensure_len(x, g.planes() * g.in_h() * g.in_w(), "Pad input")?;
        let n = g.planes() * g.out_h() * g.out_w();
        ensure_len(y, n, "Pad output")?;
        let [h, w, oh, ow, top, left] = sizes(g);
        launch!(self, SOURCE, "pad_forward", grid_for(n); x, y, &(n as i64), &h, &w, &oh, &ow, &top, &left, &g.value)
    }

    fn pad_backward(&self, g: &PadGeom, dy: &Buf, dx: &mut Buf) -> Result<()> {
        ensure_len(dy, g.planes() * g.out_h() * g.out_w(), "Pad output gradient")?;
        let n = g.planes() * g.in_h() * g.in_w();
        ensure_len(dx, n, "Pad input gradient")?;
        let [h, w, oh, ow, top, left] = sizes(g);
        launch!(self, SOURCE, "pad_backward", grid_for(n); dy, dx, &(n as i64), &h, &w, &oh, &ow, &top, &left)
    }
}
