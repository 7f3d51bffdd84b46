//! The CPU GEMM choice, measured: the `gemm` crate (what dgnam uses, `ops::gemm::cpu::gemm`)
//! against `matrixmultiply` (what it used before) at this project's shapes, both on the
//! same rayon/thread count. `cargo bench --bench gemm [-- THREADS]` (default: all cores).
//! Each figure is the best of repeated runs for about 0.3 s, in GFLOP/s.

use dgnam::ops::gemm::cpu::gemm;
use std::time::Instant;

/// (name, M, K, N, B stored transposed): per-image GEMMs of CaffeNet and the fc6 generator
/// (a deconvolution's is its column product W^T x), and the fc layers at batch 1, 8, 32.
const SHAPES: &[(&str, usize, usize, usize, bool)] = &[
    ("conv1 forward", 96, 363, 3025, false),
    ("conv2 forward (group)", 128, 1200, 729, false),
    ("conv3 forward", 384, 2304, 169, false),
    ("conv4 forward (group)", 192, 1728, 169, false),
    ("deconv5 columns", 4096, 256, 16, false),
    ("conv5_1 forward", 512, 2304, 64, false),
    ("deconv4 columns", 4096, 512, 64, false),
    ("conv4_1 forward", 256, 2304, 256, false),
    ("deconv3 columns", 2048, 256, 256, false),
    ("conv3_1 forward", 128, 1152, 1024, false),
    ("deconv2 columns", 1024, 128, 1024, false),
    ("deconv1 columns", 512, 64, 4096, false),
    ("deconv0 columns", 48, 32, 16384, false),
    ("fc6 batch 1", 1, 9216, 4096, true),
    ("fc6 batch 8", 8, 9216, 4096, true),
    ("fc6 batch 32", 32, 9216, 4096, true),
    ("fc7 batch 8", 8, 4096, 4096, true),
    ("square 2048", 2048, 2048, 2048, false),
];

fn best(mut f: impl FnMut()) -> f64 {
    f();
    let (start, mut best, mut reps) = (Instant::now(), f64::INFINITY, 0);
    while reps < 3 || (start.elapsed().as_secs_f64() < 0.3 && reps < 200) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        reps += 1;
    }
    best
}

fn main() {
    let threads: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // matrixmultiply reads its thread count from the environment on first use.
    std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    println!("CPU GEMM, {threads} threads, CPU loops at {}", dgnam::device::simd::level().name());
    println!("{:24} {:>5} {:>5} {:>6} {:>16} {:>16} {:>6}", "shape", "M", "K", "N", "gemm GFLOP/s", "mmul GFLOP/s", "ratio");
    for &(name, m, k, n, bt) in SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 1000) as f32 * 1e-3 - 0.5).collect();
        let mut c = vec![0f32; m * n];
        let (brs, bcs) = if bt { (1, k as isize) } else { (n as isize, 1) };
        let flops = 2.0 * (m * k * n) as f64 / 1e9;
        let ours = pool.install(|| best(|| gemm(m, k, n, 1.0, &a, k as isize, 1, &b, brs, bcs, 0.0, &mut c, n as isize, 1)));
        let ours_c = c.clone();
        // SAFETY: a is m x k, b is k x n with the strides above, c is m x n: all in bounds.
        let theirs = best(|| unsafe {
            matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), k as isize, 1, b.as_ptr(), brs, bcs, 0.0, c.as_mut_ptr(), n as isize, 1)
        });
        let diff = ours_c.iter().zip(&c).fold(0f32, |d, (x, y)| d.max((x - y).abs()));
        assert!(diff < 1e-2, "{name}: the two products differ by {diff}");
        println!("{name:24} {m:5} {k:5} {n:6} {:16.1} {:16.1} {:6.2}", flops / ours, flops / theirs, theirs / ours);
    }
}
