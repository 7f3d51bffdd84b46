//! A net definition back into new-format prototxt text: what the ONNX importer stores in a
//! weights file, read back by the same parser as every Caffe deploy file.

use crate::ir::{Activation, EltwiseOp, LayerDef, LayerKind, LrnRegion, NetDef, PoolMethod, RoundMode};
use std::fmt::Write;

fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn netdef_to_prototxt(def: &NetDef) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "name: {}", quoted(&def.name));
    for input in &def.inputs {
        let _ = writeln!(out, "input: {}", quoted(&input.name));
        let dims: String = input.shape.iter().map(|d| format!(" dim: {d}")).collect();
        let _ = writeln!(out, "input_shape {{{dims} }}");
    }
    for layer in &def.layers {
        write_layer(&mut out, layer);
    }
    out
}

fn pair(out: &mut String, name: &str, v: [usize; 2]) {
    let _ = write!(out, " {name}_h: {} {name}_w: {}", v[0], v[1]);
}

fn write_layer(out: &mut String, layer: &LayerDef) {
    let _ = writeln!(out, "layer {{");
    let _ = writeln!(out, "  name: {}", quoted(&layer.name));
    let _ = writeln!(out, "  type: \"{}\"", layer.kind.type_name());
    for b in &layer.bottoms {
        let _ = writeln!(out, "  bottom: {}", quoted(b));
    }
    for t in &layer.tops {
        let _ = writeln!(out, "  top: {}", quoted(t));
    }
    let mut p = String::new();
    let block = match &layer.kind {
        LayerKind::Convolution(c) | LayerKind::Deconvolution(c) => {
            let _ = write!(p, " num_output: {}", c.num_output);
            pair(&mut p, "kernel", c.kernel);
            pair(&mut p, "stride", c.stride);
            pair(&mut p, "pad", c.pad);
            let _ = write!(p, " dilation: {} dilation: {} group: {} bias_term: {}", c.dilation[0], c.dilation[1], c.group, c.bias_term);
            "convolution_param"
        }
        LayerKind::InnerProduct(ip) => {
            let _ = write!(p, " num_output: {} bias_term: {} axis: {}", ip.num_output, ip.bias_term, ip.axis);
            "inner_product_param"
        }
        LayerKind::ReLU { negative_slope } => {
            let _ = write!(p, " negative_slope: {negative_slope}");
            "relu_param"
        }
        LayerKind::Activation(Activation::HardSigmoid { alpha, beta }) => {
            let _ = write!(p, " alpha: {alpha} beta: {beta}");
            "hard_sigmoid_param"
        }
        LayerKind::Activation(Activation::Clip { min, max }) => {
            let _ = write!(p, " min: {min} max: {max}");
            "clip_param"
        }
        LayerKind::Activation(Activation::Sigmoid | Activation::HardSwish | Activation::Erf) => "",
        LayerKind::Pooling(pp) => {
            let method = if pp.method == PoolMethod::Max { "MAX" } else { "AVE" };
            let _ = write!(p, " pool: {method}");
            if pp.global {
                p.push_str(" global_pooling: true");
            } else {
                pair(&mut p, "kernel", pp.kernel);
                pair(&mut p, "stride", pp.stride);
                pair(&mut p, "pad", pp.pad);
            }
            if pp.round_mode == RoundMode::Floor {
                p.push_str(" round_mode: FLOOR");
            }
            if pp.exclude_pad {
                p.push_str(" exclude_pad: true");
            }
            "pooling_param"
        }
        LayerKind::Pad(q) => {
            let _ =
                write!(p, " pad_t: {} pad_l: {} pad_b: {} pad_r: {} value: {}", q.before[0], q.before[1], q.after[0], q.after[1], q.value);
            "pad_param"
        }
        LayerKind::ShuffleChannel { group } => {
            let _ = write!(p, " group: {group}");
            "shuffle_channel_param"
        }
        LayerKind::Lrn(l) => {
            let region = if l.region == LrnRegion::AcrossChannels { "ACROSS_CHANNELS" } else { "WITHIN_CHANNEL" };
            let _ = write!(p, " local_size: {} alpha: {} beta: {} k: {} norm_region: {region}", l.local_size, l.alpha, l.beta, l.k);
            "lrn_param"
        }
        LayerKind::Softmax { axis } => {
            let _ = write!(p, " axis: {axis}");
            "softmax_param"
        }
        LayerKind::Reshape(r) => {
            let dims: String = r.dims.iter().map(|d| format!(" dim: {d}")).collect();
            let _ = write!(p, " shape {{{dims} }} axis: {} num_axes: {}", r.axis, r.num_axes);
            "reshape_param"
        }
        LayerKind::Flatten { axis, end_axis } => {
            let _ = write!(p, " axis: {axis} end_axis: {end_axis}");
            "flatten_param"
        }
        LayerKind::Concat { axis } => {
            let _ = write!(p, " axis: {axis}");
            "concat_param"
        }
        LayerKind::Slice { axis, points } => {
            let _ = write!(p, " axis: {axis}");
            for point in points {
                let _ = write!(p, " slice_point: {point}");
            }
            "slice_param"
        }
        LayerKind::Eltwise(e) => {
            let op = match e.op {
                EltwiseOp::Sum => "SUM",
                EltwiseOp::Prod => "PROD",
                EltwiseOp::Max => "MAX",
            };
            let _ = write!(p, " operation: {op}");
            for c in &e.coeffs {
                let _ = write!(p, " coeff: {c}");
            }
            "eltwise_param"
        }
        LayerKind::BatchNorm { eps } => {
            let _ = write!(p, " use_global_stats: true eps: {eps}");
            "batch_norm_param"
        }
        LayerKind::Scale(s) => {
            let _ = write!(p, " axis: {} num_axes: {} bias_term: {}", s.axis, s.num_axes, s.bias_term);
            "scale_param"
        }
        LayerKind::Dropout | LayerKind::Split => "",
    };
    if !block.is_empty() {
        let _ = writeln!(out, "  {block} {{{p} }}");
    }
    let _ = writeln!(out, "}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caffe::netdef::{parse_netdef, read_netdef};
    use crate::ir::PadParam;

    /// Every shipped deploy file survives a trip through the writer unchanged.
    #[test]
    fn shipped_prototxts_round_trip() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
        let mut checked = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("prototxt") {
                continue;
            }
            let Ok(def) = read_netdef(&path) else { continue };
            let again = parse_netdef(&netdef_to_prototxt(&def)).unwrap();
            assert_eq!(again, def, "{}", path.display());
            checked += 1;
        }
        assert!(checked >= 2, "only {checked} prototxts found under {}", root.display());
    }

    /// Slice: its points and the legacy slice_dim come back as parsed; Caffe's own rule
    /// refuses both axis fields at once. (The shapes it gives are checked with the plan.)
    #[test]
    fn slice_layers_round_trip_and_both_axis_fields_are_refused() {
        let text = "input: 'x' input_shape { dim: 1 dim: 6 dim: 4 dim: 4 }\n\
            layer { name: 's' type: 'Slice' bottom: 'x' top: 'a' top: 'b' top: 'c' slice_param { axis: 1 slice_point: 1 slice_point: 4 } }\n\
            layer { name: 'l' type: 'Slice' bottom: 'a' top: 'l1' top: 'l2' slice_param { slice_dim: 3 } }\n";
        let def = parse_netdef(text).unwrap();
        assert_eq!(def.layers[0].kind, LayerKind::Slice { axis: 1, points: vec![1, 4] });
        assert_eq!(def.layers[1].kind, LayerKind::Slice { axis: 3, points: vec![] });
        assert_eq!(parse_netdef(&netdef_to_prototxt(&def)).unwrap(), def);
        let err = parse_netdef("layer { name: 's' type: 'Slice' bottom: 'x' top: 'a' slice_param { axis: 1 slice_dim: 1 } }").unwrap_err();
        assert!(format!("{err:#}").contains("give axis or the legacy slice_dim, not both"), "{err:#}");
    }

    /// The activations and the two-bottom Scale, infinite bounds included, come back as written.
    #[test]
    fn activations_and_two_bottom_scale_round_trip() {
        let text = "name: \"a\" input: \"x\" input_shape { dim: 2 dim: 3 dim: 4 dim: 4 }\n\
            layer { name: \"s\" type: \"Sigmoid\" bottom: \"x\" top: \"s\" }\n\
            layer { name: \"h\" type: \"HardSigmoid\" bottom: \"s\" top: \"h\" hard_sigmoid_param { alpha: 0.16666667 beta: 0.5 } }\n\
            layer { name: \"w\" type: \"HardSwish\" bottom: \"h\" top: \"w\" }\n\
            layer { name: \"c\" type: \"Clip\" bottom: \"w\" top: \"c\" clip_param { min: 0 max: 6 } }\n\
            layer { name: \"lo\" type: \"Clip\" bottom: \"c\" top: \"lo\" clip_param { min: -inf max: 0.25 } }\n\
            layer { name: \"g\" type: \"Pooling\" bottom: \"lo\" top: \"g\" pooling_param { pool: AVE global_pooling: true } }\n\
            layer { name: \"f\" type: \"Flatten\" bottom: \"g\" top: \"f\" }\n\
            layer { name: \"se\" type: \"Scale\" bottom: \"lo\" bottom: \"f\" top: \"se\" scale_param { axis: 0 } }\n\
            layer { name: \"p\" type: \"Pad\" bottom: \"se\" top: \"p\" pad_param { pad_t: 0 pad_l: 1 pad_b: 2 pad_r: 0 value: -inf } }\n\
            layer { name: \"crop\" type: \"Pad\" bottom: \"p\" top: \"crop\" pad_param { pad_t: -1 pad_l: 0 pad_b: 0 pad_r: -2 } }\n\
            layer { name: \"ex\" type: \"Pooling\" bottom: \"crop\" top: \"ex\" pooling_param { pool: AVE kernel_size: 3 pad: 1 exclude_pad: true } }\n";
        let def = parse_netdef(text).unwrap();
        let kinds: Vec<&LayerKind> = def.layers.iter().map(|l| &l.kind).collect();
        assert_eq!(kinds[1], &LayerKind::Activation(Activation::HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 }));
        assert_eq!(kinds[4], &LayerKind::Activation(Activation::Clip { min: f32::NEG_INFINITY, max: 0.25 }));
        assert_eq!(kinds[9], &LayerKind::Pad(PadParam { before: [-1, 0], after: [0, -2], value: 0.0 }));
        assert!(matches!(kinds[10], LayerKind::Pooling(p) if p.exclude_pad && p.method == PoolMethod::Ave));
        let written = netdef_to_prototxt(&def);
        assert_eq!(parse_netdef(&written).unwrap(), def, "{written}");
        // Caffe's clip_param needs both bounds; the default HardSigmoid is ONNX's.
        let err = parse_netdef("layer { name: 'c' type: 'Clip' bottom: 'x' top: 'c' clip_param { min: 0 } }").unwrap_err();
        assert!(format!("{err:#}").contains("clip_param: min and max are both required"), "{err:#}");
        let err = parse_netdef(
            "layer { name: 'm' type: 'Pooling' bottom: 'x' top: 'm' pooling_param { pool: MAX kernel_size: 2 exclude_pad: true } }",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("exclude_pad is for AVE pooling"), "{err:#}");
        let def = parse_netdef("layer { name: 'h' type: 'HardSigmoid' bottom: 'x' top: 'h' }").unwrap();
        assert_eq!(def.layers[0].kind, LayerKind::Activation(Activation::HardSigmoid { alpha: 0.2, beta: 0.5 }));
    }

    #[test]
    fn names_with_quotes_and_slashes_survive() {
        let text = "name: \"n\" input: \"in/put\" input_shape { dim: 1 dim: 2 }\n\
                    layer { name: \"a/\\\"b\\\\\" type: \"ReLU\" bottom: \"in/put\" top: \"a/\\\"b\\\\\" }";
        let def = parse_netdef(text).unwrap();
        assert_eq!(def.layers[0].name, "a/\"b\\");
        assert_eq!(parse_netdef(&netdef_to_prototxt(&def)).unwrap(), def);
    }
}
