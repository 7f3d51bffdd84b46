//! The measurements of `dgnam bench` on the CPU backend at a small rep count: every kernel
//! of CaffeNet and the fc6 generator in each direction, then the DGN-AM step and the
//! classifier's forward + backward. `cargo bench --bench kernels [-- BATCH]` (default 8).

use dgnam::app::Device;
use dgnam::bench::{self, KernelOptions, Reps, StepOptions};
use dgnam::device::cuda::Precision;

fn main() -> anyhow::Result<()> {
    // As `dgnam` runs its commands: on the CPU pool, so the ops fork without waking it.
    dgnam::device::cpu::on_pool(run)
}

fn run() -> anyhow::Result<()> {
    // cargo passes `--bench`; the first number is the batch.
    let batch: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(8);
    let opts = KernelOptions { batch, reps: Reps::fixed(3), quick: false, only: Vec::new(), nets: Vec::new() };
    bench::kernels(Device::Cpu, Precision::F32, &opts, &mut |row| print!("{row}"))?;
    for generator in [None, Some("none")] {
        let opts = StepOptions::resolve(None, generator.map(Into::into), Some(&batch.to_string()), Some(3), false)?;
        bench::steps(Device::Cpu, Precision::F32, &opts, &mut |row| print!("{row}"))?;
    }
    Ok(())
}
