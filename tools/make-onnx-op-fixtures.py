#!/usr/bin/env python3
"""Builds node-by-node ONNX graphs (no exporter) for attribute combinations that the
exporters rarely write, and onnxruntime's outputs for a fixed input, in the same JSON form
as tools/make-onnx-fixtures.py (tests/fixtures/onnx/<name>.json):

- convtranspose_attrs: ConvTranspose with pads that differ between the sides, output_padding
  (rows inside and beyond the full transposed convolution), output_shape, auto_pad
  SAME_UPPER and SAME_LOWER (odd total padding), dilations with groups;
- pool_pad_attrs: AveragePool with count_include_pad 0 (floor and ceil mode, stride 1 as
  Inception's pooling branch) and 1, and a Pad node with negative pads (a crop);
- reduce_attrs (opset 17, axes an attribute) and reduce_attrs18 (opset 18, axes an input):
  ReduceMean and ReduceMax over the spatial axes, with and without keepdims, negative axes
  (what `x.mean([2, 3])` exports to, e.g. in torchvision's MNASNet);
- shuffle_attrs: ShuffleNet's channel shuffle as torch exports it (Reshape to
  [N, g, C/g, H, W], Transpose [0, 2, 1, 3, 4], Reshape back), in 2 and in 3 groups;
- slice_attrs (opset 17): Slice of channels in the middle, of the last columns by negative
  starts and an end past the axis, a Slice that keeps everything, Split by sizes and into
  equal parts; split_attrs11 (opset 11: split an attribute, Slice's starts and ends inputs)
  and split_attrs18 (opset 18: num_outputs);
- gelu_attrs (opset 17): Erf, and the exact GELU as torch's TorchScript exporter writes it
  (Div by sqrt 2, Erf, Add 1, Mul by x, Mul by 0.5); gelu_attrs20 (opset 20): the Gelu op.

Every node reads the graph input and is a graph output, so one run checks each on its own.
Run by hand (the Rust tests read only the committed files):
    pip install onnx onnxruntime numpy
    python3 tools/make-onnx-op-fixtures.py
"""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from fixture_cases import save_case
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "onnx")
OPSET = 17
CHANNELS, H, W = 3, 5, 6


