//! `import dgnam`: the library's commands as Python calls, NumPy arrays in and out.
//!
//! Each call does what the command of the same name does (`dgnam::app`), with the GIL
//! released while it computes; its errors are Python exceptions carrying the command's
//! one-line message (`errors.rs`).

mod arrays;
mod convert;
mod errors;
mod net;
mod progress;
mod synth;

use pyo3::prelude::*;

/// The Python package's version is the crate's: this crate's version (the wheel's) must be
/// dgnam's, or it does not compile.
const _: () =
    assert!(same(env!("CARGO_PKG_VERSION").as_bytes(), dgnam::VERSION.as_bytes()), "python/Cargo.toml's version must equal dgnam's");

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[pymodule]
fn _dgnam(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", dgnam::VERSION)?;
    m.add_class::<net::Net>()?;
    m.add_function(wrap_pyfunction!(convert::convert, m)?)?;
    m.add_function(wrap_pyfunction!(synth::synthesize, m)?)?;
    m.add_function(wrap_pyfunction!(synth::demo, m)?)?;
    Ok(())
}
