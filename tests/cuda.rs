//! The CUDA backend, checked three ways.
//!
//! - NVRTC (no GPU): every kernel source compiles for sm_80 and sm_90, and the entry points
//!   the PTX declares are those the sources declare.
//! - Host emulation (no GPU, g++): tools/kernel_emu runs every `__global__` entry point of
//!   kernels/*.cu on the CPU against double-precision references, with the cases of the
//!   tables below; the test fails naming any entry point no case launched.
//! - GPU (`--ignored`): every op forward and backward, and CaffeNet and the fc6 generator at
//!   real shapes, against the CPU backend, element by element (see `F32`).
//!
//! A missing tool shows: build.rs looks for g++ and libnvrtc, and the tests that need one
//! are reported as ignored with the reason when it is absent. With `REQUIRE_KERNEL_EMU=1`,
//! `REQUIRE_NVRTC=1` (CI) or `REQUIRE_GPU=1` they run anyway and fail on the missing tool.
//!
//! Whole nets are compared two ways: forward end to end (every blob), and backward node by
//! node from the CPU's own forward values and a random output gradient. End-to-end gradients
//! are not compared: a max-pooling window whose two largest inputs differ by f32 rounding may
//! pick a different winner on each backend, which moves a gradient entry to a neighbouring
//! pixel (both answers are right).

mod common;

use common::{assert_matches_caffe, fixture_prototxt, load_fixture, shipped, LoadedFixture};
use dgnam::caffe::netdef::parse_netdef;
use dgnam::device::cuda::compile;
use dgnam::device::cuda::Precision;
use dgnam::device::{Backend, Cpu, Cuda};
use dgnam::graph::{CpuNet, Net, Op};
use dgnam::ops::cases::{self, Case};
use dgnam::rng::Rng;
use dgnam::synth::kernels::DgnKernels;
use std::collections::BTreeSet;
use std::io::Write;

fn env_on(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// The GPU backend, or None (saying why) when there is no GPU and REQUIRE_GPU is not set.
fn gpu() -> Option<Cuda> {
    let why = match Cuda::probe() {
        Ok(Some(_)) => return Some(Cuda::new(Precision::F32).expect("a GPU is present but the CUDA backend failed to start")),
        Ok(None) => "no CUDA driver found".to_string(),
        Err(e) => format!("{e:#}"),
    };
    assert!(!env_on("REQUIRE_GPU"), "REQUIRE_GPU=1 but there is no usable GPU: {why}");
    eprintln!("skipped: needs a CUDA GPU ({why})");
    None
}

/// Panics (naming the library) unless NVRTC loads: the NVRTC tests run only when build.rs
/// found it or REQUIRE_NVRTC=1 asks for them.
fn require_nvrtc() {
    assert!(
        compile::nvrtc_present(),
        "NVRTC (libnvrtc.so.13) cannot be loaded: `pip install nvidia-cuda-nvrtc==13.0.88` and put its lib directory on LD_LIBRARY_PATH (REQUIRE_NVRTC={})",
        std::env::var("REQUIRE_NVRTC").unwrap_or_default()
    );
}

/// Every `__global__` entry point of every kernels/*.cu, by file, read from the sources:
/// `extern "C" __global__ void [__launch_bounds__(...)] NAME(`.
fn source_entry_points() -> Vec<(String, Vec<String>)> {
    let dir = common::root().join("kernels");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "cu")).collect();
    files.sort();
    assert!(!files.is_empty(), "no kernels in {}", dir.display());
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let code: String = text.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
            let names = code
                .split("__global__")
                .skip(1)
                .map(|rest| {
                    let rest = rest
                        .trim_start()
                        .strip_prefix("void")
                        .unwrap_or_else(|| panic!("{}: a __global__ that is not `void`", path.display()))
                        .trim_start();
                    let rest = match rest.strip_prefix("__launch_bounds__") {
                        Some(r) => &r[r.find(')').unwrap() + 1..],
                        None => rest,
                    };
                    let name: String = rest.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    assert!(!name.is_empty(), "{}: cannot read a kernel name in `{}`", path.display(), &rest[..rest.len().min(60)]);
                    name
                })
                .collect();
            (path.file_name().unwrap().to_string_lossy().into_owned(), names)
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(any(has_nvrtc, require_nvrtc)),
    ignore = "NVRTC (libnvrtc.so*) not found on LD_LIBRARY_PATH at build time: the kernels were not compiled"
)]
fn every_kernel_compiles_for_sm80_and_sm90() {
    require_nvrtc();
    let declared = source_entry_points();
    for arch in ["sm_80", "sm_90"] {
        let report = compile::check_all(arch, &dgnam::app::kernel_sources()).unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("{report}");
        for compile::KernelSource { name, text: source, .. } in dgnam::app::kernel_sources() {
            let ptx = compile::compile(name, source, &compile::options(arch).unwrap()).unwrap();
            let entries = compile::entry_points(&ptx);
            assert!(!entries.is_empty(), "{name} defines no kernel");
            for (entry, params) in &entries {
                assert!(!params.contains(&compile::ParamKind::Other), "{name}: {entry} has a parameter of an unexpected type");
            }
            // The source parser the emulation's coverage check relies on reads what NVRTC reads.
            let from_ptx: BTreeSet<&str> = entries.iter().map(|(e, _)| e.as_str()).collect();
            let from_source: BTreeSet<&str> =
                declared.iter().find(|(f, _)| f == name).map(|(_, n)| n.iter().map(String::as_str).collect()).unwrap_or_default();
            assert_eq!(from_ptx, from_source, "{name}: entry points in the PTX and in the source text");
        }
    }
}

#[test]
#[cfg_attr(not(any(has_nvrtc, require_nvrtc)), ignore = "NVRTC (libnvrtc.so*) not found on LD_LIBRARY_PATH at build time")]
fn the_ptx_cache_serves_the_second_compilation() {
    require_nvrtc();
    let dir = common::scratch("ptx-cache");
    std::env::set_var("DGNAM_CACHE_DIR", &dir);
    let compile::KernelSource { name, text: source, .. } = dgnam::app::kernel_sources()[0];
    let first = compile::compile_cached(name, source, "sm_90").unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1, "one PTX file per source and architecture");
    let path = files[0].as_ref().unwrap().path();
    // A cached file is used as it is: mark it and see the mark come back.
    std::fs::write(&path, format!("{first}// cached\n")).unwrap();
    assert!(compile::compile_cached(name, source, "sm_90").unwrap().ends_with("// cached\n"));
    std::env::remove_var("DGNAM_CACHE_DIR");
}

// ---------------------------------------------------------------------------------------
// The host emulation's cases, one table per kernel family; each row is one input line of
// tools/kernel_emu/kernels_on_host.cpp (its header lists the formats). A case runs every
// kernel of its family, forward and backward.

/// gemm: C = alpha op(A) op(B) + beta C over `batch` products (`zdiv` per run), leading
/// dimensions padded by `extra_ld`; each row runs for all four transpositions.
struct GemmCase {
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    zdiv: usize,
    extra_ld: usize,
    alpha: f32,
    beta: f32,
    kernel: u8,
}

#[allow(clippy::too_many_arguments)]
const fn gemm(m: usize, n: usize, k: usize, batch: usize, zdiv: usize, extra_ld: usize, alpha: f32, beta: f32, kernel: u8) -> GemmCase {
    GemmCase { m, n, k, batch, zdiv, extra_ld, alpha, beta, kernel }
}

/// The kernel of a gemm case line (tools/kernel_emu/kernels_on_host.cpp: test_gemm).
const SGEMM: u8 = 0;
const TF32_1: u8 = 1;
const TF32_2: u8 = 2;
const BF16: u8 = 3;

const GEMM_CASES: &[GemmCase] = &[
    gemm(64, 64, 16, 1, 1, 0, 1.0, 0.0, SGEMM),
    gemm(70, 130, 37, 1, 1, 0, 1.0, 1.0, SGEMM),
    gemm(5, 3, 200, 1, 1, 1, 0.5, 0.0, SGEMM),
    gemm(96, 33, 64, 6, 2, 0, 1.0, 1.0, SGEMM),
    gemm(1, 100, 65, 2, 1, 3, 1.0, 0.5, SGEMM),
    gemm(64, 64, 16, 1, 1, 0, 1.0, 0.0, TF32_1),
    gemm(70, 130, 37, 1, 1, 0, 1.0, 1.0, TF32_1),
    gemm(96, 33, 64, 6, 2, 0, 0.5, 1.0, TF32_1),
    gemm(1, 100, 65, 2, 1, 3, 1.0, 0.5, TF32_1),
    // Version 2's 128 x 128 tiles: whole tiles, tails in M and N, K a multiple of its 16-deep
    // k-tile and not (fewer k-tiles than pipeline stages, and more), batches with zdiv,
    // unaligned leading dimensions (4-byte copies), beta != 0.
    gemm(128, 128, 64, 1, 1, 0, 1.0, 0.0, TF32_2),
    gemm(200, 150, 37, 1, 1, 0, 1.0, 1.0, TF32_2),
    gemm(130, 257, 8, 1, 1, 0, 1.0, 0.5, TF32_2),
    gemm(96, 33, 64, 6, 2, 0, 0.5, 1.0, TF32_2),
    gemm(1, 100, 65, 2, 1, 3, 1.0, 0.5, TF32_2),
    gemm(129, 131, 70, 3, 2, 1, 0.5, 0.0, TF32_2),
    // BF16 operands (m16n8k16: K tails below 16 and past it).
    gemm(64, 64, 16, 1, 1, 0, 1.0, 0.0, BF16),
    gemm(70, 130, 37, 1, 1, 0, 1.0, 1.0, BF16),
    gemm(96, 33, 64, 6, 2, 0, 0.5, 1.0, BF16),
    gemm(1, 100, 65, 2, 1, 3, 1.0, 0.5, BF16),
    gemm(5, 3, 9, 1, 1, 1, 1.0, 0.0, BF16),
];

