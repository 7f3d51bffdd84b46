//! Fully connected layer: x [rows, k], w [n, k] (Caffe's layout), y [rows, n]. A DGN-AM
//! batch has few rows against fc6's 151 MB of weights, so forward and backward-data are
//! bound by reading the weights: both stream each weight row from memory once, for every
//! row of x at a time, and a GEMM (which packs the weights first) would read them twice.
//! Every output element is reduced in one fixed order, whatever the number of rows and
//! threads, so a sample's result never depends on the batch it runs in.

use super::InnerProductKernels;
use crate::device::cpu::CpuParam;
use crate::device::Cpu;
use crate::ops::gemm::cpu::gemm;
use crate::real::Real;
use anyhow::Result;
use rayon::prelude::*;

/// Lanes of each partial dot product: one AVX-512 register of f32.
const LANES: usize = 16;

/// Splits `0..len` into ranges of `per_task` (the last may be shorter) and runs `f` on each,
/// across the thread pool.
fn parallel_ranges(len: usize, per_task: usize, f: impl Fn(std::ops::Range<usize>) + Sync + Send) {
    let per_task = per_task.max(1);
    let tasks = len.div_ceil(per_task).max(1);
    (0..tasks).into_par_iter().for_each(|t| f(t * per_task..((t + 1) * per_task).min(len)));
}

/// The first `body` values (a multiple of LANES) in runs of LANES.
#[inline(always)]
fn chunks<T>(v: &[T], body: usize) -> std::slice::ChunksExact<'_, T> {
    v[..body].chunks_exact(LANES)
}

/// The lanes of a partial sum, added in order, then the tail's products.
#[inline(always)]
fn finish<T: Real>(acc: [T; LANES], x: &[T], w: &[T]) -> T {
    let s = acc.iter().fold(T::ZERO, |s, &v| s + v);
    x.iter().zip(w).fold(s, |s, (&a, &b)| s + a * b)
}

/// x . w in LANES partial sums over k, then the lanes in order, then the tail.
#[inline(always)]
fn dot<T: Real>(x: &[T], w: &[T]) -> T {
    let body = x.len() - x.len() % LANES;
    let mut a = [T::ZERO; LANES];
    for (xc, wc) in chunks(x, body).zip(chunks(w, body)) {
        for l in 0..LANES {
            a[l] += xc[l] * wc[l];
        }
    }
    finish(a, &x[body..], &w[body..])
}

/// acc[q] += the lanes of x . w[q] for q < 4, over a stretch of k (a multiple of LANES):
/// the partial sums `dot` keeps, carried from one stretch to the next.
#[inline(always)]
fn dot4_into<T: Real>(x: &[T], w: [&[T]; 4], acc: &mut [[T; LANES]; 4]) {
    let len = x.len();
    let [w0, w1, w2, w3] = w.map(|w| &w[..len]);
    // Local copies, so the sums stay in registers through the stretch.
    let [mut a0, mut a1, mut a2, mut a3] = *acc;
    for ((((xc, c0), c1), c2), c3) in chunks(x, len).zip(chunks(w0, len)).zip(chunks(w1, len)).zip(chunks(w2, len)).zip(chunks(w3, len)) {
        for l in 0..LANES {
            a0[l] += xc[l] * c0[l];
            a1[l] += xc[l] * c1[l];
            a2[l] += xc[l] * c2[l];
            a3[l] += xc[l] * c3[l];
        }
    }
    *acc = [a0, a1, a2, a3];
}

/// `dot4_into` for two rows of x at once: one pass over the four weight rows' stretch
/// for both, so those are read from cache half as often.
#[inline(always)]
fn dot2x4_into<T: Real>(x0: &[T], x1: &[T], w: [&[T]; 4], acc0: &mut [[T; LANES]; 4], acc1: &mut [[T; LANES]; 4]) {
    let len = x0.len();
    let [w0, w1, w2, w3] = w.map(|w| &w[..len]);
    let x1 = &x1[..len];
    let ([mut a0, mut a1, mut a2, mut a3], [mut b0, mut b1, mut b2, mut b3]) = (*acc0, *acc1);
    let ws = chunks(w0, len).zip(chunks(w1, len)).zip(chunks(w2, len)).zip(chunks(w3, len));
    for ((xa, xb), (((c0, c1), c2), c3)) in chunks(x0, len).zip(chunks(x1, len)).zip(ws) {
        for l in 0..LANES {
            a0[l] += xa[l] * c0[l];
            a1[l] += xa[l] * c1[l];
            a2[l] += xa[l] * c2[l];
            a3[l] += xa[l] * c3[l];
            b0[l] += xb[l] * c0[l];
            b1[l] += xb[l] * c1[l];
            b2[l] += xb[l] * c2[l];
            b3[l] += xb[l] * c3[l];
        }
    }
    (*acc0, *acc1) = ([a0, a1, a2, a3], [b0, b1, b2, b3]);
}

