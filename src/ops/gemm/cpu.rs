//! The CPU matrix product: the `gemm` crate (faer's), which picks AVX-512, AVX2+FMA or SSE
//! kernels at run time and splits the work over rayon's pool. It was chosen over
//! `matrixmultiply` by measurement at this project's shapes (`cargo bench --bench gemm`,
//! docs/benchmarks.md). It splits rows and columns of C across threads, never the sum over
//! k, so an element's value does not depend on the thread count.

use crate::real::Real;
use rayon::prelude::*;

/// The last element each matrix touches must lie inside its slice, so the unsafe call below
/// never reads or writes outside.
fn check_extent(len: usize, rows: usize, cols: usize, rs: isize, cs: isize, what: &str) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(rs >= 0 && cs >= 0, "gemm: negative stride for {what}");
    let last = (rows - 1) * rs as usize + (cols - 1) * cs as usize;
    assert!(last < len, "gemm: {what} needs {} elements, slice has {len}", last + 1);
}

/// Where a product runs: split over the pool, or on the calling thread alone (when the caller
/// already runs one product per thread, e.g. one image each). The split changes no bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// The crate's own split over rayon's pool.
    Pool,
    /// The calling thread alone.
    One,
    /// One block of rows of C per thread of the pool, each block's product on its thread
    /// (the crate's own split scales worse on this project's shapes). Needs C's rows to be
    /// contiguous (column stride 1); otherwise as `Pool`.
    RowBlocks,
}

/// C = alpha * A * B + beta * C, every matrix given by its row and column strides (so a
/// transpose is a swap of strides). A is m x k, B is k x n, C is m x n. With beta = 0, C is
/// not read. Split over the pool.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    a_rs: isize,
    a_cs: isize,
    b: &[T],
    b_rs: isize,
    b_cs: isize,
    beta: T,
    c: &mut [T],
    c_rs: isize,
    c_cs: isize,
) {
    gemm_on(Threads::Pool, m, k, n, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, c_rs, c_cs)
}

/// Rows of C per block when a product is split into row blocks: about one block per
/// thread, but never a block of one row out of several. The crate computes a one-row
/// product by another loop (a matrix-vector product) that rounds differently, so such a
/// block would change bits with the thread count (3 rows on 2 threads did).
fn row_block(m: usize, workers: usize) -> usize {
    let mut rows = m.div_ceil(workers).max(2);
    while rows < m && m % rows == 1 {
        rows += 1;
    }
    rows
}

/// `gemm` on the given threads.
#[allow(clippy::too_many_arguments)]
pub fn gemm_on<T: Real>(
    threads: Threads,
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    a_rs: isize,
    a_cs: isize,
    b: &[T],
    b_rs: isize,
    b_cs: isize,
    beta: T,
    c: &mut [T],
    c_rs: isize,
    c_cs: isize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let workers = rayon::current_num_threads();
    if threads == Threads::RowBlocks {
        if c_cs != 1 || c_rs < n as isize || workers < 2 || m < 2 {
            return gemm_on(Threads::Pool, m, k, n, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, c_rs, c_cs);
        }
        let rows = row_block(m, workers);
        let c_rs_u = c_rs as usize;
        // The last block's slice of C ends at its last element.
        let c = &mut c[..(m - 1) * c_rs_u + n];
        return c.par_chunks_mut(rows * c_rs_u).enumerate().for_each(|(i, ci)| {
            let (i0, mi) = (i * rows, rows.min(m - i * rows));
            let a = if k == 0 { a } else { &a[i0 * a_rs as usize..] };
            gemm_on(Threads::One, mi, k, n, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, ci, c_rs, c_cs);
        });
    }
    // SAFETY: `c` is borrowed mutably, so no other thread touches it during the call.
    unsafe { gemm_raw(threads, m, k, n, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c.as_mut_ptr(), c.len(), c_rs, c_cs) }
}

