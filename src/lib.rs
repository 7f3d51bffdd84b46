//! dgnam: the preferred inputs of neurons in trained Caffe classifiers, by activation
//! maximization through a deep generator network (DGN-AM, Nguyen et al., NIPS 2016).

pub mod app;
pub mod bench;
pub mod caffe;
pub mod convert;
pub mod dataset;
pub mod device;
pub mod fsutil;
pub mod gradcheck;
pub mod graph;
pub mod io;
pub mod ir;
pub mod npy;
pub mod onnx;
pub mod ops;
pub mod preprocess;
pub mod real;
pub mod rng;
pub mod sha256;
pub mod synth;
pub mod tensor;
pub mod train;
pub mod weights;

/// The crate's version (the `dgnam` Python module reports it as `__version__`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
