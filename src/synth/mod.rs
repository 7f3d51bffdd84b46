pub mod demo;
pub mod dgn;
pub mod field;
pub mod options;
pub mod pixel;
pub mod render;
pub mod run;
