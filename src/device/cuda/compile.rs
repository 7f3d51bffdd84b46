//! NVRTC compilation of `kernels/*.cu`, cached on disk: a PTX file per source, keyed by the
//! source text, the compiler options and the NVRTC version, so a second run compiles nothing.

use crate::fsutil::write_atomic;
use crate::rng::{fnv1a, FNV1A_START};
use anyhow::{bail, Context, Result};
use cudarc::nvrtc::{self, CompileError, CompileOptions};
use std::path::PathBuf;

/// One kernel source, embedded in the binary by the op that owns it: its file name under
/// `kernels/`, its text, and how its launcher runs each of its kernel functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSource {
    pub name: &'static str,
    pub text: &'static str,
    /// One entry per `__global__` function of `text` (`dgnam kernels` checks that they match).
    pub launches: &'static [Launch],
}

/// How the launcher runs one kernel function, and the occupancy the kernel is designed for:
/// `dgnam kernels` (`resources`) compares the compiled kernel's CTAs per SM with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub function: &'static str,
    /// Threads per block (every launch is one-dimensional).
    pub threads: u32,
    /// Dynamic shared memory per block, bytes (every launch passes 0 today).
    pub dynamic_smem: u32,
    pub design: Design,
}

/// The CTAs per SM a kernel is designed to keep resident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Design {
    /// Every thread slot of the SM (8 CTAs of 256 threads on sm_80 and sm_90).
    Full,
    /// This many CTAs per SM on sm_80 and sm_90 (the lower of the two), with why it is less
    /// than full. tests/kernel_resources.rs keeps the number exact.
    Ctas(u32, &'static str),
}

impl Launch {
    pub const fn new(function: &'static str, threads: u32, design: Design) -> Launch {
        Launch { function, threads, dynamic_smem: 0, design }
    }

    /// The same launch where the kernel reaches only `ctas` per SM, because of `why`.
    pub const fn below_full(self, ctas: u32, why: &'static str) -> Launch {
        Launch { design: Design::Ctas(ctas, why), ..self }
    }
}

/// `kernels/common.cuh`: compiled in front of every source.
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// Whether libnvrtc can be loaded. Checked before any other NVRTC call: without it cudarc's
/// dynamically loaded functions would panic.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { nvrtc::sys::is_culib_present() }
}

pub(crate) fn require_nvrtc() -> Result<()> {
    if !nvrtc_present() {
        bail!("NVRTC (libnvrtc.so.13) was not found: install the CUDA 13 toolkit or `pip install nvidia-cuda-nvrtc`, and put its lib directory on LD_LIBRARY_PATH");
    }
    Ok(())
}

/// (major, minor) of the loaded NVRTC.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    require_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; nvrtcVersion writes two ints.
    let r = unsafe { nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if r != nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        bail!("nvrtcVersion failed: {r:?}");
    }
    Ok((major, minor))
}

/// The options every kernel is compiled with, for a target like "sm_90".
pub fn options(arch: &str) -> Result<Vec<String>> {
    let cc = arch.strip_prefix("sm_").filter(|c| c.len() >= 2 && c.chars().all(|ch| ch.is_ascii_alphanumeric()));
    let Some(cc) = cc else { bail!("architecture '{arch}' is not of the form sm_XY (e.g. sm_90)") };
    Ok(vec![format!("--gpu-architecture=compute_{cc}"), "--std=c++17".into()])
}

/// FNV-1a of the parts, each followed by 0xff, from the offset basis xor `seed`.
fn fnv1a_parts(seed: u64, parts: &[&[u8]]) -> u64 {
    parts.iter().fold(FNV1A_START ^ seed, |h, p| fnv1a(fnv1a(h, p), &[0xff]))
}

/// The cache key of one compilation: 128 bits of hash, in hex.
pub fn cache_key(source: &str, options: &[String], nvrtc: (i32, i32)) -> String {
    let opts = options.join("\u{1}");
    let ver = format!("{}.{}", nvrtc.0, nvrtc.1);
    let parts: [&[u8]; 3] = [source.as_bytes(), opts.as_bytes(), ver.as_bytes()];
    format!("{:016x}{:016x}", fnv1a_parts(0, &parts), fnv1a_parts(0x9e37_79b9_7f4a_7c15, &parts))
}

/// `DGNAM_CACHE_DIR`, else `$XDG_CACHE_HOME/dgnam/ptx`, else `~/.cache/dgnam/ptx`.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("DGNAM_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("dgnam/ptx")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/dgnam/ptx")))
}

