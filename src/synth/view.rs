//! How the classifier sees a generator image: fitted to its input size (a center crop, or a
//! bilinear resize), then converted from the generator's Caffe space (BGR, 0-255, minus the
//! ImageNet mean) into the input space recorded in the classifier's weights file. Both steps
//! are linear, and their backwards are their exact adjoints (`DgnKernels`), so the gradient
//! reaches the generator's code through them.

use super::dgn::center_crop_offset;
use super::kernels::{ChannelAffine, DgnKernels};
use crate::ir::InputSpace;
use crate::preprocess::{IMAGENET_MEAN_BGR, TORCHVISION_MEAN_RGB, TORCHVISION_STD_RGB};
use anyhow::{ensure, Result};

/// The generator's image to the classifier's input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// The centered window (`center_crop_offset`): the input is no larger than the image in
    /// either direction (the paper's 256 -> 227; torchvision's 256 -> 224).
    Crop { offset: [usize; 2], hw: [usize; 2] },
    /// Bilinear resize to exactly the input size (`kernels::bilinear_tap`): the input is
    /// larger than the image in some direction (256 -> 299 for Inception v3).
    Resize { hw: [usize; 2] },
}

impl Fit {
    /// The rule: crop when the input fits inside the image, else resize to it.
    pub fn for_sizes(generated: [usize; 2], input: [usize; 2]) -> Fit {
        if input[0] <= generated[0] && input[1] <= generated[1] {
            Fit::Crop { offset: center_crop_offset(generated, input), hw: input }
        } else {
            Fit::Resize { hw: input }
        }
    }

    pub fn hw(&self) -> [usize; 2] {
        match *self {
            Fit::Crop { hw, .. } | Fit::Resize { hw } => hw,
        }
    }
}

/// The map from Caffe space into `space`, per channel (None for Caffe space itself).
/// torchvision: RGB, x / 255, minus (0.485, 0.456, 0.406), divided by (0.229, 0.224, 0.225);
/// a Caffe value v of BGR channel k is the pixel v + mean[k], so output channel c (RGB)
/// reads channel 2 - c: y = x / (255 std[c]) + (mean_bgr[2 - c] / 255 - mean[c]) / std[c].
pub fn caffe_to(space: InputSpace) -> Option<ChannelAffine> {
    match space {
        InputSpace::Caffe => None,
        InputSpace::Torchvision => {
            let perm = [2, 1, 0];
            let std = TORCHVISION_STD_RGB.map(|s| s as f64);
            let mean = TORCHVISION_MEAN_RGB.map(|m| m as f64);
            let scale = [0, 1, 2].map(|c| 1.0 / (255.0 * std[c]));
            let bias = [0, 1, 2].map(|c| (IMAGENET_MEAN_BGR[perm[c]] as f64 / 255.0 - mean[c]) / std[c]);
            Some(ChannelAffine { perm, scale, bias })
        }
    }
}

/// An image in `space` (C x H x W) back in Caffe space, for rendering (`render::to_rgb`
/// takes Caffe-space images). The inverse of `caffe_to`, in f64.
pub fn to_caffe(space: InputSpace, chw: &[f32]) -> Vec<f32> {
    let Some(map) = caffe_to(space) else { return chw.to_vec() };
    let plane = chw.len() / 3;
    let mut out = vec![0f32; chw.len()];
    for c in 0..3 {
        let to = &mut out[map.perm[c] * plane..(map.perm[c] + 1) * plane];
        for (t, &v) in to.iter_mut().zip(&chw[c * plane..(c + 1) * plane]) {
            *t = ((v as f64 - map.bias[c]) / map.scale[c]) as f32;
        }
    }
    out
}

/// The fit and the conversion between a generator's output blob and a classifier's input
/// blob, with the buffers between them.
pub struct View<B: DgnKernels> {
    image_shape: [usize; 4],
    fit: Fit,
    map: Option<ChannelAffine>,
    /// The fitted Caffe-space image and its gradient, when a conversion follows the fit.
    fitted: Option<(B::Buf, B::Buf)>,
}

impl<B: DgnKernels> View<B> {
    /// For images of `image_shape` (N x C x H x W) and a classifier input of `input_shape`
    /// in `space`.
    pub fn new(backend: &B, image_shape: [usize; 4], input_shape: &[usize], space: InputSpace) -> Result<Self> {
        ensure!(
            input_shape.len() == 4 && input_shape[..2] == image_shape[..2],
            "the generator's output {:?} cannot feed the classifier's input {:?}",
            image_shape,
            input_shape
        );
        let map = caffe_to(space);
        ensure!(
            map.is_none() || image_shape[1] == 3,
            "the classifier takes {} input, which needs 3 channels; the generator makes {}",
            space.name(),
            image_shape[1]
        );
        let fit = Fit::for_sizes([image_shape[2], image_shape[3]], [input_shape[2], input_shape[3]]);
        let fitted = match map {
            Some(_) => {
                let n: usize = input_shape.iter().product();
                Some((backend.alloc(n)?, backend.alloc(n)?))
            }
            None => None,
        };
        Ok(View { image_shape, fit, map, fitted })
    }

    pub fn fit(&self) -> Fit {
        self.fit
    }

    fn input_shape(&self) -> [usize; 4] {
        let [h, w] = self.fit.hw();
        [self.image_shape[0], self.image_shape[1], h, w]
    }

