pub mod demo;
pub mod pixel;
pub mod render;
