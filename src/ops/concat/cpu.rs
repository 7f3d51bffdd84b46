//! Concat along one axis and its inverse Slice: the CPU reference. Each pass is a list of
//! (destination, source) blocks in pieces across the pool (`par_pairs`).

use super::ConcatKernels;
use crate::device::cpu::par_pairs;
use crate::device::Cpu;
use crate::real::Real;
use anyhow::Result;

/// Concat along one axis: input i viewed as [outer, channels[i] * inner]; y is [outer, sum(channels) * inner].
pub fn concat_forward<T: Real>(outer: usize, inner: usize, channels: &[usize], inputs: &[&[T]], y: &mut [T]) {
    par_pairs(whole_by_parts(("concat_forward", "y", "input"), outer, inner, channels, y, inputs), |d, s| d.copy_from_slice(s));
}

/// Each `dxs[i] +=` its slice of `dy`.
pub fn concat_backward<T: Real>(outer: usize, inner: usize, channels: &[usize], dy: &[T], dxs: &mut [&mut [T]]) {
    par_pairs(parts_by_whole(("concat_backward", "dy", "gradient"), outer, inner, channels, dy, dxs), add_into);
}

/// Slice forward: each `ys[i]` = its part of `x` (x as concat_forward's y).
pub fn slice_forward<T: Real>(outer: usize, inner: usize, channels: &[usize], x: &[T], ys: &mut [&mut [T]]) {
    par_pairs(parts_by_whole(("slice_forward", "x", "top"), outer, inner, channels, x, ys), |d, s| d.copy_from_slice(s));
}

/// Slice backward: `dx +=` each `dys[i]` in its part.
pub fn slice_backward<T: Real>(outer: usize, inner: usize, channels: &[usize], dys: &[&[T]], dx: &mut [T]) {
    par_pairs(whole_by_parts(("slice_backward", "dx", "gradient"), outer, inner, channels, dx, dys), add_into);
}

/// Names for the length checks: the pass, the joined tensor, one part.
type Names = (&'static str, &'static str, &'static str);

/// Checks that `whole` is [outer, sum(channels) * inner] and each part [outer, channels[i] *
/// inner]; returns the length of one outer row of `whole`.
fn check_lens(
    names: Names,
    outer: usize,
    inner: usize,
    channels: &[usize],
    whole: usize,
    parts: impl ExactSizeIterator<Item = usize>,
) -> usize {
    let (pass, whole_name, part_name) = names;
    assert_eq!(channels.len(), parts.len(), "{pass}: {} channel counts for {} {part_name}s", channels.len(), parts.len());
    let row: usize = channels.iter().sum::<usize>() * inner;
    assert_eq!(whole, outer * row, "{pass}: {whole_name} has {whole} elements, expected {}", outer * row);
    for (i, (&c, len)) in channels.iter().zip(parts).enumerate() {
        assert_eq!(len, outer * c * inner, "{pass}: {part_name} {i} has {len} elements, expected {}", outer * c * inner);
    }
    row
}

/// The joined tensor written, in memory order (each outer index, each part's block in
/// turn), paired with the parts' blocks it takes.
fn whole_by_parts<'a, T>(
    names: Names,
    outer: usize,
    inner: usize,
    channels: &[usize],
    whole: &'a mut [T],
    parts: &[&'a [T]],
) -> Vec<(&'a mut [T], &'a [T])> {
    check_lens(names, outer, inner, channels, whole.len(), parts.iter().map(|p| p.len()));
    let mut pairs = Vec::with_capacity(outer * parts.len());
    let mut rest = whole;
    for o in 0..outer {
        for (&c, part) in channels.iter().zip(parts) {
            let (dst, tail) = rest.split_at_mut(c * inner);
            pairs.push((dst, &part[o * c * inner..][..c * inner]));
            rest = tail;
        }
    }
    pairs
}

/// Each part's blocks written, paired with the joined tensor's blocks they take.
fn parts_by_whole<'a, T>(
    names: Names,
    outer: usize,
    inner: usize,
    channels: &[usize],
    whole: &'a [T],
    parts: &'a mut [&mut [T]],
) -> Vec<(&'a mut [T], &'a [T])> {
    let row = check_lens(names, outer, inner, channels, whole.len(), parts.iter().map(|p| p.len()));
    let mut pairs = Vec::with_capacity(outer * parts.len());
    let mut start = 0;
    for (&c, part) in channels.iter().zip(parts.iter_mut()) {
        let block = c * inner;
        if block > 0 {
            for (o, d) in part.chunks_mut(block).enumerate() {
                pairs.push((d, &whole[o * row + start..][..block]));
            }
        }
        start += block;
    }
    pairs
}

/// d += s.
fn add_into<T: Real>(d: &mut [T], s: &[T]) {
    for (d, &g) in d.iter_mut().zip(s) {
        *d += g;
    }
}

