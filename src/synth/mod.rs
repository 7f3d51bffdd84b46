pub mod demo;
pub mod dgn;
pub mod kernels;
pub mod pixel;
pub mod render;
pub mod run;
