//! The GPU matrix product every convolution, deconvolution and inner product runs on:
//! `kernels/gemm.cu` (`sgemm` in f32, `sgemm_tf32` and its version 2 `sgemm_tf32_2` on
//! tensor cores, `sgemm_bf16` with BF16 operands), batched with two-level strides, and split-K for products with too few
//! output tiles to fill the GPU.

use crate::device::cuda::compile::{self, Design, KernelSource, Launch};
use crate::device::cuda::tune::{self, Versions};
use crate::device::cuda::{grid_for, grid_stride, launch, Cuda, Precision};
use anyhow::{bail, Result};
use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig};
use std::sync::OnceLock;

pub const SOURCE: KernelSource = KernelSource {
    name: "gemm.cu",
    text: include_str!("../../../kernels/gemm.cu"),
    launches: &[
        // Each sgemm thread holds an 8 x 8 block of C (64 accumulators, 16 operands and the next
        // tiles' prefetch): the design trades occupancy for FMAs per shared load.
        Launch::new("sgemm", SGEMM_THREADS, Design::Ctas(6, "an 8 x 8 register block per thread: 163-168 registers, 12 warps per SM")),
        Launch::new("sgemm_tf32", TC_THREADS, Design::Ctas(6, "a 32 x 32 warp tile of mma accumulators: 76-77 registers, 24 warps per SM")),
        // 64 accumulators per thread and 48 KB of pipeline stages: __launch_bounds__(256, 2)
        // holds it to 128 registers, 16 warps per SM.
        Launch::new(
            "sgemm_tf32_2",
            TC2_THREADS,
            Design::Ctas(2, "a 64 x 32 warp tile and 3 stages of 128 x 16 tiles: 128 registers, 48 KB"),
        ),
        Launch::new(
            "sgemm_bf16",
            TC_THREADS,
            Design::Ctas(6, "sgemm_tf32's 32 x 32 warp tile on bf16 pairs: 79-80 registers, 24 warps per SM"),
        ),
        grid_stride("splitk_reduce"),
    ],
};

/// Threads per block of `sgemm` (kernels/gemm.cu: SGEMM_THREADS, its `__launch_bounds__`).
pub const SGEMM_THREADS: u32 = 64;
/// Threads per block of `sgemm_tf32` (kernels/gemm.cu: TC_THREADS, 4 warps).
pub const TC_THREADS: u32 = 128;
/// Threads per block of `sgemm_tf32_2` (kernels/gemm.cu: TC2_THREADS, 8 warps).
pub const TC2_THREADS: u32 = 256;

/// The versions of the TF32 product, chosen per shape on the device (`tune`): 1 the 64 x 64
/// tile of 4 warps, 2 the 128 x 128 tile of 8 warps with a cp.async pipeline.
pub const GEMM_TF32: Versions = Versions { kernel: "gemm_tf32", functions: &["sgemm_tf32", "sgemm_tf32_2"] };
/// Every versioned kernel of the matrix product (`dgnam bench --versions`).
pub const VERSIONED: &[&Versions] = &[&GEMM_TF32];

/// The output tile of a GEMM kernel function (square), and its threads per block.
fn tile_and_threads(kernel: &str) -> (usize, u32) {
    match kernel {
        "sgemm_tf32" | "sgemm_bf16" => (64, TC_THREADS),
        "sgemm_tf32_2" => (128, TC2_THREADS),
        _ => (64, SGEMM_THREADS),
    }
}

/// The hash of gemm.cu in the tuner's keys: an edited kernel is measured again.
fn source_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| compile::cache_key(SOURCE.text, &[], (0, 0)))
}

/// One stored matrix operand: leading dimension, whether it is stored transposed, and the
/// offsets of batch entry z: (z / zdiv) * strides[0] + (z % zdiv) * strides[1].
#[derive(Clone, Copy)]
pub(crate) struct Operand {
    pub ld: usize,
    pub trans: bool,
    pub strides: [usize; 2],
}

impl Operand {
    pub fn new(ld: usize, trans: bool, strides: [usize; 2]) -> Self {
        Operand { ld, trans, strides }
    }

