//! The prototxt tree turned into the typed [`NetDef`], with Caffe's defaults and checks.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::prototxt::{self, Field, Message, Value};
use super::{
    Activation, ConvParam, EltwiseOp, EltwiseParam, InnerProductParam, InputDef, LayerDef, LayerKind, LrnParam, LrnRegion, NetDef,
    PadParam, PoolMethod, PoolParam, ReshapeParam, RoundMode, ScaleParam,
};

/// V1LayerParameter.LayerType as (number, enum name, new-format type name), from
/// caffe.proto and the names Caffe's own upgrade (upgrade_proto.cpp) gives them.
const V1_LAYER_TYPES: [(u64, &str, &str); 40] = [
    (0, "NONE", ""),
    (1, "ACCURACY", "Accuracy"),
    (2, "BNLL", "BNLL"),
    (3, "CONCAT", "Concat"),
    (4, "CONVOLUTION", "Convolution"),
    (5, "DATA", "Data"),
    (6, "DROPOUT", "Dropout"),
    (7, "EUCLIDEAN_LOSS", "EuclideanLoss"),
    (8, "FLATTEN", "Flatten"),
    (9, "HDF5_DATA", "HDF5Data"),
    (10, "HDF5_OUTPUT", "HDF5Output"),
    (11, "IM2COL", "Im2col"),
    (12, "IMAGE_DATA", "ImageData"),
    (13, "INFOGAIN_LOSS", "InfogainLoss"),
    (14, "INNER_PRODUCT", "InnerProduct"),
    (15, "LRN", "LRN"),
    (16, "MULTINOMIAL_LOGISTIC_LOSS", "MultinomialLogisticLoss"),
    (17, "POOLING", "Pooling"),
    (18, "RELU", "ReLU"),
    (19, "SIGMOID", "Sigmoid"),
    (20, "SOFTMAX", "Softmax"),
    (21, "SOFTMAX_LOSS", "SoftmaxWithLoss"),
    (22, "SPLIT", "Split"),
    (23, "TANH", "TanH"),
    (24, "WINDOW_DATA", "WindowData"),
    (25, "ELTWISE", "Eltwise"),
    (26, "POWER", "Power"),
    (27, "SIGMOID_CROSS_ENTROPY_LOSS", "SigmoidCrossEntropyLoss"),
    (28, "HINGE_LOSS", "HingeLoss"),
    (29, "MEMORY_DATA", "MemoryData"),
    (30, "ARGMAX", "ArgMax"),
    (31, "THRESHOLD", "Threshold"),
    (32, "DUMMY_DATA", "DummyData"),
    (33, "SLICE", "Slice"),
    (34, "MVN", "MVN"),
    (35, "ABSVAL", "AbsVal"),
    (36, "SILENCE", "Silence"),
    (37, "CONTRASTIVE_LOSS", "ContrastiveLoss"),
    (38, "EXP", "Exp"),
    (39, "DECONVOLUTION", "Deconvolution"),
];

/// V0 (pre-2014) type strings and their new-format names, as Caffe upgrades them.
const V0_LAYER_TYPES: [(&str, &str); 24] = [
    ("accuracy", "Accuracy"),
    ("bnll", "BNLL"),
    ("concat", "Concat"),
    ("conv", "Convolution"),
    ("data", "Data"),
    ("dropout", "Dropout"),
    ("euclidean_loss", "EuclideanLoss"),
    ("flatten", "Flatten"),
    ("hdf5_data", "HDF5Data"),
    ("hdf5_output", "HDF5Output"),
    ("im2col", "Im2col"),
    ("images", "ImageData"),
    ("infogain_loss", "InfogainLoss"),
    ("innerproduct", "InnerProduct"),
    ("lrn", "LRN"),
    ("multinomial_logistic_loss", "MultinomialLogisticLoss"),
    ("pool", "Pooling"),
    ("relu", "ReLU"),
    ("sigmoid", "Sigmoid"),
    ("softmax", "Softmax"),
    ("softmax_loss", "SoftmaxWithLoss"),
    ("split", "Split"),
    ("tanh", "TanH"),
    ("window_data", "WindowData"),
];

/// The new-format type name of a V1 `LayerType` enum number (as stored in a caffemodel).
pub fn v1_type_name_by_number(number: u64) -> Option<&'static str> {
    V1_LAYER_TYPES.iter().find(|t| t.0 == number).map(|t| t.2)
}

/// The new-format type name of a V1 `LayerType` enum name (as written in a prototxt).
pub fn v1_type_name(enum_name: &str) -> Option<&'static str> {
    V1_LAYER_TYPES.iter().find(|t| t.1 == enum_name).map(|t| t.2)
}

/// The new-format type name of a V0 type string.
pub fn v0_type_name(v0_name: &str) -> Option<&'static str> {
    V0_LAYER_TYPES.iter().find(|t| t.0 == v0_name).map(|t| t.1)
}

/// Parses a deploy prototxt (new, V1 or V0 format) into a [`NetDef`] for the TEST phase.
pub fn parse_netdef(text: &str) -> Result<NetDef> {
    netdef_from_message(&prototxt::parse(text)?)
}

/// [`parse_netdef`] on a file; errors name the file.
pub fn read_netdef(path: &Path) -> Result<NetDef> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_netdef(&text).map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

pub fn netdef_from_message(root: &Message) -> Result<NetDef> {
    let name = root.get_str("name")?.unwrap_or_default().to_string();
    let mut inputs = top_level_inputs(root)?;
    let new_layers = root.get_msgs("layer")?;
    let v1_layers = root.get_msgs("layers")?;
    if !new_layers.is_empty() && !v1_layers.is_empty() {
        bail!("the net mixes new-format 'layer' and legacy 'layers' entries");
    }
    let mut layers = Vec::new();
    let entries = new_layers.iter().map(|m| (m, Format::New)).chain(v1_layers.iter().map(|m| (m, Format::V1)));
    for (index, (message, format)) in entries.enumerate() {
        let layer = RawLayer::read(message, format).map_err(|e| anyhow!("layer #{}: {e:#}", index + 1))?;
        if !layer.included {
            continue;
        }
        let Some(name) = layer.name.clone() else {
            bail!("layer #{} (type '{}') has no name", index + 1, layer.written_type);
        };
        let converted = layer.convert(name.clone()).map_err(|e| anyhow!("layer '{name}': {e:#}"))?;
        match converted {
            Converted::Inputs(mut declared) => inputs.append(&mut declared),
            Converted::Layer(layer) => layers.push(layer),
        }
    }
    let mut seen = HashSet::new();
    for layer in &layers {
        if !seen.insert(layer.name.as_str()) {
            bail!("layer '{}': the name is used by more than one layer", layer.name);
        }
    }
    Ok(NetDef { name, inputs, layers })
}