    /// The classifier's input from the generator's `image`.
    pub fn forward(&mut self, b: &B, image: &B::Buf, input: &mut B::Buf) -> Result<()> {
        let (fit, shape, converted) = (self.fit, self.image_shape, self.input_shape());
        match (&self.map, &mut self.fitted) {
            (Some(map), Some((fitted, _))) => {
                fit_forward(b, fit, shape, image, fitted)?;
                b.channel_affine(fitted, converted, map, input)
            }
            _ => fit_forward(b, fit, shape, image, input),
        }
    }

    /// Adds the gradient with respect to the generator's image, from `input_grad` (the
    /// classifier's input gradient), into `image_grad`.
    pub fn backward(&mut self, b: &B, input_grad: &B::Buf, image_grad: &mut B::Buf) -> Result<()> {
        let (fit, shape, converted) = (self.fit, self.image_shape, self.input_shape());
        match (&self.map, &mut self.fitted) {
            (Some(map), Some((_, fitted_grad))) => {
                b.zero(fitted_grad)?;
                b.channel_affine_backward(input_grad, converted, map, fitted_grad)?;
                fit_backward(b, fit, shape, fitted_grad, image_grad)
            }
            _ => fit_backward(b, fit, shape, input_grad, image_grad),
        }
    }
}

fn fit_forward<B: DgnKernels>(b: &B, fit: Fit, shape: [usize; 4], image: &B::Buf, out: &mut B::Buf) -> Result<()> {
    match fit {
        Fit::Crop { offset, hw } => b.crop(image, shape, offset, hw, out),
        Fit::Resize { hw } => b.resize(image, shape, hw, out),
    }
}

fn fit_backward<B: DgnKernels>(b: &B, fit: Fit, shape: [usize; 4], dy: &B::Buf, dx: &mut B::Buf) -> Result<()> {
    match fit {
        Fit::Crop { offset, hw } => b.crop_backward(dy, shape, offset, hw, dx),
        Fit::Resize { hw } => b.resize_backward(dy, shape, hw, dx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Cpu;
    use crate::ops::gradcheck;

    #[test]
    fn the_net_input_size_decides_crop_or_resize() {
        assert_eq!(Fit::for_sizes([256, 256], [227, 227]), Fit::Crop { offset: [14, 14], hw: [227, 227] });
        assert_eq!(Fit::for_sizes([256, 256], [224, 224]), Fit::Crop { offset: [16, 16], hw: [224, 224] });
        assert_eq!(Fit::for_sizes([256, 256], [256, 256]), Fit::Crop { offset: [0, 0], hw: [256, 256] });
        assert_eq!(Fit::for_sizes([256, 256], [299, 299]), Fit::Resize { hw: [299, 299] });
        assert_eq!(Fit::for_sizes([256, 256], [240, 320]), Fit::Resize { hw: [240, 320] });
    }

    #[test]
    fn torchvision_is_caffe_space_flipped_rescaled_and_normalized() {
        let map = caffe_to(InputSpace::Torchvision).unwrap();
        assert!(caffe_to(InputSpace::Caffe).is_none());
        // A Caffe-space BGR value v is the pixel v + mean; torchvision reads it as RGB / 255.
        let caffe_bgr = [-20.5f64, 3.25, 100.0];
        for c in 0..3 {
            let pixel = caffe_bgr[2 - c] + IMAGENET_MEAN_BGR[2 - c] as f64;
            let want = (pixel / 255.0 - TORCHVISION_MEAN_RGB[c] as f64) / TORCHVISION_STD_RGB[c] as f64;
            let got = map.scale[c] * caffe_bgr[map.perm[c]] + map.bias[c];
            assert!((got - want).abs() < 1e-12, "channel {c}: {got} vs {want}");
        }
        // to_caffe undoes the map.
        let x: Vec<f32> = (0..12).map(|i| i as f32 * 9.5 - 50.0).collect();
        let cpu = Cpu::<f32>::new();
        let mut y = vec![0f32; 12];
        cpu.channel_affine(&x, [1, 3, 2, 2], &map, &mut y).unwrap();
        for (a, b) in to_caffe(InputSpace::Torchvision, &y).iter().zip(&x) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        assert_eq!(to_caffe(InputSpace::Caffe, &x), x);
    }

    /// The whole view, fit then conversion, against f64 central differences, for a crop and
    /// for a resize: its backward is the gradient the generator's image gets.
    #[test]
    fn the_views_backward_is_the_gradient_of_its_forward() {
        let cpu = Cpu::<f64>::new();
        for (input, space) in
            [([2, 3, 5, 4], InputSpace::Torchvision), ([2, 3, 9, 11], InputSpace::Torchvision), ([2, 3, 9, 11], InputSpace::Caffe)]
        {
            let image_shape = [2, 3, 7, 8];
            let mut view = View::new(&cpu, image_shape, &input, space).unwrap();
            let mut rng = crate::rng::Rng::new(5);
            let x = rng.uniform_vec(image_shape.iter().product(), -100.0, 100.0);
            let r = rng.uniform_vec(input.iter().product(), -1.0, 1.0);
            let mut dx = vec![0.0; x.len()];
            view.backward(&cpu, &r, &mut dx).unwrap();
            let loss = |x: &[f64]| {
                let mut v = View::new(&cpu, image_shape, &input, space).unwrap();
                let mut y = vec![0.0; r.len()];
                v.forward(&cpu, &x.to_vec(), &mut y).unwrap();
                gradcheck::dot(&y, &r)
            };
            gradcheck::check(&format!("view {image_shape:?} -> {input:?} in {}", space.name()), &x, &dx, loss);
        }
        let err = View::new(&cpu, [1, 1, 8, 8], &[1, 1, 6, 6], InputSpace::Torchvision).err().unwrap().to_string();
        assert!(err.contains("torchvision") && err.contains("3 channels"), "{err}");
    }
}
