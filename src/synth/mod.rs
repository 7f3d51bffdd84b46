pub mod demo;
pub mod dgn;
pub mod field;
pub mod kernels;
pub mod options;
pub mod pixel;
pub mod render;
pub mod run;
