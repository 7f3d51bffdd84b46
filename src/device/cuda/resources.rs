//! `dgnam kernels`: what each kernel function costs an SM, found offline. Each source is
//! compiled by NVRTC for a real architecture (`--gpu-architecture=sm_90`: a cubin, fetched with
//! `nvrtcGetCUBIN`) with `--ptxas-options=-v`; ptxas's lines in the program log give each
//! function's registers, spills, stack and static shared memory; the cubin's own records
//! cross-check the registers, the shared memory and the `__launch_bounds__` against the
//! launcher's block size; `occupancy` turns all of it into CTAs per SM. At run time the driver
//! compiles the same PTX (for `compute_XX`), so its ptxas may allocate a few registers
//! differently from NVRTC's.

use super::compile::{self, Design, KernelSource, Launch, COMMON};
use super::cubin;
use super::occupancy::{self, CtaNeeds, Limit};
use anyhow::{anyhow, bail, Context, Result};
use cudarc::nvrtc::{result as nvrtc, sys};
use std::collections::BTreeSet;
use std::ffi::{c_char, CString};
use std::fmt;

/// The options of the runtime's compilation (`compile::options`) for the real architecture
/// `arch` instead of its virtual one, with ptxas's report.
pub fn cubin_options(arch: &str) -> Result<Vec<String>> {
    let mut options: Vec<String> = compile::options(arch)?
        .into_iter()
        .map(|o| if o.starts_with("--gpu-architecture=") { format!("--gpu-architecture={arch}") } else { o })
        .collect();
    options.push("--ptxas-options=-v".into());
    Ok(options)
}

/// The real architectures the loaded NVRTC compiles for, as numbers (75, 80, ..).
pub fn supported_archs() -> Result<Vec<i32>> {
    compile::require_nvrtc()?;
    let mut n = 0;
    // SAFETY: NVRTC is loaded; the second call fills exactly `n` ints.
    unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }.result().map_err(|e| anyhow!("nvrtcGetNumSupportedArchs: {e}"))?;
    let mut archs = vec![0; n.max(0) as usize];
    unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }.result().map_err(|e| anyhow!("nvrtcGetSupportedArchs: {e}"))?;
    Ok(archs)
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed only here.
        let _ = unsafe { nvrtc::destroy_program(self.0) };
    }
}

fn text_of(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Compiles one source (after `kernels/common.cuh`) to a cubin; returns it with NVRTC's log.
pub fn compile_cubin(name: &str, source: &str, options: &[String]) -> Result<(Vec<u8>, String)> {
    compile::require_nvrtc()?;
    let text = CString::new(format!("{COMMON}\n{source}")).map_err(|_| anyhow!("{name}: the source holds a NUL byte"))?;
    let cname = CString::new(name).map_err(|_| anyhow!("{name}: the name holds a NUL byte"))?;
    let program = Program(nvrtc::create_program(&text, Some(&cname)).map_err(|e| anyhow!("{name}: nvrtcCreateProgram: {e}"))?);
    // SAFETY (these four calls): `program` is a live program until it drops, after them.
    let compiled = unsafe { nvrtc::compile_program(program.0, options) };
    let log = unsafe { nvrtc::get_program_log(program.0) }.map(|l| text_of(&l)).unwrap_or_default();
    if let Err(e) = compiled {
        bail!("{name}: NVRTC failed ({e}):\n{}", log.trim_end());
    }
    let mut size = 0usize;
    unsafe { sys::nvrtcGetCUBINSize(program.0, &mut size) }.result().map_err(|e| anyhow!("{name}: nvrtcGetCUBINSize: {e}"))?;
    if size == 0 {
        bail!("{name}: NVRTC returned no cubin (is the architecture a real one, sm_XY?)");
    }
    let mut cubin = vec![0u8; size];
    unsafe { sys::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr().cast()) }.result().map_err(|e| anyhow!("{name}: nvrtcGetCUBIN: {e}"))?;
    Ok((cubin, log))
}

/// ptxas's report of one function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PtxasFunction {
    pub name: String,
    /// A kernel (`Compiling entry function`), not a device function it calls.
    pub entry: bool,
    pub registers: u32,
    pub barriers: u32,
    /// Static shared memory, bytes.
    pub smem: u32,
    pub stack_frame: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// The number in front of `unit` in one of a line's comma-separated parts: "17408 bytes smem",
