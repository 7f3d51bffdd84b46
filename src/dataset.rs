//! A set of images in a net's input space, held in memory: a folder of PNG/JPEG files
//! (preprocessed as every command does) or one N x C x H x W `.npy`. What a generator
//! learns to reconstruct (`train-generator`) and where nearest real images are searched
//! (`nearest`).

use crate::graph::{BlobId, Net};
use crate::io::Progress;
use crate::npy;
use crate::ops::Kernels;
use crate::preprocess::{load_image, Preprocess};
use crate::tensor::fmt_shape;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};

/// `count` images of `shape` (C, H, W), row-major one after another.
#[derive(Clone, Debug)]
pub struct Images {
    pub shape: [usize; 3],
    pub data: Vec<f32>,
    pub count: usize,
}

impl Images {
    pub fn len_per_image(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.len_per_image();
        &self.data[i * n..(i + 1) * n]
    }
}

/// Every `.png`, `.jpg` and `.jpeg` in `dir` (not its subfolders), in name order, resized
/// to `shape` and preprocessed with `pre`.
pub fn from_dir(dir: &Path, shape: [usize; 3], pre: &Preprocess) -> Result<Images> {
    let paths = image_files(dir)?;
    ensure!(!paths.is_empty(), "--images: {} holds no .png or .jpg images", dir.display());
    let mut data = Vec::with_capacity(paths.len() * shape.iter().product::<usize>());
    for p in &paths {
        data.extend(load_image(p, shape[0], shape[1], shape[2], pre)?.data);
    }
    finite(&data, dir)?;
    Ok(Images { shape, data, count: paths.len() })
}

/// The `.png`, `.jpg` and `.jpeg` files of `dir` (not its subfolders), in name order: the
/// images `from_dir` reads, image i being file i.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--images: cannot read the folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
            p.is_file() && matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// An N x C x H x W `.npy` already in the net's input space; C, H, W must be `shape`.
pub fn from_npy(path: &Path, shape: [usize; 3]) -> Result<Images> {
    ensure!(path.extension().and_then(|e| e.to_str()) == Some("npy"), "--images-npy {}: not a .npy file", path.display());
    from_file(path, shape, &Preprocess::default_for(shape[0])).context("--images-npy")
}

/// One file of images: a `.npy` (any batch, in the net's input space) or one image file.
pub fn from_file(path: &Path, shape: [usize; 3], pre: &Preprocess) -> Result<Images> {
    if path.extension().and_then(|e| e.to_str()) != Some("npy") {
        let data = load_image(path, shape[0], shape[1], shape[2], pre)?.data;
        finite(&data, path)?;
        return Ok(Images { shape, data, count: 1 });
    }
    let t = npy::read(path)?;
    ensure!(
        t.shape.len() == 4 && t.shape[0] > 0 && t.shape[1..] == shape,
        "{}: shape {} is not N x {} (images in the net's input space)",
        path.display(),
        fmt_shape(&t.shape),
        fmt_shape(&shape)
    );
    finite(&t.data, path)?;
    Ok(Images { shape, count: t.shape[0], data: t.data })
}

fn finite(data: &[f32], from: &Path) -> Result<()> {
    crate::graph::ensure_finite(data, || format!("the images from {}", from.display()))
}

/// The values of `blobs` for every image, one table per blob (image after image), from
/// `net`'s forward passes at its batch size (the last batch padded with copies of its
/// first image). `progress` counts the images.
pub fn blob_rows<B: Kernels<Scalar = f32>>(
    net: &Net<B>,
    images: &Images,
    blobs: &[BlobId],
    progress: &dyn Progress,
) -> Result<Vec<Vec<f32>>> {
    let b = net.plan.batch;
    let mut out: Vec<Vec<f32>> = blobs.iter().map(|_| Vec::new()).collect();
    let mut st = net.state()?;
    progress.start(images.count as u64, "images through the net");
    for first in (0..images.count).step_by(b) {
        let take = (images.count - first).min(b);
        let x: Vec<f32> = (0..b).flat_map(|i| images.image(if i < take { first + i } else { first }).iter().copied()).collect();
        net.forward(&mut st, &[&x])?;
        for (&blob, table) in blobs.iter().zip(out.iter_mut()) {
            let v = net.backend.download(st.value(blob))?;
            table.extend_from_slice(&v[..take * v.len() / b]);
        }
        progress.advance(take as u64);
    }
    progress.finish();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_shapes_must_match_the_input() {
        let dir = std::env::temp_dir().join(format!("dgnam-train-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.npy");
        npy::write(&p, &[3, 1, 2, 2], &(0..12).map(|v| v as f32).collect::<Vec<_>>()).unwrap();
        let im = from_npy(&p, [1, 2, 2]).unwrap();
        assert_eq!((im.count, im.image(2)), (3, &[8.0, 9.0, 10.0, 11.0][..]));
        let e = format!("{:#}", from_npy(&p, [1, 28, 28]).unwrap_err());
        assert!(e.contains("shape 3x1x2x2 is not N x 1x28x28"), "{e}");
        npy::write(&p, &[0, 1, 2, 2], &[]).unwrap();
        assert!(from_npy(&p, [1, 2, 2]).is_err());
        let e = from_dir(&dir, [1, 2, 2], &Preprocess::default_for(1)).unwrap_err().to_string();
        assert!(e.contains("holds no .png or .jpg images"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
