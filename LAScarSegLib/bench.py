"""`lascarseg bench`: speed numbers printed as a table (no timed unit tests anywhere).

- forward: the exported model's forward pass on a 1x1x80x208x208 input (z, y, x), frozen as the
  pipeline runs it, with the given threads: median and min over repeats.
- train-step: iterations per second of a training config on this machine (synthetic phantoms, so
  it needs no data folder).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Sequence


def bench_forward(model: str | None = None, shape_zyx: Sequence[int] = (80, 208, 208), repeats: int = 3,
                  device: str = "auto", levels: int | None = None) -> dict[str, Any]:
    """Median/min seconds of one forward pass of the registered (or given, or a fresh) model."""
    import torch

    from .network import ModelConfig, build_model, freeze_for_inference
    from .predict import load_for_inference, pick_device

    if levels is not None:  # an untrained network of that depth (speed does not depend on weights)
        dev = pick_device(device)
        module, name = freeze_for_inference(build_model(ModelConfig(levels=levels)).eval()).to(dev), f"fresh {levels}-level"
    else:
        loaded = load_for_inference(model, device)
        module, dev, name = loaded.module, loaded.device, f"{loaded.card['name']} {loaded.card['version']}"
    x = torch.randn(1, 1, *shape_zyx, device=dev)
    times = []
    with torch.inference_mode():
        module(x)  # warm-up (TorchScript profiling runs)
        for _ in range(repeats):
            if dev == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            module(x)
            if dev == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return {"model": name, "device": dev, "threads": torch.get_num_threads(), "shape_zyx": list(shape_zyx),
            "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3), "repeats": repeats}


def bench_train_step(recipe: str = "cpu-default", iterations: int = 20, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Iterations per second of `recipe` on phantoms (the data pipeline and the step, as trained)."""
    import tempfile

    from .train_config import make_config
    from .trainer import train

    cfg = make_config(recipe, overrides=["data=[]", "phantoms=2", "val_phantoms=0", "val_cases=0",
                                         f"iterations={iterations + 5}", "val_every=100000",
                                         "checkpoint_every=100000", "log_every=5", "time_limit_min=null",
                                         *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        warm = train(cfg, f"{tmp}/run", stop_after=5, log=lambda m: None)
        summary = train(cfg, f"{tmp}/run", resume=True, log=lambda m: None)
    return {"recipe": recipe, "device": summary["device"], "iterations": iterations,
            "it_per_s": summary["it_per_s"], "s_per_it": round(1 / summary["it_per_s"], 3),
            "patch_size": cfg.patch_size, "batch_size": cfg.batch_size, "warmup_it_per_s": warm["it_per_s"]}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="print speed numbers (model forward pass, training step)")
    p.add_argument("what", nargs="*", default=["forward"], choices=["forward", "train-step"],
                   help="what to time (default: forward)")
    p.add_argument("--model", default=None, help="registered model name or .pt (default: the registry's default)")
    p.add_argument("--levels", type=int, default=None, help="time a fresh network of this depth instead of a model")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iterations", type=int, default=20, help="training iterations to time")
    p.add_argument("--recipe", default="cpu-default")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads to use")
    return p


def run(args) -> int:
    rows = []
    if "forward" in args.what:
        rows.append(("forward 1x1x80x208x208", bench_forward(args.model, repeats=args.repeats, device=args.device,
                                                           levels=args.levels)))
    if "train-step" in args.what:
        rows.append((f"train step ({args.recipe})", bench_train_step(args.recipe, args.iterations,
                                                                     [f"device={args.device}"] +
                                                                     ([f"threads={args.threads}"] if args.threads else []))))
    for name, r in rows:
        print(f"{name:28s} " + "  ".join(f"{k}={v}" for k, v in r.items()))
    return 0
