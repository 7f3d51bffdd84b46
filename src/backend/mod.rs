//! Backends: where buffers live and ops run. The graph walks nodes and keeps gradients;
//! a backend turns one node's op into kernels. `cpu` is the reference.

pub mod cpu;
pub mod cuda;

use crate::graph::Op;
use crate::real::Real;
use anyhow::Result;

pub use cpu::Cpu;
pub use cuda::Cuda;

/// One compute device. `Buf` holds activations and gradients, `Param` holds weights
/// (the CPU uses mapped weights in place), `Aux` what a node's backward needs from its
/// forward (max-pool winners, LRN scales), kept across passes so steady state allocates
/// nothing.
pub trait Backend {
    type Scalar: Real;
    type Buf;
    type Param;
    type Aux: Default;

    fn name(&self) -> String;
    /// A zeroed buffer of `len` scalars.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    fn zero(&self, buf: &mut Self::Buf) -> Result<()>;
    /// Weights given as f32 on the host (random weights, converted models).
    fn param_from_host(&self, data: &[f32]) -> Result<Self::Param>;
    fn upload(&self, buf: &mut Self::Buf, data: &[Self::Scalar]) -> Result<()>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<Self::Scalar>>;
    fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf) -> Result<()>;
    /// dst += src
    fn add_assign(&self, dst: &mut Self::Buf, src: &Self::Buf) -> Result<()>;

    /// Copies the `dst_hw` window at `offset` (y, x) out of every channel of `src`, an
    /// N x C x H x W blob, into `dst` (N x C x dst_h x dst_w). DGN-AM's center crop.
    fn crop(&self, src: &Self::Buf, src_shape: [usize; 4], offset: [usize; 2], dst_hw: [usize; 2], dst: &mut Self::Buf) -> Result<()>;
    /// The crop's backward: adds `dy` (N x C x dst_h x dst_w) into the window of `dx`.
    fn crop_backward(&self, dy: &Self::Buf, src_shape: [usize; 4], offset: [usize; 2], dst_hw: [usize; 2], dx: &mut Self::Buf) -> Result<()>;
    /// mean |x| of each row of a rows x cols buffer (the normalizer of DGN-AM's step).
    fn mean_abs_rows(&self, x: &Self::Buf, rows: usize, cols: usize) -> Result<Vec<Self::Scalar>>;
    /// DGN-AM's update of a rows x cols code, per row r with `scale[r] = Some(s)`:
    /// `code += s * grad; code = clamp(code, 0, upper) (when upper is given, one bound per
    /// column); code *= decay (when decay is in (0, 1))`. Rows whose scale is None are left
    /// exactly as they are (their optimization has stopped).
    #[allow(clippy::too_many_arguments)]
    fn dgn_update(
        &self,
        code: &mut Self::Buf,
        grad: &Self::Buf,
        rows: usize,
        cols: usize,
        scale: &[Option<Self::Scalar>],
        upper: Option<&Self::Buf>,
        decay: Self::Scalar,
    ) -> Result<()>;

    /// Runs `op` forward: `y` are the node's tops (overwritten).
    fn forward(
        &self,
        op: &Op,
        params: &[Self::Param],
        x: &[&Self::Buf],
        y: &mut [Self::Buf],
        aux: &mut Self::Aux,
    ) -> Result<()>;

    /// Back-propagates through `op`: ADDS into `dx` (one per bottom) and, when given, into
    /// the parameter gradients `dparams` (one per parameter). An empty `dx` skips the data
    /// gradient (only the weight gradients are computed; benchmarks time the two apart).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        op: &Op,
        params: &[Self::Param],
        x: &[&Self::Buf],
        y: &Self::Buf,
        dy: &Self::Buf,
        aux: &Self::Aux,
        dx: &mut [Self::Buf],
        dparams: Option<&mut [Self::Buf]>,
    ) -> Result<()>;
}
