//! CaffeNet forward plus backward to the input (the classifier half of a DGN-AM step) on
//! the CPU backend, random weights, real shapes. `cargo bench --bench caffenet [-- BATCH]`.

use dgnam::caffe::netdef::parse_netdef;
use dgnam::device::Cpu;
use dgnam::graph::CpuNet;
use dgnam::rng::Rng;
use std::time::Instant;

fn main() {
    // As `dgnam` runs its commands: on the CPU pool, so the ops fork without waking it.
    dgnam::device::cpu::on_pool(run);
}

fn run() {
    let batch: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(8);
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/caffenet.prototxt")).unwrap();
    let def = parse_netdef(&text).unwrap();
    let net = CpuNet::<f32>::random(&def, batch, 1, Cpu::new()).unwrap();
    let mut rng = Rng::new(0);
    let input = &net.plan.blobs[net.plan.inputs[0]];
    let x: Vec<f32> = (0..input.len()).map(|_| (rng.normal() * 50.0) as f32).collect();
    let fc8 = net.plan.layer_output("fc8").unwrap();
    let mut seed = vec![0f32; net.plan.blobs[fc8].len()];
    for n in 0..batch {
        seed[n * 1000 + 945] = 1.0;
    }
    let mut st = net.state().unwrap();
    let mut step = || {
        let t = Instant::now();
        net.forward(&mut st, &[&x]).unwrap();
        let f = t.elapsed().as_secs_f64();
        net.backward(&mut st, &[(fc8, &seed)], false).unwrap();
        (f, t.elapsed().as_secs_f64())
    };
    step(); // warm-up: first-touch of every buffer
    let mut runs: Vec<(f64, f64)> = (0..7).map(|_| step()).collect();
    runs.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (fwd, total) = runs[runs.len() / 2];
    let gflop = 2.0 * net.plan.flops() as f64 / 1e9; // backward-data costs about one forward
    println!(
        "caffenet batch {batch}: forward {:.3} s, forward+backward to input {:.3} s (median of 7), ~{:.1} GFLOP/s",
        fwd,
        total,
        gflop / total
    );
}
