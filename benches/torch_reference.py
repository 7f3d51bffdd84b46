"""The DGN-AM step in PyTorch, for a side-by-side with `dgnam bench` on the GPU machine.

The fc6 DeePSiM generator and CaffeNet are built layer for layer with random weights at
their real shapes. One step is: generator forward, center crop 256 -> 227, CaffeNet
forward to fc8, backward of one fc8 unit per sample to the code. The normalized update
and clamp are a few elementwise ops and are included. cuDNN runs in f32 and in TF32.

Usage: python3 benches/torch_reference.py [--batch 1,8,32,64] [--iters 20] [--device cuda|cpu]
Prints one line per (precision, batch) and, with --json FILE, writes the numbers.
"""
import argparse, json, statistics, time
import torch
import torch.nn as nn
import torch.nn.functional as F


class Generator(nn.Module):
    """weights/generator-fc6.prototxt: 3 fc layers, then deconvolutions to 3x256x256."""

    def __init__(self):
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(4096, 4096) for _ in range(3)])  # defc7, defc6, defc5
        spec = [  # (in, out, kernel, stride, pad), all leaky ReLU 0.3 except the last
            (256, 256, 4, 2, 1), (256, 512, 3, 1, 1), (512, 256, 4, 2, 1), (256, 256, 3, 1, 1),
            (256, 128, 4, 2, 1), (128, 128, 3, 1, 1), (128, 64, 4, 2, 1), (64, 32, 4, 2, 1),
            (32, 3, 4, 2, 1),
        ]
        self.deconv = nn.ModuleList([nn.ConvTranspose2d(i, o, k, s, p) for i, o, k, s, p in spec])

    def forward(self, code):
        x = code
        for fc in self.fc:
            x = F.leaky_relu(fc(x), 0.3)
        x = x.view(-1, 256, 4, 4)
        for i, d in enumerate(self.deconv):
            x = d(x)
            if i + 1 < len(self.deconv):
                x = F.leaky_relu(x, 0.3)
        return x


class CaffeNet(nn.Module):
    """weights/caffenet.prototxt up to fc8 (pre-softmax), Caffe's ceil-mode pooling."""

    def __init__(self):
        super().__init__()
        self.conv = nn.ModuleList([
            nn.Conv2d(3, 96, 11, 4), nn.Conv2d(96, 256, 5, 1, 2, groups=2), nn.Conv2d(256, 384, 3, 1, 1),
            nn.Conv2d(384, 384, 3, 1, 1, groups=2), nn.Conv2d(384, 256, 3, 1, 1, groups=2),
        ])
        self.fc6, self.fc7, self.fc8 = nn.Linear(9216, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 1000)
        self.lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)

    def forward(self, x):
        pool = lambda t: F.max_pool2d(t, 3, 2, ceil_mode=True)
        x = self.lrn(pool(F.relu(self.conv[0](x))))
        x = self.lrn(pool(F.relu(self.conv[1](x))))
        x = F.relu(self.conv[2](x))
        x = F.relu(self.conv[3](x))
        x = pool(F.relu(self.conv[4](x)))
        x = F.relu(self.fc6(x.flatten(1)))
        x = F.relu(self.fc7(x))
        return self.fc8(x)


def he_init(m):
    for p in m.parameters():
        if p.dim() > 1:
            nn.init.normal_(p, 0.0, (2.0 / p[0].numel()) ** 0.5)
        else:
            nn.init.normal_(p, 0.0, 0.1)


def step_time(gen, clf, batch, iters, device, bf16=False):
    units = torch.arange(batch, device=device) % 1000
    code = torch.randn(batch, 4096, device=device)
    upper = torch.full((4096,), 12.0, device=device)
    times = []
    for i in range(iters + 3):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        c = code.detach().requires_grad_(True)
        # bf16: autocast's BF16 products with f32 accumulation, the closest to dgnam's bf16.
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            img = gen(c)[:, :, 14:241, 14:241]
            fc8 = clf(img).float()
        fc8.gather(1, units[:, None]).sum().backward()
        g = c.grad
        step = 8.0 / g.abs().mean(dim=1, keepdim=True)
        code = torch.minimum(torch.clamp(c.detach() + step * g, min=0.0), upper) * 0.99
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 3:  # warm-up: cuDNN autotuning and allocation
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,8,32,64")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    gen, clf = Generator().to(a.device), CaffeNet().to(a.device)
    he_init(gen), he_init(clf)
    for p in list(gen.parameters()) + list(clf.parameters()):
        p.requires_grad_(False)
    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    rows = []
    for precision in (["f32", "tf32", "bf16"] if a.device == "cuda" else ["f32"]):
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        for b in [int(x) for x in a.batch.split(",")]:
            s = step_time(gen, clf, b, a.iters, a.device, bf16=precision == "bf16")
            row = {"precision": precision, "batch": b, "median_s": s, "image_iterations_per_s": b / s,
                   "projected_s_1000_classes_200_iters": 1000 * 200 / (b / s)}
            rows.append(row)
            print(f"torch {torch.__version__} {name} {precision:4} batch {b:3}: {s * 1e3:8.1f} ms/step, "
                  f"{b / s:8.1f} image-iterations/s, 1000 classes x 200 iterations in {row['projected_s_1000_classes_200_iters']:.0f} s",
                  flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "steps": rows}, f, indent=2)


if __name__ == "__main__":
    main()
