//! The CPU device: host vectors. Generic over the scalar so gradient checks run the very same
//! op code in f64.

use super::{Backend, FromMapped};
use crate::real::Real;
use anyhow::{bail, Result};
use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::OnceLock;

/// `'w` is the lifetime of a mapped weights file whose f32 tensors are used in place.
pub struct Cpu<'w, T: Real = f32>(PhantomData<&'w T>);

/// A parameter on the CPU: the values as stored (borrowed from the mapped file, or owned),
/// and one form of them that an op derives on first use and keeps (`derived`: the
/// convolution's weights transposed for its transposed passes). Any mutable access drops
/// the derived form, so it can never be stale.
pub struct CpuParam<'w, T: Real> {
    data: Cow<'w, [T]>,
    derived: OnceLock<Vec<T>>,
}

impl<'w, T: Real> CpuParam<'w, T> {
    pub fn new(data: Cow<'w, [T]>) -> Self {
        CpuParam { data, derived: OnceLock::new() }
    }

    /// The derived form, made by `make` from the values on the first call after the last
    /// change. Each parameter has one: the op that owns it decides what it is.
    pub fn derived(&self, make: impl FnOnce(&[T]) -> Vec<T>) -> &[T] {
        self.derived.get_or_init(|| make(&self.data))
    }
}

impl<T: Real> std::ops::Deref for CpuParam<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.data
    }
}

impl<T: Real> std::ops::DerefMut for CpuParam<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.derived = OnceLock::new();
        self.data.to_mut()
    }
}

impl<T: Real> Default for Cpu<'_, T> {
    fn default() -> Self {
        Cpu(PhantomData)
    }
}

impl<T: Real> Cpu<'_, T> {
    pub fn new() -> Self {
        Self::default()
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch slice of `len` values owned by this thread and kept between calls
/// (grown, never shrunk), so a large column buffer costs no fresh, zeroed pages on every
/// call. Its contents on entry are unspecified: `f` must write before it reads. A nested
/// call on the same thread gets a fresh vector.
pub fn with_scratch<T: Real, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let words = (len * std::mem::size_of::<T>()).div_ceil(std::mem::size_of::<f64>());
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < words {
                buf.resize(words, 0.0);
            }
            f(&mut bytemuck::cast_slice_mut::<f64, T>(&mut buf[..words])[..len])
        }
        Err(_) => f(&mut vec![T::ZERO; len]),
    })
}

/// This machine's CPU as benchmarks name it: its model (from /proc/cpuinfo where there is
/// one), the threads of the pool and the vector instructions the CPU loops run with.
pub fn host_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let gemm = if cfg!(feature = "avx512") { "" } else { ", GEMM built without AVX-512" };
    format!("{model}, {} threads, {} loops{gemm}", rayon::current_num_threads(), super::simd::level().name())
}

impl<'w, T: Real> FromMapped<'w> for Cpu<'w, T> {
    /// Mapped f32 weights, borrowed (or widened for f64).
    fn param_from_mapped(&self, data: &'w [f32]) -> Result<CpuParam<'w, T>> {
        Ok(CpuParam::new(T::from_f32_slice(data)))
    }
}

impl<'w, T: Real> Backend for Cpu<'w, T> {
    type Scalar = T;
    type Buf = Vec<T>;
    type Param = CpuParam<'w, T>;
    type Index = Vec<u32>;

    fn name(&self) -> String {
        "cpu".into()
    }

    fn alloc(&self, len: usize) -> Result<Vec<T>> {
        Ok(vec![T::ZERO; len])
    }

    fn alloc_index(&self, len: usize) -> Result<Vec<u32>> {
        Ok(vec![0; len])
    }

    fn len(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }

    fn index_len(&self, index: &Vec<u32>) -> usize {
        index.len()
    }

    fn zero(&self, buf: &mut Vec<T>) -> Result<()> {
        buf.iter_mut().for_each(|v| *v = T::ZERO);
        Ok(())
    }

    fn param_from_host(&self, data: &[f32]) -> Result<CpuParam<'w, T>> {
        Ok(CpuParam::new(Cow::Owned(data.iter().map(|&v| T::from_f32(v)).collect())))
    }

    fn upload(&self, buf: &mut Vec<T>, data: &[T]) -> Result<()> {
        if buf.len() != data.len() {
            bail!("upload of {} values into a buffer of {}", data.len(), buf.len());
        }
        buf.copy_from_slice(data);
        Ok(())
    }

    fn download(&self, buf: &Vec<T>) -> Result<Vec<T>> {
        Ok(buf.clone())
    }

    fn copy(&self, src: &Vec<T>, dst: &mut Vec<T>) -> Result<()> {
        if src.len() != dst.len() {
            bail!("copy of {} values into a buffer of {}", src.len(), dst.len());
        }
        dst.copy_from_slice(src);
        Ok(())
    }
}