/// `input: "data"` with either `input_shape { dim ... }` or four `input_dim:` per input.
fn top_level_inputs(root: &Message) -> Result<Vec<InputDef>> {
    let names = root.get_strs("input")?;
    let shapes = root.get_msgs("input_shape")?;
    let dims = root.get_i64s("input_dim")?;
    let shapes: Vec<Vec<i64>> = match (shapes.is_empty(), dims.is_empty()) {
        (true, true) => Vec::new(),
        (false, false) => bail!("the net gives both input_shape and input_dim"),
        (false, true) => shapes.iter().map(|s| s.get_i64s("dim")).collect::<Result<_>>()?,
        (true, false) => {
            if dims.len() != 4 * names.len() {
                bail!("{} input_dim values for {} inputs; each input takes exactly 4", dims.len(), names.len());
            }
            dims.chunks(4).map(<[i64]>::to_vec).collect()
        }
    };
    if shapes.len() != names.len() {
        bail!("{} inputs but {} input shapes", names.len(), shapes.len());
    }
    names.iter().zip(&shapes).map(|(name, dims)| input_def(name, dims)).collect()
}

fn input_def(name: &str, dims: &[i64]) -> Result<InputDef> {
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow!("input '{name}': shape {dims:?} must have positive dimensions"))?;
    if shape.is_empty() {
        bail!("input '{name}': the shape has no dimensions");
    }
    Ok(InputDef { name: name.to_string(), shape })
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    New,
    V1,
}

enum Converted {
    Inputs(Vec<InputDef>),
    Layer(LayerDef),
}

/// A layer entry read into one shape for all three formats: the new-format type name and
/// a message holding the `*_param` blocks (built from the flat fields for V0).
struct RawLayer<'a> {
    name: Option<String>,
    /// The type as written, for error messages.
    written_type: String,
    type_name: Option<&'static str>,
    bottoms: Vec<String>,
    tops: Vec<String>,
    params: Cow<'a, Message>,
    included: bool,
}

impl<'a> RawLayer<'a> {
    fn read(message: &'a Message, format: Format) -> Result<Self> {
        let bottoms = message.get_strs("bottom")?.into_iter().map(str::to_string).collect();
        let tops = message.get_strs("top")?.into_iter().map(str::to_string).collect();
        // A V0 entry nests the real layer: `layers { layer { name type ... } bottom top }`.
        let v0 = if format == Format::V1 { message.get("layer")? } else { None };
        if let Some(v0) = v0 {
            let v0_message = v0.as_msg()?;
            let name = layer_name(v0_message)?;
            let written_type = v0_message.get_str("type")?.unwrap_or_default().to_string();
            let type_name = v0_type_name(&written_type);
            let params = Cow::Owned(v0_params(v0, type_name.unwrap_or_default())?);
            return Ok(RawLayer { name, written_type, type_name, bottoms, tops, params, included: true });
        }
        let name = layer_name(message)?;
        let (written_type, type_name) = match format {
            Format::New => {
                let written = message.get_str("type")?.unwrap_or_default();
                (written.to_string(), Some(static_type_name(written)))
            }
            Format::V1 => {
                let written = message.get_enum("type")?.unwrap_or_default();
                (written.to_string(), v1_type_name(written))
            }
        };
        let included = included_in_test_phase(message)?;
        Ok(RawLayer { name, written_type, type_name, bottoms, tops, params: Cow::Borrowed(message), included })
    }

    fn convert(self, name: String) -> Result<Converted> {
        if self.written_type.is_empty() {
            bail!("no layer type given");
        }
        let unsupported = || anyhow!("unsupported layer type '{}'", self.written_type);
        let type_name = self.type_name.ok_or_else(unsupported)?;
        if type_name == "Input" {
            return Ok(Converted::Inputs(self.input_layer()?));
        }
        let p = &*self.params;
        let (kind, bottoms, tops) = match type_name {
            "Convolution" => (LayerKind::Convolution(conv_param(p)?), ONE, ONE),
            "Deconvolution" => (LayerKind::Deconvolution(conv_param(p)?), ONE, ONE),
            "InnerProduct" => (LayerKind::InnerProduct(inner_product_param(p)?), ONE, ONE),
            "ReLU" => {
                let negative_slope = block(p, "relu_param")?.get_f32("negative_slope")?.unwrap_or(0.0);
                (LayerKind::ReLU { negative_slope }, ONE, ONE)
            }
            "Sigmoid" => (LayerKind::Activation(Activation::Sigmoid), ONE, ONE),
            "HardSigmoid" => {
                let h = block(p, "hard_sigmoid_param")?;
                let alpha = h.get_f32("alpha")?.unwrap_or(0.2);
                let beta = h.get_f32("beta")?.unwrap_or(0.5);
                (LayerKind::Activation(Activation::HardSigmoid { alpha, beta }), ONE, ONE)
            }
            "HardSwish" => (LayerKind::Activation(Activation::HardSwish), ONE, ONE),
            "Erf" => (LayerKind::Activation(Activation::Erf), ONE, ONE),
            "Clip" => {
                let c = block(p, "clip_param")?;
                let (Some(min), Some(max)) = (c.get_f32("min")?, c.get_f32("max")?) else {
                    bail!("clip_param: min and max are both required");
                };
                (LayerKind::Activation(Activation::Clip { min, max }), ONE, ONE)
            }
            "Dropout" => (LayerKind::Dropout, ONE, ONE),
            "Pooling" => (LayerKind::Pooling(pool_param(p)?), ONE, ONE),
            "LRN" => (LayerKind::Lrn(lrn_param(p)?), ONE, ONE),
            "Pad" => {
                let q = block(p, "pad_param")?;
                let side = |s: &str| -> Result<i64> { Ok(q.get_i64(&format!("pad_{s}"))?.unwrap_or(0)) };
                let (before, after) = ([side("t")?, side("l")?], [side("b")?, side("r")?]);
                (LayerKind::Pad(PadParam { before, after, value: q.get_f32("value")?.unwrap_or(0.0) }), ONE, ONE)
            }
            "ShuffleChannel" => {
                let group = block(p, "shuffle_channel_param")?.get_i64("group")?.unwrap_or(1);
                anyhow::ensure!(group >= 1, "shuffle_channel_param: group {group} must be at least 1");
                (LayerKind::ShuffleChannel { group: group as usize }, ONE, ONE)
            }
            "Softmax" => {
                let axis = block(p, "softmax_param")?.get_i64("axis")?.unwrap_or(1);
                (LayerKind::Softmax { axis }, ONE, ONE)
            }
            "Reshape" => (LayerKind::Reshape(reshape_param(p)?), ONE, ONE),
            "Flatten" => {
                let f = block(p, "flatten_param")?;
                let axis = f.get_i64("axis")?.unwrap_or(1);
                let end_axis = f.get_i64("end_axis")?.unwrap_or(-1);
                (LayerKind::Flatten { axis, end_axis }, ONE, ONE)
            }
            "Concat" => (LayerKind::Concat { axis: concat_axis(p)? }, (1, usize::MAX), ONE),
            "Slice" => {
                let (axis, points) = slice_param(p)?;
                (LayerKind::Slice { axis, points }, ONE, (1, usize::MAX))
            }
            "Eltwise" => (LayerKind::Eltwise(eltwise_param(p, self.bottoms.len())?), (2, usize::MAX), ONE),
            "BatchNorm" => {
                let eps = block(p, "batch_norm_param")?.get_f32("eps")?.unwrap_or(1e-5);
                if eps.is_nan() || eps <= 0.0 {
                    bail!("batch_norm_param: eps must be positive, got {eps}");
                }
                (LayerKind::BatchNorm { eps }, ONE, ONE)
            }
            "Scale" => (LayerKind::Scale(scale_param(p)?), (1, 2), ONE),
            "Split" => (LayerKind::Split, ONE, (1, usize::MAX)),
            _ => return Err(unsupported()),
        };
        check_count("bottom", &self.bottoms, bottoms)?;
        check_count("top", &self.tops, tops)?;
        Ok(Converted::Layer(LayerDef { name, kind, bottoms: self.bottoms, tops: self.tops }))
    }

