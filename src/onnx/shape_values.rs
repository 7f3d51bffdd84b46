//! Integer shape arithmetic evaluated at conversion. Exporters compute a Reshape's target
//! from `Shape` (torch's `x.view(x.size(0), -1)` is Shape, Gather, Unsqueeze, Concat): every
//! element of such a value is a number known now, or the batch (axis 0 of a computed
//! tensor), which only the run decides. Values are scalars or 1-D, as shape values are.

use super::proto::{TensorProto, Values};
use anyhow::{bail, ensure, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Elem {
    Known(i64),
    Batch,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IntValue {
    /// Rank 0 (one element) rather than 1.
    pub scalar: bool,
    pub elems: Vec<Elem>,
}

impl IntValue {
    fn vector(elems: Vec<Elem>) -> IntValue {
        IntValue { scalar: false, elems }
    }

    /// An int64 constant of rank 0 or 1.
    pub fn from_constant(t: &TensorProto) -> Option<IntValue> {
        match (&t.values, t.dims.len()) {
            (Values::I64(v), rank @ (0 | 1)) => Some(IntValue { scalar: rank == 0, elems: v.iter().map(|&k| Elem::Known(k)).collect() }),
            _ => None,
        }
    }

    /// The numbers, where none is the batch (indices, axes, slice bounds).
    pub fn numbers(&self, l: &str, what: &str) -> Result<Vec<i64>> {
        self.elems
            .iter()
            .map(|e| match e {
                Elem::Known(k) => Ok(*k),
                Elem::Batch => bail!("{l}: the {what} depend on the batch, which is known only at run time"),
            })
            .collect()
    }
}

/// An axis in `[-rank, rank)` as a non-negative one.
fn axis(l: &str, a: i64, rank: usize, what: &str) -> Result<usize> {
    let r = rank as i64;
    ensure!((-r..r).contains(&a), "{l}: {what} {a} is out of range for rank {rank}");
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// `Shape`, axes `start` to `end` (opset 15; negative counts from the end, clamped to the
/// rank). `batched`: axis 0 is the batch (a computed tensor), not a constant's first axis.
pub fn shape_of(dims: &[usize], batched: bool, start: i64, end: i64) -> IntValue {
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (start, end) = (clamp(start), clamp(end));
    let elem = |i: usize| if i == 0 && batched { Elem::Batch } else { Elem::Known(dims[i] as i64) };
    IntValue::vector((start..end.max(start)).map(elem).collect())
}

/// `Gather` along axis 0 of a 1-D value; scalar indices give a scalar.
pub fn gather(l: &str, data: &IntValue, indices: &IntValue, gather_axis: i64) -> Result<IntValue> {
    ensure!(!data.scalar, "{l}: gathering from a scalar");
    axis(l, gather_axis, 1, "axis")?;
    let n = data.elems.len();
    let picked = indices.numbers(l, "indices")?.into_iter().map(|i| Ok(data.elems[axis(l, i, n, "index")?])).collect::<Result<Vec<_>>>()?;
    Ok(IntValue { scalar: indices.scalar, elems: picked })
}

/// `Unsqueeze` of a scalar into a 1-D value (axes [0] or [-1]); higher ranks are not shape
/// values.
pub fn unsqueeze(l: &str, x: &IntValue, axes: &[i64]) -> Result<IntValue> {
    let rank = if x.scalar { 0 } else { 1 };
    ensure!(x.scalar && matches!(axes, [0] | [-1]), "{l}: axes {axes:?} on a rank-{rank} value are not supported (only a scalar made 1-D)");
    Ok(IntValue::vector(x.elems.clone()))
}

/// `Squeeze` of a 1-D value of one element into a scalar (axes [0], [-1] or none).
pub fn squeeze(l: &str, x: &IntValue, axes: Option<&[i64]>) -> Result<IntValue> {
    ensure!(!x.scalar, "{l}: squeezing a scalar");
    match axes {
        None if x.elems.len() != 1 => Ok(x.clone()),
        None | Some([0] | [-1]) if x.elems.len() == 1 => Ok(IntValue { scalar: true, elems: x.elems.clone() }),
        _ => bail!("{l}: axes {:?} of a 1-D value of {} elements cannot be squeezed", axes.unwrap_or(&[]), x.elems.len()),
    }
}

/// `Concat` of 1-D values along axis 0.
pub fn concat(l: &str, parts: &[IntValue], concat_axis: i64) -> Result<IntValue> {
    axis(l, concat_axis, 1, "axis")?;
    ensure!(parts.iter().all(|p| !p.scalar), "{l}: concatenating a scalar (ONNX needs 1-D inputs)");
    Ok(IntValue::vector(parts.iter().flat_map(|p| p.elems.iter().copied()).collect()))
}

/// `Slice` of a 1-D value, with ONNX's clamping of the bounds and any nonzero step.
pub fn slice(l: &str, x: &IntValue, starts: &[i64], ends: &[i64], axes: Option<&[i64]>, steps: Option<&[i64]>) -> Result<IntValue> {
    ensure!(!x.scalar, "{l}: slicing a scalar");
    ensure!(starts.len() == 1 && ends.len() == 1, "{l}: starts {starts:?} and ends {ends:?} need one value each for a 1-D value");
    if let Some(a) = axes {
        ensure!(a.len() == 1, "{l}: axes {a:?} need one value for a 1-D value");
        axis(l, a[0], 1, "axis")?;
    }
    let step = match steps {
        None => 1,
        Some([s]) if *s != 0 => *s,
        Some(s) => bail!("{l}: steps {s:?} are not one nonzero value"),
    };
    let n = x.elems.len() as i64;
    if n == 0 {
        return Ok(x.clone());
    }
    let bound = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
    let (mut i, end) = if step > 0 {
        (bound(starts[0]).clamp(0, n), bound(ends[0]).clamp(0, n))
    } else {
        (bound(starts[0]).clamp(0, n - 1), bound(ends[0]).clamp(-1, n - 1))
    };
    let mut elems = vec![];
    while (step > 0 && i < end) || (step < 0 && i > end) {
        elems.push(x.elems[i as usize]);
        i = i.saturating_add(step);
    }
    Ok(IntValue::vector(elems))
}

/// `Add`, `Sub`, `Mul` or `Div` (truncating, as onnxruntime's integer division) with
/// broadcasting of one-element operands. The batch passes through only unchanged (times or
/// divided by 1, plus or minus 0).
pub fn arithmetic(l: &str, op: &str, a: &IntValue, b: &IntValue) -> Result<IntValue> {
    let (n, m) = (a.elems.len(), b.elems.len());
    ensure!(n == m || n == 1 || m == 1, "{l}: operands of {n} and {m} elements do not broadcast");
    // One element broadcasts against any length, none included.
    let len = if n == 1 { m } else { n };
    let at = |v: &IntValue, i: usize| v.elems[if v.elems.len() == 1 { 0 } else { i }];
    let apply = |x: Elem, y: Elem| -> Result<Elem> {
        let known = match (x, y) {
            (Elem::Known(p), Elem::Known(q)) => (p, q),
            (Elem::Batch, Elem::Known(1)) if matches!(op, "Mul" | "Div") => return Ok(Elem::Batch),
            (Elem::Known(1), Elem::Batch) if op == "Mul" => return Ok(Elem::Batch),
            (Elem::Batch, Elem::Known(0)) if matches!(op, "Add" | "Sub") => return Ok(Elem::Batch),
            (Elem::Known(0), Elem::Batch) if op == "Add" => return Ok(Elem::Batch),
            (x, y) => bail!("{l}: {} {op} {} depends on the batch, which is known only at run time", show(x), show(y)),
        };
        let value = match (op, known) {
            ("Add", (p, q)) => p.checked_add(q),
            ("Sub", (p, q)) => p.checked_sub(q),
            ("Mul", (p, q)) => p.checked_mul(q),
            (_, (p, q)) => p.checked_div(q),
        };
        value.map(Elem::Known).ok_or_else(|| anyhow::anyhow!("{l}: {} {op} {} has no int64 result", known.0, known.1))
    };
    let elems = (0..len).map(|i| apply(at(a, i), at(b, i))).collect::<Result<_>>()?;
    Ok(IntValue { scalar: a.scalar && b.scalar, elems })
}

fn show(e: Elem) -> String {
    match e {
        Elem::Known(k) => k.to_string(),
        Elem::Batch => "the batch".to_string(),
    }
}

/// A Reshape's target as the engine's dims: the batch becomes 0 (copy the input's axis 0,
/// as in Caffe), which is right only at position 0 and without `allowzero`.
pub fn reshape_dims(l: &str, shape: &IntValue, allowzero: bool) -> Result<Vec<i64>> {
    ensure!(!shape.scalar, "{l}: the shape is a scalar, not a 1-D tensor");
    if allowzero && shape.elems.contains(&Elem::Known(0)) {
        bail!("{l}: allowzero with a zero dimension is not supported");
    }
    shape
        .elems
        .iter()
        .enumerate()
        .map(|(i, e)| match e {
            Elem::Known(k) => Ok(*k),
            Elem::Batch if i == 0 => Ok(0),
            Elem::Batch => bail!("{l}: the shape puts the batch at position {i}; the engine's Reshape keeps it at axis 0"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Elem::{Batch, Known};

    fn v(elems: &[Elem]) -> IntValue {
        IntValue::vector(elems.to_vec())
    }

    #[test]
    fn shape_slices_as_opset_15_says() {
        let s = [2, 3, 4, 5];
        assert_eq!(shape_of(&s, true, 0, i64::MAX).elems, vec![Batch, Known(3), Known(4), Known(5)]);
        assert_eq!(shape_of(&s, true, 1, -1).elems, vec![Known(3), Known(4)]);
        assert_eq!(shape_of(&s, false, -10, 1).elems, vec![Known(2)]);
        assert_eq!(shape_of(&s, true, 3, 1).elems, vec![]);
    }

    #[test]
    fn the_view_chain_gives_copy_then_infer() {
        let shape = shape_of(&[1, 3, 2, 2], true, 0, 4);
        let n = gather("g", &shape, &IntValue { scalar: true, elems: vec![Known(0)] }, 0).unwrap();
        assert!(n.scalar);
        let n = unsqueeze("u", &n, &[0]).unwrap();
        let target = concat("c", &[n, v(&[Known(-1)])], 0).unwrap();
        assert_eq!(reshape_dims("r", &target, false).unwrap(), vec![0, -1]);
        let late = concat("c", &[v(&[Known(-1)]), v(&[Batch])], 0).unwrap();
        assert!(reshape_dims("r", &late, false).unwrap_err().to_string().contains("batch at position 1"));
    }

    #[test]
    fn slices_clamp_and_step() {
        let x = v(&[Known(0), Known(1), Known(2), Known(3)]);
        let s = |a, b, step| slice("s", &x, &[a], &[b], None, Some(&[step])).unwrap().elems;
        assert_eq!(s(1, i64::MAX, 1), vec![Known(1), Known(2), Known(3)]);
        assert_eq!(s(-2, 10, 1), vec![Known(2), Known(3)]);
        assert_eq!(s(-1, i64::MIN, -2), vec![Known(3), Known(1)]);
        assert_eq!(s(2, 2, 1), vec![]);
    }

    #[test]
    fn arithmetic_keeps_the_batch_only_unchanged() {
        let dims = v(&[Batch, Known(3), Known(4)]);
        let c = gather("g", &dims, &v(&[Known(1), Known(2)]), 0).unwrap();
        let one = IntValue { scalar: true, elems: vec![Known(12)] };
        assert_eq!(arithmetic("m", "Mul", &c, &one).unwrap().elems, vec![Known(36), Known(48)]);
        assert_eq!(arithmetic("d", "Div", &v(&[Batch, Known(7)]), &v(&[Known(1), Known(2)])).unwrap().elems, vec![Batch, Known(3)]);
        let err = arithmetic("m", "Mul", &v(&[Batch]), &one).unwrap_err().to_string();
        assert_eq!(err, "m: the batch Mul 12 depends on the batch, which is known only at run time");
        assert!(arithmetic("d", "Div", &one, &v(&[Known(0)])).is_err());
        assert_eq!(arithmetic("a", "Add", &v(&[]), &one).unwrap().elems, vec![]);
    }

    #[test]
    fn squeeze_and_unsqueeze_change_the_rank_only() {
        let one = v(&[Batch]);
        let s = squeeze("s", &one, None).unwrap();
        assert!(s.scalar);
        assert_eq!(unsqueeze("u", &s, &[-1]).unwrap(), one);
        assert!(unsqueeze("u", &one, &[0]).is_err());
        assert!(squeeze("s", &v(&[Known(1), Known(2)]), Some(&[0])).is_err());
    }
}