/// "Used 32 registers".
fn number_before(line: &str, unit: &str) -> Option<u32> {
    line.split(',').find_map(|part| part.trim_end().strip_suffix(unit)?.split_whitespace().last()?.parse().ok())
}

/// Every function of a `--ptxas-options=-v` log, in its order:
/// ```text
/// ptxas info    : Compiling entry function 'sgemm' for 'sm_90'
/// ptxas info    : Function properties for sgemm
/// ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 163 registers, used 1 barriers, 17408 bytes smem
/// ```
pub fn parse_ptxas_log(log: &str) -> Result<Vec<PtxasFunction>> {
    let mut out: Vec<PtxasFunction> = Vec::new();
    let (mut kernel, mut properties) = (None::<usize>, None::<usize>);
    let find = |out: &mut Vec<PtxasFunction>, name: &str, entry: bool| match out.iter().position(|f| f.name == name) {
        Some(i) => {
            out[i].entry |= entry;
            i
        }
        None => {
            out.push(PtxasFunction { name: name.to_string(), entry, ..Default::default() });
            out.len() - 1
        }
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default();
            kernel = Some(find(&mut out, name, true));
        } else if let Some(name) = line.split("Function properties for ").nth(1) {
            properties = Some(find(&mut out, name.trim(), false));
        } else if line.contains("bytes stack frame") {
            let i = properties.with_context(|| format!("ptxas line before any 'Function properties': {line}"))?;
            let f = &mut out[i];
            f.stack_frame = number_before(line, "bytes stack frame").with_context(|| format!("unreadable: {line}"))?;
            f.spill_stores = number_before(line, "bytes spill stores").with_context(|| format!("unreadable: {line}"))?;
            f.spill_loads = number_before(line, "bytes spill loads").with_context(|| format!("unreadable: {line}"))?;
        } else if line.contains("Used ") && line.contains(" registers") {
            let i = kernel.with_context(|| format!("ptxas line before any 'Compiling entry function': {line}"))?;
            let f = &mut out[i];
            f.registers = number_before(line, " registers").with_context(|| format!("unreadable: {line}"))?;
            f.barriers = number_before(line, " barriers").unwrap_or(0);
            f.smem = number_before(line, " bytes smem").unwrap_or(0);
        }
    }
    if let Some(f) = out.iter().find(|f| f.entry && f.registers == 0) {
        bail!("ptxas reported no 'Used N registers' line for kernel {}", f.name);
    }
    Ok(out)
}

/// One kernel function's resources on one architecture, with its launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelResources {
    pub source: &'static str,
    pub function: String,
    pub registers: u32,
    /// Spill stores plus spill loads, bytes per thread.
    pub spill_bytes: u32,
    pub stack_frame: u32,
    /// Static shared memory per CTA, bytes (ptxas's count, without the driver's reservation).
    pub smem: u32,
    pub barriers: u32,
    pub launch: Launch,
    /// CTAs per SM and what bounds them; None where `occupancy` has no limits for the arch.
    pub ctas_per_sm: Option<(u32, Limit)>,
    /// The CTAs per SM `launch.design` asks for on this architecture.
    pub design_ctas: Option<u32>,
}

impl KernelResources {
    /// Whether the kernel reaches its designed occupancy (None: unknown architecture).
    pub fn meets_design(&self) -> Option<bool> {
        Some(self.ctas_per_sm?.0 >= self.design_ctas?)
    }
}

impl fmt::Display for KernelResources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ctas, limit) = match self.ctas_per_sm {
            Some((n, l)) => (n.to_string(), l.to_string()),
            None => ("?".into(), "?".into()),
        };
        let design = self.design_ctas.map_or("?".into(), |n| n.to_string());
        write!(
            f,
            "{:<14} {:<27} regs={:<3} spill_bytes={} smem={:<5} ctas_per_sm={:<2} threads={:<3} limit={:<9} design={design}",
            self.source, self.function, self.registers, self.spill_bytes, self.smem, ctas, self.launch.threads, limit
        )?;
        if let Design::Ctas(_, why) = self.launch.design {
            write!(f, " (below full: {why})")?;
        }
        if self.spill_bytes > 0 {
            f.write_str("  SPILLS")?;
        }
        if self.meets_design() == Some(false) {
            f.write_str("  BELOW DESIGN")?;
        }
        Ok(())
    }
}

