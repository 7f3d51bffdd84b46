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

/// Forms of a parameter an op may derive and keep (`CpuParam::derived`), numbered by the op.
pub const DERIVED_FORMS: usize = 3;

/// A parameter on the CPU: the values as stored (borrowed from the mapped file, or owned),
/// and forms of them that an op derives on first use and keeps (`derived`: the
/// convolution's weights transposed for its transposed passes, or transformed for its
/// Winograd passes). Any mutable access drops the derived forms, so they can never be stale.
pub struct CpuParam<'w, T: Real> {
    data: Cow<'w, [T]>,
    derived: [OnceLock<Vec<T>>; DERIVED_FORMS],
}

impl<'w, T: Real> CpuParam<'w, T> {
    pub fn new(data: Cow<'w, [T]>) -> Self {
        CpuParam { data, derived: Default::default() }
    }

    /// Derived form number `form` (below `DERIVED_FORMS`), made by `make` from the values on
    /// the first call after the last change. The op that owns the parameter decides what
    /// each form is.
    pub fn derived(&self, form: usize, make: impl FnOnce(&[T]) -> Vec<T>) -> &[T] {
        self.derived[form].get_or_init(|| make(&self.data))
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
        self.derived = Default::default();
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
    /// This thread's scratch buffers, the ones not in use now.
    static SCRATCH: std::cell::RefCell<Vec<Vec<f64>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch slice of `len` values owned by this thread and kept between calls
/// (grown, never shrunk), so a large column buffer costs no fresh, zeroed pages on every
/// call. Its contents on entry are unspecified: `f` must write before it reads. A nested
/// call on the same thread (a pool thread that takes another task while it waits inside
/// `f`) gets a buffer of its own, also kept.
pub fn with_scratch<T: Real, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let words = (len * std::mem::size_of::<T>()).div_ceil(std::mem::size_of::<f64>());
    let mut buf = SCRATCH.with(|cell| cell.borrow_mut().pop()).unwrap_or_default();
    if buf.len() < words {
        buf.resize(words, 0.0);
    }
    let r = f(&mut bytemuck::cast_slice_mut::<f64, T>(&mut buf[..words])[..len]);
    SCRATCH.with(|cell| cell.borrow_mut().push(buf));
    r
}

/// A slice shared by threads that each write elements of their own: a pointer and a
/// length, made from a mutable borrow that lasts as long as the sharing.
#[derive(Clone, Copy)]
pub struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: only a pointer and a length; whoever writes through it promises that no two
// threads touch the same element (the unsafe call that uses `at`).
unsafe impl<T: Send> Send for SharedMut<'_, T> {}
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}

impl<'a, T> SharedMut<'a, T> {
    pub fn new(slice: &'a mut [T]) -> Self {
        SharedMut { ptr: slice.as_mut_ptr(), len: slice.len(), _borrow: PhantomData }
    }

    /// The pointer `offset` values in (a method, so closures capture the whole struct).
    pub fn at(self, offset: usize) -> *mut T {
        assert!(offset <= self.len, "offset {offset} past the shared slice ({})", self.len);
        // SAFETY: offset is within the slice, or one past its end.
        unsafe { self.ptr.add(offset) }
    }

    /// Values from `offset` to the end.
    pub fn len_from(self, offset: usize) -> usize {
        self.len - offset.min(self.len)
    }
}

/// Values per task where a pass over memory (a copy, a sum, a fill) is split across the pool.
pub const PASS_CHUNK: usize = 1 << 15;

/// Runs `f(dst, src)` on every pair of equal-length slices, cut into pieces of at most
/// `PASS_CHUNK` values, across the pool. A piece is the same loop as the whole pair, so
/// the results are the same bits as one loop over each pair.
pub fn par_pairs<T: Send + Sync>(pairs: Vec<(&mut [T], &[T])>, f: impl Fn(&mut [T], &[T]) + Sync + Send) {
    use rayon::prelude::*;
    let total: usize = pairs.iter().map(|(d, _)| d.len()).sum();
    if total <= PASS_CHUNK {
        return pairs.into_iter().for_each(|(d, s)| f(d, s));
    }
    pairs.into_par_iter().flat_map_iter(|(d, s)| d.chunks_mut(PASS_CHUNK).zip(s.chunks(PASS_CHUNK))).for_each(|(d, s)| f(d, s));
}

/// Stack of each thread of the CPU pool: the main thread's usual 8 MiB, since whole commands
/// run on the pool (`on_pool`).
const POOL_STACK: usize = 8 << 20;

/// Runs `f` on a thread of the CPU pool (rayon's global one) and returns its result. The ops
/// split their work with rayon: called from a thread outside the pool, every split is sent
/// to the pool and waited for on a lock (a wake-up and a sleep per op, thousands per step in
/// a net of many small layers); called from inside, it forks by work-stealing. On a 2-core
/// Zen 4, regnet_y_400mf forward + backward at batch 1 went from 74.4 to 37.1 ms a step.
/// Commands and the Python module run their work through this.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    static POOL: std::sync::Once = std::sync::Once::new();
    POOL.call_once(|| {
        // Fails only where the pool was already started (with rayon's defaults): use that one.
        let _ = rayon::ThreadPoolBuilder::new().stack_size(POOL_STACK).build_global();
    });
    rayon::scope(|_| f())
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
        use rayon::prelude::*;
        buf.par_chunks_mut(PASS_CHUNK).for_each(|c| c.fill(T::ZERO));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_pool_runs_on_a_pool_thread_and_nests_in_place() {
        assert!(rayon::current_thread_index().is_none(), "the test harness's thread is outside the pool");
        let (outer, inner, sum) = on_pool(|| {
            let outer = rayon::current_thread_index();
            // A nested call runs where it is, and the ops' splits still work inside.
            let inner = on_pool(rayon::current_thread_index);
            let sum: u64 = {
                use rayon::prelude::*;
                (1..=1000u64).into_par_iter().sum()
            };
            (outer, inner, sum)
        });
        assert!(outer.is_some(), "on_pool ran its closure outside the pool");
        assert_eq!(inner, outer, "a nested on_pool moved to another thread");
        assert_eq!(sum, 500_500);
    }
}
