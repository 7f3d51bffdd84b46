//! Finds the tools two test groups need, so that `cargo test` reports a missing tool as an
//! ignored test with the reason instead of a silent pass (tests/cuda.rs):
//! - `has_gxx`: g++ is on PATH (tools/kernel_emu runs every kernel under a host emulation);
//! - `has_nvrtc`: libnvrtc.so* is in a directory of LD_LIBRARY_PATH or a usual system one;
//! - `has_chromium`: chromium is on PATH (tests/gallery.rs opens the gallery in it, headless);
//! - `require_kernel_emu`, `require_nvrtc`, `require_chromium`: REQUIRE_KERNEL_EMU=1 /
//!   REQUIRE_NVRTC=1 / REQUIRE_CHROMIUM=1 (CI): the tests run whatever was found, so a
//!   missing tool fails them.
//!
//! The library itself does not use these.

use std::env;
use std::path::{Path, PathBuf};

fn dirs(var: &str) -> Vec<PathBuf> {
    env::var_os(var).map(|v| env::split_paths(&v).collect()).unwrap_or_default()
}

fn has_nvrtc_in(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libnvrtc.so")))
}

fn main() {
    for var in ["PATH", "LD_LIBRARY_PATH", "REQUIRE_KERNEL_EMU", "REQUIRE_NVRTC", "REQUIRE_CHROMIUM"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    for cfg in ["has_gxx", "has_nvrtc", "has_chromium", "require_kernel_emu", "require_nvrtc", "require_chromium"] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    let on = |var: &str| env::var(var).is_ok_and(|v| v == "1");
    if dirs("PATH").iter().any(|d| d.join("g++").is_file()) {
        println!("cargo:rustc-cfg=has_gxx");
    }
    if dirs("PATH").iter().any(|d| d.join("chromium").is_file()) {
        println!("cargo:rustc-cfg=has_chromium");
    }
    if on("REQUIRE_CHROMIUM") {
        println!("cargo:rustc-cfg=require_chromium");
    }
    let system = ["/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"].map(PathBuf::from);
    if dirs("LD_LIBRARY_PATH").iter().chain(&system).any(|d| has_nvrtc_in(d)) {
        println!("cargo:rustc-cfg=has_nvrtc");
    }
    if on("REQUIRE_KERNEL_EMU") {
        println!("cargo:rustc-cfg=require_kernel_emu");
    }
    if on("REQUIRE_NVRTC") {
        println!("cargo:rustc-cfg=require_nvrtc");
    }
}
