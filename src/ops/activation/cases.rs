//! ReLU cases: plain and leaky.

use crate::ops::cases::{Case, SHAPE};

pub const CASES: &[Case] = &[
    Case { family: "activation", input: SHAPE, layers: "layer { name: 'l' type: 'ReLU' bottom: 'data' top: 'l' }" },
    Case {
        family: "activation",
        input: SHAPE,
        layers: "layer { name: 'l' type: 'ReLU' bottom: 'data' top: 'l' relu_param { negative_slope: 0.3 } }",
    },
];
