//! The parts of ONNX's protobuf messages (onnx.proto3) the importer reads, decoded with the
//! project's wire reader: ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto and
//! the input and output declarations. Unknown fields are skipped, as protobuf allows.

use crate::caffe::wire::{extend_f32, extend_varints, Reader, WireField, WireValue};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::path::Path;

/// More values than this in one repeated integer field is not a CNN graph.
const MAX_INTS: usize = 1 << 26;

pub struct Model {
    pub ir_version: i64,
    /// The default domain's opset ("" or "ai.onnx").
    pub opset: i64,
    pub graph: Graph,
}

#[derive(Default)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub initializers: Vec<TensorProto>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

#[derive(Default)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<Attribute>,
}

impl Node {
    /// How messages name the node: its name if it has one, else its first output.
    pub fn label(&self) -> String {
        let name = if self.name.is_empty() { self.outputs.first().map(String::as_str).unwrap_or("?") } else { &self.name };
        format!("node '{name}' ({})", self.op_type)
    }

    pub fn attr(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) => a.int.with_context(|| format!("{}: attribute {name} is not an integer", self.label())),
        }
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) => a.float.with_context(|| format!("{}: attribute {name} is not a float", self.label())),
        }
    }

    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }

    pub fn string(&self, name: &str) -> Option<&str> {
        self.attr(name).and_then(|a| a.string.as_deref())
    }
}

#[derive(Default)]
pub struct Attribute {
    pub name: String,
    pub float: Option<f32>,
    pub int: Option<i64>,
    pub string: Option<String>,
    pub tensor: Option<TensorProto>,
    pub floats: Vec<f32>,
    pub ints: Vec<i64>,
}

/// One dimension of a declared shape: a number, or a symbol (a dynamic size).
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    Value(i64),
    Param(String),
    Unknown,
}

#[derive(Default)]
pub struct ValueInfo {
    pub name: String,
    pub elem_type: i32,
    /// `None` when the type carries no shape at all.
    pub shape: Option<Vec<Dim>>,
}

/// TensorProto.DataType values the importer reads.
pub const FLOAT: i32 = 1;
pub const INT32: i32 = 6;
pub const INT64: i32 = 7;
pub const DOUBLE: i32 = 11;

#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorProto {
    pub name: String,
    pub dims: Vec<i64>,
    pub values: Values,
}

impl TensorProto {
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().map(|&d| d as usize).collect()
    }
}

fn int(f: &WireField) -> Result<i64> {
    f.int64()
}

/// Reads and decodes a `.onnx` file; tensors stored outside it are read from next to it.
pub fn read_model(path: &Path) -> Result<Model> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse_model(&bytes, dir).with_context(|| format!("{}: not a readable ONNX model", path.display()))
}

pub fn parse_model(bytes: &[u8], dir: &Path) -> Result<Model> {
    ensure!(!bytes.is_empty(), "the file is empty");
    let mut ir_version = 0;
    let mut opset = None;
    let mut graph = None;
    for field in Reader::new(bytes) {
        let field = field?;
        match field.number {
            1 => ir_version = int(&field)?,
            7 => graph = Some(parse_graph(&field, dir)?),
            8 => {
                let (mut domain, mut version) = (String::new(), 0);
                for f in field.message()? {
                    let f = f?;
                    match f.number {
                        1 => domain = f.string()?,
                        2 => version = int(&f)?,
                        _ => {}
                    }
                }
                if domain.is_empty() || domain == "ai.onnx" {
                    opset = Some(version);
                }
            }
            _ => {}
        }
    }
    let graph = graph.ok_or_else(|| anyhow!("the model has no graph (ModelProto field 7)"))?;
    // IR version 3 and later must declare their opsets; older files mean opset 1.
    let opset = opset.unwrap_or(1);
    Ok(Model { ir_version, opset, graph })
}

