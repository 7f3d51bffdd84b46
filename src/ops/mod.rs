//! The ops, one folder per op family. Each folder holds the family's kernel trait (what a
//! device must provide to run it), its CPU reference (`cpu.rs`, generic over the scalar so
//! gradient checks run it in f64), its CUDA launcher (`cuda.rs`, over `kernels/<op>.cu`) and
//! its tests. Geometries and parameters come from `crate::ir`; buffers from `crate::device`.
//!
//! [`forward`] and [`backward`] are the one dispatch of a node's [`Op`] to its family, for
//! every device. Conventions: NCHW row-major buffers; forward overwrites its outputs;
//! backward ADDS into the gradients it produces (a blob read by several layers sums them),
//! except where [`backward_into`] is told a gradient is [`Dx::Overwrite`].

pub mod activation;
pub mod cases;
pub mod concat;
pub mod conv;
pub mod elementwise;
pub mod eltwise;
pub mod gemm;
pub mod inner_product;
pub mod lrn;
pub mod norm;
pub mod pad;
pub mod pool;
pub mod shuffle;
pub mod softmax;

pub mod gradcheck;

use crate::device::cuda::compile::KernelSource;
use crate::device::Backend;
use crate::ir::Op;
use activation::ActivationKernels;
use anyhow::{bail, ensure, Context, Result};
use concat::ConcatKernels;
use conv::{ConvKernels, FusedRelu};
use elementwise::ElementwiseKernels;
use eltwise::EltwiseKernels;
use inner_product::InnerProductKernels;
use lrn::LrnKernels;
use norm::NormKernels;
use pad::PadKernels;
use pool::PoolKernels;
use shuffle::ShuffleKernels;
use softmax::SoftmaxKernels;

/// Every kernel source the ops launch, for `dgnam kernels` and the compile checks.
pub const KERNEL_SOURCES: &[KernelSource] = &[
    gemm::cuda::SOURCE,
    conv::cuda::SOURCE,
    elementwise::cuda::SOURCE,
    activation::cuda::SOURCE,
    pool::cuda::SOURCE,
    lrn::cuda::SOURCE,
    softmax::cuda::SOURCE,
    concat::cuda::SOURCE,
    eltwise::cuda::SOURCE,
    norm::cuda::SOURCE,
    pad::cuda::SOURCE,
    shuffle::cuda::SOURCE,
];

/// What a node's backward needs from its forward (max-pool winners, LRN scales), kept across
/// passes so steady state allocates nothing.
pub enum Aux<B: Backend> {
    None,
    Index(B::Index),
    Buf(B::Buf),
}

// Written out: a derive would ask `B: Default`.
#[allow(clippy::derivable_impls)]
impl<B: Backend> Default for Aux<B> {
    fn default() -> Self {
        Aux::None
    }
}

impl<B: Backend> Aux<B> {
    /// An index buffer of `len`, allocated on the first pass and reused afterwards.
    pub fn index(&mut self, dev: &B, len: usize) -> Result<&mut B::Index> {
        if !matches!(self, Aux::Index(a) if dev.index_len(a) == len.max(1)) {
            *self = Aux::Index(dev.alloc_index(len)?);
        }
        match self {
            Aux::Index(a) => Ok(a),
            _ => unreachable!("just set"),
        }
    }

    /// A scalar buffer of `len`, allocated on the first pass and reused afterwards.
    pub fn buf(&mut self, dev: &B, len: usize) -> Result<&mut B::Buf> {
        if !matches!(self, Aux::Buf(a) if dev.len(a) == len) {
            *self = Aux::Buf(dev.alloc(len)?);
        }
        match self {
            Aux::Buf(a) => Ok(a),
            _ => unreachable!("just set"),
        }
    }

    /// The index buffer the forward pass left, or an error naming `what`.
    pub fn indices(&self, what: &str) -> Result<&B::Index> {
        match self {
            Aux::Index(a) => Ok(a),
            _ => bail!("{what} backward without a forward pass"),
        }
    }

    /// The scalar buffer the forward pass left, or an error naming `what`.
    pub fn values(&self, what: &str) -> Result<&B::Buf> {
        match self {
            Aux::Buf(a) => Ok(a),
            _ => bail!("{what} backward without a forward pass"),
        }
    }
}

