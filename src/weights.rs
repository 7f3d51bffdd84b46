//! The `.dgnw` weights file: one self-contained file per net, mapped zero-copy.
//!
//! Layout (all integers little-endian):
//! ```text
//! 0   magic "DGNAMWT1"
//! 8   u32 format version (1, or 2 when the input space is not Caffe's)
//! 12  u32 tensor count
//! 16  u64 data start (64-aligned; the header ends before it)
//! 24  u64 checksum of header bytes [32, data start)
//! 32  u64 prototxt length, prototxt text (the deploy definition)
//!     version 2 only: u32 input space (0 caffe, 1 torchvision); version 1 means caffe
//!     per tensor: u32 layer-name length, name, u32 blob index, u32 rank, u64 dims[rank],
//!                 u64 offset, u64 byte length, u64 checksum of its bytes
//!     zero padding up to data start
//!     tensors: f32 little-endian, each at a 64-byte aligned offset
//! ```
//! Every offset, length, shape and checksum is checked before any tensor is handed out,
//! so a truncated or tampered file is an error, never an out-of-bounds read.

use crate::fsutil::write_atomic;
use crate::ir::InputSpace;
use crate::tensor::fmt_shape;
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"DGNAMWT1";
const VERSION: u32 = 1;
/// Version 2 adds the input space after the prototxt; Caffe nets are still written as 1.
const VERSION_WITH_INPUT_SPACE: u32 = 2;
const ALIGN: usize = 64;
const MAX_TENSORS: usize = 1 << 20;
const MAX_RANK: usize = 8;
const MAX_NAME: usize = 4096;

#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub layer: String,
    pub index: u32,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub byte_len: usize,
    pub checksum: u64,
}

/// What the header says, checked against the bytes it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub prototxt: String,
    pub input_space: InputSpace,
    pub tensors: Vec<TensorEntry>,
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u64>, usize), // 8-byte aligned words and the byte length
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(words, len) => &bytemuck::cast_slice(words)[..*len],
        }
    }
}

pub struct WeightsFile {
    pub path: PathBuf,
    pub header: Header,
    storage: Storage,
}

impl WeightsFile {
    /// Maps the file and validates it completely.
    pub fn open(path: &Path) -> Result<WeightsFile> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open weights file {}", path.display()))?;
        // SAFETY: the map is read-only and we never hand out references that outlive it; a
        // file changed underneath us by another process is outside what we can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
        let header = parse(&map).with_context(|| format!("{}: invalid weights file", path.display()))?;
        Ok(WeightsFile { path: path.to_path_buf(), header, storage: Storage::Mapped(map) })
    }

    /// Validates an in-memory copy (tests, fuzzing).
    pub fn from_bytes(bytes: &[u8]) -> Result<WeightsFile> {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        let storage = Storage::Owned(words, bytes.len());
        let header = parse(storage.bytes())?;
        Ok(WeightsFile { path: PathBuf::from("<memory>"), header, storage })
    }

    pub fn tensor(&self, layer: &str, index: u32) -> Option<(&TensorEntry, &[f32])> {
        let e = self.header.tensors.iter().find(|e| e.layer == layer && e.index == index)?;
        let bytes = &self.storage.bytes()[e.offset..e.offset + e.byte_len];
        // parse() checked alignment and length; the map itself is page aligned.
        Some((e, bytemuck::cast_slice(bytes)))
    }

    pub fn netdef(&self) -> Result<crate::caffe::NetDef> {
        crate::caffe::netdef::parse_netdef(&self.header.prototxt)
            .with_context(|| format!("{}: the stored net definition", self.path.display()))
    }
}

