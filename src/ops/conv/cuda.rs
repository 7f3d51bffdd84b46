//! Convolution and deconvolution on the GPU: `kernels/conv.cu` (im2col, col2im) and the
//! SGEMM of `ops::gemm`, one batched launch per run of images. The deconvolution's passes are
//! the convolution's with roles swapped, as on the CPU. Version 2 of the forward pass (and so
//! of the deconvolution's backward-data) is an implicit GEMM with no column matrix; version 2
//! of the transpose pass (the convolution's backward-data, the deconvolution's forward) is
//! one too, split into the stride's sub-pixel phases so that no tap multiplies a zero.

use super::{ConvKernels, FusedRelu};
use crate::device::cuda::compile::{self, Design, KernelSource, Launch};
use crate::device::cuda::tune::{self, Versions};
use crate::device::cuda::{ensure_len, grid_for, grid_stride, launch, Cuda, Precision, COL_BUDGET};
use crate::ir::ConvGeom;
use crate::ops::gemm::cuda::{Gemm, Operand};
use anyhow::{bail, ensure, Result};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig};
use std::sync::OnceLock;

pub const SOURCE: KernelSource = KernelSource {
    name: "conv.cu",
    text: include_str!("../../../kernels/conv.cu"),
    launches: &[
        // Known shortfalls (dgnam kernels): full occupancy at 256 threads allows 32 registers.
        grid_stride("im2col").below_full(6, "36 registers on sm_90, 32 on sm_80"),
        grid_stride("col2im"),
        // Version 2 of both: no division per element (kernels/conv.cu), 2-D grids.
        grid_stride("im2col2"),
        grid_stride("col2im2"),
        // The direct data gradient of narrow inputs (version 2 of the transpose pass).
        grid_stride("conv_transpose_narrow").below_full(4, "64 registers: 12 sums of 3 channels x 4 pixels and the tap loops"),
        // sgemm's 8 x 8 register block per thread, and the gather's state (version 2 of the
        // forward pass).
        Launch::new(
            "conv_forward_implicit",
            IMPLICIT_THREADS,
            Design::Ctas(6, "sgemm's 8 x 8 register block per thread: 158-167 registers, 12 warps per SM"),
        ),
        // The weights by tap for the transpose pass's version 2 (a permutation of w).
        grid_stride("conv_weights_by_tap"),
        // Version 2 of the transpose pass: conv_forward_implicit's tiling, per phase, and the
        // tile's running sums over taps in 16 KB of shared memory. On sm_90 (163 registers,
        // 33 KB) 6 CTAs, 12 warps per SM, as sgemm; sm_80's 164 KB hold 4 (171 registers).
        Launch::new(
            "conv_transpose_implicit",
            IMPLICIT_THREADS,
            Design::Ctas(4, "sgemm's 8 x 8 register block and 16 KB of tap sums: 163 registers and 6 CTAs on sm_90, 171 and 4 on sm_80"),
        ),
    ],
};

type Buf = CudaSlice<f32>;

/// The versions of the column kernels (kernels/conv.cu), chosen per shape on the device.
pub const IM2COL: Versions = Versions { kernel: "im2col", functions: &["im2col", "im2col2"] };
pub const COL2IM: Versions = Versions { kernel: "col2im", functions: &["col2im", "col2im2"] };
/// The versions of the transpose pass (the convolution's data gradient, the deconvolution's
/// forward, dx (+)= conv^T(dy) (+ bias)): 1 the column path (one SGEMM into the column
/// matrix, then col2im), 2 the implicit GEMM by sub-pixel phases over the whole batch
/// (`conv_transpose_implicit`: the generator's stride-2 deconvolutions as 4 phases of 2 x 2
/// taps, conv1's backward-data as 16 phases of at most 3 x 3), 3 the direct kernel for
/// inputs of at most 3 channels (`conv_transpose_narrow`: deconv0's forward and conv1's
/// backward-data, the two 3-channel ends of DGN-AM). Versions that apply are a prefix
/// (`tune::choose`), and every shape the narrow kernel takes the implicit one takes too.
pub const TRANSPOSE: Versions =
    Versions { kernel: "transpose", functions: &["sgemm+col2im", "conv_transpose_implicit", "conv_transpose_narrow"] };
