"""dgnam.Net against `dgnam forward`, `dgnam backward` and `dgnam info` on the shipped LeNet."""

import numpy as np
import pytest

import dgnam
from conftest import ROOT, cli_error, run_cli


@pytest.fixture(scope="module")
def digits():
    """Three real digits in LeNet's input space, N x 1 x 28 x 28 float32."""
    return np.ascontiguousarray(np.load(ROOT / "weights" / "demo" / "digits.npy")[:3], dtype=np.float32)


def test_forward_matches_the_command_line_bit_for_bit(lenet, digits, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, digits)
    layers = ["conv1", "pool2", "ip1", "ip2", "prob"]
    run_cli("dgnam", "forward", "--net", lenet, "--input", x, *[a for l in layers for a in ("--layer", l)], "--out-dir", tmp_path / "cli", "--device", "cpu")
    got = dgnam.Net(lenet, device="cpu").forward(digits, layers)
    assert list(got) == layers
    for l in layers:
        want = np.load(tmp_path / "cli" / f"{l}.npy")
        assert got[l].dtype == np.float32 and got[l].shape == want.shape
        assert np.array_equal(got[l], want), l


def test_forward_defaults_to_the_last_layer_and_takes_one_name(lenet, digits):
    net = dgnam.Net(lenet, device="cpu")
    last = net.forward(digits)
    assert list(last) == ["prob"]
    assert np.allclose(last["prob"].sum(axis=1), 1.0, atol=1e-5)
    # LeNet classifies the real digits as their labels.
    labels = np.load(ROOT / "weights" / "demo" / "digits-labels.npy")[:3]
    assert list(last["prob"].reshape(3, 10).argmax(axis=1)) == [int(v) for v in labels]
    assert np.array_equal(net.forward(digits, "prob")["prob"], last["prob"])


def test_any_batch_gives_each_sample_what_it_gets_alone(lenet, digits):
    net = dgnam.Net(lenet, device="cpu")
    batch = net.forward(digits, "ip2")["ip2"]
    for n in range(3):
        assert np.array_equal(net.forward(digits[n : n + 1], "ip2")["ip2"][0], batch[n])


def test_other_dtypes_and_layouts_are_converted(lenet, digits):
    net = dgnam.Net(lenet, device="cpu")
    want = net.forward(digits, "ip2")["ip2"]
    assert np.array_equal(net.forward(digits.astype(np.float64), "ip2")["ip2"], want)
    flipped = np.ascontiguousarray(digits[:, :, :, ::-1])
    strided = digits[:, :, :, ::-1]  # not contiguous: a view with a negative stride
    assert not strided.flags.c_contiguous
    assert np.array_equal(net.forward(strided, "ip2")["ip2"], net.forward(flipped, "ip2")["ip2"])
    assert np.array_equal(net.forward(digits.tolist(), "ip2")["ip2"], want)


@pytest.mark.parametrize("layer,unit,xy", [("ip2", 3, None), ("conv2", 5, None), ("conv2", 5, (1, 6))])
def test_backward_matches_the_command_line_bit_for_bit(lenet, digits, tmp_path, layer, unit, xy):
    x = tmp_path / "x.npy"
    np.save(x, digits)
    extra = ["--xy", f"{xy[0]},{xy[1]}"] if xy else []
    run_cli("dgnam", "backward", "--net", lenet, "--input", x, "--layer", layer, "--unit", unit, *extra, "--out", tmp_path / "g.npy", "--device", "cpu")
    got = dgnam.Net(lenet, device="cpu").backward(digits, layer, unit, xy=xy)
    want = np.load(tmp_path / "g.npy")
    assert got.shape == digits.shape and got.dtype == np.float32
    assert np.array_equal(got, want)
    assert np.abs(got).max() > 0


def test_backward_is_the_gradient_of_forward(lenet):
    """Central differences of forward at a few pixels agree with backward. The input is
    random: a real digit's flat background makes max-pooling ties, where a one-sided
    change picks another maximum."""
    net = dgnam.Net(lenet, device="cpu")
    rng = np.random.default_rng(0)
    x = rng.random((1, 1, 28, 28), dtype=np.float32)
    g = net.backward(x, "ip2", 7)
    eps = 1e-3
    for i, j in [(14, 14), (5, 20), (10, 3), (20, 20), (0, 27)]:
        step = np.zeros_like(x)
        step[0, 0, i, j] = eps
        up, down = net.forward(x + step, "ip2")["ip2"], net.forward(x - step, "ip2")["ip2"]
        numeric = (float(up[0, 7]) - float(down[0, 7])) / (2 * eps)
        assert abs(numeric - g[0, 0, i, j]) <= 1e-2 * np.abs(g).max(), (i, j, numeric, g[0, 0, i, j])


