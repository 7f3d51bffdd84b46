"""One case of an ONNX fixture, as every fixture script under tools/ writes it (no torch
needed): the input and each reference output as .npy files, and the case's entry for the
fixture's JSON."""
import os

import numpy as np


def save_case(out, name, batch, x, outputs):
    """Saves `x` as `<name>.b<batch>.input.npy` and each of `outputs` (tensor name -> array)
    as `<name>.b<batch>.<tensor>.npy`, in float32, `/` in a tensor name replaced by `_` as
    dgnam names its files; returns {"batch", "input", "outputs": {tensor: file}}."""
    case = {"batch": batch, "input": f"{name}.b{batch}.input.npy", "outputs": {}}
    np.save(os.path.join(out, case["input"]), x)
    for tensor, value in outputs.items():
        file = f"{name}.b{batch}.{tensor.replace('/', '_')}.npy"
        np.save(os.path.join(out, file), np.asarray(value).astype(np.float32))
        case["outputs"][tensor] = file
    return case