/// The versions of the forward pass (y = conv(x) + beta y: the convolution's forward, the
/// deconvolution's backward-data): 1 im2col then one SGEMM per run of images, 2 the implicit
/// GEMM `conv_forward_implicit` over the whole batch, in f32 only.
pub const FORWARD: Versions = Versions { kernel: "conv_forward", functions: &["im2col+sgemm", "conv_forward_implicit"] };
/// Every versioned kernel of the convolutions (`dgnam bench --versions`).
pub const VERSIONED: &[&Versions] = &[&IM2COL, &COL2IM, &TRANSPOSE, &FORWARD];

/// Threads per block of `conv_forward_implicit` and its tile of output channels x columns
/// (kernels/conv.cu: IG_THREADS, IG_TILE).
const IMPLICIT_THREADS: u32 = 64;
const IMPLICIT_TILE: usize = 64;

/// How many versions of the forward pass apply to `g` computed in `precision`: the implicit
/// GEMM is f32 only (TF32 and BF16 keep the column path's tensor-core products), needs its
/// indices within 32 bits and its grid within the limits (groups over z, channel tiles over y).
pub(crate) fn forward_versions(g: &ConvGeom, precision: Precision) -> usize {
    let fits = |v: usize| v <= i32::MAX as usize;
    let og = g.out_channels / g.group.max(1);
    let implicit = precision == Precision::F32
        && (1..=65535).contains(&g.group)
        && og.div_ceil(IMPLICIT_TILE) <= 65535
        && fits(g.input_len())
        && fits(g.output_len())
        && fits(g.weight_len())
        && fits(g.batch * g.out_h * g.out_w + IMPLICIT_TILE)
        && fits(g.kernel[0] * g.dilation[0] + g.in_h + g.pad[0])
        && fits(g.kernel[1] * g.dilation[1] + g.in_w + g.pad[1]);
    if implicit {
        2
    } else {
        1
    }
}

/// Channels (of dx) and float4 weight entries per phase that `conv_transpose_narrow` takes
/// (kernels/conv.cu: NARROW_CHANNELS, NARROW_WEIGHTS); its pixels per thread.
const NARROW_CHANNELS: usize = 3;
const NARROW_WEIGHTS: usize = 1024;
const NARROW_PIXELS: usize = 4;

/// How many versions of the transpose pass apply to `g`, in any precision (each version
/// is f32 arithmetic or the precision's own GEMM, and the tuner keeps the fastest). The
/// implicit GEMM needs dilation 1 (its phases are the stride's), every index of the whole
/// batch within 32 bits, and its grid within the limits (group x phase over z, tiles of
/// dx's channels over y). The narrow kernel needs group 1, dilation 1, at most 3 input
/// channels, one phase's weights within its shared memory, and each image's indices within
/// 32 bits (images over the grid's z, phases over y); it is counted only where the implicit
/// GEMM applies as well, since the versions that apply must be 1..=n. The shapes that loses
/// it (the narrow kernel's, with more than 2^31 values in the whole batch: over 8 GB per
/// channel) keep the column path.
fn transpose_versions(g: &ConvGeom) -> usize {
    let fits = |v: usize| v <= i32::MAX as usize;
    let (phases, cg) = (g.stride[0] * g.stride[1], g.in_channels / g.group.max(1));
    let columns = g.batch * g.in_h.div_ceil(g.stride[0]) * g.in_w.div_ceil(g.stride[1]);
    let implicit = g.dilation == [1, 1]
        && (1..=65535).contains(&(g.group * phases))
        && cg.div_ceil(IMPLICIT_TILE) <= 65535
        && fits(g.input_len())
        && fits(g.output_len())
        && fits(g.weight_len())
        && fits(columns + IMPLICIT_TILE)
        && fits(g.in_h + g.pad[0] + g.stride[0])
        && fits(g.in_w + g.pad[1] + g.stride[1]);
    let taps = g.kernel[0].div_ceil(g.stride[0]) * g.kernel[1].div_ceil(g.stride[1]);
    let direct = g.group == 1
        && g.dilation == [1, 1]
        && (1..=NARROW_CHANNELS).contains(&g.in_channels)
        && taps * g.out_channels <= NARROW_WEIGHTS
        && (1..=65535).contains(&g.batch)
        && g.stride[0] * g.stride[1] <= 65535
        && fits(g.out_channels * g.out_h * g.out_w)
        && fits(g.in_channels * g.in_h * g.in_w)
        && fits(g.weight_len());
    match (implicit, direct) {
        (false, _) => 1,
        (true, false) => 2,
        (true, true) => 3,
    }
}