fn gemm_lines() -> Vec<String> {
    let mut out = Vec::new();
    for ta in 0..2 {
        for tb in 0..2 {
            for c in GEMM_CASES {
                let GemmCase { m, n, k, batch, zdiv, extra_ld, alpha, beta, kernel } = c;
                out.push(format!("gemm {m} {n} {k} {ta} {tb} {batch} {zdiv} {extra_ld} {alpha} {beta} {kernel}"));
            }
        }
    }
    out
}

/// conv: im2col, col2im (accumulating and overwriting), and the backend's forward,
/// backward-data (= deconvolution forward) and backward-weights passes.
struct ConvCase {
    channels: usize,
    hw: [usize; 2],
    outputs: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    dilation: [usize; 2],
    group: usize,
    batch: usize,
}

const CONV_CASES: &[ConvCase] = &[
    ConvCase { channels: 3, hw: [13, 12], outputs: 8, kernel: [5, 5], stride: [2, 2], pad: [1, 1], dilation: [1, 1], group: 1, batch: 2 },
    ConvCase { channels: 4, hw: [9, 8], outputs: 6, kernel: [3, 2], stride: [2, 1], pad: [1, 0], dilation: [1, 2], group: 2, batch: 3 },
    // 1x1, stride 1, no pad: the backend multiplies the input directly (no im2col)
    ConvCase { channels: 6, hw: [7, 7], outputs: 4, kernel: [1, 1], stride: [1, 1], pad: [0, 0], dilation: [1, 1], group: 2, batch: 2 },
    ConvCase { channels: 8, hw: [6, 6], outputs: 8, kernel: [3, 3], stride: [1, 1], pad: [1, 1], dilation: [1, 1], group: 1, batch: 1 },
    ConvCase { channels: 4, hw: [5, 5], outputs: 4, kernel: [4, 4], stride: [2, 2], pad: [1, 1], dilation: [1, 1], group: 1, batch: 2 },
    // conv1's shape in small (11 x 11 taps, stride 4), and stride 3 (the general divmod of
    // the version-2 kernels)
    ConvCase { channels: 3, hw: [27, 23], outputs: 4, kernel: [11, 11], stride: [4, 4], pad: [0, 0], dilation: [1, 1], group: 1, batch: 1 },
    ConvCase { channels: 2, hw: [10, 11], outputs: 3, kernel: [5, 4], stride: [3, 3], pad: [2, 1], dilation: [1, 1], group: 1, batch: 2 },
    // Strides that differ across and down, and one with phases of no pixel (stride 4 over 2
    // and 3 pixels): the direct narrow data gradient's phases
    ConvCase { channels: 3, hw: [9, 10], outputs: 5, kernel: [4, 3], stride: [2, 1], pad: [1, 0], dilation: [1, 1], group: 1, batch: 2 },
    ConvCase { channels: 1, hw: [2, 3], outputs: 2, kernel: [2, 2], stride: [4, 4], pad: [0, 1], dilation: [1, 1], group: 1, batch: 1 },
    // The implicit-GEMM forward's tiles: output channels past one and two 64-row tiles (with
    // groups), 64-column tiles that span images (batch 3 of 81 pixels), and K = 40 of 1x1
    // taps (its (c, ki, kj) carried across stages with kh = kw = 1, stride 2 so not pointwise)
    ConvCase { channels: 5, hw: [9, 9], outputs: 70, kernel: [3, 3], stride: [1, 1], pad: [1, 1], dilation: [1, 1], group: 1, batch: 3 },
    ConvCase { channels: 4, hw: [6, 7], outputs: 130, kernel: [3, 3], stride: [1, 1], pad: [1, 1], dilation: [1, 1], group: 2, batch: 2 },
    ConvCase { channels: 40, hw: [9, 11], outputs: 8, kernel: [1, 1], stride: [2, 2], pad: [0, 0], dilation: [1, 1], group: 1, batch: 2 },
    // The implicit transpose pass's tiles: channels of dx past one 64-row tile, alone (the
    // generator's k4 s2 p1, 4 phases of 2 x 2 taps, K = 20: a stage and a tail of 4) and
    // with groups (66 per group, K = 17: two stages, the second of one row)
    ConvCase { channels: 70, hw: [8, 8], outputs: 20, kernel: [4, 4], stride: [2, 2], pad: [1, 1], dilation: [1, 1], group: 1, batch: 2 },
    ConvCase { channels: 132, hw: [5, 6], outputs: 34, kernel: [3, 3], stride: [2, 2], pad: [1, 1], dilation: [1, 1], group: 2, batch: 1 },
];

impl ConvCase {
    fn line(&self) -> String {
        let ConvCase { channels, hw, outputs, kernel, stride, pad, dilation, group, batch } = self;
        format!(
            "conv {channels} {} {} {outputs} {} {} {} {} {} {} {} {} {group} {batch}",
            hw[0], hw[1], kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1], dilation[0], dilation[1]
        )
    }
}

/// pool: MAX (values and winners) and AVE, forward and backward, Caffe's window rules (AVE
/// also with `exclude_pad`, ONNX's count_include_pad 0).
struct PoolCase {
    planes: usize,
    hw: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    exclude_pad: bool,
}

const POOL_CASES: &[PoolCase] = &[
    PoolCase { planes: 5, hw: [13, 13], kernel: [3, 3], stride: [2, 2], pad: [0, 0], exclude_pad: false },
    PoolCase { planes: 4, hw: [10, 9], kernel: [3, 2], stride: [2, 3], pad: [1, 1], exclude_pad: false },
    PoolCase { planes: 4, hw: [10, 9], kernel: [3, 2], stride: [2, 3], pad: [1, 1], exclude_pad: true },
    PoolCase { planes: 3, hw: [7, 7], kernel: [2, 2], stride: [3, 3], pad: [0, 0], exclude_pad: false },
    PoolCase { planes: 3, hw: [6, 5], kernel: [6, 5], stride: [1, 1], pad: [0, 0], exclude_pad: false },
    PoolCase { planes: 2, hw: [8, 8], kernel: [3, 3], stride: [1, 1], pad: [2, 2], exclude_pad: false },
    PoolCase { planes: 2, hw: [8, 8], kernel: [3, 3], stride: [1, 1], pad: [2, 2], exclude_pad: true },
];

impl PoolCase {
    fn line(&self) -> String {
        let PoolCase { planes, hw, kernel, stride, pad, exclude_pad } = self;
        let exclude = *exclude_pad as u8;
        format!("pool {planes} {} {} {} {} {} {} {} {} {exclude}", hw[0], hw[1], kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1])
    }
}

/// lrn: forward (output and scale) and backward, across channels or within a channel.
struct LrnCase {
    shape: [usize; 4],
    local_size: usize,
    within: bool,
}

const LRN_CASES: &[LrnCase] = &[
    LrnCase { shape: [2, 7, 4, 5], local_size: 5, within: false },
    LrnCase { shape: [2, 3, 6, 7], local_size: 3, within: true },
    LrnCase { shape: [2, 16, 9, 10], local_size: 5, within: false },
];

impl LrnCase {
    fn line(&self) -> String {
        let [n, c, h, w] = self.shape;
        format!("lrn {n} {c} {h} {w} {} {}", self.local_size, self.within as u8)
    }
}

/// A blob viewed as [outer, channels, inner]: the softmax, per-channel reduction and
/// element-wise families.
struct Dims3 {
    outer: usize,
    channels: usize,
    inner: usize,
}

const fn dims3(outer: usize, channels: usize, inner: usize) -> Dims3 {
    Dims3 { outer, channels, inner }
}

impl Dims3 {
    fn line(&self, kind: &str) -> String {
        format!("{kind} {} {} {}", self.outer, self.channels, self.inner)
    }
}

const SOFTMAX_CASES: &[Dims3] = &[dims3(3, 1000, 1), dims3(2, 7, 5)];
/// channel_sums, batch_norm_backward_weights, mean_abs_rows
const REDUCE_CASES: &[Dims3] = &[dims3(3, 5, 17), dims3(8, 1000, 1), dims3(4, 3, 700)];
/// relu, axpby, mul_assign, bias_add, scale, batch_norm, eltwise max
const ELEMENTWISE_CASES: &[Dims3] = &[dims3(3, 5, 17), dims3(2, 3, 300)];
/// dgn_update: rows x cols codes
const DGN_CASES: &[[usize; 2]] = &[[3, 700], [5, 301]];

/// crop: forward and backward, `hw` at `offset` out of every plane of `shape`.
struct CropCase {
    shape: [usize; 4],
    hw: [usize; 2],
    offset: [usize; 2],
}

const CROP_CASES: &[CropCase] =
    &[CropCase { shape: [2, 3, 9, 11], hw: [4, 5], offset: [3, 2] }, CropCase { shape: [2, 4, 31, 29], hw: [20, 17], offset: [5, 6] }];

