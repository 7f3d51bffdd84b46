//! Adam (Kingma & Ba 2015), bias-corrected, on host f32 parameters: the optimizer
//! DeePSiM trains its generators with. Each update is computed in f64; the moments are
//! stored in f32, as the weights are, so a checkpoint holds the state exactly.

use anyhow::{ensure, Result};

/// DeePSiM's (and Adam's paper's) moment decay rates.
pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.999;
pub const EPSILON: f64 = 1e-8;

/// The optimizer's state for a list of parameter blobs.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    pub lr: f64,
    /// Steps taken so far (t in the paper; the next step is t + 1).
    pub t: u64,
    /// First and second moment estimates, one vector per parameter blob.
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl Adam {
    /// A fresh optimizer for blobs of these lengths.
    pub fn new(lr: f64, lens: &[usize]) -> Adam {
        Adam { lr, t: 0, m: lens.iter().map(|&n| vec![0.0; n]).collect(), v: lens.iter().map(|&n| vec![0.0; n]).collect() }
    }

    /// One step: `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`, then
    /// `p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>]) -> Result<()> {
        ensure!(
            params.len() == self.m.len() && grads.len() == self.m.len(),
            "Adam: {} blobs, {} gradients, state for {}",
            params.len(),
            grads.len(),
            self.m.len()
        );
        for ((p, g), m) in params.iter().zip(grads).zip(&self.m) {
            ensure!(p.len() == g.len() && p.len() == m.len(), "Adam: a blob of {} values got a gradient of {}", p.len(), g.len());
        }
        self.t += 1;
        let c1 = 1.0 - BETA1.powi(self.t as i32);
        let c2 = 1.0 - BETA2.powi(self.t as i32);
        for (((p, g), m), v) in params.iter_mut().zip(grads).zip(&mut self.m).zip(&mut self.v) {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let g = g as f64;
                let m1 = BETA1 * *m as f64 + (1.0 - BETA1) * g;
                let v1 = BETA2 * *v as f64 + (1.0 - BETA2) * g * g;
                (*m, *v) = (m1 as f32, v1 as f32);
                let update = self.lr * (m1 / c1) / ((v1 / c2).sqrt() + EPSILON);
                *p = (*p as f64 - update) as f32;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_step_moves_each_weight_by_lr_against_its_gradient() {
        // Bias correction makes m_hat = g and v_hat = g^2 at t = 1: a step of lr * sign(g).
        let mut adam = Adam::new(0.01, &[3]);
        let mut p = vec![vec![1.0f32, 1.0, 1.0]];
        adam.step(&mut p, &[vec![4.0, -1e-3, 0.0]]).unwrap();
        assert!((p[0][0] - 0.99).abs() < 1e-6, "{:?}", p);
        assert!((p[0][1] - 1.01).abs() < 1e-5, "{:?}", p);
        assert_eq!(p[0][2], 1.0);
        assert_eq!(adam.t, 1);
    }

    #[test]
    fn it_minimizes_a_badly_scaled_quadratic() {
        // f = 100 x^2 + 0.01 y^2: Adam's per-coordinate scaling handles both.
        let mut adam = Adam::new(0.05, &[2]);
        let mut p = vec![vec![3.0f32, -3.0]];
        for _ in 0..2000 {
            let g = vec![200.0 * p[0][0], 0.02 * p[0][1]];
            adam.step(&mut p, &[g]).unwrap();
        }
        assert!(p[0][0].abs() < 1e-2 && p[0][1].abs() < 1e-2, "{:?}", p);
    }

    #[test]
    fn mismatched_gradients_are_errors() {
        let mut adam = Adam::new(0.01, &[2]);
        assert!(adam.step(&mut [vec![0.0; 2]], &[vec![0.0; 3]]).is_err());
        assert!(adam.step(&mut [vec![0.0; 2], vec![0.0]], &[vec![0.0; 2]]).is_err());
    }
}
