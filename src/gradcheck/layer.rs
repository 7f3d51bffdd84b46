//! One layer of a net on its own, small: a net whose inputs are the layer's bottoms, at
//! their real channel counts, with height and width divided by the check's scale as far as
//! the layer allows.

use crate::graph::{BlobId, Plan};
use crate::ir::{InputDef, NetDef};
use crate::tensor::fmt_shape;
use anyhow::{bail, ensure, Result};

/// The plan that runs node `i` of `plan` (compiled from `def`) alone, its 4-axis bottoms'
/// height and width divided by `scale` (rounded up). The sizes grow back towards the real
/// ones until the layer compiles, its parameters keep their real shapes (an inner product's
/// weights fix its input size, so it runs at the real one) and each spatial axis of each
/// output has at least two entries (one where the real output has one), so strides and
/// pads are exercised.
pub fn alone(def: &NetDef, plan: &Plan, i: usize, scale: f64) -> Result<Plan> {
    let node = &plan.nodes[i];
    let layer = &def.layers[i];
    ensure!(layer.name == node.layer, "layer {i} of the definition is '{}', of the plan '{}'", layer.name, node.layer);
    let mut bottoms: Vec<BlobId> = Vec::new();
    for &b in &node.bottoms {
        if !bottoms.contains(&b) {
            bottoms.push(b);
        }
    }
    let real: Vec<&[usize]> = bottoms.iter().map(|&b| plan.blobs[b].shape.as_slice()).collect();
    let reduced = |d: usize| ((d as f64 / scale).ceil() as usize).clamp(1, d);
    // The net's declared batch, so a Reshape that names it keeps following the batch.
    let declared = def.inputs.first().and_then(|i| i.shape.first().copied()).unwrap_or(1);
    // How far each spatial axis has grown back: both while the layer does not compile or
    // its parameters change shape, each on its own while its outputs are too few.
    let (mut grow_h, mut grow_w) = (0, 0);
    let mut tried: Option<Vec<Vec<usize>>> = None;
    loop {
        let shapes: Vec<Vec<usize>> = real
            .iter()
            .map(|s| match s {
                [n, c, h, w] => vec![*n, *c, (reduced(*h) + grow_h).min(*h), (reduced(*w) + grow_w).min(*w)],
                _ => s.to_vec(),
            })
            .collect();
        if tried.as_ref() == Some(&shapes) {
            let shapes: Vec<String> = real.iter().map(|s| fmt_shape(s)).collect();
            bail!("layer '{}' ({}) does not compile on its own from bottoms {}", node.layer, node.type_name, shapes.join(", "));
        }
        let inputs = bottoms
            .iter()
            .zip(&shapes)
            .map(|(&b, s)| {
                let mut shape = s.clone();
                shape[0] = declared;
                InputDef { name: plan.blobs[b].name.clone(), shape }
            })
            .collect();
        let one = NetDef { name: format!("{} alone", layer.name), inputs, layers: vec![layer.clone()] };
        match Plan::new(&one, plan.batch).ok().filter(|small| same_params(small, plan, i)) {
            Some(small) => match too_few_outputs(&small, plan, i) {
                [false, false] => return Ok(small),
                [h, w] => (grow_h, grow_w) = (grow_h + h as usize, grow_w + w as usize),
            },
            None => (grow_h, grow_w) = (grow_h + 1, grow_w + 1),
        }
        tried = Some(shapes);
    }
}

/// Whether the small plan's only node has the parameter shapes of node `i` of `plan`.
fn same_params(small: &Plan, plan: &Plan, i: usize) -> bool {
    let (mine, real) = (&small.nodes[0], &plan.nodes[i]);
    mine.params.len() == real.params.len() && mine.params.iter().zip(&real.params).all(|(a, b)| a.shape == b.shape)
}

/// Along height and width: whether an output of the small plan's node has fewer than
/// min(2, real) entries.
fn too_few_outputs(small: &Plan, plan: &Plan, i: usize) -> [bool; 2] {
    let mut few = [false, false];
    for (&a, &b) in small.nodes[0].tops.iter().zip(&plan.nodes[i].tops) {
        if let ([_, _, h, w], [_, _, rh, rw]) = (small.blobs[a].shape.as_slice(), plan.blobs[b].shape.as_slice()) {
            few[0] |= *h < (*rh).min(2);
            few[1] |= *w < (*rw).min(2);
        }
    }
    few
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caffe::netdef::parse_netdef;

    fn plan_of(text: &str, batch: usize) -> (NetDef, Plan) {
        let def = parse_netdef(text).unwrap();
        let plan = Plan::new(&def, batch).unwrap();
        (def, plan)
    }

    fn input_shapes(p: &Plan) -> Vec<Vec<usize>> {
        p.inputs.iter().map(|&i| p.blobs[i].shape.clone()).collect()
    }

    #[test]
    fn spatial_sizes_shrink_as_far_as_the_layer_allows() {
        let (def, plan) = plan_of(
            "input: 'data' input_shape { dim: 1 dim: 3 dim: 227 dim: 227 }
             layer { name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1' convolution_param { num_output: 8 kernel_size: 11 stride: 4 } }
             layer { name: 'relu1' type: 'ReLU' bottom: 'conv1' top: 'conv1' }
             layer { name: 'pool1' type: 'Pooling' bottom: 'conv1' top: 'pool1' pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
             layer { name: 'fc' type: 'InnerProduct' bottom: 'pool1' top: 'fc' inner_product_param { num_output: 5 } }",
            2,
        );
        // 227 / 8 = 29 gives conv1 5x5 outputs; the in-place ReLU reads conv1's 55x55.
        assert_eq!(input_shapes(&alone(&def, &plan, 0, 8.0).unwrap()), vec![vec![2, 3, 29, 29]]);
        assert_eq!(input_shapes(&alone(&def, &plan, 1, 8.0).unwrap()), vec![vec![2, 8, 7, 7]]);
        // 55 / 100 would be 1: grown to 4, the smallest that gives 2x2 windows (the second
        // one clipped, as Caffe's ceil rounding does).
        assert_eq!(input_shapes(&alone(&def, &plan, 2, 100.0).unwrap()), vec![vec![2, 8, 4, 4]]);
        // The inner product's weights fix its input at the real 27x27.
        assert_eq!(input_shapes(&alone(&def, &plan, 3, 8.0).unwrap()), vec![vec![2, 8, 27, 27]]);
        // Scale 1: the real sizes.
        assert_eq!(input_shapes(&alone(&def, &plan, 0, 1.0).unwrap()), vec![vec![2, 3, 227, 227]]);
    }

    #[test]
    fn a_blob_read_twice_is_one_input_and_a_reshape_follows_the_batch() {
        let (def, plan) = plan_of(
            "input: 'data' input_shape { dim: 1 dim: 16 }
             layer { name: 'r' type: 'Reshape' bottom: 'data' top: 'r' reshape_param { shape { dim: 1 dim: 4 dim: 2 dim: 2 } } }
             layer { name: 'e' type: 'Eltwise' bottom: 'r' bottom: 'r' top: 'e' eltwise_param { operation: PROD } }",
            3,
        );
        let r = alone(&def, &plan, 0, 8.0).unwrap();
        assert_eq!(r.blobs[r.last_output()].shape, vec![3, 4, 2, 2]);
        let e = alone(&def, &plan, 1, 2.0).unwrap();
        assert_eq!(input_shapes(&e), vec![vec![3, 4, 2, 2]]);
        assert_eq!(e.nodes[0].bottoms.len(), 2);
    }
}
