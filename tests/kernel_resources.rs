//! Offline resource checks of every CUDA kernel function (`dgnam kernels`, issue 12): NVRTC
//! compiles each source to a cubin for sm_80 and sm_90, and each function must not spill and
//! must reach the CTAs per SM its launcher declares (`launches` of the op's `SOURCE`). Kernels
//! designed below full occupancy say so there, with the reason, and the number is kept exact
//! here: a kernel that gets better or worse fails until its declaration is updated.
//!
//! Known shortfalls against full occupancy, declared next to their launchers: sgemm (163-168
//! registers: 12 warps per SM) and conv_forward_implicit (its tiling, 158-167 registers),
//! conv_transpose_implicit (its tiling and 33 KB of shared memory: 6 CTAs on sm_90, 4 on
//! sm_80), sgemm_tf32 (76-77: 24 warps), sgemm_tf32_2 (128 registers and
//! 48 KB of shared memory: 2 CTAs of 256, 16 warps), lrn_backward (46 registers: 5 CTAs of
//! 256), and at 6 CTAs: im2col and max_pool_forward (sm_90), lrn_forward (sm_80),
//! ave_pool_backward, pad_backward (sm_80), the Scale and BatchNorm kernels (34-38 registers).
//! None spills.
//!
//! Needs NVRTC, not a GPU: with `REQUIRE_NVRTC=1` (CI) a missing NVRTC fails these tests, and
//! without it they are reported as ignored, never silently passed. That the source text's
//! `__global__` functions are the PTX's entry points is tests/cuda.rs's check; that the cubin's
//! kernels are ptxas's and are each declared once is `source_resources`'s.

use dgnam::device::cuda::compile::{self, Design, KernelSource, Launch};
use dgnam::device::cuda::occupancy;
use dgnam::device::cuda::resources::{self, KernelResources};
use std::collections::BTreeMap;

const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

fn require_nvrtc() {
    assert!(
        compile::nvrtc_present(),
        "NVRTC (libnvrtc.so.13) cannot be loaded: `pip install nvidia-cuda-nvrtc==13.0.88` and put its lib directory on LD_LIBRARY_PATH (REQUIRE_NVRTC={})",
        std::env::var("REQUIRE_NVRTC").unwrap_or_default()
    );
}

#[test]
#[cfg_attr(
    not(any(has_nvrtc, require_nvrtc)),
    ignore = "NVRTC (libnvrtc.so*) not found on LD_LIBRARY_PATH at build time: the kernels were not compiled"
)]
fn every_kernel_function_has_no_spills_and_its_designed_occupancy_on_sm80_and_sm90() {
    require_nvrtc();
    // (source, function) -> its resources on each architecture
    let mut seen: BTreeMap<(&str, String), Vec<(&str, KernelResources)>> = BTreeMap::new();
    let mut problems = Vec::new();
    for arch in ARCHS {
        let limits = occupancy::limits(arch).unwrap();
        for src in dgnam::app::kernel_sources() {
            let r = resources::source_resources(&src, arch).unwrap_or_else(|e| panic!("{}: {e:#}", src.name));
            let names: Vec<&str> = r.kernels.iter().map(|k| k.function.as_str()).collect();
            let declared: Vec<&str> = src.launches.iter().map(|l| l.function).collect();
            assert_eq!(names, declared, "{} on {arch}: the kernel functions reported", src.name);
            for d in &r.device_functions {
                if d.spill_stores + d.spill_loads > 0 {
                    problems.push(format!(
                        "{arch} {} device function {} spills {} + {} bytes",
                        src.name, d.name, d.spill_stores, d.spill_loads
                    ));
                }
            }
            for k in r.kernels {
                eprintln!("{arch} {k}");
                assert!(k.registers > 0, "{arch} {} {}: no registers reported", k.source, k.function);
                if k.spill_bytes > 0 {
                    problems.push(format!("{arch} {} {} spills {} bytes per thread", k.source, k.function, k.spill_bytes));
                }
                let (ctas, limit) = k.ctas_per_sm.unwrap();
                let design = k.design_ctas.unwrap();
                if ctas < design {
                    problems.push(format!(
                        "{arch} {} {}: {ctas} CTAs per SM (bound by {limit}: {} registers, {} bytes shared) where it is designed for {design}",
                        k.source, k.function, k.registers, k.smem
                    ));
                }
                if let Design::Full = k.launch.design {
                    assert_eq!(design, occupancy::full_ctas(&limits, k.launch.threads));
                }
                seen.entry((k.source, k.function.clone())).or_default().push((arch, k));
            }
        }
    }
    // A kernel declared below full occupancy must be there on one of the two architectures, at
    // exactly the declared number: the declaration is the record of a known shortfall.
    for ((source, function), per_arch) in &seen {
        let Design::Ctas(declared, why) = per_arch[0].1.launch.design else { continue };
        let lowest = per_arch.iter().map(|(_, k)| k.ctas_per_sm.unwrap().0).min().unwrap();
        let full = per_arch
            .iter()
            .all(|(arch, k)| k.ctas_per_sm.unwrap().0 >= occupancy::full_ctas(&occupancy::limits(arch).unwrap(), k.launch.threads));
        if full {
            problems
                .push(format!("{source} {function} now reaches full occupancy on sm_80 and sm_90: declare it Design::Full (was: {why})"));
        } else if lowest != declared {
            problems.push(format!(
                "{source} {function} reaches {lowest} CTAs per SM, its launcher declares {declared} ({why}): update the declaration"
            ));
        }
    }
    assert!(problems.is_empty(), "kernel resources:\n{}", problems.join("\n"));
}

