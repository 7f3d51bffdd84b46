"""The package: its version is the crate's, and the stubs describe what is there."""

import ast
import inspect
import re
from importlib import metadata
from pathlib import Path

import dgnam
from conftest import ROOT

STUB = Path(dgnam.__file__).with_name("__init__.pyi")


def test_the_version_is_the_crates():
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    assert dgnam.__version__ == version == metadata.version("dgnam")


def test_it_ships_stubs_and_the_py_typed_marker():
    assert STUB.is_file() and STUB.with_name("py.typed").is_file()


def stub_functions():
    """{name: ast function} for the stub's module functions and Net's methods."""
    tree = ast.parse(STUB.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = node
        if isinstance(node, ast.ClassDef) and node.name == "Net":
            for m in node.body:
                if isinstance(m, ast.FunctionDef) and not any(getattr(d, "id", "") == "property" for d in m.decorator_list):
                    out[f"Net.{m.name}"] = m
    return out


def parameters(fn):
    a = fn.args
    positional = [p.arg for p in a.args]
    defaults = [None] * (len(positional) - len(a.defaults)) + [ast.literal_eval(d) for d in a.defaults]
    named = [(p, d) for p, d in zip(positional, defaults) if p != "self"]
    kw = [(p.arg, ast.literal_eval(d)) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    return named, kw


def test_the_stubs_signatures_are_the_modules():
    stubs = stub_functions()
    assert set(stubs) == {"convert", "synthesize", "demo", "Net.__init__", "Net.forward", "Net.backward", "Net.info"}
    for name, fn in stubs.items():
        obj = dgnam.Net if name == "Net.__init__" else getattr(dgnam.Net, name[4:]) if name.startswith("Net.") else getattr(dgnam, name)
        sig = inspect.signature(obj)
        params = [p for p in sig.parameters.values() if p.name != "self"]
        empty = inspect.Parameter.empty
        runtime_named = [(p.name, None if p.default is empty else p.default) for p in params if p.kind != p.KEYWORD_ONLY]
        runtime_kw = [(p.name, p.default) for p in params if p.kind == p.KEYWORD_ONLY]
        assert parameters(fn) == (runtime_named, runtime_kw), name
        assert ast.get_docstring(fn) or name == "Net.__init__", f"{name} has no docstring"


def test_every_public_name_is_in_the_stubs():
    stub = STUB.read_text()
    for name in dgnam.__all__:
        assert re.search(rf"^(def|class) {name}\b|^{name}:", stub, re.M), name
    for name in ["path", "device", "device_info", "precision", "input_shape"]:
        assert hasattr(dgnam.Net, name) and f"def {name}(self)" in stub