/// One source's kernels, and the device functions ptxas compiled apart from them (each one's
/// spills belong to whichever kernels call it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceResources {
    pub kernels: Vec<KernelResources>,
    pub device_functions: Vec<PtxasFunction>,
}

/// The driver's per-CTA reservation that sm_90 cubins count in each kernel's shared section.
const RESERVED_IN_SECTION: u32 = 1024;

/// Compiles `src` for `arch` and checks ptxas's report against the cubin and the source's
/// launches (every kernel declared once, block sizes within the launch bounds).
pub fn source_resources(src: &KernelSource, arch: &str) -> Result<SourceResources> {
    let name = src.name;
    let (cubin, log) = compile_cubin(name, src.text, &cubin_options(arch)?)?;
    let functions = parse_ptxas_log(&log).with_context(|| format!("{name}: reading ptxas's report"))?;
    let (in_cubin, reserves) = cubin::kernels(&cubin).with_context(|| format!("{name}: reading its {arch} cubin"))?;
    let (entries, device_functions): (Vec<_>, Vec<_>) = functions.into_iter().partition(|f| f.entry);
    let reported: BTreeSet<&str> = entries.iter().map(|f| f.name.as_str()).collect();
    let held: BTreeSet<&str> = in_cubin.iter().map(|k| k.name.as_str()).collect();
    if reported != held {
        bail!("{name}: ptxas reports the kernels {reported:?}, the {arch} cubin holds {held:?}");
    }
    let declared: BTreeSet<&str> = src.launches.iter().map(|l| l.function).collect();
    if reported != declared || declared.len() != src.launches.len() {
        bail!("{name}: its kernels are {reported:?}, its SOURCE declares one launch each for {declared:?}: declare each kernel once");
    }
    let limits = occupancy::limits(arch);
    let mut kernels = Vec::new();
    for f in entries {
        let fname = &f.name;
        let k = in_cubin.iter().find(|k| &k.name == fname).expect("the same names");
        let launch = *src.launches.iter().find(|l| l.function == fname).expect("the same names");
        if k.registers != Some(f.registers) {
            bail!("{name} {fname}: ptxas reports {} registers, the cubin {:?}", f.registers, k.registers);
        }
        let section = k.shared_section;
        if section != f.smem && !(reserves && section == f.smem + RESERVED_IN_SECTION) {
            bail!("{name} {fname}: ptxas reports {} bytes of shared memory, the cubin's section holds {section}", f.smem);
        }
        if let Some(bound) = k.max_threads.filter(|&b| b != launch.threads) {
            bail!("{name} {fname}: __launch_bounds__({bound}), but its launcher runs {} threads per block", launch.threads);
        }
        let needs = CtaNeeds {
            threads: launch.threads,
            registers_per_thread: f.registers,
            smem: f.smem + launch.dynamic_smem,
            barriers: f.barriers,
        };
        let design_ctas = limits.map(|l| match launch.design {
            Design::Full => occupancy::full_ctas(&l, launch.threads),
            Design::Ctas(n, _) => n.min(occupancy::full_ctas(&l, launch.threads)),
        });
        kernels.push(KernelResources {
            source: name,
            function: f.name.clone(),
            registers: f.registers,
            spill_bytes: f.spill_stores + f.spill_loads,
            stack_frame: f.stack_frame,
            smem: f.smem,
            barriers: f.barriers,
            launch,
            ctas_per_sm: limits.map(|l| occupancy::ctas_per_sm(&l, &needs)),
            design_ctas,
        });
    }
    let order = |k: &KernelResources| src.launches.iter().position(|l| l.function == k.function);
    kernels.sort_by_key(order);
    Ok(SourceResources { kernels, device_functions })
}