/// Values of k per pass of four weight rows over a group of rows of x: the weights' stretch
/// (8 KiB) and the rows' (16 KiB) stay in the first-level cache through the pass, where
/// whole rows (16-36 KiB each) would be read again from the second level for every row.
const K_STRETCH: usize = 512;
/// Rows of x whose partial sums one block of four weight rows carries through its stretches.
const ROW_GROUP: usize = 8;

crate::multiversion! {
    /// y[r, j] = x[r] . w[j] for j in `js`: four weight rows at a time, in stretches of k,
    /// against two rows of x at a time (one with fewer than 32 vector registers). Every
    /// element adds its products in the order `dot` does, whatever the stretch and the rows.
    fn forward_columns<T: Real>(rows: usize, k: usize, n: usize, x: &[T], w: &[T], js: std::ops::Range<usize>, y: SyncPtr<T>, tile: Tile) {
        // Two rows of x hold 8 partial sums of LANES: 8 registers with AVX-512, 16 (all
        // of them) with AVX2, so narrower builds take one row at a time.
        let pairs = tile == Tile::Wide;
        let body = k - k % LANES;
        // SAFETY: each task writes only the columns `js` of y, all in bounds.
        let put = |r: usize, j: usize, v: T| unsafe { *y.ptr().add(r * n + j) = v };
        let mut j = js.start;
        while j + 4 <= js.end {
            let wq = [j, j + 1, j + 2, j + 3];
            for g0 in (0..rows).step_by(ROW_GROUP) {
                let group = ROW_GROUP.min(rows - g0);
                let mut acc = [[[T::ZERO; LANES]; 4]; ROW_GROUP];
                for c0 in (0..body).step_by(K_STRETCH) {
                    let c1 = (c0 + K_STRETCH).min(body);
                    let ws = wq.map(|j| &w[j * k + c0..j * k + c1]);
                    let xs = |r: usize| &x[(g0 + r) * k + c0..(g0 + r) * k + c1];
                    let mut r = 0;
                    while pairs && r + 2 <= group {
                        let (lo, hi) = acc.split_at_mut(r + 1);
                        dot2x4_into(xs(r), xs(r + 1), ws, &mut lo[r], &mut hi[0]);
                        r += 2;
                    }
                    for (r, a) in acc.iter_mut().enumerate().take(group).skip(r) {
                        dot4_into(xs(r), ws, a);
                    }
                }
                for (r, a) in acc.iter().enumerate().take(group) {
                    let xt = &x[(g0 + r) * k + body..(g0 + r + 1) * k];
                    for (q, &jq) in wq.iter().enumerate() {
                        put(g0 + r, jq, finish(a[q], xt, &w[jq * k + body..(jq + 1) * k]));
                    }
                }
            }
            j += 4;
        }
        for j in j..js.end {
            for r in 0..rows {
                put(r, j, dot(&x[r * k..(r + 1) * k], &w[j * k..(j + 1) * k]));
            }
        }
    }
}

/// y[r, j] = x[r] . w[j]: each weight row is read from memory once, for every row of x.
fn stream_forward<T: Real>(rows: usize, k: usize, n: usize, x: &[T], w: &[T], y: &mut [T], tile: Tile) {
    let out = SyncPtr(y.as_mut_ptr());
    parallel_ranges(n, 64, |js| forward_columns(rows, k, n, x, w, js, out, tile));
}

/// Weight rows applied per sweep over a task's columns: they are read from memory once
/// while the rows of dx they update stay in cache (8 measured best against 4, 16 and 32).
const WEIGHT_BLOCK: usize = 8;

