//! Central finite differences in f64: the one numerical gradient check. The ops' unit tests
//! assert with [`check`] and [`check_entries`]; the case tables (`tests/op_cases.rs`) and
//! `dgnam gradcheck` read the worst coordinate from [`central_differences`].

pub use crate::rng::Rng;
use anyhow::Result;

/// The step of the unit tests' central differences.
pub const EPS: f64 = 1e-6;

/// The relative error below which an f64 gradient passes.
pub const TOLERANCE: f64 = 1e-6;

/// `|numeric - analytic| / (scale + max(|numeric|, |analytic|))`: relative for gradients
/// above `scale`, absolute (in units of `scale`) below it. Zero when both are zero.
pub fn rel_err(numeric: f64, analytic: f64, scale: f64) -> f64 {
    let diff = (numeric - analytic).abs();
    if diff == 0.0 {
        return 0.0;
    }
    diff / (scale + numeric.abs().max(analytic.abs()))
}

/// One checked coordinate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coord {
    pub index: usize,
    pub numeric: f64,
    pub analytic: f64,
    pub rel_err: f64,
}

/// What a check over some coordinates found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// The coordinate with the largest relative error (None when nothing was checked).
    pub worst: Option<Coord>,
    pub checked: usize,
    /// Coordinates skipped because their finite difference straddles a kink.
    pub kinks: usize,
}

impl Outcome {
    pub fn rel_err(&self) -> f64 {
        self.worst.map_or(0.0, |c| c.rel_err)
    }

    pub fn passes(&self, tolerance: f64) -> bool {
        self.rel_err() <= tolerance
    }
}

/// Central differences `(loss(x + eps e_i) - loss(x - eps e_i)) / 2 eps` at `entries`,
/// against `analytic` (the gradient of the loss at x), each compared by [`rel_err`] with
/// `scale`. `loss(None)` is the loss at x and `loss(Some((i, d)))` the loss with x_i moved
/// by d; it is called once at x and twice per entry.
///
/// Piecewise smooth functions (ReLU at 0, a max-pooling tie, Eltwise MAX) have kinks. When
/// the step crosses one, the central difference lands between the slopes on either side,
/// while the analytic gradient is the slope on its own side. The one-sided difference of
/// that side then reproduces the analytic gradient, and the two one-sided differences
/// disagree by about twice the central difference's error. A coordinate failing centrally
/// with both signs (the one-sided differences at least its error apart, one of them within
/// a tenth of its error of the analytic gradient) is counted in `kinks` and not compared,
/// as Caffe's GradientChecker skips its kink range. A wrong gradient on a smooth stretch
/// has one-sided differences as far off as the central one, and is compared.
pub fn central_differences(
    analytic: &[f64],
    entries: impl IntoIterator<Item = usize>,
    eps: f64,
    scale: f64,
    tolerance: f64,
    mut loss: impl FnMut(Option<(usize, f64)>) -> Result<f64>,
) -> Result<Outcome> {
    let base = loss(None)?;
    let mut out = Outcome::default();
    for i in entries {
        let up = loss(Some((i, eps)))?;
        let down = loss(Some((i, -eps)))?;
        let numeric = (up - down) / (2.0 * eps);
        let err = rel_err(numeric, analytic[i], scale);
        if err > tolerance {
            let (left, right) = ((base - down) / eps, (up - base) / eps);
            let miss = (numeric - analytic[i]).abs();
            let nearest = (left - analytic[i]).abs().min((right - analytic[i]).abs());
            if (right - left).abs() >= miss && nearest <= miss / 10.0 {
                out.kinks += 1;
                continue;
            }
        }
        out.checked += 1;
        if out.worst.is_none_or(|w| err > w.rel_err) {
            out.worst = Some(Coord { index: i, numeric, analytic: analytic[i], rel_err: err });
        }
    }
    Ok(out)
}

/// `loss` of a whole vector as [`central_differences`] asks for it: at `x`, or with one
/// entry moved (and put back exactly afterwards).
pub fn moved(x: &[f64], loss: impl Fn(&[f64]) -> f64) -> impl FnMut(Option<(usize, f64)>) -> Result<f64> {
    let mut xp = x.to_vec();
    move |change| {
        Ok(match change {
            None => loss(&xp),
            Some((i, d)) => {
                let old = xp[i];
                xp[i] = old + d;
                let l = loss(&xp);
                xp[i] = old;
                l
            }
        })
    }
}

