//! Channel shuffle (ShuffleNet): the channels of each sample, seen as `group` groups of
//! `channels / group`, interleaved: output channel `j * group + i` is input channel
//! `i * (channels / group) + j`. ShuffleNet's caffe fork names the layer `ShuffleChannel`
//! (`shuffle_channel_param { group }`); ONNX exports write it as Reshape, Transpose and
//! Reshape, which the importer recognizes. The inverse permutation is the shuffle with
//! `channels / group` groups, so the backward pass is the same kernel.

pub mod cases;
pub mod cpu;
pub mod cuda;

use crate::device::Backend;
use anyhow::Result;

pub use cpu::shuffle_channels;

pub trait ShuffleKernels: Backend {
    /// y = x with its channels shuffled in `group` groups (`outer` samples of `channels`
    /// planes of `inner` values).
    fn shuffle_forward(&self, outer: usize, channels: usize, group: usize, inner: usize, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// dx += dy with the inverse shuffle.
    fn shuffle_backward(&self, outer: usize, channels: usize, group: usize, inner: usize, dy: &Self::Buf, dx: &mut Self::Buf)
        -> Result<()>;
}

/// The input channel that output channel `c` of a shuffle in `group` groups reads.
pub fn source_channel(c: usize, channels: usize, group: usize) -> usize {
    (c % group) * (channels / group) + c / group
}
