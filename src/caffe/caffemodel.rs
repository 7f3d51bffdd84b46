//! Trained weights from `.caffemodel` files (binary `NetParameter`) and mean images from
//! `.binaryproto` files (binary `BlobProto`).
//!
//! Only what a net needs is read: each layer's name, type and blobs. New-format layers,
//! V1 layers and V0 layers (nested in V1 entries) are all accepted.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::netdef::{v0_type_name, v1_type_name_by_number};
use super::wire::{extend_f32, extend_f64, extend_varints, Reader, WireField};
use super::{Blob, LayerBlobs};

/// Blobs beyond these sizes are corrupt, not real: Caffe itself counts elements in an
/// `int` and never uses more than a handful of axes.
const MAX_AXES: usize = 32;
const MAX_ELEMENTS: usize = i32::MAX as usize;
/// Real nets have at most a few thousand layers; a tiny entry costs far more decoded than
/// stored, so bound the count.
const MAX_LAYERS: usize = 1 << 16;

// Field numbers from caffe.proto.
const NET_LAYER: u32 = 100;
const NET_V1_LAYERS: u32 = 2;
const LAYER_NAME: u32 = 1;
const LAYER_TYPE: u32 = 2;
const LAYER_BLOBS: u32 = 7;
const V1_V0_LAYER: u32 = 1;
const V1_NAME: u32 = 4;
const V1_TYPE: u32 = 5;
const V1_BLOBS: u32 = 6;
const V0_NAME: u32 = 1;
const V0_TYPE: u32 = 2;
const V0_BLOBS: u32 = 50;
const BLOB_DATA: u32 = 5;
const BLOB_SHAPE: u32 = 7;
const BLOB_DOUBLE_DATA: u32 = 8;
const SHAPE_DIM: u32 = 1;

/// Every layer of a binary `NetParameter`, in stored order, with its parameter blobs
/// (layers without blobs, such as Data or ReLU, are kept with an empty list).
pub fn decode_caffemodel(bytes: &[u8]) -> Result<Vec<LayerBlobs>> {
    let mut layers = Vec::new();
    for field in Reader::new(bytes) {
        let field = field?;
        let layer = match field.number {
            NET_LAYER => decode_layer(&field)?,
            NET_V1_LAYERS => decode_v1_layer(&field)?,
            _ => continue,
        };
        if layers.len() == MAX_LAYERS {
            bail!("more than {MAX_LAYERS} layers (at byte {})", field.offset);
        }
        layers.push(layer);
    }
    if layers.is_empty() {
        bail!("no layers found (not a Caffe NetParameter?)");
    }
    Ok(layers)
}

/// One `BlobProto`, as in a `.binaryproto` mean file.
pub fn decode_blob(bytes: &[u8]) -> Result<Blob> {
    decode_blob_message(Reader::new(bytes))
}

pub fn read_caffemodel(path: &Path) -> Result<Vec<LayerBlobs>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode_caffemodel(&bytes).map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

pub fn read_binaryproto(path: &Path) -> Result<Blob> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode_blob(&bytes).map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

/// The fields of one layer entry, gathered before decoding so errors can name the layer.
#[derive(Default)]
struct RawLayer<'a> {
    name: Option<String>,
    type_name: Option<String>,
    blobs: Vec<WireField<'a>>,
}

