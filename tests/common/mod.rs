//! Shared helpers for the integration tests: fixture paths and scratch directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root: where the crate was built, or (for test executables copied to
/// another machine, as `.gpu/` is) the current directory when that path is gone.
pub fn root() -> &'static Path {
    let built = Path::new(env!("CARGO_MANIFEST_DIR"));
    if built.join("weights").is_dir() {
        built
    } else {
        Path::new(".")
    }
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

pub fn shipped(rel: &str) -> PathBuf {
    root().join("weights").join(rel)
}

/// A fresh, empty scratch directory unique to this test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dgnam-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The real LeNet fixture converted by `dgnam-convert` into `dir/lenet.dgnw`.
pub fn converted_lenet(dir: &Path) -> PathBuf {
    let out = dir.join("lenet.dgnw");
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_dgnam-convert"))
        .arg("--prototxt")
        .arg(fixture("caffe/lenet_mnist/lenet.prototxt"))
        .arg("--caffemodel")
        .arg(fixture("caffe/lenet_mnist/lenet_iter_10000.caffemodel"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    out
}

pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// max |a - b| / max |b|: the relative error the Caffe reference checks use.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let diff = a.iter().zip(b).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale.max(1e-30)
}