/// How many accumulators the loops keep in registers: AVX-512 has 32 vector registers, AVX2
/// and SSE 16. Either way every element is summed in the same order, so the tile changes
/// only the speed, never a bit (`both_tiles_give_the_same_bits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tile {
    Narrow,
    Wide,
}

impl Tile {
    fn for_this_cpu() -> Tile {
        if crate::device::simd::level() >= crate::device::simd::Level::V4 {
            Tile::Wide
        } else {
            Tile::Narrow
        }
    }

    /// The block of dx (rows, columns) `backward_data_columns` keeps through a block of
    /// weight rows.
    fn backward(self) -> (usize, usize) {
        match self {
            Tile::Wide => (8, 2 * LANES),
            Tile::Narrow => (4, LANES),
        }
    }
}

/// dx[r0 + r][c0 .. c0 + W] += sum over j in `js`, in order, of dy[r0 + r][j] w[j][c0 ..]
/// for r < R: the R x W block of dx stays in registers through all of `js`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn add_tile<T: Real, const R: usize, const W: usize>(
    k: usize,
    n: usize,
    dy: &[T],
    w: &[T],
    js: &[usize],
    r0: usize,
    c0: usize,
    dx: Block<T>,
) {
    // SAFETY: the caller's task owns columns c0..c0 + W of rows r0..r0 + R of dx.
    let row = |r: usize| unsafe { std::slice::from_raw_parts_mut(dx.at(r0 + r, c0), W) };
    let mut acc = [[T::ZERO; W]; R];
    for (r, a) in acc.iter_mut().enumerate() {
        a.copy_from_slice(row(r));
    }
    assert!(r0 + R <= dy.len() / n.max(1) && c0 + W <= k && js.iter().all(|&j| j < n) && w.len() >= n * k);
    // Checked once above: every index below is in bounds (the per-element checks cost more
    // instructions than the arithmetic).
    let (wp, dyp) = (w.as_ptr(), dy.as_ptr());
    for &j in js {
        // SAFETY: j < n and c0 + W <= k, so w[j * k + c0 ..][..W] is inside w.
        let wj = unsafe { std::slice::from_raw_parts(wp.add(j * k + c0), W) };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: r0 + r < the rows of dy and j < n.
            let g = unsafe { *dyp.add((r0 + r) * n + j) };
            for l in 0..W {
                a[l] += g * wj[l];
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        row(r).copy_from_slice(a);
    }
}

/// `add_tile` for R = rows, 1 to 8.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn add_rows_tile<T: Real, const W: usize>(
    rows: usize,
    k: usize,
    n: usize,
    dy: &[T],
    w: &[T],
    js: &[usize],
    r0: usize,
    c0: usize,
    dx: Block<T>,
) {
    match rows {
        8 => add_tile::<T, 8, W>(k, n, dy, w, js, r0, c0, dx),
        7 => add_tile::<T, 7, W>(k, n, dy, w, js, r0, c0, dx),
        6 => add_tile::<T, 6, W>(k, n, dy, w, js, r0, c0, dx),
        5 => add_tile::<T, 5, W>(k, n, dy, w, js, r0, c0, dx),
        4 => add_tile::<T, 4, W>(k, n, dy, w, js, r0, c0, dx),
        3 => add_tile::<T, 3, W>(k, n, dy, w, js, r0, c0, dx),
        2 => add_tile::<T, 2, W>(k, n, dy, w, js, r0, c0, dx),
        1 => add_tile::<T, 1, W>(k, n, dy, w, js, r0, c0, dx),
        _ => unreachable!("tiles of 1 to 8 rows"),
    }
}

