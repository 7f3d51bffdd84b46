//! Fully connected layer: x [rows, k], w [n, k] (Caffe's layout), y [rows, n]. Every pass is
//! one GEMM; the transposes are stride swaps, never copies. With few rows (a DGN-AM batch
//! against fc6's 151 MB of weights) the passes are bound by reading the weights, and a GEMM
//! that packs them first reads them twice; there, forward and backward-data stream each
//! weight row once instead.

use super::InnerProductKernels;
use crate::device::Cpu;
use crate::real::Real;
use anyhow::Result;
use std::borrow::Cow;

/// Up to this many rows, forward and backward-data stream the weights.
const STREAM_ROWS: usize = 16;

/// Splits `0..len` into one contiguous range per worker thread and runs `f` on each.
fn parallel_ranges(len: usize, min_per_thread: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(len / min_per_thread.max(1)).max(1);
    if threads == 1 {
        return f(0..len);
    }
    let chunk = len.div_ceil(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let f = &f;
            let range = t * chunk..((t + 1) * chunk).min(len);
            s.spawn(move || f(range));
        }
    });
}

/// sum a[i] * b[i] with eight partial sums (vectorizes, and rounds less than one running sum).
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: T = ac.remainder().iter().zip(bc.remainder()).fold(T::ZERO, |s, (&x, &y)| s + x * y);
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// y[r, j] = x[r] . w[j]: each weight row is read once, for every row of x.
fn stream_forward<T: Real>(rows: usize, k: usize, n: usize, x: &[T], w: &[T], y: &mut [T]) {
    let out = SyncPtr(y.as_mut_ptr());
    parallel_ranges(n, 64, |js| {
        for j in js {
            let wj = &w[j * k..(j + 1) * k];
            for r in 0..rows {
                let v = dot(&x[r * k..(r + 1) * k], wj);
                // SAFETY: each thread writes only columns j of its own range, all in bounds.
                unsafe { *out.ptr().add(r * n + j) = v };
            }
        }
    });
}

/// Weight rows the backward pass holds in cache together; for each row of dx it applies
/// their nonzero factors (after a ReLU, about half are zero) up to 4 per pass over the row,
/// so dx is read and written a quarter as often as one weight row at a time.
const WEIGHT_BLOCK: usize = 8;

/// d[c] += g[0] w[0][c] + g[1] w[1][c] + ..., added in that order.
fn add_rows<T: Real, const C: usize>(d: &mut [T], g: [T; C], ws: [&[T]; C]) {
    let ws = ws.map(|w| &w[..d.len()]);
    for (c, d) in d.iter_mut().enumerate() {
        let mut acc = *d;
        for i in 0..C {
            acc += g[i] * ws[i][c];
        }
        *d = acc;
    }
}

/// dx[r, cols] += sum_j dy[r, j] w[j, cols], each thread owning a block of columns. The
/// loop runs over blocks of weight rows outside, so each is read from memory once while
/// the block of dx (rows x cols) stays in cache. Terms are added in order of j and zero
/// factors are skipped: exactly the sums of one weight row at a time.
fn stream_backward_data<T: Real>(rows: usize, k: usize, n: usize, dy: &[T], w: &[T], dx: &mut [T]) {
    let out = SyncPtr(dx.as_mut_ptr());
    parallel_ranges(k, 256, |cols| {
        let width = cols.len();
        let row = |j: usize| &w[j * k + cols.start..j * k + cols.end];
        for j0 in (0..n).step_by(WEIGHT_BLOCK) {
            let block = j0..(j0 + WEIGHT_BLOCK).min(n);
            for r in 0..rows {
                let mut nz = [0usize; WEIGHT_BLOCK];
                let mut count = 0;
                for j in block.clone().filter(|&j| dy[r * n + j] != T::ZERO) {
                    nz[count] = j;
                    count += 1;
                }
                if count == 0 {
                    continue;
                }
                // SAFETY: threads own disjoint column ranges of every row of dx.
                let dxr = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(r * k + cols.start), width) };
                let g = |j: usize| dy[r * n + j];
                for part in nz[..count].chunks(4) {
                    match *part {
                        [a, b, c, d] => add_rows(dxr, [g(a), g(b), g(c), g(d)], [row(a), row(b), row(c), row(d)]),
                        [a, b, c] => add_rows(dxr, [g(a), g(b), g(c)], [row(a), row(b), row(c)]),
                        [a, b] => add_rows(dxr, [g(a), g(b)], [row(a), row(b)]),
                        [a] => add_rows(dxr, [g(a)], [row(a)]),
                        _ => unreachable!("chunks of 1 to 4"),
                    }
                }
            }
        }
    });
}

/// A raw pointer the scoped threads may share; each writes a disjoint part.
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    fn ptr(self) -> *mut T {
        self.0
    }
}