/// The hash of conv.cu in the tuner's keys: an edited kernel is measured again.
fn source_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| compile::cache_key(SOURCE.text, &[], (0, 0)))
}

/// How many versions of the column kernels apply to `images` images of `g`: version 2
/// needs dilation 1 and indices within 32 bits.
fn column_versions(g: &ConvGeom, images: usize) -> usize {
    let fits = |v: usize| v <= i32::MAX as usize;
    let rows = images * g.in_channels * g.kernel[0] * g.kernel[1];
    let two = g.dilation == [1, 1] && fits(rows) && fits(g.out_h * g.out_w) && fits(g.in_h * g.in_w);
    if two {
        2
    } else {
        1
    }
}

/// The 2-D launch of the version-2 column kernels: blocks of up to 256 threads across a
/// plane of `positions`, block rows over `rows` (each walks every gridDim.y-th row).
fn plane_grid(positions: usize, rows: usize) -> LaunchConfig {
    let threads = positions.next_power_of_two().clamp(32, 256);
    let blocks = positions.div_ceil(threads).clamp(1, 64) as u32;
    LaunchConfig { grid_dim: (blocks, rows.clamp(1, 65535) as u32, 1), block_dim: (threads as u32, 1, 1), shared_mem_bytes: 0 }
}

/// No CUDA kernel applies a fused ReLU yet (`fuses_relu` says so, and `Net::fuse_relus`
/// leaves CUDA nets as they are): the error a fused op would meet.
fn no_fused_relu<T>(relu: Option<T>) -> Result<()> {
    ensure!(relu.is_none(), "the CUDA convolutions do not fuse a ReLU (Net::fuse_relus keeps them apart on CUDA)");
    Ok(())
}

impl ConvKernels for Cuda {
    fn fuses_relu(&self) -> bool {
        false
    }

    fn conv_forward(&self, g: &ConvGeom, x: &Buf, w: &Buf, bias: Option<&Buf>, relu: Option<f32>, y: &mut Buf) -> Result<()> {
        no_fused_relu(relu)?;
        self.conv_apply(g, x, w, bias, y, 0.0)
    }

    fn conv_backward_data(&self, g: &ConvGeom, dy: &Buf, w: &Buf, relu: Option<FusedRelu<'_, Buf>>, dx: &mut Buf) -> Result<()> {
        no_fused_relu(relu)?;
        self.conv_transpose(g, dy, w, None, dx, true)
    }

    fn conv_backward_weights(&self, g: &ConvGeom, x: &Buf, dy: &Buf, dw: &mut Buf, db: Option<&mut Buf>) -> Result<()> {
        self.conv_weight_grad(g, x, dy, dw)?;
        match db {
            Some(db) => self.channel_sums(dy, None, db, g.batch, g.out_channels, g.out_h * g.out_w),
            None => Ok(()),
        }
    }

    fn deconv_forward(&self, g: &ConvGeom, x: &Buf, w: &Buf, bias: Option<&Buf>, relu: Option<f32>, y: &mut Buf) -> Result<()> {
        no_fused_relu(relu)?;
        self.conv_transpose(g, x, w, bias, y, false)
    }

    fn deconv_backward_data(&self, g: &ConvGeom, dy: &Buf, w: &Buf, relu: Option<FusedRelu<'_, Buf>>, dx: &mut Buf) -> Result<()> {
        no_fused_relu(relu)?;
        self.conv_apply(g, dy, w, None, dx, 1.0)
    }

