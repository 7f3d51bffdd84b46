//! Channel shuffle: the CPU reference.

use super::{source_channel, ShuffleKernels};
use crate::device::Cpu;
use crate::real::Real;
use anyhow::Result;

/// dst = (or, with `add`, +=) src with its channels shuffled in `group` groups: plane c of
/// each sample of dst comes from plane `source_channel(c)` of src.
pub fn shuffle_channels<T: Real>(outer: usize, channels: usize, group: usize, inner: usize, src: &[T], dst: &mut [T], add: bool) {
    assert!(group > 0 && channels.is_multiple_of(group), "shuffle: {channels} channels in {group} groups");
    assert_eq!(src.len(), outer * channels * inner, "shuffle: source length");
    assert_eq!(dst.len(), src.len(), "shuffle: destination length");
    for n in 0..outer {
        for c in 0..channels {
            let from = &src[(n * channels + source_channel(c, channels, group)) * inner..][..inner];
            let to = &mut dst[(n * channels + c) * inner..][..inner];
            if add {
                to.iter_mut().zip(from).for_each(|(d, &s)| *d += s);
            } else {
                to.copy_from_slice(from);
            }
        }
    }
}

impl<T: Real> ShuffleKernels for Cpu<'_, T> {
    fn shuffle_forward(&self, outer: usize, channels: usize, group: usize, inner: usize, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        shuffle_channels(outer, channels, group, inner, x, y, false);
        Ok(())
    }

    fn shuffle_backward(&self, outer: usize, channels: usize, group: usize, inner: usize, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        shuffle_channels(outer, channels, channels / group, inner, dy, dx, true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffles_by_hand_and_back() {
        // 6 channels of one value each in 2 groups: [0 1 2 | 3 4 5] -> [0 3 1 4 2 5].
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut y = vec![0.0f32; 12];
        shuffle_channels(2, 6, 2, 1, &x, &mut y, false);
        assert_eq!(y, [0., 3., 1., 4., 2., 5., 6., 9., 7., 10., 8., 11.]);
        // In 3 groups of 2, with planes of 2: [a b | c d | e f] -> [a c e b d f].
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        shuffle_channels(1, 6, 3, 2, &x, &mut y, false);
        assert_eq!(y, [0., 1., 4., 5., 8., 9., 2., 3., 6., 7., 10., 11.]);
        // The backward pass (the shuffle in channels / group groups) undoes it, adding.
        let mut back = vec![1.0f32; 12];
        shuffle_channels(1, 6, 2, 2, &y, &mut back, true);
        assert_eq!(back, x.iter().map(|v| v + 1.0).collect::<Vec<_>>());
    }
}
