//! The receptive field of a hidden unit: the part of the input image it can see, from the
//! kernel, stride and pad of every convolution and pooling between the input and the unit
//! (the paper's hidden-unit figures show the preferred image cropped to it).

use crate::caffe::LrnRegion;
use crate::graph::{BlobId, Op, Plan};

/// A rectangle of input pixels, half-open: columns `x0..x1`, rows `y0..y1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl Field {
    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }

    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }
}

/// Inclusive spatial bounds [y0, y1, x0, x1] in a blob's own coordinates.
type Region = [i64; 4];

fn union(a: Option<Region>, b: Region) -> Region {
    match a {
        None => b,
        Some(a) => [a[0].min(b[0]), a[1].max(b[1]), a[2].min(b[2]), a[3].max(b[3])],
    }
}

/// The whole map of a 4-axis blob (None for other blobs: they have no map).
fn whole(plan: &Plan, blob: BlobId) -> Option<Region> {
    let s = &plan.blobs[blob].shape;
    (s.len() == 4).then(|| [0, s[2] as i64 - 1, 0, s[3] as i64 - 1])
}

fn clip(plan: &Plan, blob: BlobId, r: Region) -> Option<Region> {
    let w = whole(plan, blob)?;
    let c = [r[0].max(w[0]), r[1].min(w[1]), r[2].max(w[2]), r[3].min(w[3])];
    (c[0] <= c[1] && c[2] <= c[3]).then_some(c)
}

/// Output rows lo..=hi of a window op read input rows `lo*s - p ..= hi*s - p + (k-1)*d`.
fn through_window(r: Region, kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2], dilation: [usize; 2]) -> Region {
    let axis = |lo: i64, hi: i64, a: usize| {
        let (k, s, p, d) = (kernel[a] as i64, stride[a] as i64, pad[a] as i64, dilation[a] as i64);
        (lo * s - p, hi * s - p + (k - 1) * d)
    };
    let (y0, y1) = axis(r[0], r[1], 0);
    let (x0, x1) = axis(r[2], r[3], 1);
    [y0, y1, x0, x1]
}

/// Output rows lo..=hi of a deconvolution come from the inputs i with `i*s - p + t` in
/// lo..=hi for some tap t < k.
fn through_deconv(r: Region, kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2], dilation: [usize; 2]) -> Region {
    let axis = |lo: i64, hi: i64, a: usize| {
        let (k, s, p, d) = (kernel[a] as i64, stride[a] as i64, pad[a] as i64, dilation[a] as i64);
        ((lo + p - (k - 1) * d).div_euclid(s) + ((lo + p - (k - 1) * d).rem_euclid(s) != 0) as i64, (hi + p).div_euclid(s))
    };
    let (y0, y1) = axis(r[0], r[1], 0);
    let (x0, x1) = axis(r[2], r[3], 1);
    [y0, y1, x0, x1]
}

/// The input pixels that the unit at (x, y) of the 4-axis blob `target` depends on, clipped
/// to the image. None when `target` or the net's input has no spatial map.
pub fn receptive_field(plan: &Plan, target: BlobId, x: usize, y: usize) -> Option<Field> {
    let input = plan.inputs[0];
    whole(plan, target)?;
    whole(plan, input)?;
    let mut regions: Vec<Option<Region>> = vec![None; plan.blobs.len()];
    regions[target] = clip(plan, target, [y as i64, y as i64, x as i64, x as i64]);
    // Nodes run in order, so walking them backwards visits every consumer before the
    // blob it reads; each bottom gathers the union of what its readers need.
    for node in plan.nodes.iter().rev() {
        let Some(need) = node.tops.iter().filter_map(|&t| regions[t]).reduce(|a, b| union(Some(a), b)) else { continue };
        for &bottom in &node.bottoms {
            let same_map = whole(plan, bottom).is_some() && plan.blobs[bottom].shape[2..] == plan.blobs[node.tops[0]].shape[2..];
            let r = match &node.op {
                Op::Conv { geom, .. } => Some(through_window(need, geom.kernel, geom.stride, geom.pad, geom.dilation)),
                Op::Deconv { geom, .. } => Some(through_deconv(need, geom.kernel, geom.stride, geom.pad, geom.dilation)),
                Op::MaxPool(g) | Op::AvePool(g) => Some(through_window(need, g.kernel, g.stride, g.pad, [1, 1])),
                Op::Lrn { param, .. } if param.region == LrnRegion::WithinChannel => {
                    let h = (param.local_size / 2) as i64;
                    Some([need[0] - h, need[1] + h, need[2] - h, need[3] + h])
                }
                // Element-wise or channel-wise on the same map: the same pixels.
                Op::Relu { .. }
                | Op::Activation(_)
                | Op::Silu
                | Op::ScaleByBlob { .. }
                | Op::Copy
                | Op::Lrn { .. }
                | Op::Softmax { .. }
                | Op::Concat { .. }
                | Op::Eltwise { .. }
                | Op::BatchNorm { .. }
                | Op::Scale { .. }
                    if same_map =>
                {
                    Some(need)
                }
                // An inner product, a reshape or anything else: every input it reads.
                _ => whole(plan, bottom),
            };
            if let Some(r) = r.and_then(|r| clip(plan, bottom, r)) {
                regions[bottom] = Some(union(regions[bottom], r));
            }
        }
    }
    let r = regions[input]?;
    Some(Field { x0: r[2] as usize, y0: r[0] as usize, x1: r[3] as usize + 1, y1: r[1] as usize + 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caffe::netdef::parse_netdef;

    fn caffenet() -> Plan {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/caffenet.prototxt");
        let def = parse_netdef(&std::fs::read_to_string(path).unwrap()).unwrap();
        Plan::new(&def, 1).unwrap()
    }

    #[test]
    fn caffenet_conv5_sees_163_pixels_and_conv1_11() {
        let plan = caffenet();
        let conv5 = plan.layer_output("conv5").unwrap();
        assert_eq!(plan.blobs[conv5].shape, vec![1, 256, 13, 13]);
        let f = receptive_field(&plan, conv5, 6, 6).unwrap();
        assert_eq!((f.width(), f.height()), (163, 163));
        // Centred on the center unit: 32..195 of 227.
        assert_eq!(f, Field { x0: 32, y0: 32, x1: 195, y1: 195 });
        // A corner unit's field is clipped to the image.
        let corner = receptive_field(&plan, conv5, 0, 0).unwrap();
        assert_eq!((corner.x0, corner.y0), (0, 0));
        assert!(corner.width() < 163 && corner.height() < 163);

        let conv1 = plan.layer_output("conv1").unwrap();
        let f = receptive_field(&plan, conv1, 2, 3).unwrap();
        assert_eq!(f, Field { x0: 8, y0: 12, x1: 19, y1: 23 });
        // pool5 (before fc6) sees 195 pixels; fc layers have no map.
        let pool5 = plan.layer_output("pool5").unwrap();
        assert_eq!(receptive_field(&plan, pool5, 3, 3).unwrap().width(), 195);
        assert_eq!(receptive_field(&plan, plan.layer_output("fc6").unwrap(), 0, 0), None);
    }
}
