//! A net as its definition declares it, in dgnam's own types: what the importers (Caffe
//! today) produce and the graph compiles.

/// One net as the deploy prototxt declares it. `Input` layers and the legacy top-level
/// `input:` fields both end up in `inputs`; `layers` keeps file order.
#[derive(Clone, Debug, PartialEq)]
pub struct NetDef {
    pub name: String,
    pub inputs: Vec<InputDef>,
    pub layers: Vec<LayerDef>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InputDef {
    pub name: String,
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LayerDef {
    pub name: String,
    pub kind: LayerKind,
    pub bottoms: Vec<String>,
    pub tops: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    Convolution(ConvParam),
    Deconvolution(ConvParam),
    InnerProduct(InnerProductParam),
    ReLU {
        negative_slope: f32,
    },
    /// Sigmoid, HardSigmoid, HardSwish and Clip: see [`Activation`].
    Activation(Activation),
    Dropout,
    Pooling(PoolParam),
    Pad(PadParam),
    /// `ShuffleChannel` (ShuffleNet's caffe fork): `shuffle_channel_param { group }`.
    ShuffleChannel {
        group: usize,
    },
    Lrn(LrnParam),
    Softmax {
        axis: i64,
    },
    Reshape(ReshapeParam),
    Flatten {
        axis: i64,
        end_axis: i64,
    },
    Concat {
        axis: i64,
    },
    /// Caffe's `Slice`: one bottom cut along `axis` into its tops, at `points` (one fewer
    /// than the tops) or, with no points, into equal parts.
    Slice {
        axis: i64,
        points: Vec<usize>,
    },
    Eltwise(EltwiseParam),
    BatchNorm {
        eps: f32,
    },
    Scale(ScaleParam),
    Split,
}

impl LayerKind {
    /// The Caffe type name, as written in new-format prototxts.
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerKind::Convolution(_) => "Convolution",
            LayerKind::Deconvolution(_) => "Deconvolution",
            LayerKind::InnerProduct(_) => "InnerProduct",
            LayerKind::ReLU { .. } => "ReLU",
            LayerKind::Activation(a) => a.type_name(),
            LayerKind::Dropout => "Dropout",
            LayerKind::Pooling(_) => "Pooling",
            LayerKind::Pad(_) => "Pad",
            LayerKind::ShuffleChannel { .. } => "ShuffleChannel",
            LayerKind::Lrn(_) => "LRN",
            LayerKind::Softmax { .. } => "Softmax",
            LayerKind::Reshape(_) => "Reshape",
            LayerKind::Flatten { .. } => "Flatten",
            LayerKind::Concat { .. } => "Concat",
            LayerKind::Slice { .. } => "Slice",
            LayerKind::Eltwise(_) => "Eltwise",
            LayerKind::BatchNorm { .. } => "BatchNorm",
            LayerKind::Scale(_) => "Scale",
            LayerKind::Split => "Split",
        }
    }
}

/// The element-wise functions of one blob beside ReLU, each its own layer type (the ONNX
/// ops MobileNet v3 and EfficientNet use).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `Sigmoid` (Caffe's own): y = 1 / (1 + exp(-x)).
    Sigmoid,
    /// `HardSigmoid` with `hard_sigmoid_param { alpha beta }` (ONNX's defaults 0.2 and 0.5):
    /// y = max(0, min(1, alpha * x + beta)).
    HardSigmoid { alpha: f32, beta: f32 },
    /// `HardSwish` (no parameters): y = x * max(0, min(1, x / 6 + 1/2)), as ONNX and PyTorch.
    HardSwish,
    /// `Clip` with `clip_param { min max }` (BVLC Caffe's Clip layer): y = min(max(x, min), max).
    /// ReLU6 is Clip(0, 6); an absent bound is an infinite one.
    Clip { min: f32, max: f32 },
    /// `Erf` (dgnam's own layer type, for ONNX's Erf, with which torch exports the exact
    /// GELU): y = 2 / sqrt(pi) * integral of exp(-t^2) from 0 to x.
    Erf,
}

impl Activation {
    /// The Caffe-style type name of its layer.
    pub fn type_name(&self) -> &'static str {
        match self {
            Activation::Sigmoid => "Sigmoid",
            Activation::HardSigmoid { .. } => "HardSigmoid",
            Activation::HardSwish => "HardSwish",
            Activation::Clip { .. } => "Clip",
            Activation::Erf => "Erf",
        }
    }
}

/// Convolution and Deconvolution share Caffe's `convolution_param`.
/// Pairs are [height, width].
#[derive(Clone, Debug, PartialEq)]
pub struct ConvParam {
    pub num_output: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub group: usize,
    pub bias_term: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InnerProductParam {
    pub num_output: usize,
    pub bias_term: bool,
    /// Flatten from this axis on (negative counts from the end).
    pub axis: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMethod {
    Max,
    Ave,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolParam {
    pub method: PoolMethod,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub global: bool,
    pub round_mode: RoundMode,
    /// AVE only: divide by the window's pixels inside the input, not by its extent in the
    /// padded input (Caffe's rule). `exclude_pad: true`, dgnam's own field (no BVLC layer
    /// has it): ONNX's and PyTorch's `count_include_pad` 0.
    pub exclude_pad: bool,
}

/// How the pooled size is rounded (Caffe's `round_mode`; CEIL is its default, FLOOR is
/// what PyTorch and ONNX do unless `ceil_mode` is set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RoundMode {
    #[default]
    Ceil,
    Floor,
}

/// `Pad`: `pad_param { pad_t pad_l pad_b pad_r value }`, constant padding of H and W, each
/// side its own, a negative side a crop (no BVLC layer does this; the ONNX importer needs it
/// for pads that differ between the two sides and for ConvTranspose's pads and
/// output_padding). Pairs are [height, width].
#[derive(Clone, Debug, PartialEq)]
pub struct PadParam {
    pub before: [i64; 2],
    pub after: [i64; 2],
    pub value: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrnRegion {
    AcrossChannels,
    WithinChannel,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LrnParam {
    pub region: LrnRegion,
    pub local_size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReshapeParam {
    /// As written: 0 copies the bottom's dim, -1 is inferred.
    pub dims: Vec<i64>,
    pub axis: i64,
    /// -1: all remaining axes.
    pub num_axes: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EltwiseOp {
    Prod,
    Sum,
    Max,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EltwiseParam {
    pub op: EltwiseOp,
    /// Per-bottom coefficients for SUM; empty means all 1.
    pub coeffs: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScaleParam {
    pub axis: i64,
    pub num_axes: i64,
    pub bias_term: bool,
}