/// A 64-bit Fletcher-style checksum: sixteen lanes each keep a running sum of their 32-bit
/// words and a sum of those sums, which vectorizes (a 230 MB file checks in a few tens of
/// milliseconds). Any single flipped bit or reordered word changes it; it catches
/// corruption, it is not meant to resist an attacker.
pub fn checksum(bytes: &[u8]) -> u64 {
    const LANES: usize = 16;
    let (mut sum, mut sum_of_sums) = ([0u64; LANES], [0u64; LANES]);
    let mut chunks = bytes.chunks_exact(4 * LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let w = u32::from_le_bytes([c[4 * l], c[4 * l + 1], c[4 * l + 2], c[4 * l + 3]]);
            sum[l] = sum[l].wrapping_add(w as u64);
            sum_of_sums[l] = sum_of_sums[l].wrapping_add(sum[l]);
        }
    }
    const P: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = bytes.len() as u64;
    for l in 0..LANES {
        h = (h ^ sum[l]).wrapping_mul(P).rotate_left(29);
        h = (h ^ sum_of_sums[l]).wrapping_mul(P).rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(P).rotate_left(23);
    }
    h ^ (h >> 32)
}

/// Bounds-checked little-endian reading of the header.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.with_context(|| format!("header ends inside {what} (at byte {})", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into()?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into()?))
    }
    fn usize(&mut self, what: &str) -> Result<usize> {
        usize::try_from(self.u64(what)?).with_context(|| format!("{what} does not fit in memory"))
    }
}

pub fn parse(bytes: &[u8]) -> Result<Header> {
    ensure!(bytes.len() >= 40, "file is {} bytes, too short for a weights header", bytes.len());
    ensure!(&bytes[..8] == MAGIC, "not a dgnam weights file (bad magic bytes)");
    let mut fixed = Reader { bytes, pos: 8 };
    let version = fixed.u32("version")?;
    ensure!(
        version == VERSION || version == VERSION_WITH_INPUT_SPACE,
        "weights format version {version} is not supported (this build reads {VERSION} and {VERSION_WITH_INPUT_SPACE})"
    );
    let count = fixed.u32("tensor count")? as usize;
    let data_start = fixed.usize("data start")?;
    let header_sum = fixed.u64("header checksum")?;
    // Each table entry takes at least 36 bytes: a count the header cannot hold is a lie.
    ensure!(count <= MAX_TENSORS && count * 36 <= data_start.saturating_sub(40), "header claims {count} tensors");
    ensure!(
        data_start >= 40 && data_start <= bytes.len() && data_start % ALIGN == 0,
        "data start {data_start} is outside the {}-byte file or misaligned",
        bytes.len()
    );
    ensure!(checksum(&bytes[32..data_start]) == header_sum, "header checksum mismatch (file corrupted)");

    let mut r = Reader { bytes: &bytes[..data_start], pos: 32 };
    let text_len = r.usize("prototxt length")?;
    let prototxt = std::str::from_utf8(r.take(text_len, "the prototxt")?).context("prototxt is not UTF-8")?.to_string();
    let input_space = if version == VERSION_WITH_INPUT_SPACE {
        let code = r.u32("the input space")?;
        InputSpace::from_code(code).with_context(|| format!("unknown input space code {code}"))?
    } else {
        InputSpace::Caffe
    };
    let mut tensors = Vec::with_capacity(count.min(4096));
    let mut seen = std::collections::HashSet::new();
    for t in 0..count {
        let name_len = r.u32("a tensor name length")? as usize;
        ensure!(name_len <= MAX_NAME, "tensor {t}: name length {name_len}");
        let layer = std::str::from_utf8(r.take(name_len, "a tensor name")?).context("tensor name is not UTF-8")?.to_string();
        let index = r.u32("a blob index")?;
        let rank = r.u32("a tensor rank")? as usize;
        ensure!(rank <= MAX_RANK, "tensor {layer}[{index}]: rank {rank}");
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(r.usize("a dimension")?);
        }
        let offset = r.usize("a tensor offset")?;
        let byte_len = r.usize("a tensor length")?;
        let sum = r.u64("a tensor checksum")?;
        let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let expect = count.and_then(|c| c.checked_mul(4));
        ensure!(expect == Some(byte_len), "tensor {layer}[{index}]: shape {} does not match its {byte_len} bytes", fmt_shape(&shape));
        let end = offset.checked_add(byte_len);
        ensure!(
            offset >= data_start && offset % ALIGN == 0 && end.is_some_and(|e| e <= bytes.len()),
            "tensor {layer}[{index}]: bytes {offset}..+{byte_len} lie outside the data section of a {}-byte file (truncated?)",
            bytes.len()
        );
        ensure!(checksum(&bytes[offset..offset + byte_len]) == sum, "tensor {layer}[{index}]: checksum mismatch (file corrupted)");
        ensure!(seen.insert((layer.clone(), index)), "tensor {layer}[{index}] appears twice");
        tensors.push(TensorEntry { layer, index, shape, offset, byte_len, checksum: sum });
    }
    let mut spans: Vec<(usize, usize)> = tensors.iter().map(|e| (e.offset, e.offset + e.byte_len)).collect();
    spans.sort_unstable();
    ensure!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "tensors overlap");
    Ok(Header { prototxt, input_space, tensors })
}