/// `dgnam kernels --arch ARCH`: a header, then one line per kernel function. Kernels that
/// spill or miss their designed occupancy are marked, and counted on the last line; a source
/// that fails to compile or disagrees with its declarations is an error (after the report).
pub fn report(arch: &str, sources: &[KernelSource]) -> Result<String> {
    let (major, minor) = compile::nvrtc_version().context("dgnam kernels needs NVRTC")?;
    let options = cubin_options(arch)?;
    let number: String = arch.trim_start_matches("sm_").chars().take_while(char::is_ascii_digit).collect();
    let supported = supported_archs()?;
    if !number.parse().is_ok_and(|n: i32| supported.contains(&n)) {
        let list: Vec<String> = supported.iter().map(|a| format!("sm_{a}")).collect();
        bail!("NVRTC {major}.{minor} does not compile for {arch}; it compiles for {}", list.join(", "));
    }
    let mut out = format!("NVRTC {major}.{minor}, {arch}, options: {}\n", options.join(" "));
    out.push_str(&match occupancy::limits(arch) {
        Some(l) => format!(
            "per SM: {} threads, {} CTAs, {} registers, {} bytes shared memory ({} reserved per CTA)\n",
            l.threads,
            l.ctas,
            occupancy::REGISTERS,
            l.smem,
            l.reserved_smem
        ),
        None => format!("no occupancy limits are known for {arch}: ctas_per_sm=?\n"),
    });
    let (mut failed, mut kernels, mut below_full, mut flagged) = (0, 0, 0, Vec::new());
    for src in sources {
        match source_resources(src, arch) {
            Ok(r) => {
                for k in &r.kernels {
                    out.push_str(&format!("{k}\n"));
                    if k.spill_bytes > 0 || k.meets_design() == Some(false) {
                        flagged.push(k.function.clone());
                    }
                }
                for d in r.device_functions.iter().filter(|d| d.spill_stores + d.spill_loads > 0) {
                    out.push_str(&format!(
                        "{:<14} {:<27} (device function) spill_bytes={}  SPILLS\n",
                        src.name,
                        d.name,
                        d.spill_stores + d.spill_loads
                    ));
                    flagged.push(d.name.clone());
                }
                kernels += r.kernels.len();
                below_full += r.kernels.iter().filter(|k| matches!(k.launch.design, Design::Ctas(..))).count();
            }
            Err(e) => {
                failed += 1;
                out.push_str(&format!("{:<14} FAILED\n{e:#}\n", src.name));
            }
        }
    }
    if failed > 0 {
        bail!("{out}{failed} of {} kernel sources failed", sources.len());
    }
    out.push_str(&match flagged.as_slice() {
        [] => format!("{kernels} kernel functions: none spills, each reaches its designed occupancy ({below_full} by design below full)\n"),
        f => format!("{kernels} kernel functions; spilling or below their designed occupancy: {}\n", f.join(", ")),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'splitk_reduce' for 'sm_90'
ptxas info    : Function properties for splitk_reduce
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers
ptxas info    : Compile time = 87.492 ms
ptxas info    : Function properties for __internal_div
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Compiling entry function 'sgemm' for 'sm_80'
ptxas info    : Function properties for sgemm
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 17408 bytes smem, 476 bytes cmem[0], 8 bytes cmem[2]
";

    #[test]
    fn ptxas_lines_are_read_per_function() {
        let f = parse_ptxas_log(LOG).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(
            f[0],
            PtxasFunction { name: "splitk_reduce".into(), entry: true, registers: 32, barriers: 0, smem: 0, ..Default::default() }
        );
        assert_eq!(
            f[1],
            PtxasFunction { name: "__internal_div".into(), stack_frame: 16, spill_stores: 8, spill_loads: 4, ..Default::default() }
        );
        assert_eq!((f[2].name.as_str(), f[2].entry, f[2].registers, f[2].barriers, f[2].smem), ("sgemm", true, 168, 1, 17408));
    }

    #[test]
    fn a_kernel_without_its_register_line_is_an_error() {
        let log = "ptxas info    : Compiling entry function 'k' for 'sm_90'\nptxas info    : Function properties for k\n";
        assert!(parse_ptxas_log(log).is_err());
        assert!(parse_ptxas_log("ptxas info    : Used 3 registers\n").is_err());
    }

    #[test]
    fn the_cubin_is_compiled_for_the_real_architecture() {
        let o = cubin_options("sm_90").unwrap();
        assert_eq!(o[0], "--gpu-architecture=sm_90");
        assert!(o.contains(&"--ptxas-options=-v".to_string()));
        assert!(cubin_options("compute_90").is_err());
    }
}
