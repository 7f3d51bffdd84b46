//! Shape rules: each layer of a net definition resolved into an [`Op`] with every size
//! known, its top shapes and its parameter shapes, with Caffe's batch and reshape rules.

use super::{Activation, ConvGeom, EltwiseOp, LayerDef, LayerKind, Op, PadGeom, PoolGeom, PoolMethod, ReshapeParam};
use crate::tensor::fmt_shape;
use anyhow::{bail, ensure, Context, Result};

pub fn canonical_axis(axis: i64, rank: usize, layer: &str) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    ensure!(a >= 0 && (a as usize) < rank, "layer '{layer}': axis {axis} is out of range for a {rank}-axis blob");
    Ok(a as usize)
}

pub fn product(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// No single blob or parameter may hold more than this many elements (Caffe counts in an
/// `int`), and a plan's blobs and parameters together may not exceed `MAX_PLAN_BYTES`: a
/// hostile net definition fails in `Plan::new`, not in an allocation.
pub const MAX_ELEMENTS: usize = 1 << 31;
pub const MAX_PLAN_BYTES: u64 = 1 << 34;

/// The element count of a shape, if every axis is nonempty and the count within `MAX_ELEMENTS`.
pub fn checked_len(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| if d == 0 { None } else { n.checked_mul(d) }).filter(|&n| n <= MAX_ELEMENTS)
}

/// A compiled layer: its op, the shapes of its tops and of its parameter blobs.
pub type Compiled = (Op, Vec<Vec<usize>>, Vec<Vec<usize>>);

