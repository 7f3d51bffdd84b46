//! Fully connected layer: x [rows, k], w [n, k] (Caffe's layout), y [rows, n]. Every pass is
//! one GEMM; the transposes are stride swaps, never copies.

use crate::real::Real;

fn assert_lens(rows: usize, k: usize, n: usize, x: usize, w: usize, y: usize) {
    assert_eq!(x, rows * k, "inner product: input length {x} is not {rows} x {k}");
    assert_eq!(w, n * k, "inner product: weight length {w} is not {n} x {k}");
    assert_eq!(y, rows * n, "inner product: output length {y} is not {rows} x {n}");
}

/// y = x w^T + bias (overwrites y).
pub fn inner_product_forward<T: Real>(rows: usize, k: usize, n: usize, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T]) {
    assert_lens(rows, k, n, x.len(), w.len(), y.len());
    T::gemm(rows, k, n, T::ONE, x, k as isize, 1, w, 1, k as isize, T::ZERO, y, n as isize, 1);
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
    T::gemm(rows, n, k, T::ONE, dy, n as isize, 1, w, k as isize, 1, T::ONE, dx, k as isize, 1);
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
