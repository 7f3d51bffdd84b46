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
    (@borrow $d:ident) => { std::borrow::Cow::Borrowed($d) };
    (@widen $d:ident) => { std::borrow::Cow::Owned($d.iter().map(|&v| v as f64).collect()) };
}

impl_real!(f32, borrow);
impl_real!(f64, widen);
