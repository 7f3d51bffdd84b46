//! The CPU reference backend: host vectors and the kernels of `crate::ops`. Generic over
//! the scalar so gradient checks run the very same code in f64.

use super::Backend;
use crate::caffe::EltwiseOp;
use crate::graph::Op;
use crate::ops::{activation, conv, inner_product, lrn, norm, pool, shape, softmax};
use crate::real::Real;
use anyhow::{bail, Result};
use std::borrow::Cow;
use std::marker::PhantomData;

/// `'w` is the lifetime of a mapped weights file whose f32 tensors are used in place.
pub struct Cpu<'w, T: Real = f32>(PhantomData<&'w T>);

impl<T: Real> Default for Cpu<'_, T> {
    fn default() -> Self {
        Cpu(PhantomData)
    }
}

impl<'w, T: Real> Cpu<'w, T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Mapped f32 weights, borrowed (or widened for f64).
    pub fn param_from_mapped(&self, data: &'w [f32]) -> Cow<'w, [T]> {
        T::from_f32_slice(data)
    }
}

#[derive(Default)]
pub enum CpuAux<T> {
    #[default]
    None,
    Argmax(Vec<u32>),
    Scale(Vec<T>),
}

fn bias_of<'a, T>(p: &'a [Cow<'_, [T]>], has: bool) -> Option<&'a [T]>
where
    [T]: ToOwned<Owned = Vec<T>>,
{
    if has {
        Some(&p[1])
    } else {
        None
    }
}

fn check_crop(src_len: usize, s: [usize; 4], offset: [usize; 2], hw: [usize; 2], dst_len: usize) -> Result<()> {
    if offset[0] + hw[0] > s[2] || offset[1] + hw[1] > s[3] || src_len != s.iter().product::<usize>() || dst_len != s[0] * s[1] * hw[0] * hw[1] {
        bail!("crop of {}x{} at {:?} does not fit a {:?} blob", hw[0], hw[1], offset, s);
    }
    Ok(())
}

fn weight_and_bias<T>(pg: &mut [Vec<T>], bias: bool) -> (&mut [T], Option<&mut [T]>) {
    let (w, rest) = pg.split_at_mut(1);
    (&mut w[0], if bias { Some(&mut rest[0][..]) } else { None })
}

impl<'w, T: Real> Backend for Cpu<'w, T> {
    type Scalar = T;
    type Buf = Vec<T>;
    type Param = Cow<'w, [T]>;
    type Aux = CpuAux<T>;

    fn name(&self) -> String {
        "cpu".into()
    }

    fn alloc(&self, len: usize) -> Result<Vec<T>> {
        Ok(vec![T::ZERO; len])
    }

    fn zero(&self, buf: &mut Vec<T>) -> Result<()> {
        buf.iter_mut().for_each(|v| *v = T::ZERO);
        Ok(())
    }

    fn param_from_host(&self, data: &[f32]) -> Result<Cow<'w, [T]>> {
        Ok(Cow::Owned(data.iter().map(|&v| T::from_f32(v)).collect()))
    }

    fn upload(&self, buf: &mut Vec<T>, data: &[T]) -> Result<()> {
        if buf.len() != data.len() {
            bail!("upload of {} values into a buffer of {}", data.len(), buf.len());
        }
        buf.copy_from_slice(data);
        Ok(())
    }

    fn download(&self, buf: &Vec<T>) -> Result<Vec<T>> {
        Ok(buf.clone())
    }

    fn copy(&self, src: &Vec<T>, dst: &mut Vec<T>) -> Result<()> {
        dst.copy_from_slice(src);
        Ok(())
    }

    fn add_assign(&self, dst: &mut Vec<T>, src: &Vec<T>) -> Result<()> {
        dst.iter_mut().zip(src).for_each(|(a, &b)| *a += b);
        Ok(())
    }

    fn crop(&self, src: &Vec<T>, s: [usize; 4], offset: [usize; 2], hw: [usize; 2], dst: &mut Vec<T>) -> Result<()> {
        check_crop(src.len(), s, offset, hw, dst.len())?;
        for (plane, out) in src.chunks_exact(s[2] * s[3]).zip(dst.chunks_exact_mut(hw[0] * hw[1])) {
            for (y, row) in out.chunks_exact_mut(hw[1]).enumerate() {
                let start = (y + offset[0]) * s[3] + offset[1];
                row.copy_from_slice(&plane[start..start + hw[1]]);
            }
        }
        Ok(())
    }

    fn crop_backward(&self, dy: &Vec<T>, s: [usize; 4], offset: [usize; 2], hw: [usize; 2], dx: &mut Vec<T>) -> Result<()> {
        check_crop(dx.len(), s, offset, hw, dy.len())?;
        for (plane, g) in dx.chunks_exact_mut(s[2] * s[3]).zip(dy.chunks_exact(hw[0] * hw[1])) {
            for (y, row) in g.chunks_exact(hw[1]).enumerate() {
                let start = (y + offset[0]) * s[3] + offset[1];
                plane[start..start + hw[1]].iter_mut().zip(row).for_each(|(a, &b)| *a += b);
            }
        }
        Ok(())
    }

    fn mean_abs_rows(&self, x: &Vec<T>, rows: usize, cols: usize) -> Result<Vec<T>> {
        if x.len() != rows * cols || cols == 0 {
            bail!("mean_abs_rows: {} values are not {rows} rows of {cols}", x.len());
        }
        // Accumulate in f64: a 4096-wide row of small gradients loses digits in f32.
        Ok(x.chunks_exact(cols).map(|r| T::from_f64(r.iter().map(|v| v.abs().to_f64()).sum::<f64>() / cols as f64)).collect())
    }

    fn dgn_update(
        &self,
        code: &mut Vec<T>,
        grad: &Vec<T>,
        rows: usize,
        cols: usize,
        scale: &[Option<T>],
        upper: Option<&Vec<T>>,
        decay: T,
    ) -> Result<()> {
        if code.len() != rows * cols || grad.len() != code.len() || scale.len() != rows || upper.is_some_and(|u| u.len() != cols) {
            bail!("dgn_update: code, gradient, scales and bounds disagree on {rows}x{cols}");
        }
        let decays = decay > T::ZERO && decay < T::ONE;
        for ((c, g), s) in code.chunks_exact_mut(cols).zip(grad.chunks_exact(cols)).zip(scale) {
            let Some(s) = *s else { continue };
            for (j, (c, &g)) in c.iter_mut().zip(g).enumerate() {
                let mut v = *c + s * g;
                if let Some(u) = upper {
                    v = v.max(T::ZERO).min(u[j]);
                }
                *c = if decays { v * decay } else { v };
            }
        }
        Ok(())
    }

    fn forward(&self, op: &Op, p: &[Cow<'w, [T]>], x: &[&Vec<T>], y: &mut [Vec<T>], aux: &mut CpuAux<T>) -> Result<()> {
        match op {
            Op::Conv { geom, bias } => conv::conv_forward(geom, x[0], &p[0], bias_of(p, *bias), &mut y[0]),
            Op::Deconv { geom, bias } => conv::deconv_forward(geom, x[0], &p[0], bias_of(p, *bias), &mut y[0]),
            Op::InnerProduct { rows, k, n, bias } => {
                inner_product::inner_product_forward(*rows, *k, *n, x[0], &p[0], bias_of(p, *bias), &mut y[0])
            }
            Op::Relu { slope } => activation::relu_forward(T::from_f32(*slope), x[0], &mut y[0]),
            Op::Copy => y.iter_mut().for_each(|t| t.copy_from_slice(x[0])),
            Op::MaxPool(g) => {
                if !matches!(aux, CpuAux::Argmax(a) if a.len() == g.output_len()) {
                    *aux = CpuAux::Argmax(vec![0; g.output_len()]);
                }
                if let CpuAux::Argmax(a) = aux {
                    pool::max_pool_forward(g, x[0], &mut y[0], a);
                }
            }
            Op::AvePool(g) => pool::ave_pool_forward(g, x[0], &mut y[0]),
            Op::Lrn { dims, param } => {
                if !matches!(aux, CpuAux::Scale(s) if s.len() == x[0].len()) {
                    *aux = CpuAux::Scale(vec![T::ZERO; x[0].len()]);
                }
                if let CpuAux::Scale(s) = aux {
                    lrn::lrn_forward(*dims, param, x[0], &mut y[0], s);
                }
            }
            Op::Softmax { outer, channels, inner } => softmax::softmax_forward(*outer, *channels, *inner, x[0], &mut y[0]),
            Op::Concat { outer, inner, channels } => {
                let xs: Vec<&[T]> = x.iter().map(|v| v.as_slice()).collect();
                shape::concat_forward(*outer, *inner, channels, &xs, &mut y[0])
            }
            Op::Eltwise { op, coeffs } => {
                let coeffs: Vec<T> = coeffs.iter().map(|&c| T::from_f32(c)).collect();
                let need = if *op == EltwiseOp::Max { x[0].len() } else { 0 };
                if !matches!(aux, CpuAux::Argmax(a) if a.len() == need) {
                    *aux = CpuAux::Argmax(vec![0; need]);
                }
                if let CpuAux::Argmax(a) = aux {
                    let xs: Vec<&[T]> = x.iter().map(|v| v.as_slice()).collect();
                    shape::eltwise_forward(*op, &coeffs, &xs, &mut y[0], a);
                }
            }
            Op::BatchNorm { outer, channels, inner, eps } => norm::batch_norm_forward(
                *outer, *channels, *inner, &p[0], &p[1], p[2][0], T::from_f32(*eps), x[0], &mut y[0],
            ),
            Op::Scale { outer, channels, inner, bias } => {
                norm::scale_forward(*outer, *channels, *inner, x[0], &p[0], bias_of(p, *bias), &mut y[0])
            }
        }
        Ok(())
    }

    fn backward(
        &self,
        op: &Op,
        p: &[Cow<'w, [T]>],
        x: &[&Vec<T>],
        y: &Vec<T>,
        dy: &Vec<T>,
        aux: &CpuAux<T>,
        dx: &mut [Vec<T>],
        dparams: Option<&mut [Vec<T>]>,
    ) -> Result<()> {
        let data = !dx.is_empty();
        match op {
            Op::Conv { geom, bias } => {
                if data {
                    conv::conv_backward_data(geom, dy, &p[0], &mut dx[0]);
                }
                if let Some(pg) = dparams {
                    let (dw, db) = weight_and_bias(pg, *bias);
                    conv::conv_backward_weights(geom, x[0], dy, dw, db);
                }
            }
            Op::Deconv { geom, bias } => {
                if data {
                    conv::deconv_backward_data(geom, dy, &p[0], &mut dx[0]);
                }
                if let Some(pg) = dparams {
                    let (dw, db) = weight_and_bias(pg, *bias);
                    conv::deconv_backward_weights(geom, x[0], dy, dw, db);
                }
            }
            Op::InnerProduct { rows, k, n, bias } => {
                if data {
                    inner_product::inner_product_backward_data(*rows, *k, *n, dy, &p[0], &mut dx[0]);
                }
                if let Some(pg) = dparams {
                    let (dw, db) = weight_and_bias(pg, *bias);
                    inner_product::inner_product_backward_weights(*rows, *k, *n, x[0], dy, dw, db);
                }
            }
            Op::BatchNorm { outer, channels, inner, eps } => {
                let eps = T::from_f32(*eps);
                if data {
                    norm::batch_norm_backward_data(*outer, *channels, *inner, &p[1], p[2][0], eps, dy, &mut dx[0]);
                }
                if let Some(pg) = dparams {
                    let (dmean, rest) = pg.split_at_mut(1);
                    norm::batch_norm_backward_weights(
                        *outer, *channels, *inner, &p[0], &p[1], p[2][0], eps, x[0], dy, &mut dmean[0], &mut rest[0],
                    );
                }
            }
            Op::Scale { outer, channels, inner, bias } => {
                if data {
                    norm::scale_backward_data(*outer, *channels, *inner, &p[0], dy, &mut dx[0]);
                }
                if let Some(pg) = dparams {
                    let (dw, db) = weight_and_bias(pg, *bias);
                    norm::scale_backward_weights(*outer, *channels, *inner, x[0], dy, dw, db);
                }
            }
            // The rest have no parameters: only a data gradient to skip.
            _ if !data => {}
            Op::Relu { slope } => activation::relu_backward(T::from_f32(*slope), x[0], dy, &mut dx[0]),
            Op::Copy => bail!("Copy nodes are handled by the graph"),
            Op::MaxPool(g) => match aux {
                CpuAux::Argmax(a) => pool::max_pool_backward(g, dy, a, &mut dx[0]),
                _ => bail!("max pooling backward without a forward pass"),
            },
            Op::AvePool(g) => pool::ave_pool_backward(g, dy, &mut dx[0]),
            Op::Lrn { dims, param } => match aux {
                CpuAux::Scale(s) => lrn::lrn_backward(*dims, param, x[0], y, s, dy, &mut dx[0]),
                _ => bail!("LRN backward without a forward pass"),
            },
            Op::Softmax { outer, channels, inner } => softmax::softmax_backward(*outer, *channels, *inner, y, dy, &mut dx[0]),
            Op::Concat { outer, inner, channels } => {
                let mut refs: Vec<&mut [T]> = dx.iter_mut().map(|v| v.as_mut_slice()).collect();
                shape::concat_backward(*outer, *inner, channels, dy, &mut refs);
            }
            Op::Eltwise { op, coeffs } => {
                let coeffs: Vec<T> = coeffs.iter().map(|&c| T::from_f32(c)).collect();
                let argmax: &[u32] = match aux {
                    CpuAux::Argmax(a) => a,
                    _ => &[],
                };
                let xs: Vec<&[T]> = x.iter().map(|v| v.as_slice()).collect();
                let mut refs: Vec<&mut [T]> = dx.iter_mut().map(|v| v.as_mut_slice()).collect();
                shape::eltwise_backward(*op, &coeffs, &xs, argmax, dy, &mut refs);
            }
        }
        Ok(())
    }
}