/// resize_bilinear and its backward: every plane of `shape` to `hw` (up, down, mixed, the
/// same size, and 256 -> 299's ratio in miniature).
const RESIZE_CASES: &[([usize; 4], [usize; 2])] =
    &[([2, 3, 5, 7], [9, 11]), ([1, 2, 9, 8], [4, 3]), ([1, 1, 4, 6], [7, 5]), ([1, 1, 6, 6], [6, 6]), ([1, 3, 64, 64], [75, 75])];

/// channel_affine forward and backward over [n, 3, plane].
const AFFINE_CASES: &[[usize; 2]] = &[[2, 17], [1, 300]];

/// concat_copy: parts of `channels[i] * inner` per outer row, forward and backward.
struct ConcatCase {
    outer: usize,
    inner: usize,
    channels: &'static [usize],
}

const CONCAT_CASES: &[ConcatCase] =
    &[ConcatCase { outer: 3, inner: 5, channels: &[2, 4] }, ConcatCase { outer: 4, inner: 40, channels: &[3, 1, 5] }];

/// pad: forward and backward, an NCHW shape padded [top, left, bottom, right] with a value.
struct PadCase {
    shape: [usize; 4],
    sides: [i64; 4],
    value: f32,
}

impl PadCase {
    fn line(&self) -> String {
        let ([n, c, h, w], [t, l, b, r]) = (self.shape, self.sides);
        format!("pad {n} {c} {h} {w} {t} {l} {b} {r} {}", self.value)
    }
}

const PAD_CASES: &[PadCase] = &[
    PadCase { shape: [2, 3, 7, 5], sides: [0, 1, 1, 0], value: 0.0 },
    PadCase { shape: [1, 4, 9, 12], sides: [2, 0, 3, 1], value: -1.5 },
    // Crops (negative sides), as after a ConvTranspose with pads that differ between the sides.
    PadCase { shape: [2, 2, 8, 9], sides: [-1, 2, 1, -3], value: 0.0 },
];

/// shuffle_channels: [outer, channels, group, inner], forward and backward.
const SHUFFLE_CASES: &[[usize; 4]] = &[[2, 6, 2, 5], [3, 12, 3, 7], [1, 116, 2, 49]];

/// splitk_reduce: [m, n, splits, ldc]
const SPLITK_CASES: &[[usize; 4]] = &[[5, 37, 3, 40], [70, 130, 4, 130]];

/// The convolution, pooling and LRN geometries of the ops' own case tables and of their
/// Caffe fixtures (`dgnam::ops::cases`), compiled at batch 2, as emulation cases.
fn op_table_lines() -> Vec<String> {
    let mut lines = Vec::new();
    let mut nets: Vec<String> = cases::all().iter().map(Case::prototxt).collect();
    nets.extend(cases::fixtures().iter().map(fixture_prototxt));
    for net in &nets {
        let plan = dgnam::graph::Plan::new(&parse_netdef(net).unwrap(), 2).unwrap();
        for node in &plan.nodes {
            lines.push(match &node.op {
                Op::Conv { geom: g, .. } | Op::Deconv { geom: g, .. } => ConvCase {
                    channels: g.in_channels,
                    hw: [g.in_h, g.in_w],
                    outputs: g.out_channels,
                    kernel: g.kernel,
                    stride: g.stride,
                    pad: g.pad,
                    dilation: g.dilation,
                    group: g.group,
                    batch: g.batch,
                }
                .line(),
                Op::MaxPool(g) | Op::AvePool(g) => {
                    let planes = g.batch * g.channels;
                    PoolCase { planes, hw: [g.in_h, g.in_w], kernel: g.kernel, stride: g.stride, pad: g.pad, exclude_pad: g.exclude_pad }
                        .line()
                }
                Op::Pad(g) => PadCase { shape: g.dims, sides: [g.before[0], g.before[1], g.after[0], g.after[1]], value: g.value }.line(),
                Op::Lrn { dims, param } => {
                    LrnCase { shape: *dims, local_size: param.local_size, within: param.region == dgnam::ir::LrnRegion::WithinChannel }
                        .line()
                }
                _ => continue,
            });
        }
    }
    assert!(lines.len() >= 15, "the op tables gave only {} emulation cases", lines.len());
    lines
}

fn emulation_input() -> Vec<String> {
    let mut lines = vec!["emu_self_test".to_string()];
    lines.extend(gemm_lines());
    lines.extend(CONV_CASES.iter().map(ConvCase::line));
    lines.extend(POOL_CASES.iter().map(PoolCase::line));
    lines.extend(LRN_CASES.iter().map(LrnCase::line));
    lines.extend(op_table_lines());
    lines.extend(SOFTMAX_CASES.iter().map(|d| d.line("softmax")));
    lines.extend(REDUCE_CASES.iter().map(|d| d.line("reduce")));
    lines.extend(ELEMENTWISE_CASES.iter().map(|d| d.line("elementwise")));
    lines.extend(DGN_CASES.iter().map(|[r, c]| format!("dgn {r} {c}")));
    lines.extend(
        CROP_CASES
            .iter()
            .map(|CropCase { shape: [n, c, h, w], hw: [ch, cw], offset: [oy, ox] }| format!("crop {n} {c} {h} {w} {ch} {cw} {oy} {ox}")),
    );
    lines.extend(RESIZE_CASES.iter().map(|([n, c, h, w], [oh, ow])| format!("resize {n} {c} {h} {w} {oh} {ow}")));
    lines.extend(AFFINE_CASES.iter().map(|[n, plane]| format!("affine {n} {plane}")));
    lines.extend(
        CONCAT_CASES
            .iter()
            .map(|c| format!("concat {} {} {}", c.outer, c.inner, c.channels.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" "))),
    );
    lines.extend(PAD_CASES.iter().map(PadCase::line));
    lines.extend(SHUFFLE_CASES.iter().map(|[o, c, g, i]| format!("shuffle {o} {c} {g} {i}")));
    lines.extend(SPLITK_CASES.iter().map(|[m, n, s, ldc]| format!("splitk {m} {n} {s} {ldc}")));
    lines
}

/// Runs tools/kernel_emu/run.sh on `lines` with extra g++ flags: (exit status 0, stdout, stderr).
fn run_emulation(lines: &[String], cxxflags: &str) -> (bool, String, String) {
    let gxx = std::process::Command::new("g++").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        gxx,
        "g++ cannot be run, so the kernels cannot be checked under the host emulation (REQUIRE_KERNEL_EMU={})",
        std::env::var("REQUIRE_KERNEL_EMU").unwrap_or_default()
    );
    let mut child = std::process::Command::new("bash")
        .arg(common::root().join("tools/kernel_emu/run.sh"))
        .env("EMU_CXXFLAGS", cxxflags)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
#[cfg_attr(
    not(any(has_gxx, require_kernel_emu)),
    ignore = "g++ not found on PATH at build time: the kernels were not run under the host emulation"
)]
fn a_missing_cp_async_wait_fails_under_the_host_emulation() {
    // The emulation's own probes pass, and with every cp.async wait made a no-op (the mutant
    // DGNAM_EMU_NO_CP_ASYNC_WAIT) the probe that waits right fails, and so does each case of
    // the cp.async GEMM (sgemm_tf32_2): its tiles are read before they land. So does each
    // case when the GEMM waits one group too weakly (TC2_IN_FLIGHT, kernels/gemm.cu).
    let lines = vec!["emu_self_test".to_string()];
    let (ok, text, stderr) = run_emulation(&lines, "");
    assert!(ok && text.contains("\n0 failures"), "{text}{stderr}");
    for probe in
        ["no wait_group reads stale", "a wait_group one too weak reads stale", "copies land at their wait_group", "ldmatrix x4 .trans"]
    {
        assert!(text.lines().any(|l| l.starts_with("ok ") && l.contains(probe)), "no passing probe '{probe}':\n{text}");
    }
    let mut gemms = lines.clone();
    gemms.extend(gemm_lines().into_iter().filter(|l| l.ends_with(&format!(" {TF32_2}"))));
    let (ok, text, stderr) = run_emulation(&gemms, "-DDGNAM_EMU_NO_CP_ASYNC_WAIT");
    assert!(!ok && gemms.len() > 5, "the mutant passed:\n{text}{stderr}");
    let fails = |what: &str| text.lines().filter(|l| l.starts_with("FAIL") && l.contains(what)).count();
    assert_eq!(fails("copies land at their wait_group"), 1, "{text}");
    assert_eq!(fails("sgemm_tf32_2 "), gemms.len() - 1, "every sgemm_tf32_2 case must fail without its waits:\n{text}");
    // A wait one group too weak (tile kt read while its copies are in flight) fails as well.
    let (ok, text, stderr) = run_emulation(&gemms[1..], "-DTC2_IN_FLIGHT=2");
    assert!(!ok, "the weak-wait mutant passed:\n{text}{stderr}");
    let fails = |what: &str| text.lines().filter(|l| l.starts_with("FAIL") && l.contains(what)).count();
    assert_eq!(fails("sgemm_tf32_2 "), gemms.len() - 1, "every sgemm_tf32_2 case must fail with a wait too weak:\n{text}");
}

