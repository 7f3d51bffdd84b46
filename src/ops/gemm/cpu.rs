//! The CPU matrix product: the `gemm` crate (faer's), which picks AVX-512, AVX2+FMA or SSE
//! kernels at run time and splits the work over rayon's pool. It was chosen over
//! `matrixmultiply` by measurement at this project's shapes (`cargo bench --bench gemm`,
//! docs/benchmarks.md). It splits rows and columns of C across threads, never the sum over
//! k, so an element's value does not depend on the thread count.

use crate::device::cpu::SharedMut;
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
    /// One block of C per thread of the pool, each block's product on its thread (the
    /// crate's own split scales worse on this project's shapes): blocks of columns where C
    /// has more columns than rows (each thread then packs only its part of B, the larger
    /// operand) and they are wide enough, else blocks of rows. Needs C's rows to be
    /// contiguous (column stride 1); otherwise as `Pool`.
    Blocks,
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

/// How the crate computes a block of `rows` x `cols` of C (k terms each), as far as its
/// rounding goes: every block of a split product must go the whole product's way for the
/// split to give one thread's bits. From gemm-common 0.19's `gemm_basic_generic`;
/// `split_products_give_the_bits_of_one_thread` holds it to that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// One row or one column (a matrix-vector loop), or at most 256 values (dot
    /// products): never split into or out of.
    Vector,
    /// At most 64 rows and 64 columns with k > 512: blocks of k at most 512 long.
    Small,
    /// Blocks of k cut by the cache sizes (the same as `Small`'s when k <= 512).
    General,
}

fn path(rows: usize, cols: usize, k: usize) -> Path {
    if rows < 2 || cols < 2 || rows * cols <= 256 {
        Path::Vector
    } else if rows <= 64 && cols <= 64 && k > 512 {
        Path::Small
    } else {
        Path::General
    }
}

/// How `Threads::Blocks` cuts a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    /// Blocks of this many rows of C (the last one fewer).
    Rows(usize),
    /// This many blocks of columns, evenly cut.
    Columns(usize),
}

/// The split of an m x n product (k terms) into at most one block per thread, every block
/// going the whole product's way (`path`): by columns where C has more columns than rows
/// (each thread then packs only its part of B, the larger operand), else by rows, else the
/// other way; None where neither keeps every block on that path.
fn split(m: usize, n: usize, k: usize, workers: usize) -> Option<Split> {
    let whole = path(m, n, k);
    if workers < 2 || whole == Path::Vector {
        return None;
    }
    // Blocks narrower than the whole product can only be on the same path or a smaller one.
    let keeps = |rows: usize, cols: usize| path(rows, cols, k) == whole;
    let columns = (2..=workers.min(n)).rev().find(|&b| keeps(m, n / b)).map(Split::Columns);
    let rows = {
        let r = m.div_ceil(workers).max(2);
        let last = m - (m.div_ceil(r) - 1) * r;
        (r < m && keeps(last, n)).then_some(Split::Rows(r))
    };
    if n > m {
        columns.or(rows)
    } else {
        rows.or(columns)
    }
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
    if threads == Threads::Blocks {
        let how = if c_cs == 1 && c_rs >= n as isize { split(m, n, k, workers) } else { None };
        match how {
            None => return gemm_on(Threads::Pool, m, k, n, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, c_rs, c_cs),
            Some(Split::Columns(blocks)) => {
                check_extent(c.len(), m, n, c_rs, c_cs, "C");
                let out = SharedMut::new(c);
                return (0..blocks).into_par_iter().for_each(|i| {
                    let (j0, j1) = (i * n / blocks, (i + 1) * n / blocks);
                    let b = if k == 0 { b } else { &b[j0 * b_cs as usize..] };
                    // SAFETY: `c` is borrowed mutably for the whole split, and this block
                    // writes only columns j0..j1 of C, which no other block writes;
                    // gemm_raw checks the block's extent against what is left of `c`.
                    unsafe {
                        gemm_raw(
                            Threads::One,
                            m,
                            k,
                            j1 - j0,
                            alpha,
                            a,
                            a_rs,
                            a_cs,
                            b,
                            b_rs,
                            b_cs,
                            beta,
                            out.at(j0),
                            out.len_from(j0),
                            c_rs,
                            c_cs,
                        )
                    }
                });
            }
            Some(Split::Rows(rows)) => {
                let c_rs_u = c_rs as usize;
                // The last block's slice of C ends at its last element.
                let c = &mut c[..(m - 1) * c_rs_u + n];
                return c.par_chunks_mut(rows * c_rs_u).enumerate().for_each(|(i, ci)| {
                    let (i0, mi) = (i * rows, rows.min(m - i * rows));
                    let a = if k == 0 { a } else { &a[i0 * a_rs as usize..] };
                    gemm_on(Threads::One, mi, k, n, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, ci, c_rs, c_cs);
                });
            }
        }
    }
    // SAFETY: `c` is borrowed mutably, so no other thread touches it during the call.
    unsafe { gemm_raw(threads, m, k, n, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c.as_mut_ptr(), c.len(), c_rs, c_cs) }
}