crate::multiversion! {
    /// dx[.., cols] += dy w[js, cols]: for each block of the weight rows `js` (those with a
    /// nonzero factor in some row of dy), every tile of dx in the columns `cols`. Each element
    /// of dx adds its terms in order of j, whatever the tiling: the sums of one weight row at
    /// a time (a zero factor adds a zero), so a row's bits depend neither on the batch nor on
    /// the tile.
    fn backward_data_columns<T: Real>(rows: usize, k: usize, n: usize, dy: &[T], w: &[T], js: &[usize], cols: std::ops::Range<usize>, dx: Block<T>, tile: Tile) {
        let (tile_rows, tile_cols) = tile.backward();
        // The tiles of all rows of dx at one block of columns run back to back, so the
        // weights they share are read from memory once and then from the first-level cache.
        for block in js.chunks(WEIGHT_BLOCK) {
            let mut c0 = cols.start;
            if tile_cols == 2 * LANES {
                while c0 + 2 * LANES <= cols.end {
                    for r0 in (0..rows).step_by(tile_rows) {
                        add_rows_tile::<T, { 2 * LANES }>(tile_rows.min(rows - r0), k, n, dy, w, block, r0, c0, dx);
                    }
                    c0 += 2 * LANES;
                }
            }
            while c0 + LANES <= cols.end {
                for r0 in (0..rows).step_by(tile_rows) {
                    add_rows_tile::<T, LANES>(tile_rows.min(rows - r0), k, n, dy, w, block, r0, c0, dx);
                }
                c0 += LANES;
            }
            for c0 in c0..cols.end {
                for r0 in (0..rows).step_by(tile_rows) {
                    add_rows_tile::<T, 1>(tile_rows.min(rows - r0), k, n, dy, w, block, r0, c0, dx);
                }
            }
        }
    }
}

/// dx += dy w, each task owning a block of columns of dx. Weight rows whose factor is zero
/// in every row of dy (after a ReLU, about half of them at batch 1) are not read at all.
fn stream_backward_data<T: Real>(rows: usize, k: usize, n: usize, dy: &[T], w: &[T], dx: &mut [T], tile: Tile) {
    let js: Vec<usize> = (0..n).filter(|&j| (0..rows).any(|r| dy[r * n + j] != T::ZERO)).collect();
    let out = SyncPtr(dx.as_mut_ptr());
    // One long stretch of every weight row per thread: fewer, longer streams from memory.
    let per_task = k.div_ceil(rayon::current_num_threads()).next_multiple_of(2 * LANES).max(256);
    parallel_ranges(k, per_task, |cols| {
        // The task's columns of dx, worked on in a copy whose rows are no multiple of 4 KiB
        // apart. The fc layers' widths (4096, 9216) are, and then the rows of a tile and the
        // weight rows all fall in one set of the first-level cache and evict each other.
        let width = cols.len();
        let ld = padded_stride(width);
        let mut part = vec![T::ZERO; rows * ld];
        for r in 0..rows {
            // SAFETY: the task owns these columns of every row.
            let src = unsafe { std::slice::from_raw_parts(out.ptr().add(r * k + cols.start), width) };
            part[r * ld..r * ld + width].copy_from_slice(src);
        }
        let block = Block { ptr: SyncPtr(part.as_mut_ptr()), ld, first_col: cols.start };
        backward_data_columns(rows, k, n, dy, w, &js, cols.clone(), block, tile);
        for r in 0..rows {
            // SAFETY: as above.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(r * k + cols.start), width) };
            dst.copy_from_slice(&part[r * ld..r * ld + width]);
        }
    });
}

/// A row stride of at least `width` values whose rows start in different sets of a 4 KiB-
/// aliased first-level cache.
fn padded_stride(width: usize) -> usize {
    let ld = width.next_multiple_of(LANES);
    if ld.is_multiple_of(256) {
        ld + LANES
    } else {
        ld
    }
}

/// Columns `first_col..` of a block of rows, `ld` apart.
#[derive(Clone, Copy)]
struct Block<T> {
    ptr: SyncPtr<T>,
    ld: usize,
    first_col: usize,
}

impl<T> Block<T> {
    /// Element (r, c) of the matrix the block's columns belong to.
    #[inline(always)]
    fn at(self, r: usize, c: usize) -> *mut T {
        // SAFETY (callers): (r, c) is inside the block.
        unsafe { self.ptr.ptr().add(r * self.ld + (c - self.first_col)) }
    }
}

/// A raw pointer the pool's tasks may share; each writes a disjoint part.
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    #[inline(always)]
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
    stream_forward(rows, k, n, x, w, y, Tile::for_this_cpu());
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
    stream_backward_data(rows, k, n, dy, w, dx, Tile::for_this_cpu());
}

