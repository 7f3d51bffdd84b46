"""docs/python.md runs as written: its python blocks in order, in one namespace, from a
folder that sees the repository's weights/; a text block right after a python block is
exactly what that block prints."""

import contextlib
import io
import os
import re

import numpy as np

import dgnam
from conftest import ROOT


def blocks():
    text = (ROOT / "docs" / "python.md").read_text()
    return re.findall(r"^```(\w+)\n(.*?)^```$", text, re.M | re.S)


def test_the_python_guide_runs_and_prints_what_it_shows(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    (tmp_path / "weights").symlink_to(ROOT / "weights")
    monkeypatch.chdir(tmp_path)
    found = blocks()
    assert sum(kind == "python" for kind, _ in found) >= 6
    namespace = {}
    printed = None
    compared = 0
    for kind, body in found:
        if kind == "python":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(body, "docs/python.md", "exec"), namespace)
            printed = out.getvalue()
        elif kind == "text" and printed is not None:
            assert printed == body, f"the guide shows\n{body}\nbut the block printed\n{printed}"
            printed = None
            compared += 1
        else:
            printed = None
    assert compared >= 5
    assert (tmp_path / "lenet.dgnw").is_file()


def test_returned_arrays_own_no_copy_of_their_buffer(tiny):
    gen, clf = tiny
    r = dgnam.synthesize(clf, gen, units=[0], iters=3, bounds="none", progress=False)[0]
    out = dgnam.Net(clf).forward(np.zeros((1, 3, 6, 6), np.float32), "fc8")["fc8"]
    for a in [r["image"], r["code"], r["rgb"], out]:
        # The buffer belongs to the Rust vector numpy was handed, not to a numpy copy.
        assert not a.flags.owndata and type(a.base).__name__ == "PySliceContainer"