/// One tensor to store: layer name, blob index, shape, values.
pub struct TensorData<'a> {
    pub layer: &'a str,
    pub index: u32,
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

pub fn to_bytes(prototxt: &str, tensors: &[TensorData]) -> Vec<u8> {
    to_bytes_in_space(prototxt, InputSpace::Caffe, tensors)
}

/// [`to_bytes`] for a net whose inputs live in `space` (format version 2 unless Caffe's).
pub fn to_bytes_in_space(prototxt: &str, space: InputSpace, tensors: &[TensorData]) -> Vec<u8> {
    let mut table = Vec::new();
    let put64 = |v: &mut Vec<u8>, x: u64| v.extend_from_slice(&x.to_le_bytes());
    put64(&mut table, prototxt.len() as u64);
    table.extend_from_slice(prototxt.as_bytes());
    let version = if space == InputSpace::Caffe { VERSION } else { VERSION_WITH_INPUT_SPACE };
    if version == VERSION_WITH_INPUT_SPACE {
        table.extend_from_slice(&space.code().to_le_bytes());
    }
    let space_len = table.len() - 8 - prototxt.len();
    // Offsets depend on where the data starts, which depends on the table size: the table's
    // size is known before the offsets are filled in, so compute it first.
    let table_len: usize =
        8 + prototxt.len() + space_len + tensors.iter().map(|t| 4 + t.layer.len() + 8 + 8 * t.shape.len() + 24).sum::<usize>();
    let data_start = (32 + table_len).div_ceil(ALIGN) * ALIGN;
    let mut offset = data_start;
    let mut end = data_start; // no padding after the last tensor: the file ends with its data
    let mut offsets = Vec::new();
    for t in tensors {
        assert_eq!(t.shape.iter().product::<usize>(), t.data.len(), "weights: shape and data disagree");
        let bytes: &[u8] = bytemuck::cast_slice(t.data);
        table.extend_from_slice(&(t.layer.len() as u32).to_le_bytes());
        table.extend_from_slice(t.layer.as_bytes());
        table.extend_from_slice(&t.index.to_le_bytes());
        table.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for &d in t.shape {
            put64(&mut table, d as u64);
        }
        put64(&mut table, offset as u64);
        put64(&mut table, bytes.len() as u64);
        put64(&mut table, checksum(bytes));
        offsets.push(offset);
        end = offset + bytes.len();
        offset = end.div_ceil(ALIGN) * ALIGN;
    }
    debug_assert_eq!(table.len(), table_len);
    let mut out = vec![0u8; end];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&version.to_le_bytes());
    out[12..16].copy_from_slice(&(tensors.len() as u32).to_le_bytes());
    out[16..24].copy_from_slice(&(data_start as u64).to_le_bytes());
    out[32..32 + table.len()].copy_from_slice(&table);
    let header_sum = checksum(&out[32..data_start]);
    out[24..32].copy_from_slice(&header_sum.to_le_bytes());
    for (t, &o) in tensors.iter().zip(&offsets) {
        let bytes: &[u8] = bytemuck::cast_slice(t.data);
        out[o..o + bytes.len()].copy_from_slice(bytes);
    }
    out
}