def conv_transpose_nodes(rng):
    """(nodes, initializers) of ConvTranspose nodes, each with its own weights and bias."""
    cases = [
        ("ct_asymmetric", 3, 1, dict(strides=[2, 2], pads=[0, 1, 1, 2])),
        ("ct_output_padding", 3, 1, dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
        # Rows past the full output: bias alone there.
        ("ct_output_padding_beyond", 2, 1, dict(strides=[3, 2], output_padding=[2, 1])),
        ("ct_output_shape", 3, 1, dict(strides=[2, 2], output_shape=[10, 13])),
        ("ct_same_upper", 3, 1, dict(strides=[2, 2], auto_pad="SAME_UPPER")),
        ("ct_same_lower", 3, 1, dict(strides=[2, 2], auto_pad="SAME_LOWER")),
        ("ct_same_upper_k4", 4, 1, dict(strides=[2, 3], auto_pad="SAME_UPPER")),
        ("ct_dilated_grouped", 3, 3, dict(strides=[1, 2], dilations=[2, 1], group=3, pads=[2, 0, 1, 1])),
    ]
    nodes, inits = [], []
    for name, k, group, attrs in cases:
        out_per_group = 2
        w = rng.normal(0, 0.4, (CHANNELS, out_per_group, k, k)).astype(np.float32)
        b = rng.normal(0, 0.5, (out_per_group * group,)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
        nodes.append(helper.make_node("ConvTranspose", ["x", f"{name}.w", f"{name}.b"], [name], name=name, **attrs))
    return nodes, inits


def pool_pad_nodes():
    nodes = [
        helper.make_node("AveragePool", ["x"], ["ave_exclude"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0),
        helper.make_node(
            "AveragePool", ["x"], ["ave_exclude_ceil"], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0, ceil_mode=1
        ),
        # Inception's pooling branch: kernel 3, stride 1, pad 1.
        helper.make_node("AveragePool", ["x"], ["ave_exclude_stride1"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0),
        helper.make_node("AveragePool", ["x"], ["ave_include"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("Pad", ["x", "crop.pads"], ["crop"], mode="constant"),
    ]
    # N, C, H, W begins, then ends: one row off the top, one column added left, two rows
    # added below, two columns cropped off the right.
    inits = [numpy_helper.from_array(np.array([0, 0, -1, 1, 0, 0, 2, -2], dtype=np.int64), "crop.pads")]
    return nodes, inits


def reduce_nodes(opset):
    cases = [
        ("mean_keep", "ReduceMean", [2, 3], 1),
        ("mean_flat", "ReduceMean", [-1, -2], 0),
        ("max_keep", "ReduceMax", [3, 2], 1),
        ("max_flat", "ReduceMax", [2, 3], 0),
    ]
    nodes, inits = [], []
    for name, op, axes, keep in cases:
        if opset < 18:
            nodes.append(helper.make_node(op, ["x"], [name], axes=axes, keepdims=keep))
        else:
            inits.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), f"{name}.axes"))
            nodes.append(helper.make_node(op, ["x", f"{name}.axes"], [name], keepdims=keep))
    return nodes, inits


def shuffle_nodes():
    """Channel shuffles of a 6-channel input; only the final Reshapes are graph outputs."""
    nodes, inits = [], []
    for g in (2, 3):
        inits += [numpy_helper.from_array(np.array([0, g, 6 // g, H, W], dtype=np.int64), f"five{g}"),
                  numpy_helper.from_array(np.array([0, -1, H, W], dtype=np.int64), f"four{g}")]
        nodes += [helper.make_node("Reshape", ["x", f"five{g}"], [f"grouped{g}"]),
                  helper.make_node("Transpose", [f"grouped{g}"], [f"swapped{g}"], perm=[0, 2, 1, 3, 4]),
                  helper.make_node("Reshape", [f"swapped{g}", f"four{g}"], [f"shuffled{g}"])]
    return nodes, inits


def slice_nodes(opset):
    """Slices and Splits of a 6-channel input, every output a graph output."""
    big = np.iinfo(np.int64).max
    ints = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)
    inits = [ints("mid_s", [1]), ints("mid_e", [4]), ints("ax1", [1]), ints("neg_s", [-2]), ints("neg_e", [big]), ints("axm1", [-1]),
             ints("all_s", [0, 0]), ints("all_e", [100, big]), ints("ax23", [2, 3])]
    nodes = [helper.make_node("Slice", ["x", "mid_s", "mid_e", "ax1"], ["mid"]),
             helper.make_node("Slice", ["x", "neg_s", "neg_e", "axm1"], ["last_cols"]),
             helper.make_node("Slice", ["x", "all_s", "all_e", "ax23"], ["whole"])]
    if opset < 13:
        nodes.append(helper.make_node("Split", ["x"], ["sp_a", "sp_b"], axis=1, split=[2, 4]))
    else:
        inits.append(ints("sizes", [2, 4]))
        nodes.append(helper.make_node("Split", ["x", "sizes"], ["sp_a", "sp_b"], axis=1))
    extra = dict(num_outputs=3) if opset >= 18 else {}
    nodes.append(helper.make_node("Split", ["x"], ["eq0", "eq1", "eq2"], axis=-1, **extra))
    return nodes, inits


def gelu_nodes(opset):
    """Erf of the input spread over (-4, 4), and the exact GELU of it."""
    scalar = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.float32), name)
    inits = [scalar("two", 2.0)]
    nodes = [helper.make_node("Mul", ["x", "two"], ["wide"]), helper.make_node("Erf", ["wide"], ["erf"])]
    if opset >= 20:
        nodes.append(helper.make_node("Gelu", ["wide"], ["gelu"]))
    else:
        inits += [scalar("sqrt2", np.sqrt(2.0)), scalar("one", 1.0), scalar("half", 0.5)]
        nodes += [helper.make_node("Div", ["wide", "sqrt2"], ["g_div"]), helper.make_node("Erf", ["g_div"], ["g_erf"]),
                  helper.make_node("Add", ["g_erf", "one"], ["g_add"]), helper.make_node("Mul", ["wide", "g_add"], ["g_mul"]),
                  helper.make_node("Mul", ["g_mul", "half"], ["gelu"])]
    return nodes, inits


def build(name, nodes, inits, opset=OPSET, channels=CHANNELS, outputs=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, H, W])
    outputs = [helper.make_empty_tensor_value_info(n) for n in outputs or [n.output[0] for n in nodes]]
    graph = helper.make_graph(nodes, name, [x], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="make-onnx-op-fixtures")
    path = os.path.join(OUT, f"{name}.onnx")
    onnx.save(model, path)
    return path, [o.name for o in outputs]


def write(name, nodes, inits, rng, opset=OPSET, channels=CHANNELS, outputs=None):
    path, names = build(name, nodes, inits, opset, channels, outputs)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = {"model": f"{name}.onnx", "opset": opset, "dynamic_batch": True, "intermediate": names[0], "cases": []}
    for batch in (1, 3):
        x = rng.normal(0, 1, (batch, channels, H, W)).astype(np.float32)
        got = dict(zip(names, sess.run(names, {"x": x})))
        meta["cases"].append(save_case(OUT, name, batch, x, got))
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(path, {k: tuple(v.shape) for k, v in got.items()})


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    write("convtranspose_attrs", *conv_transpose_nodes(rng), rng)
    write("pool_pad_attrs", *pool_pad_nodes(), rng)
    for opset, name in [(17, "reduce_attrs"), (18, "reduce_attrs18")]:
        write(name, *reduce_nodes(opset), np.random.default_rng(opset), opset)
    write("shuffle_attrs", *shuffle_nodes(), np.random.default_rng(6), channels=6, outputs=["shuffled2", "shuffled3"])
    outputs = ["mid", "last_cols", "whole", "sp_a", "sp_b", "eq0", "eq1", "eq2"]
    for opset, name in [(17, "slice_attrs"), (11, "split_attrs11"), (18, "split_attrs18")]:
        write(name, *slice_nodes(opset), np.random.default_rng(opset + 100), opset, channels=6, outputs=outputs)
    for opset, name in [(17, "gelu_attrs"), (20, "gelu_attrs20")]:
        write(name, *gelu_nodes(opset), np.random.default_rng(opset + 200), opset, outputs=["erf", "gelu"])


if __name__ == "__main__":
    main()