/// Shape inference for one layer: what it computes and the shapes it produces and needs.
pub fn compile_layer(layer: &LayerDef, shapes: &[Vec<usize>], declared_batch: usize, batch: usize) -> Result<Compiled> {
    let name = layer.name.as_str();
    let kind = layer.kind.type_name();
    let one_bottom = || -> Result<&Vec<usize>> {
        ensure!(shapes.len() == 1, "layer '{name}' ({kind}): needs exactly one bottom, has {}", shapes.len());
        Ok(&shapes[0])
    };
    let four_d = || -> Result<[usize; 4]> {
        let s = one_bottom()?;
        ensure!(s.len() == 4, "layer '{name}' ({kind}): needs a 4-axis NxCxHxW bottom, got {}", fmt_shape(s));
        Ok([s[0], s[1], s[2], s[3]])
    };
    let ctx = || format!("layer '{name}' ({kind})");
    Ok(match &layer.kind {
        LayerKind::Convolution(p) => {
            let [n, c, h, w] = four_d()?;
            let geom = ConvGeom::new(n, c, h, w, p.num_output, p.kernel, p.stride, p.pad, p.dilation, p.group).with_context(ctx)?;
            let mut params = vec![vec![p.num_output, c / p.group, p.kernel[0], p.kernel[1]]];
            if p.bias_term {
                params.push(vec![p.num_output]);
            }
            (Op::Conv { geom, bias: p.bias_term, relu: None }, vec![vec![n, p.num_output, geom.out_h, geom.out_w]], params)
        }
        LayerKind::Deconvolution(p) => {
            let [n, c, h, w] = four_d()?;
            let geom = ConvGeom::for_deconv(n, c, h, w, p.num_output, p.kernel, p.stride, p.pad, p.dilation, p.group).with_context(ctx)?;
            let mut params = vec![vec![c, p.num_output / p.group, p.kernel[0], p.kernel[1]]];
            if p.bias_term {
                params.push(vec![p.num_output]);
            }
            (Op::Deconv { geom, bias: p.bias_term, relu: None }, vec![vec![n, p.num_output, geom.in_h, geom.in_w]], params)
        }
        LayerKind::InnerProduct(p) => {
            let s = one_bottom()?;
            let axis = canonical_axis(p.axis, s.len(), name)?;
            let (rows, k) = (product(&s[..axis]), product(&s[axis..]));
            let mut top = s[..axis].to_vec();
            top.push(p.num_output);
            let mut params = vec![vec![p.num_output, k]];
            if p.bias_term {
                params.push(vec![p.num_output]);
            }
            (Op::InnerProduct { rows, k, n: p.num_output, bias: p.bias_term }, vec![top], params)
        }
        LayerKind::ReLU { negative_slope } => (Op::Relu { slope: *negative_slope }, vec![one_bottom()?.clone()], vec![]),
        LayerKind::Activation(a) => {
            if let Activation::HardSigmoid { alpha, beta } = a {
                ensure!(
                    alpha.is_finite() && beta.is_finite(),
                    "layer '{name}' (HardSigmoid): alpha {alpha} and beta {beta} must be finite"
                );
            }
            if let Activation::Clip { min, max } = a {
                ensure!(!min.is_nan() && !max.is_nan(), "layer '{name}' (Clip): min {min} and max {max} must be numbers");
            }
            (Op::Activation(*a), vec![one_bottom()?.clone()], vec![])
        }
        LayerKind::Dropout => (Op::Copy, vec![one_bottom()?.clone()], vec![]),
        LayerKind::Split => {
            let s = one_bottom()?;
            (Op::Copy, vec![s.clone(); layer.tops.len().max(1)], vec![])
        }
        LayerKind::Pooling(p) => {
            let [n, c, h, w] = four_d()?;
            let geom = if p.global {
                PoolGeom::global(n, c, h, w)
            } else {
                PoolGeom::rounded(n, c, [h, w], p.kernel, p.stride, p.pad, p.round_mode).with_context(ctx)?
            };
            let geom = PoolGeom { exclude_pad: p.exclude_pad, ..geom };
            let top = vec![n, c, geom.out_h, geom.out_w];
            let op = match p.method {
                PoolMethod::Max => Op::MaxPool(geom),
                PoolMethod::Ave => Op::AvePool(geom),
            };
            (op, vec![top], vec![])
        }
        LayerKind::Pad(p) => {
            let dims = four_d()?;
            ensure!(!p.value.is_nan(), "layer '{name}' (Pad): the value must be a number");
            let g = PadGeom { dims, before: p.before, after: p.after, value: p.value };
            let Some([oh, ow]) = g.out_size() else {
                bail!(
                    "layer '{name}' (Pad): sides {:?} above and left, {:?} below and right leave an empty output for a {}x{} input",
                    p.before,
                    p.after,
                    dims[2],
                    dims[3]
                )
            };
            let top = vec![dims[0], dims[1], oh, ow];
            checked_len(&top).with_context(|| format!("layer '{name}' (Pad): {} is too large", fmt_shape(&top)))?;
            (Op::Pad(g), vec![top], vec![])
        }
        LayerKind::ShuffleChannel { group } => {
            let s = one_bottom()?;
            ensure!(s.len() >= 2, "layer '{name}' (ShuffleChannel): the input {} has no channel axis", fmt_shape(s));
            let channels = s[1];
            ensure!(
                *group > 0 && channels % group == 0,
                "layer '{name}' (ShuffleChannel): {channels} channels do not split into {group} groups"
            );
            let op = Op::ShuffleChannel { outer: s[0], channels, group: *group, inner: product(&s[2..]) };
            (op, vec![s.clone()], vec![])
        }
        LayerKind::Lrn(p) => {
            let dims = four_d()?;
            ensure!(p.local_size % 2 == 1, "layer '{name}' (LRN): local_size {} must be odd", p.local_size);
            (Op::Lrn { dims, param: p.clone() }, vec![dims.to_vec()], vec![])
        }
        LayerKind::Softmax { axis } => {
            let s = one_bottom()?;
            let a = canonical_axis(*axis, s.len(), name)?;
            let op = Op::Softmax { outer: product(&s[..a]), channels: s[a], inner: product(&s[a + 1..]) };
            (op, vec![s.clone()], vec![])
        }
        LayerKind::Reshape(p) => (Op::Copy, vec![reshape(name, one_bottom()?, p, declared_batch, batch)?], vec![]),
        LayerKind::Flatten { axis, end_axis } => {
            let s = one_bottom()?;
            let a = canonical_axis(*axis, s.len(), name)?;
            let e = canonical_axis(*end_axis, s.len(), name)?;
            ensure!(a <= e, "layer '{name}' (Flatten): axis {axis} comes after end_axis {end_axis}");
            let mut top = s[..a].to_vec();
            top.push(product(&s[a..=e]));
            top.extend_from_slice(&s[e + 1..]);
            (Op::Copy, vec![top], vec![])
        }
        LayerKind::Concat { axis } => {
            ensure!(!shapes.is_empty(), "layer '{name}' (Concat): no bottoms");
            let first = &shapes[0];
            let a = canonical_axis(*axis, first.len(), name)?;
            for s in shapes {
                let same = s.len() == first.len() && s.iter().zip(first).enumerate().all(|(i, (x, y))| i == a || x == y);
                ensure!(same, "layer '{name}' (Concat): bottom shapes {} and {} differ off axis {a}", fmt_shape(first), fmt_shape(s));
            }
            let channels: Vec<usize> = shapes.iter().map(|s| s[a]).collect();
            let mut top = first.clone();
            top[a] = channels.iter().sum();
            let op = Op::Concat { outer: product(&first[..a]), inner: product(&first[a + 1..]), channels };
            (op, vec![top], vec![])
        }
        LayerKind::Slice { axis, points } => {
            let s = one_bottom()?;
            let a = canonical_axis(*axis, s.len(), name)?;
            let channels = slice_parts(s[a], points, layer.tops.len()).with_context(ctx)?;
            let tops = channels
                .iter()
                .map(|&c| {
                    let mut top = s.clone();
                    top[a] = c;
                    top
                })
                .collect();
            (Op::Slice { outer: product(&s[..a]), inner: product(&s[a + 1..]), channels }, tops, vec![])
        }
        LayerKind::Eltwise(p) => {
            ensure!(shapes.len() >= 2, "layer '{name}' (Eltwise): needs at least two bottoms");
            for s in &shapes[1..] {
                ensure!(s == &shapes[0], "layer '{name}' (Eltwise): bottom shapes {} and {} differ", fmt_shape(&shapes[0]), fmt_shape(s));
            }
            ensure!(
                p.coeffs.is_empty() || (p.op == EltwiseOp::Sum && p.coeffs.len() == shapes.len()),
                "layer '{name}' (Eltwise): coefficients need the SUM operation and one per bottom"
            );
            (Op::Eltwise { op: p.op, coeffs: p.coeffs.clone() }, vec![shapes[0].clone()], vec![])
        }
        LayerKind::BatchNorm { eps } => {
            let s = one_bottom()?;
            ensure!(s.len() >= 2, "layer '{name}' (BatchNorm): needs a bottom with channels, got {}", fmt_shape(s));
            let (outer, channels, inner) = (s[0], s[1], product(&s[2..]));
            let op = Op::BatchNorm { outer, channels, inner, eps: *eps };
            (op, vec![s.clone()], vec![vec![channels], vec![channels], vec![1]])
        }
        LayerKind::Scale(p) if shapes.len() == 2 => {
            // Caffe: the second bottom is the scale, shaped as x's axes from `axis` on.
            let (x, s) = (&shapes[0], &shapes[1]);
            ensure!(!p.bias_term, "layer '{name}' (Scale): bias_term with a second bottom is not supported");
            let a = canonical_axis(p.axis, x.len(), name)?;
            ensure!(
                x.len() >= a + s.len() && x[a..a + s.len()] == s[..],
                "layer '{name}' (Scale): the scale's shape {} is not that of the input {} from axis {a} on",
                fmt_shape(s),
                fmt_shape(x)
            );
            let end = a + s.len();
            let op = Op::ScaleByBlob { outer: product(&x[..a]), channels: product(s), inner: product(&x[end..]) };
            (op, vec![x.clone()], vec![])
        }
        LayerKind::Scale(p) => {
            let s = one_bottom()?;
            let a = canonical_axis(p.axis, s.len(), name)?;
            let end = if p.num_axes < 0 { s.len() } else { a + p.num_axes as usize };
            ensure!(end <= s.len(), "layer '{name}' (Scale): num_axes {} runs past the bottom's axes", p.num_axes);
            let pshape = s[a..end].to_vec();
            let op = Op::Scale { outer: product(&s[..a]), channels: product(&pshape), inner: product(&s[end..]), bias: p.bias_term };
            let mut params = vec![pshape.clone()];
            if p.bias_term {
                params.push(pshape);
            }
            (op, vec![s.clone()], params)
        }
    })
}

