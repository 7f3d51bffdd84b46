//! Nearest real images (the DGN-AM paper's Fig. S22): how close a synthesized image lies
//! to real ones, in pixel space and in the code space of any layer. Every image (or code)
//! is first normalized to zero mean and unit norm, so that the distance compares
//! patterns, not brightness or scale; it then lies in [0, 2].

use super::render::{montage, to_rgb, write_png, Render};
use crate::dataset::{self, Images};
use crate::graph::{BlobId, Net};
use crate::io::Progress;
use crate::ops::Kernels;
use crate::preprocess::Preprocess;
use crate::tensor::fmt_shape;
use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;

/// The pixel space's name in `--layers`.
pub const PIXEL: &str = "pixel";

#[derive(Clone, Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("data").required(true).args(["images", "images_npy"])))]
pub struct NearestOptions {
    /// The classifier (.dgnw): its input space, and its layers' codes.
    #[arg(long)]
    pub net: PathBuf,
    /// The real images: a folder of .png/.jpg files.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// The real images: one N x C x H x W .npy in the net's input space.
    #[arg(long, conflicts_with = "images")]
    pub images_npy: Option<PathBuf>,
    /// Where to compare: `pixel` and layers of the net (a layer's output after any in-place
    /// layer on it, as codes are), e.g. pixel,ip1.
    #[arg(long, value_delimiter = ',', default_value = PIXEL)]
    pub layers: Vec<String>,
    /// How many nearest real images per query and space.
    #[arg(short = 'k', default_value_t = 5)]
    pub k: usize,
    #[arg(long)]
    pub out_dir: PathBuf,
    /// The synthesized images: .npy files (any batch, in the net's input space, such as
    /// synthesize's and demo's .image.npy) or image files.
    #[arg(required = true)]
    pub queries: Vec<PathBuf>,
}

/// Real images, normalized once, to search.
pub struct Gallery {
    len: usize,
    rows: Vec<f64>,
}

