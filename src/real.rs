//! The scalar type the CPU backend computes in. Production runs use `f32`; gradient checks
//! run the very same op code in `f64` so finite differences are accurate.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

pub trait Real:
    Copy
    + bytemuck::Pod
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
    /// e^self computed inline, with no library call, so that loops over it vectorize: for
    /// f32 by `exp_f32`, for f64 (the gradient checks) std's `exp`.
    fn exp_inline(self) -> Self;
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
}

macro_rules! impl_real {
    ($t:ty, $cow:ident) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline] fn from_f64(v: f64) -> Self { v as $t }
            #[inline] fn from_f32(v: f32) -> Self { v as $t }
            #[inline] fn to_f64(self) -> f64 { self as f64 }
            #[inline] fn to_f32(self) -> f32 { self as f32 }
            #[inline] fn exp(self) -> Self { <$t>::exp(self) }
            #[inline(always)] fn exp_inline(self) -> Self { impl_real!(@exp $cow self) }
            #[inline] fn ln(self) -> Self { <$t>::ln(self) }
            #[inline] fn sqrt(self) -> Self { <$t>::sqrt(self) }
            #[inline] fn powf(self, e: Self) -> Self { <$t>::powf(self, e) }
            #[inline] fn abs(self) -> Self { <$t>::abs(self) }
            #[inline] fn is_finite(self) -> bool { <$t>::is_finite(self) }
            fn from_f32_slice(data: &[f32]) -> std::borrow::Cow<'_, [Self]> {
                impl_real!(@$cow data)
            }
        }
    };
    (@exp borrow $v:ident) => { exp_f32($v) };
    (@exp widen $v:ident) => { <f64>::exp($v) };
    (@borrow $d:ident) => { std::borrow::Cow::Borrowed($d) };
    (@widen $d:ident) => { std::borrow::Cow::Owned($d.iter().map(|&v| v as f64).collect()) };
}

impl_real!(f32, borrow);
impl_real!(f64, widen);

/// e^x in f32 within 2 ulp (checked against f64 below), in plain arithmetic that vectorizes
/// and gives the same bits at every vector width: x = n ln 2 + r with n = round(x / ln 2) and
/// |r| <= ln 2 / 2 (ln 2 in two parts, so r is exact to f32), e^r by Cephes' degree-6
/// polynomial, 2^n put in the exponent bits of two factors. Results under f32::MIN_POSITIVE (x below about
/// -87.3) come out 0, above f32::MAX infinite; NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.336_55; // ln(f32::MIN_POSITIVE)
    const HI: f32 = 88.722_83; // ln(f32::MAX)
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // clamp (unlike min and max) lets a NaN through.
    let xc = x.clamp(LO, HI);
    let t = xc * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 0.5;
    let er = (p * r) * r + r + 1.0;
    // 2^n in two halves, each a normal number for every n from -126 to 128.
    let n = t.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    let half = n >> 1;
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let scaled = er * pow2(half) * pow2(n - half);
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        scaled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units in the last place between an f32 and the exact value.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.to_bits() + 1) - w) as f64;
        (got as f64 - want).abs() / ulp
    }

    #[test]
    fn exp_f32_is_within_2_ulp_over_its_range() {
        let mut worst = (0.0f64, 0.0f32);
        let mut x = -87.3f32;
        while x < 88.7 {
            let u = ulps(exp_f32(x), (x as f64).exp());
            if u > worst.0 {
                worst = (u, x);
            }
            x += 0.000_37;
        }
        assert!(worst.0 <= 2.0, "{} ulp at x = {}", worst.0, worst.1);
        for x in [0.0f32, 1.0, -1.0, 0.5, 1e-8, -1e-8, 10.0, -10.0, 88.5, 88.7] {
            assert!(ulps(exp_f32(x), (x as f64).exp()) <= 2.0, "x = {x}: {} against {}", exp_f32(x), (x as f64).exp());
        }
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
