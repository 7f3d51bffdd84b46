//! Devices: where buffers live. A device allocates, fills, copies and moves buffers; it knows
//! no op. Each op in `crate::ops` implements its kernels for every device, and the graph
//! dispatches each node to its op. `cpu` is the reference.

pub mod cpu;
pub mod cuda;
pub mod simd;

use crate::real::Real;
use anyhow::Result;

pub use cpu::Cpu;
pub use cuda::Cuda;

/// One compute device. `Buf` holds activations and gradients, `Param` holds weights (the CPU
/// uses mapped weights in place), `Index` holds u32 indices (max-pool and Eltwise MAX
/// winners).
pub trait Backend {
    type Scalar: Real;
    type Buf;
    type Param;
    type Index;

    fn name(&self) -> String;
    /// A zeroed buffer of `len` scalars.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    /// A zeroed buffer of `len` indices.
    fn alloc_index(&self, len: usize) -> Result<Self::Index>;
    fn len(&self, buf: &Self::Buf) -> usize;
    fn index_len(&self, index: &Self::Index) -> usize;
    fn zero(&self, buf: &mut Self::Buf) -> Result<()>;
    /// Weights given as f32 on the host (random weights, converted models).
    fn param_from_host(&self, data: &[f32]) -> Result<Self::Param>;
    fn upload(&self, buf: &mut Self::Buf, data: &[Self::Scalar]) -> Result<()>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<Self::Scalar>>;
    fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf) -> Result<()>;
}

/// A device that takes weights straight from a memory-mapped file living for `'w`: the CPU
/// uses them in place, a GPU uploads them once.
pub trait FromMapped<'w>: Backend {
    fn param_from_mapped(&self, data: &'w [f32]) -> Result<Self::Param>;
}
