"""Shared fixtures: the repository, the command-line binaries built from it, and small
nets converted by the command line itself (the shipped LeNet and the tiny stand-ins for
CaffeNet and the fc6 generator that the Rust tests use)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def binary(name):
    """target/release/<name> (or $DGNAM_BIN_DIR/<name>): the command line to compare with."""
    where = Path(os.environ.get("DGNAM_BIN_DIR", ROOT / "target" / "release"))
    exe = where / name
    if not exe.is_file():
        pytest.fail(f"{exe} is missing: build it first (cargo build --release)")
    return exe


def run_cli(name, *args, ok=True, cwd=None):
    """Runs a binary; returns (stdout, stderr). With ok=False it must fail."""
    r = subprocess.run([str(binary(name)), *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if ok:
        assert r.returncode == 0, f"{name} {args}: {r.stderr}"
    else:
        assert r.returncode != 0, f"{name} {args} should have failed"
    return r.stdout, r.stderr


def cli_error(name, *args):
    """The one-line message a failing command prints after 'error: '."""
    _, err = run_cli(name, *args, ok=False)
    lines = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0][len("error: "):]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(generator, classifier): tests/fixtures/tiny with the seeded random weights the Rust
    tests give them (code 8 -> image 3x8x8; classifier 3x6x6 -> fc8 of 5 units)."""
    d = tmp_path_factory.mktemp("tiny")
    gen, clf = d / "gen.dgnw", d / "clf.dgnw"
    fixtures = ROOT / "tests" / "fixtures" / "tiny"
    run_cli("dgnam-convert", "--prototxt", fixtures / "generator.prototxt", "--random-weights", 21, "-o", gen)
    run_cli("dgnam-convert", "--prototxt", fixtures / "classifier.prototxt", "--random-weights", 22, "-o", clf)
    return gen, clf


@pytest.fixture(scope="session")
def lenet(tmp_path_factory):
    """The shipped LeNet (weights/demo) converted by dgnam-convert."""
    out = tmp_path_factory.mktemp("lenet") / "lenet.dgnw"
    demo = ROOT / "weights" / "demo"
    run_cli("dgnam-convert", "--prototxt", demo / "lenet.prototxt", "--caffemodel", demo / "lenet_iter_10000.caffemodel", "-o", out)
    return out
