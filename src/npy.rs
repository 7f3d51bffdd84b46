//! NumPy `.npy` files: float16/float32/float64 arrays in C order in, float32 out.

use crate::tensor::{fmt_shape, Tensor};
use anyhow::{bail, Context, Result};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";
/// No sane header is bigger; refusing larger ones bounds what a hostile file can make us parse.
const MAX_HEADER: usize = 1 << 16;

pub fn read(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{}: not a usable .npy file", path.display()))
}

/// Parses an in-memory .npy file; the data must be little-endian f2, f4 or f8 in C order.
pub fn parse(bytes: &[u8]) -> Result<Tensor> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        bail!("missing the .npy magic bytes");
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                bail!("truncated header");
            }
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => bail!("unsupported .npy version {v}"),
    };
    if header_len > MAX_HEADER || start + header_len > bytes.len() {
        bail!("header length {header_len} runs past the end of the file");
    }
    let header = std::str::from_utf8(&bytes[start..start + header_len]).context("header is not text")?;
    let descr = dict_value(header, "descr").context("header has no 'descr'")?;
    let fortran = dict_value(header, "fortran_order").context("header has no 'fortran_order'")?;
    let shape_text = dict_value(header, "shape").context("header has no 'shape'")?;
    if fortran.starts_with("True") {
        bail!("Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
    }
    let shape = parse_shape(shape_text)?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).context("shape overflows")?;
    let quoted = descr.trim_matches(|c| c == '\'' || c == '"');
    let width = match quoted {
        "<f2" | "f2" => 2,
        "<f4" | "f4" => 4,
        "<f8" | "f8" => 8,
        other => bail!("dtype '{other}' is not supported (want little-endian float16, float32 or float64)"),
    };
    let body = &bytes[start + header_len..];
    let need = count.checked_mul(width).context("shape overflows")?;
    if body.len() != need {
        bail!("shape {} needs {need} data bytes, file has {}", fmt_shape(&shape), body.len());
    }
    let data = if width == 2 {
        body.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()
    } else if width == 4 {
        body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        body.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32).collect()
    };
    Tensor::new(shape, data)
}

/// An IEEE half-precision value, exactly, as f32 (every half is an f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * (2.0f32).powi(-24), // subnormal: frac * 2^-10 * 2^-14
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + frac / 1024.0) * (2.0f32).powi(exp - 15),
    }
}

/// The text after `'key':` up to the next top-level comma (a tuple's commas are inside parens).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth <= 0 => return Some(rest[..i].trim()),
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    None
}

fn parse_shape(text: &str) -> Result<Vec<usize>> {
    let inner = text.strip_prefix('(').and_then(|t| t.strip_suffix(')')).with_context(|| format!("shape '{text}' is not a tuple"))?;
    let dims: Result<Vec<usize>> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().with_context(|| format!("bad dimension '{s}'")))
        .collect();
    let dims = dims?;
    if dims.len() > 32 {
        bail!("{} dimensions is too many", dims.len());
    }
    Ok(dims)
}

/// The bytes of a version-1.0 float32 .npy file.
pub fn to_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), data.len(), "npy: shape and data disagree");
    let dims = match shape.len() {
        1 => format!("{},", shape[0]),
        _ => shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    // Pad so the data starts 64-byte aligned, ending in a newline (the format's rule).
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes through a temporary file and a rename, so a killed run never leaves half a file.
pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    crate::fsutil::write_atomic(path, &to_bytes(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_shape_and_values() {
        for shape in [vec![3usize], vec![2, 3], vec![1, 3, 4, 5], vec![]] {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 1.0).collect();
            let bytes = to_bytes(&shape, &data);
            let t = parse(&bytes).unwrap();
            assert_eq!(t.shape, shape);
            assert_eq!(t.data, data);
            let header_end = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!(header_end % 64, 0);
        }
    }

    #[test]
    fn reads_the_float64_imagenet_mean() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/caffe/imagenet_mean/ilsvrc_2012_mean.npy");
        let t = read(&p).unwrap();
        assert_eq!(t.shape, vec![3, 256, 256]);
        let plane = 256 * 256;
        let b: f64 = t.data[..plane].iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
        assert!((b - 104.0069879317889).abs() < 1e-3, "blue mean {b}");
    }

    #[test]
    fn float16_is_read_exactly() {
        // 1.0, -2.5, the smallest subnormal, 65504 (the largest half), 0.1 rounded to half (819 / 8192).
        let halves: [u16; 5] = [0x3c00, 0xc100, 0x0001, 0x7bff, 0x2e66];
        let mut bytes = to_bytes(&[5], &[0.0; 5]);
        let at = bytes.windows(3).position(|w| w == b"<f4").unwrap();
        bytes[at + 2] = b'2';
        let data_start = bytes.len() - 20;
        bytes.truncate(data_start);
        halves.iter().for_each(|h| bytes.extend_from_slice(&h.to_le_bytes()));
        let t = parse(&bytes).unwrap();
        assert_eq!(t.data, vec![1.0, -2.5, 2f32.powi(-24), 65504.0, 819.0 / 8192.0]);
        assert!(f16_to_f32(0x7c00).is_infinite() && f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn bad_files_are_errors() {
        let good = to_bytes(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        for cut in [0, 5, 9, 20, good.len() - 1] {
            assert!(parse(&good[..cut]).is_err(), "truncated at {cut} must fail");
        }
        let mut wrong_type = good.clone();
        let at = wrong_type.windows(3).position(|w| w == b"<f4").unwrap();
        wrong_type[at + 1] = b'i';
        assert!(parse(&wrong_type).unwrap_err().to_string().contains("not supported"));
        let mut huge = good.clone();
        let at = huge.windows(4).position(|w| w == b"(2, ").unwrap();
        huge[at + 1] = b'9';
        assert!(parse(&huge).is_err());
    }
}
