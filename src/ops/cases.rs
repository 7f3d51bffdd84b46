//! The test cases of the ops, one table per op family (`<op>/cases.rs`), each case a small
//! net around the op: its input shape and its layers, in prototxt. The same tables drive every
//! verifier: the f64 finite-difference check of the data and weight gradients
//! (`tests/op_cases.rs`), the GPU-against-CPU comparison (`tests/cuda.rs`) and the host
//! emulation of the CUDA kernels (the geometries of the compiled cases). Beside the cases,
//! each table names the real Caffe nets of `tests/fixtures/caffe/opencv_layers` that
//! exercise its op (`FIXTURES`): those run against Caffe's own outputs on the CPU
//! (`tests/caffe_models.rs`) and on the GPU, and their geometries through the f64 check.

/// One small net exercising an op: odd sizes, strides, pads, groups, asymmetric kernels.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// The op family (the folder under `src/ops/`).
    pub family: &'static str,
    /// The input blob's shape, prototxt `input_shape` body (batch first).
    pub input: &'static str,
    /// The layers, reading the input `data`.
    pub layers: &'static str,
}

impl Case {
    /// The whole net definition.
    pub fn prototxt(&self) -> String {
        format!("name: \"{}\"\ninput: \"data\"\ninput_shape {{ {} }}\n{}", self.family, self.input, self.layers)
    }
}

/// A single-layer net that real Caffe ran: `<name>.prototxt` (and `<name>.caffemodel` when
/// it has weights) in `tests/fixtures/caffe/opencv_layers`, the input `input` and Caffe's
/// output of the blob `output` in `<name>.npy`.
#[derive(Clone, Copy, Debug)]
pub struct Fixture {
    pub family: &'static str,
    pub name: &'static str,
    pub input: &'static str,
}

/// The shape most cases use: 2 images of 6 channels, 11 x 10.
pub const SHAPE: &str = "dim: 2 dim: 6 dim: 11 dim: 10";

/// Layers whose data passes unchanged (one `Op::Copy` each).
pub const COPY: &[Case] = &[
    Case { family: "copy", input: SHAPE, layers: "layer { name: 'l' type: 'Dropout' bottom: 'data' top: 'l' }" },
    Case { family: "copy", input: SHAPE, layers: "layer { name: 'l' type: 'Flatten' bottom: 'data' top: 'l' }" },
    Case {
        family: "copy",
        input: SHAPE,
        layers: "layer { name: 'a' type: 'ReLU' bottom: 'data' top: 'a' relu_param { negative_slope: 0.5 } }
                 layer { name: 's' type: 'Split' bottom: 'a' top: 's1' top: 's2' }
                 layer { name: 'e' type: 'Eltwise' bottom: 's1' bottom: 's2' top: 'e' eltwise_param { operation: PROD } }",
    },
    Case {
        family: "copy",
        input: SHAPE,
        layers: "layer { name: 'r' type: 'Reshape' bottom: 'data' top: 'r' reshape_param { shape { dim: 0 dim: -1 dim: 5 } } }",
    },
];

/// Every case of every op family.
pub fn all() -> Vec<Case> {
    [
        super::conv::cases::CASES,
        super::inner_product::cases::CASES,
        super::activation::cases::CASES,
        super::pool::cases::CASES,
        super::lrn::cases::CASES,
        super::softmax::cases::CASES,
        super::concat::cases::CASES,
        super::eltwise::cases::CASES,
        super::norm::cases::CASES,
        super::pad::cases::CASES,
        super::shuffle::cases::CASES,
        COPY,
    ]
    .concat()
}

/// Every Caffe fixture of every op family.
pub fn fixtures() -> Vec<Fixture> {
    [
        super::conv::cases::FIXTURES,
        super::inner_product::cases::FIXTURES,
        super::pool::cases::FIXTURES,
        super::lrn::cases::FIXTURES,
        super::softmax::cases::FIXTURES,
    ]
    .concat()
}