/// A device that runs every op.
pub trait Kernels:
    Backend
    + ElementwiseKernels
    + ActivationKernels
    + ConvKernels
    + InnerProductKernels
    + PoolKernels
    + LrnKernels
    + SoftmaxKernels
    + ConcatKernels
    + EltwiseKernels
    + NormKernels
    + PadKernels
    + ShuffleKernels
{
}

impl<B> Kernels for B where
    B: Backend
        + ElementwiseKernels
        + ActivationKernels
        + ConvKernels
        + InnerProductKernels
        + PoolKernels
        + LrnKernels
        + SoftmaxKernels
        + ConcatKernels
        + EltwiseKernels
        + NormKernels
        + PadKernels
        + ShuffleKernels
{
}

fn bias_of<P>(p: &[P], has: bool) -> Option<&P> {
    if has {
        Some(&p[1])
    } else {
        None
    }
}

fn weight_and_bias<G>(pg: &mut [G], bias: bool) -> (&mut G, Option<&mut G>) {
    let (w, rest) = pg.split_at_mut(1);
    (&mut w[0], if bias { Some(&mut rest[0]) } else { None })
}

/// Runs `op` forward: `y` are the node's tops (overwritten).
pub fn forward<B: Kernels>(dev: &B, op: &Op, p: &[B::Param], x: &[&B::Buf], y: &mut [B::Buf], aux: &mut Aux<B>) -> Result<()> {
    match op {
        Op::Conv { geom, bias, relu } => dev.conv_forward(geom, x[0], &p[0], bias_of(p, *bias), *relu, &mut y[0]),
        Op::Deconv { geom, bias, relu } => dev.deconv_forward(geom, x[0], &p[0], bias_of(p, *bias), *relu, &mut y[0]),
        Op::InnerProduct { rows, k, n, bias } => dev.inner_product_forward(*rows, *k, *n, x[0], &p[0], bias_of(p, *bias), &mut y[0]),
        Op::Relu { slope } => dev.relu_forward(*slope, x[0], &mut y[0]),
        Op::Activation(f) => dev.activation_forward(*f, x[0], &mut y[0]),
        Op::Silu => dev.silu_forward(x[0], &mut y[0]),
        Op::Copy => y.iter_mut().try_for_each(|t| dev.copy(x[0], t)),
        Op::MaxPool(g) => dev.max_pool_forward(g, x[0], &mut y[0], aux),
        Op::AvePool(g) => dev.ave_pool_forward(g, x[0], &mut y[0]),
        Op::Pad(g) => dev.pad_forward(g, x[0], &mut y[0]),
        Op::ShuffleChannel { outer, channels, group, inner } => dev.shuffle_forward(*outer, *channels, *group, *inner, x[0], &mut y[0]),
        Op::Lrn { dims, param } => dev.lrn_forward(*dims, param, x[0], &mut y[0], aux),
        Op::Softmax { outer, channels, inner } => dev.softmax_forward(*outer, *channels, *inner, x[0], &mut y[0]),
        Op::Concat { outer, inner, channels } => dev.concat_forward(*outer, *inner, channels, x, &mut y[0]),
        Op::Slice { outer, inner, channels } => dev.slice_forward(*outer, *inner, channels, x[0], y),
        Op::Eltwise { op, coeffs } => dev.eltwise_forward(*op, coeffs, x, &mut y[0], aux),
        Op::BatchNorm { outer, channels, inner, eps } => dev.batch_norm_forward(*outer, *channels, *inner, *eps, p, x[0], &mut y[0]),
        Op::Scale { outer, channels, inner, bias } => {
            dev.scale_forward(*outer, *channels, *inner, x[0], &p[0], bias_of(p, *bias), &mut y[0])
        }
        Op::ScaleByBlob { outer, channels, inner } => dev.scale_by_blob_forward(*outer, *channels, *inner, x[0], x[1], &mut y[0]),
    }
}

/// Back-propagates through `op`: ADDS into `dx` (one per bottom) and, when given, into the
/// parameter gradients `dparams` (one per parameter). `dy` holds one gradient per top (only
/// a Slice has more than one); `y` is the first top's value. An empty `dx` skips the data gradient
/// (only the weight gradients are computed; benchmarks time the two apart).
#[allow(clippy::too_many_arguments)]
pub fn backward<B: Kernels>(
    dev: &B,
    op: &Op,
    p: &[B::Param],
    x: &[&B::Buf],
    y: &B::Buf,
    dy: &[&B::Buf],
    aux: &Aux<B>,
    dx: &mut [B::Buf],
    dparams: Option<&mut [B::Buf]>,
) -> Result<()> {
    let add = vec![Dx::Add; dx.len()];
    backward_into(dev, op, p, x, y, dy, aux, dx, &add, dparams)
}