#[test]
#[cfg_attr(
    not(any(has_gxx, require_kernel_emu)),
    ignore = "g++ not found on PATH at build time: the kernels were not run under the host emulation"
)]
fn every_kernel_runs_right_under_the_host_emulation() {
    // tools/kernel_emu compiles kernels/*.cu with g++ under a small CUDA emulation and checks
    // each case's kernels against double-precision references (a few seconds). It guards the
    // kernels' logic on machines without a GPU.
    let input = emulation_input();
    let (ok, text, stderr) = run_emulation(&input, "");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(ok && failed.is_empty() && text.contains("\n0 failures"), "kernel emulation failed:\n{}\n{stderr}", failed.join("\n"));
    assert!(text.contains(&format!("{} cases\n", input.len())), "not every case ran:\n{text}");
    let launched: BTreeSet<&str> =
        text.lines().find_map(|l| l.strip_prefix("launched:")).expect("no `launched:` line").split_whitespace().collect();
    let missing: Vec<String> = source_entry_points()
        .iter()
        .flat_map(|(file, names)| names.iter().filter(|n| !launched.contains(n.as_str())).map(move |n| format!("{file}: {n}")))
        .collect();
    assert!(missing.is_empty(), "entry points the host emulation never launched: {}", missing.join(", "));
}

// ---------------------------------------------------------------------------------------
// GPU against CPU

/// Per element: `|gpu - cpu| <= rel * |cpu| + floor * rms(cpu)`, the rms over the compared
/// blob. A tolerance relative to the blob's largest entry would let small entries (the
/// 1000-way softmax's gradient, LRN's) be anything.
#[derive(Clone, Copy, Debug)]
struct Tol {
    rel: f32,
    floor: f32,
}

/// f32 on both backends, summed in different orders. An output summing K products of
/// uncorrelated terms has rms(out) ~ sqrt(K) * rms(term), and each backend's rounding of the
/// sum is a random walk of about 2^-24 * sqrt(K/2) * rms(out): 1.7e-5 * rms(out) at fc6's
/// K = 9216 and the generator's longest weight-gradient sums (16384 per image), 4e-5 * rms
/// for the worst of 10^5 entries. `floor` = 1e-4 of the rms leaves a margin of 2 to 3 over
/// that, and `rel` = 1e-3 covers entries far above the rms (peaked softmax outputs, whose
/// error is relative to themselves).
const F32: Tol = Tol { rel: 1e-3, floor: 1e-4 };

/// Matrix products in TF32: each input rounded to 10 mantissa bits (2.8e-4 relative rms),
/// so a product's error is about 4e-4 * rms(out), 2e-3 * rms for the worst of 10^5 entries:
/// a floor of 1e-2 * rms, loose for that and far below what a wrong fragment layout or
/// operand gives (errors of order rms).
const TF32: Tol = Tol { rel: 4e-3, floor: 1e-2 };

/// Matrix products with BF16 operands: 7 mantissa bits, a unit roundoff 8 times TF32's, so
/// about 3e-3 * rms(out) per product and 1.6e-2 * rms for the worst of 10^5 entries; a floor
/// of 8e-2 * rms still sits far below what a wrong fragment layout gives (order rms).
const BF16_TOL: Tol = Tol { rel: 3e-2, floor: 8e-2 };

/// Panics, reporting the first and the worst entries, unless `gpu` is within `tol` of `cpu`
/// everywhere (NaN matches only NaN).
fn assert_within(gpu: &[f32], cpu: &[f32], what: &str, tol: Tol) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    let rms = (cpu.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / cpu.len().max(1) as f64).sqrt() as f32;
    let allowed = |i: usize| tol.rel * cpu[i].abs() + tol.floor * rms;
    // How far past its tolerance entry i is (> 1: it fails; never NaN).
    let excess = |i: usize| {
        let (g, c) = (gpu[i], cpu[i]);
        if g.is_nan() || c.is_nan() {
            return if g.is_nan() && c.is_nan() { 0.0 } else { f32::INFINITY };
        }
        let e = (g - c).abs();
        if e == 0.0 {
            0.0
        } else {
            e / allowed(i)
        }
    };
    let bad: Vec<usize> = (0..gpu.len()).filter(|&i| excess(i) > 1.0).collect();
    if let Some(&i) = bad.first() {
        let worst = bad.iter().copied().max_by(|&a, &b| excess(a).total_cmp(&excess(b))).unwrap();
        panic!(
            "{what}: {} of {} entries differ beyond {}*|cpu| + {}*rms (rms {rms}); first index {i}: gpu {} vs cpu {} (tolerance {}); worst index {worst}: gpu {} vs cpu {} (tolerance {})",
            bad.len(), gpu.len(), tol.rel, tol.floor, gpu[i], cpu[i], allowed(i), gpu[worst], cpu[worst], allowed(worst)
        );
    }
}

fn random(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    rng.uniform_vec(n, lo, hi).into_iter().map(|v| v as f32).collect()
}

/// Forward end to end on both backends (every blob compared), then each node's forward and
/// backward (data and weight gradients) on the other backend from the CPU's values of its
/// bottoms. Backward adds into its gradients: it runs from zeroed gradients (each gradient
/// compared on its own scale) and again from random ones (accumulation). Generic over the
/// other backend so the harness itself is tested on machines without a GPU.
fn compare<B: DgnKernels<Scalar = f32>>(other: B, proto: &str, batch: usize, seed: u64, tol: Tol) {
    compare_skewed(other, proto, batch, seed, tol, EXACT)
}

fn compare_skewed<B: DgnKernels<Scalar = f32>>(other: B, proto: &str, batch: usize, seed: u64, tol: Tol, skew: Skew) {
    let assert_close = |g: &[f32], c: &[f32], what: &str| assert_within(g, c, what, tol);
    let def = parse_netdef(proto).unwrap();
    let cpu = CpuNet::<f32>::random(&def, batch, seed, Cpu::new()).unwrap();
    let gpu = Net::<B>::random(&def, batch, seed, other).unwrap();
    let mut rng = Rng::new(seed + 1);
    let inputs: Vec<Vec<f32>> = cpu.plan.inputs.iter().map(|&i| random(&mut rng, cpu.plan.blobs[i].len(), -1.0, 1.0)).collect();
    let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let mut cs = cpu.state().unwrap();
    let mut gs = gpu.state().unwrap();
    cpu.forward(&mut cs, &refs).unwrap();
    gpu.forward(&mut gs, &refs).unwrap();
    // A second pass reuses every buffer and must give the same answer.
    gpu.forward(&mut gs, &refs).unwrap();
    for (id, blob) in cpu.plan.blobs.iter().enumerate() {
        let mut g = gpu.backend.download(gs.value(id)).unwrap();
        if !cpu.plan.inputs.contains(&id) {
            g = scaled(g, skew.forward);
        }
        assert_close(&g, cs.value(id), &format!("{} forward, blob '{}' ({id})", cpu.plan.name, blob.name));
    }
    let (cb, gb) = (&cpu.backend, &gpu.backend);
    let upload = |v: &[f32]| {
        let mut b = gb.alloc(v.len()).unwrap();
        gb.upload(&mut b, v).unwrap();
        b
    };
    for (i, node) in cpu.plan.nodes.iter().enumerate() {
        let what = |s: &str| format!("layer '{}' ({}) {s}", node.layer, node.type_name);
        let xs: Vec<&Vec<f32>> = node.bottoms.iter().map(|&b| cs.value(b)).collect();
        let gx: Vec<_> = xs.iter().map(|x| upload(x)).collect();
        let gx_refs: Vec<_> = gx.iter().collect();
        let mut cy: Vec<Vec<f32>> = node.tops.iter().map(|&t| vec![0.0; cpu.plan.blobs[t].len()]).collect();
        let mut gy: Vec<_> = node.tops.iter().map(|&t| gb.alloc(cpu.plan.blobs[t].len()).unwrap()).collect();
        let (mut caux, mut gaux) = (Default::default(), Default::default());
        dgnam::ops::forward(cb, &node.op, cpu.node_params(i), &xs, &mut cy, &mut caux).unwrap();
        dgnam::ops::forward(gb, &node.op, gpu.node_params(i), &gx_refs, &mut gy, &mut gaux).unwrap();
        for (t, (g, c)) in gy.iter().zip(&cy).enumerate() {
            assert_close(&scaled(gb.download(g).unwrap(), skew.forward), c, &what(&format!("forward top {t}")));
        }
        if let Op::Copy = node.op {
            continue;
        }
        let dys: Vec<Vec<f32>> = cy.iter().map(|c| random(&mut rng, c.len(), -1.0, 1.0)).collect();
        let gdys: Vec<_> = dys.iter().map(|d| upload(d)).collect();
        let (dy, gdy): (Vec<&Vec<f32>>, Vec<_>) = (dys.iter().collect(), gdys.iter().collect());
        let gy0 = upload(&cy[0]);
        for from_zero in [true, false] {
            let start = |len: usize, rng: &mut Rng| if from_zero { vec![0.0; len] } else { random(rng, len, -0.5, 0.5) };
            let mut cdx: Vec<Vec<f32>> = xs.iter().map(|x| start(x.len(), &mut rng)).collect();
            let mut cdp: Vec<Vec<f32>> = node.params.iter().map(|p| start(p.len(), &mut rng)).collect();
            let mut gdx: Vec<_> = cdx.iter().map(|v| upload(v)).collect();
            let mut gdp: Vec<_> = cdp.iter().map(|v| upload(v)).collect();
            let (dx_before, dp_before) = (cdx.clone(), cdp.clone());
            dgnam::ops::backward(cb, &node.op, cpu.node_params(i), &xs, &cy[0], &dy, &caux, &mut cdx, Some(&mut cdp)).unwrap();
            dgnam::ops::backward(gb, &node.op, gpu.node_params(i), &gx_refs, &gy0, &gdy, &gaux, &mut gdx, Some(&mut gdp)).unwrap();
            let from = if from_zero { "from zeroed gradients" } else { "from random gradients" };
            for (b, (g, c)) in gdx.iter().zip(&cdx).enumerate() {
                let got = skew_added(gb.download(g).unwrap(), &dx_before[b], skew.data);
                assert_close(&got, c, &what(&format!("backward {from}, gradient of bottom {b}")));
            }
            for (p, (g, c)) in gdp.iter().zip(&cdp).enumerate() {
                let got = skew_added(gb.download(g).unwrap(), &dp_before[p], skew.param);
                assert_close(&got, c, &what(&format!("backward {from}, gradient of parameter {p}")));
            }
        }
    }
}

