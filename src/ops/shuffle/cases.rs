//! Channel shuffle cases: 6 channels in 2 and in 3 groups, after a layer that makes the
//! channels differ, and a shuffle into a convolution.

use crate::ops::cases::{Case, SHAPE};

const fn shuffle(layers: &'static str) -> Case {
    Case { family: "shuffle", input: SHAPE, layers }
}

pub const CASES: &[Case] = &[
    shuffle("layer { name: 's' type: 'ShuffleChannel' bottom: 'data' top: 's' shuffle_channel_param { group: 2 } }"),
    shuffle(
        "layer { name: 'a' type: 'Scale' bottom: 'data' top: 'a' scale_param { bias_term: true } }
             layer { name: 's' type: 'ShuffleChannel' bottom: 'a' top: 's' shuffle_channel_param { group: 3 } }
             layer { name: 'c' type: 'Convolution' bottom: 's' top: 'c' convolution_param { num_output: 4 kernel_size: 3 group: 2 } }",
    ),
];