/// `gemm_on` with C given as a pointer to `c_len` values (its extent is checked against
/// them), for callers that share one C among threads, each writing elements of its own.
/// `Threads::Blocks` runs as `Threads::One`.
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
                Threads::One | Threads::Blocks => gemm::Parallelism::None,
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

    /// Blocks give the bits of one product on one thread (2-4 threads): for 1-20, 40 and
    /// 130 rows; in column blocks (more columns than rows) and row blocks; where blocks
    /// would leave the whole product's path (a block of one row: 3 rows on 2 threads once
    /// changed bits; blocks of at most 64 x 64 when k > 512: 130 x 40 did; at most 256
    /// values with B transposed: 2 x 93 did) and where the whole product is small itself
    /// (32 x 49), at lengths of k the crate cuts (576, 700, 1152) and column counts at the
    /// edges (40, 49, 129-131); with B as stored and transposed,
    /// beta 1 (C read too); and leave the elements past each row of C untouched.
    #[test]
    fn split_products_give_the_bits_of_one_thread() {
        let shapes = [(300usize, 517usize), (1152, 280), (576, 131), (1152, 130), (1152, 129), (700, 40), (1152, 200), (1152, 49)];
        for (k, n) in shapes {
            let c_rs = n + 13;
            for m in (1usize..=20).chain([40, 130]) {
                let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
                let b: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 1000) as f32 * 1e-3 - 0.5).collect();
                let c0: Vec<f32> = (0..m * c_rs).map(|i| (i % 7) as f32).collect();
                for (b_rs, b_cs) in [(n as isize, 1isize), (1, k as isize)] {
                    let run = |threads: usize, how: Threads| {
                        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                        let mut c = c0.clone();
                        pool.install(|| gemm_on(how, m, k, n, 1.0, &a, k as isize, 1, &b, b_rs, b_cs, 1.0, &mut c, c_rs as isize, 1));
                        c
                    };
                    let one = run(1, Threads::One);
                    assert_ne!(one, c0, "m = {m}: the product changed nothing");
                    for row in 0..m {
                        assert_eq!(
                            one[row * c_rs + n..(row + 1) * c_rs],
                            c0[row * c_rs + n..(row + 1) * c_rs],
                            "m = {m}: past row {row}'s end"
                        );
                    }
                    for threads in [2, 3, 4] {
                        let what = format!(
                            "k = {k}, n = {n}, m = {m}, B strides {b_rs}, {b_cs}, {threads} threads: {:?}",
                            split(m, n, k, threads)
                        );
                        assert_eq!(one, run(threads, Threads::Blocks), "{what}");
                    }
                }
            }
        }
        // Both ways of cutting are taken.
        assert_eq!(split(32, 280, 1152, 2), Some(Split::Columns(2)));
        assert_eq!(split(130, 40, 300, 2), Some(Split::Rows(65)));
        assert_eq!(split(130, 40, 700, 2), Some(Split::Rows(65)));
        assert_eq!(split(128, 49, 1024, 2), Some(Split::Columns(2)), "64 x 49 row blocks would be small, the whole is not");
        assert_eq!(split(32, 49, 1152, 2), Some(Split::Columns(2)), "the whole product and its blocks are small");
        assert_eq!(split(2, 93, 1152, 2), None, "2 x 46 blocks are dot products");
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
