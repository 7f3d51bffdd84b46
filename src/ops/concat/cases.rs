//! Concat cases: along channels (one input twice) and along height; Slice cases: along
//! channels at points, along width in equal parts, and with a top nothing reads.

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
    Case {
        family: "concat",
        input: SHAPE,
        layers: "layer { name: 's' type: 'Slice' bottom: 'data' top: 's1' top: 's2' top: 's3' slice_param { axis: 1 slice_point: 1 slice_point: 4 } }
                 layer { name: 'c' type: 'Concat' bottom: 's3' bottom: 's1' bottom: 's2' top: 'c' }",
    },
    Case {
        family: "concat",
        input: SHAPE,
        layers: "layer { name: 's' type: 'Slice' bottom: 'data' top: 'l' top: 'r' slice_param { axis: 3 } }
                 layer { name: 'e' type: 'Eltwise' bottom: 'l' bottom: 'r' top: 'e' eltwise_param { operation: PROD } }",
    },
    Case {
        family: "concat",
        input: SHAPE,
        layers: "layer { name: 's' type: 'Slice' bottom: 'data' top: 'a' top: 'unread' slice_param { slice_dim: 1 slice_point: 2 } }
                 layer { name: 'r' type: 'ReLU' bottom: 'a' top: 'r' relu_param { negative_slope: 0.5 } }",
    },
];
