#!/usr/bin/env python3
"""Exports a tiny torch classifier that flattens with `x.view(x.size(0), -1)` and with
`x.view(x.size(0), x.size(1) * x.size(2) * x.size(3))` through the TorchScript exporter
(`dynamo=False`) at opset 11 with a dynamic batch, which writes the shape arithmetic
(Shape, Gather, Unsqueeze, Mul, Concat) before each Reshape, and onnxruntime's outputs at
batch 1 and 3, in the JSON form of tools/make-onnx-fixtures.py (tests/fixtures/onnx/).

Run by hand (the Rust tests read only the committed files):
    python3 tools/make-onnx-shape-fixtures.py
"""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import torch
from fixture_cases import save_case

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "onnx")
NAME = "view_flatten"
OPSET = 11


class ViewFlatten(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc_infer = torch.nn.Linear(4 * 3 * 3, 5)
        self.fc_product = torch.nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        inferred = y.view(y.size(0), -1)
        product = y.view(y.size(0), y.size(1) * y.size(2) * y.size(3))
        return self.fc_infer(inferred) + self.fc_product(product)


def main():
    torch.manual_seed(0)
    model = ViewFlatten().eval()
    path = os.path.join(OUT, f"{NAME}.onnx")
    torch.onnx.export(
        model,
        torch.randn(1, 3, 5, 5),
        path,
        dynamo=False,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    graph = onnx.load(path).graph
    ops = {n.op_type for n in graph.node}
    # The point of the fixture: the exporter kept the shape arithmetic in the graph.
    assert {"Shape", "Gather", "Unsqueeze", "Concat", "Mul", "Reshape"} <= ops, ops
    reshapes = [n.output[0] for n in graph.node if n.op_type == "Reshape"]
    # Every Reshape output as an extra graph output, for onnxruntime to report.
    probe = onnx.load(path)
    probe.graph.output.extend(onnx.ValueInfoProto(name=r) for r in reshapes)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    cases = []
    for batch in (1, 3):
        x = rng.standard_normal((batch, 3, 5, 5)).astype(np.float32)
        names = ["logits"] + reshapes
        values = session.run(names, {"input": x})
        cases.append(save_case(OUT, NAME, batch, x, dict(zip(names, values))))
    meta = {"model": f"{NAME}.onnx", "opset": OPSET, "dynamic_batch": True, "intermediate": reshapes[0], "cases": cases}
    with open(os.path.join(OUT, f"{NAME}.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(NAME, sorted(ops), reshapes)


if __name__ == "__main__":
    main()