/// What a backward pass does with one of the data gradients it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dx {
    /// Adds into what the buffer holds (another layer reading the same blob wrote there first).
    Add,
    /// Overwrites the buffer, whatever it holds: the first layer of a pass to reach the blob.
    /// Saves zeroing the buffer and reading it back; the values are those of `Add` on a
    /// zeroed buffer, up to the sign of zeros.
    Overwrite,
}

impl Dx {
    /// Zeroes `buf` when it is to be overwritten: what a kernel that can only add needs
    /// first (each op trait's default `_into` method, and the dispatch for the rest).
    pub fn clear<B: Backend + ?Sized>(self, dev: &B, buf: &mut B::Buf) -> Result<()> {
        if self == Dx::Overwrite {
            dev.zero(buf)?;
        }
        Ok(())
    }
}

/// `backward` with each data gradient `dx[i]` written as `to[i]` says. Kernels that can
/// overwrite do; for the rest, the buffers to overwrite are zeroed first.
#[allow(clippy::too_many_arguments)]
pub fn backward_into<B: Kernels>(
    dev: &B,
    op: &Op,
    p: &[B::Param],
    x: &[&B::Buf],
    y: &B::Buf,
    dy: &[&B::Buf],
    aux: &Aux<B>,
    dx: &mut [B::Buf],
    to: &[Dx],
    dparams: Option<&mut [B::Buf]>,
) -> Result<()> {
    ensure!(to.len() == dx.len(), "{} data gradients, {} ways to write them", dx.len(), to.len());
    backward_once(dev, op, p, x, y, dy, aux, dx, to, dparams)?;
    if !dx.is_empty() && wrong_backward_for_tests(op) {
        let add = vec![Dx::Add; dx.len()];
        backward_once(dev, op, p, x, y, dy, aux, dx, &add, None)?;
    }
    Ok(())
}

/// TEST ONLY: `DGNAM_TEST_WRONG_BACKWARD=<Op::name>` (e.g. `Lrn`) makes that op's data
/// gradient come out twice over, a deliberately wrong gradient that `dgnam gradcheck` must
/// catch (tests/gradcheck.rs). Read once per process; checked once per node, never per element.
fn wrong_backward_for_tests(op: &Op) -> bool {
    static WRONG: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    WRONG.get_or_init(|| std::env::var("DGNAM_TEST_WRONG_BACKWARD").ok()).as_deref() == Some(op.name())
}

/// For the weight gradients of a layer with a fused ReLU, which no kernel masks itself: the
/// output gradient as the ReLU's own backward pass would have left it, in a fresh buffer
/// (`y`, the output after the ReLU, has the input's signs since the slope is at least 0).
/// None where no ReLU is fused.
fn masked_for_weights<B: Kernels>(dev: &B, relu: Option<f32>, y: &B::Buf, dy: &B::Buf) -> Result<Option<B::Buf>> {
    let Some(slope) = relu else { return Ok(None) };
    let mut masked = dev.alloc(dev.len(dy))?;
    dev.relu_backward(slope, y, dy, &mut masked)?;
    Ok(Some(masked))
}

