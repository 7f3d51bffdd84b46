//! The adversarial loss (DeePSiM): a discriminator D, given as a prototxt, learns to tell
//! real images from the generator's, and the generator learns to fool it. D ends in one
//! logit per image; both sides use sigmoid cross-entropy, and they take turns within
//! each step: G's gradient is taken through D as it stands, then D takes its own Adam step.

use super::adam::Adam;
use crate::graph::{Net, ParamSpec, Plan, State};
use crate::ops::Kernels;
use crate::tensor::fmt_shape;
use anyhow::{ensure, Context, Result};
use std::path::Path;

/// Checks that D reads one image of `shape` (C, H, W) and gives one logit per image.
pub fn check(plan: &Plan, path: &Path, shape: [usize; 3]) -> Result<()> {
    let d = path.display();
    ensure!(plan.inputs.len() == 1, "--discriminator-def {d}: takes {} inputs, a discriminator takes one (an image)", plan.inputs.len());
    let input = &plan.blobs[plan.inputs[0]].shape;
    ensure!(
        input[1..] == shape,
        "--discriminator-def {d}: its input {} is not the classifier's input {}",
        fmt_shape(&input[1..]),
        fmt_shape(&shape)
    );
    let out = plan.blobs[plan.last_output()].len() / plan.batch;
    ensure!(out == 1, "--discriminator-def {d}: its last layer gives {out} values per image, a discriminator gives one logit");
    Ok(())
}

/// Sigmoid cross-entropy of logit `l` against label `t`, computed without overflow.
pub fn bce(l: f64, t: f64) -> f64 {
    l.max(0.0) - l * t + (-l.abs()).exp().ln_1p()
}

fn sigmoid(l: f64) -> f64 {
    1.0 / (1.0 + (-l).exp())
}

/// One step's outcome for the generator and the discriminator.
pub struct Turn {
    /// G's adversarial loss: mean cross-entropy of D's logits on G's images against "real".
    pub loss_generator: f64,
    /// D's loss: mean cross-entropy on the real images plus on G's.
    pub loss_discriminator: f64,
    /// d loss_generator / d (G's images), batch x C x H x W.
    pub grad_fake: Vec<f32>,
}

/// D on a device at twice the batch (the real images, then the generated ones), with its
/// host weights and optimizer.
pub struct Discriminator<B: Kernels<Scalar = f32>> {
    net: Net<B>,
    state: State<B>,
    pub specs: Vec<ParamSpec>,
    pub params: Vec<Vec<f32>>,
    pub adam: Adam,
}

impl<B: Kernels<Scalar = f32>> Discriminator<B> {
    pub fn new(plan: Plan, device: B, params: Vec<Vec<f32>>, adam: Adam) -> Result<Self> {
        let specs: Vec<ParamSpec> = plan.param_specs().cloned().collect();
        let net = super::params::net_from_host(plan, device, &params)?;
        let state = net.state()?;
        Ok(Discriminator { net, state, specs, params, adam })
    }

