//! Pad cases: each side by a different amount, crops (negative sides), zeros and another
//! value, and before the layers the ONNX importer puts it in front of.

use crate::ops::cases::{Case, SHAPE};

const fn pad(layers: &'static str) -> Case {
    Case { family: "pad", input: SHAPE, layers }
}

pub const CASES: &[Case] = &[
    pad("layer { name: 'p' type: 'Pad' bottom: 'data' top: 'p' pad_param { pad_t: 0 pad_l: 2 pad_b: 1 pad_r: 0 } }"),
    pad("layer { name: 'p' type: 'Pad' bottom: 'data' top: 'p' pad_param { pad_t: 3 pad_l: 1 pad_b: 0 pad_r: 2 value: -0.5 } }
         layer { name: 'c' type: 'Convolution' bottom: 'p' top: 'c' convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }"),
    pad("layer { name: 'p' type: 'Pad' bottom: 'data' top: 'p' pad_param { pad_t: -2 pad_l: 1 pad_b: 1 pad_r: -3 value: 0.25 } }"),
    pad("layer { name: 'p' type: 'Pad' bottom: 'data' top: 'p' pad_param { pad_t: 1 pad_l: 0 pad_b: 0 pad_r: 1 value: -inf } }
         layer { name: 'm' type: 'Pooling' bottom: 'p' top: 'm' pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR } }"),
];
