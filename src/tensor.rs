//! A plain owned n-dimensional array: the currency between files, the CLI and the nets.

use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T = f32> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

impl<T: Copy + Default> Tensor<T> {
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor { shape: shape.to_vec(), data: vec![T::default(); shape.iter().product()] }
    }

    pub fn new(shape: Vec<usize>, data: Vec<T>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            bail!("shape {} needs {n} values, got {}", fmt_shape(&shape), data.len());
        }
        Ok(Tensor { shape, data })
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// `2x3x227x227`, the way shapes appear in every message.
pub fn fmt_shape(shape: &[usize]) -> String {
    if shape.is_empty() {
        return "scalar".into();
    }
    shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}