/// `image - mean(image)`, scaled to unit norm (a constant image stays all zeros).
pub fn normalized(image: &[f32]) -> Vec<f64> {
    let mean = image.iter().map(|&v| v as f64).sum::<f64>() / image.len().max(1) as f64;
    let mut v: Vec<f64> = image.iter().map(|&x| x as f64 - mean).collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

impl Gallery {
    /// `images`: `images.len() / len` images of `len` values each.
    pub fn new(images: &[f32], len: usize) -> Gallery {
        Gallery { len, rows: images.chunks_exact(len).flat_map(normalized).collect() }
    }

    pub fn count(&self) -> usize {
        self.rows.len() / self.len.max(1)
    }

    /// The `k` real images nearest to `query` (same length as the gallery's), nearest
    /// first, as (index, distance); ties go to the lower index.
    pub fn nearest(&self, query: &[f32], k: usize) -> Vec<(usize, f64)> {
        let q = normalized(query);
        let mut all: Vec<(usize, f64)> = self
            .rows
            .chunks_exact(self.len)
            .enumerate()
            .map(|(i, r)| (i, r.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt()))
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }
}

/// What `nearest` wrote.
#[derive(Clone, Debug)]
pub struct NearestReport {
    pub json: PathBuf,
    pub montage: Option<PathBuf>,
    /// Per query (in the order given, each file's batch in order), per space: the nearest
    /// real images as (index, distance).
    pub results: Vec<Vec<Vec<(usize, f64)>>>,
}

/// Each space's features of a set of images: the pixels themselves, or a blob of `net`.
fn features<B: Kernels<Scalar = f32>>(
    net: &Net<B>,
    spaces: &[Option<BlobId>],
    images: &Images,
    progress: &dyn Progress,
) -> Result<Vec<Vec<f32>>> {
    let blobs: Vec<BlobId> = spaces.iter().flatten().copied().collect();
    let mut tables = if blobs.is_empty() { Vec::new() } else { dataset::blob_rows(net, images, &blobs, progress)? }.into_iter();
    Ok(spaces.iter().map(|s| if s.is_some() { tables.next().unwrap_or_default() } else { images.data.clone() }).collect())
}

/// `dgnam nearest` with `net` (any batch size): reads everything, then writes
/// `<out_dir>/nearest.json` and `<out_dir>/nearest.png`.
pub fn nearest<B: Kernels<Scalar = f32>>(
    net: &Net<B>,
    o: &NearestOptions,
    pre: &Preprocess,
    progress: &dyn Progress,
) -> Result<NearestReport> {
    ensure!(o.k > 0, "-k must be at least 1");
    let input = &net.plan.blobs[net.plan.inputs[0]].shape;
    ensure!(input.len() == 4, "--net {}: its input {} is not an image", o.net.display(), fmt_shape(input));
    let shape = [input[1], input[2], input[3]];
    ensure!(!o.layers.is_empty(), "--layers: name at least one space (pixel or a layer)");
    let spaces: Vec<Option<BlobId>> =
        o.layers
            .iter()
            .map(|l| {
                if l == PIXEL {
                    Ok(None)
                } else {
                    super::run::encoder_blob(&net.plan, l).map(Some).with_context(|| format!("--layers {l}"))
                }
            })
            .collect::<Result<_>>()?;
    let real = match (&o.images, &o.images_npy) {
        (Some(dir), _) => dataset::from_dir(dir, shape, pre)?,
        (None, Some(npy)) => dataset::from_npy(npy, shape)?,
        (None, None) => anyhow::bail!("give the real images with --images DIR or --images-npy X.npy"),
    };
    let mut queries = Vec::new();
    for q in &o.queries {
        let set = dataset::from_file(q, shape, pre)?;
        for i in 0..set.count {
            queries.push((q.clone(), i, set.image(i).to_vec()));
        }
    }
    let query_set = Images { shape, count: queries.len(), data: queries.iter().flat_map(|q| q.2.iter().copied()).collect() };
    progress.message(&format!("nearest: {} real images, {} queries, spaces {}", real.count, queries.len(), o.layers.join(", ")));
    let real_feats = features(net, &spaces, &real, progress)?;
    let query_feats = features(net, &spaces, &query_set, &crate::io::Silent)?;
    let k = o.k.min(real.count);
    let results: Vec<Vec<Vec<(usize, f64)>>> = {
        let galleries: Vec<Gallery> = real_feats.iter().map(|f| Gallery::new(f, f.len() / real.count)).collect();
        (0..queries.len())
            .map(|q| {
                galleries
                    .iter()
                    .zip(&query_feats)
                    .map(|(g, f)| {
                        let len = f.len() / queries.len();
                        g.nearest(&f[q * len..(q + 1) * len], k)
                    })
                    .collect()
            })
            .collect()
    };

    std::fs::create_dir_all(&o.out_dir).with_context(|| format!("cannot create {}", o.out_dir.display()))?;
    // A folder's images are named by their files; a .npy's by their index alone.
    let real_files = o.images.as_deref().map(dataset::image_files).transpose()?;
    let real_name =
        |i: usize| -> Value { real_files.as_ref().and_then(|f| f.get(i)).map_or(Value::Null, |p| json!(p.display().to_string())) };
    let entries: Vec<Value> = queries
        .iter()
        .zip(&results)
        .map(|((file, index, _), per_space)| {
            let spaces: serde_json::Map<String, Value> = o
                .layers
                .iter()
                .zip(per_space)
                .map(|(name, hits)| {
                    let hits: Vec<Value> = hits.iter().map(|&(i, d)| json!({"index": i, "file": real_name(i), "distance": d})).collect();
                    (name.clone(), Value::Array(hits))
                })
                .collect();
            json!({"file": file.display().to_string(), "index": index, "nearest": spaces})
        })
        .collect();
    let real_source = o.images.as_ref().or(o.images_npy.as_ref()).map(|p| p.display().to_string());
    let doc = json!({
        "net": o.net.display().to_string(),
        "real_images": real_source,
        "real_count": real.count,
        "spaces": o.layers,
        "k": k,
        "distance": "Euclidean, after each image or code is normalized to zero mean and unit norm",
        "queries": entries,
    });
    let json_path = o.out_dir.join("nearest.json");
    crate::fsutil::write_atomic(&json_path, serde_json::to_string_pretty(&doc)?.as_bytes())?;

    // One row per query and space: the query, then its k nearest real images.
    let montage_path = (shape[0] == 1 || shape[0] == 3).then(|| o.out_dir.join("nearest.png"));
    if let Some(path) = &montage_path {
        let zoom = (112 / shape[1].max(shape[2])).max(1) as u32;
        let tile = |chw: &[f32]| {
            let rgb = to_rgb(chw, shape[0], shape[1], shape[2], Render::Mean);
            image::imageops::resize(&rgb, rgb.width() * zoom, rgb.height() * zoom, image::imageops::FilterType::Nearest)
        };
        let mut tiles = Vec::new();
        // Queries are numbered as nearest.json lists them.
        for (q, ((_, _, image), per_space)) in queries.iter().zip(&results).enumerate() {
            for (name, hits) in o.layers.iter().zip(per_space) {
                tiles.push((tile(image), format!("q{q} {name}")));
                for &(i, d) in hits {
                    tiles.push((tile(real.image(i)), format!("#{i} d={d:.3}")));
                }
                for _ in hits.len()..k {
                    tiles.push((image::RgbImage::from_pixel(1, 1, image::Rgb([255, 255, 255])), String::new()));
                }
            }
        }
        write_png(path, &montage(&tiles, Some(k + 1)))?;
    }
    Ok(NearestReport { json: json_path, montage: montage_path, results })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_ignore_brightness_and_contrast() {
        let real = [0.0, 1.0, 0.0, 1.0, /* */ 1.0, 0.0, 0.0, 0.0, /* */ 5.0, 5.0, 5.0, 5.0];
        let g = Gallery::new(&real, 4);
        assert_eq!(g.count(), 3);
        // 10 + 3 * (first image) has the first image's pattern exactly.
        let near = g.nearest(&[10.0, 13.0, 10.0, 13.0], 3);
        assert_eq!(near[0].0, 0);
        assert!(near[0].1 < 1e-12);
        // The constant image normalizes to zeros: at distance 1 from any unit vector.
        assert!((near.iter().find(|n| n.0 == 2).unwrap().1 - 1.0).abs() < 1e-12);
        // The opposite pattern is at the largest distance, 2.
        assert!((g.nearest(&[1.0, 0.0, 1.0, 0.0], 1)[0].1 - 0.0).abs() > 0.5);
        assert!((Gallery::new(&real[..4], 4).nearest(&[1.0, 0.0, 1.0, 0.0], 1)[0].1 - 2.0).abs() < 1e-12);
    }
}
