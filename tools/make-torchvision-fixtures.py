#!/usr/bin/env python3
"""Builds tests/fixtures/torchvision/: torchvision's own classifier architectures at narrow
widths (so the committed files stay small) with random weights, exported to ONNX, and for
each a fixed input with three references:

- onnxruntime's outputs at the logits and at intermediate tensors (float32);
- PyTorch's logits in float64 (the same weights, the model cast to double);
- PyTorch autograd's gradient, in float64, of one logit (summed over the batch, as
  `dgnam backward` computes it) with respect to the input.
The float64 results are stored rounded to float32 (half the bytes; the tests compare to
1e-4 of the largest value, far above that rounding).

Run by hand (the Rust tests read only the committed files; CI installs no torch):
    pip install torch torchvision onnx onnxruntime
    python3 tools/make-torchvision-fixtures.py                     # every model
    python3 tools/make-torchvision-fixtures.py mobilenet_v3_small  # only the ones named
"""
import argparse
import importlib
import json
import os

import numpy as np
import onnx
import torch
import torchvision
from fixture_cases import save_case
from torch import nn
# The modules (torchvision.models.googlenet as an attribute is the builder function).
tv_googlenet = importlib.import_module("torchvision.models.googlenet")
tv_resnet = importlib.import_module("torchvision.models.resnet")
tv_squeezenet = importlib.import_module("torchvision.models.squeezenet")
tv_efficientnet = importlib.import_module("torchvision.models.efficientnet")
tv_mobilenetv3 = importlib.import_module("torchvision.models.mobilenetv3")
tv_shufflenetv2 = importlib.import_module("torchvision.models.shufflenetv2")
# onnxruntime's outputs at the graph outputs and named tensors, as the other fixtures take them.
run_ort = importlib.import_module("make-onnx-fixtures").run

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "torchvision")
CLASSES = 10
SIZE = 64  # input H = W: small enough for small files, large enough for every stage


def resnet18(width=8):
    """torchvision's ResNet-18 (BasicBlock, [2, 2, 2, 2], its _make_layer and forward) with
    the stage widths 64-128-256-512 divided by 8. ResNet's constructor fixes the widths,
    so the attributes it would set are set here with the narrow ones."""
    m = tv_resnet.ResNet.__new__(tv_resnet.ResNet)
    nn.Module.__init__(m)
    m._norm_layer = nn.BatchNorm2d
    m.inplanes, m.dilation, m.groups, m.base_width = width, 1, 1, 64
    m.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(width)
    m.relu = nn.ReLU(inplace=True)
    m.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    m.layer1 = m._make_layer(tv_resnet.BasicBlock, width, 2)
    m.layer2 = m._make_layer(tv_resnet.BasicBlock, 2 * width, 2, stride=2)
    m.layer3 = m._make_layer(tv_resnet.BasicBlock, 4 * width, 2, stride=2)
    m.layer4 = m._make_layer(tv_resnet.BasicBlock, 8 * width, 2, stride=2)
    m.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    m.fc = nn.Linear(8 * width, CLASSES)
    return m


