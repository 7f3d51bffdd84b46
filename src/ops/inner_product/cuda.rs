//! Inner product on the GPU: one SGEMM (`ops::gemm`) per pass, plus the bias.

use super::InnerProductKernels;
use crate::device::cuda::Cuda;
use crate::ops::gemm::cuda::{Gemm, Operand};
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

type Buf = CudaSlice<f32>;

impl InnerProductKernels for Cuda {
    fn inner_product_forward(&self, rows: usize, k: usize, n: usize, x: &Buf, w: &Buf, bias: Option<&Buf>, y: &mut Buf) -> Result<()> {
        self.inner_product(rows, k, n, x, w, y)?;
        match bias {
            Some(b) => self.bias_add(y, b, n, 1),
            None => Ok(()),
        }
    }

    fn inner_product_backward_data(&self, rows: usize, k: usize, n: usize, dy: &Buf, w: &Buf, dx: &mut Buf) -> Result<()> {
        self.inner_product_data_grad(rows, k, n, dy, w, dx)
    }

    fn inner_product_backward_weights(
        &self,
        rows: usize,
        k: usize,
        n: usize,
        x: &Buf,
        dy: &Buf,
        dw: &mut Buf,
        db: Option<&mut Buf>,
    ) -> Result<()> {
        self.inner_product_weight_grad(rows, k, n, x, dy, dw)?;
        match db {
            Some(db) => self.channel_sums(dy, None, db, rows, n, 1),
            None => Ok(()),
        }
    }
}

impl Cuda {
    /// y = x w^T (+ beta y); x [rows, k], w [n, k], y [rows, n].
    fn inner_product(&self, rows: usize, k: usize, n: usize, x: &CudaSlice<f32>, w: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
        check_ip(rows, k, n, x.len(), w.len(), y.len())?;
        let spec = Gemm { m: rows, n, k, alpha: 1.0, beta: 0.0, batch: 1, zdiv: 1 };
        self.gemm(
            &spec,
            (&x.as_view(), Operand::new(k, false, [0, 0])),
            (&w.as_view(), Operand::new(k, true, [0, 0])),
            (&mut y.as_view_mut(), Operand::new(n, false, [0, 0])),
        )
    }

    /// dx += dy w
    fn inner_product_data_grad(
        &self,
        rows: usize,
        k: usize,
        n: usize,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        dx: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_ip(rows, k, n, dx.len(), w.len(), dy.len())?;
        let spec = Gemm { m: rows, n: k, k: n, alpha: 1.0, beta: 1.0, batch: 1, zdiv: 1 };
        self.gemm(
            &spec,
            (&dy.as_view(), Operand::new(n, false, [0, 0])),
            (&w.as_view(), Operand::new(k, false, [0, 0])),
            (&mut dx.as_view_mut(), Operand::new(k, false, [0, 0])),
        )
    }

    /// dw += dy^T x
    fn inner_product_weight_grad(
        &self,
        rows: usize,
        k: usize,
        n: usize,
        x: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        dw: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_ip(rows, k, n, x.len(), dw.len(), dy.len())?;
        let spec = Gemm { m: n, n: k, k: rows, alpha: 1.0, beta: 1.0, batch: 1, zdiv: 1 };
        self.gemm(
            &spec,
            (&dy.as_view(), Operand::new(n, true, [0, 0])),
            (&x.as_view(), Operand::new(k, false, [0, 0])),
            (&mut dw.as_view_mut(), Operand::new(k, false, [0, 0])),
        )
    }
}

fn check_ip(rows: usize, k: usize, n: usize, x: usize, w: usize, y: usize) -> Result<()> {
    if x != rows * k || w != n * k || y != rows * n {
        bail!("inner product buffers of {x}, {w} and {y} values do not fit {rows} x {k} -> {n}");
    }
    Ok(())
}
