"""dgnam.convert against dgnam-convert, dgnam.demo against `dgnam demo`."""

import numpy as np
import pytest
from PIL import Image

import dgnam
from conftest import ROOT, cli_error, run_cli

DEMO = ROOT / "weights" / "demo"
ONNX = ROOT / "tests" / "fixtures" / "onnx"


def test_caffe_conversion_writes_the_commands_file(tmp_path):
    proto, model = DEMO / "lenet.prototxt", DEMO / "lenet_iter_10000.caffemodel"
    run_cli("dgnam-convert", "--prototxt", proto, "--caffemodel", model, "-o", tmp_path / "cli.dgnw")
    r = dgnam.convert(proto, model, tmp_path / "py.dgnw")
    assert r == {"path": str(tmp_path / "py.dgnw"), "tensors": 8, "parameters": 431080}
    assert (tmp_path / "py.dgnw").read_bytes() == (tmp_path / "cli.dgnw").read_bytes()


def test_onnx_and_random_weights_write_the_commands_files(tmp_path):
    for space in (None, "caffe"):
        extra = ["--input-space", space] if space else []
        run_cli("dgnam-convert", "--onnx", ONNX / "tiny_resnet.onnx", *extra, "-o", tmp_path / "cli.dgnw")
        dgnam.convert(onnx=ONNX / "tiny_resnet.onnx", input_space=space, out=tmp_path / "py.dgnw")
        assert (tmp_path / "py.dgnw").read_bytes() == (tmp_path / "cli.dgnw").read_bytes()
        assert dgnam.Net(tmp_path / "py.dgnw").info()["input_space"] == (space or "torchvision")
    proto = ROOT / "tests" / "fixtures" / "tiny" / "classifier.prototxt"
    run_cli("dgnam-convert", "--prototxt", proto, "--random-weights", 3, "-o", tmp_path / "cli.dgnw")
    dgnam.convert(proto, out=tmp_path / "py.dgnw", random_weights=3)
    assert (tmp_path / "py.dgnw").read_bytes() == (tmp_path / "cli.dgnw").read_bytes()


def test_conversion_errors(tmp_path):
    proto = DEMO / "lenet.prototxt"
    missing = tmp_path / "missing.caffemodel"
    with pytest.raises(FileNotFoundError) as e:
        dgnam.convert(proto, missing, tmp_path / "o.dgnw")
    assert str(e.value) == cli_error("dgnam-convert", "--prototxt", proto, "--caffemodel", missing, "-o", tmp_path / "o.dgnw")
    # The wrong caffemodel for the net: a shape mismatch, named.
    other = ROOT / "tests" / "fixtures" / "caffe" / "cifar10_quick_v1"
    model = next(other.glob("*.caffemodel"))
    with pytest.raises(ValueError) as e:
        dgnam.convert(proto, model, tmp_path / "o.dgnw")
    assert str(e.value) == cli_error("dgnam-convert", "--prototxt", proto, "--caffemodel", model, "-o", tmp_path / "o.dgnw")
    with pytest.raises(ValueError) as e:
        dgnam.convert(proto, DEMO / "lenet_iter_10000.caffemodel", tmp_path / "o.dgnw", input_space="caffe")
    assert "--input-space applies to --onnx models only" in str(e.value)
    with pytest.raises(ValueError, match="out"):
        dgnam.convert(proto, DEMO / "lenet_iter_10000.caffemodel")
    assert not (tmp_path / "o.dgnw").exists()


def test_demo_gives_the_commands_images(tmp_path):
    run_cli("dgnam", "demo", "--out-dir", tmp_path / "cli", "--iters", 20, "--seed", 3)
    d = dgnam.demo(out_dir=tmp_path / "py", iters=20, seed=3, progress=False)
    for key, sub in [("pixel_am", "pixel-am"), ("dgn_am", "dgn-am")]:
        assert [r["digit"] for r in d[key]] == list(range(10))
        for r in d[key]:
            stem = tmp_path / "cli" / sub / f"digit_{r['digit']}"
            assert np.array_equal(r["image"], np.load(f"{stem}.image.npy")[0])
            assert np.array_equal(r["rgb"], np.asarray(Image.open(f"{stem}.png").convert("RGB")))
            assert r["rgb"].shape == (224, 224, 3)
            if key == "dgn_am":
                assert np.array_equal(r["code"], np.load(f"{stem}.code.npy")[0])
    assert np.array_equal(d["montage"], np.asarray(Image.open(tmp_path / "cli" / "montage.png").convert("RGB")))
    assert (tmp_path / "py" / "demo.gif").read_bytes() == (tmp_path / "cli" / "demo.gif").read_bytes()
    assert d["summary"].splitlines()[0].startswith("pixel AM digit 0")
    # Without a folder: the same images, nothing kept.
    again = dgnam.demo(iters=20, seed=3, progress=False)
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(again["dgn_am"], d["dgn_am"]))