def squeezenet1_1(d=4):
    """torchvision's SqueezeNet 1.1 layout (its Fire modules, ceil-mode pooling, the
    1x1-convolution classifier) with every channel count divided by d."""
    m = tv_squeezenet.SqueezeNet(version="1_1", num_classes=CLASSES)
    fire = tv_squeezenet.Fire
    pool = lambda: nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)  # noqa: E731
    m.features = nn.Sequential(
        nn.Conv2d(3, 64 // d, kernel_size=3, stride=2),
        nn.ReLU(inplace=True),
        pool(),
        fire(64 // d, 16 // d, 64 // d, 64 // d),
        fire(128 // d, 16 // d, 64 // d, 64 // d),
        pool(),
        fire(128 // d, 32 // d, 128 // d, 128 // d),
        fire(256 // d, 32 // d, 128 // d, 128 // d),
        pool(),
        fire(256 // d, 48 // d, 192 // d, 192 // d),
        fire(384 // d, 48 // d, 192 // d, 192 // d),
        fire(384 // d, 64 // d, 256 // d, 256 // d),
        fire(512 // d, 64 // d, 256 // d, 256 // d),
    )
    m.classifier = nn.Sequential(nn.Dropout(p=0.5), nn.Conv2d(512 // d, CLASSES, kernel_size=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))
    return m


def googlenet(d=8):
    """torchvision's GoogLeNet (its BasicConv2d, Inception blocks and forward; no auxiliary
    heads, no input transform) with every channel count divided by d, through the
    constructor's `blocks` argument; the final Linear reads the narrow 1024 // d."""

    def conv(cin, cout, **kw):
        return tv_googlenet.BasicConv2d(cin if cin == 3 else cin // d, cout // d, **kw)

    def inception(cin, *channels, **kw):
        return tv_googlenet.Inception(cin // d, *[c // d for c in channels])

    m = tv_googlenet.GoogLeNet(num_classes=CLASSES, aux_logits=False, transform_input=False, init_weights=True, blocks=[conv, inception, None])
    m.fc = nn.Linear(1024 // d, CLASSES)
    return m


def efficientnet_b0(width=0.1):
    """torchvision's EfficientNet-B0 (its MBConv blocks with depthwise convolutions, SiLU and
    squeeze-and-excitation, every block of B0's depth) at a tenth of its widths (torchvision
    rounds each to a multiple of 8, at least 8)."""
    setting, last = tv_efficientnet._efficientnet_conf("efficientnet_b0", width_mult=width, depth_mult=1.0)
    return tv_efficientnet.EfficientNet(setting, dropout=0.2, last_channel=last, num_classes=CLASSES)


def mobilenet_v3_small(width=0.25):
    """torchvision's MobileNet v3 small (its inverted residual blocks with depthwise
    convolutions, ReLU and HardSwish, squeeze-and-excitation gated by HardSigmoid, and the
    classifier's HardSwish and Dropout) at a quarter of its widths (rounded by torchvision to
    multiples of 8). torchvision draws the classifier's weights with sd 0.01, which leaves
    logits near 1e-2: its two Linear layers get sd 1/sqrt(fan_in) and bias sd 0.1 instead."""
    setting, last = tv_mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=width)
    m = tv_mobilenetv3.MobileNetV3(setting, last_channel=last, num_classes=CLASSES)
    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, 0, mod.in_features**-0.5)
            nn.init.normal_(mod.bias, 0, 0.1)
    return m


def shufflenet_v2(width=8):
    """torchvision's ShuffleNet v2 (its InvertedResidual blocks: x.chunk(2, dim=1) into two
    branches, Concat, the channel shuffle in 2 groups; every block of x1_0's depth, [4, 8,
    4]) with x1_0's stage widths 24-116-232-464-1024 replaced by 8-16-32-64-128."""
    return tv_shufflenetv2.ShuffleNetV2([4, 8, 4], [width, 2 * width, 4 * width, 8 * width, 16 * width], num_classes=CLASSES)


def calibrate(model, rng, batch=16, affine=True):
    """Keeps every layer's activations O(1) through a deep random net: a net without
    BatchNorm has each convolution's weights and bias rescaled in turn so that its output
    has unit standard deviation on one batch of the fixture's input distribution; a net
    with BatchNorm takes its statistics from that batch, then random affine terms.
    EfficientNet's 2 x 2 late stages need a batch of 128: statistics from 16 samples left
    near-constant channels whose variance the test inputs exceed, and activations grew to
    about 1e4 by the logits; its BatchNorms keep scale 1 and shift 0 (random ones compound
    over its 49 BatchNorms to logits of several hundred). MobileNet v3 small takes the same
    (random affine terms grow its activations to several hundred by its last stage)."""
    calib = torch.tensor(rng.normal(0, 1, (batch, 3, SIZE, SIZE)), dtype=torch.float32)
    if not any(isinstance(mod, nn.BatchNorm2d) for mod in model.modules()):
        model.eval()
        for conv in [mod for mod in model.modules() if isinstance(mod, nn.Conv2d)]:
            seen = {}

            def measure(_module, _inputs, out, seen=seen):
                seen["std"] = float(out.std())

            hook = conv.register_forward_hook(measure)
            with torch.no_grad():
                model(calib)
                conv.weight.div_(seen["std"])
                conv.bias.div_(seen["std"])
            hook.remove()
        return
    # Only the BatchNorms in training mode: dropout and stochastic depth stay as at
    # inference, so the statistics are those of the net that is exported.
    model.eval()
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = 1.0
            mod.train()
    with torch.no_grad():
        model(calib)
    for mod in model.modules():
        if affine and isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.weight.data.copy_(torch.tensor(rng.uniform(0.5, 1.5, c), dtype=torch.float32))
            mod.bias.data.copy_(torch.tensor(rng.normal(0, 0.2, c), dtype=torch.float32))
    model.eval()


def intermediates(graph, op, count):
    """`count` outputs of nodes of type `op`, spread from the first third to the end."""
    outs = [n.output[0] for n in graph.node if n.op_type == op]
    picks = sorted({outs[len(outs) // 3], outs[(2 * len(outs)) // 3]})
    return picks[:count]


def export(name, make_model, intermediate_op, calib_batch=16, affine=True):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = make_model()
    calibrate(model, rng, calib_batch, affine)
    path = os.path.join(OUT, f"{name}.onnx")
    kwargs = dict(
        input_names=["input"],
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
        training=torch.onnx.TrainingMode.PRESERVE,  # BatchNormalization stays in the graph
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    torch.onnx.export(model, torch.zeros(1, 3, SIZE, SIZE), path, **kwargs)
    graph = onnx.load(path).graph
    inner = intermediates(graph, intermediate_op, 2)
    double = make_model()
    double.load_state_dict(model.state_dict())
    double = double.double().eval()
    inputs = {batch: rng.normal(0, 1, (batch, 3, SIZE, SIZE)).astype(np.float32) for batch in (1, 2)}
    # The unit whose gradient is checked: the largest logit of the first input (a logit
    # after a ReLU, as in SqueezeNet, may be dead for another).
    with torch.no_grad():
        unit = int(double(torch.tensor(inputs[1], dtype=torch.float64))[0].argmax())
    meta = {"model": f"{name}.onnx", "torchvision": torchvision.__version__, "torch": torch.__version__, "unit": unit, "intermediates": inner, "cases": []}
    for batch, x in inputs.items():
        got = run_ort(path, x, inner)
        xd = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        logits = double(xd)
        logits[:, unit].sum().backward()
        case = save_case(OUT, name, batch, x, got)
        case["logits_torch64"] = f"{name}.b{batch}.logits.torch64.npy"
        np.save(os.path.join(OUT, case["logits_torch64"]), logits.detach().numpy().astype(np.float32))
        case["input_grad_torch64"] = f"{name}.b{batch}.grad.torch64.npy"
        np.save(os.path.join(OUT, case["input_grad_torch64"]), xd.grad.numpy().astype(np.float32))
        meta["cases"].append(case)
        ort_vs_f64 = np.abs(got["logits"] - logits.detach().numpy()).max() / np.abs(logits.detach().numpy()).max()
        print(f"  batch {batch}: logits max {np.abs(got['logits']).max():.3f}, onnxruntime vs float64 {ort_vs_f64:.2e}")
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    params = sum(p.numel() for p in model.parameters())
    print(f"{path}: {params} parameters, ops {sorted({n.op_type for n in graph.node})}, intermediates {inner}")


# Each fixture's builder and `export` arguments, in the order a full run writes them.
MODELS = {
    "resnet18": (resnet18, "Relu", {}),
    "squeezenet1_1": (squeezenet1_1, "Concat", {}),
    "googlenet": (googlenet, "Concat", {}),
    "efficientnet_b0": (efficientnet_b0, "Mul", dict(calib_batch=128, affine=False)),
    "mobilenet_v3_small": (mobilenet_v3_small, "Mul", dict(calib_batch=128, affine=False)),
    "shufflenet_v2": (shufflenet_v2, "Slice", {}),
}


def main():
    parser = argparse.ArgumentParser(description="Writes tests/fixtures/torchvision/.")
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"the models to (re)write, of {', '.join(MODELS)} (default: all)")
    names = parser.parse_args().models or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model {', '.join(unknown)} (known: {', '.join(MODELS)})")
    os.makedirs(OUT, exist_ok=True)
    for name in names:
        make_model, intermediate_op, kwargs = MODELS[name]
        export(name, make_model, intermediate_op, **kwargs)


if __name__ == "__main__":
    main()