/// Every entry of `0..n` when there are at most `max`; otherwise one random entry in each
/// run of `n / max` (spread over the whole array), the first, the last, and the entry where
/// `gradient` is largest (so a gradient that is mostly zero is still checked where it is not).
pub fn sample(n: usize, max: usize, gradient: &[f64], rng: &mut Rng) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let stride = n.div_ceil(max.max(1));
    let mut entries: Vec<usize> = (0..n).step_by(stride).map(|s| s + (rng.next_u64() % stride.min(n - s) as u64) as usize).collect();
    entries.extend([0, n - 1]);
    if let Some(top) = (0..gradient.len()).max_by(|&a, &b| gradient[a].abs().total_cmp(&gradient[b].abs())) {
        entries.push(top);
    }
    entries.sort_unstable();
    entries.dedup();
    entries
}

/// Checks `analytic` (the gradient of a scalar loss with respect to `x`) against central
/// differences of `loss` around `x`. The loss should be `sum(forward(x) * r)` for a fixed
/// random `r`, and `analytic` what the backward pass gives for `dy = r`.
#[track_caller]
pub fn check(what: &str, x: &[f64], analytic: &[f64], loss: impl Fn(&[f64]) -> f64) {
    check_entries(what, x, analytic, 0..x.len(), loss)
}

/// `check` at the given entries only (large weight arrays: a sample of them).
#[track_caller]
pub fn check_entries(what: &str, x: &[f64], analytic: &[f64], entries: impl IntoIterator<Item = usize>, loss: impl Fn(&[f64]) -> f64) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient has the wrong length");
    let out = central_differences(analytic, entries, EPS, 1.0, TOLERANCE, moved(x, loss)).expect("the loss cannot fail");
    if let Some(w) = out.worst.filter(|_| !out.passes(TOLERANCE)) {
        panic!(
            "{what}: gradient mismatch at index {}: finite difference {} vs analytic {} (rel err {:e})",
            w.index, w.numeric, w.analytic, w.rel_err
        );
    }
    assert!(analytic.iter().any(|v| *v != 0.0), "{what}: gradient is all zero, the check is vacuous");
}

/// `sum(y * r)`, the loss every check uses.
pub fn dot(y: &[f64], r: &[f64]) -> f64 {
    y.iter().zip(r).map(|(a, b)| a * b).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kink_is_skipped_and_a_wrong_gradient_is_not() {
        // |x| at x = 1e-7: the step of 1e-6 crosses the kink at 0.
        let abs = |x: &[f64]| x[0].abs();
        let out = central_differences(&[1.0], [0], 1e-6, 1.0, TOLERANCE, moved(&[1e-7], abs)).unwrap();
        assert_eq!((out.checked, out.kinks), (0, 1));
        // The same point with the gradient of the other side, or twice the right one.
        for wrong in [-1.0, 2.0] {
            let out = central_differences(&[wrong], [0], 1e-6, 1.0, TOLERANCE, moved(&[1e-7], abs)).unwrap();
            assert_eq!((out.checked, out.kinks), (1, 0));
            assert!(out.rel_err() > 0.1, "{out:?}");
        }
        // A gradient off by 1e-5 on a smooth stretch is not taken for a kink.
        let square = |x: &[f64]| x[0] * x[0];
        let out = central_differences(&[1.0 + 1e-5], [0], 1e-6, 1.0, TOLERANCE, moved(&[0.5], square)).unwrap();
        assert_eq!((out.checked, out.kinks), (1, 0));
        assert!(out.rel_err() > 4e-6, "{out:?}");
        // Away from the kink: checked.
        let out = central_differences(&[1.0], [0], 1e-6, 1.0, TOLERANCE, moved(&[0.5], abs)).unwrap();
        assert_eq!((out.checked, out.kinks), (1, 0));
        assert!(out.rel_err() < 1e-9);
    }

    #[test]
    fn the_error_is_relative_above_the_scale_and_absolute_below() {
        assert_eq!(rel_err(0.0, 0.0, 0.0), 0.0);
        assert!((rel_err(2e3, 1e3, 1.0) - 1e3 / 2001.0).abs() < 1e-12);
        assert!((rel_err(2e-9, 1e-9, 1.0) - 1e-9 / (1.0 + 2e-9)).abs() < 1e-18);
        assert!((rel_err(2e-9, 1e-9, 0.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn samples_spread_over_the_array_and_include_the_largest_gradient() {
        let mut rng = Rng::new(1);
        assert_eq!(sample(5, 8, &[0.0; 5], &mut rng), vec![0, 1, 2, 3, 4]);
        let mut g = vec![0.0; 1000];
        g[537] = -3.0;
        let s = sample(1000, 10, &g, &mut rng);
        assert!(s.len() <= 13 && s.contains(&0) && s.contains(&999) && s.contains(&537), "{s:?}");
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }
}
