#![no_main]
//! A .dgnw file -> header -> stored net definition -> plan -> net on its mapped weights,
//! and for small nets one forward pass (the ops' own shape checks are under test too).
use dgnam::graph::{CpuNet, Plan};
use dgnam::weights::{self, WeightsFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weights::parse(data);
    // libFuzzer cannot recompute a checksum: make the header's right, so that mutations reach
    // the tensor table, the stored net definition and the plan.
    let mut fixed = data.to_vec();
    if fixed.len() >= 40 {
        let start = u64::from_le_bytes(fixed[16..24].try_into().unwrap()) as usize;
        if (32..=fixed.len()).contains(&start) {
            let sum = weights::checksum(&fixed[32..start]);
            fixed[24..32].copy_from_slice(&sum.to_le_bytes());
        }
    }
    let Ok(file) = WeightsFile::from_bytes(&fixed) else { return };
    let Ok(def) = file.netdef() else { return };
    let Ok(plan) = Plan::new(&def, 1) else { return };
    let small = plan.blobs.iter().map(|b| b.len()).sum::<usize>() <= 1 << 18 && plan.flops() <= 1 << 24;
    let Ok(net) = CpuNet::<f32>::from_weights(&file, 1, dgnam::device::Cpu::new()) else { return };
    if small {
        let inputs: Vec<Vec<f32>> = net.plan.inputs.iter().map(|&i| vec![0.5; net.plan.blobs[i].len()]).collect();
        let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        if let Ok(mut st) = net.state() {
            let _ = net.forward(&mut st, &refs);
        }
    }
});
