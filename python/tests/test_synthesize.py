"""dgnam.synthesize against `dgnam synthesize`: the same numbers, the same files."""

import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

import dgnam
from conftest import ROOT, cli_error, run_cli


def synth_cli(gen, clf, out, *args):
    run_cli("dgnam", "synthesize", "--net", clf, "--generator", gen, "--bounds", "none", "--device", "cpu", "--out-dir", out, *args)
    return json.loads((out / "summary.json").read_text())


def untimed(summary):
    """summary.json without what says when and how long."""
    for u in summary["units"]:
        del u["seconds"]
    del summary["manifest"]["started"], summary["manifest"]["seconds"]
    return summary


def files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def test_results_and_files_are_the_commands_bit_for_bit(tiny, tmp_path):
    gen, clf = tiny
    cli = synth_cli(gen, clf, tmp_path / "cli", "--units", "4,0,3", "--iters", "30")
    got = dgnam.synthesize(str(clf), str(gen), units=[4, 0, 3], iters=30, bounds="none", out_dir=tmp_path / "py", device="cpu", progress=False)
    assert [r["unit"] for r in got] == [4, 0, 3]
    for r, entry in zip(got, cli["units"]):
        stem = f"fc8_{r['unit']:04d}"
        assert np.array_equal(r["image"], np.load(tmp_path / "cli" / f"{stem}.image.npy")[0])
        assert np.array_equal(r["code"], np.load(tmp_path / "cli" / f"{stem}.code.npy")[0])
        assert np.array_equal(r["rgb"], np.asarray(Image.open(tmp_path / "cli" / f"{stem}.png").convert("RGB")))
        assert r["image"].shape == (3, 6, 6) and r["image"].dtype == np.float32
        assert r["rgb"].shape == (6, 6, 3) and r["rgb"].dtype == np.uint8
        assert r["code"].shape == (8,)
        assert list(r["activations"]) == entry["activations"] and len(entry["activations"]) == 30
        assert r["probability"] == entry["probability"] and 0 < r["probability"] <= 1
        assert r["label"] == entry["label"] == f"fc8 #{r['unit']}"
        assert r["files"]["png"] == str(tmp_path / "py" / f"{stem}.png")
    # Every file the command wrote, byte for byte; summary.json apart from its timing.
    assert files(tmp_path / "py") == files(tmp_path / "cli")
    for f in files(tmp_path / "cli"):
        if f != "summary.json":
            assert (tmp_path / "py" / f).read_bytes() == (tmp_path / "cli" / f).read_bytes(), f
    py_summary = json.loads((tmp_path / "py" / "summary.json").read_text())
    assert untimed(py_summary) == untimed(cli)


def test_without_out_dir_nothing_stays_on_disk(tiny, tmp_path, monkeypatch):
    gen, clf = tiny
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with_dir = dgnam.synthesize(clf, gen, units=[2], iters=20, bounds="none", out_dir=tmp_path / "kept", progress=False)
    before = set(tmp_path.iterdir())
    alone = dgnam.synthesize(clf, gen, units=[2], iters=20, bounds="none", progress=False)
    assert set(tmp_path.iterdir()) == before
    assert alone[0]["files"] is None
    for key in ["image", "rgb", "code", "activations"]:
        assert np.array_equal(alone[0][key], with_dir[0][key]), key


