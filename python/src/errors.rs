//! dgnam's errors as Python exceptions, with the message the command line prints after
//! `error: ` (the whole chain on one line):
//! - `FileNotFoundError`: a file the call reads is not there;
//! - `RuntimeError`: the device failed or is missing (no usable GPU, NVRTC, out of GPU
//!   memory, a CUDA call), or a run went non-finite;
//! - `ValueError`: everything else, bad arguments and inputs that do not fit the net.

use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::PyErr;
use std::path::{Path, PathBuf};

/// The exception for `e`, raised by a call that reads the files `inputs`.
pub fn to_py(e: &anyhow::Error, inputs: &[PathBuf]) -> PyErr {
    let message = format!("{e:#}");
    if is_missing_file(e, inputs) {
        PyFileNotFoundError::new_err(message)
    } else if is_device_error(e) {
        PyRuntimeError::new_err(message)
    } else {
        PyValueError::new_err(message)
    }
}

/// A `Result` of the library as one of Python's.
pub trait OrRaise<T> {
    /// Raises `to_py` of the error (the call read `inputs`).
    fn or_raise(self, inputs: &[PathBuf]) -> pyo3::PyResult<T>;
}

impl<T> OrRaise<T> for anyhow::Result<T> {
    fn or_raise(self, inputs: &[PathBuf]) -> pyo3::PyResult<T> {
        self.map_err(|e| to_py(&e, inputs))
    }
}

/// An input file is missing (the library names it in its own words, `weights file X does
/// not exist: ...`), or a read deeper down found nothing at a path.
fn is_missing_file(e: &anyhow::Error, inputs: &[PathBuf]) -> bool {
    let gone = |p: &PathBuf| p.as_os_str() != "none" && !Path::new(p).exists();
    inputs.iter().any(gone)
        || e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound))
}

/// The GPU, its driver or NVRTC failed: the library's device errors name one of them
/// (`--device cuda: no usable GPU: ...`, `CUDA kernel ...`, `NVRTC (libnvrtc.so.13) was
/// not found`), and running out of GPU memory is its own type.
fn is_device_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let text = c.to_string();
        c.is::<dgnam::device::cuda::OutOfMemory>() || ["CUDA", "NVRTC", "GPU"].iter().any(|w| text.contains(w))
    })
}
