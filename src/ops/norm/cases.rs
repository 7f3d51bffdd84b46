//! BatchNorm and Scale cases.

use crate::ops::cases::{Case, SHAPE};

pub const CASES: &[Case] = &[
    Case {
        family: "norm",
        input: SHAPE,
        layers: "layer { name: 'n' type: 'BatchNorm' bottom: 'data' top: 'n' batch_norm_param { eps: 0.001 } }",
    },
    Case {
        family: "norm",
        input: SHAPE,
        layers: "layer { name: 's' type: 'Scale' bottom: 'data' top: 's' scale_param { bias_term: true } }",
    },
    Case {
        family: "norm",
        input: SHAPE,
        layers: "layer { name: 's' type: 'Scale' bottom: 'data' top: 's' scale_param { bias_term: false axis: 1 num_axes: 2 } }",
    },
];