fn parse_graph(field: &WireField, dir: &Path) -> Result<Graph> {
    let mut g = Graph::default();
    for f in field.message()? {
        let f = f?;
        match f.number {
            1 => g.nodes.push(parse_node(&f)?),
            2 => g.name = f.string()?,
            5 => g.initializers.push(parse_tensor(&f, dir)?),
            11 => g.inputs.push(parse_value_info(&f)?),
            12 => g.outputs.push(parse_value_info(&f)?),
            15 => bail!("the graph has sparse initializers, which are not supported"),
            _ => {}
        }
    }
    Ok(g)
}

fn parse_node(field: &WireField) -> Result<Node> {
    let mut n = Node::default();
    for f in field.message()? {
        let f = f?;
        match f.number {
            1 => n.inputs.push(f.string()?),
            2 => n.outputs.push(f.string()?),
            3 => n.name = f.string()?,
            4 => n.op_type = f.string()?,
            5 => n.attributes.push(parse_attribute(&f)?),
            7 => n.domain = f.string()?,
            _ => {}
        }
    }
    Ok(n)
}

fn parse_attribute(field: &WireField) -> Result<Attribute> {
    let mut a = Attribute::default();
    let mut ints = Vec::new();
    for f in field.message()? {
        let f = f?;
        match f.number {
            1 => a.name = f.string()?,
            2 => match f.value {
                WireValue::Fixed32(bits) => a.float = Some(f32::from_bits(bits)),
                _ => bail!("attribute field 2 at byte {}: a float must be 32-bit", f.offset),
            },
            3 => a.int = Some(int(&f)?),
            4 => a.string = Some(String::from_utf8_lossy(f.bytes()?).into_owned()),
            // Graph-valued attributes (If, Loop) need no directory: such ops are refused later.
            5 => a.tensor = Some(parse_tensor(&f, Path::new("."))?),
            7 => extend_f32(&mut a.floats, &f)?,
            8 => extend_varints(&mut ints, &f, MAX_INTS)?,
            _ => {}
        }
    }
    a.ints = ints.into_iter().map(|v| v as i64).collect();
    Ok(a)
}