/// `softmax.cu` with its launches replaced.
fn softmax_with(launches: &'static [Launch]) -> KernelSource {
    KernelSource { launches, ..dgnam::ops::softmax::cuda::SOURCE }
}

const fn full(function: &'static str, threads: u32) -> Launch {
    Launch::new(function, threads, Design::Full)
}

#[test]
#[cfg_attr(not(any(has_nvrtc, require_nvrtc)), ignore = "NVRTC (libnvrtc.so*) not found on LD_LIBRARY_PATH at build time")]
fn a_launch_declaration_that_disagrees_with_the_kernels_is_an_error() {
    require_nvrtc();
    // softmax's kernels have __launch_bounds__(256).
    const WRONG_BLOCK: &[Launch] = &[full("softmax_forward", 128), full("softmax_backward", 256)];
    const MISSING: &[Launch] = &[full("softmax_forward", 256)];
    const TWICE: &[Launch] = &[full("softmax_forward", 256), full("softmax_forward", 256), full("softmax_backward", 256)];
    let error = |launches| format!("{:#}", resources::source_resources(&softmax_with(launches), "sm_90").unwrap_err());
    let e = error(WRONG_BLOCK);
    assert!(e.contains("softmax_forward") && e.contains("__launch_bounds__(256)") && e.contains("128 threads"), "{e}");
    let e = error(MISSING);
    assert!(e.contains("softmax.cu") && e.contains("softmax_backward") && e.contains("declare each kernel once"), "{e}");
    let e = error(TWICE);
    assert!(e.contains("declare each kernel once"), "{e}");
}

#[test]
#[cfg_attr(not(any(has_nvrtc, require_nvrtc)), ignore = "NVRTC (libnvrtc.so*) not found on LD_LIBRARY_PATH at build time")]
fn dgnam_kernels_prints_one_line_per_kernel_function() {
    require_nvrtc();
    let run = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_dgnam")).args(args).output().unwrap();
    let out = run(&["kernels", "--arch", "sm_90"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Vec<&str>> =
        text.lines().map(|l| l.split_whitespace().collect()).filter(|w: &Vec<&str>| w.len() > 2 && w[2].starts_with("regs=")).collect();
    let mut expected = Vec::new();
    for src in dgnam::app::kernel_sources() {
        expected.extend(src.launches.iter().map(|l| (src.name, l.function)));
    }
    assert_eq!(rows.iter().map(|w| (w[0], w[1])).collect::<Vec<_>>(), expected, "{text}");
    for w in &rows {
        for (i, key) in ["regs=", "spill_bytes=", "smem=", "ctas_per_sm="].iter().enumerate() {
            let value = w[2 + i].strip_prefix(key).unwrap_or_else(|| panic!("field {} of {w:?} is not {key}", 3 + i));
            assert!(value.parse::<u32>().is_ok(), "{key} of {w:?} is not a number");
        }
    }
    assert!(text.lines().last().unwrap().contains("none spills"), "{text}");
    // An architecture NVRTC does not know is one clear error line.
    let out = run(&["kernels", "--arch", "sm_91"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: NVRTC") && err.contains("sm_91") && err.contains("sm_90"), "{err}");
}