/// A deliberate error of `gain - 1` (relative) put into the other backend's forward outputs,
/// or into what its backward added to the data or to the parameter gradients: the harness
/// must catch it.
#[derive(Clone, Copy)]
struct Skew {
    forward: f32,
    data: f32,
    param: f32,
}

const EXACT: Skew = Skew { forward: 1.0, data: 1.0, param: 1.0 };

/// `got = before + (got - before) * gain`: what a backward pass added, scaled.
fn skew_added(got: Vec<f32>, before: &[f32], gain: f32) -> Vec<f32> {
    got.iter().zip(before).map(|(&v, &b0)| b0 + (v - b0) * gain).collect()
}

fn scaled(got: Vec<f32>, gain: f32) -> Vec<f32> {
    got.into_iter().map(|v| v * gain).collect()
}

/// The message `f` panics with; fails if it does not.
fn panic_message(f: impl FnOnce()) -> String {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let e = r.expect_err("the comparison harness missed a deliberate error");
    e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

fn op_net(body: &str, input_shape: &str) -> String {
    format!("name: \"op\"\ninput: \"data\"\ninput_shape {{ {input_shape} }}\n{body}")
}

/// The cases of these op families from their tables in `dgnam::ops` (each family's
/// `cases.rs`), keeping those whose layers mention `kind` when given.
fn cases_of(families: &[&str], kind: Option<&str>) -> Vec<Case> {
    let v: Vec<Case> =
        cases::all().into_iter().filter(|c| families.contains(&c.family) && kind.is_none_or(|k| c.layers.contains(k))).collect();
    assert!(!v.is_empty(), "no cases for {families:?}");
    v
}

fn compare_ops(cases: &[Case], batches: &[usize]) {
    if gpu().is_none() {
        return;
    }
    for case in cases {
        for &batch in batches {
            compare(Cuda::new(Precision::F32).unwrap(), &case.prototxt(), batch, 7 + batch as u64, F32);
        }
    }
}

/// A CUDA backend computing matrix products in TF32.
fn tf32() -> Option<Cuda> {
    let mut cuda = gpu()?;
    cuda.set_precision(Precision::Tf32).expect("TF32 needs compute capability 8.0");
    Some(cuda)
}

#[test]
fn the_comparison_harness_passes_an_exact_copy_and_catches_small_errors() {
    for case in cases::all() {
        compare(Cpu::<f32>::new(), &case.prototxt(), 2, 3, F32);
    }
    let softmax = op_net("layer { name: \"s\" type: \"Softmax\" bottom: \"data\" top: \"s\" }", "dim: 3 dim: 1000");
    compare(Cpu::<f32>::new(), &softmax, 8, 3, F32);
    // 1 % off in one forward output.
    let conv = cases_of(&["conv"], Some("Convolution"))[0].prototxt();
    let msg = panic_message(|| compare_skewed(Cpu::<f32>::new(), &conv, 2, 3, F32, Skew { forward: 1.01, ..EXACT }));
    assert!(msg.contains("forward") && msg.contains("differ"), "{msg}");
    // 1 % off in the 1000-way softmax's gradient (entries near 1e-3): seen from zeroed
    // gradients; from random ones (+-0.5) it is below f32 noise, as it was for the old
    // tolerance of 1e-4 of the largest entry.
    let msg = panic_message(|| compare_skewed(Cpu::<f32>::new(), &softmax, 8, 3, F32, Skew { data: 1.01, ..EXACT }));
    assert!(msg.contains("backward from zeroed gradients, gradient of bottom 0") && msg.contains("differ"), "{msg}");
    // 1 % off in the weight gradients.
    let msg = panic_message(|| compare_skewed(Cpu::<f32>::new(), &conv, 2, 3, F32, Skew { param: 1.01, ..EXACT }));
    assert!(msg.contains("backward from zeroed gradients, gradient of parameter 0") && msg.contains("differ"), "{msg}");
}

#[test]
fn the_tolerance_is_per_element() {
    let cpu = [1.0f32, -2.0, 1e-3, 0.0];
    assert_within(&cpu, &cpu, "same", F32);
    // rms(cpu) = 1.118: each entry may move 1e-3 * |cpu| + 1.118e-4.
    assert_within(&[1.0011, -2.002, 1.1e-3, -1e-4], &cpu, "within", F32);
    let msg = panic_message(|| assert_within(&[1.0, -2.0, 1.3e-3, 0.0], &cpu, "small entry", F32));
    assert!(msg.contains("1 of 4 entries differ") && msg.contains("index 2"), "{msg}");
    let msg = panic_message(|| assert_within(&[1.0, -2.0, 1e-3, f32::NAN], &cpu, "nan", F32));
    assert!(msg.contains("index 3"), "{msg}");
    assert_within(&[f32::NAN], &[f32::NAN], "nan matches nan", F32);
}

/// The ops' Caffe fixtures (`cases::fixtures()`) on the GPU, against Caffe's own outputs, at
/// the relative error the CPU check uses (`tests/caffe_models.rs`), and against the CPU.
#[test]
#[ignore = "needs a CUDA GPU"]
fn every_op_fixture_matches_caffe_on_the_gpu() {
    if gpu().is_none() {
        return;
    }
    for f in cases::fixtures() {
        let LoadedFixture { model, input, expected } = load_fixture(&f);
        let net = model.net_on(input.shape[0], Cuda::new(Precision::F32).unwrap()).unwrap();
        let mut st = net.state().unwrap();
        net.forward(&mut st, &[&input.data]).unwrap();
        let out = net.plan.layer_output("output").unwrap();
        let got = net.backend.download(st.value(out)).unwrap();
        assert_matches_caffe(&f, "on the GPU", &net.plan.blobs[out].shape, &got, &expected);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn convolution_matches_the_cpu() {
    compare_ops(&cases_of(&["conv"], Some("'Convolution'")), &[1, 3]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn deconvolution_matches_the_cpu() {
    compare_ops(&cases_of(&["conv"], Some("'Deconvolution'")), &[1, 3]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn inner_product_matches_the_cpu() {
    compare_ops(&cases_of(&["inner_product"], None), &[1, 4]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn pooling_matches_the_cpu() {
    compare_ops(&cases_of(&["pool"], None), &[1, 2]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn lrn_relu_softmax_and_copies_match_the_cpu() {
    compare_ops(&cases_of(&["lrn", "activation", "copy"], None), &[1, 2]);
    compare_ops(&cases_of(&["softmax"], None), &[1, 8]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn pad_matches_the_cpu() {
    compare_ops(&cases_of(&["pad"], None), &[1, 2]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn channel_shuffles_match_the_cpu() {
    compare_ops(&cases_of(&["shuffle"], None), &[1, 2]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn concat_slice_eltwise_batchnorm_scale_match_the_cpu() {
    compare_ops(&cases_of(&["concat", "eltwise", "norm"], None), &[1, 2]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn crop_mean_abs_and_dgn_update_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    let mut rng = Rng::new(3);
    let s = [2, 3, 19, 17];
    let (offset, hw) = ([4, 3], [11, 9]);
    let src = random(&mut rng, s.iter().product(), -1.0, 1.0);
    let up = |b: &Cuda, v: &[f32]| {
        let mut d = b.alloc(v.len()).unwrap();
        b.upload(&mut d, v).unwrap();
        d
    };
    let mut cdst = vec![0.0; 2 * 3 * 11 * 9];
    let mut gdst = gpu.alloc(cdst.len()).unwrap();
    cpu.crop(&src, s, offset, hw, &mut cdst).unwrap();
    gpu.crop(&up(&gpu, &src), s, offset, hw, &mut gdst).unwrap();
    let assert_close = |g: &[f32], c: &[f32], what: &str| assert_within(g, c, what, F32);
    assert_close(&gpu.download(&gdst).unwrap(), &cdst, "crop");
    let dy = random(&mut rng, cdst.len(), -1.0, 1.0);
    for (start, from) in [(vec![0.0; src.len()], "from zero"), (src.clone(), "from random")] {
        let mut cdx = start.clone();
        let mut gdx = up(&gpu, &start);
        cpu.crop_backward(&dy, s, offset, hw, &mut cdx).unwrap();
        gpu.crop_backward(&up(&gpu, &dy), s, offset, hw, &mut gdx).unwrap();
        assert_close(&gpu.download(&gdx).unwrap(), &cdx, &format!("crop backward {from}"));
    }

    let (rows, cols) = (5, 4096);
    let grad = random(&mut rng, rows * cols, -1e-3, 1e-3);
    let ggrad = up(&gpu, &grad);
    assert_close(&gpu.mean_abs_rows(&ggrad, rows, cols).unwrap(), &cpu.mean_abs_rows(&grad, rows, cols).unwrap(), "mean_abs_rows");
    let code = random(&mut rng, rows * cols, -1.0, 3.0);
    let upper = random(&mut rng, cols, 0.5, 2.0);
    let scale = [Some(100.0), None, Some(-50.0), Some(1e3), None];
    for (bound, decay) in [(true, 0.99), (false, 1.0), (true, 0.0)] {
        let mut ccode = code.clone();
        let mut gcode = up(&gpu, &code);
        let gupper = up(&gpu, &upper);
        cpu.dgn_update(&mut ccode, &grad, rows, cols, &scale, bound.then_some(&upper), decay).unwrap();
        gpu.dgn_update(&mut gcode, &ggrad, rows, cols, &scale, bound.then_some(&gupper), decay).unwrap();
        let got = gpu.download(&gcode).unwrap();
        assert_close(&got, &ccode, "dgn_update");
        for r in [1, 4] {
            assert_eq!(got[r * cols..(r + 1) * cols], code[r * cols..(r + 1) * cols], "a stopped row changed");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn matrix_products_in_tf32_match_the_cpu_to_tf32_rounding() {
    // TF32 keeps 10 mantissa bits (relative rounding 2^-11 per input): see `TF32`.
    if gpu().is_none() {
        return;
    }
    for case in cases_of(&["conv", "inner_product"], None) {
        for batch in [1, 3] {
            compare(tf32().unwrap(), &case.prototxt(), batch, 7 + batch as u64, TF32);
        }
    }
    let big = "layer { name: \"l\" type: \"Convolution\" bottom: \"data\" top: \"l\" convolution_param { num_output: 96 kernel_size: 5 pad: 2 } }";
    compare(tf32().unwrap(), &op_net(big, "dim: 2 dim: 64 dim: 27 dim: 27"), 2, 5, TF32);
}

/// Each version of the TF32 product (`gemm_tf32`: sgemm_tf32, sgemm_tf32_2), forced, and the
/// tuner's choice, on every convolution and inner-product case and a convolution with
/// 128-wide tiles to fill (M = 96, N = 729, K = 1600), within TF32 rounding of the CPU.
#[test]
#[ignore = "needs a CUDA GPU"]
fn every_tf32_gemm_version_matches_the_cpu_to_tf32_rounding() {
    if gpu().is_none() {
        return;
    }
    let big = "layer { name: \"l\" type: \"Convolution\" bottom: \"data\" top: \"l\" convolution_param { num_output: 96 kernel_size: 5 pad: 2 } }";
    let mut protos: Vec<String> = cases_of(&["conv", "inner_product"], None).iter().map(|c| c.prototxt()).collect();
    protos.push(op_net(big, "dim: 2 dim: 64 dim: 27 dim: 27"));
    for proto in &protos {
        for v in [Some(1), Some(2), None] {
            for batch in [1, 3] {
                let cuda = tf32().unwrap();
                cuda.force_kernel_version("gemm_tf32", v);
                compare(cuda, proto, batch, 7 + batch as u64, TF32);
            }
        }
    }
}

/// `--precision bf16` routes every matrix product to `sgemm_bf16`: the convolution and
/// inner-product cases and the 96 x 729 x 1600 product within BF16 rounding of the CPU.
#[test]
#[ignore = "needs a CUDA GPU"]
fn matrix_products_in_bf16_match_the_cpu_to_bf16_rounding() {
    if gpu().is_none() {
        return;
    }
    let bf16 = || {
        let mut cuda = gpu().unwrap();
        cuda.set_precision(Precision::Bf16).expect("BF16 needs compute capability 8.0");
        cuda
    };
    let big = "layer { name: \"l\" type: \"Convolution\" bottom: \"data\" top: \"l\" convolution_param { num_output: 96 kernel_size: 5 pad: 2 } }";
    for case in cases_of(&["conv", "inner_product"], None) {
        for batch in [1, 3] {
            compare(bf16(), &case.prototxt(), batch, 7 + batch as u64, BF16_TOL);
        }
    }
    compare(bf16(), &op_net(big, "dim: 2 dim: 64 dim: 27 dim: 27"), 2, 5, BF16_TOL);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn tf32_lands_close_to_f32_on_the_dgn_am_loop() {
    let Some(cuda) = gpu() else { return };
    let opts = dgnam::bench::StepOptions::resolve(
        Some(shipped("caffenet.prototxt")),
        Some(shipped("generator-fc6.prototxt")),
        Some("4"),
        None,
        false,
    )
    .unwrap();
    let e = dgnam::bench::precision_error(&cuda, &opts, 4, 20).unwrap();
    eprint!("{}", e.row());
    assert!(e.objective < 1e-2, "objective: {e:?}");
    // Loose: a wrong fragment layout or operand gives errors of order 1.
    assert!(e.update < 0.2, "first update: {e:?}");
    assert!(e.objective > 0.0 && e.update > 0.0, "TF32 gave bit-identical results to f32: is it in use? {e:?}");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn caffenet_matches_the_cpu_at_batch_1_and_8() {
    let proto = std::fs::read_to_string(shipped("caffenet.prototxt")).unwrap();
    for batch in [1, 8] {
        let Some(cuda) = gpu() else { return };
        compare(cuda, &proto, batch, 11, F32);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn fc6_generator_matches_the_cpu_at_batch_1_and_8() {
    let proto = std::fs::read_to_string(shipped("generator-fc6.prototxt")).unwrap();
    for batch in [1, 8] {
        let Some(cuda) = gpu() else { return };
        compare(cuda, &proto, batch, 12, F32);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn input_gradients_run_on_the_gpu() {
    // The app's path end to end on a small net without max pooling (no near-tie winners).
    let Some(cuda) = gpu() else { return };
    let proto = "name: \"small\"\ninput: \"data\"\ninput_shape { dim: 3 dim: 3 dim: 9 dim: 8 }\n\
        layer { name: \"conv1\" type: \"Convolution\" bottom: \"data\" top: \"conv1\" convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }\n\
        layer { name: \"relu1\" type: \"ReLU\" bottom: \"conv1\" top: \"conv1\" relu_param { negative_slope: 0.1 } }\n\
        layer { name: \"norm1\" type: \"LRN\" bottom: \"conv1\" top: \"norm1\" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 } }\n\
        layer { name: \"pool1\" type: \"Pooling\" bottom: \"norm1\" top: \"pool1\" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }\n\
        layer { name: \"fc\" type: \"InnerProduct\" bottom: \"pool1\" top: \"fc\" inner_product_param { num_output: 5 } }\n\
        layer { name: \"prob\" type: \"Softmax\" bottom: \"fc\" top: \"prob\" }\n";
    let def = parse_netdef(proto).unwrap();
    let cpu = CpuNet::<f32>::random(&def, 3, 5, Cpu::new()).unwrap();
    let gpu = Net::<Cuda>::random(&def, 3, 5, cuda).unwrap();
    let x = random(&mut Rng::new(9), 3 * 3 * 9 * 8, -1.0, 1.0);
    for (layer, unit) in [("prob", 2), ("fc", 1), ("conv1", 3)] {
        let u = dgnam::graph::UnitRef { unit, xy: None };
        let g = dgnam::app::input_gradient(&gpu, &x, layer, u).unwrap();
        let c = dgnam::app::input_gradient(&cpu, &x, layer, u).unwrap();
        assert_within(&g, &c, &format!("input gradient of {layer}[{unit}]"), F32);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn resize_and_input_space_conversion_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    let mut rng = Rng::new(4);
    let up = |v: &[f32]| {
        let mut d = gpu.alloc(v.len()).unwrap();
        gpu.upload(&mut d, v).unwrap();
        d
    };
    // The generator's 256 to Inception's 299, down to 224 (as a resize, which the size
    // rule does not pick but the kernel must get right), and a mixed one.
    for (s, hw) in [([2, 3, 256, 256], [299, 299]), ([1, 3, 256, 256], [224, 224]), ([2, 3, 31, 17], [12, 40])] {
        let src = random(&mut rng, s.iter().product(), -120.0, 120.0);
        let n = s[0] * s[1] * hw[0] * hw[1];
        let (mut cdst, mut gdst) = (vec![0.0; n], gpu.alloc(n).unwrap());
        cpu.resize(&src, s, hw, &mut cdst).unwrap();
        gpu.resize(&up(&src), s, hw, &mut gdst).unwrap();
        assert_within(&gpu.download(&gdst).unwrap(), &cdst, &format!("resize {s:?} to {hw:?}"), F32);
        let dy = random(&mut rng, n, -1.0, 1.0);
        for start in [vec![0.0; src.len()], random(&mut rng, src.len(), -1.0, 1.0)] {
            let mut cdx = start.clone();
            let mut gdx = up(&start);
            cpu.resize_backward(&dy, s, hw, &mut cdx).unwrap();
            gpu.resize_backward(&up(&dy), s, hw, &mut gdx).unwrap();
            assert_within(&gpu.download(&gdx).unwrap(), &cdx, &format!("resize backward {s:?} to {hw:?}"), F32);
        }
    }
    let map = dgnam::synth::view::caffe_to(dgnam::ir::InputSpace::Torchvision).unwrap();
    let s = [3, 3, 227, 227];
    let x = random(&mut rng, s.iter().product(), -120.0, 120.0);
    let (mut cy, mut gy) = (vec![0.0; x.len()], gpu.alloc(x.len()).unwrap());
    cpu.channel_affine(&x, s, &map, &mut cy).unwrap();
    gpu.channel_affine(&up(&x), s, &map, &mut gy).unwrap();
    assert_within(&gpu.download(&gy).unwrap(), &cy, "channel_affine", F32);
    let dy = random(&mut rng, x.len(), -1.0, 1.0);
    for start in [vec![0.0; x.len()], random(&mut rng, x.len(), -1.0, 1.0)] {
        let mut cdx = start.clone();
        let mut gdx = up(&start);
        cpu.channel_affine_backward(&dy, s, &map, &mut cdx).unwrap();
        gpu.channel_affine_backward(&up(&dy), s, &map, &mut gdx).unwrap();
        assert_within(&gpu.download(&gdx).unwrap(), &cdx, "channel_affine backward", F32);
    }
}

/// The DGN-AM loop on `backend` with the tiny generator and classifier of the synthesis
/// tests: per-iteration activations and the final codes.
/// The classifier takes `side` x `side` input (the generator's 8 x 8 cropped or resized to
/// it) in `space`.
fn tiny_dgn<B: DgnKernels<Scalar = f32>>(
    gen_backend: B,
    clf_backend: B,
    units: &[usize],
    space: dgnam::ir::InputSpace,
    side: usize,
) -> (Vec<Vec<f64>>, Vec<Vec<f32>>) {
    use dgnam::synth::dgn::{Dgn, Objective, Schedule};
    let text = |p: &str| std::fs::read_to_string(common::fixture(p)).unwrap();
    let gen = Net::random(&parse_netdef(&text("tiny/generator.prototxt")).unwrap(), units.len(), 21, gen_backend).unwrap();
    let clf_text = text("tiny/classifier.prototxt").replace("dim: 6 dim: 6", &format!("dim: {side} dim: {side}"));
    let clf = Net::random(&parse_netdef(&clf_text).unwrap(), units.len(), 22, clf_backend).unwrap();
    let fc8 = clf.plan.layer_output("fc8").unwrap();
    let bounds = [3.0f32, 2.0, 4.0, 1.5, 3.0, 2.5, 5.0, 2.0];
    let mut dgn = Dgn::in_space(&gen, &clf, fc8, Some(&bounds), space).unwrap();
    let init: Vec<f32> = units.iter().flat_map(|&u| dgnam::synth::run::random_code(0, u, 8)).collect();
    let objectives: Vec<Objective> = units.iter().map(|&u| Objective::Single(u)).collect();
    let r = dgn.run(&init, &objectives, &Schedule { iters: 10, lr: 2.0, lr_end: 1e-10, decay: 0.9 }, None, &mut |_| {}).unwrap();
    (r.activations, r.codes)
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn the_dgn_am_loop_runs_on_the_gpu_like_on_the_cpu() {
    let Some(cuda) = gpu() else { return };
    use dgnam::ir::InputSpace;
    let units = [0usize, 3, 4];
    // Caffe space cropped (the paper's case), torchvision cropped and resized up.
    for (space, side) in [(InputSpace::Caffe, 6), (InputSpace::Torchvision, 6), (InputSpace::Torchvision, 11)] {
        let (ga, gc) = tiny_dgn(cuda.share(), cuda.share(), &units, space, side);
        let (ca, cc) = tiny_dgn(Cpu::new(), Cpu::new(), &units, space, side);
        assert_dgn_close(&units, (&ga, &gc), (&ca, &cc));
    }
}

fn assert_dgn_close(units: &[usize], (ga, gc): (&[Vec<f64>], &[Vec<f32>]), (ca, cc): (&[Vec<f64>], &[Vec<f32>])) {
    for n in 0..units.len() {
        let g: Vec<f32> = ga[n].iter().map(|&v| v as f32).collect();
        let c: Vec<f32> = ca[n].iter().map(|&v| v as f32).collect();
        // Normalized steps amplify rounding a little over 10 iterations.
        let scale = c.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in g.iter().zip(&c).enumerate() {
            assert!((x - y).abs() <= 1e-3 * scale + 1e-4, "unit {}: iteration {i}: gpu {x} cpu {y}", units[n]);
        }
        let cs = cc[n].iter().fold(0f32, |m, v| m.max(v.abs()));
        for (x, y) in gc[n].iter().zip(&cc[n]) {
            assert!((x - y).abs() <= 1e-3 * cs + 1e-4, "unit {}: final code gpu {x} cpu {y}", units[n]);
        }
    }
}

/// Forward output and input gradient of a random net on `cuda` (one seed for weights, input
/// and the output's gradient).
fn forward_backward(cuda: Cuda, prototxt: &str, batch: usize, seed: u64) -> Vec<Vec<f32>> {
    let net = Net::random(&parse_netdef(prototxt).unwrap(), batch, seed, cuda).unwrap();
    let mut rng = Rng::new(seed);
    let input_blob = net.plan.inputs[0];
    let input = random(&mut rng, net.plan.blobs[input_blob].len(), -1.0, 1.0);
    let mut st = net.state().unwrap();
    net.forward(&mut st, &[&input]).unwrap();
    let out = net.plan.last_output();
    let y = net.backend.download(st.value(out)).unwrap();
    let dy = random(&mut rng, y.len(), -1.0, 1.0);
    net.backward(&mut st, &[(out, &dy)], false).unwrap();
    let dx = net.backend.download(st.grad(input_blob).expect("the input's gradient")).unwrap();
    vec![y, dx]
}

/// The column kernels' versions (im2col, col2im; `tune`) compute the same values in the same
/// order, so every convolution and deconvolution case gives the same bits with each (the
/// transpose pass kept on its column path, whose kernels these are). Left to the tuner, the
/// versions are timed once per shape and the choice is read back from the cache file by a
/// new backend, which measures nothing.
#[test]
#[ignore = "needs a CUDA GPU"]
fn column_kernel_versions_give_the_same_bits_and_are_measured_once() {
    if gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dgnam-test-{}-versions", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("DGNAM_CACHE_DIR", &dir);
    for case in cases_of(&["conv"], None) {
        for batch in [1, 3] {
            let with = |v: Option<usize>| {
                let cuda = Cuda::new(Precision::F32).unwrap();
                cuda.force_kernel_version("im2col", v);
                cuda.force_kernel_version("col2im", v);
                cuda.force_kernel_version("transpose", Some(1));
                forward_backward(cuda, &case.prototxt(), batch, 11)
            };
            let one = with(Some(1));
            assert_eq!(one, with(Some(2)), "{} at batch {batch}: version 2 differs from version 1", case.layers);
            assert_eq!(one, with(None), "{} at batch {batch}: the tuner's choice differs", case.layers);
        }
    }
    let case = &cases_of(&["conv"], Some("'Deconvolution'"))[0];
    let measured = |cuda: Cuda| {
        let probe = cuda.share();
        forward_backward(cuda, &case.prototxt(), 2, 5);
        probe.versions_measured()
    };
    let first = measured(Cuda::new(Precision::F32).unwrap());
    assert!(dir.join("kernel-versions.json").exists(), "no cache file in {}", dir.display());
    assert_eq!(measured(Cuda::new(Precision::F32).unwrap()), 0, "a new backend measured again ({first} the first time)");
    std::env::remove_var("DGNAM_CACHE_DIR");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Version 3 of the transpose pass (`conv_transpose_narrow`, inputs of at most 3 channels)
/// sums in an order of its own, so it is held to the CPU within f32 rounding rather than to
/// version 1's bits: every convolution case, and DGN-AM's two 3-channel ends at full size
/// (deconv0's forward, 32 -> 3 channels at 128 x 128 -> 256 x 256, and conv1's backward-data,
/// 3 -> 96 channels at 227 x 227, k11 s4), each with version 1, version 3 and the tuner's
/// choice.
#[test]
#[ignore = "needs a CUDA GPU"]
fn the_narrow_transpose_pass_matches_the_cpu_in_every_version() {
    if gpu().is_none() {
        return;
    }
    let deconv0 = "layer { name: \"l\" type: \"Deconvolution\" bottom: \"data\" top: \"l\" convolution_param { num_output: 3 kernel_size: 4 stride: 2 pad: 1 } }";
    let conv1 = "layer { name: \"l\" type: \"Convolution\" bottom: \"data\" top: \"l\" convolution_param { num_output: 96 kernel_size: 11 stride: 4 } }";
    let mut protos: Vec<String> = cases_of(&["conv"], None).iter().map(|c| c.prototxt()).collect();
    protos.push(op_net(deconv0, "dim: 2 dim: 32 dim: 128 dim: 128"));
    protos.push(op_net(conv1, "dim: 2 dim: 3 dim: 227 dim: 227"));
    for proto in &protos {
        for v in [Some(1), Some(3), None] {
            let cuda = Cuda::new(Precision::F32).unwrap();
            cuda.force_kernel_version("transpose", v);
            compare(cuda, proto, 2, 13, F32);
        }
    }
}

/// Version 2 of the transpose pass (`conv_transpose_implicit`, the implicit GEMM by
/// sub-pixel phases) against the CPU within f32 rounding, and against version 1 bit for bit
/// (it sums in the column path's order; the host emulation checks the same bits): every
/// convolution and deconvolution case, the fc6 generator's six stride-2 deconvolutions
/// (deconv5-deconv0, k4 s2 p1: 4 phases of 2 x 2 taps, whose forward pass this is) and its
/// stride-1 layers (conv5_1, conv4_1, conv3_1, whose backward-data it is), and CaffeNet's
/// conv1 (k11 s4: 16 phases of at most 3 x 3 taps) to conv5 (stride 1, groups), at their
/// real sizes and batch 2, each with versions 1, 2, 3 (where it applies, else 1) and the
/// tuner's choice.
#[test]
#[ignore = "needs a CUDA GPU"]
fn the_implicit_transpose_pass_matches_the_cpu_in_every_version() {
    if gpu().is_none() {
        return;
    }
    let layer = |kind: &str, params: &str| {
        format!("layer {{ name: \"l\" type: \"{kind}\" bottom: \"data\" top: \"l\" convolution_param {{ {params} }} }}")
    };
    let mut protos: Vec<String> = cases_of(&["conv"], None).iter().map(|c| c.prototxt()).collect();
    let deconv = "kernel_size: 4 stride: 2 pad: 1";
    for (kind, params, input) in [
        ("Deconvolution", format!("num_output: 256 {deconv}"), "dim: 2 dim: 256 dim: 4 dim: 4"),
        ("Deconvolution", format!("num_output: 256 {deconv}"), "dim: 2 dim: 512 dim: 8 dim: 8"),
        ("Deconvolution", format!("num_output: 128 {deconv}"), "dim: 2 dim: 256 dim: 16 dim: 16"),
        ("Deconvolution", format!("num_output: 64 {deconv}"), "dim: 2 dim: 128 dim: 32 dim: 32"),
        ("Deconvolution", format!("num_output: 32 {deconv}"), "dim: 2 dim: 64 dim: 64 dim: 64"),
        ("Deconvolution", format!("num_output: 3 {deconv}"), "dim: 2 dim: 32 dim: 128 dim: 128"),
        ("Convolution", "num_output: 512 kernel_size: 3 pad: 1".into(), "dim: 2 dim: 256 dim: 8 dim: 8"),
        ("Convolution", "num_output: 256 kernel_size: 3 pad: 1".into(), "dim: 2 dim: 256 dim: 16 dim: 16"),
        ("Convolution", "num_output: 128 kernel_size: 3 pad: 1".into(), "dim: 2 dim: 128 dim: 32 dim: 32"),
        ("Convolution", "num_output: 96 kernel_size: 11 stride: 4".into(), "dim: 2 dim: 3 dim: 227 dim: 227"),
        ("Convolution", "num_output: 256 kernel_size: 5 pad: 2 group: 2".into(), "dim: 2 dim: 96 dim: 27 dim: 27"),
        ("Convolution", "num_output: 384 kernel_size: 3 pad: 1".into(), "dim: 2 dim: 256 dim: 13 dim: 13"),
        ("Convolution", "num_output: 384 kernel_size: 3 pad: 1 group: 2".into(), "dim: 2 dim: 384 dim: 13 dim: 13"),
        ("Convolution", "num_output: 256 kernel_size: 3 pad: 1 group: 2".into(), "dim: 2 dim: 384 dim: 13 dim: 13"),
    ] {
        protos.push(op_net(&layer(kind, &params), input));
    }
    for proto in &protos {
        let run = |v: Option<usize>| {
            let cuda = Cuda::new(Precision::F32).unwrap();
            cuda.force_kernel_version("transpose", v);
            compare(cuda.share(), proto, 2, 19, F32);
            forward_backward(cuda, proto, 2, 19)
        };
        let one = run(Some(1));
        assert_eq!(one, run(Some(2)), "version 2 differs from version 1's bits in\n{proto}");
        for v in [Some(3), None] {
            run(v);
        }
    }
}

/// Version 2 of the forward pass (`conv_forward_implicit`, the implicit GEMM) against the CPU
/// within f32 rounding: every convolution and deconvolution case (a deconvolution's
/// backward-data is this pass), CaffeNet's conv1-conv5 and the fc6 generator's stride-1
/// layers (conv5_1, conv4_1, conv3_1, whose backward-data it is) and one of its stride-2
/// deconvolutions at their real sizes, batch 2, each with version 1, version 2 and the
/// tuner's choice.
#[test]
#[ignore = "needs a CUDA GPU"]
fn the_implicit_gemm_forward_matches_the_cpu_in_every_version() {
    if gpu().is_none() {
        return;
    }
    let layer = |kind: &str, params: &str| {
        format!("layer {{ name: \"l\" type: \"{kind}\" bottom: \"data\" top: \"l\" convolution_param {{ {params} }} }}")
    };
    let mut protos: Vec<String> = cases_of(&["conv"], None).iter().map(|c| c.prototxt()).collect();
    for (kind, params, input) in [
        ("Convolution", "num_output: 96 kernel_size: 11 stride: 4", "dim: 2 dim: 3 dim: 227 dim: 227"),
        ("Convolution", "num_output: 256 kernel_size: 5 pad: 2 group: 2", "dim: 2 dim: 96 dim: 27 dim: 27"),
        ("Convolution", "num_output: 384 kernel_size: 3 pad: 1", "dim: 2 dim: 256 dim: 13 dim: 13"),
        ("Convolution", "num_output: 384 kernel_size: 3 pad: 1 group: 2", "dim: 2 dim: 384 dim: 13 dim: 13"),
        ("Convolution", "num_output: 256 kernel_size: 3 pad: 1 group: 2", "dim: 2 dim: 384 dim: 13 dim: 13"),
        ("Deconvolution", "num_output: 512 kernel_size: 3 pad: 1", "dim: 2 dim: 256 dim: 8 dim: 8"),
        ("Deconvolution", "num_output: 256 kernel_size: 3 pad: 1", "dim: 2 dim: 256 dim: 16 dim: 16"),
        ("Deconvolution", "num_output: 128 kernel_size: 3 pad: 1", "dim: 2 dim: 128 dim: 32 dim: 32"),
        ("Deconvolution", "num_output: 64 kernel_size: 4 stride: 2 pad: 1", "dim: 2 dim: 128 dim: 32 dim: 32"),
    ] {
        protos.push(op_net(&layer(kind, params), input));
    }
    for proto in &protos {
        for v in [Some(1), Some(2), None] {
            let cuda = Cuda::new(Precision::F32).unwrap();
            cuda.force_kernel_version("conv_forward", v);
            compare(cuda, proto, 2, 17, F32);
        }
    }
}

/// `train-generator --device cuda` (issue 14) through the library, as the CLI calls it: the
/// shipped prior's prototxt trained on LeNet's ip1 with the shipped digits. The GPU run's
/// losses fall as the CPU's do, step by step within float rounding, and the generator it
/// writes holds the CPU run's weights to a small fraction of their scale.
#[test]
#[ignore = "needs a CUDA GPU"]
fn training_the_prior_on_the_gpu_follows_the_cpu() {
    use clap::Parser;
    use dgnam::io::{Device, Silent};
    use dgnam::train::TrainOptions;
    use dgnam::weights::WeightsFile;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        o: TrainOptions,
    }
    if gpu().is_none() {
        return;
    }
    let dir = common::scratch("cuda-train");
    let net = dir.join("lenet.dgnw");
    let lenet = common::fixture("caffe/lenet_mnist");
    dgnam::convert::convert(&lenet.join("lenet.prototxt"), &lenet.join("lenet_iter_10000.caffemodel"), &net).unwrap();
    let run = |device: Device, name: &str| {
        let out = dir.join(name).join("g.dgnw");
        let (g, d) = (shipped("demo/generator-ip1.prototxt"), shipped("demo/digits.npy"));
        let args = ["train-generator", "--net", net.to_str().unwrap(), "--layer", "ip1", "--generator-def", g.to_str().unwrap()];
        let more = ["--images-npy", d.to_str().unwrap(), "--comparator-layer", "conv2", "--loss-weights", "image=1,feature=0.05"];
        let last = ["--steps", "30", "--batch", "16", "--lr", "1e-3", "-o", out.to_str().unwrap()];
        let o = Args::parse_from(args.iter().chain(&more).chain(&last)).o;
        let report = dgnam::app::train_generator(&o, &Default::default(), device, Precision::F32, &Silent).unwrap();
        let log: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report.log).unwrap()).unwrap();
        let losses: Vec<f64> = log["steps"].as_array().unwrap().iter().map(|r| r["loss"].as_f64().unwrap()).collect();
        (losses, WeightsFile::open(&out).unwrap())
    };
    let (cpu_losses, cpu_file) = run(Device::Cpu, "cpu");
    let (gpu_losses, gpu_file) = run(Device::Cuda, "cuda");
    assert_eq!(gpu_losses.len(), 30);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(mean(&gpu_losses[20..]) < 0.5 * mean(&gpu_losses[..5]), "the GPU run's loss does not fall: {gpu_losses:?}");
    for (i, (g, c)) in gpu_losses.iter().zip(&cpu_losses).enumerate() {
        assert!((g - c).abs() <= 1e-3 * c.abs().max(1e-6) + 1e-3 * (i as f64), "step {}: GPU loss {g}, CPU {c}", i + 1);
    }
    assert_eq!(gpu_file.header.tensors.len(), cpu_file.header.tensors.len());
    for e in &cpu_file.header.tensors {
        let (_, c) = cpu_file.tensor(&e.layer, e.index).unwrap();
        let (_, g) = gpu_file.tensor(&e.layer, e.index).unwrap_or_else(|| panic!("{} #{} missing on the GPU", e.layer, e.index));
        let scale = c.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = c.iter().zip(g).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-2 * scale, "{} #{}: GPU and CPU weights differ by {worst} (scale {scale})", e.layer, e.index);
    }
}