/// Compiles one source to PTX text; the error carries the compiler's log.
pub fn compile(name: &str, source: &str, options: &[String]) -> Result<String> {
    require_nvrtc()?;
    let opts = CompileOptions { options: options.to_vec(), name: Some(name.to_string()), ..Default::default() };
    match nvrtc::compile_ptx_with_opts(format!("{COMMON}\n{source}"), opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(CompileError::CompileError { log, .. }) => {
            bail!("{name}: NVRTC failed:\n{}", log.to_string_lossy().trim_end())
        }
        Err(e) => bail!("{name}: NVRTC failed: {e}"),
    }
}

/// PTX text for one source from the disk cache, compiling (and caching) it on a miss. A cache
/// that cannot be read or written only costs a compilation.
pub fn compile_cached(name: &str, source: &str, arch: &str) -> Result<String> {
    let options = options(arch)?;
    let key = cache_key(&format!("{COMMON}\n{source}"), &options, nvrtc_version()?);
    let stem = name.trim_end_matches(".cu");
    let path = cache_dir().map(|d| d.join(format!("{stem}-{arch}-{key}.ptx")));
    if let Some(text) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        if text.contains(".entry") {
            return Ok(text);
        }
    }
    let text = compile(name, source, &options)?;
    if let Some(p) = &path {
        let _ = p.parent().map(std::fs::create_dir_all);
        let _ = write_atomic(p, text.as_bytes());
    }
    Ok(text)
}

/// The kind of one kernel parameter, as PTX declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// 32-bit integer
    B32,
    /// 64-bit integer or pointer
    B64,
    F32,
    F64,
    Other,
}

/// Every kernel a PTX module defines (its `.entry` directives) with its parameter kinds, so
/// launches can be checked against the kernel's real signature.
pub fn entry_points(ptx: &str) -> Vec<(String, Vec<ParamKind>)> {
    let mut out: Vec<(String, Vec<ParamKind>)> = Vec::new();
    let mut open = false;
    for line in ptx.lines().map(str::trim) {
        if let Some(rest) = line.split(".entry").nth(1) {
            let name = rest.trim().split(['(', ' ']).next().unwrap_or("");
            out.push((name.to_string(), Vec::new()));
            open = !rest.contains(')');
        } else if open {
            if let Some(decl) = line.strip_prefix(".param") {
                let ty = decl.split_whitespace().next().unwrap_or("");
                let kind = match ty {
                    ".u32" | ".s32" | ".b32" => ParamKind::B32,
                    ".u64" | ".s64" | ".b64" => ParamKind::B64,
                    ".f32" => ParamKind::F32,
                    ".f64" => ParamKind::F64,
                    _ => ParamKind::Other,
                };
                out.last_mut().expect("inside an entry").1.push(kind);
            }
            if line.starts_with(')') {
                open = false;
            }
        }
    }
    out
}

/// Compiles every source to PTX for `arch` as the runtime does (no cache), one line each, `ok`
/// or the compiler's log; errors after the report when any source fails. (`dgnam kernels`
/// compiles cubins instead and reports each function's resources: `resources::report`.)
pub fn check_all(arch: &str, sources: &[KernelSource]) -> Result<String> {
    let options = options(arch)?;
    let (major, minor) = nvrtc_version().context("dgnam kernels needs NVRTC")?;
    let mut report = format!("NVRTC {major}.{minor}, {arch}, options: {}\n", options.join(" "));
    let mut failed = 0;
    for KernelSource { name, text, .. } in sources {
        match compile(name, text, &options) {
            Ok(_) => report.push_str(&format!("{name:<16} ok\n")),
            Err(e) => {
                failed += 1;
                report.push_str(&format!("{name:<16} FAILED\n{e:#}\n"));
            }
        }
    }
    if failed > 0 {
        bail!("{report}{failed} of {} kernel sources failed to compile", sources.len());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_changes_with_source_options_and_version() {
        let o = options("sm_90").unwrap();
        let k = cache_key("a", &o, (13, 0));
        assert_eq!(k, cache_key("a", &o, (13, 0)));
        assert_eq!(k.len(), 32);
        assert_ne!(k, cache_key("b", &o, (13, 0)));
        assert_ne!(k, cache_key("a", &options("sm_80").unwrap(), (13, 0)));
        assert_ne!(k, cache_key("a", &o, (13, 1)));
    }

    #[test]
    fn architectures_are_checked() {
        assert_eq!(options("sm_86").unwrap()[0], "--gpu-architecture=compute_86");
        assert!(options("compute_90").is_err());
        assert!(options("sm_").is_err());
    }

    #[test]
    fn ptx_signatures_are_read() {
        let ptx = ".visible .entry k(\n\t.param .u32 k_param_0,\n\t.param .f32 k_param_1,\n\t.param .u64 .ptr .align 4 k_param_2\n)\n{\n}\n.visible .entry j()\n{\n}\n";
        let e = entry_points(ptx);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0], ("k".to_string(), vec![ParamKind::B32, ParamKind::F32, ParamKind::B64]));
        assert_eq!(e[1], ("j".to_string(), vec![]));
    }
}
