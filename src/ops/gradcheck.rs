//! Central finite differences in f64, shared by the per-op gradient tests.

pub use crate::rng::Rng;

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
    let eps = 1e-6;
    let mut xp = x.to_vec();
    let mut worst = (0.0f64, 0usize, 0.0f64, 0.0f64);
    for i in entries {
        xp[i] = x[i] + eps;
        let up = loss(&xp);
        xp[i] = x[i] - eps;
        let down = loss(&xp);
        xp[i] = x[i];
        let numeric = (up - down) / (2.0 * eps);
        let err = (numeric - analytic[i]).abs() / (1.0 + numeric.abs().max(analytic[i].abs()));
        if err > worst.0 {
            worst = (err, i, numeric, analytic[i]);
        }
    }
    assert!(
        worst.0 < 1e-6,
        "{what}: gradient mismatch at index {}: finite difference {} vs analytic {} (rel err {:e})",
        worst.1,
        worst.2,
        worst.3,
        worst.0
    );
    assert!(analytic.iter().any(|v| *v != 0.0), "{what}: gradient is all zero, the check is vacuous");
}

/// `sum(y * r)`, the loss every check uses.
pub fn dot(y: &[f64], r: &[f64]) -> f64 {
    y.iter().zip(r).map(|(a, b)| a * b).sum()
}
