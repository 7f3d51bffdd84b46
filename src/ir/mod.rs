//! dgnam's intermediate representation, a leaf: the net definition in dgnam's own types
//! (what the Caffe and later ONNX importers produce), the geometries of convolution and
//! pooling, the resolved [`Op`] of each node, its shapes and FLOPs. It imports nothing from
//! the importers, the devices, the ops or the graph.

mod conv;
mod netdef;
mod pool;
pub mod shapes;

pub use conv::ConvGeom;
pub use netdef::*;
pub use pool::{windows, PoolGeom, Window};
pub use shapes::{compile_layer, Compiled, MAX_ELEMENTS};

/// Constant padding of the H and W axes of an NCHW blob (`Pad` layers), each side its own;
/// a negative side crops that many rows or columns instead.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PadGeom {
    /// The input's N, C, H, W.
    pub dims: [usize; 4],
    /// Rows above and columns left of the input.
    pub before: [i64; 2],
    /// Rows below and columns right of it.
    pub after: [i64; 2],
    pub value: f32,
}

impl PadGeom {
    pub fn planes(&self) -> usize {
        self.dims[0] * self.dims[1]
    }
    pub fn in_h(&self) -> usize {
        self.dims[2]
    }
    pub fn in_w(&self) -> usize {
        self.dims[3]
    }
    /// The output's H and W, if both are positive.
    pub fn out_size(&self) -> Option<[usize; 2]> {
        let side = |a: usize| {
            let n = self.dims[2 + a] as i64 + self.before[a] + self.after[a];
            usize::try_from(n).ok().filter(|&n| n > 0)
        };
        Some([side(0)?, side(1)?])
    }
    /// The output's H (the geometry's checks made it positive).
    pub fn out_h(&self) -> usize {
        (self.dims[2] as i64 + self.before[0] + self.after[0]) as usize
    }
    pub fn out_w(&self) -> usize {
        (self.dims[3] as i64 + self.before[1] + self.after[1]) as usize
    }
    /// Where input and output overlap along axis `a` (0 for H, 1 for W): the first input
    /// index, the first output index and the length (0 where a crop leaves none of x).
    pub fn overlap(&self, a: usize) -> (usize, usize, usize) {
        let (len, out) = (self.dims[2 + a], [self.out_h(), self.out_w()][a]);
        let (x0, y0) = ((-self.before[a]).max(0) as usize, self.before[a].max(0) as usize);
        (x0, y0, len.saturating_sub(x0).min(out.saturating_sub(y0)))
    }
}

/// What a node computes, with every size resolved; the ops dispatch on this.
#[derive(Clone, Debug)]
pub enum Op {
    /// `relu`: the slope (at least 0) of a ReLU that followed this layer in place and now
    /// runs in its output pass. Only `Net::fuse_relus` sets it; a compiled layer has none.
    Conv {
        geom: ConvGeom,
        bias: bool,
        relu: Option<f32>,
    },
    Deconv {
        geom: ConvGeom,
        bias: bool,
        relu: Option<f32>,
    },
    InnerProduct {
        rows: usize,
        k: usize,
        n: usize,
        bias: bool,
    },
    Relu {
        slope: f32,
    },
    /// Sigmoid, HardSigmoid, HardSwish, Clip.
    Activation(Activation),
    /// SiLU, y = x * sigmoid(x): a Sigmoid and the product of its input and output, run as
    /// one pass. Only `Net::fuse_silus` makes it; a compiled layer never is one.
    Silu,
    /// Dropout at inference, Reshape, Flatten and each top of a Split: the data passes unchanged.
    Copy,
    MaxPool(PoolGeom),
    AvePool(PoolGeom),
    Pad(PadGeom),
    /// Channel shuffle in `group` groups (src/ops/shuffle), over [outer, channels, inner].
    ShuffleChannel {
        outer: usize,
        channels: usize,
        group: usize,
        inner: usize,
    },
    Lrn {
        dims: [usize; 4],
        param: LrnParam,
    },
    Softmax {
        outer: usize,
        channels: usize,
        inner: usize,
    },
    Concat {
        outer: usize,
        inner: usize,
        channels: Vec<usize>,
    },
    /// Concat's inverse: the one bottom, [outer, sum(channels) * inner], cut into tops of
    /// [outer, channels[i] * inner] (src/ops/concat).
    Slice {
        outer: usize,
        inner: usize,
        channels: Vec<usize>,
    },
    Eltwise {
        op: EltwiseOp,
        coeffs: Vec<f32>,
    },
    BatchNorm {
        outer: usize,
        channels: usize,
        inner: usize,
        eps: f32,
    },
    Scale {
        outer: usize,
        channels: usize,
        inner: usize,
        bias: bool,
    },
    /// Caffe's Scale with two bottoms: `y[o][c][i] = x[o][c][i] * s[c]`, the factors a computed
    /// blob spanning axes of x from `axis` on (squeeze-and-excitation: x [N, C, H, W] and its
    /// [N, C] gates with `axis: 0`, so `c` runs over N x C).
    ScaleByBlob {
        outer: usize,
        channels: usize,
        inner: usize,
    },
}

impl Op {
    /// The variant's name, as messages and the test hook of `ops::backward` spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "Conv",
            Op::Deconv { .. } => "Deconv",
            Op::InnerProduct { .. } => "InnerProduct",
            Op::Relu { .. } => "Relu",
            Op::Activation(a) => a.type_name(),
            Op::Silu => "Silu",
            Op::Copy => "Copy",
            Op::MaxPool(_) => "MaxPool",
            Op::AvePool(_) => "AvePool",
            Op::Pad(_) => "Pad",
            Op::ShuffleChannel { .. } => "ShuffleChannel",
            Op::Lrn { .. } => "Lrn",
            Op::Softmax { .. } => "Softmax",
            Op::Concat { .. } => "Concat",
            Op::Slice { .. } => "Slice",
            Op::Eltwise { .. } => "Eltwise",
            Op::BatchNorm { .. } => "BatchNorm",
            Op::Scale { .. } => "Scale",
            Op::ScaleByBlob { .. } => "ScaleByBlob",
        }
    }

    /// 2 x multiply-adds of the forward pass for the matrix products; `None` for the rest
    /// (they are counted by the elements they write).
    pub fn matmul_flops(&self) -> Option<u64> {
        match self {
            Op::Conv { geom, .. } | Op::Deconv { geom, .. } => Some(geom.flops()),
            Op::InnerProduct { rows, k, n, .. } => Some(2 * (*rows as u64) * (*k as u64) * (*n as u64)),
            _ => None,
        }
    }
}

/// What the net's input pixels mean, as recorded in its weights file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InputSpace {
    /// BVLC Caffe: BGR, 0-255, minus the ImageNet mean.
    #[default]
    Caffe,
    /// torchvision: RGB, x/255, minus mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225).
    Torchvision,
}

impl InputSpace {
    pub fn name(self) -> &'static str {
        match self {
            InputSpace::Caffe => "caffe",
            InputSpace::Torchvision => "torchvision",
        }
    }

    /// The code stored in a weights file.
    pub fn code(self) -> u32 {
        match self {
            InputSpace::Caffe => 0,
            InputSpace::Torchvision => 1,
        }
    }

    pub fn from_code(code: u32) -> Option<InputSpace> {
        [InputSpace::Caffe, InputSpace::Torchvision].into_iter().find(|s| s.code() == code)
    }
}
