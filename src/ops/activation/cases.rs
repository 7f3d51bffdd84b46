//! Activation cases: plain and leaky ReLU, and each [`crate::ir::Activation`]. The inputs
//! are uniform in (-1, 1); where a function bends farther out, an Eltwise SUM of the input
//! with itself (coefficients 2 and 2) spreads them over (-4, 4) first, so both sides of every
//! kink are checked.

use crate::ops::cases::{Case, SHAPE};

const fn activation(layers: &'static str) -> Case {
    Case { family: "activation", input: SHAPE, layers }
}

/// `data` times 4, as the blob `wide`.
macro_rules! widened {
    ($layer:literal) => {
        concat!(
            "layer { name: 'wide' type: 'Eltwise' bottom: 'data' bottom: 'data' top: 'wide' eltwise_param { operation: SUM coeff: 2 coeff: 2 } }\n",
            $layer
        )
    };
}

pub const CASES: &[Case] = &[
    activation("layer { name: 'l' type: 'ReLU' bottom: 'data' top: 'l' }"),
    activation("layer { name: 'l' type: 'ReLU' bottom: 'data' top: 'l' relu_param { negative_slope: 0.3 } }"),
    activation(widened!("layer { name: 'l' type: 'Sigmoid' bottom: 'wide' top: 'l' }")),
    // alpha x + beta leaves (0, 1) at x = -0.2 and x = 0.2.
    activation("layer { name: 'l' type: 'HardSigmoid' bottom: 'data' top: 'l' hard_sigmoid_param { alpha: 2.5 beta: 0.5 } }"),
    activation(widened!("layer { name: 'l' type: 'HardSwish' bottom: 'wide' top: 'l' }")),
    activation(widened!("layer { name: 'l' type: 'Erf' bottom: 'wide' top: 'l' }")),
    activation("layer { name: 'l' type: 'Clip' bottom: 'data' top: 'l' clip_param { min: -0.3 max: 0.5 } }"),
    // ReLU6's shape with the top at 2.5 (6 lies beyond the inputs), in place
    activation(widened!("layer { name: 'l' type: 'Clip' bottom: 'wide' top: 'wide' clip_param { min: 0 max: 2.5 } }")),
];
