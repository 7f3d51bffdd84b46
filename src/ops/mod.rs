//! CPU reference kernels, one file per layer family. Every function is generic over
//! [`Real`](crate::real::Real) so the same code runs in f32 (production) and f64 (gradient
//! checks). Conventions: NCHW row-major slices; forward functions overwrite their output;
//! backward functions ADD into the gradients they produce (a blob read by several layers
//! sums its gradients).

pub mod activation;
pub mod conv;
pub mod inner_product;
pub mod lrn;
pub mod norm;
pub mod pool;
pub mod shape;
pub mod softmax;

#[cfg(test)]
pub mod gradcheck;