/// `gemm_on` with C given as a pointer to `c_len` values (its extent is checked against
/// them), for callers that share one C among threads, each writing elements of its own.
/// `Threads::RowBlocks` runs as `Threads::One`.
///
/// # Safety
/// `c` must be valid for reads and writes of `c_len` values, and no other thread may read
/// or write the elements of C (m x n at strides `c_rs`, `c_cs`) during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw<T: Real>(
    threads: Threads,
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    a_rs: isize,
    a_cs: isize,
    b: &[T],
    b_rs: isize,
    b_cs: isize,
    beta: T,
    c: *mut T,
    c_len: usize,
    c_rs: isize,
    c_cs: isize,
) {
    if m == 0 || n == 0 {
        return;
    }
    check_extent(c_len, m, n, c_rs, c_cs, "C");
    if k > 0 {
        check_extent(a.len(), m, k, a_rs, a_cs, "A");
        check_extent(b.len(), k, n, b_rs, b_cs, "B");
    }
    // The crate's naming: dst = alpha * dst + beta * lhs * rhs, dst read only if asked.
    // SAFETY: the extents of all three matrices were checked against their slices (C's
    // against the length the caller vouches for), and the crate dispatches on T's type
    // (f32 or f64 here).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            c_cs,
            c_rs,
            beta != T::ZERO,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            match threads {
                Threads::Pool => gemm::Parallelism::Rayon(0),
                Threads::One | Threads::RowBlocks => gemm::Parallelism::None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_naive_with_transposed_strides() {
        let (m, k, n) = (3usize, 4usize, 5usize);
        let a: Vec<f64> = (0..m * k).map(|i| i as f64 * 0.5 - 2.0).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| (i as f64).sin()).collect(); // B stored as n x k
        let mut c = vec![1.0f64; m * n];
        gemm(m, k, n, 2.0, &a, k as isize, 1, &bt, 1, k as isize, 0.5, &mut c, n as isize, 1);
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum();
                assert!((c[i * n + j] - (2.0 * dot + 0.5)).abs() < 1e-12);
            }
        }
        // beta = 0 ignores what C held, NaN included.
        let mut c = vec![f64::NAN; m * n];
        gemm(m, k, n, 1.0, &a, k as isize, 1, &bt, 1, k as isize, 0.0, &mut c, n as isize, 1);
        assert!(c.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn the_product_does_not_depend_on_the_thread_count() {
        let (m, k, n) = (200usize, 700usize, 300usize);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 1000) as f32 * 1e-3 - 0.5).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut c = vec![0f32; m * n];
            pool.install(|| gemm(m, k, n, 1.0, &a, k as isize, 1, &b, n as isize, 1, 0.0, &mut c, n as isize, 1));
            c
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }

    /// Row blocks give the bits of one product on one thread for every small row count
    /// (1-20, 40 and 130 rows on 2-4 threads: with 3 rows on 2 threads a block of one row
    /// used to round differently), with beta 1 (C read too) and B transposed, and leave
    /// the elements past each row of C (its row stride is wider than n) untouched.
    #[test]
    fn split_products_give_the_bits_of_one_thread() {
        let (k, n, c_rs) = (300usize, 517usize, 530usize);
        for m in (1usize..=20).chain([40, 130]) {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
            let bt: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 1000) as f32 * 1e-3 - 0.5).collect();
            let c0: Vec<f32> = (0..m * c_rs).map(|i| (i % 7) as f32).collect();
            let run = |threads: usize, how: Threads| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut c = c0.clone();
                pool.install(|| gemm_on(how, m, k, n, 1.0, &a, k as isize, 1, &bt, 1, k as isize, 1.0, &mut c, c_rs as isize, 1));
                c
            };
            let one = run(1, Threads::One);
            assert_ne!(one, c0, "m = {m}: the product changed nothing");
            for row in 0..m {
                assert_eq!(one[row * c_rs + n..(row + 1) * c_rs], c0[row * c_rs + n..(row + 1) * c_rs], "m = {m}: past row {row}'s end");
            }
            for threads in [2, 3, 4] {
                assert_eq!(one, run(threads, Threads::RowBlocks), "m = {m}, {threads} threads");
            }
        }
    }

    /// The crate's own split over the pool (`Threads::Pool`, which the inner products and
    /// weight gradients use) gives the bits of one thread too, for few rows and for the
    /// inner products' shapes (long k, few columns).
    #[test]
    fn the_crates_split_gives_the_bits_of_one_thread() {
        for (k, n) in [(300usize, 517usize), (4096, 8), (9216, 4)] {
            for m in (1usize..=20).chain([64, 257]) {
                let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
                let bt: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 1000) as f32 * 1e-3 - 0.5).collect();
                let run = |threads: usize| {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let mut c = vec![0f32; m * n];
                    pool.install(|| gemm(m, k, n, 1.0, &a, k as isize, 1, &bt, 1, k as isize, 0.0, &mut c, n as isize, 1));
                    c
                };
                let one = run(1);
                assert!(one.iter().any(|&v| v != 0.0));
                for threads in [2, 3, 4] {
                    assert_eq!(one, run(threads), "k = {k}, n = {n}, m = {m}, {threads} threads");
                }
            }
        }
    }
}
