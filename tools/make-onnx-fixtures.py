#!/usr/bin/env python3
"""Builds the ONNX test fixtures in tests/fixtures/onnx/: small random-weight nets
exported by torch.onnx.export, a fixed input, and onnxruntime's outputs for it.

Run by hand (the Rust tests read only the committed files):
    pip install torch onnx onnxruntime
    python3 tools/make-onnx-fixtures.py
"""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import torch
from fixture_cases import save_case
from torch import nn

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "onnx")


class OnnxLrn(torch.autograd.Function):
    """torch exports LocalResponseNorm as a chain of primitives; this exports ONNX's LRN."""

    SIZE, ALPHA, BETA, K = 5, 0.05, 0.75, 2.0

    @staticmethod
    def forward(ctx, x):
        return nn.functional.local_response_norm(x, OnnxLrn.SIZE, OnnxLrn.ALPHA, OnnxLrn.BETA, OnnxLrn.K)

    @staticmethod
    def symbolic(g, x):
        return g.op("LRN", x, size_i=OnnxLrn.SIZE, alpha_f=OnnxLrn.ALPHA, beta_f=OnnxLrn.BETA, bias_f=OnnxLrn.K)


class TinyAlexNet(nn.Module):
    """Grouped conv, ReLU, LRN, ceil-mode max pooling, Flatten, Gemm, Softmax (opset 11)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)  # 18 -> 9 (floor would give 8)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1, groups=2)
        self.pool2 = nn.MaxPool2d(3, 2)  # 9 -> 4 either way
        self.fc1 = nn.Linear(12 * 4 * 4, 16)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        x = self.pool1(OnnxLrn.apply(torch.relu(self.conv1(x))))
        x = self.pool2(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.drop(torch.relu(self.fc1(x)))
        return torch.softmax(self.fc2(x), dim=1)


class TinyResNet(nn.Module):
    """Conv+BatchNorm (folded), a residual Add, a BatchNorm after an Add (kept), LeakyReLU,
    Concat, average pooling with padding, global average pooling, Flatten, Gemm."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(8)
        self.bn_sum = nn.BatchNorm2d(8)
        self.side = nn.Conv2d(8, 4, 1)
        self.pool = nn.AvgPool2d(3, 2, padding=1, count_include_pad=True)  # 16 -> 8
        self.fc = nn.Linear(12, 6)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bn_a(self.conv_a(x)))
        y = self.bn_b(self.conv_b(y))
        x = self.bn_sum(x + y)
        x = nn.functional.leaky_relu(x, 0.1)
        x = torch.cat([x, self.side(x)], dim=1)
        x = self.pool(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation as MobileNet v3 gates its blocks: global average, 1x1 conv,
    ReLU, 1x1 conv, a hard sigmoid, and the gate times the input (gate first, as torchvision
    writes it), a Mul of [N, C, H, W] by [N, C, 1, 1]."""

    def __init__(self, channels, squeezed, gate):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = gate

    def forward(self, x):
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        s = self.gate(self.expand(torch.relu(self.reduce(s))))
        return s * x


class TinyMobile(nn.Module):
    """The ops of MobileNet v3 and EfficientNet: Hardswish, ReLU6 (Clip), a depthwise conv,
    squeeze-and-excitation with a HardSigmoid gate and with a Sigmoid gate, SiLU (Sigmoid
    times its input), a clamp with both bounds and one with only a lower bound."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.se1 = SqueezeExcite(8, 4, nn.Hardsigmoid())
        self.pw = nn.Conv2d(8, 12, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.se2 = SqueezeExcite(12, 4, nn.Sigmoid())
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = nn.functional.hardswish(self.bn0(self.stem(x)))
        x = nn.functional.relu6(self.bn1(self.dw(x)))
        x = self.se1(x)
        x = self.bn2(self.pw(x))
        x = x * torch.sigmoid(x)
        x = self.se2(x)
        x = torch.clamp(x, -1.5, 1.0) + torch.clamp(x, min=0.25)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


def narrow_mobilenet_v3_small():
    """torchvision's MobileNet v3 small at width 0.25 with a 64-wide head and 10 classes
    (about 90 thousand weights). torchvision's own initialization makes the logits tiny
    (classifier weights of std 0.01): the linear layers get std 1/sqrt(fan_in) instead, and
    `calibrate_batchnorm` sets every BatchNorm's statistics from a random batch."""
    import torchvision  # only this fixture needs it

    from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf

    setting, _ = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25)
    model = MobileNetV3(setting, last_channel=64, num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, m.in_features ** -0.5)
            nn.init.normal_(m.bias, 0, 0.1)
    print(f"torchvision {torchvision.__version__}")
    return model


def calibrate_batchnorm(model, rng, shape):
    """Random affine parameters, then the statistics of one random batch of 8 in every
    BatchNorm: each normalizes what it actually sees, so activations stay O(1) however deep."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data.copy_(torch.tensor(rng.uniform(0.5, 1.5, c), dtype=torch.float32))
            m.bias.data.copy_(torch.tensor(rng.normal(0, 0.3, c), dtype=torch.float32))
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: one batch gives its statistics
    model.train()
    with torch.no_grad():
        model(torch.tensor(rng.normal(0, 1, (8,) + tuple(shape[1:])), dtype=torch.float32))


def randomize_batchnorm(model, rng):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.tensor(rng.normal(0, 0.5, c), dtype=torch.float32))
            m.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, c), dtype=torch.float32))
            m.weight.data.copy_(torch.tensor(rng.uniform(0.5, 1.5, c), dtype=torch.float32))
            m.bias.data.copy_(torch.tensor(rng.normal(0, 0.3, c), dtype=torch.float32))


def run(path, x, extra=()):
    """onnxruntime's outputs for x: the graph outputs, then each tensor named in `extra`."""
    model = onnx.load(path)
    for name in extra:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))