/// dw += dy^T x; db += column sums of dy.
pub fn inner_product_backward_weights<T: Real>(rows: usize, k: usize, n: usize, x: &[T], dy: &[T], dw: &mut [T], db: Option<&mut [T]>) {
    assert_lens(rows, k, n, x.len(), dw.len(), dy.len());
    gemm(n, rows, k, T::ONE, dy, 1, n as isize, x, k as isize, 1, T::ONE, dw, k as isize, 1);
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
        w: &CpuParam<'w, T>,
        bias: Option<&CpuParam<'w, T>>,
        y: &mut Vec<T>,
    ) -> Result<()> {
        inner_product_forward(rows, k, n, x, w, bias.map(|b| &**b), y);
        Ok(())
    }

    fn inner_product_backward_data(
        &self,
        rows: usize,
        k: usize,
        n: usize,
        dy: &Vec<T>,
        w: &CpuParam<'w, T>,
        dx: &mut Vec<T>,
    ) -> Result<()> {
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
    fn the_blocked_passes_agree_with_the_definition() {
        // Odd and even row counts (blocks of two rows), n with a tail of weight rows (blocks
        // of four), k with a tail of lanes, sizes large enough to split across threads.
        let (k, n) = (601, 303);
        let mut rng = Rng::new(4);
        let w = rng.uniform_vec(n * k, -1.0, 1.0);
        for rows in [1, 2, 7, 16, 17, 40] {
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
        // k = 1024 splits into tasks 512 wide, which work in a copy with padded rows.
        for (rows, k, n) in [(3, 600, 11), (9, 1024, 11)] {
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
            assert_eq!(got, want, "{rows} x {k}");
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_alone_and_in_any_batch() {
        let (k, n) = (1000, 70);
        let mut rng = Rng::new(5);
        let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
        let w = f(rng.uniform_vec(n * k, -1.0, 1.0));
        let x = f(rng.uniform_vec(5 * k, -1.0, 1.0));
        let dy = f(rng.uniform_vec(5 * n, -1.0, 1.0));
        let mut y = vec![0f32; 5 * n];
        inner_product_forward(5, k, n, &x, &w, None, &mut y);
        let mut dx = vec![0f32; 5 * k];
        inner_product_backward_data(5, k, n, &dy, &w, &mut dx);
        for r in 0..5 {
            let mut y1 = vec![0f32; n];
            inner_product_forward(1, k, n, &x[r * k..(r + 1) * k], &w, None, &mut y1);
            assert_eq!(y1, y[r * n..(r + 1) * n], "row {r} of 5");
            let mut dx1 = vec![0f32; k];
            inner_product_backward_data(1, k, n, &dy[r * n..(r + 1) * n], &w, &mut dx1);
            assert_eq!(dx1, dx[r * k..(r + 1) * k], "row {r} of 5");
        }
    }

    #[test]
    fn forward_in_stretches_sums_as_one_dot_product() {
        // k spans three stretches plus a tail; 11 rows leave a partial group and an odd row;
        // 7 columns leave a partial block of weight rows.
        let (rows, k, n) = (11, 2 * K_STRETCH + 100 + 5, 7);
        let mut rng = Rng::new(8);
        let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
        let (x, w) = (f(rng.uniform_vec(rows * k, -1.0, 1.0)), f(rng.uniform_vec(n * k, -1.0, 1.0)));
        for tile in [Tile::Wide, Tile::Narrow] {
            let mut y = vec![0f32; rows * n];
            stream_forward(rows, k, n, &x, &w, &mut y, tile);
            for (i, v) in y.iter().enumerate() {
                let (r, j) = (i / n, i % n);
                assert_eq!(*v, super::dot(&x[r * k..(r + 1) * k], &w[j * k..(j + 1) * k]), "{tile:?} row {r} column {j}");
            }
        }
    }

    #[test]
    fn both_tiles_give_the_same_bits() {
        let (k, n) = (1000, 70);
        let mut rng = Rng::new(6);
        let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
        let w = f(rng.uniform_vec(n * k, -1.0, 1.0));
        for rows in [1, 3, 8, 13] {
            let x = f(rng.uniform_vec(rows * k, -1.0, 1.0));
            let dy = f(rng.uniform_vec(rows * n, -1.0, 1.0));
            let run = |tile| {
                let (mut y, mut dx) = (vec![0f32; rows * n], vec![0.25f32; rows * k]);
                stream_forward(rows, k, n, &x, &w, &mut y, tile);
                stream_backward_data(rows, k, n, &dy, &w, &mut dx, tile);
                (y, dx)
            };
            assert_eq!(run(Tile::Wide), run(Tile::Narrow), "{rows} rows");
        }
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
