//! Concat cases: along channels (one input twice) and along height.

use crate::ops::cases::{Case, SHAPE};

pub const CASES: &[Case] = &[
    Case {
        family: "concat",
        input: SHAPE,
        layers: "layer { name: 'a' type: 'ReLU' bottom: 'data' top: 'a' relu_param { negative_slope: 0.5 } }
                 layer { name: 'b' type: 'Scale' bottom: 'data' top: 'b' scale_param { bias_term: true } }
                 layer { name: 'c' type: 'Concat' bottom: 'a' bottom: 'b' bottom: 'a' top: 'c' }",
    },
    Case {
        family: "concat",
        input: SHAPE,
        layers: "layer { name: 'a' type: 'ReLU' bottom: 'data' top: 'a' relu_param { negative_slope: 0.5 } }
                 layer { name: 'c' type: 'Concat' bottom: 'a' bottom: 'data' top: 'c' concat_param { axis: 2 } }",
    },
];