    fn deconv_backward_weights(&self, g: &ConvGeom, x: &Buf, dy: &Buf, dw: &mut Buf, db: Option<&mut Buf>) -> Result<()> {
        // The convolution's weight gradient with input and output swapped.
        self.conv_weight_grad(g, dy, x, dw)?;
        match db {
            Some(db) => self.channel_sums(dy, None, db, g.batch, g.in_channels, g.in_h * g.in_w),
            None => Ok(()),
        }
    }
}

impl Cuda {
    fn conv_geom_args(g: &ConvGeom) -> [i32; 13] {
        [
            g.in_channels,
            g.in_h,
            g.in_w,
            g.out_h,
            g.out_w,
            g.kernel[0],
            g.kernel[1],
            g.stride[0],
            g.stride[1],
            g.pad[0],
            g.pad[1],
            g.dilation[0],
            g.dilation[1],
        ]
        .map(|v| v as i32)
    }

    /// The version of a column kernel to run for `images` images of `g` (`tune::Tuner`);
    /// `measure(version)` times one on the device when the choice is not known yet.
    fn column_version(&self, v: &Versions, g: &ConvGeom, images: usize, measure: &mut dyn FnMut(usize) -> Result<f64>) -> Result<usize> {
        tune::choose(&self.tuner, v, column_versions(g, images), source_hash(), &format!("{images} images {g:?}"), measure)
    }

    /// The time of `run` into a zeroed scratch buffer of `len` values (the best of
    /// `time_runs`), for versions of kernels that overwrite their output: timing them on the
    /// real one would change it where it is accumulating.
    fn time_overwriting(&self, len: usize, mut run: impl FnMut(&mut CudaSlice<f32>) -> Result<()>) -> Result<f64> {
        let mut tmp = self.stream.alloc_zeros::<f32>(len.max(1)).map_err(crate::device::cuda::driver_err("allocation"))?;
        self.time_runs(|| run(&mut tmp))
    }

    fn im2col(&self, g: &ConvGeom, x: &CudaView<f32>, images: usize, col: &mut CudaViewMut<f32>) -> Result<()> {
        let version = self.column_version(&IM2COL, g, images, &mut |v| {
            // im2col overwrites every column: timing it on the real buffer changes nothing.
            self.time_runs(|| self.im2col_version(v, g, x, images, col))
        })?;
        self.im2col_version(version, g, x, images, col)
    }

    fn im2col_version(&self, version: usize, g: &ConvGeom, x: &CudaView<f32>, images: usize, col: &mut CudaViewMut<f32>) -> Result<()> {
        let [c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw] = Self::conv_geom_args(g);
        let cfg = match version {
            1 => grid_for(images * col_len(g)),
            _ => plane_grid(g.out_h * g.out_w, images * g.in_channels * g.kernel[0] * g.kernel[1]),
        };
        launch!(self, SOURCE, IM2COL.function(version), cfg; x, col, &(images as i32), &c, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw, &dh, &dw)
    }

    fn col2im(&self, g: &ConvGeom, col: &CudaView<f32>, images: usize, accumulate: bool, x: &mut CudaViewMut<f32>) -> Result<()> {
        let version = self.column_version(&COL2IM, g, images, &mut |v| {
            self.time_overwriting(x.len(), |tmp| self.col2im_version(v, g, col, images, false, &mut tmp.slice_mut(..)))
        })?;
        self.col2im_version(version, g, col, images, accumulate, x)
    }

    fn col2im_version(
        &self,
        version: usize,
        g: &ConvGeom,
        col: &CudaView<f32>,
        images: usize,
        accumulate: bool,
        x: &mut CudaViewMut<f32>,
    ) -> Result<()> {
        let [c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw] = Self::conv_geom_args(g);
        let cfg = match version {
            1 => grid_for(images * g.in_channels * g.in_h * g.in_w),
            _ => plane_grid(g.in_h * g.in_w, images * g.in_channels),
        };
        launch!(self, SOURCE, COL2IM.function(version), cfg; col, x, &(images as i32), &(accumulate as i32), &c, &h, &w, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw, &dh, &dw)
    }

    /// Images per GEMM launch: the whole batch, unless the column buffer would pass COL_BUDGET.
    fn runs(&self, g: &ConvGeom) -> usize {
        if g.is_pointwise() {
            g.batch.max(1)
        } else {
            (COL_BUDGET / col_len(g).max(1)).clamp(1, g.batch.max(1))
        }
    }