fn parse_value_info(field: &WireField) -> Result<ValueInfo> {
    let mut v = ValueInfo::default();
    for f in field.message()? {
        let f = f?;
        match f.number {
            1 => v.name = f.string()?,
            2 => {
                // TypeProto.tensor_type (1): elem_type (1), shape (2).
                for t in f.message()? {
                    let t = t?;
                    if t.number != 1 {
                        continue;
                    }
                    for tt in t.message()? {
                        let tt = tt?;
                        match tt.number {
                            1 => v.elem_type = int(&tt)? as i32,
                            2 => v.shape = Some(parse_shape(&tt)?),
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(v)
}

fn parse_shape(field: &WireField) -> Result<Vec<Dim>> {
    let mut dims = Vec::new();
    for d in field.message()? {
        let d = d?;
        if d.number != 1 {
            continue;
        }
        let mut dim = Dim::Unknown;
        for f in d.message()? {
            let f = f?;
            match f.number {
                1 => dim = Dim::Value(int(&f)?),
                2 => dim = Dim::Param(f.string()?),
                _ => {}
            }
        }
        dims.push(dim);
    }
    Ok(dims)
}

fn parse_tensor(field: &WireField, dir: &Path) -> Result<TensorProto> {
    let mut dims = Vec::new();
    let mut data_type = 0;
    let mut name = String::new();
    let mut floats = Vec::new();
    let mut doubles = Vec::new();
    let mut ints = Vec::new();
    let mut raw: Option<Vec<u8>> = None;
    let mut external: Vec<(String, String)> = Vec::new();
    let mut location = 0;
    for f in field.message()? {
        let f = f?;
        match f.number {
            1 => extend_varints(&mut dims, &f, 16)?,
            2 => data_type = int(&f)? as i32,
            4 => extend_f32(&mut floats, &f)?,
            5 | 7 => extend_varints(&mut ints, &f, MAX_INTS)?,
            8 => name = f.string()?,
            9 => raw = Some(f.bytes()?.to_vec()),
            10 => crate::caffe::wire::extend_f64(&mut doubles, &f)?,
            13 => {
                let (mut key, mut value) = (String::new(), String::new());
                for e in f.message()? {
                    let e = e?;
                    match e.number {
                        1 => key = e.string()?,
                        2 => value = e.string()?,
                        _ => {}
                    }
                }
                external.push((key, value));
            }
            14 => location = int(&f)?,
            _ => {}
        }
    }
    let dims: Vec<i64> = dims.into_iter().map(|d| d as i64).collect();
    let label = if name.is_empty() { "a tensor".to_string() } else { format!("tensor '{name}'") };
    ensure!(dims.iter().all(|&d| d >= 0), "{label}: negative dimension in {dims:?}");
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d as usize)).filter(|&n| n <= crate::ir::MAX_ELEMENTS);
    let count = count.ok_or_else(|| anyhow!("{label}: shape {dims:?} is too large"))?;
    if location == 1 {
        raw = Some(read_external(&external, dir, count, data_type, &label)?);
    }
    let width = match data_type {
        FLOAT | INT32 => 4,
        INT64 | DOUBLE => 8,
        other => bail!("{label}: data type {other} is not supported (float, double, int32 or int64)"),
    };
    let values = match raw {
        Some(raw) => {
            ensure!(raw.len() == count * width, "{label}: {} bytes of raw data for shape {dims:?}", raw.len());
            match data_type {
                FLOAT => Values::F32(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
                DOUBLE => Values::F32(raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()),
                INT32 => Values::I64(raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect()),
                _ => Values::I64(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()),
            }
        }
        None => match data_type {
            FLOAT => Values::F32(floats),
            DOUBLE => Values::F32(doubles.into_iter().map(|d| d as f32).collect()),
            INT32 => Values::I64(ints.into_iter().map(|v| v as i64 as i32 as i64).collect()),
            _ => Values::I64(ints.into_iter().map(|v| v as i64).collect()),
        },
    };
    let len = match &values {
        Values::F32(v) => v.len(),
        Values::I64(v) => v.len(),
    };
    ensure!(len == count, "{label}: {len} values for shape {dims:?}");
    Ok(TensorProto { name, dims, values })
}

/// A tensor stored in a file beside the model (`location`, optional `offset` and `length`).
fn read_external(entries: &[(String, String)], dir: &Path, count: usize, data_type: i32, label: &str) -> Result<Vec<u8>> {
    let get = |key: &str| entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let location = get("location").ok_or_else(|| anyhow!("{label}: external data without a location"))?;
    let relative = Path::new(location);
    ensure!(
        relative.components().all(|c| matches!(c, std::path::Component::Normal(_))),
        "{label}: external data location '{location}' must be a plain path beside the model"
    );
    let path = dir.join(relative);
    let parse = |key: &str| -> Result<Option<u64>> {
        get(key).map(|v| v.parse::<u64>().map_err(|_| anyhow!("{label}: external data {key} '{v}' is not a number"))).transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let width = if data_type == INT64 || data_type == DOUBLE { 8 } else { 4 };
    let length = parse("length")?.unwrap_or((count * width) as u64);
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(&path).with_context(|| format!("{label}: cannot open external data {}", path.display()))?;
    let size = file.metadata()?.len();
    ensure!(
        offset.checked_add(length).is_some_and(|end| end <= size),
        "{label}: external data {}..+{length} lies outside {} ({size} bytes)",
        offset,
        path.display()
    );
    ensure!(length == (count * width) as u64, "{label}: external data holds {length} bytes, the shape needs {}", count * width);
    file.seek(SeekFrom::Start(offset))?;
    let mut out = vec![0u8; length as usize];
    file.read_exact(&mut out).with_context(|| format!("{label}: reading {}", path.display()))?;
    Ok(out)
}