pub fn write(path: &Path, prototxt: &str, tensors: &[TensorData]) -> Result<()> {
    write_in_space(path, prototxt, InputSpace::Caffe, tensors)
}

pub fn write_in_space(path: &Path, prototxt: &str, space: InputSpace, tensors: &[TensorData]) -> Result<()> {
    if cfg!(target_endian = "big") {
        bail!("writing weights files needs a little-endian machine");
    }
    write_atomic(path, &to_bytes_in_space(prototxt, space, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let w: Vec<f32> = (0..24).map(|i| i as f32 - 3.5).collect();
        let b = [0.5f32, -1.0];
        to_bytes(
            "name: \"t\"\ninput: \"data\"\n",
            &[
                TensorData { layer: "conv1", index: 0, shape: &[2, 3, 2, 2], data: &w },
                TensorData { layer: "conv1", index: 1, shape: &[2], data: &b },
            ],
        )
    }

    #[test]
    fn round_trip_is_zero_copy_and_aligned() {
        let f = WeightsFile::from_bytes(&sample()).unwrap();
        assert_eq!(f.header.prototxt, "name: \"t\"\ninput: \"data\"\n");
        let (e, w) = f.tensor("conv1", 0).unwrap();
        assert_eq!(e.shape, vec![2, 3, 2, 2]);
        assert_eq!(w[5], 1.5);
        assert_eq!(e.offset % ALIGN, 0);
        assert_eq!(f.tensor("conv1", 1).unwrap().1, &[0.5, -1.0]);
        assert!(f.tensor("conv2", 0).is_none());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut]).is_err(), "truncated to {cut} bytes was accepted");
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = sample();
        for i in 0..bytes.len() {
            // Padding bytes carry no meaning; flipping them is harmless and allowed.
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            if let Ok(h) = parse(&b) {
                assert_eq!(h, parse(&bytes).unwrap(), "flip at byte {i} changed the content silently");
            }
        }
    }

    #[test]
    fn input_space_is_stored_and_old_files_mean_caffe() {
        let b = [1.0f32];
        let t = [TensorData { layer: "fc", index: 0, shape: &[1], data: &b }];
        let v2 = to_bytes_in_space("name: \"t\"\n", InputSpace::Torchvision, &t);
        assert_eq!(&v2[8..12], &2u32.to_le_bytes());
        let h = parse(&v2).unwrap();
        assert_eq!((h.input_space, h.prototxt.as_str()), (InputSpace::Torchvision, "name: \"t\"\n"));
        assert_eq!(WeightsFile::from_bytes(&v2).unwrap().tensor("fc", 0).unwrap().1, &[1.0]);
        for cut in 0..v2.len() {
            assert!(parse(&v2[..cut]).is_err(), "truncated to {cut} bytes was accepted");
        }
        let v1 = to_bytes("name: \"t\"\n", &t);
        assert_eq!(&v1[8..12], &1u32.to_le_bytes());
        assert_eq!(parse(&v1).unwrap().input_space, InputSpace::Caffe);
        assert_eq!(to_bytes_in_space("name: \"t\"\n", InputSpace::Caffe, &t), v1);
    }

    #[test]
    fn absurd_counts_are_rejected_before_allocating() {
        let mut b = sample();
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&b).unwrap_err().to_string().contains("tensors"));
        // Within MAX_TENSORS but more than the header has room for.
        let mut b = sample();
        b[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert!(parse(&b).unwrap_err().to_string().contains("claims 1000 tensors"));
    }
}
