//! ONNX import: a `.onnx` model read with the project's protobuf wire reader and translated
//! into the same net definition and parameter blobs a Caffe model becomes, so every command
//! runs on it unchanged. Layer names are the ONNX tensor names each layer produces.

pub mod proto;
mod shape_values;
mod translate;

pub use translate::{import, Imported};

/// The opsets this importer knows the semantics of.
pub const OPSETS: std::ops::RangeInclusive<i64> = 7..=21;
