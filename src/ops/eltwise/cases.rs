//! Eltwise cases: SUM with coefficients, PROD and MAX over three inputs.

use crate::ops::cases::{Case, SHAPE};

const fn eltwise(layers: &'static str) -> Case {
    Case { family: "eltwise", input: SHAPE, layers }
}

pub const CASES: &[Case] = &[
    eltwise("layer { name: 'a' type: 'ReLU' bottom: 'data' top: 'a' relu_param { negative_slope: 0.5 } }
             layer { name: 'b' type: 'Scale' bottom: 'data' top: 'b' scale_param { bias_term: true } }
             layer { name: 'e' type: 'Eltwise' bottom: 'a' bottom: 'b' bottom: 'data' top: 'e' eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1 } }"),
    eltwise("layer { name: 'a' type: 'ReLU' bottom: 'data' top: 'a' relu_param { negative_slope: 0.5 } }
             layer { name: 'b' type: 'Scale' bottom: 'data' top: 'b' scale_param { bias_term: true } }
             layer { name: 'e' type: 'Eltwise' bottom: 'a' bottom: 'b' bottom: 'data' top: 'e' eltwise_param { operation: PROD } }"),
    eltwise("layer { name: 'a' type: 'ReLU' bottom: 'data' top: 'a' relu_param { negative_slope: 0.5 } }
             layer { name: 'b' type: 'Scale' bottom: 'data' top: 'b' scale_param { bias_term: true } }
             layer { name: 'e' type: 'Eltwise' bottom: 'a' bottom: 'b' bottom: 'data' top: 'e' eltwise_param { operation: MAX } }"),
];