    /// Elements a rows x cols operand (as used) spans, for the last batch entry.
    fn extent(&self, rows: usize, cols: usize, batch: usize, zdiv: usize) -> usize {
        let (stored_rows, stored_cols) = if self.trans { (cols, rows) } else { (rows, cols) };
        if rows == 0 || cols == 0 || batch == 0 {
            return 0;
        }
        // The largest batch offset: the last entry, or the end of the previous full run.
        let (z1, z2) = ((batch - 1) / zdiv, (batch - 1) % zdiv);
        let mut offset = z1 * self.strides[0] + z2 * self.strides[1];
        if z1 > 0 {
            offset = offset.max((z1 - 1) * self.strides[0] + (zdiv - 1) * self.strides[1]);
        }
        offset + (stored_rows - 1) * self.ld + stored_cols
    }
}

/// The kernel a product runs: `sgemm`, `sgemm_bf16`, or the tuner's version of a versioned one.
#[derive(Clone, Copy)]
enum Kernel {
    F32,
    Bf16,
    Tuned(&'static Versions),
}

/// C (m x n) = alpha * op(A) (m x k) * op(B) (k x n) + beta * C over `batch` products.
pub(crate) struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub batch: usize,
    pub zdiv: usize,
}

fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| anyhow::anyhow!("{what} {v} is too large for the GPU kernels"))
}

