//! The matrix product. On the CPU it is `cpu::gemm` (the `gemm` crate); on the GPU the SGEMM kernels of `kernels/gemm.cu`, launched from `cuda.rs`.
//! Convolution, deconvolution and inner product build on it; it is no layer of its own.

pub mod cpu;
pub mod cuda;
