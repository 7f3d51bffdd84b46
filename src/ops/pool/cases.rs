//! Pooling cases: ceil-rounded windows, asymmetric kernels and strides, padding (with the
//! last window dropped, and left out of the average), stride larger than the kernel, floor
//! rounding, global pooling.

use crate::ops::cases::{Case, Fixture, SHAPE};

const fn pool(layers: &'static str) -> Case {
    Case { family: "pool", input: SHAPE, layers }
}

pub const CASES: &[Case] = &[
    pool("layer { name: 'l' type: 'Pooling' bottom: 'data' top: 'l' pooling_param { pool: MAX kernel_size: 3 stride: 2 } }"),
    pool("layer { name: 'l' type: 'Pooling' bottom: 'data' top: 'l' pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad: 1 } }"),
    pool("layer { name: 'l' type: 'Pooling' bottom: 'data' top: 'l' pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }"),
    pool("layer { name: 'l' type: 'Pooling' bottom: 'data' top: 'l' pooling_param { pool: AVE kernel_size: 2 stride: 3 } }"),
    // The padding left out of the divisor (ONNX's count_include_pad 0), ceil and floor.
    pool("layer { name: 'l' type: 'Pooling' bottom: 'data' top: 'l' pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 exclude_pad: true } }"),
    pool("layer { name: 'l' type: 'Pooling' bottom: 'data' top: 'l' pooling_param { pool: AVE kernel_size: 3 stride: 1 pad: 1 round_mode: FLOOR exclude_pad: true } }"),
    // round_mode FLOOR (PyTorch's and ONNX's rounding): 11x10 gives 5x5 and 6x5, not 6x5 and 6x6.
    pool("layer { name: 'l' type: 'Pooling' bottom: 'data' top: 'l' pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR } }"),
    pool("layer { name: 'l' type: 'Pooling' bottom: 'data' top: 'l' pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR } }"),
    pool("layer { name: 'l' type: 'Pooling' bottom: 'data' top: 'l' pooling_param { pool: MAX global_pooling: true } }"),
    pool("layer { name: 'l' type: 'Pooling' bottom: 'data' top: 'l' pooling_param { pool: AVE global_pooling: true } }"),
];

/// Caffe's own outputs for this op (see `crate::ops::cases::Fixture`).
pub const FIXTURES: &[Fixture] = &[
    Fixture { family: "pool", name: "layer_pooling_max", input: "blob.npy" },
    Fixture { family: "pool", name: "layer_pooling_ave", input: "blob.npy" },
];
