#!/usr/bin/env python3
"""PyTorch's side of `dgnam bench --generator none`: one torchvision classifier's forward
pass and the backward pass of one logit per sample to the input, on the CPU, random weights
(eval mode), f32. Prints the median ms per step of each batch size; `--export F.onnx` also
writes the model as ONNX (opset 17, dynamic batch) for `dgnam-convert --onnx`.

    python3 benches/torch_classifier.py efficientnet_b0 --batch 1,8 --iters 4 [--export /tmp/m.onnx]

Needs torch and torchvision. The thread count is torch's default unless THREADS is set.
"""
import argparse, json, os, statistics, time
import torch, torchvision

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--batch", default="1,8")
ap.add_argument("--iters", type=int, default=4, help="timed steps after one warm-up")
ap.add_argument("--export")
ap.add_argument("--json")
args = ap.parse_args()
if "THREADS" in os.environ:
    torch.set_num_threads(int(os.environ["THREADS"]))
torch.manual_seed(0)
size = 299 if args.model == "inception_v3" else 224
kwargs = {"aux_logits": False, "init_weights": True} if args.model in ("inception_v3", "googlenet") else {}
model = torchvision.models.get_model(args.model, weights=None, **kwargs).eval()
for p in model.parameters():
    p.requires_grad_(False)
if args.export:
    torch.onnx.export(model, (torch.rand(1, 3, size, size),), args.export, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
rows = []
for batch in [int(b) for b in args.batch.split(",")]:
    x = torch.rand(batch, 3, size, size)
    times = []
    for i in range(args.iters + 1):
        t = time.perf_counter()
        xi = x.clone().requires_grad_(True)
        logits = model(xi)
        # One logit per sample, as dgnam's step benchmark seeds one unit per sample.
        logits[torch.arange(batch), torch.arange(batch) % logits.shape[1]].sum().backward()
        if i > 0:
            times.append((time.perf_counter() - t) * 1e3)
    ms = statistics.median(times)
    rows.append({"model": args.model, "batch": batch, "median_ms": ms, "threads": torch.get_num_threads()})
    print(f"{args.model} batch {batch:3}: {ms:9.1f} ms/step (PyTorch {torch.__version__}, {torch.get_num_threads()} threads)", flush=True)
if args.json:
    json.dump(rows, open(args.json, "w"), indent=1)
