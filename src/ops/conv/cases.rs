//! Convolution and deconvolution cases: grouped, depthwise, strided, padded, dilated,
//! asymmetric, 1x1.

use crate::ops::cases::{Case, Fixture, SHAPE};

const fn conv(layers: &'static str) -> Case {
    Case { family: "conv", input: SHAPE, layers }
}

pub const CASES: &[Case] = &[
    conv("layer { name: 'l' type: 'Convolution' bottom: 'data' top: 'l' convolution_param { num_output: 8 kernel_size: 3 } }"),
    conv("layer { name: 'l' type: 'Convolution' bottom: 'data' top: 'l' convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 group: 2 } }"),
    conv("layer { name: 'l' type: 'Convolution' bottom: 'data' top: 'l' convolution_param { num_output: 4 kernel_size: 3 dilation: 2 pad: 2 group: 2 bias_term: false } }"),
    conv("layer { name: 'l' type: 'Convolution' bottom: 'data' top: 'l' convolution_param { num_output: 9 kernel_size: 1 group: 3 } }"),
    conv("layer { name: 'l' type: 'Convolution' bottom: 'data' top: 'l' convolution_param { num_output: 5 kernel_size: 5 stride: 3 pad: 2 } }"),
    // Depthwise (computed directly on the CPU): MobileNet's stride 2, and dilated.
    conv("layer { name: 'l' type: 'Convolution' bottom: 'data' top: 'l' convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 6 } }"),
    conv("layer { name: 'l' type: 'Convolution' bottom: 'data' top: 'l' convolution_param { num_output: 6 kernel_size: 3 dilation: 2 pad: 2 group: 6 bias_term: false } }"),
    conv("layer { name: 'l' type: 'Deconvolution' bottom: 'data' top: 'l' convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 } }"),
    conv("layer { name: 'l' type: 'Deconvolution' bottom: 'data' top: 'l' convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride: 2 group: 2 } }"),
    conv("layer { name: 'l' type: 'Deconvolution' bottom: 'data' top: 'l' convolution_param { num_output: 3 kernel_size: 3 pad: 1 bias_term: false } }"),
    conv("layer { name: 'l' type: 'Deconvolution' bottom: 'data' top: 'l' convolution_param { num_output: 4 kernel_size: 1 group: 2 } }"),
    conv("layer { name: 'l' type: 'Deconvolution' bottom: 'data' top: 'l' convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 6 } }"),
];

/// Caffe's own outputs for this op (see `crate::ops::cases::Fixture`).
pub const FIXTURES: &[Fixture] = &[
    Fixture { family: "conv", name: "layer_convolution", input: "blob.npy" },
    Fixture { family: "conv", name: "layer_deconvolution", input: "layer_deconvolution.input.npy" },
];
