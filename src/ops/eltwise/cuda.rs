//! Eltwise on the GPU: SUM and PROD from `axpby` and `mul_assign`, MAX from
//! `kernels/eltwise.cu`.

use super::EltwiseKernels;
use crate::device::cuda::compile::KernelSource;
use crate::device::cuda::{ensure_len, grid_for, grid_stride, launch, Cuda};
use crate::ir::EltwiseOp;
use crate::ops::Aux;
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

pub const SOURCE: KernelSource = KernelSource {
    name: "eltwise.cu",
    text: include_str!("../../../kernels/eltwise.cu"),
    launches: &[grid_stride("eltwise_max_first"), grid_stride("eltwise_max_next"), grid_stride("eltwise_max_backward")],
};

type Buf = CudaSlice<f32>;

impl EltwiseKernels for Cuda {
    fn eltwise_forward(&self, op: EltwiseOp, coeffs: &[f32], x: &[&Buf], y: &mut Buf, aux: &mut Aux<Self>) -> Result<()> {
        let coeff = |i: usize| if coeffs.is_empty() { 1.0 } else { coeffs[i] };
        for xi in x {
            ensure_len(xi, y.len(), "Eltwise input")?;
        }
        match op {
            EltwiseOp::Sum => {
                for (i, xi) in x.iter().enumerate() {
                    self.axpby(coeff(i), xi, if i == 0 { 0.0 } else { 1.0 }, y)?;
                }
            }
            EltwiseOp::Prod => {
                self.axpby(1.0, x[0], 0.0, y)?;
                for xi in &x[1..] {
                    self.mul_assign(xi, y)?;
                }
            }
            EltwiseOp::Max => {
                if x.len() < 2 {
                    bail!("Eltwise MAX needs at least two inputs");
                }
                let n = y.len();
                let a = aux.index(self, n)?;
                launch!(self, SOURCE, "eltwise_max_first", grid_for(n); x[0], x[1], &mut *y, &mut *a, &(n as i64))?;
                for (i, xi) in x.iter().enumerate().skip(2) {
                    launch!(self, SOURCE, "eltwise_max_next", grid_for(n); *xi, &mut *y, &mut *a, &(n as i64), &(i as u32))?;
                }
            }
        }
        Ok(())
    }

    fn eltwise_backward(&self, op: EltwiseOp, coeffs: &[f32], x: &[&Buf], aux: &Aux<Self>, dy: &Buf, dx: &mut [Buf]) -> Result<()> {
        let n = dy.len();
        for d in dx.iter() {
            ensure_len(d, n, "Eltwise input gradient")?;
        }
        match op {
            EltwiseOp::Sum => {
                for (i, d) in dx.iter_mut().enumerate() {
                    self.axpby(if coeffs.is_empty() { 1.0 } else { coeffs[i] }, dy, 1.0, d)?;
                }
            }
            EltwiseOp::Prod => {
                // dx_i += dy * prod_{j != i} x_j, built in a scratch blob (exact for zero inputs).
                let mut tmp = self.scratch(&self.scratch.tmp, n)?;
                let mut t = tmp.slice_mut(..n);
                let elementwise = crate::ops::elementwise::cuda::SOURCE;
                for (i, d) in dx.iter_mut().enumerate() {
                    launch!(self, elementwise, "axpby", grid_for(n); dy, &mut t, &(n as i64), &1.0f32, &0.0f32)?;
                    for (j, xj) in x.iter().enumerate() {
                        if j != i {
                            ensure_len(xj, n, "Eltwise input")?;
                            launch!(self, elementwise, "mul_assign", grid_for(n); *xj, &mut t, &(n as i64))?;
                        }
                    }
                    launch!(self, elementwise, "axpby", grid_for(n); &t.as_view(), d, &(n as i64), &1.0f32, &1.0f32)?;
                }
            }
            EltwiseOp::Max => {
                let a = aux.indices("Eltwise MAX")?;
                ensure_len(a, n.max(1), "Eltwise winners")?;
                for (i, d) in dx.iter_mut().enumerate() {
                    launch!(self, SOURCE, "eltwise_max_backward", grid_for(n); dy, a, d, &(n as i64), &(i as u32))?;
                }
            }
        }
        Ok(())
    }
}
