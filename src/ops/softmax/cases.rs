//! Softmax cases: over the channels of a map, and the 1000-way classifier output.

use crate::ops::cases::{Case, Fixture, SHAPE};

pub const CASES: &[Case] = &[
    Case { family: "softmax", input: SHAPE, layers: "layer { name: 'l' type: 'Softmax' bottom: 'data' top: 'l' }" },
    Case { family: "softmax", input: "dim: 3 dim: 1000", layers: "layer { name: 'l' type: 'Softmax' bottom: 'data' top: 'l' }" },
];

/// Caffe's own outputs for this op (see `crate::ops::cases::Fixture`).
pub const FIXTURES: &[Fixture] = &[Fixture { family: "softmax", name: "layer_softmax", input: "blob.npy" }];
