//! Deterministic mutation testing of every parser of outside input: each fixture is bit
//! flipped, truncated, given duplicated byte ranges and (protobuf, .dgnw) huge length and
//! count fields, and every parser must return Ok or Err: no panic, no huge allocation, no
//! long stall. A stable-Rust companion to the `cargo fuzz` targets in `fuzz/`.

mod common;

use common::{fixture, scratch, shipped};
use dgnam::caffe::{caffemodel, netdef, wire};
use dgnam::graph::{CpuNet, Plan, MAX_ELEMENTS, MAX_PLAN_BYTES};
use dgnam::weights::{self, WeightsFile};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Per-thread allocation accounting: the peak of live bytes during one parse, and an abort
// that names the mutant when a single request is absurd (it would abort anyway, unnamed).

struct Counting;

const ABSURD: usize = 1 << 30;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

fn on_alloc(size: usize) {
    let _ = WATCHED.try_with(|w| {
        if w.get() && size > ABSURD {
            // No allocation here: write straight to stderr, then stop.
            let msg = b"mutations: a parser asked for more than 1 GiB in one allocation (see the last mutant named above)\n";
            let _ = std::io::Write::write_all(&mut std::io::stderr(), msg);
            std::process::abort();
        }
    });
    let _ = LIVE.try_with(|l| {
        let live = l.get() + size;
        l.set(live);
        let _ = PEAK.try_with(|p| p.set(p.get().max(live)));
    });
}

fn on_dealloc(size: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_dealloc(layout.size());
        on_alloc(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `parse` on every mutant; fails with the mutant's description on a panic, on a peak
/// of more than 64 bytes per input byte plus 64 MiB, or on more than 5 s for one mutant.
fn check_all(what: &str, mutants: impl IntoIterator<Item = (String, Vec<u8>)>, parse: impl Fn(&[u8])) {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // the failure below names the mutant instead
    let (mut failures, mut count) = (Vec::new(), 0);
    for (name, bytes) in mutants {
        let bytes = &bytes;
        count += 1;
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        WATCHED.with(|w| w.set(true));
        eprint!(""); // keeps stderr initialized outside the watched region
        let start = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| parse(bytes)));
        let elapsed = start.elapsed();
        WATCHED.with(|w| w.set(false));
        let peak = PEAK.with(Cell::get) - base;
        let budget = 64 * bytes.len() + (64 << 20);
        match result {
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{what} {name}: panicked: {msg}"));
            }
            Ok(()) if peak > budget => failures.push(format!("{what} {name}: peak {peak} bytes for {} input bytes", bytes.len())),
            Ok(()) if elapsed > Duration::from_secs(5) => failures.push(format!("{what} {name}: took {elapsed:?}")),
            Ok(()) => {}
        }
    }
    std::panic::set_hook(hook);
    println!("{what}: {count} mutants");
    assert!(count > 0, "{what}: no mutants were made");
    assert!(failures.is_empty(), "{what}: {} of {count} mutants failed:\n{}", failures.len(), failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Mutant generation

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// About `n` positions spread over `0..len`, every one when `len <= n`.
fn positions(len: usize, n: usize) -> impl Iterator<Item = usize> {
    let step = len.div_ceil(n.max(1)).max(1);
    (0..len).step_by(step)
}

type Mutants<'a> = Box<dyn Iterator<Item = (String, Vec<u8>)> + 'a>;

/// Bit flips, truncations and duplicated ranges, about `n` of each, made one at a time.
fn generic_mutants(bytes: &[u8], n: usize, seed: u64) -> Mutants<'_> {
    let flips = positions(bytes.len(), n).enumerate().map(move |(k, i)| {
        let mut m = bytes.to_vec();
        m[i] ^= 1 << (k % 8);
        (format!("bit {} of byte {i} flipped", k % 8), m)
    });
    let cuts = positions(bytes.len(), n).map(move |len| (format!("truncated to {len} bytes"), bytes[..len].to_vec()));
    let mut rng = Lcg(seed);
    let dups = (0..n).map(move |_| {
        let a = rng.below(bytes.len());
        let b = (a + 1 + rng.below(64)).min(bytes.len());
        let mut m = bytes[..b].to_vec();
        m.extend_from_slice(&bytes[a..]);
        (format!("bytes {a}..{b} duplicated"), m)
    });
    Box::new(flips.chain(cuts).chain(dups))
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

const HUGE: [u64; 5] = [1 << 31, u32::MAX as u64, 1 << 40, 1 << 62, u64::MAX];

/// Every varint (length prefixes and values) of a protobuf message and of the messages nested
/// in it, as byte ranges: up to `limit` of them.
fn varint_sites(bytes: &[u8], base: usize, depth: usize, limit: usize, out: &mut Vec<(usize, usize)>) {
    let mut reader = wire::Reader::new(bytes);
    while out.len() < limit {
        let Ok(Some(field)) = reader.read_field() else { return };
        let key_len = varint(u64::from(field.number) << 3).len();
        let value_start = field.offset + key_len;
        match field.value {
            wire::WireValue::Varint(v) => out.push((base + value_start, base + value_start + varint(v).len())),
            wire::WireValue::Bytes(payload) => {
                out.push((base + value_start, base + field.payload_offset));
                if depth > 0 {
                    varint_sites(payload, base + field.payload_offset, depth - 1, limit, out);
                }
            }
            _ => {}
        }
    }
}

/// Each varint site replaced by huge values (the message keeps its other bytes as they are).
fn huge_varint_mutants(bytes: &[u8], limit: usize) -> Mutants<'_> {
    let mut sites = Vec::new();
    varint_sites(bytes, 0, 4, limit, &mut sites);
    Box::new(sites.into_iter().flat_map(move |(start, end)| {
        HUGE.map(|huge| {
            let mut m = bytes[..start].to_vec();
            m.extend(varint(huge));
            m.extend_from_slice(&bytes[end..]);
            (format!("varint at byte {start} set to {huge}"), m)
        })
    }))
}

