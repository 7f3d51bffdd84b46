//! Backends: where buffers live and ops run. The graph walks nodes and keeps gradients;
//! a backend turns one node's op into kernels. `cpu` is the reference.

pub mod cpu;

use crate::graph::Op;
use crate::real::Real;
use anyhow::Result;

pub use cpu::Cpu;

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
    /// the parameter gradients `dparams` (one per parameter).
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
