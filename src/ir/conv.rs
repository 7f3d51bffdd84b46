//! The geometry of a convolution (and of a deconvolution, as the convolution whose
//! backward-data pass it is): Caffe's output size rules, checked against overflow.

use anyhow::{bail, ensure, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub group: usize,
}

fn check_params(
    in_channels: usize,
    out_channels: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    group: usize,
) -> Result<()> {
    ensure!(
        kernel.iter().chain(&stride).chain(&dilation).all(|&v| v > 0) && group > 0,
        "convolution: kernel {kernel:?}, stride {stride:?}, dilation {dilation:?} and group {group} must be nonzero"
    );
    ensure!(in_channels > 0 && out_channels > 0, "convolution: channel counts must be nonzero (in {in_channels}, out {out_channels})");
    ensure!(
        in_channels.is_multiple_of(group) && out_channels.is_multiple_of(group),
        "convolution: group {group} must divide both input channels {in_channels} and output channels {out_channels}"
    );
    Ok(())
}

impl ConvGeom {
    /// Convolution: out = (H + 2p - (d*(k-1)+1)) / s + 1 (floor). Errors if the (dilated) kernel
    /// does not fit in the padded input, if group does not divide both channel counts, or if
    /// any kernel/stride/dilation/group is zero.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        batch: usize,
        in_channels: usize,
        in_h: usize,
        in_w: usize,
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
        dilation: [usize; 2],
        group: usize,
    ) -> Result<ConvGeom> {
        check_params(in_channels, out_channels, kernel, stride, dilation, group)?;
        ensure!(in_h > 0 && in_w > 0, "convolution: empty input {in_h}x{in_w}");
        let mut out = [0usize; 2];
        for (a, size) in [in_h, in_w].into_iter().enumerate() {
            // Sizes come from files: overflow is an error, not a wrap.
            let span = dilation[a].checked_mul(kernel[a] - 1).and_then(|s| s.checked_add(1));
            let padded = pad[a].checked_mul(2).and_then(|p| p.checked_add(size));
            let (Some(span), Some(padded)) = (span, padded) else {
                bail!("convolution: kernel {kernel:?}, dilation {dilation:?} or pad {pad:?} is too large");
            };
            if span > padded {
                bail!("convolution: kernel {:?} (dilation {:?}) does not fit the input {in_h}x{in_w} padded by {pad:?}", kernel, dilation);
            }
            out[a] = (padded - span) / stride[a] + 1;
        }
        Ok(ConvGeom { batch, in_channels, in_h, in_w, out_channels, out_h: out[0], out_w: out[1], kernel, stride, pad, dilation, group })
    }

    /// Caffe Deconvolution with these params on an input of in_channels x in_h x in_w,
    /// producing out_channels maps of size s*(H-1) + d*(k-1)+1 - 2p. The returned geometry is
    /// that of the CONVOLUTION whose backward-data pass is this deconvolution: its input is
    /// the deconvolution's output (in_channels = deconv out_channels, in_h/in_w = deconv output
    /// size) and its output is the deconvolution's input. Weights [deconv_in, deconv_out/group, kh, kw]
    /// are then exactly that convolution's [out, in/group, kh, kw] weights.
    #[allow(clippy::too_many_arguments)]
    pub fn for_deconv(
        batch: usize,
        in_channels: usize,
        in_h: usize,
        in_w: usize,
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
        dilation: [usize; 2],
        group: usize,
    ) -> Result<ConvGeom> {
        check_params(in_channels, out_channels, kernel, stride, dilation, group)?;
        ensure!(in_h > 0 && in_w > 0, "deconvolution: empty input {in_h}x{in_w}");
        let mut out = [0usize; 2];
        for (a, size) in [in_h, in_w].into_iter().enumerate() {
            let full = stride[a]
                .checked_mul(size - 1)
                .zip(dilation[a].checked_mul(kernel[a] - 1))
                .and_then(|(s, k)| s.checked_add(k)?.checked_add(1));
            let Some(full) = full else {
                bail!("deconvolution: stride {stride:?}, kernel {kernel:?} or dilation {dilation:?} is too large");
            };
            if pad[a].checked_mul(2).is_none_or(|p2| full <= p2) {
                bail!(
                    "deconvolution: pad {pad:?} crops away the whole output of input {in_h}x{in_w} \
                     with kernel {kernel:?}, stride {stride:?}, dilation {dilation:?}"
                );
            }
            out[a] = full - 2 * pad[a];
        }
        let g = ConvGeom::new(batch, out_channels, out[0], out[1], in_channels, kernel, stride, pad, dilation, group)?;
        // The convolution maps the deconv output size back onto the deconv input size exactly.
        debug_assert_eq!((g.out_h, g.out_w), (in_h, in_w));
        Ok(g)
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_h * self.in_w
    }

    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_h * self.out_w
    }

    pub fn weight_len(&self) -> usize {
        self.out_channels * (self.in_channels / self.group) * self.kernel[0] * self.kernel[1]
    }

    /// 2 * multiply-adds of the forward pass.
    pub fn flops(&self) -> u64 {
        2 * (self.output_len() as u64) * (self.in_channels / self.group) as u64 * (self.kernel[0] * self.kernel[1]) as u64
    }

    /// A 1x1 stride-1 unpadded convolution reads its input directly as the column matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.pad == [0, 0]
    }

    /// Rows of one group's column matrix (= one group's weight row length).
    pub fn group_rows(&self) -> usize {
        (self.in_channels / self.group) * self.kernel[0] * self.kernel[1]
    }

    pub fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }

    pub fn in_plane(&self) -> usize {
        self.in_h * self.in_w
    }
}