/// Every number in a text replaced by huge and negative values.
fn number_mutants(text: &[u8], limit: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() && out.len() < limit {
        if text[i].is_ascii_digit() && (i == 0 || !text[i - 1].is_ascii_alphanumeric() && text[i - 1] != b'_') {
            let end = (i..text.len()).find(|&j| !text[j].is_ascii_digit()).unwrap_or(text.len());
            for value in ["1000000000000", "4294967296", "18446744073709551615", "0", "-1"] {
                let mut m = text[..i].to_vec();
                m.extend_from_slice(value.as_bytes());
                m.extend_from_slice(&text[end..]);
                out.push((format!("number at byte {i} set to {value}"), m));
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The parsers, as the library's users reach them

fn prototxt_to_plan(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(def) = netdef::parse_netdef(&text) {
        if let Ok(plan) = Plan::new(&def, 1) {
            check_plan_limits(&plan);
        }
    }
}

/// What `Plan::new` promises: `Net::state` and the parameters stay within the limits.
fn check_plan_limits(plan: &Plan) {
    let shapes = plan.blobs.iter().map(|b| &b.shape).chain(plan.param_specs().map(|p| &p.shape));
    let mut total = 0u64;
    for shape in shapes {
        let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let n = n.filter(|&n| n <= MAX_ELEMENTS).unwrap_or_else(|| panic!("Plan::new accepted shape {shape:?}"));
        total += 4 * n as u64;
    }
    assert!(total <= MAX_PLAN_BYTES, "Plan::new accepted {total} bytes");
    let _ = (plan.flops(), plan.param_count());
}

fn weights_to_net(bytes: &[u8]) {
    let _ = weights::parse(bytes);
    let Ok(file) = WeightsFile::from_bytes(bytes) else { return };
    if let Ok(def) = file.netdef() {
        if let Ok(plan) = Plan::new(&def, 1) {
            check_plan_limits(&plan);
        }
    }
    let _ = CpuNet::<f32>::from_weights(&file, 1, dgnam::device::Cpu::new());
}

/// The header checksum made right again, so a mutated header reaches the table checks.
fn fix_header_checksum(bytes: &mut [u8]) {
    if bytes.len() < 40 {
        return;
    }
    let start = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    if (32..=bytes.len()).contains(&start) {
        let sum = weights::checksum(&bytes[32..start]);
        bytes[24..32].copy_from_slice(&sum.to_le_bytes());
    }
}

fn read(path: std::path::PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn prototxt_mutants() {
    let files = [
        fixture("caffe/lenet_mnist/lenet.prototxt"),
        fixture("caffe/lenet_mnist_v1/lenet.prototxt"),
        fixture("caffe/cifar10_quick_v1/cifar10_quick.prototxt"),
        fixture("tiny/classifier.prototxt"),
        shipped("generator-fc6.prototxt"),
    ];
    for (i, path) in files.into_iter().enumerate() {
        let text = read(path.clone());
        // The original reaches Plan::new, so mutants get past the first bytes.
        let def = netdef::parse_netdef(&String::from_utf8_lossy(&text)).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        Plan::new(&def, 1).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        let mutants = generic_mutants(&text, 2000, i as u64).chain(number_mutants(&text, 2000));
        check_all(&path.display().to_string(), mutants, prototxt_to_plan);
    }
    // Hostile definitions that must fail in Plan::new, naming the layer.
    let deep = format!("{}{}", "a {".repeat(5000), "}".repeat(5000));
    let hostile = [
        ("input: 'data' input_shape { dim: 1000000 dim: 1000000 dim: 1000000 }".to_string(), "input 'data'"),
        (
            "input: 'data' input_shape { dim: 1 dim: 10 } layer { name: 'fc' type: 'InnerProduct' bottom: 'data' \
             top: 'fc' inner_product_param { num_output: 1000000000000 } }"
                .to_string(),
            "layer 'fc' (InnerProduct)",
        ),
        (deep, "nested more than"),
    ];
    for (text, expected) in hostile {
        let error = netdef::parse_netdef(&text).and_then(|def| Plan::new(&def, 1).map(|_| ()));
        let error = format!("{:#}", error.expect_err(expected));
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn caffemodel_and_binaryproto_mutants() {
    let decode_model = |b: &[u8]| {
        let _ = caffemodel::decode_caffemodel(b);
    };
    for name in ["layer_convolution", "layer_deconvolution", "layer_inner_product"] {
        let bytes = read(fixture(&format!("caffe/opencv_layers/{name}.caffemodel")));
        assert!(!caffemodel::decode_caffemodel(&bytes).unwrap().is_empty(), "{name}: no layers");
        let mutants = generic_mutants(&bytes, 1000, 1).chain(huge_varint_mutants(&bytes, 200));
        check_all(name, mutants, decode_model);
    }
    // A real trained model: fewer mutants, it is 1.7 MB.
    let lenet = read(fixture("caffe/lenet_mnist/lenet_iter_10000.caffemodel"));
    caffemodel::decode_caffemodel(&lenet).unwrap();
    let mutants = generic_mutants(&lenet, 40, 2).chain(huge_varint_mutants(&lenet, 30));
    check_all("lenet caffemodel", mutants, decode_model);

    let mean = read(fixture("caffe/cifar10_quick_v1/mean.binaryproto"));
    caffemodel::decode_blob(&mean).unwrap();
    let mutants = generic_mutants(&mean, 300, 3).chain(huge_varint_mutants(&mean, 50));
    check_all("mean.binaryproto", mutants, |b| {
        let _ = caffemodel::decode_blob(b);
    });
}

#[test]
fn npy_mutants() {
    let small = dgnam::npy::to_bytes(&[2, 3, 4], &(0..24).map(|i| i as f32).collect::<Vec<_>>());
    let parse = |b: &[u8]| {
        let _ = dgnam::npy::parse(b);
    };
    dgnam::npy::parse(&small).unwrap();
    check_all("small npy", generic_mutants(&small, 400, 4).chain(number_mutants(&small, 100)), parse);
    // The float64 ImageNet mean: its header fully, the 1.5 MB body sparsely.
    let mean = read(fixture("caffe/imagenet_mean/ilsvrc_2012_mean.npy"));
    dgnam::npy::parse(&mean).unwrap();
    let header = generic_mutants(&mean[..128], 128, 5).map(|(name, mut head)| {
        head.extend_from_slice(&mean[128..]);
        (format!("header mutant: {name}"), head)
    });
    check_all("imagenet mean npy", header.chain(generic_mutants(&mean, 20, 6)), parse);
}

#[test]
fn weights_file_mutants() {
    let dir = scratch("mutations-weights");
    let model =
        dgnam::convert::load(&fixture("caffe/lenet_mnist/lenet.prototxt"), &fixture("caffe/lenet_mnist/lenet_iter_10000.caffemodel"))
            .unwrap();
    let path = dir.join("lenet.dgnw");
    model.write_weights(&path).unwrap();
    let bytes = read(path);
    let data_start = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    // The original builds a net, so mutants get as far as the weights.
    CpuNet::<f32>::from_weights(&WeightsFile::from_bytes(&bytes).unwrap(), 1, dgnam::device::Cpu::new()).unwrap();

    check_all("lenet.dgnw", generic_mutants(&bytes, 60, 7), weights_to_net);
    // The header in full, raw and with its checksum made right again (structure checks).
    let header = generic_mutants(&bytes[..data_start], 150, 8).flat_map(|(name, mut m)| {
        m.extend_from_slice(&bytes[data_start..]);
        let mut fixed = m.clone();
        fix_header_checksum(&mut fixed);
        [(format!("header {name}"), m), (format!("header {name}, checksum fixed"), fixed)]
    });
    check_all("lenet.dgnw", header, weights_to_net);
    // u32/u64 header fields (count, data start, lengths, ranks, dims, offsets) made huge.
    let huge = (8..data_start.min(2048)).step_by(12).flat_map(|at| {
        [(4, u32::MAX as u64), (8, 1u64 << 40), (8, u64::MAX)].map(|(width, huge)| {
            let mut m = bytes.clone();
            m[at..at + width].copy_from_slice(&huge.to_le_bytes()[..width]);
            fix_header_checksum(&mut m);
            (format!("header bytes {at}..{} set to {huge}, checksum fixed", at + width), m)
        })
    });
    check_all("lenet.dgnw", huge, weights_to_net);
    let _ = std::fs::remove_dir_all(dir);
}

/// The ONNX reader and translation, as `fuzz/fuzz_targets/onnx.rs` runs them: decode,
/// translate into the engine's layers, write the prototxt text that goes into the .dgnw,
/// read it back (it must read back unchanged), plan it.
fn onnx_to_plan(bytes: &[u8]) {
    let Ok(model) = dgnam::onnx::proto::parse_model(bytes, std::path::Path::new("/nonexistent")) else { return };
    let Ok(imported) = dgnam::onnx::import(&model) else { return };
    let text = dgnam::caffe::write::netdef_to_prototxt(&imported.def);
    let def = netdef::parse_netdef(&text).expect("a translated net reads back");
    assert_eq!(def, imported.def, "a translated net reads back unchanged");
    if let Ok(plan) = Plan::new(&def, 1) {
        check_plan_limits(&plan);
    }
}

#[test]
fn onnx_mutants() {
    // The node-by-node graphs cover ConvTranspose's pads (crops, added rows), count_include_pad
    // 0, negative Pad pads and spatial reductions; view_flatten torch's shape arithmetic.
    let models = [
        ("onnx/tiny_alexnet.onnx", 600, 11),
        ("onnx/tiny_resnet_opset9.onnx", 600, 12),
        ("torchvision/squeezenet1_1.onnx", 150, 13),
        ("onnx/convtranspose_attrs.onnx", 300, 14),
        ("onnx/pool_pad_attrs.onnx", 300, 15),
        ("onnx/reduce_attrs18.onnx", 300, 17),
        ("onnx/shuffle_attrs.onnx", 300, 18),
        ("onnx/slice_attrs.onnx", 300, 19),
        ("onnx/gelu_attrs.onnx", 300, 20),
        ("onnx/view_flatten.onnx", 300, 16),
    ];
    for (name, n, seed) in models {
        let bytes = read(fixture(name));
        let model = dgnam::onnx::proto::parse_model(&bytes, std::path::Path::new("/nonexistent")).unwrap();
        dgnam::onnx::import(&model).unwrap_or_else(|e| panic!("{name}: the unmutated model does not import: {e:#}"));
        let mutants = generic_mutants(&bytes, n, seed).chain(huge_varint_mutants(&bytes, 150));
        check_all(name, mutants, onnx_to_plan);
    }
}
