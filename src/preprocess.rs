//! Image files into a net's input space: resize to the input size, the channel order, then
//! `(pixel - mean) * scale / std`. Caffe's classifiers take BGR minus the ImageNet mean;
//! torchvision's take RGB, x / 255, minus its mean, divided by its std (`for_space`).

use crate::ir::InputSpace;
use crate::npy;
use crate::tensor::{fmt_shape, Tensor};
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

/// Per-channel ImageNet mean in BGR order (Caffe's ilsvrc_2012_mean.npy averaged).
pub const IMAGENET_MEAN_BGR: [f32; 3] = [104.006_99, 116.668_77, 122.678_91];

/// torchvision's `Normalize` of RGB pixels in 0..1: the mean and the std.
pub const TORCHVISION_MEAN_RGB: [f32; 3] = [0.485, 0.456, 0.406];
pub const TORCHVISION_STD_RGB: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelOrder {
    Bgr,
    Rgb,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Mean {
    None,
    /// One value per channel, in the net's channel order.
    Values(Vec<f32>),
    /// A mean image C x H x W (center-cropped to the input size when larger).
    Image(Tensor),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub order: ChannelOrder,
    pub mean: Mean,
    pub scale: f32,
    /// One divisor per channel, applied last (torchvision's std); None: no division.
    pub std: Option<Vec<f32>>,
}

impl Preprocess {
    /// What a BVLC model with `channels` input channels expects: BGR minus the ImageNet
    /// mean for colour nets, raw grey values for one-channel nets.
    pub fn default_for(channels: usize) -> Preprocess {
        let mean = if channels == 3 { Mean::Values(IMAGENET_MEAN_BGR.to_vec()) } else { Mean::None };
        Preprocess { order: ChannelOrder::Bgr, mean, scale: 1.0, std: None }
    }

    /// What a net recorded in `space` with `channels` input channels expects: Caffe's
    /// (`default_for`), or torchvision's RGB, `(pixel - 255 mean) / 255 / std`, which is
    /// `(pixel / 255 - mean) / std` (torchvision's nets are 3-channel; others are refused).
    pub fn for_space(space: InputSpace, channels: usize) -> Result<Preprocess> {
        match space {
            InputSpace::Caffe => Ok(Preprocess::default_for(channels)),
            InputSpace::Torchvision => {
                ensure!(channels == 3, "the net takes torchvision input with {channels} channels: image files are read for 3-channel nets only; give inputs as .npy already in the net's space");
                Ok(Preprocess {
                    order: ChannelOrder::Rgb,
                    mean: Mean::Values(TORCHVISION_MEAN_RGB.iter().map(|m| m * 255.0).collect()),
                    scale: 1.0 / 255.0,
                    std: Some(TORCHVISION_STD_RGB.to_vec()),
                })
            }
        }
    }
}

/// Reads a mean file: `.npy` (C x H x W or 1 x C x H x W) or Caffe `.binaryproto`.
pub fn read_mean_file(path: &Path) -> Result<Tensor> {
    let t = match path.extension().and_then(|e| e.to_str()) {
        Some("binaryproto") => {
            let blob = crate::caffe::caffemodel::read_binaryproto(path)?;
            Tensor::new(blob.shape, blob.data)?
        }
        _ => npy::read(path)?,
    };
    let shape = match t.shape.as_slice() {
        [c, h, w] | [1, c, h, w] => vec![*c, *h, *w],
        s => bail!("{}: a mean image must be CxHxW, got {}", path.display(), fmt_shape(s)),
    };
    Tensor::new(shape, t.data)
}

/// Loads an image file as a 1 x C x H x W tensor in the net's input space.
pub fn load_image(path: &Path, channels: usize, height: usize, width: usize, p: &Preprocess) -> Result<Tensor> {
    ensure!(channels == 1 || channels == 3, "cannot feed an image to a net with {channels} input channels");
    let img = image::open(path).with_context(|| format!("cannot read image {}", path.display()))?;
    let img = if (img.width() as usize, img.height() as usize) != (width, height) {
        img.resize_exact(width as u32, height as u32, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    let plane = height * width;
    let mut data = vec![0f32; channels * plane];
    if channels == 1 {
        for (i, px) in img.to_luma8().pixels().enumerate() {
            data[i] = px.0[0] as f32;
        }
    } else {
        for (i, px) in img.to_rgb8().pixels().enumerate() {
            let [r, g, b] = px.0;
            let ordered = match p.order {
                ChannelOrder::Bgr => [b, g, r],
                ChannelOrder::Rgb => [r, g, b],
            };
            for c in 0..3 {
                data[c * plane + i] = ordered[c] as f32;
            }
        }
    }
    apply_mean_and_scale(&mut data, channels, height, width, p).with_context(|| format!("{}", path.display()))?;
    Tensor::new(vec![1, channels, height, width], data)
}

fn apply_mean_and_scale(data: &mut [f32], channels: usize, height: usize, width: usize, p: &Preprocess) -> Result<()> {
    let plane = height * width;
    match &p.mean {
        Mean::None => {}
        Mean::Values(v) => {
            ensure!(v.len() == channels, "{} mean values given for a {channels}-channel input", v.len());
            for (c, m) in v.iter().enumerate() {
                data[c * plane..(c + 1) * plane].iter_mut().for_each(|x| *x -= m);
            }
        }
        Mean::Image(m) => {
            let (mc, mh, mw) = (m.shape[0], m.shape[1], m.shape[2]);
            ensure!(
                mc == channels && mh >= height && mw >= width,
                "mean image {} cannot be cropped to {channels}x{height}x{width}",
                fmt_shape(&m.shape)
            );
            let (oy, ox) = ((mh - height) / 2, (mw - width) / 2);
            for c in 0..channels {
                for y in 0..height {
                    for x in 0..width {
                        data[c * plane + y * width + x] -= m.data[(c * mh + y + oy) * mw + x + ox];
                    }
                }
            }
        }
    }
    if p.scale != 1.0 {
        data.iter_mut().for_each(|x| *x *= p.scale);
    }
    if let Some(std) = &p.std {
        ensure!(std.len() == channels, "{} std values given for a {channels}-channel input", std.len());
        for (c, s) in std.iter().enumerate() {
            data[c * plane..(c + 1) * plane].iter_mut().for_each(|x| *x /= s);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_image_is_center_cropped() {
        let m = Tensor::new(vec![1, 4, 4], (0..16).map(|v| v as f32).collect()).unwrap();
        let p = Preprocess { order: ChannelOrder::Bgr, mean: Mean::Image(m), scale: 2.0, std: None };
        let mut d = vec![10.0f32; 4];
        apply_mean_and_scale(&mut d, 1, 2, 2, &p).unwrap();
        assert_eq!(d, vec![2.0 * (10.0 - 5.0), 2.0 * (10.0 - 6.0), 2.0 * (10.0 - 9.0), 2.0 * (10.0 - 10.0)]);
    }

    #[test]
    fn colour_images_become_bgr_minus_mean() {
        let dir = std::env::temp_dir().join(format!("dgnam-pre-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("px.png");
        image::RgbImage::from_pixel(2, 2, image::Rgb([200, 100, 50])).save(&path).unwrap();
        let t = load_image(&path, 3, 2, 2, &Preprocess::default_for(3)).unwrap();
        assert_eq!(t.shape, vec![1, 3, 2, 2]);
        assert!((t.data[0] - (50.0 - IMAGENET_MEAN_BGR[0])).abs() < 1e-4);
        assert!((t.data[8] - (200.0 - IMAGENET_MEAN_BGR[2])).abs() < 1e-4);
        assert!(load_image(&dir.join("missing.png"), 3, 2, 2, &Preprocess::default_for(3)).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn torchvision_images_are_rgb_over_255_normalized() {
        let dir = std::env::temp_dir().join(format!("dgnam-pre-tv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("px.png");
        image::RgbImage::from_pixel(3, 2, image::Rgb([200, 100, 50])).save(&path).unwrap();
        let p = Preprocess::for_space(InputSpace::Torchvision, 3).unwrap();
        let t = load_image(&path, 3, 2, 3, &p).unwrap();
        for (c, v) in [200.0f64, 100.0, 50.0].iter().enumerate() {
            // torchvision: ToTensor (x / 255), then Normalize.
            let want = (v / 255.0 - TORCHVISION_MEAN_RGB[c] as f64) / TORCHVISION_STD_RGB[c] as f64;
            for i in 0..6 {
                assert!((t.data[c * 6 + i] as f64 - want).abs() < 1e-6, "channel {c}: {} vs {want}", t.data[c * 6 + i]);
            }
        }
        let err = Preprocess::for_space(InputSpace::Torchvision, 1).unwrap_err().to_string();
        assert!(err.contains("torchvision") && err.contains(".npy"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// Preprocessing choices from the command line; unset ones take the net's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreprocessFlags {
    pub order: Option<ChannelOrder>,
    pub mean: Option<Mean>,
    pub scale: Option<f32>,
}

impl PreprocessFlags {
    pub fn resolve(&self, channels: usize) -> Preprocess {
        self.over(Preprocess::default_for(channels))
    }

    /// The flags over what a net recorded in `space` expects (`Preprocess::for_space`).
    pub fn resolve_in(&self, space: InputSpace, channels: usize) -> Result<Preprocess> {
        Ok(self.over(Preprocess::for_space(space, channels)?))
    }

    fn over(&self, d: Preprocess) -> Preprocess {
        Preprocess {
            order: self.order.unwrap_or(d.order),
            mean: self.mean.clone().unwrap_or(d.mean),
            scale: self.scale.unwrap_or(d.scale),
            std: d.std,
        }
    }
}