def test_all_units_pairs_batches_and_seeds_match_the_command(tiny, tmp_path):
    gen, clf = tiny
    cli = synth_cli(gen, clf, tmp_path / "all", "--units", "all", "--iters", "15")
    got = dgnam.synthesize(clf, gen, units="all", iters=15, bounds="none", batch=2, progress=False)
    assert [r["unit"] for r in got] == [0, 1, 2, 3, 4]
    for r in got:
        assert np.array_equal(r["image"], np.load(tmp_path / "all" / f"fc8_{r['unit']:04d}.image.npy")[0])
    # A unit alone gives what it gives among all (its start is its own).
    one = dgnam.synthesize(clf, gen, units=3, iters=15, bounds="none", progress=False)
    assert np.array_equal(one[0]["code"], got[3]["code"])

    synth_cli(gen, clf, tmp_path / "pair", "--units", "1+4", "--gamma", "0.5", "--iters", "15", "--seeds", "0,2")
    for units in (["1+4"], [(1, 4)], "1+4"):
        pair = dgnam.synthesize(clf, gen, units=units, gamma=0.5, iters=15, bounds="none", seeds=[0, 2], progress=False)
        assert [(r["unit"], r["seed"]) for r in pair] == [((1, 4), 0), ((1, 4), 2)]
        for r in pair:
            want = np.load(tmp_path / "pair" / f"fc8_0001+0004_s{r['seed']}.image.npy")[0]
            assert np.array_equal(r["image"], want)
    assert not np.array_equal(pair[0]["image"], pair[1]["image"])


def test_init_code_array_and_schedule_flags(tiny, tmp_path):
    gen, clf = tiny
    codes = np.random.default_rng(5).random((2, 8), dtype=np.float32)
    np.save(tmp_path / "init.npy", codes)
    flags = ["--iters", "12", "--lr", "2", "--lr-end", "0.5", "--decay", "0.9", "--seed", "7"]
    synth_cli(gen, clf, tmp_path / "cli", "--units", "0,1", "--init-code", tmp_path / "init.npy", *flags)
    kw = dict(units=[0, 1], iters=12, lr=2.0, lr_end=0.5, decay=0.9, seed=7, bounds="none", progress=False)
    from_array = dgnam.synthesize(clf, gen, init_code=codes, out_dir=tmp_path / "py", **kw)
    from_file = dgnam.synthesize(clf, gen, init_code=tmp_path / "init.npy", **kw)
    assert np.array_equal(np.load(tmp_path / "py" / "init_code.npy"), codes)
    for a, b in zip(from_array, from_file):
        assert np.array_equal(a["image"], b["image"])
        assert np.array_equal(a["image"], np.load(tmp_path / "cli" / f"fc8_{a['unit']:04d}.image.npy")[0])
    # The schedule matters: the defaults give another image.
    default = dgnam.synthesize(clf, gen, units=[0], init_code=codes[:1], iters=12, bounds="none", progress=False)
    assert not np.array_equal(default[0]["image"], from_file[0]["image"])


def test_pixel_space_and_net_objects(tiny, tmp_path):
    gen, clf = tiny
    synth_cli("none", clf, tmp_path / "cli", "--units", "2", "--iters", "10")
    net = dgnam.Net(clf, device="cpu")
    for generator in (None, "none"):
        got = dgnam.synthesize(net, generator, units=[2], iters=10, bounds="none", progress=False)
        assert np.array_equal(got[0]["image"], np.load(tmp_path / "cli" / "fc8_0002.image.npy")[0])
    through = dgnam.synthesize(net, dgnam.Net(gen), units=[2], iters=10, bounds="none", progress=False)
    assert np.array_equal(through[0]["code"], dgnam.synthesize(clf, gen, units=[2], iters=10, bounds="none", progress=False)[0]["code"])


def test_the_shipped_lenet_prior(lenet, tmp_path):
    """DGN-AM through the demo's generator: LeNet sees each digit it was asked for."""
    demo = ROOT / "weights" / "demo"
    bounds = demo / "act_range" / "1x" / "ip1.txt"
    run_cli("dgnam", "synthesize", "--net", lenet, "--generator", demo / "generator-ip1.dgnw", "--layer", "ip2", "--units", "0,3,7",
            "--bounds", bounds, "--iters", "50", "--device", "cpu", "--out-dir", tmp_path / "cli")
    got = dgnam.synthesize(lenet, demo / "generator-ip1.dgnw", layer="ip2", units=[0, 3, 7], iters=50, bounds=bounds, device="cpu", progress=False)
    for r in got:
        assert np.array_equal(r["image"], np.load(tmp_path / "cli" / f"ip2_{r['unit']:04d}.image.npy")[0])
        assert r["image"].shape == (1, 28, 28) and r["probability"] > 0.9
        assert r["activations"][-1] > r["activations"][0]