impl Cuda {
    pub(crate) fn gemm(
        &self,
        g: &Gemm,
        a: (&CudaView<f32>, Operand),
        b: (&CudaView<f32>, Operand),
        c: (&mut CudaViewMut<f32>, Operand),
    ) -> Result<()> {
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(());
        }
        let zdiv = g.zdiv.max(1);
        for (what, len, op, rows, cols) in
            [("A", a.0.len(), a.1, g.m, g.k), ("B", b.0.len(), b.1, g.k, g.n), ("C", c.0.len(), c.1, g.m, g.n)]
        {
            let need = op.extent(rows, cols, g.batch, zdiv);
            if need > len {
                bail!("GEMM operand {what} needs {need} values, has {len}");
            }
        }
        if c.1.trans {
            bail!("GEMM output cannot be transposed");
        }
        let kernel = match self.precision() {
            Precision::F32 => Kernel::F32,
            Precision::Tf32 => Kernel::Tuned(&GEMM_TF32),
            Precision::Bf16 => Kernel::Bf16,
        };
        let Some((ks, splits)) = self.split_k(g) else {
            return self.launch_gemm(kernel, g, zdiv, a, b, c);
        };
        // Split-K: a product with too few output tiles to fill the GPU (inner products at
        // small batch) computes `splits` partial products over slices of K into scratch,
        // then one pass sums them into C in a fixed order.
        let (m, n) = (g.m, g.n);
        let mut ws = self.scratch(&self.scratch.splitk, splits * m * n)?;
        let a_k = if a.1.trans { a.1.ld } else { 1 };
        let b_k = if b.1.trans { 1 } else { b.1.ld };
        let full = g.k / ks;
        let part = |kk: usize, batch: usize| Gemm { m, n, k: kk, alpha: 1.0, beta: 0.0, batch, zdiv: 1 };
        if full > 0 {
            self.launch_gemm(
                kernel,
                &part(ks, full),
                1,
                (a.0, Operand::new(a.1.ld, a.1.trans, [ks * a_k, 0])),
                (b.0, Operand::new(b.1.ld, b.1.trans, [ks * b_k, 0])),
                (&mut ws.slice_mut(..), Operand::new(n, false, [m * n, 0])),
            )?;
        }
        let rest = g.k - full * ks;
        if rest > 0 {
            let (av, bv) = (a.0.slice(full * ks * a_k..), b.0.slice(full * ks * b_k..));
            self.launch_gemm(
                kernel,
                &part(rest, 1),
                1,
                (&av, Operand::new(a.1.ld, a.1.trans, [0, 0])),
                (&bv, Operand::new(b.1.ld, b.1.trans, [0, 0])),
                (&mut ws.slice_mut(full * m * n..), Operand::new(n, false, [0, 0])),
            )?;
        }
        let (mi, ni, ldc, si) = (i32_of(m, "M")?, i32_of(n, "N")?, i32_of(c.1.ld, "ldc")?, i32_of(splits, "splits")?);
        launch!(self, SOURCE, "splitk_reduce", grid_for(m * n); &*ws, &si, &mi, &ni, &g.alpha, &g.beta, c.0, &ldc)
    }

    /// (K per slice, slices) when a single product has fewer 64 x 64 output tiles than a few
    /// per multiprocessor and a long K; None to run it whole.
    fn split_k(&self, g: &Gemm) -> Option<(usize, usize)> {
        let tiles = g.m.div_ceil(64) * g.n.div_ceil(64);
        let sms = self.info.sms;
        if g.batch != 1 || g.k < 512 || tiles >= sms {
            return None;
        }
        let want = (4 * sms).div_ceil(tiles).min(g.k / 256).min(32);
        if want < 2 {
            return None;
        }
        let ks = g.k.div_ceil(want).next_multiple_of(16);
        Some((ks, g.k.div_ceil(ks)))
    }

    /// One launch of `kernel`; a versioned one runs the version the tuner picks for this
    /// product's shape, timed (the first time) on C when beta is 0, else into a scratch C so
    /// that an accumulating product is not changed by its timing.
    fn launch_gemm(
        &self,
        kernel: Kernel,
        g: &Gemm,
        zdiv: usize,
        a: (&CudaView<f32>, Operand),
        b: (&CudaView<f32>, Operand),
        c: (&mut CudaViewMut<f32>, Operand),
    ) -> Result<()> {
        let versions = match kernel {
            Kernel::F32 => return self.launch_gemm_function("sgemm", g, zdiv, a, b, c),
            Kernel::Bf16 => return self.launch_gemm_function("sgemm_bf16", g, zdiv, a, b, c),
            Kernel::Tuned(v) => v,
        };
        let shape = format!(
            "{}x{}x{} batch {} zdiv {zdiv} beta {} A {:?} B {:?} C {:?}",
            g.m,
            g.n,
            g.k,
            g.batch,
            g.beta,
            (a.1.ld, a.1.trans, a.1.strides),
            (b.1.ld, b.1.trans, b.1.strides),
            (c.1.ld, c.1.strides)
        );
        let version = tune::choose(&self.tuner, versions, versions.functions.len(), source_hash(), &shape, &mut |v| {
            let f = versions.function(v);
            if g.beta == 0.0 {
                // It overwrites C, and the launch that follows overwrites it again.
                return self.time_runs(|| self.launch_gemm_function(f, g, zdiv, (a.0, a.1), (b.0, b.1), (&mut *c.0, c.1)));
            }
            let mut tmp = self.stream.alloc_zeros::<f32>(c.0.len().max(1)).map_err(crate::device::cuda::driver_err("allocation"))?;
            self.time_runs(|| self.launch_gemm_function(f, g, zdiv, (a.0, a.1), (b.0, b.1), (&mut tmp.slice_mut(..), c.1)))
        })?;
        self.launch_gemm_function(versions.function(version), g, zdiv, a, b, c)
    }

    fn launch_gemm_function(
        &self,
        kernel: &str,
        g: &Gemm,
        zdiv: usize,
        a: (&CudaView<f32>, Operand),
        b: (&CudaView<f32>, Operand),
        c: (&mut CudaViewMut<f32>, Operand),
    ) -> Result<()> {
        let (tile, threads) = tile_and_threads(kernel);
        let cfg = LaunchConfig {
            grid_dim: (g.n.div_ceil(tile) as u32, g.m.div_ceil(tile) as u32, g.batch as u32),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let (m, n, k) = (i32_of(g.m, "M")?, i32_of(g.n, "N")?, i32_of(g.k, "K")?);
        let (lda, ldb, ldc) = (i32_of(a.1.ld, "lda")?, i32_of(b.1.ld, "ldb")?, i32_of(c.1.ld, "ldc")?);
        let s = |op: &Operand, i: usize| op.strides[i] as i64;
        launch!(self, SOURCE, kernel, cfg;
            &m, &n, &k, &g.alpha,
            a.0, &lda, &(a.1.trans as i32), &s(&a.1, 0), &s(&a.1, 1),
            b.0, &ldb, &(b.1.trans as i32), &s(&b.1, 0), &s(&b.1, 1),
            &g.beta, c.0, &ldc, &s(&c.1, 0), &s(&c.1, 1), &i32_of(zdiv, "zdiv")?)
    }
}
