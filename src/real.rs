//! The scalar type the CPU backend computes in. Production runs use `f32`; gradient checks
//! run the very same op code in `f64` so finite differences are accurate.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + Debug
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(v: f64) -> Self;
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    fn to_f32(self) -> f32;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn abs(self) -> Self;
    fn is_finite(self) -> bool;
    fn max(self, other: Self) -> Self {
        if other > self {
            other
        } else {
            self
        }
    }
    fn min(self, other: Self) -> Self {
        if other < self {
            other
        } else {
            self
        }
    }
    /// Borrow f32 data as this type when it already is f32, convert otherwise.
    fn from_f32_slice(data: &[f32]) -> std::borrow::Cow<'_, [Self]>;

    /// C = alpha * A * B + beta * C, every matrix given by its row and column strides
    /// (so a transpose is a swap of strides). A is m x k, B is k x n, C is m x n.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: &[Self],
        a_rs: isize,
        a_cs: isize,
        b: &[Self],
        b_rs: isize,
        b_cs: isize,
        beta: Self,
        c: &mut [Self],
        c_rs: isize,
        c_cs: isize,
    );
}

/// Bounds check shared by both gemm instantiations: the last element each matrix touches
/// must lie inside its slice, so the unsafe call below never reads or writes outside.
fn check_extent(len: usize, rows: usize, cols: usize, rs: isize, cs: isize, what: &str) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(rs >= 0 && cs >= 0, "gemm: negative stride for {what}");
    let last = (rows - 1) * rs as usize + (cols - 1) * cs as usize;
    assert!(last < len, "gemm: {what} needs {} elements, slice has {len}", last + 1);
}

macro_rules! impl_real {
    ($t:ty, $gemm:path, $cow:ident) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline] fn from_f64(v: f64) -> Self { v as $t }
            #[inline] fn from_f32(v: f32) -> Self { v as $t }
            #[inline] fn to_f64(self) -> f64 { self as f64 }
            #[inline] fn to_f32(self) -> f32 { self as f32 }
            #[inline] fn exp(self) -> Self { <$t>::exp(self) }
            #[inline] fn ln(self) -> Self { <$t>::ln(self) }
            #[inline] fn sqrt(self) -> Self { <$t>::sqrt(self) }
            #[inline] fn powf(self, e: Self) -> Self { <$t>::powf(self, e) }
            #[inline] fn abs(self) -> Self { <$t>::abs(self) }
            #[inline] fn is_finite(self) -> bool { <$t>::is_finite(self) }
            fn from_f32_slice(data: &[f32]) -> std::borrow::Cow<'_, [Self]> {
                impl_real!(@$cow data)
            }
            fn gemm(
                m: usize, k: usize, n: usize, alpha: Self,
                a: &[Self], a_rs: isize, a_cs: isize,
                b: &[Self], b_rs: isize, b_cs: isize,
                beta: Self, c: &mut [Self], c_rs: isize, c_cs: isize,
            ) {
                if m == 0 || n == 0 {
                    return;
                }
                check_extent(c.len(), m, n, c_rs, c_cs, "C");
                if k > 0 {
                    check_extent(a.len(), m, k, a_rs, a_cs, "A");
                    check_extent(b.len(), k, n, b_rs, b_cs, "B");
                }
                // SAFETY: the extents of all three matrices were checked against their slices.
                unsafe {
                    $gemm(m, k, n, alpha, a.as_ptr(), a_rs, a_cs, b.as_ptr(), b_rs, b_cs,
                          beta, c.as_mut_ptr(), c_rs, c_cs);
                }
            }
        }
    };
    (@borrow $d:ident) => { std::borrow::Cow::Borrowed($d) };
    (@widen $d:ident) => { std::borrow::Cow::Owned($d.iter().map(|&v| v as f64).collect()) };
}

impl_real!(f32, matrixmultiply::sgemm, borrow);
impl_real!(f64, matrixmultiply::dgemm, widen);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_naive_with_transposed_strides() {
        let (m, k, n) = (3usize, 4usize, 5usize);
        let a: Vec<f64> = (0..m * k).map(|i| i as f64 * 0.5 - 2.0).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| (i as f64).sin()).collect(); // B stored as n x k
        let mut c = vec![1.0f64; m * n];
        f64::gemm(m, k, n, 2.0, &a, k as isize, 1, &bt, 1, k as isize, 0.5, &mut c, n as isize, 1);
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum();
                assert!((c[i * n + j] - (2.0 * dot + 0.5)).abs() < 1e-12);
            }
        }
    }
}
