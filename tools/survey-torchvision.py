#!/usr/bin/env python3
"""Which torchvision classifiers dgnam-convert takes, at full size: each is built with
random weights (eval mode), exported to ONNX (opset 17, the TorchScript exporter), converted,
and where it converts, dgnam's logits (`forward --device cpu`, batch 1) are compared with
PyTorch's. Prints one line per model and writes OUT/survey.json. Run by hand (docs/onnx.md):
    pip install torch torchvision onnx
    python3 tools/survey-torchvision.py alexnet,resnet50 target/release/dgnam-convert target/release/dgnam [OUT]
"""
import subprocess, sys, json, os, time
import numpy as np, torch, torchvision
names = sys.argv[1].split(",")
convert, dgnam = sys.argv[2], sys.argv[3]
out = sys.argv[4] if len(sys.argv) > 4 else "/tmp/dgnam-survey"
os.makedirs(out, exist_ok=True)
rows = []
for name in names:
    t0 = time.time()
    torch.manual_seed(0)
    size = 299 if name == "inception_v3" else 224
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("inception_v3", "googlenet") else {}
    try:
        m = torchvision.models.get_model(name, weights=None, **kwargs).eval()
        x = torch.rand(1, 3, size, size)
        onnx = f"{out}/{name}.onnx"
        torch.onnx.export(m, (x,), onnx, opset_version=17, input_names=["input"], output_names=["logits"], dynamo=False)
    except Exception as e:
        rows.append({"model": name, "result": "export failed", "detail": str(e).splitlines()[0][:200]}); print(rows[-1], flush=True); continue
    dgnw = f"{out}/{name}.dgnw"
    r = subprocess.run([convert, "--onnx", onnx, "-o", dgnw], capture_output=True, text=True)
    if r.returncode != 0:
        rows.append({"model": name, "result": "refused", "detail": (r.stderr.strip().splitlines() or ["?"])[-1][:300]})
    else:
        np.save(f"{out}/{name}-x.npy", x.numpy())
        with torch.no_grad():
            want = m(x).numpy().ravel()
        os.makedirs(f"{out}/{name}-out", exist_ok=True)
        r2 = subprocess.run([dgnam, "forward", "--net", dgnw, "--input", f"{out}/{name}-x.npy", "--device", "cpu", "--out-dir", f"{out}/{name}-out"], capture_output=True, text=True)
        if r2.returncode != 0:
            rows.append({"model": name, "result": "converted, forward failed", "detail": r2.stderr.strip()[-300:]})
        else:
            files = [f for f in os.listdir(f"{out}/{name}-out") if f.endswith(".npy")]
            got = np.load(f"{out}/{name}-out/{files[0]}").ravel()
            err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
            rows.append({"model": name, "result": "converted", "detail": f"max |dgnam - torch| / max |torch| = {err:.2e}"})
    rows[-1]["seconds"] = round(time.time() - t0, 1)
    print(rows[-1], flush=True)
    for f in (onnx, dgnw):
        if os.path.exists(f): os.remove(f)
json.dump(rows, open(f"{out}/survey.json", "w"), indent=1)
