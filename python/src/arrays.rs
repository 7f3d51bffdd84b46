//! NumPy arrays in and out. An input that already is a C-contiguous float32 array is read
//! in place; anything else array-like is converted once (`numpy.ascontiguousarray`). An
//! output array takes over the Rust buffer it was computed in, without a copy.

use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// `x` as a C-contiguous float32 array (the same object when it is one).
pub fn float32<'py>(x: &Bound<'py, PyAny>) -> PyResult<PyReadonlyArrayDyn<'py, f32>> {
    let np = x.py().import("numpy")?;
    let kwargs = pyo3::types::PyDict::new(x.py());
    kwargs.set_item("dtype", np.getattr("float32")?)?;
    let a = np.call_method("ascontiguousarray", (x,), Some(&kwargs))?;
    Ok(a.cast_into::<PyArrayDyn<f32>>()?.readonly())
}

/// The values of `a` in order (C-contiguous by construction, see `float32`).
pub fn slice<'a>(a: &'a PyReadonlyArrayDyn<'_, f32>) -> PyResult<&'a [f32]> {
    a.as_slice().map_err(|e| PyValueError::new_err(format!("the array is not contiguous: {e}")))
}

/// An array of `shape` over `data` (moved, not copied).
pub fn owned<'py, T: numpy::Element>(py: Python<'py>, shape: &[usize], data: Vec<T>) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| PyValueError::new_err(format!("array of shape {shape:?}: {e}")))?;
    Ok(a.into_pyarray(py))
}