    /// `Input` layers declare net inputs: one shape for all tops, or one per top.
    fn input_layer(&self) -> Result<Vec<InputDef>> {
        let input_param = block(&self.params, "input_param")?;
        let shapes = input_param.get_msgs("shape")?;
        if self.tops.is_empty() {
            bail!("an Input layer needs a top");
        }
        if shapes.len() != 1 && shapes.len() != self.tops.len() {
            bail!("input_param gives {} shapes for {} tops", shapes.len(), self.tops.len());
        }
        self.tops
            .iter()
            .enumerate()
            .map(|(i, top)| {
                let shape = shapes.get(i).or(shapes.first()).ok_or_else(|| anyhow!("input_param has no shape"))?;
                input_def(top, &shape.get_i64s("dim")?)
            })
            .collect()
    }
}

/// Allowed (min, max) counts of bottoms or tops.
const ONE: (usize, usize) = (1, 1);

fn check_count(what: &str, blobs: &[String], (min, max): (usize, usize)) -> Result<()> {
    let n = blobs.len();
    if n < min || n > max {
        let wanted = match (min, max) {
            (min, max) if min == max => format!("exactly {min}"),
            (min, usize::MAX) => format!("at least {min}"),
            (min, max) => format!("{min} to {max}"),
        };
        bail!("takes {wanted} {what}(s), got {n}");
    }
    Ok(())
}

fn layer_name(message: &Message) -> Result<Option<String>> {
    Ok(message.get_str("name")?.filter(|n| !n.is_empty()).map(str::to_string))
}

/// New-format type names we know, as 'static strings; anything else stays unsupported.
fn static_type_name(written: &str) -> &'static str {
    const KNOWN: [&str; 24] = [
        "Erf",
        "Pad",
        "Slice",
        "ShuffleChannel",
        "Input",
        "Convolution",
        "Deconvolution",
        "InnerProduct",
        "ReLU",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Clip",
        "Dropout",
        "Pooling",
        "LRN",
        "Softmax",
        "Reshape",
        "Flatten",
        "Concat",
        "Eltwise",
        "BatchNorm",
        "Scale",
        "Split",
    ];
    KNOWN.iter().find(|&&k| k == written).copied().unwrap_or("")
}

