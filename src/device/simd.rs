//! Run-time choice of the CPU's vector instructions. dgnam is built for baseline x86-64
//! (never `target-cpu=native`), so every hot CPU loop is compiled three times by
//! [`multiversion!`]: for AVX-512 (x86-64-v4), for AVX2 with FMA (x86-64-v3) and for the
//! baseline, and the widest the running CPU has is called. `DGNAM_CPU=v3` or `=base` caps
//! the choice (to measure or test the narrower paths on a wide machine).

use std::sync::OnceLock;

/// The instruction-set levels the CPU loops are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Base,
    /// AVX2, FMA, BMI1/2 (x86-64-v3).
    V3,
    /// AVX-512 F/BW/CD/DQ/VL on top of v3 (x86-64-v4).
    V4,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Base => "baseline x86-64",
            Level::V3 => "AVX2+FMA",
            Level::V4 => "AVX-512",
        }
    }
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let v3 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("bmi2");
        let v4 = v3
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512cd")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl");
        if v4 {
            Level::V4
        } else if v3 {
            Level::V3
        } else {
            Level::Base
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    Level::Base
}

/// The level the CPU loops run at: the widest this CPU has, capped by `DGNAM_CPU`.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("DGNAM_CPU").as_deref() {
            Ok("base") => Level::Base,
            Ok("v3") => Level::V3,
            _ => Level::V4,
        };
        detect().min(cap)
    })
}

/// Defines a function whose body is compiled for each [`Level`] and picks the build for the
/// running CPU on every call (one cached load and a branch). Helpers the body calls should be
/// `#[inline(always)]` so they are compiled inside each build. One optional type parameter.
#[macro_export]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<$t:ident : $bound:path>)? ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name $(<$t: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body $(<$t: $bound>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn v4 $(<$t: $bound>)? ($($arg: $ty),*) $(-> $ret)? { body $(::<$t>)? ($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn v3 $(<$t: $bound>)? ($($arg: $ty),*) $(-> $ret)? { body $(::<$t>)? ($($arg),*) }
            match $crate::device::simd::level() {
                // SAFETY: `level()` returns V4 or V3 only when the CPU has those features.
                #[cfg(target_arch = "x86_64")]
                $crate::device::simd::Level::V4 => unsafe { v4 $(::<$t>)? ($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::device::simd::Level::V3 => unsafe { v3 $(::<$t>)? ($($arg),*) },
                _ => body $(::<$t>)? ($($arg),*),
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::Real;

    #[inline(always)]
    fn plain_sum_of_squares<T: Real>(v: &[T]) -> T {
        let mut acc = [T::ZERO; 16];
        for c in v.chunks(16) {
            for (a, x) in acc.iter_mut().zip(c) {
                *a += *x * *x;
            }
        }
        acc.iter().fold(T::ZERO, |s, &a| s + a)
    }

    crate::multiversion! {
        fn sum_of_squares<T: Real>(v: &[T]) -> T {
            plain_sum_of_squares(v)
        }
    }

    /// Rust never contracts a * b + c into an FMA by itself, so the wide builds round exactly
    /// as the baseline does: results do not depend on the CPU's level.
    #[test]
    fn the_wide_build_gives_the_baseline_bits() {
        let v: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.37).sin()).collect();
        assert_eq!(sum_of_squares(&v).to_bits(), plain_sum_of_squares(&v).to_bits());
        let w: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        assert_eq!(sum_of_squares(&w).to_bits(), plain_sum_of_squares(&w).to_bits());
        eprintln!("CPU loops run at {}", level().name());
    }
}