def tensor_names(path):
    return [o for n in onnx.load(path).graph.node for o in n.output]


def export(name, make_model, shape, opset, dynamic, intermediate_op, calibrated=False):
    """`intermediate_op`: the op type (or a tuple of them) whose first node's output is
    checked besides the logits; the JSON's `intermediate` is the first."""
    torch.manual_seed(0)
    model = make_model()
    rng = np.random.default_rng(0)
    if calibrated:
        calibrate_batchnorm(model, rng, shape)
    else:
        randomize_batchnorm(model, rng)
    model.eval()
    path = os.path.join(OUT, f"{name}.onnx")
    # PRESERVE keeps BatchNormalization nodes (EVAL would fold them into the convolutions).
    kwargs = dict(input_names=["input"], output_names=["logits"], opset_version=opset, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE)
    if dynamic:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(model, torch.zeros(shape), path, **kwargs)
    graph = onnx.load(path).graph
    wanted = intermediate_op if isinstance(intermediate_op, tuple) else (intermediate_op,)
    extra = [next(n.output[0] for n in graph.node if n.op_type == op) for op in wanted]
    inner = extra[0]
    meta = {"model": f"{name}.onnx", "opset": opset, "dynamic_batch": dynamic, "intermediate": inner, "cases": []}
    for batch in (1, 3):
        x = rng.normal(0, 1, (batch,) + tuple(shape[1:])).astype(np.float32)
        if dynamic:
            got = run(path, x, extra)
        else:
            # A fixed-batch model runs one sample at a time in onnxruntime.
            parts = [run(path, x[i : i + 1], extra) for i in range(batch)]
            got = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        meta["cases"].append(save_case(OUT, name, batch, x, got))
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    ops = sorted({n.op_type for n in graph.node})
    scales = {k: float(np.abs(v).max()) for k, v in got.items()}
    print(f"{path}: opset {opset}, ops {ops}, checked {scales}")


def main():
    os.makedirs(OUT, exist_ok=True)
    export("tiny_alexnet", TinyAlexNet, (1, 3, 35, 35), 11, False, "LRN")
    export("tiny_resnet", TinyResNet, (1, 3, 16, 16), 17, True, "Relu")
    # The same net through an old opset (BatchNormalization 9, Softmax-free, Gemm 9).
    export("tiny_resnet_opset9", TinyResNet, (1, 3, 16, 16), 9, False, "LeakyRelu")
    # Opset 17 has HardSwish; opset 9 writes it as x * HardSigmoid(x) and Clip's bounds as
    # attributes (inputs from opset 11).
    export("tiny_mobile", TinyMobile, (1, 3, 16, 16), 17, True, "HardSwish")
    export("tiny_mobile_opset9", TinyMobile, (1, 3, 16, 16), 9, False, "Clip")
    # torchvision's MobileNet v3 small (narrow, random weights): its Hardswish stem, the
    # first squeeze-and-excitation's gated output, and the logits.
    export("mobilenet_v3_small", narrow_mobilenet_v3_small, (1, 3, 64, 64), 17, True, ("HardSwish", "Mul"), calibrated=True)


if __name__ == "__main__":
    main()
