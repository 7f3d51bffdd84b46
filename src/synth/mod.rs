pub mod dgn;
pub mod render;
pub mod run;