fn assert_lens(rows: usize, k: usize, n: usize, x: usize, w: usize, y: usize) {
    assert_eq!(x, rows * k, "inner product: input length {x} is not {rows} x {k}");
    assert_eq!(w, n * k, "inner product: weight length {w} is not {n} x {k}");
    assert_eq!(y, rows * n, "inner product: output length {y} is not {rows} x {n}");
}

/// y = x w^T + bias (overwrites y).
pub fn inner_product_forward<T: Real>(rows: usize, k: usize, n: usize, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T]) {
    assert_lens(rows, k, n, x.len(), w.len(), y.len());
    if rows <= STREAM_ROWS {
        stream_forward(rows, k, n, x, w, y);
    } else {
        T::gemm(rows, k, n, T::ONE, x, k as isize, 1, w, 1, k as isize, T::ZERO, y, n as isize, 1);
    }
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "inner product: bias length");
        for row in y.chunks_exact_mut(n.max(1)) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += *b);
        }
    }
}

/// dx += dy w.
pub fn inner_product_backward_data<T: Real>(rows: usize, k: usize, n: usize, dy: &[T], w: &[T], dx: &mut [T]) {
    assert_lens(rows, k, n, dx.len(), w.len(), dy.len());
    if rows <= STREAM_ROWS {
        stream_backward_data(rows, k, n, dy, w, dx);
    } else {
        T::gemm(rows, n, k, T::ONE, dy, n as isize, 1, w, k as isize, 1, T::ONE, dx, k as isize, 1);
    }
}

/// dw += dy^T x; db += column sums of dy.
pub fn inner_product_backward_weights<T: Real>(rows: usize, k: usize, n: usize, x: &[T], dy: &[T], dw: &mut [T], db: Option<&mut [T]>) {
    assert_lens(rows, k, n, x.len(), dw.len(), dy.len());
    T::gemm(n, rows, k, T::ONE, dy, 1, n as isize, x, k as isize, 1, T::ONE, dw, k as isize, 1);
    if let Some(db) = db {
        assert_eq!(db.len(), n, "inner product: bias gradient length");
        for row in dy.chunks_exact(n.max(1)) {
            db.iter_mut().zip(row).for_each(|(d, v)| *d += *v);
        }
    }
}

impl<'w, T: Real> InnerProductKernels for Cpu<'w, T> {
    fn inner_product_forward(
        &self,
        rows: usize,
        k: usize,
        n: usize,
        x: &Vec<T>,
        w: &Cow<'w, [T]>,
        bias: Option<&Cow<'w, [T]>>,
        y: &mut Vec<T>,
    ) -> Result<()> {
        inner_product_forward(rows, k, n, x, w, bias.map(|b| &**b), y);
        Ok(())
    }

    fn inner_product_backward_data(&self, rows: usize, k: usize, n: usize, dy: &Vec<T>, w: &Cow<'w, [T]>, dx: &mut Vec<T>) -> Result<()> {
        inner_product_backward_data(rows, k, n, dy, w, dx);
        Ok(())
    }