    /// y = (conv(x) + beta * y) + bias, by the version of the forward pass the tuner picks
    /// for `g` (timed with the bias: version 1 adds it in a pass of its own, version 2 in its
    /// epilogue). x: [N, C, H, W], w: [O, C/group, kh, kw].
    fn conv_apply(
        &self,
        g: &ConvGeom,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        y: &mut CudaSlice<f32>,
        beta: f32,
    ) -> Result<()> {
        check_conv(g, x.len(), w.len(), y.len())?;
        if let Some(b) = bias {
            ensure_len(b, g.out_channels, "bias")?;
        }
        let eligible = forward_versions(g, self.precision());
        let version = tune::choose(&self.tuner, &FORWARD, eligible, source_hash(), &format!("{g:?} bias {}", bias.is_some()), &mut |v| {
            self.time_overwriting(y.len(), |tmp| self.conv_apply_version(v, g, x, w, bias, tmp, 0.0))
        })?;
        self.conv_apply_version(version, g, x, w, bias, y, beta)
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_apply_version(
        &self,
        version: usize,
        g: &ConvGeom,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        y: &mut CudaSlice<f32>,
        beta: f32,
    ) -> Result<()> {
        match version {
            1 => {
                self.conv_apply_columns(g, x, w, y, beta)?;
                match bias {
                    Some(b) => self.bias_add(y, b, g.out_channels, g.out_h * g.out_w),
                    None => Ok(()),
                }
            }
            _ => self.conv_forward_implicit(g, x, w, bias, y, beta),
        }
    }

    /// `conv_forward_implicit` (kernels/conv.cu): one launch, 64 x 64 tiles of (output
    /// channels of a group) x (every image's pixels), groups over the grid's z; the bias is
    /// added in its epilogue.
    fn conv_forward_implicit(
        &self,
        g: &ConvGeom,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        y: &mut CudaSlice<f32>,
        beta: f32,
    ) -> Result<()> {
        let columns = g.batch * g.out_h * g.out_w;
        let og = g.out_channels / g.group;
        if columns == 0 || og == 0 {
            return Ok(());
        }
        let [c, h, wd, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw] = Self::conv_geom_args(g);
        let cfg = LaunchConfig {
            grid_dim: (columns.div_ceil(IMPLICIT_TILE) as u32, og.div_ceil(IMPLICIT_TILE) as u32, g.group as u32),
            block_dim: (IMPLICIT_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n, o, group) = (g.batch as i32, g.out_channels as i32, g.group as i32);
        // Without a bias the kernel reads none: any buffer stands in for it.
        let (b, has_bias) = (bias.unwrap_or(w), bias.is_some() as i32);
        launch!(self, SOURCE, "conv_forward_implicit", cfg; x, w, b, &has_bias, y, &beta, &n, &c, &h, &wd, &o, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw, &dh, &dw, &group)
    }

    /// y = conv(x) + beta * y by the column path: im2col, then one SGEMM per run of images.
    fn conv_apply_columns(&self, g: &ConvGeom, x: &CudaSlice<f32>, w: &CudaSlice<f32>, y: &mut CudaSlice<f32>, beta: f32) -> Result<()> {
        let (og, kk, ohw) = (g.out_channels / g.group, g.group_rows(), g.out_h * g.out_w);
        let (x_img, y_img) = (g.in_channels * g.in_h * g.in_w, g.out_channels * ohw);
        let run = self.runs(g);
        let mut col = self.scratch(&self.scratch.col, if g.is_pointwise() { 0 } else { run * col_len(g) })?;
        let wv = w.as_view();
        for n0 in (0..g.batch).step_by(run) {
            let nb = run.min(g.batch - n0);
            let xv = x.slice(n0 * x_img..(n0 + nb) * x_img);
            let bv = if g.is_pointwise() {
                xv
            } else {
                self.im2col(g, &xv, nb, &mut col.slice_mut(..))?;
                col.slice(..)
            };
            let b_img = if g.is_pointwise() { x_img } else { col_len(g) };
            let mut yv = y.slice_mut(n0 * y_img..(n0 + nb) * y_img);
            let spec = Gemm { m: og, n: ohw, k: kk, alpha: 1.0, beta, batch: nb * g.group, zdiv: g.group };
            self.gemm(
                &spec,
                (&wv, Operand::new(kk, false, [0, og * kk])),
                (&bv, Operand::new(ohw, false, [b_img, kk * ohw])),
                (&mut yv, Operand::new(ohw, false, [y_img, og * ohw])),
            )?;
        }
        Ok(())
    }

    /// dx = ((accumulate ? dx : 0) + conv^T(dy)) + bias, by the version of the transpose pass
    /// the tuner picks for `g` (timed with the bias: versions 1 and 3 add it in a pass of
    /// their own, version 2 in its epilogue). `accumulate = false` overwrites dx (the
    /// deconvolution's forward pass, the one with a bias).
    fn conv_transpose(
        &self,
        g: &ConvGeom,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        dx: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        check_conv(g, dx.len(), w.len(), dy.len())?;
        if let Some(b) = bias {
            ensure_len(b, g.in_channels, "bias")?;
        }
        let shape = format!("{g:?} bias {}", bias.is_some());
        let version = tune::choose(&self.tuner, &TRANSPOSE, transpose_versions(g), source_hash(), &shape, &mut |v| {
            self.time_overwriting(dx.len(), |tmp| self.conv_transpose_version(v, g, dy, w, bias, tmp, false))
        })?;
        self.conv_transpose_version(version, g, dy, w, bias, dx, accumulate)
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_transpose_version(
        &self,
        version: usize,
        g: &ConvGeom,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        dx: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        match version {
            1 => self.conv_transpose_columns(g, dy, w, dx, accumulate)?,
            2 => return self.conv_transpose_implicit(g, dy, w, bias, dx, accumulate),
            _ => self.conv_transpose_narrow(g, dy, w, dx, accumulate)?,
        }
        match bias {
            Some(b) => self.bias_add(dx, b, g.in_channels, g.in_h * g.in_w),
            None => Ok(()),
        }
    }

    /// `conv_transpose_implicit` (kernels/conv.cu): the weights permuted by tap
    /// (`conv_weights_by_tap`, into the column scratch, which this path does not otherwise
    /// use), then one launch of 64 x 64 tiles of (channels of dx in a group) x (every
    /// image's pixels of a phase), group x phase over the grid's z; the bias is added in its
    /// epilogue.
    fn conv_transpose_implicit(
        &self,
        g: &ConvGeom,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        dx: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        let cg = g.in_channels / g.group;
        // The largest phase: ceil(in / stride) rows and columns of every image.
        let columns = g.batch * g.in_h.div_ceil(g.stride[0]) * g.in_w.div_ceil(g.stride[1]);
        if columns == 0 || cg == 0 {
            return Ok(());
        }
        let [c, h, wd, oh, ow, kh, kw, sh, sw, ph, pw, _, _] = Self::conv_geom_args(g);
        let (n, o, group) = (g.batch as i32, g.out_channels as i32, g.group as i32);
        let mut wt = self.scratch(&self.scratch.col, w.len())?;
        if !w.is_empty() {
            let (taps, cgi) = (kh * kw, cg as i32);
            launch!(self, SOURCE, "conv_weights_by_tap", grid_for(w.len()); w, &mut *wt, &o, &cgi, &taps, &group)?;
        }
        let cfg = LaunchConfig {
            grid_dim: (
                columns.div_ceil(IMPLICIT_TILE) as u32,
                cg.div_ceil(IMPLICIT_TILE) as u32,
                (g.group * g.stride[0] * g.stride[1]) as u32,
            ),
            block_dim: (IMPLICIT_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // Without a bias the kernel reads none: any buffer stands in for it.
        let (b, has_bias) = (bias.unwrap_or(w), bias.is_some() as i32);
        let acc = accumulate as i32;
        launch!(self, SOURCE, "conv_transpose_implicit", cfg; dy, &*wt, b, &has_bias, dx, &acc, &n, &c, &h, &wd, &o, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw, &group)
    }

    /// `conv_transpose_narrow` (kernels/conv.cu) over every image at once: blocks over the
    /// image (z), the phase of dx (y) and the phase's pixels, NARROW_PIXELS per thread (x).
    fn conv_transpose_narrow(
        &self,
        g: &ConvGeom,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        dx: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        let [c, h, wd, oh, ow, kh, kw, sh, sw, ph, pw, _, _] = Self::conv_geom_args(g);
        // The largest phase: ceil(in / stride) rows and columns.
        let items = g.in_h.div_ceil(g.stride[0]) * g.in_w.div_ceil(g.stride[1]).div_ceil(NARROW_PIXELS);
        let blocks = items.div_ceil(256).clamp(1, 1024) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, (g.stride[0] * g.stride[1]) as u32, g.batch as u32),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let o = g.out_channels as i32;
        launch!(self, SOURCE, "conv_transpose_narrow", cfg; dy, w, dx, &(accumulate as i32), &c, &h, &wd, &o, &oh, &ow, &kh, &kw, &sh, &sw, &ph, &pw)
    }

    /// dx (+)= conv^T(dy) by the column path: per group col = W^T dy, then col2im.
    fn conv_transpose_columns(
        &self,
        g: &ConvGeom,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        dx: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        let (og, kk, ohw) = (g.out_channels / g.group, g.group_rows(), g.out_h * g.out_w);
        let (x_img, y_img) = (g.in_channels * g.in_h * g.in_w, g.out_channels * ohw);
        let run = self.runs(g);
        let mut col = self.scratch(&self.scratch.col, if g.is_pointwise() { 0 } else { run * col_len(g) })?;
        let wv = w.as_view();
        for n0 in (0..g.batch).step_by(run) {
            let nb = run.min(g.batch - n0);
            let dyv = dy.slice(n0 * y_img..(n0 + nb) * y_img);
            let a = (&wv, Operand::new(kk, true, [0, og * kk]));
            let b = (&dyv, Operand::new(ohw, false, [y_img, og * ohw]));
            let mut dxv = dx.slice_mut(n0 * x_img..(n0 + nb) * x_img);
            if g.is_pointwise() {
                let spec =
                    Gemm { m: kk, n: ohw, k: og, alpha: 1.0, beta: if accumulate { 1.0 } else { 0.0 }, batch: nb * g.group, zdiv: g.group };
                self.gemm(&spec, a, b, (&mut dxv, Operand::new(ohw, false, [x_img, kk * ohw])))?;
            } else {
                let spec = Gemm { m: kk, n: ohw, k: og, alpha: 1.0, beta: 0.0, batch: nb * g.group, zdiv: g.group };
                self.gemm(&spec, a, b, (&mut col.slice_mut(..), Operand::new(ohw, false, [col_len(g), kk * ohw])))?;
                self.col2im(g, &col.slice(..), nb, accumulate, &mut dxv)?;
            }
        }
        Ok(())
    }

    /// dw += dy col(x)^T, per image and group (images in sequence: they add into one dw).
    fn conv_weight_grad(&self, g: &ConvGeom, x: &CudaSlice<f32>, dy: &CudaSlice<f32>, dw: &mut CudaSlice<f32>) -> Result<()> {
        check_conv(g, x.len(), dw.len(), dy.len())?;
        let (og, kk, ohw) = (g.out_channels / g.group, g.group_rows(), g.out_h * g.out_w);
        let (x_img, y_img) = (g.in_channels * g.in_h * g.in_w, g.out_channels * ohw);
        let run = self.runs(g);
        let mut col = self.scratch(&self.scratch.col, if g.is_pointwise() { 0 } else { run * col_len(g) })?;
        let mut dwv = dw.as_view_mut();
        for n0 in (0..g.batch).step_by(run) {
            let nb = run.min(g.batch - n0);
            if !g.is_pointwise() {
                self.im2col(g, &x.slice(n0 * x_img..(n0 + nb) * x_img), nb, &mut col.slice_mut(..))?;
            }
            for i in 0..nb {
                let n = n0 + i;
                let bv =
                    if g.is_pointwise() { x.slice(n * x_img..(n + 1) * x_img) } else { col.slice(i * col_len(g)..(i + 1) * col_len(g)) };
                let dyv = dy.slice(n * y_img..(n + 1) * y_img);
                let spec = Gemm { m: og, n: kk, k: ohw, alpha: 1.0, beta: 1.0, batch: g.group, zdiv: g.group };
                self.gemm(
                    &spec,
                    (&dyv, Operand::new(ohw, false, [0, og * ohw])),
                    (&bv, Operand::new(ohw, true, [0, kk * ohw])),
                    (&mut dwv, Operand::new(kk, false, [0, og * kk])),
                )?;
            }
        }
        Ok(())
    }
}

/// One image's column matrix, all groups.
fn col_len(g: &ConvGeom) -> usize {
    g.in_channels * g.kernel[0] * g.kernel[1] * g.out_h * g.out_w
}

fn check_conv(g: &ConvGeom, input: usize, w: usize, output: usize) -> Result<()> {
    if input != g.input_len() || w != g.weight_len() || output != g.output_len() {
        bail!("convolution buffers of {input}, {w} and {output} values do not fit {g:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [channels, size, outputs, taps], [stride, pad, group, batch]: square images and taps.
    fn geom([c, hw, o, k]: [usize; 4], [stride, pad, group, batch]: [usize; 4]) -> ConvGeom {
        let out = (hw + 2 * pad - k) / stride + 1;
        ConvGeom {
            batch,
            in_channels: c,
            in_h: hw,
            in_w: hw,
            out_channels: o,
            out_h: out,
            out_w: out,
            kernel: [k, k],
            stride: [stride, stride],
            pad: [pad, pad],
            dilation: [1, 1],
            group,
        }
    }

    /// The implicit GEMM competes in f32 on DGN-AM's shapes, never in TF32 or BF16, and not
    /// where its 32-bit indices or its grid would overflow.
    #[test]
    fn the_implicit_forward_applies_in_f32_within_32_bit_indices() {
        let conv1 = geom([3, 227, 96, 11], [4, 0, 1, 64]);
        let conv2 = geom([96, 27, 256, 5], [1, 2, 2, 64]);
        for g in [&conv1, &conv2] {
            assert_eq!(forward_versions(g, Precision::F32), 2, "{g:?}");
            assert_eq!(forward_versions(g, Precision::Tf32), 1, "{g:?}");
            assert_eq!(forward_versions(g, Precision::Bf16), 1, "{g:?}");
        }
        // 2^31 input values, and a group count past the grid's z.
        assert_eq!(forward_versions(&geom([64, 1024, 8, 3], [1, 1, 1, 32]), Precision::F32), 1);
        assert_eq!(forward_versions(&geom([70000, 4, 70000, 1], [1, 0, 70000, 1]), Precision::F32), 1);
    }

    /// The implicit transpose pass (version 2) competes on every DGN-AM shape, the narrow
    /// kernel (3) on the 3-channel ends as well; dilation and overflowing indices or grids
    /// keep the column path.
    #[test]
    fn the_implicit_transpose_applies_with_dilation_1_within_32_bit_indices() {
        let conv1 = geom([3, 227, 96, 11], [4, 0, 1, 64]);
        let conv2 = geom([96, 27, 256, 5], [1, 2, 2, 64]);
        // deconv2 and deconv0 of the fc6 generator, as the convolutions they transpose.
        let deconv2 = geom([64, 64, 128, 4], [2, 1, 1, 64]);
        let deconv0 = geom([3, 256, 32, 4], [2, 1, 1, 64]);
        assert_eq!(transpose_versions(&conv1), 3);
        assert_eq!(transpose_versions(&conv2), 2);
        assert_eq!(transpose_versions(&deconv2), 2);
        assert_eq!(transpose_versions(&deconv0), 3);
        let mut dilated = conv2;
        dilated.dilation = [2, 2];
        assert_eq!(transpose_versions(&dilated), 1);
        // 2^31 input values, and group x phase past the grid's z.
        assert_eq!(transpose_versions(&geom([64, 1024, 8, 3], [1, 1, 1, 32])), 1);
        assert_eq!(transpose_versions(&geom([70000, 4, 70000, 1], [1, 0, 70000, 1])), 1);
    }
}