/// Caffe's NetStateRule for a TEST-phase state with level 0 and no stages.
fn included_in_test_phase(layer: &Message) -> Result<bool> {
    let includes = layer.get_msgs("include")?;
    let excludes = layer.get_msgs("exclude")?;
    if !includes.is_empty() && !excludes.is_empty() {
        bail!("a layer takes include or exclude rules, not both");
    }
    if !includes.is_empty() {
        for rule in includes {
            if rule_matches_test_phase(rule)? {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    for rule in excludes {
        if rule_matches_test_phase(rule)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn rule_matches_test_phase(rule: &Message) -> Result<bool> {
    match rule.get_enum("phase")? {
        None | Some("TEST") => {}
        Some("TRAIN") => return Ok(false),
        Some(other) => bail!("unknown phase '{other}'"),
    }
    let level_ok = rule.get_i64("min_level")?.is_none_or(|min| min <= 0) && rule.get_i64("max_level")?.is_none_or(|max| max >= 0);
    // With no stages in the state, a rule that requires one never matches.
    Ok(level_ok && !rule.has("stage"))
}

/// The V0 flat fields of one layer regrouped into the new `*_param` block, with the
/// renames Caffe's upgrade applies.
fn v0_params(v0: &Field, type_name: &str) -> Result<Message> {
    let (block_name, renames): (&str, &[(&str, &str)]) = match type_name {
        "Convolution" => (
            "convolution_param",
            &[
                ("num_output", "num_output"),
                ("biasterm", "bias_term"),
                ("pad", "pad"),
                ("kernelsize", "kernel_size"),
                ("group", "group"),
                ("stride", "stride"),
            ],
        ),
        "InnerProduct" => ("inner_product_param", &[("num_output", "num_output"), ("biasterm", "bias_term")]),
        "Pooling" => ("pooling_param", &[("pool", "pool"), ("kernelsize", "kernel_size"), ("pad", "pad"), ("stride", "stride")]),
        "LRN" => ("lrn_param", &[("local_size", "local_size"), ("alpha", "alpha"), ("beta", "beta"), ("k", "k")]),
        "Concat" => ("concat_param", &[("concat_dim", "concat_dim")]),
        _ => return Ok(Message::default()),
    };
    let fields = v0
        .as_msg()?
        .fields
        .iter()
        .filter_map(|f| renames.iter().find(|(old, _)| *old == f.name).map(|(_, new)| Field { name: new.to_string(), ..f.clone() }))
        .collect();
    let value = Value::Message(Message { fields });
    Ok(Message { fields: vec![Field { name: block_name.to_string(), value, pos: v0.pos }] })
}

/// A `*_param` block, or an empty one (all defaults) when absent.
fn block<'m>(layer: &'m Message, name: &str) -> Result<Cow<'m, Message>> {
    Ok(match layer.get_msg(name)? {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(Message::default()),
    })
}

/// A [height, width] pair from `name: v` (both), `name: h name: w` (new Caffe's repeated
/// form), or `{prefix}_h` + `{prefix}_w`.
fn spatial_pair(p: &Message, name: &str, prefix: &str) -> Result<Option<[usize; 2]>> {
    let values = p.get_usizes(name)?;
    let h = p.get_usize(&format!("{prefix}_h"))?;
    let w = p.get_usize(&format!("{prefix}_w"))?;
    match (values.as_slice(), h, w) {
        ([], None, None) => Ok(None),
        ([], Some(h), Some(w)) => Ok(Some([h, w])),
        ([], _, _) => bail!("{prefix}_h and {prefix}_w must be given together"),
        (_, Some(_), _) | (_, _, Some(_)) => {
            bail!("{name} cannot be combined with {prefix}_h/{prefix}_w")
        }
        ([v], None, None) => Ok(Some([*v, *v])),
        ([h, w], None, None) => Ok(Some([*h, *w])),
        (more, ..) => {
            bail!("{name} is given {} times; only 2-D (one or two values) is supported", more.len())
        }
    }
}

fn positive_pair(block_name: &str, what: &str, pair: [usize; 2]) -> Result<[usize; 2]> {
    if pair.contains(&0) {
        bail!("{block_name}: {what} must be positive, got {pair:?}");
    }
    Ok(pair)
}

fn conv_param(layer: &Message) -> Result<ConvParam> {
    const B: &str = "convolution_param";
    let p = block(layer, B)?;
    let num_output = p.get_usize("num_output")?.ok_or_else(|| anyhow!("{B}: num_output is required"))?;
    if num_output == 0 {
        bail!("{B}: num_output must be positive");
    }
    let pair = |name, prefix| spatial_pair(&p, name, prefix).map_err(|e| anyhow!("{B}: {e:#}"));
    let kernel = pair("kernel_size", "kernel")?.ok_or_else(|| anyhow!("{B}: kernel_size (or kernel_h and kernel_w) is required"))?;
    let kernel = positive_pair(B, "kernel size", kernel)?;
    let stride = positive_pair(B, "stride", pair("stride", "stride")?.unwrap_or([1, 1]))?;
    let pad = pair("pad", "pad")?.unwrap_or([0, 0]);
    let dilation = match p.get_usizes("dilation")?.as_slice() {
        [] => [1, 1],
        [d] => [*d, *d],
        [h, w] => [*h, *w],
        more => bail!("{B}: dilation is given {} times; only 2-D is supported", more.len()),
    };
    let dilation = positive_pair(B, "dilation", dilation)?;
    let group = p.get_usize("group")?.unwrap_or(1);
    if group == 0 || num_output % group != 0 {
        bail!("{B}: group {group} does not divide num_output {num_output}");
    }
    if let Some(axis) = p.get_i64("axis")?.filter(|&a| a != 1) {
        bail!("{B}: axis {axis} is not supported (only 1, the channel axis)");
    }
    let bias_term = p.get_bool("bias_term")?.unwrap_or(true);
    Ok(ConvParam { num_output, kernel, stride, pad, dilation, group, bias_term })
}

fn inner_product_param(layer: &Message) -> Result<InnerProductParam> {
    const B: &str = "inner_product_param";
    let p = block(layer, B)?;
    let num_output = p.get_usize("num_output")?.ok_or_else(|| anyhow!("{B}: num_output is required"))?;
    if num_output == 0 {
        bail!("{B}: num_output must be positive");
    }
    if p.get_bool("transpose")? == Some(true) {
        bail!("{B}: transpose: true is not supported");
    }
    let bias_term = p.get_bool("bias_term")?.unwrap_or(true);
    let axis = p.get_i64("axis")?.unwrap_or(1);
    Ok(InnerProductParam { num_output, bias_term, axis })
}

fn pool_param(layer: &Message) -> Result<PoolParam> {
    const B: &str = "pooling_param";
    let p = block(layer, B)?;
    let method = match p.get_enum("pool")?.unwrap_or("MAX") {
        "MAX" => PoolMethod::Max,
        "AVE" => PoolMethod::Ave,
        other => bail!("{B}: pool method {other} is not supported (MAX or AVE)"),
    };
    let round_mode = match p.get_enum("round_mode")?.unwrap_or("CEIL") {
        "CEIL" => RoundMode::Ceil,
        "FLOOR" => RoundMode::Floor,
        other => bail!("{B}: round_mode {other} is not supported (CEIL or FLOOR)"),
    };
    let global = p.get_bool("global_pooling")?.unwrap_or(false);
    let exclude_pad = p.get_bool("exclude_pad")?.unwrap_or(false);
    if exclude_pad && method == PoolMethod::Max {
        bail!("{B}: exclude_pad is for AVE pooling (MAX never counts the padding)");
    }
    let pair = |name, prefix| spatial_pair(&p, name, prefix).map_err(|e| anyhow!("{B}: {e:#}"));
    let kernel = pair("kernel_size", "kernel")?;
    let stride = positive_pair(B, "stride", pair("stride", "stride")?.unwrap_or([1, 1]))?;
    let pad = pair("pad", "pad")?.unwrap_or([0, 0]);
    if global {
        // The window is the whole input, known only once shapes are: kernel stays [0, 0].
        if kernel.is_some() {
            bail!("{B}: a kernel size cannot be given with global_pooling");
        }
        if pad != [0, 0] || stride != [1, 1] {
            bail!("{B}: global_pooling needs pad 0 and stride 1");
        }
        return Ok(PoolParam { method, kernel: [0, 0], stride, pad, global, round_mode, exclude_pad });
    }
    let kernel = kernel.ok_or_else(|| anyhow!("{B}: kernel_size (or kernel_h and kernel_w) is required"))?;
    let kernel = positive_pair(B, "kernel size", kernel)?;
    if pad[0] >= kernel[0] || pad[1] >= kernel[1] {
        bail!("{B}: pad {pad:?} must be smaller than the kernel {kernel:?}");
    }
    Ok(PoolParam { method, kernel, stride, pad, global, round_mode, exclude_pad })
}

fn lrn_param(layer: &Message) -> Result<LrnParam> {
    const B: &str = "lrn_param";
    let p = block(layer, B)?;
    let local_size = p.get_usize("local_size")?.unwrap_or(5);
    if local_size % 2 == 0 {
        bail!("{B}: local_size must be odd, got {local_size}");
    }
    let region = match p.get_enum("norm_region")?.unwrap_or("ACROSS_CHANNELS") {
        "ACROSS_CHANNELS" => LrnRegion::AcrossChannels,
        "WITHIN_CHANNEL" => LrnRegion::WithinChannel,
        other => bail!("{B}: unknown norm_region {other}"),
    };
    Ok(LrnParam {
        region,
        local_size,
        alpha: p.get_f32("alpha")?.unwrap_or(1.0),
        beta: p.get_f32("beta")?.unwrap_or(0.75),
        k: p.get_f32("k")?.unwrap_or(1.0),
    })
}

fn reshape_param(layer: &Message) -> Result<ReshapeParam> {
    const B: &str = "reshape_param";
    let p = block(layer, B)?;
    let dims = match p.get_msg("shape")? {
        Some(shape) => shape.get_i64s("dim")?,
        None => Vec::new(),
    };
    if let Some(bad) = dims.iter().find(|&&d| d < -1) {
        bail!("{B}: dimension {bad} is invalid (0 copies, -1 infers, else positive)");
    }
    if dims.iter().filter(|&&d| d == -1).count() > 1 {
        bail!("{B}: at most one dimension can be -1");
    }
    let axis = p.get_i64("axis")?.unwrap_or(0);
    let num_axes = p.get_i64("num_axes")?.unwrap_or(-1);
    if num_axes < -1 {
        bail!("{B}: num_axes must be -1 or more, got {num_axes}");
    }
    Ok(ReshapeParam { dims, axis, num_axes })
}

/// `slice_param`: the axis (or the legacy `slice_dim`) and the slice points.
fn slice_param(layer: &Message) -> Result<(i64, Vec<usize>)> {
    let p = block(layer, "slice_param")?;
    let axis = match (p.get_i64("axis")?, p.get_usize("slice_dim")?) {
        (Some(_), Some(_)) => bail!("slice_param: give axis or the legacy slice_dim, not both"),
        (Some(axis), None) => axis,
        (None, Some(dim)) => i64::try_from(dim).map_err(|_| anyhow!("slice_param: slice_dim {dim} is too large"))?,
        (None, None) => 1,
    };
    Ok((axis, p.get_usizes("slice_point")?))
}

fn concat_axis(layer: &Message) -> Result<i64> {
    let p = block(layer, "concat_param")?;
    match (p.get_i64("axis")?, p.get_usize("concat_dim")?) {
        (Some(_), Some(_)) => bail!("concat_param: give axis or the legacy concat_dim, not both"),
        (Some(axis), None) => Ok(axis),
        (None, Some(dim)) => i64::try_from(dim).map_err(|_| anyhow!("concat_param: concat_dim {dim} is too large")),
        (None, None) => Ok(1),
    }
}

fn eltwise_param(layer: &Message, bottom_count: usize) -> Result<EltwiseParam> {
    const B: &str = "eltwise_param";
    let p = block(layer, B)?;
    let op = match p.get_enum("operation")?.unwrap_or("SUM") {
        "SUM" => EltwiseOp::Sum,
        "PROD" => EltwiseOp::Prod,
        "MAX" => EltwiseOp::Max,
        other => bail!("{B}: unknown operation {other}"),
    };
    let coeffs = p.get_f32s("coeff")?;
    if !coeffs.is_empty() && op != EltwiseOp::Sum {
        bail!("{B}: coefficients are only allowed with SUM");
    }
    if !coeffs.is_empty() && coeffs.len() != bottom_count {
        bail!("{B}: {} coefficients for {bottom_count} bottoms", coeffs.len());
    }
    Ok(EltwiseParam { op, coeffs })
}

fn scale_param(layer: &Message) -> Result<ScaleParam> {
    let p = block(layer, "scale_param")?;
    let num_axes = p.get_i64("num_axes")?.unwrap_or(1);
    if num_axes < -1 {
        bail!("scale_param: num_axes must be -1 or more, got {num_axes}");
    }
    Ok(ScaleParam { axis: p.get_i64("axis")?.unwrap_or(1), num_axes, bias_term: p.get_bool("bias_term")?.unwrap_or(false) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    fn read(relative: &str) -> NetDef {
        read_netdef(&root().join(relative)).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn find<'a>(net: &'a NetDef, name: &str) -> &'a LayerDef {
        net.layers.iter().find(|l| l.name == name).unwrap_or_else(|| panic!("no layer {name}"))
    }

    fn conv(net: &NetDef, name: &str) -> ConvParam {
        match &find(net, name).kind {
            LayerKind::Convolution(p) | LayerKind::Deconvolution(p) => p.clone(),
            other => panic!("{name} is {other:?}"),
        }
    }

    fn error(text: &str) -> String {
        match parse_netdef(text) {
            Ok(net) => panic!("expected an error, got {net:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    fn input(name: &str, shape: &[usize]) -> InputDef {
        InputDef { name: name.to_string(), shape: shape.to_vec() }
    }

    fn prototxt_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                prototxt_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "prototxt") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_shipped_prototxt_parses() {
        let mut files = Vec::new();
        prototxt_files(&root().join("tests/fixtures/caffe"), &mut files);
        prototxt_files(&root().join("weights"), &mut files);
        assert!(files.len() >= 18, "{files:?}");
        for file in files {
            let net = read_netdef(&file).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(!net.inputs.is_empty() && !net.layers.is_empty(), "{}", file.display());
        }
    }

    #[test]
    fn caffenet() {
        let net = read("weights/caffenet.prototxt");
        assert_eq!(net.inputs, vec![input("data", &[1, 3, 227, 227])]);
        let names: Vec<_> = net.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"conv1"));
        assert_eq!(names.last(), Some(&"prob"));
        assert_eq!(names.len(), 21); // this deploy net has no Dropout layers
        let conv1 = conv(&net, "conv1");
        assert_eq!((conv1.num_output, conv1.kernel, conv1.stride, conv1.pad), (96, [11, 11], [4, 4], [0, 0]));
        let conv2 = conv(&net, "conv2");
        assert_eq!((conv2.group, conv2.pad, conv2.kernel, conv2.bias_term), (2, [2, 2], [5, 5], true));
        assert_eq!(
            find(&net, "norm1").kind,
            LayerKind::Lrn(LrnParam { region: LrnRegion::AcrossChannels, local_size: 5, alpha: 1e-4, beta: 0.75, k: 1.0 })
        );
        assert_eq!(
            find(&net, "pool5").kind,
            LayerKind::Pooling(PoolParam {
                method: PoolMethod::Max,
                kernel: [3, 3],
                stride: [2, 2],
                pad: [0, 0],
                global: false,
                round_mode: RoundMode::Ceil,
                exclude_pad: false
            })
        );
        assert_eq!(find(&net, "fc8").kind, LayerKind::InnerProduct(InnerProductParam { num_output: 1000, bias_term: true, axis: 1 }));
        assert_eq!(find(&net, "relu1").kind, LayerKind::ReLU { negative_slope: 0.0 });
        assert_eq!(
            (find(&net, "relu1").bottoms.as_slice(), find(&net, "relu1").tops.as_slice()),
            (&["conv1".to_string()][..], &["conv1".to_string()][..])
        );
        assert_eq!(find(&net, "prob").kind, LayerKind::Softmax { axis: 1 });
    }

    #[test]
    fn generators() {
        let fc6 = read("weights/generator-fc6.prototxt");
        assert_eq!(fc6.inputs, vec![input("feat", &[1, 4096])]);
        assert_eq!(find(&fc6, "reshape").kind, LayerKind::Reshape(ReshapeParam { dims: vec![1, 256, 4, 4], axis: 0, num_axes: -1 }));
        assert_eq!(find(&fc6, "reshape").tops, vec!["reshape_defc5".to_string()]);
        assert_eq!(find(&fc6, "relu_defc7").kind, LayerKind::ReLU { negative_slope: 0.3 });
        for name in ["deconv5", "deconv4", "deconv3", "deconv2", "deconv1", "deconv0"] {
            assert!(matches!(find(&fc6, name).kind, LayerKind::Deconvolution(_)), "{name}");
            let p = conv(&fc6, name);
            assert_eq!((p.stride, p.kernel, p.pad, p.group, p.dilation), ([2, 2], [4, 4], [1, 1], 1, [1, 1]), "{name}");
        }
        assert_eq!(conv(&fc6, "deconv0").num_output, 3);
        assert_eq!(conv(&fc6, "conv5_1").kernel, [3, 3]);
        for layer in fc6.layers.iter().filter(|l| l.kind.type_name() == "ReLU") {
            assert_eq!(layer.kind, LayerKind::ReLU { negative_slope: 0.3 }, "{}", layer.name);
        }
        let pool5 = read("weights/generator-pool5.prototxt");
        assert_eq!(pool5.inputs, vec![input("feat", &[1, 256, 6, 6])]);
        assert!(matches!(find(&pool5, "Rconv6").kind, LayerKind::Convolution(_)));
        let fc7 = read("weights/generator-fc7.prototxt");
        assert_eq!(fc7.layers.len(), fc6.layers.len());
    }

    #[test]
    fn v1_and_new_format_agree() {
        let v1 = read("tests/fixtures/caffe/lenet_mnist_v1/lenet.prototxt");
        let new = read("tests/fixtures/caffe/lenet_mnist/lenet.prototxt");
        assert_eq!(v1.inputs, vec![input("data", &[64, 1, 28, 28])]);
        assert_eq!(v1.inputs, new.inputs);
        assert_eq!(v1.layers, new.layers);
        assert_eq!(new.layers.len(), 8);
        assert_eq!(conv(&new, "conv2").num_output, 50);

        let v1 = read("tests/fixtures/caffe/cifar10_quick_v1/cifar10_quick.prototxt");
        let new = read("tests/fixtures/caffe/cifar10_quick_v1/cifar10_quick_newformat.prototxt");
        assert_eq!(v1.inputs, vec![input("data", &[1, 3, 32, 32])]);
        assert_eq!((v1.inputs.clone(), v1.layers.clone()), (new.inputs, new.layers));
        assert_eq!(conv(&v1, "conv1").pad, [2, 2]);
        let LayerKind::Pooling(pool2) = &find(&v1, "pool2").kind else { panic!() };
        assert_eq!((pool2.method, pool2.kernel, pool2.stride), (PoolMethod::Ave, [3, 3], [2, 2]));
    }

    #[test]
    fn opencv_layer_nets() {
        let dir = "tests/fixtures/caffe/opencv_layers";
        let net = read(&format!("{dir}/layer_convolution.prototxt"));
        assert_eq!(net.inputs, vec![input("input", &[2, 6, 75, 113])]);
        assert_eq!(net.layers.len(), 1);
        let p = conv(&net, "output");
        assert_eq!((p.num_output, p.kernel, p.pad, p.stride, p.group), (12, [4, 5], [0, 1], [2, 3], 3));
        let deconv = read(&format!("{dir}/layer_deconvolution.prototxt"));
        assert_eq!(deconv.layers[0].kind, LayerKind::Deconvolution(ConvParam { dilation: [1, 1], bias_term: true, ..p }));
        assert_eq!(deconv.inputs[0].shape, vec![2, 12, 36, 37]);

        let lrn = read(&format!("{dir}/layer_lrn_channels.prototxt"));
        assert_eq!(
            lrn.layers[0].kind,
            LayerKind::Lrn(LrnParam { region: LrnRegion::AcrossChannels, local_size: 5, alpha: 1.1, beta: 0.75, k: 1.0 })
        );
        let lrn = read(&format!("{dir}/layer_lrn_spatial.prototxt"));
        let LayerKind::Lrn(spatial) = &lrn.layers[0].kind else { panic!() };
        assert_eq!((spatial.region, spatial.alpha), (LrnRegion::WithinChannel, 0.9));

        let pool = read(&format!("{dir}/layer_pooling_ave.prototxt"));
        assert_eq!(
            pool.layers[0].kind,
            LayerKind::Pooling(PoolParam {
                method: PoolMethod::Ave,
                kernel: [3, 5],
                stride: [2, 1],
                pad: [2, 1],
                global: false,
                round_mode: RoundMode::Ceil,
                exclude_pad: false
            })
        );
        let ip = read(&format!("{dir}/layer_inner_product.prototxt"));
        assert_eq!(ip.layers[0].kind, LayerKind::InnerProduct(InnerProductParam { num_output: 2, bias_term: true, axis: 3 }));
        assert_eq!(read(&format!("{dir}/layer_softmax.prototxt")).layers[0].kind, LayerKind::Softmax { axis: 1 });
    }

    #[test]
    fn googlenet() {
        let net = read("weights/googlenet.prototxt");
        assert_eq!(net.inputs, vec![input("data", &[1, 3, 224, 224])]);
        let concats: Vec<_> = net.layers.iter().filter(|l| matches!(l.kind, LayerKind::Concat { axis: 1 })).collect();
        assert_eq!(concats.len(), 9);
        let output = find(&net, "inception_3a/output");
        assert_eq!(output.bottoms, ["inception_3a/1x1", "inception_3a/3x3", "inception_3a/5x5", "inception_3a/pool_proj"]);
        assert_eq!(conv(&net, "conv1/7x7_s2").pad, [3, 3]);
        assert_eq!(net.layers.last().map(|l| l.name.as_str()), Some("prob"));
        assert!(matches!(find(&net, "loss3/classifier").kind, LayerKind::InnerProduct(InnerProductParam { num_output: 1000, .. })));
    }

    #[test]
    fn places_v0() {
        let net = read("weights/places205.prototxt");
        assert_eq!(net.inputs, vec![input("data", &[1, 3, 227, 227])]);
        let caffenet = read("weights/caffenet.prototxt");
        let kinds = |n: &NetDef| n.layers.iter().map(|l| l.kind.type_name()).collect::<Vec<_>>();
        // Places-CNN is CaffeNet's architecture, apart from dropout layers and 205 classes.
        let places_kinds: Vec<_> = kinds(&net).into_iter().filter(|&k| k != "Dropout").collect();
        assert_eq!(places_kinds, kinds(&caffenet));
        let conv1 = conv(&net, "conv1");
        assert_eq!((conv1.num_output, conv1.kernel, conv1.stride, conv1.bias_term), (96, [11, 11], [4, 4], true));
        let conv2 = conv(&net, "conv2");
        assert_eq!((conv2.group, conv2.pad, conv2.kernel), (2, [2, 2], [5, 5]));
        assert_eq!(find(&net, "conv1").bottoms, ["data"]);
        assert_eq!(find(&net, "norm1").kind, find(&caffenet, "norm1").kind);
        assert_eq!(find(&net, "pool5").kind, find(&caffenet, "pool5").kind);
        assert!(matches!(find(&net, "fc8").kind, LayerKind::InnerProduct(InnerProductParam { num_output: 205, .. })));
    }

    #[test]
    fn inputs_in_every_form() {
        let net = parse_netdef(
            "input: 'a' input: 'b' input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 5 input_dim: 6 input_dim: 7 input_dim: 8\n\
             layer { name: 'r' type: 'ReLU' bottom: 'a' top: 'a' }",
        )
        .unwrap();
        assert_eq!(net.inputs, vec![input("a", &[1, 2, 3, 4]), input("b", &[5, 6, 7, 8])]);
        let net = parse_netdef("input: 'x' input_shape { dim: 2 dim: 7 } layer { name: 'in' type: 'Input' top: 'y' top: 'z' input_param { shape { dim: 3 } } }").unwrap();
        assert_eq!(net.inputs, vec![input("x", &[2, 7]), input("y", &[3]), input("z", &[3])]);
        assert!(net.layers.is_empty());
        assert!(error("input: 'a' input_dim: 1 input_dim: 2").contains("2 input_dim values for 1 inputs"));
        assert!(error("input: 'a'").contains("1 inputs but 0 input shapes"));
        assert!(error("input: 'a' input_shape { dim: 0 }").contains("input 'a': shape [0] must have positive dimensions"));
        assert!(error(
            "layer { name: 'in' type: 'Input' top: 'y' top: 'z' input_param { shape { dim: 3 } shape { dim: 3 } shape { dim: 1 } } }"
        )
        .contains("layer 'in': input_param gives 3 shapes for 2 tops"));
    }

    #[test]
    fn phase_rules() {
        let net = parse_netdef(
            "layer { name: 'train_only' type: 'Data' top: 'd' include { phase: TRAIN } }\n\
             layer { name: 'not_test' type: 'Accuracy' exclude { phase: TEST } }\n\
             layer { name: 'test_only' type: 'Dropout' bottom: 'd' top: 'd' include { phase: TEST } }\n\
             layer { name: 'staged' type: 'Nope' include { stage: 'deploy' } }\n\
             layer { type: 'Unnamed' include { phase: TRAIN } }\n\
             layer { name: 'kept' type: 'Dropout' bottom: 'd' top: 'd' exclude { phase: TRAIN } }\n\
             layers { name: 'v1_train' type: DATA include { phase: TRAIN } }",
        );
        assert!(net.unwrap_err().to_string().contains("mixes"));
        let net = parse_netdef(
            "layer { name: 'train_only' type: 'Data' top: 'd' include { phase: TRAIN } }\n\
             layer { name: 'not_test' type: 'Accuracy' exclude { phase: TEST } }\n\
             layer { name: 'test_only' type: 'Dropout' bottom: 'd' top: 'd' include { phase: TEST } }\n\
             layer { name: 'staged' type: 'Nope' include { stage: 'deploy' } }\n\
             layer { type: 'Unnamed' include { phase: TRAIN } }\n\
             layer { name: 'kept' type: 'Dropout' bottom: 'd' top: 'd' exclude { phase: TRAIN } }",
        )
        .unwrap();
        let names: Vec<_> = net.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["test_only", "kept"]);
        let v1 = parse_netdef(
            "layers { name: 'data' type: DATA include { phase: TRAIN } } layers { name: 'r' type: RELU bottom: 'x' top: 'x' }",
        )
        .unwrap();
        assert_eq!(v1.layers.len(), 1);
    }

    #[test]
    fn params_defaults_and_variants() {
        let net = parse_netdef(
            "layer { name: 'c' type: 'Convolution' bottom: 'x' top: 'c' convolution_param { num_output: 8 kernel_size: 3 kernel_size: 5 stride: 2 stride: 1 pad: [1, 2] dilation: 2 group: 4 bias_term: false } }\n\
             layer { name: 'g' type: 'Pooling' bottom: 'c' top: 'g' pooling_param { pool: AVE global_pooling: true } }\n\
             layer { name: 'f' type: 'Flatten' bottom: 'g' top: 'f' }\n\
             layer { name: 'cat' type: 'Concat' bottom: 'f' bottom: 'f' top: 'cat' concat_param { concat_dim: 0 } }\n\
             layer { name: 'e' type: 'Eltwise' bottom: 'cat' bottom: 'cat' top: 'e' eltwise_param { coeff: 1 coeff: -1 } }\n\
             layer { name: 'm' type: 'Eltwise' bottom: 'e' bottom: 'e' top: 'm' eltwise_param { operation: MAX } }\n\
             layer { name: 'bn' type: 'BatchNorm' bottom: 'm' top: 'm' }\n\
             layer { name: 's' type: 'Scale' bottom: 'm' top: 'm' scale_param { bias_term: true } }\n\
             layer { name: 'sp' type: 'Split' bottom: 'm' top: 'm1' top: 'm2' }\n\
             layer { name: 'r' type: 'Reshape' bottom: 'm1' top: 'r' reshape_param { shape { dim: 0 dim: -1 } axis: 1 num_axes: 2 } }\n\
             layer { name: 'sm' type: 'Softmax' bottom: 'r' top: 'sm' softmax_param { axis: -1 } }",
        )
        .unwrap();
        let kinds: Vec<_> = net.layers.iter().map(|l| l.kind.clone()).collect();
        assert_eq!(
            kinds[0],
            LayerKind::Convolution(ConvParam {
                num_output: 8,
                kernel: [3, 5],
                stride: [2, 1],
                pad: [1, 2],
                dilation: [2, 2],
                group: 4,
                bias_term: false
            })
        );
        assert_eq!(
            kinds[1],
            LayerKind::Pooling(PoolParam {
                method: PoolMethod::Ave,
                kernel: [0, 0],
                stride: [1, 1],
                pad: [0, 0],
                global: true,
                round_mode: RoundMode::Ceil,
                exclude_pad: false
            })
        );
        assert_eq!(kinds[2], LayerKind::Flatten { axis: 1, end_axis: -1 });
        assert_eq!(kinds[3], LayerKind::Concat { axis: 0 });
        assert_eq!(kinds[4], LayerKind::Eltwise(EltwiseParam { op: EltwiseOp::Sum, coeffs: vec![1.0, -1.0] }));
        assert_eq!(kinds[5], LayerKind::Eltwise(EltwiseParam { op: EltwiseOp::Max, coeffs: vec![] }));
        assert_eq!(kinds[6], LayerKind::BatchNorm { eps: 1e-5 });
        assert_eq!(kinds[7], LayerKind::Scale(ScaleParam { axis: 1, num_axes: 1, bias_term: true }));
        assert_eq!(kinds[8], LayerKind::Split);
        assert_eq!(kinds[9], LayerKind::Reshape(ReshapeParam { dims: vec![0, -1], axis: 1, num_axes: 2 }));
        assert_eq!(kinds[10], LayerKind::Softmax { axis: -1 });
    }

    #[test]
    fn v1_enum_table() {
        assert_eq!(v1_type_name("SOFTMAX_LOSS"), Some("SoftmaxWithLoss"));
        assert_eq!(v1_type_name_by_number(39), Some("Deconvolution"));
        assert_eq!(v1_type_name_by_number(18), Some("ReLU"));
        assert_eq!(v1_type_name_by_number(40), None);
        assert_eq!(v0_type_name("innerproduct"), Some("InnerProduct"));
        // Every number 0..=39 appears once.
        let mut numbers: Vec<_> = V1_LAYER_TYPES.iter().map(|t| t.0).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (0..40).collect::<Vec<_>>());
    }

    fn conv_layer(params: &str) -> String {
        format!("layer {{ name: 'conv1' type: 'Convolution' bottom: 'x' top: 'y' convolution_param {{ {params} }} }}")
    }

    #[test]
    fn bad_nets_are_clear_errors() {
        assert_eq!(error("layer { name: 'x1' type: 'Frobnicate' }"), "layer 'x1': unsupported layer type 'Frobnicate'");
        assert_eq!(error("layers { name: 'l' type: SOFTMAX_LOSS bottom: 'a' }"), "layer 'l': unsupported layer type 'SOFTMAX_LOSS'");
        assert_eq!(error("layers { name: 'l' type: WHATEVER }"), "layer 'l': unsupported layer type 'WHATEVER'");
        assert_eq!(error("layer { type: 'ReLU' bottom: 'a' top: 'a' }"), "layer #1 (type 'ReLU') has no name");
        assert_eq!(error("layer { name: 'n' bottom: 'a' }"), "layer 'n': no layer type given");
        assert!(error("layer { name: 'x1' type: 'ReLU'").contains("expected '}' to close the '{' of line 1, column 7"));
        assert_eq!(
            error("layer { name: 'c'\n type: 'Convolution' convolution_param { num_output: 1x } }"),
            "prototxt line 2, column 54: bad number '1x'"
        );
        assert_eq!(error("layer { name: 'oops }"), "prototxt line 1, column 15: unterminated string");
        assert_eq!(error(&conv_layer("kernel_size: 3")), "layer 'conv1': convolution_param: num_output is required");
        assert_eq!(error(&conv_layer("num_output: 0 kernel_size: 3")), "layer 'conv1': convolution_param: num_output must be positive");
        assert_eq!(
            error(&conv_layer("num_output: 4")),
            "layer 'conv1': convolution_param: kernel_size (or kernel_h and kernel_w) is required"
        );
        assert!(error(&conv_layer("num_output: 4 kernel_size: 0")).contains("kernel size must be positive, got [0, 0]"));
        assert!(error(&conv_layer("num_output: 4 kernel_size: 3 stride: 0")).contains("stride must be positive"));
        assert!(error(&conv_layer("num_output: 4 kernel_size: 3 group: 3"))
            .contains("layer 'conv1': convolution_param: group 3 does not divide num_output 4"));
        assert!(error(&conv_layer("num_output: 4 kernel_h: 3")).contains("kernel_h and kernel_w must be given together"));
        assert!(error(&conv_layer("num_output: 4 kernel_size: 3 kernel_w: 3")).contains("cannot be combined"));
        assert!(error(&conv_layer("num_output: 4 kernel_size: 3 kernel_size: 3 kernel_size: 3")).contains("only 2-D"));
        assert!(error(&conv_layer("num_output: -4 kernel_size: 3")).contains("layer 'conv1': prototxt line 1, column"));
        assert!(error(&conv_layer("num_output: 4 num_output: 5 kernel_size: 3")).contains("given more than once"));
        assert!(error("layer { name: 'p' type: 'Pooling' bottom: 'a' top: 'b' pooling_param { pool: STOCHASTIC kernel_size: 2 } }")
            .contains("STOCHASTIC is not supported"));
        assert!(error("layer { name: 'p' type: 'Pooling' bottom: 'a' top: 'b' pooling_param { kernel_size: 2 pad: 2 } }")
            .contains("must be smaller than the kernel"));
        assert!(error("layer { name: 'p' type: 'Pooling' bottom: 'a' top: 'b' pooling_param { global_pooling: true kernel_size: 2 } }")
            .contains("cannot be given with global_pooling"));
        assert!(
            error("layer { name: 'n' type: 'LRN' bottom: 'a' top: 'b' lrn_param { local_size: 4 } }").contains("local_size must be odd")
        );
        assert!(error(
            "layer { name: 'e' type: 'Eltwise' bottom: 'a' bottom: 'b' top: 'c' eltwise_param { operation: PROD coeff: 1 coeff: 1 } }"
        )
        .contains("only allowed with SUM"));
        assert!(error("layer { name: 'e' type: 'Eltwise' bottom: 'a' bottom: 'b' top: 'c' eltwise_param { coeff: 1 } }")
            .contains("1 coefficients for 2 bottoms"));
        assert!(error("layer { name: 'r' type: 'Reshape' bottom: 'a' top: 'b' reshape_param { shape { dim: -1 dim: -1 } } }")
            .contains("at most one"));
        assert!(error(
            "layer { name: 'i' type: 'InnerProduct' bottom: 'a' top: 'b' inner_product_param { num_output: 2 transpose: true } }"
        )
        .contains("transpose"));
        assert_eq!(error("layer { name: 'r' type: 'ReLU' bottom: 'a' }"), "layer 'r': takes exactly 1 top(s), got 0");
        assert!(error("layer { name: 'e' type: 'Eltwise' bottom: 'a' top: 'c' }").contains("at least 2 bottom(s), got 1"));
        assert!(error("layer { name: 'x' type: 'ReLU' bottom: 'a' top: 'a' } layer { name: 'x' type: 'ReLU' bottom: 'a' top: 'a' }")
            .contains("used by more than one layer"));
        assert!(error("layer { name: 'x' type: 'ReLU' bottom: 'a' top: 'a' include { phase: TEST } exclude { phase: TRAIN } }")
            .contains("not both"));
        assert!(error("layer { name: 'x' type: 3 }").contains("expects a quoted string, got '3'"));
    }
}
