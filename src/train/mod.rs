//! `dgnam train-generator`: a DeePSiM-style generator (Dosovitskiy & Brox 2016) learns to
//! invert layer L of a classifier E. From the code y = E_L(x) of a real image x, G(y)
//! should be x: the loss is `w_image ||G(y) - x||^2 + w_feature ||C(G(y)) - C(x)||^2`,
//! C being E's output at the comparator layer, each term summed over a sample's values and
//! averaged over the batch, plus optionally an adversarial term against a discriminator
//! trained in alternation (`adversarial`). Adam updates G's weights; E stays fixed.
//!
//! `options` holds the flags and their checks, `adam` the optimizer, `params` the move of
//! host weights to and from a net, `checkpoint` the files a run writes and resumes from,
//! `run` the loop; the images come from `crate::dataset`.

pub mod adam;
pub mod adversarial;
pub mod checkpoint;
pub mod options;
pub mod params;
pub mod run;

pub use options::{LossWeights, TrainOptions};
pub use run::{prepare, train, Prepared, TrainReport};