def test_progress_goes_to_stderr_and_can_be_switched_off(tiny, capfd):
    gen, clf = tiny
    dgnam.synthesize(clf, gen, units=[0, 1], iters=10, bounds="none", device="cpu")
    out, err = capfd.readouterr()
    assert out == ""
    assert "device: cpu" in err and "20/20 iterations" in err
    dgnam.synthesize(clf, gen, units=[0, 1], iters=10, bounds="none", device="cpu", progress=False)
    dgnam.demo(iters=2, progress=False)
    assert capfd.readouterr() == ("", "")


def test_the_gil_is_released_while_it_computes(tiny):
    """Another Python thread keeps running during a call."""
    gen, clf = tiny
    ticks, done = [0], threading.Event()

    def count():
        while not done.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    start = time.perf_counter()
    # Long enough to measure: 400 iterations took 0.04 s once the ops forked on the pool.
    dgnam.synthesize(clf, gen, units="all", iters=4000, bounds="none", batch=1, progress=False)
    seconds = time.perf_counter() - start
    done.set()
    t.join()
    # With the GIL held through the call, the counter could not tick again until it
    # returned (a tick or two at most); released, it ticks about once a millisecond.
    assert seconds > 0.1 and ticks[0] >= 20, (ticks[0], seconds)


def test_errors_carry_the_commands_message(tiny, tmp_path):
    gen, clf = tiny
    base = ["--net", clf, "--generator", gen, "--device", "cpu", "--out-dir", tmp_path / "x"]
    cases = [
        (ValueError, dict(units=[0], decay=1.5, bounds="none"), ["--units", "0", "--decay", "1.5", "--bounds", "none"]),
        (ValueError, dict(units=[9], bounds="none"), ["--units", "9", "--bounds", "none"]),
        (ValueError, dict(units=[0], layer="fc9", bounds="none"), ["--units", "0", "--layer", "fc9", "--bounds", "none"]),
        (ValueError, dict(units=[0], batch=0, bounds="none"), ["--units", "0", "--batch", "0", "--bounds", "none"]),
        (FileNotFoundError, dict(units=[0], bounds=tmp_path / "nope.txt"), ["--units", "0", "--bounds", tmp_path / "nope.txt"]),
    ]
    for kind, kw, flags in cases:
        want = cli_error("dgnam", "synthesize", *base, *flags)
        with pytest.raises(kind) as e:
            dgnam.synthesize(clf, gen, device="cpu", progress=False, **kw)
        assert str(e.value) == want, flags
    want = cli_error("dgnam", "synthesize", "--net", tmp_path / "no.dgnw", "--generator", gen, "--device", "cpu", "--out-dir", tmp_path / "x")
    with pytest.raises(FileNotFoundError) as e:
        dgnam.synthesize(tmp_path / "no.dgnw", gen, device="cpu", progress=False)
    assert str(e.value) == want
    # A refused call writes nothing, not even the initial codes it was given.
    with pytest.raises(ValueError, match="--decay"):
        dgnam.synthesize(clf, gen, units=[0], decay=2.0, init_code=np.zeros((1, 8)), out_dir=tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValueError, match="units"):
        dgnam.synthesize(clf, gen, units=["x"], progress=False)
    with pytest.raises(ValueError, match="objective"):
        dgnam.synthesize(clf, gen, units=[0], objective="max", progress=False)
    with pytest.raises(RuntimeError, match="went non-finite"):
        dgnam.synthesize(clf, gen, units=[0], iters=5, lr=1e38, lr_end=1e38, decay=1.0, bounds="none", progress=False)
