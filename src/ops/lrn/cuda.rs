//! LRN on the GPU: `kernels/lrn.cu`, one thread per element.

use super::LrnKernels;
use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{ensure_len, grid_for, grid_stride, launch, Cuda};
use crate::ir::{LrnParam, LrnRegion};
use crate::ops::Aux;
use anyhow::Result;
use cudarc::driver::CudaSlice;

pub const SOURCE: KernelSource = KernelSource {
    name: "lrn.cu",
    text: include_str!("../../../kernels/lrn.cu"),
    launches: &[
        // Known shortfalls (dgnam kernels): full occupancy at 256 threads allows 32 registers.
        grid_stride("lrn_forward").below_full(6, "39 registers on sm_80, 32 on sm_90"),
        grid_stride("lrn_backward").below_full(5, "46 registers"),
    ],
};

type Buf = CudaSlice<f32>;

/// LRN constants: (scale's additive constant, window-sum multiplier, backward coefficient).
fn lrn_constants(p: &LrnParam) -> (f32, f32, f32) {
    let n = p.local_size as f32;
    let big_n = match p.region {
        LrnRegion::AcrossChannels => n,
        LrnRegion::WithinChannel => n * n,
    };
    let add = match p.region {
        LrnRegion::AcrossChannels => p.k,
        LrnRegion::WithinChannel => 1.0,
    };
    (add, p.alpha / big_n, 2.0 * p.alpha * p.beta / big_n)
}

impl LrnKernels for Cuda {
    fn lrn_forward(&self, dims: [usize; 4], p: &LrnParam, x: &Buf, y: &mut Buf, aux: &mut Aux<Self>) -> Result<()> {
        let n: usize = dims.iter().product();
        let scale = aux.buf(self, n)?;
        for (b, what) in [(x, "LRN input"), (&*y, "LRN output"), (&*scale, "LRN scale")] {
            ensure_len(b, n, what)?;
        }
        let (add, mul, _) = lrn_constants(p);
        let within = matches!(p.region, LrnRegion::WithinChannel) as i32;
        let [_, c, h, w] = dims.map(|v| v as i32);
        let half = ((p.local_size.max(1) - 1) / 2) as i32;
        launch!(self, SOURCE, "lrn_forward", grid_for(n); x, y, scale, &(n as i64), &c, &h, &w, &half, &within, &add, &mul, &p.beta)
    }

    fn lrn_backward(&self, dims: [usize; 4], p: &LrnParam, x: &Buf, y: &Buf, aux: &Aux<Self>, dy: &Buf, dx: &mut Buf) -> Result<()> {
        let n: usize = dims.iter().product();
        let scale = aux.values("LRN")?;
        for (b, what) in
            [(x, "LRN input"), (y, "LRN output"), (scale, "LRN scale"), (dy, "LRN output gradient"), (&*dx, "LRN input gradient")]
        {
            ensure_len(b, n, what)?;
        }
        let (_, _, coef) = lrn_constants(p);
        let within = matches!(p.region, LrnRegion::WithinChannel) as i32;
        let [_, c, h, w] = dims.map(|v| v as i32);
        let half = ((p.local_size.max(1) - 1) / 2) as i32;
        launch!(self, SOURCE, "lrn_backward", grid_for(n); x, y, scale, dy, dx, &(n as i64), &c, &h, &w, &half, &within, &p.beta, &coef)
    }
}
