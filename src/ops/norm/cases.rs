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
    // Squeeze-and-excitation: the input times per-(image, channel) gates computed from it.
    Case {
        family: "norm",
        input: SHAPE,
        layers: "layer { name: 'g' type: 'Pooling' bottom: 'data' top: 'g' pooling_param { pool: AVE global_pooling: true } }
                 layer { name: 'f' type: 'Flatten' bottom: 'g' top: 'f' }
                 layer { name: 'gate' type: 'Sigmoid' bottom: 'f' top: 'gate' }
                 layer { name: 's' type: 'Scale' bottom: 'data' bottom: 'gate' top: 's' scale_param { axis: 0 } }",
    },
    // Factors of the input's whole shape: the element-wise product of two computed blobs.
    Case {
        family: "norm",
        input: SHAPE,
        layers: "layer { name: 'a' type: 'Scale' bottom: 'data' top: 'a' scale_param { bias_term: true } }
                 layer { name: 's' type: 'Scale' bottom: 'data' bottom: 'a' top: 's' scale_param { axis: 0 } }",
    },
];