    fn inner_product_backward_weights(
        &self,
        rows: usize,
        k: usize,
        n: usize,
        x: &Vec<T>,
        dy: &Vec<T>,
        dw: &mut Vec<T>,
        db: Option<&mut Vec<T>>,
    ) -> Result<()> {
        inner_product_backward_weights(rows, k, n, x, dy, dw, db.map(|b| b.as_mut_slice()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, dot, Rng};

    #[test]
    fn forward_hand_worked() {
        // x = [[1,2,3],[4,5,6]], w = [[1,0,-1],[2,1,0]], bias [10, 20].
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let w = [1.0, 0.0, -1.0, 2.0, 1.0, 0.0];
        let mut y = [f64::NAN; 4];
        inner_product_forward(2, 3, 2, &x, &w, Some(&[10.0, 20.0]), &mut y);
        assert_eq!(y, [8.0, 24.0, 8.0, 33.0]);
        let mut y32 = [0.0f32; 4];
        inner_product_forward(2, 3, 2, &x.map(|v| v as f32), &w.map(|v| v as f32), None, &mut y32);
        assert_eq!(y32, [-2.0, 4.0, -2.0, 13.0]);
    }

    fn forward(rows: usize, k: usize, n: usize, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; rows * n];
        inner_product_forward(rows, k, n, x, w, Some(b), &mut y);
        y
    }

    #[test]
    fn streamed_and_gemm_paths_agree_with_the_definition() {
        // Rows on both sides of STREAM_ROWS, sizes large enough to split across threads.
        let (k, n) = (600, 300);
        let mut rng = Rng::new(4);
        let w = rng.uniform_vec(n * k, -1.0, 1.0);
        for rows in [1, 7, STREAM_ROWS, STREAM_ROWS + 1, 40] {
            let x = rng.uniform_vec(rows * k, -1.0, 1.0);
            let dy = rng.uniform_vec(rows * n, -1.0, 1.0);
            let mut y = vec![0.0; rows * n];
            inner_product_forward(rows, k, n, &x, &w, None, &mut y);
            let mut dx = vec![0.5; rows * k];
            inner_product_backward_data(rows, k, n, &dy, &w, &mut dx);
            for r in 0..rows {
                for j in 0..n {
                    let want: f64 = (0..k).map(|i| x[r * k + i] * w[j * k + i]).sum();
                    assert!((y[r * n + j] - want).abs() < 1e-10, "rows {rows}: y[{r},{j}]");
                }
                for i in (0..k).step_by(37) {
                    let want: f64 = 0.5 + (0..n).map(|j| dy[r * n + j] * w[j * k + i]).sum::<f64>();
                    assert!((dx[r * k + i] - want).abs() < 1e-10, "rows {rows}: dx[{r},{i}]");
                }
            }
        }
    }

    #[test]
    fn blocked_backward_adds_in_the_order_of_one_weight_row_at_a_time() {
        // n = 11 leaves a partial block; zeros in dy take the path that skips factors. The
        // result must be bit for bit the row-at-a-time sums (so batches match single runs).
        let (rows, k, n) = (3, 600, 11);
        let mut rng = Rng::new(9);
        let w: Vec<f32> = rng.uniform_vec(n * k, -1.0, 1.0).into_iter().map(|v| v as f32).collect();
        let mut dy: Vec<f32> = rng.uniform_vec(rows * n, -1.0, 1.0).into_iter().map(|v| v as f32).collect();
        for i in (0..rows * n).filter(|i| i % 3 == 1 || (13..19).contains(i)) {
            dy[i] = 0.0;
        }
        let start: Vec<f32> = rng.uniform_vec(rows * k, -1.0, 1.0).into_iter().map(|v| v as f32).collect();
        let mut want = start.clone();
        for j in 0..n {
            for r in 0..rows {
                let g = dy[r * n + j];
                if g != 0.0 {
                    for c in 0..k {
                        want[r * k + c] += g * w[j * k + c];
                    }
                }
            }
        }
        let mut got = start;
        inner_product_backward_data(rows, k, n, &dy, &w, &mut got);
        assert_eq!(got, want);
    }

    #[test]
    fn gradients() {
        let mut rng = Rng::new(21);
        for (rows, k, n) in [(1, 7, 5), (3, 4, 6), (5, 9, 2)] {
            let x = rng.uniform_vec(rows * k, -1.0, 1.0);
            let w = rng.uniform_vec(n * k, -1.0, 1.0);
            let b = rng.uniform_vec(n, -1.0, 1.0);
            let r = rng.uniform_vec(rows * n, -1.0, 1.0);
            let mut dx = vec![0.0; x.len()];
            inner_product_backward_data(rows, k, n, &r, &w, &mut dx);
            let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; n]);
            inner_product_backward_weights(rows, k, n, &x, &r, &mut dw, Some(&mut db));
            check("ip dx", &x, &dx, |x| dot(&forward(rows, k, n, x, &w, &b), &r));
            check("ip dw", &w, &dw, |w| dot(&forward(rows, k, n, &x, w, &b), &r));
            check("ip db", &b, &db, |b| dot(&forward(rows, k, n, &x, &w, b), &r));
        }
    }

    #[test]
    fn backward_accumulates() {
        let mut rng = Rng::new(22);
        let (rows, k, n) = (3, 5, 4);
        let x = rng.uniform_vec(rows * k, -1.0, 1.0);
        let w = rng.uniform_vec(n * k, -1.0, 1.0);
        let dy = rng.uniform_vec(rows * n, -1.0, 1.0);
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; n]);
        inner_product_backward_data(rows, k, n, &dy, &w, &mut dx);
        inner_product_backward_weights(rows, k, n, &x, &dy, &mut dw, Some(&mut db));
        let (once_x, once_w, once_b) = (dx.clone(), dw.clone(), db.clone());
        inner_product_backward_data(rows, k, n, &dy, &w, &mut dx);
        inner_product_backward_weights(rows, k, n, &x, &dy, &mut dw, Some(&mut db));
        for (twice, once) in [(&dx, &once_x), (&dw, &once_w), (&db, &once_b)] {
            assert!(once.iter().any(|v| *v != 0.0));
            for (a, b) in twice.iter().zip(once.iter()) {
                assert!((a - 2.0 * b).abs() < 1e-12, "{a} is not twice {b}");
            }
        }
    }
}