#[allow(clippy::too_many_arguments)]
fn backward_once<B: Kernels>(
    dev: &B,
    op: &Op,
    p: &[B::Param],
    x: &[&B::Buf],
    y: &B::Buf,
    dy: &[&B::Buf],
    aux: &Aux<B>,
    dx: &mut [B::Buf],
    to: &[Dx],
    dparams: Option<&mut [B::Buf]>,
) -> Result<()> {
    let data = !dx.is_empty();
    let dys = dy;
    let dy = *dys.first().context("no top gradient")?;
    let all_overwrite = to.iter().all(|&t| t == Dx::Overwrite);
    // The kernels that can overwrite their gradient; the rest get zeroed buffers to add into.
    let overwrites = match op {
        Op::Conv { .. } | Op::Deconv { .. } | Op::Scale { .. } | Op::Relu { .. } => true,
        Op::Activation(_) | Op::Silu | Op::Eltwise { .. } | Op::ScaleByBlob { .. } | Op::AvePool(_) => true,
        Op::Concat { .. } => all_overwrite,
        _ => false,
    };
    if !overwrites {
        dx.iter_mut().zip(to).try_for_each(|(d, t)| t.clear(dev, d))?;
    }
    match op {
        Op::Conv { geom, bias, relu } => {
            if data {
                dev.conv_backward_data_into(geom, dy, &p[0], relu.map(|slope| FusedRelu { slope, y }), &mut dx[0], to[0])?;
            }
            if let Some(pg) = dparams {
                let (dw, db) = weight_and_bias(pg, *bias);
                let masked = masked_for_weights(dev, *relu, y, dy)?;
                dev.conv_backward_weights(geom, x[0], masked.as_ref().unwrap_or(dy), dw, db)?;
            }
        }
        Op::Deconv { geom, bias, relu } => {
            if data {
                dev.deconv_backward_data_into(geom, dy, &p[0], relu.map(|slope| FusedRelu { slope, y }), &mut dx[0], to[0])?;
            }
            if let Some(pg) = dparams {
                let (dw, db) = weight_and_bias(pg, *bias);
                let masked = masked_for_weights(dev, *relu, y, dy)?;
                dev.deconv_backward_weights(geom, x[0], masked.as_ref().unwrap_or(dy), dw, db)?;
            }
        }
        Op::InnerProduct { rows, k, n, bias } => {
            if data {
                dev.inner_product_backward_data(*rows, *k, *n, dy, &p[0], &mut dx[0])?;
            }
            if let Some(pg) = dparams {
                let (dw, db) = weight_and_bias(pg, *bias);
                dev.inner_product_backward_weights(*rows, *k, *n, x[0], dy, dw, db)?;
            }
        }
        Op::BatchNorm { outer, channels, inner, eps } => {
            if data {
                dev.batch_norm_backward_data(*outer, *channels, *inner, *eps, p, dy, &mut dx[0])?;
            }
            if let Some(pg) = dparams {
                dev.batch_norm_backward_weights(*outer, *channels, *inner, *eps, p, x[0], dy, pg)?;
            }
        }
        Op::Scale { outer, channels, inner, bias } => {
            if data {
                dev.scale_backward_data_into(*outer, *channels, *inner, &p[0], dy, &mut dx[0], to[0])?;
            }
            if let Some(pg) = dparams {
                let (dw, db) = weight_and_bias(pg, *bias);
                dev.scale_backward_weights(*outer, *channels, *inner, x[0], dy, dw, db)?;
            }
        }
        // The rest have no parameters: only a data gradient to skip.
        _ if !data => {}
        Op::Relu { slope } => dev.relu_backward_into(*slope, x[0], dy, &mut dx[0], to[0])?,
        Op::Activation(f) => dev.activation_backward_into(*f, x[0], y, dy, &mut dx[0], to[0])?,
        Op::Silu => dev.silu_backward_into(x[0], dy, &mut dx[0], to[0])?,
        Op::ScaleByBlob { outer, channels, inner } => {
            let (dx0, ds) = dx.split_at_mut(1);
            dev.scale_by_blob_backward_into(*outer, *channels, *inner, x[0], x[1], dy, &mut dx0[0], &mut ds[0], [to[0], to[1]])?
        }
        // A Split's tops each carry a gradient; only the graph sees them all.
        Op::Copy => bail!("Copy nodes are handled by the graph"),
        Op::MaxPool(g) => dev.max_pool_backward(g, dy, aux, &mut dx[0])?,
        Op::AvePool(g) => dev.ave_pool_backward_into(g, dy, &mut dx[0], to[0])?,
        Op::Pad(g) => dev.pad_backward(g, dy, &mut dx[0])?,
        Op::ShuffleChannel { outer, channels, group, inner } => dev.shuffle_backward(*outer, *channels, *group, *inner, dy, &mut dx[0])?,
        Op::Lrn { dims, param } => dev.lrn_backward(*dims, param, x[0], y, aux, dy, &mut dx[0])?,
        Op::Softmax { outer, channels, inner } => dev.softmax_backward(*outer, *channels, *inner, y, dy, &mut dx[0])?,
        Op::Concat { outer, inner, channels } if overwrites => dev.concat_backward_overwrite(*outer, *inner, channels, dy, dx)?,
        Op::Concat { outer, inner, channels } => dev.concat_backward(*outer, *inner, channels, dy, dx)?,
        Op::Slice { outer, inner, channels } => dev.slice_backward(*outer, *inner, channels, dys, &mut dx[0])?,
        Op::Eltwise { op, coeffs } => dev.eltwise_backward_into(*op, coeffs, x, aux, dy, dx, to)?,
    }
    Ok(())
}
