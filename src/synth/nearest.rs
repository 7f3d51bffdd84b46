//! Nearest real images (the DGN-AM paper's Fig. S22): how close a synthesized image lies
//! to real ones. Every image is first normalized to zero mean and unit norm, so that the
//! distance compares patterns, not brightness or contrast; it then lies in [0, 2].

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