impl RawLayer<'_> {
    fn finish(self, offset: usize) -> Result<LayerBlobs> {
        let name = self.name.ok_or_else(|| anyhow!("layer at byte {offset} has no name"))?;
        let blobs = self
            .blobs
            .iter()
            .enumerate()
            .map(|(i, field)| field.message().and_then(decode_blob_message).map_err(|e| anyhow!("layer '{name}' blob {i}: {e:#}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(LayerBlobs { name, type_name: self.type_name.unwrap_or_default(), blobs })
    }
}

fn decode_layer(entry: &WireField<'_>) -> Result<LayerBlobs> {
    let mut raw = RawLayer::default();
    for field in entry.message()? {
        let field = field?;
        match field.number {
            LAYER_NAME => raw.name = Some(field.string()?),
            LAYER_TYPE => raw.type_name = Some(field.string()?),
            LAYER_BLOBS => raw.blobs.push(field),
            _ => {}
        }
    }
    raw.finish(entry.offset)
}

fn decode_v1_layer(entry: &WireField<'_>) -> Result<LayerBlobs> {
    let mut raw = RawLayer::default();
    let mut v0 = None;
    for field in entry.message()? {
        let field = field?;
        match field.number {
            V1_V0_LAYER => v0 = Some(field),
            V1_NAME => raw.name = Some(field.string()?),
            V1_TYPE => {
                let number = field.varint()?;
                let name = v1_type_name_by_number(number)
                    .ok_or_else(|| anyhow!("layer at byte {}: unknown V1 layer type {number}", entry.offset))?;
                raw.type_name = Some(name.to_string());
            }
            V1_BLOBS => raw.blobs.push(field),
            _ => {}
        }
    }
    // A V0 net keeps everything in the nested legacy message.
    match v0 {
        Some(v0) => decode_v0_layer(&v0),
        None => raw.finish(entry.offset),
    }
}

fn decode_v0_layer(entry: &WireField<'_>) -> Result<LayerBlobs> {
    let mut raw = RawLayer::default();
    for field in entry.message()? {
        let field = field?;
        match field.number {
            V0_NAME => raw.name = Some(field.string()?),
            V0_TYPE => {
                let v0_type = field.string()?;
                // Unknown V0 types are kept as written; the net definition rejects them.
                raw.type_name = Some(v0_type_name(&v0_type).map_or(v0_type, str::to_string));
            }
            V0_BLOBS => raw.blobs.push(field),
            _ => {}
        }
    }
    raw.finish(entry.offset)
}

fn decode_blob_message(reader: Reader<'_>) -> Result<Blob> {
    let start = reader.offset();
    // num, channels, height, width: the pre-2015 4-D shape, each 0 unless given.
    let mut legacy: [Option<i64>; 4] = [None; 4];
    let mut shape: Option<Vec<usize>> = None;
    let mut data = Vec::new();
    let mut double_data = Vec::new();
    for field in reader {
        let field = field?;
        match field.number {
            n @ 1..=4 => {
                if let Some(slot) = legacy.get_mut(n as usize - 1) {
                    *slot = Some(field.int64()?);
                }
            }
            BLOB_DATA => extend_f32(&mut data, &field)?,
            BLOB_SHAPE => {
                // A message field given twice merges, so its dims concatenate.
                let dims = shape.get_or_insert_with(Vec::new);
                decode_shape(field.message()?, dims)?;
            }
            BLOB_DOUBLE_DATA => extend_f64(&mut double_data, &field)?,
            _ => {}
        }
    }

    let legacy_shape = if legacy.iter().any(Option::is_some) {
        let dims = legacy.map(|d| d.unwrap_or(0));
        Some(dims.iter().map(|&d| dim_to_usize(d)).collect::<Result<Vec<_>>>()?)
    } else {
        None
    };
    let shape = match (shape, legacy_shape) {
        (Some(shape), Some(legacy)) if shape != legacy => {
            bail!("blob at byte {start}: shape {shape:?} disagrees with its legacy dims {legacy:?}")
        }
        (Some(shape), _) => shape,
        (None, Some(legacy)) => legacy,
        (None, None) => Vec::new(),
    };
    let count = element_count(&shape).map_err(|e| anyhow!("blob at byte {start}: {e}"))?;

    // Caffe prefers double_data whenever it is present.
    let values = if double_data.is_empty() { data } else { double_data.into_iter().map(|v| v as f32).collect() };
    if values.is_empty() {
        bail!("blob at byte {start} with shape {shape:?} holds no values");
    }
    if values.len() != count {
        bail!("blob at byte {start}: shape {shape:?} needs {count} values but {} are stored", values.len());
    }
    Ok(Blob { shape, data: values })
}

fn decode_shape(reader: Reader<'_>, dims: &mut Vec<usize>) -> Result<()> {
    let mut raw = Vec::new();
    for field in reader {
        let field = field?;
        if field.number == SHAPE_DIM {
            extend_varints(&mut raw, &field, MAX_AXES)?;
        }
    }
    for d in raw {
        dims.push(dim_to_usize(d as i64)?);
    }
    if dims.len() > MAX_AXES {
        bail!("blob shape has {} axes, more than {MAX_AXES}", dims.len());
    }
    Ok(())
}

fn dim_to_usize(dim: i64) -> Result<usize> {
    usize::try_from(dim).map_err(|_| anyhow!("negative blob dimension {dim}"))
}

fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| anyhow!("shape {shape:?} has more than {MAX_ELEMENTS} elements"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/caffe").join(path)
    }

    fn layer<'a>(layers: &'a [LayerBlobs], name: &str) -> &'a LayerBlobs {
        layers.iter().find(|l| l.name == name).unwrap_or_else(|| panic!("no layer {name}"))
    }

    fn shapes(layer: &LayerBlobs) -> Vec<Vec<usize>> {
        layer.blobs.iter().map(|b| b.shape.clone()).collect()
    }

    // Minimal protobuf writers for hand-built buffers.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn key(number: u32, wire_type: u8, out: &mut Vec<u8>) {
        varint(u64::from(number) << 3 | u64::from(wire_type), out);
    }

    fn bytes_field(number: u32, payload: &[u8], out: &mut Vec<u8>) {
        key(number, 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn packed_dims(dims: &[u64]) -> Vec<u8> {
        let mut packed = Vec::new();
        dims.iter().for_each(|&d| varint(d, &mut packed));
        let mut shape = Vec::new();
        bytes_field(SHAPE_DIM, &packed, &mut shape);
        shape
    }

    fn packed_floats(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn lenet_new_format() {
        let layers = read_caffemodel(&fixture("lenet_mnist/lenet_iter_10000.caffemodel")).unwrap();
        let names: Vec<_> = layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["mnist", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "loss"]);
        assert_eq!(layer(&layers, "conv1").type_name, "Convolution");
        assert_eq!(layer(&layers, "loss").type_name, "SoftmaxWithLoss");
        assert_eq!(shapes(layer(&layers, "conv1")), vec![vec![20, 1, 5, 5], vec![20]]);
        assert_eq!(shapes(layer(&layers, "conv2")), vec![vec![50, 20, 5, 5], vec![50]]);
        assert_eq!(shapes(layer(&layers, "ip1")), vec![vec![500, 800], vec![500]]);
        assert_eq!(shapes(layer(&layers, "ip2")), vec![vec![10, 500], vec![10]]);
        assert!(layer(&layers, "pool1").blobs.is_empty());
        let weights = &layer(&layers, "conv1").blobs[0].data;
        assert!(weights.iter().all(|w| w.is_finite()) && weights.iter().any(|&w| w != 0.0));
    }

    #[test]
    fn lenet_v1() {
        let layers = read_caffemodel(&fixture("lenet_mnist_v1/lenet_iter_10000.caffemodel")).unwrap();
        let types: Vec<_> = layers.iter().map(|l| l.type_name.as_str()).collect();
        assert_eq!(
            types,
            ["Data", "Convolution", "Pooling", "Convolution", "Pooling", "InnerProduct", "ReLU", "InnerProduct", "SoftmaxWithLoss"]
        );
        assert_eq!(shapes(layer(&layers, "conv1")), vec![vec![20, 1, 5, 5], vec![1, 1, 1, 20]]);
        assert_eq!(shapes(layer(&layers, "ip1")), vec![vec![1, 1, 500, 800], vec![1, 1, 1, 500]]);
    }

    #[test]
    fn cifar10_v1_and_mean() {
        let layers = read_caffemodel(&fixture("cifar10_quick_v1/cifar10_quick_iter_5000.caffemodel")).unwrap();
        assert_eq!(shapes(layer(&layers, "conv1"))[0], vec![32, 3, 5, 5]);
        assert_eq!(shapes(layer(&layers, "conv3"))[0], vec![64, 32, 5, 5]);
        assert_eq!(shapes(layer(&layers, "ip1"))[0], vec![1, 1, 64, 1024]);
        assert_eq!(shapes(layer(&layers, "ip2"))[0], vec![1, 1, 10, 64]);

        let mean = read_binaryproto(&fixture("cifar10_quick_v1/mean.binaryproto")).unwrap();
        assert_eq!(mean.shape, vec![1, 3, 32, 32]);
        let expected = [125.306918, 122.950394, 113.865383];
        for (channel, plane) in mean.data.chunks(32 * 32).enumerate() {
            let average = plane.iter().map(|&v| f64::from(v)).sum::<f64>() / plane.len() as f64;
            assert!((average - expected[channel]).abs() < 1e-3, "channel {channel}: {average}");
        }
    }

    #[test]
    fn opencv_layer_models() {
        let conv = read_caffemodel(&fixture("opencv_layers/layer_convolution.caffemodel")).unwrap();
        assert_eq!(shapes(layer(&conv, "output")), vec![vec![12, 2, 4, 5], vec![12]]);
        let deconv = read_caffemodel(&fixture("opencv_layers/layer_deconvolution.caffemodel")).unwrap();
        assert_eq!(shapes(layer(&deconv, "output")), vec![vec![12, 4, 4, 5], vec![12]]);
        let ip = read_caffemodel(&fixture("opencv_layers/layer_inner_product.caffemodel")).unwrap();
        assert_eq!(shapes(layer(&ip, "output")), vec![vec![2, 113], vec![2]]);
    }

    #[test]
    fn unpacked_fixed32_data_and_unpacked_dims() {
        let mut blob = Vec::new();
        key(BLOB_SHAPE, 2, &mut blob);
        let mut shape = Vec::new();
        key(SHAPE_DIM, 0, &mut shape);
        varint(2, &mut shape);
        key(SHAPE_DIM, 0, &mut shape);
        varint(1, &mut shape);
        varint(shape.len() as u64, &mut blob);
        blob.extend(&shape);
        for v in [1.5f32, -2.0] {
            key(BLOB_DATA, 5, &mut blob);
            blob.extend(v.to_le_bytes());
        }
        assert_eq!(decode_blob(&blob).unwrap(), Blob { shape: vec![2, 1], data: vec![1.5, -2.0] });
    }

    #[test]
    fn double_data_packed_and_unpacked() {
        let mut blob = Vec::new();
        bytes_field(BLOB_SHAPE, &packed_dims(&[3]), &mut blob);
        let packed: Vec<u8> = [0.25f64, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes_field(BLOB_DOUBLE_DATA, &packed, &mut blob);
        key(BLOB_DOUBLE_DATA, 1, &mut blob);
        blob.extend(8.5f64.to_le_bytes());
        assert_eq!(decode_blob(&blob).unwrap().data, vec![0.25, 4.0, 8.5]);
    }

    #[test]
    fn legacy_dims() {
        let mut blob = Vec::new();
        for (number, dim) in [(1, 1), (2, 1), (3, 2), (4, 2)] {
            key(number, 0, &mut blob);
            varint(dim, &mut blob);
        }
        bytes_field(BLOB_DATA, &packed_floats(&[1.0, 2.0, 3.0, 4.0]), &mut blob);
        assert_eq!(decode_blob(&blob).unwrap().shape, vec![1, 1, 2, 2]);
        // The same dims in a shape agree; different ones are an error.
        let mut agreeing = blob.clone();
        bytes_field(BLOB_SHAPE, &packed_dims(&[1, 1, 2, 2]), &mut agreeing);
        assert!(decode_blob(&agreeing).is_ok());
        bytes_field(BLOB_SHAPE, &packed_dims(&[4]), &mut blob);
        assert!(decode_blob(&blob).unwrap_err().to_string().contains("disagrees"));
    }

    #[test]
    fn bad_blobs_are_errors() {
        let error = |blob: &[u8]| decode_blob(blob).unwrap_err().to_string();

        let mut mismatch = Vec::new();
        bytes_field(BLOB_SHAPE, &packed_dims(&[2, 3]), &mut mismatch);
        bytes_field(BLOB_DATA, &packed_floats(&[1.0; 5]), &mut mismatch);
        assert_eq!(error(&mismatch), "blob at byte 0: shape [2, 3] needs 6 values but 5 are stored");

        let mut empty = Vec::new();
        bytes_field(BLOB_SHAPE, &packed_dims(&[2, 3]), &mut empty);
        assert!(error(&empty).contains("holds no values"));

        let mut huge = Vec::new();
        bytes_field(BLOB_SHAPE, &packed_dims(&[1 << 20, 1 << 20, 1 << 30]), &mut huge);
        bytes_field(BLOB_DATA, &packed_floats(&[1.0]), &mut huge);
        assert!(error(&huge).contains("more than 2147483647 elements"));

        let mut overflow = Vec::new();
        bytes_field(BLOB_SHAPE, &packed_dims(&[u64::MAX >> 1, u64::MAX >> 1]), &mut overflow);
        assert!(error(&overflow).contains("elements"));

        let mut negative = Vec::new();
        bytes_field(BLOB_SHAPE, &packed_dims(&[u64::MAX]), &mut negative);
        assert!(error(&negative).contains("negative blob dimension -1"));

        let mut many_axes = Vec::new();
        bytes_field(BLOB_SHAPE, &packed_dims(&[1; 40]), &mut many_axes);
        assert!(error(&many_axes).contains("more than 32 values"));

        let mut ragged = Vec::new();
        bytes_field(BLOB_DATA, &[0, 0, 0], &mut ragged);
        assert!(error(&ragged).contains("multiple of 4"));

        // A data field that claims far more bytes than the buffer holds.
        let mut lying = Vec::new();
        key(BLOB_DATA, 2, &mut lying);
        varint(1 << 40, &mut lying);
        lying.extend([0; 8]);
        assert!(error(&lying).contains("declares 1099511627776 bytes"));
    }

    #[test]
    fn errors_name_layer_and_file() {
        let mut bad_blob = Vec::new();
        bytes_field(BLOB_SHAPE, &packed_dims(&[2]), &mut bad_blob);
        bytes_field(BLOB_DATA, &packed_floats(&[1.0]), &mut bad_blob);
        let mut layer_bytes = Vec::new();
        bytes_field(LAYER_NAME, b"conv1", &mut layer_bytes);
        bytes_field(LAYER_TYPE, b"Convolution", &mut layer_bytes);
        bytes_field(LAYER_BLOBS, &[], &mut layer_bytes);
        bytes_field(LAYER_BLOBS, &bad_blob, &mut layer_bytes);
        let mut net = Vec::new();
        bytes_field(NET_LAYER, &layer_bytes, &mut net);
        let message = decode_caffemodel(&net).unwrap_err().to_string();
        assert!(message.starts_with("layer 'conv1' blob 0: blob at byte"), "{message}");

        let missing = Path::new("/nonexistent/model.caffemodel");
        assert!(read_caffemodel(missing).unwrap_err().to_string().contains("/nonexistent/model.caffemodel"));
        assert!(decode_caffemodel(&[]).unwrap_err().to_string().contains("no layers"));
    }

    #[test]
    fn layer_count_is_bounded() {
        let mut layer = Vec::new();
        bytes_field(LAYER_NAME, b"x", &mut layer);
        let mut net = Vec::new();
        for _ in 0..=MAX_LAYERS {
            bytes_field(NET_LAYER, &layer, &mut net);
        }
        assert!(decode_caffemodel(&net).unwrap_err().to_string().contains("more than 65536 layers"));
    }

    #[test]
    fn huge_declared_lengths_are_errors() {
        // A layer, a blob and a packed run each claiming far more than the file holds.
        for claimed in [1u64 << 31, 1 << 40, u64::MAX >> 1] {
            for number in [NET_LAYER, NET_V1_LAYERS] {
                let mut net = Vec::new();
                key(number, 2, &mut net);
                varint(claimed, &mut net);
                net.extend([0x0a, 1, b'x']);
                assert!(decode_caffemodel(&net).unwrap_err().to_string().contains("declares"));
            }
            let mut blob = Vec::new();
            key(BLOB_DOUBLE_DATA, 2, &mut blob);
            varint(claimed, &mut blob);
            assert!(decode_blob(&blob).unwrap_err().to_string().contains("declares"));
        }
    }

    #[test]
    fn v0_layers_nested_in_v1() {
        let mut blob = Vec::new();
        bytes_field(BLOB_SHAPE, &packed_dims(&[2]), &mut blob);
        bytes_field(BLOB_DATA, &packed_floats(&[1.0, 2.0]), &mut blob);
        let mut v0 = Vec::new();
        bytes_field(V0_NAME, b"conv1", &mut v0);
        bytes_field(V0_TYPE, b"conv", &mut v0);
        bytes_field(V0_BLOBS, &blob, &mut v0);
        let mut v1 = Vec::new();
        bytes_field(V1_V0_LAYER, &v0, &mut v1);
        let mut net = Vec::new();
        bytes_field(NET_V1_LAYERS, &v1, &mut net);
        let layers = decode_caffemodel(&net).unwrap();
        assert_eq!(layers[0].name, "conv1");
        assert_eq!(layers[0].type_name, "Convolution");
        assert_eq!(layers[0].blobs[0].data, vec![1.0, 2.0]);
    }

    #[test]
    fn truncated_files_are_errors_not_panics() {
        let bytes = std::fs::read(fixture("lenet_mnist/lenet_iter_10000.caffemodel")).unwrap();
        for end in [1, 2, 10, 100, 1000, bytes.len() / 3, bytes.len() / 2, bytes.len() - 100, bytes.len() - 1] {
            assert!(decode_caffemodel(&bytes[..end]).is_err(), "truncated at {end} was accepted");
        }
        // Everywhere else too: an error or a shorter but valid model, never a panic.
        for end in (0..bytes.len()).step_by(997) {
            let _ = decode_caffemodel(&bytes[..end]);
        }
        // Flipped bytes must not panic either.
        let mut corrupt = bytes.clone();
        for i in (0..corrupt.len()).step_by(4099) {
            corrupt[i] ^= 0x5a;
            let _ = decode_caffemodel(&corrupt);
        }
    }
}
