//! Caffe import: the prototxt text format, the protobuf wire format of `.caffemodel` and
//! `.binaryproto` files, and the typed net definition both are turned into.

pub mod caffemodel;
pub mod netdef;
pub mod prototxt;
pub mod wire;
pub mod write;

pub use crate::ir::{
    Activation, ConvParam, EltwiseOp, EltwiseParam, InnerProductParam, InputDef, LayerDef, LayerKind, LrnParam, LrnRegion, NetDef,
    PadParam, PoolMethod, PoolParam, ReshapeParam, RoundMode, ScaleParam,
};

/// One stored parameter array of a trained model.
#[derive(Clone, Debug, PartialEq)]
pub struct Blob {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The parameter blobs of one layer of a `.caffemodel`, in stored order.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerBlobs {
    pub name: String,
    /// The layer's type as stored: a new-format type string, or the V1 enum's name
    /// rendered in new-format spelling where known (e.g. "Convolution").
    pub type_name: String,
    pub blobs: Vec<Blob>,
}