/// The sizes along the cut axis of a Slice's `tops` parts: between the points, or equal
/// parts without points (Caffe's rules: one point fewer than the tops, increasing, inside
/// the axis; equal parts must divide it).
fn slice_parts(len: usize, points: &[usize], tops: usize) -> Result<Vec<usize>> {
    ensure!(tops >= 1, "a Slice needs a top");
    if points.is_empty() {
        ensure!(len.is_multiple_of(tops), "{len} values along the axis do not split into {tops} equal parts");
        return Ok(vec![len / tops; tops]);
    }
    ensure!(points.len() + 1 == tops, "{} slice points for {tops} tops (give one fewer than the tops)", points.len());
    let mut bounds = vec![0];
    bounds.extend_from_slice(points);
    bounds.push(len);
    ensure!(bounds.windows(2).all(|w| w[0] < w[1]), "slice points {points:?} must increase strictly inside the axis's {len} values");
    Ok(bounds.windows(2).map(|w| w[1] - w[0]).collect())
}

fn reshape(name: &str, bottom: &[usize], p: &ReshapeParam, declared_batch: usize, batch: usize) -> Result<Vec<usize>> {
    let rank = bottom.len();
    let start = if p.axis < 0 { p.axis + rank as i64 + 1 } else { p.axis };
    ensure!(start >= 0 && start as usize <= rank, "layer '{name}' (Reshape): axis {} out of range", p.axis);
    let start = start as usize;
    let end = if p.num_axes < 0 { rank } else { start + p.num_axes as usize };
    ensure!(end <= rank, "layer '{name}' (Reshape): num_axes {} out of range", p.num_axes);
    let mut dims = Vec::new();
    let mut infer = None;
    for (i, &d) in p.dims.iter().enumerate() {
        match d {
            0 => dims.push(
                *bottom
                    .get(start + i)
                    .with_context(|| format!("layer '{name}' (Reshape): dim 0 copies axis {} which does not exist", start + i))?,
            ),
            -1 => {
                ensure!(infer.is_none(), "layer '{name}' (Reshape): more than one -1 dim");
                infer = Some(dims.len());
                dims.push(1);
            }
            d if d > 0 => {
                // The declared batch stands for whatever batch the net runs at.
                let d = d as usize;
                dims.push(if start == 0 && i == 0 && d == declared_batch { batch } else { d });
            }
            d => bail!("layer '{name}' (Reshape): invalid dim {d}"),
        }
    }
    let mut top = bottom[..start].to_vec();
    top.extend_from_slice(&dims);
    top.extend_from_slice(&bottom[end..]);
    let have = product(bottom);
    let want = checked_len(&top).with_context(|| format!("layer '{name}' (Reshape): {} is too large", fmt_shape(&top)))?;
    if let Some(i) = infer {
        ensure!(
            want > 0 && have.is_multiple_of(want),
            "layer '{name}' (Reshape): cannot infer a dim for {} from {}",
            fmt_shape(&top),
            fmt_shape(bottom)
        );
        top[start + i] = have / want;
    }
    ensure!(
        product(&top) == have,
        "layer '{name}' (Reshape): {} has {} values, bottom {} has {have}",
        fmt_shape(&top),
        product(&top),
        fmt_shape(bottom)
    );
    Ok(top)
}