def test_info_is_what_dgnam_info_prints(lenet):
    out, _ = run_cli("dgnam", "info", lenet)
    info = dgnam.Net(lenet, device="cpu").info()
    assert info["text"] == out
    assert [l["name"] for l in info["layers"]] == ["conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"]
    assert info["inputs"] == [{"name": "data", "shape": [64, 1, 28, 28]}]
    assert info["layers"][-2]["outputs"] == [[64, 10]]
    assert sum(l["parameters"] for l in info["layers"]) == info["parameters"] == 431080
    assert info["weights"] == 8 and info["input_space"] == "caffe"


def test_a_bare_prototxt_runs_with_the_random_weights_of_seed_0(tmp_path):
    proto = ROOT / "weights" / "demo" / "generator-ip1.prototxt"
    converted = tmp_path / "g.dgnw"
    dgnam.convert(proto, random_weights=0, out=converted)
    code = np.random.default_rng(1).random((2, 500), dtype=np.float32)
    bare = dgnam.Net(proto, device="cpu")
    assert bare.info()["weights"] is None
    assert np.array_equal(bare.forward(code)["deconv0"], dgnam.Net(converted, device="cpu").forward(code)["deconv0"])


def test_properties(lenet):
    net = dgnam.Net(lenet, device="cpu")
    assert net.device == "cpu" and net.precision == "f32" and net.device_info == "device: cpu"
    assert net.input_shape == [64, 1, 28, 28] and net.path == str(lenet)
    assert repr(net) == f"dgnam.Net('{lenet}', device='cpu', precision='f32')"


def test_unknown_layer_is_a_value_error_with_the_commands_message(lenet, digits, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, digits)
    want = cli_error("dgnam", "forward", "--net", lenet, "--input", x, "--layer", "fc9", "--out-dir", tmp_path / "o", "--device", "cpu")
    with pytest.raises(ValueError) as e:
        dgnam.Net(lenet, device="cpu").forward(digits, ["ip2", "fc9"])
    assert str(e.value) == want and "fc9" in want
    want = cli_error("dgnam", "backward", "--net", lenet, "--input", x, "--layer", "ip2", "--unit", 10, "--out", tmp_path / "g.npy", "--device", "cpu")
    with pytest.raises(ValueError) as e:
        dgnam.Net(lenet, device="cpu").backward(digits, "ip2", 10)
    assert str(e.value) == want and "out of range" in want


def test_an_input_that_does_not_fit_is_a_value_error(lenet, tmp_path):
    wrong = np.zeros((1, 3, 28, 28), np.float32)
    x = tmp_path / "wrong.npy"
    np.save(x, wrong)
    want = cli_error("dgnam", "forward", "--net", lenet, "--input", x, "--out-dir", tmp_path / "o", "--device", "cpu")
    net = dgnam.Net(lenet, device="cpu")
    with pytest.raises(ValueError) as e:
        net.forward(wrong)
    # The command names the file, the call names its argument.
    assert str(e.value) == want.replace(str(x), "x")
    with pytest.raises(ValueError, match="x holds a non-finite value"):
        net.backward(np.full((1, 1, 28, 28), np.nan, np.float32), "ip2", 0)
    with pytest.raises(ValueError, match="does not fit"):
        net.forward(np.zeros((0, 1, 28, 28), np.float32))


def test_missing_and_broken_files(tmp_path):
    missing = tmp_path / "missing.dgnw"
    with pytest.raises(FileNotFoundError) as e:
        dgnam.Net(missing)
    assert str(e.value) == cli_error("dgnam", "info", missing)
    broken = tmp_path / "broken.dgnw"
    broken.write_bytes(b"not a weights file")
    with pytest.raises(ValueError) as e:
        dgnam.Net(broken)
    assert str(e.value) == cli_error("dgnam", "info", broken)


def test_bad_device_arguments(lenet, digits, tmp_path):
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        dgnam.Net(lenet, device="gpu")
    with pytest.raises(ValueError, match="unknown precision 'f16'"):
        dgnam.Net(lenet, precision="f16")
    x = tmp_path / "x.npy"
    np.save(x, digits)
    want = cli_error("dgnam", "--precision", "tf32", "forward", "--net", lenet, "--input", x, "--out-dir", tmp_path / "o", "--device", "cpu")
    with pytest.raises(RuntimeError) as e:
        dgnam.Net(lenet, device="cpu", precision="tf32")
    assert str(e.value) == want


def test_no_gpu_is_a_runtime_error(lenet, digits, tmp_path):
    if dgnam.Net(lenet).device == "cuda":
        pytest.skip("this machine has a usable GPU")
    x = tmp_path / "x.npy"
    np.save(x, digits)
    want = cli_error("dgnam", "forward", "--net", lenet, "--input", x, "--out-dir", tmp_path / "o", "--device", "cuda")
    with pytest.raises(RuntimeError) as e:
        dgnam.Net(lenet, device="cuda")
    assert str(e.value) == want and "no usable GPU" in want