impl<T: Real> ConcatKernels for Cpu<'_, T> {
    fn concat_forward(&self, outer: usize, inner: usize, channels: &[usize], x: &[&Vec<T>], y: &mut Vec<T>) -> Result<()> {
        let xs: Vec<&[T]> = x.iter().map(|v| v.as_slice()).collect();
        concat_forward(outer, inner, channels, &xs, y);
        Ok(())
    }

    fn concat_backward(&self, outer: usize, inner: usize, channels: &[usize], dy: &Vec<T>, dx: &mut [Vec<T>]) -> Result<()> {
        let mut refs: Vec<&mut [T]> = dx.iter_mut().map(|v| v.as_mut_slice()).collect();
        concat_backward(outer, inner, channels, dy, &mut refs);
        Ok(())
    }

    // Each part of dy copied out: Slice's forward pass.
    fn concat_backward_overwrite(&self, outer: usize, inner: usize, channels: &[usize], dy: &Vec<T>, dx: &mut [Vec<T>]) -> Result<()> {
        self.slice_forward(outer, inner, channels, dy, dx)
    }

    fn slice_forward(&self, outer: usize, inner: usize, channels: &[usize], x: &Vec<T>, y: &mut [Vec<T>]) -> Result<()> {
        let mut refs: Vec<&mut [T]> = y.iter_mut().map(|v| v.as_mut_slice()).collect();
        slice_forward(outer, inner, channels, x, &mut refs);
        Ok(())
    }

    fn slice_backward(&self, outer: usize, inner: usize, channels: &[usize], dy: &[&Vec<T>], dx: &mut Vec<T>) -> Result<()> {
        let dys: Vec<&[T]> = dy.iter().map(|v| v.as_slice()).collect();
        slice_backward(outer, inner, channels, &dys, dx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{self, Rng};

    #[test]
    fn concat_forward_by_hand_and_backward_accumulates() {
        // outer 2, inner 2; channels 1 and 2.
        let a = [1.0f64, 2.0, 3.0, 4.0];
        let b = [10.0f64, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0];
        let mut y = [0.0; 12];
        concat_forward(2, 2, &[1, 2], &[&a, &b], &mut y);
        assert_eq!(y, [1.0, 2.0, 10.0, 11.0, 12.0, 13.0, 3.0, 4.0, 20.0, 21.0, 22.0, 23.0]);
        let (mut da, mut db) = ([0.0; 4], [0.0; 8]);
        for _ in 0..2 {
            concat_backward(2, 2, &[1, 2], &y, &mut [&mut da[..], &mut db[..]]);
        }
        assert_eq!(da, a.map(|v| 2.0 * v));
        assert_eq!(db, b.map(|v| 2.0 * v));
    }

    #[test]
    fn slice_inverts_concat_and_its_backward_adds_into_each_part() {
        let (outer, inner, channels) = (2, 3, [1usize, 3, 2]);
        let mut rng = Rng::new(5);
        let x = rng.uniform_vec(outer * 6 * inner, -1.0, 1.0);
        let mut parts: Vec<Vec<f64>> = channels.iter().map(|c| vec![f64::NAN; outer * c * inner]).collect();
        {
            let mut views: Vec<&mut [f64]> = parts.iter_mut().map(|v| &mut v[..]).collect();
            slice_forward(outer, inner, &channels, &x, &mut views);
        }
        let mut whole = vec![0.0; x.len()];
        concat_forward(outer, inner, &channels, &[&parts[0], &parts[1], &parts[2]], &mut whole);
        assert_eq!(whole, x);
        // Part 1 (channels 1..4 of each row) gets a zero gradient: dx keeps its values there.
        let zero = vec![0.0; parts[1].len()];
        let mut dx = vec![1.0; x.len()];
        slice_backward(outer, inner, &channels, &[&parts[0][..], &zero[..], &parts[2][..]], &mut dx);
        for (i, (&d, &v)) in dx.iter().zip(&x).enumerate() {
            let channel = i % (6 * inner) / inner;
            let want = if (1..4).contains(&channel) { 1.0 } else { 1.0 + v };
            assert_eq!(d, want, "element {i}");
        }
    }

    #[test]
    fn gradcheck_slice_three_tops() {
        let (outer, inner, channels) = (3, 4, [2usize, 1, 3]);
        let mut rng = Rng::new(9);
        let x = rng.uniform_vec(outer * 6 * inner, -1.0, 1.0);
        let rs: Vec<Vec<f64>> = channels.iter().map(|c| rng.uniform_vec(outer * c * inner, -1.0, 1.0)).collect();
        let mut dx = vec![0.0; x.len()];
        let dys: Vec<&[f64]> = rs.iter().map(|r| &r[..]).collect();
        slice_backward(outer, inner, &channels, &dys, &mut dx);
        gradcheck::check("slice", &x, &dx, |xp| {
            let mut parts: Vec<Vec<f64>> = channels.iter().map(|c| vec![0.0; outer * c * inner]).collect();
            let mut views: Vec<&mut [f64]> = parts.iter_mut().map(|v| &mut v[..]).collect();
            slice_forward(outer, inner, &channels, xp, &mut views);
            parts.iter().zip(&rs).map(|(p, r)| gradcheck::dot(p, r)).sum()
        });
    }

    #[test]
    fn gradcheck_concat_three_inputs() {
        let (outer, inner, channels) = (3, 5, [2usize, 1, 3]);
        let mut rng = Rng::new(3);
        let lens: Vec<usize> = channels.iter().map(|c| outer * c * inner).collect();
        let xs: Vec<Vec<f64>> = lens.iter().map(|&n| rng.uniform_vec(n, -1.0, 1.0)).collect();
        let total = outer * 6 * inner;
        let r = rng.uniform_vec(total, -1.0, 1.0);
        let mut dxs: Vec<Vec<f64>> = lens.iter().map(|&n| vec![0.0; n]).collect();
        {
            let mut views: Vec<&mut [f64]> = dxs.iter_mut().map(|v| &mut v[..]).collect();
            concat_backward(outer, inner, &channels, &r, &mut views);
        }
        for i in 0..3 {
            gradcheck::check(&format!("concat input {i}"), &xs[i], &dxs[i], |xp| {
                let mut ins: Vec<&[f64]> = xs.iter().map(|v| &v[..]).collect();
                ins[i] = xp;
                let mut y = vec![0.0; total];
                concat_forward(outer, inner, &channels, &ins, &mut y);
                gradcheck::dot(&y, &r)
            });
        }
    }
}
