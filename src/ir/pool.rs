//! Caffe's pooling window arithmetic, the one copy in Rust: ceil-rounded output size (or
//! floor-rounded, Caffe's `round_mode: FLOOR`), the
//! last window dropped when it would start inside the padding only, and each window's
//! real extent and AVE divisor (Caffe's, or with `exclude_pad` the pixels inside the input).

use super::RoundMode;
use anyhow::{bail, ensure, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    /// AVE: the divisor counts only the window's pixels inside the input.
    pub exclude_pad: bool,
}

/// One output position's window along one axis: the real input range it reads and the
/// AVE divisor factor (its extent clipped to the padded input).
#[derive(Clone, Copy)]
pub struct Window {
    pub start: usize,
    pub end: usize,
    pub padded_len: usize,
}

pub fn windows(out: usize, size: usize, k: usize, s: usize, p: usize) -> Vec<Window> {
    (0..out)
        .map(|o| {
            let start = (o * s) as isize - p as isize;
            let end = (start + k as isize).min((size + p) as isize);
            // Unpadded with stride > kernel, the ceil-rounded last window can start past the
            // input (Caffe keeps it): it is empty, and its divisor is clamped to stay positive.
            let padded_len = (end - start).max(1) as usize;
            let real_start = start.clamp(0, size as isize) as usize;
            let real_end = (end.min(size as isize) as usize).max(real_start);
            Window { start: real_start, end: real_end, padded_len }
        })
        .collect()
}

impl PoolGeom {
    /// Caffe's default geometry: the output size rounded up.
    pub fn new(
        batch: usize,
        channels: usize,
        in_h: usize,
        in_w: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
    ) -> Result<PoolGeom> {
        PoolGeom::rounded(batch, channels, [in_h, in_w], kernel, stride, pad, RoundMode::Ceil)
    }

    /// The geometry with the output size rounded as `round` says. Rounded down, every window
    /// lies inside the padded input, so the window arithmetic below needs no other change.
    pub fn rounded(
        batch: usize,
        channels: usize,
        [in_h, in_w]: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
        round: RoundMode,
    ) -> Result<PoolGeom> {
        ensure!(kernel.iter().chain(&stride).all(|&v| v > 0), "pooling: kernel {kernel:?} and stride {stride:?} must be nonzero");
        ensure!(in_h > 0 && in_w > 0, "pooling: empty input {in_h}x{in_w}");
        ensure!(pad[0] < kernel[0] && pad[1] < kernel[1], "pooling: pad {pad:?} must be smaller than kernel {kernel:?}");
        let mut out = [0usize; 2];
        for (a, size) in [in_h, in_w].into_iter().enumerate() {
            let padded = pad[a].checked_mul(2).and_then(|p| p.checked_add(size));
            let Some(padded) = padded else { bail!("pooling: pad {pad:?} is too large") };
            ensure!(kernel[a] <= padded, "pooling: kernel {kernel:?} larger than the input {in_h}x{in_w} padded by {pad:?}");
            if round == RoundMode::Floor {
                out[a] = (padded - kernel[a]) / stride[a] + 1;
                continue;
            }
            out[a] = (padded - kernel[a]).div_ceil(stride[a]) + 1;
            // Caffe: the last window must start inside the image or its left padding.
            if pad[a] > 0 && (out[a] - 1).saturating_mul(stride[a]) >= size + pad[a] {
                out[a] -= 1;
            }
        }
        Ok(PoolGeom { batch, channels, in_h, in_w, out_h: out[0], out_w: out[1], kernel, stride, pad, exclude_pad: false })
    }

    /// The kernel covers the whole input: one output per channel.
    pub fn global(batch: usize, channels: usize, in_h: usize, in_w: usize) -> PoolGeom {
        PoolGeom { batch, channels, in_h, in_w, out_h: 1, out_w: 1, kernel: [in_h, in_w], stride: [1, 1], pad: [0, 0], exclude_pad: false }
    }

    /// The AVE divisor of the window (`h`, `w`): its area clipped to the padded input, or
    /// with `exclude_pad` to the input (at least 1, for an empty window).
    pub fn divisor(&self, h: &Window, w: &Window) -> usize {
        if self.exclude_pad {
            ((h.end - h.start) * (w.end - w.start)).max(1)
        } else {
            h.padded_len * w.padded_len
        }
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.in_h * self.in_w
    }

    pub fn output_len(&self) -> usize {
        self.batch * self.channels * self.out_h * self.out_w
    }

    pub fn windows(&self) -> (Vec<Window>, Vec<Window>) {
        (
            windows(self.out_h, self.in_h, self.kernel[0], self.stride[0], self.pad[0]),
            windows(self.out_w, self.in_w, self.kernel[1], self.stride[1], self.pad[1]),
        )
    }

    pub fn planes(&self) -> (usize, usize) {
        (self.in_h * self.in_w, self.out_h * self.out_w)
    }
}
