//! LRN cases, both regions.

use crate::ops::cases::{Case, Fixture, SHAPE};

pub const CASES: &[Case] = &[
    Case { family: "lrn", input: SHAPE, layers: "layer { name: 'l' type: 'LRN' bottom: 'data' top: 'l' lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 k: 2 } }" },
    Case { family: "lrn", input: SHAPE, layers: "layer { name: 'l' type: 'LRN' bottom: 'data' top: 'l' lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }" },
];

/// Caffe's own outputs for this op (see `crate::ops::cases::Fixture`).
pub const FIXTURES: &[Fixture] = &[
    Fixture { family: "lrn", name: "layer_lrn_channels", input: "blob.npy" },
    Fixture { family: "lrn", name: "layer_lrn_spatial", input: "blob.npy" },
];
