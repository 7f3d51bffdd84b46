"""CaffeNet forward + backward to the input in JAX (XLA on the CPU), the same work as
`cargo bench --bench caffenet`: random weights, batch 8, gradient of one fc8 unit summed
over the batch. Usage: python3 benches/jax_caffenet.py [BATCH]"""
import sys, time
import numpy as np
import jax, jax.numpy as jnp
from jax import lax

def conv(x, w, b, stride, pad, group):
    y = lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad), (pad, pad)],
                                 feature_group_count=group, dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y + b[None, :, None, None]

def maxpool(x):  # kernel 3, stride 2, CaffeNet's sizes divide exactly (no ceil padding needed)
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 3, 3), (1, 1, 2, 2), "VALID")

def lrn(x, n=5, alpha=1e-4, beta=0.75):
    sq = jnp.pad(x * x, ((0, 0), (n // 2, n // 2), (0, 0), (0, 0)))
    s = sum(sq[:, i:i + x.shape[1]] for i in range(n))
    return x * (1.0 + alpha / n * s) ** -beta

def caffenet(p, x):
    x = maxpool(jax.nn.relu(conv(x, *p["conv1"], 4, 0, 1))); x = lrn(x)
    x = maxpool(jax.nn.relu(conv(x, *p["conv2"], 1, 2, 2))); x = lrn(x)
    x = jax.nn.relu(conv(x, *p["conv3"], 1, 1, 1))
    x = jax.nn.relu(conv(x, *p["conv4"], 1, 1, 2))
    x = maxpool(jax.nn.relu(conv(x, *p["conv5"], 1, 1, 2)))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ p["fc6"][0].T + p["fc6"][1])
    x = jax.nn.relu(x @ p["fc7"][0].T + p["fc7"][1])
    return x @ p["fc8"][0].T + p["fc8"][1]

shapes = {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
          "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216),
          "fc7": (4096, 4096), "fc8": (1000, 4096)}
rng = np.random.default_rng(0)
params = {k: (jnp.asarray(rng.normal(0, np.sqrt(2 / np.prod(s[1:])), s), jnp.float32),
              jnp.zeros(s[0], jnp.float32)) for k, s in shapes.items()}
batch = int(sys.argv[1]) if len(sys.argv) > 1 else 8
x = jnp.asarray(rng.normal(0, 50, (batch, 3, 227, 227)), jnp.float32)
grad = jax.jit(jax.grad(lambda x: caffenet(params, x)[:, 945].sum()))
grad(x).block_until_ready()
times = []
for _ in range(7):
    t = time.perf_counter(); grad(x).block_until_ready(); times.append(time.perf_counter() - t)
print(f"jax {jax.__version__} caffenet batch {batch}: forward+backward to input {sorted(times)[3]:.3f} s (median of 7)")