    /// G's gradient through D on `fake`, then D's Adam step on `real` against `fake`
    /// (host images, the same count of each).
    pub fn turn(&mut self, real: &[f32], fake: &[f32]) -> Result<Turn> {
        ensure!(real.len() == fake.len(), "the discriminator takes as many real images as generated ones");
        let mut input = real.to_vec();
        input.extend_from_slice(fake);
        self.net.forward(&mut self.state, &[&input])?;
        let out = self.net.plan.last_output();
        let logits = self.net.backend.download(self.state.value(out))?;
        let n = logits.len() / 2;
        let (real_l, fake_l) = logits.split_at(n);
        let inv = 1.0 / n as f64;

        // G wants its images called real.
        let loss_generator = fake_l.iter().map(|&l| bce(l as f64, 1.0)).sum::<f64>() * inv;
        let mut seed = vec![0f32; 2 * n];
        for (s, &l) in seed[n..].iter_mut().zip(fake_l) {
            *s = ((sigmoid(l as f64) - 1.0) * inv) as f32;
        }
        self.net.backward(&mut self.state, &[(out, &seed)], false)?;
        let input_id = self.net.plan.inputs[0];
        let grad = self.state.grad(input_id).context("the discriminator's logit does not depend on its image")?;
        let grad_fake = self.net.backend.download(grad)?[real.len()..].to_vec();

        // D wants real called real and generated called generated.
        let loss_discriminator =
            real_l.iter().map(|&l| bce(l as f64, 1.0)).sum::<f64>() * inv + fake_l.iter().map(|&l| bce(l as f64, 0.0)).sum::<f64>() * inv;
        for (s, &l) in seed.iter_mut().zip(&logits) {
            *s = (sigmoid(l as f64) * inv) as f32;
        }
        for (s, &l) in seed[..n].iter_mut().zip(real_l) {
            *s = ((sigmoid(l as f64) - 1.0) * inv) as f32;
        }
        self.net.backward(&mut self.state, &[(out, &seed)], true)?;
        let grads = super::params::weight_grads(&self.net, &self.state)?;
        self.adam.step(&mut self.params, &grads)?;
        super::params::set_params(&mut self.net, &self.params)?;
        Ok(Turn { loss_generator, loss_discriminator, grad_fake })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Cpu;

    fn tiny(params: &[Vec<f32>]) -> Discriminator<Cpu<'static, f32>> {
        let text = "input: 'x' input_shape { dim: 1 dim: 1 dim: 4 dim: 4 }
            layer { name: 'c' type: 'Convolution' bottom: 'x' top: 'c' convolution_param { num_output: 2 kernel_size: 3 } }
            layer { name: 'r' type: 'ReLU' bottom: 'c' top: 'c' relu_param { negative_slope: 0.3 } }
            layer { name: 'fc' type: 'InnerProduct' bottom: 'c' top: 'fc' inner_product_param { num_output: 1 } }";
        let def = crate::caffe::netdef::parse_netdef(text).unwrap();
        let plan = Plan::new(&def, 4).unwrap();
        let lens: Vec<usize> = params.iter().map(Vec::len).collect();
        Discriminator::new(plan, Cpu::new(), params.to_vec(), Adam::new(1e-2, &lens)).unwrap()
    }

    #[test]
    fn the_generators_gradient_matches_finite_differences_and_the_discriminator_learns() {
        let mut rng = crate::rng::Rng::new(3);
        let params = vec![rng.normal_vec_f32(18, 0.5), rng.normal_vec_f32(2, 0.1), rng.normal_vec_f32(8, 0.5), vec![0.1]];
        let real = rng.normal_vec_f32(32, 1.0);
        let fake = rng.normal_vec_f32(32, 1.0);
        let turn = tiny(&params).turn(&real, &fake).unwrap();
        let eps = 1e-2f32;
        for i in [0, 5, 17, 31] {
            let loss = |d: f32| {
                let mut f = fake.clone();
                f[i] += d;
                tiny(&params).turn(&real, &f).unwrap().loss_generator
            };
            let numeric = (loss(eps) - loss(-eps)) / (2.0 * eps as f64);
            let analytic = turn.grad_fake[i] as f64;
            assert!((numeric - analytic).abs() < 1e-3 * (1.0 + analytic.abs()), "pixel {i}: {numeric} vs {analytic}");
        }
        // Repeated turns on the same images: D's loss falls.
        let mut d = tiny(&params);
        let first = d.turn(&real, &fake).unwrap().loss_discriminator;
        let last = (0..50).map(|_| d.turn(&real, &fake).unwrap().loss_discriminator).last().unwrap();
        assert!(last < 0.5 * first, "the discriminator's loss went from {first} to {last}");
    }

    #[test]
    fn cross_entropy_is_stable_and_right() {
        assert!((bce(0.0, 1.0) - std::f64::consts::LN_2).abs() < 1e-15);
        assert!((bce(2.0, 1.0) - (1.0 + (-2.0f64).exp()).ln()).abs() < 1e-15);
        assert!((bce(2.0, 0.0) - (1.0 + 2.0f64.exp()).ln()).abs() < 1e-12);
        // Huge logits: no overflow, the loss is |l| when wrong and about 0 when right.
        assert!((bce(1000.0, 0.0) - 1000.0).abs() < 1e-9 && bce(1000.0, 1.0) < 1e-300);
        assert!((bce(-1000.0, 1.0) - 1000.0).abs() < 1e-9);
    }
}
