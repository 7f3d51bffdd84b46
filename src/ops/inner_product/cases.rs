//! Inner product cases. num_output 7 over 660 inputs has one output tile and K >= 512, so the
//! GPU splits K, with a ragged last slice.

use crate::ops::cases::{Case, Fixture, SHAPE};

pub const CASES: &[Case] = &[
    Case {
        family: "inner_product",
        input: SHAPE,
        layers: "layer { name: 'l' type: 'InnerProduct' bottom: 'data' top: 'l' inner_product_param { num_output: 7 } }",
    },
    Case {
        family: "inner_product",
        input: SHAPE,
        layers: "layer { name: 'l' type: 'InnerProduct' bottom: 'data' top: 'l' inner_product_param { num_output: 130 bias_term: false } }",
    },
    Case {
        family: "inner_product",
        input: SHAPE,
        layers: "layer { name: 'l' type: 'InnerProduct' bottom: 'data' top: 'l' inner_product_param { num_output: 5 axis: 2 } }",
    },
];

/// Caffe's own outputs for this op (see `crate::ops::cases::Fixture`).
pub const FIXTURES: &[Fixture] = &[Fixture { family: "inner_product", name: "layer_inner_product", input: "blob.npy" }];
