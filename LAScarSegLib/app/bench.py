"""`lascarseg bench`: speed numbers printed as tables (no timed unit tests anywhere).

- forward: the exported model's forward pass on a 1x1x80x208x208 input (z, y, x), frozen as the
  pipeline runs it, with the given threads: median and min over repeats.
- train-step: iterations per second of a training config on this machine (synthetic phantoms, so
  it needs no data folder).
- pipeline: `segment` end to end (load to report, snapshot included) on the issue's two phantom
  cases, each in its own process so peak memory is per case; the pipeline's stage timings, the
  targets beside them, the model's SHA-256 checked against models.json; then the peers (MONAI's
  sliding window on the same model and input, medpy's Hausdorff distances on the same masks)
  where they install, skipped with the reason where they do not.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..core.errors import InputError, ModelError
from ..core.image import grid_for_spacing, normalise, resample, write_volume
from ..core.threads import set_threads
from ..infer.windows import round_up, sliding_window
from ..model.loading import load_for_inference, pick_device
from ..model.network import ModelConfig, build_model, freeze_for_inference
from ..model.registry import REGISTRY, read_registry
from ..quantify.metrics import la_metrics
from ..synth.phantom import make_phantom
from ..train.train_config import make_config
from ..train.trainer import train
from .pipeline import STAGE_SHARES, run_segment


def bench_forward(model: str | None = None, shape_zyx: Sequence[int] = (80, 208, 208), repeats: int = 3,
                  device: str = "auto", levels: int | None = None) -> dict[str, Any]:
    """Median/min seconds of one forward pass of the registered (or given, or a fresh) model."""
    if levels is not None:  # an untrained network of that depth (speed does not depend on weights)
        dev = pick_device(device)
        module, name = freeze_for_inference(build_model(ModelConfig(levels=levels)), device=dev), f"fresh {levels}-level"
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

    cfg = make_config(recipe, overrides=["data=[]", "phantoms=2", "val_phantoms=0", "val_cases=0",
                                         f"iterations={iterations + 5}", "val_every=100000",
                                         "checkpoint_every=100000", "log_every=5", "time_limit_min=null",
                                         "full_fov_phantoms=0", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        warm = train(cfg, f"{tmp}/run", stop_after=5, log=lambda m: None)
        summary = train(cfg, f"{tmp}/run", resume=True, log=lambda m: None)
    return {"recipe": recipe, "device": summary["device"], "iterations": iterations,
            "it_per_s": summary["it_per_s"], "s_per_it": round(1 / summary["it_per_s"], 3),
            "patch_size": cfg.patch_size, "batch_size": cfg.batch_size, "warmup_it_per_s": warm["it_per_s"]}


# ------------------------------------------------------------------------------------ pipeline
@dataclass(frozen=True)
class PipelineCase:
    """One end-to-end bench case: a phantom (make_phantom keywords) and the issue's targets for it."""
    name: str
    description: str
    phantom: dict[str, Any]
    target_s: float | None = None
    target_gb: float | None = None


#: The issue's two cases and targets on a 2-core CPU (load to report, snapshot included).
PIPELINE_CASES = {
    "la-centred": PipelineCase("la-centred", "208x208x80 LA-centred phantom, 0.625x0.625x1.25 mm", {}, 12.0, 4.0),
    "full-fov": PipelineCase("full-fov", "640x640x88 full-field-of-view phantom, LA off centre, 0.625x0.625x1.25 mm",
                             {"full_fov": True}, 60.0, 8.0),
}
BENCHES = ("forward", "train-step", "pipeline")
#: Metrics and projection together, per case.
METRICS_PROJECTION_TARGET_S = 1.0

#: The named steps the pipeline reports through its `on_stage` hook, with the stage each runs in
#: (None: between stages). A step that never reports shows as missing, so a renamed step is noticed.
SUB_STEPS = (
    ("read image", "load"),
    ("read labels", "load"),
    ("load model (TorchScript, frozen)", "load"),
    ("resample to model grid and back", "inference"),
    ("sliding-window network", "inference"),
    ("LA mask (largest component)", "postprocess"),
    ("scar mask (wall band)", "postprocess"),
    ("quantify", None),
    ("masks (NIfTI)", "write"),
    ("surface (.vtp)", "write"),
    ("snapshot", "write"),
)
#: The stage table's rows in the order the pipeline runs them (names of `report["timings_s"]`).
_STAGE_ORDER = ("load", "inference", "postprocess", "surface", "projection", "quantify", "metrics", "write")


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process.

    Linux: VmHWM of /proc/self/status. Not ru_maxrss: exec keeps the high-water mark of the
    process that spawned it, so a child started by a big parent would report the parent's peak.
    Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class _Timers:
    """Wall and CPU seconds (all threads of the process) and calls, summed per name: the pipeline's
    `on_stage` hook."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def __call__(self, name: str, wall: float, cpu: float) -> None:
        self.wall[name] = self.wall.get(name, 0.0) + wall
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu
        self.calls[name] = self.calls.get(name, 0) + 1


def _pipeline_child(spec_file: str) -> None:
    """Run one case in this (fresh) process and write the numbers as JSON; see `bench_pipeline`."""
    t_start = time.perf_counter()
    spec = json.loads(Path(spec_file).read_text())
    set_threads(spec["threads"])
    heard = _Timers()
    rss_ready = _peak_rss_bytes()
    t_ready, c_ready = time.perf_counter(), time.process_time()
    result = run_segment(spec["image"], spec["out"], la_label=spec.get("la"), scar_label=spec.get("scar"),
                         model=spec["model"], device=spec["device"], on_stage=heard)
    wall, cpu = time.perf_counter() - t_ready, time.process_time() - c_ready
    report = result.report.to_json()
    steps = {label for label, _stage in SUB_STEPS}
    out = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "startup_s": round(t_ready - t_start, 3),
           "timings_s": report["timings_s"],
           "stage_cpu_s": {k: round(v, 3) for k, v in heard.cpu.items() if k in STAGE_SHARES},
           "sub_s": {k: round(v, 3) for k, v in heard.wall.items() if k in steps},
           "sub_cpu_s": {k: round(v, 3) for k, v in heard.cpu.items() if k in steps},
           "sub_calls": {k: v for k, v in heard.calls.items() if k in steps},
           "peak_rss_bytes": _peak_rss_bytes(), "rss_after_imports_bytes": rss_ready,
           "threads": torch.get_num_threads(), "model": report["model"], "device": report["device"],
           "la_volume_ml": report["la"]["volume_ml"], "burden_surface_pct": report["scar"]["burden_surface_pct"],
           "la_dice": report.get("metrics", {}).get("la", {}).get("dice"),
           "warnings": report["warnings"]}
    Path(spec["result"]).write_text(json.dumps(out, indent=2))


def registry_check(sha256: str, name: str | None = None, registry: str | os.PathLike | None = None) -> str:
    """Whether a model's SHA-256 matches `models.json` (the bench prints it next to the hash)."""
    try:
        reg = read_registry(registry or REGISTRY)
    except ModelError as exc:
        return f"not checked: {exc}"
    for m in reg["models"]:
        if m["sha256"] == sha256:
            return f"matches models.json ({m['name']} {m['version']})"
    named = [m for m in reg["models"] if m["name"] == name]
    if named:
        return f"DOES NOT MATCH models.json's {name} ({named[0]['sha256'][:12]}...)"
    return "not in models.json (a model file given with --model)"


def bench_pipeline(cases: Sequence[str | PipelineCase] = ("la-centred", "full-fov"), *, model: str | None = None,
                   device: str = "auto", threads: int | None = None, seed: int = 7, labels: bool = True,
                   workdir: str | os.PathLike | None = None, timeout_s: float = 3600.0) -> list[dict[str, Any]]:
    """Time `lascarseg segment` end to end (load to report, snapshot included) on each case.

    Each case runs in a fresh child process, so its peak resident memory is its own (a big case
    run first cannot mask a small one) and start-up (imports) is reported apart from the job.
    With `labels` the phantom's truth is passed as manual labels, so the metrics stage runs as in
    a validation job. Returns one dict per case: the pipeline's stage timings (`timings_s`, wall)
    with CPU seconds beside them (`stage_cpu_s`), the sub-steps inside them (`sub_s`,
    `sub_cpu_s`), `wall_s` and `cpu_s` of the whole job, `peak_rss_bytes`, `threads`, the model
    and its registry check, and `targets`. CPU seconds count every thread of the child; on a
    machine shared with other work they stay close to what the job costs while wall seconds grow.
    """


    results = []
    with tempfile.TemporaryDirectory(prefix="lascarseg-bench-", dir=workdir) as tmp:
        for case in cases:
            case = PIPELINE_CASES[case] if isinstance(case, str) else case
            folder = Path(tmp) / case.name
            folder.mkdir()
            ph = make_phantom(seed, **case.phantom)
            spec: dict[str, Any] = {"image": str(write_volume(ph.image, folder / "image.nii.gz")),
                                    "out": str(folder / "out"), "result": str(folder / "result.json"),
                                    "model": model, "device": device, "threads": threads}
            if labels:
                spec["la"] = str(write_volume(ph.la, folder / "la.nii.gz"))
                spec["scar"] = str(write_volume(ph.scar, folder / "scar.nii.gz"))
            (folder / "spec.json").write_text(json.dumps(spec))
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", f"from {__package__}.bench import _pipeline_child; "
                                   f"_pipeline_child({str(folder / 'spec.json')!r})"],
                                  capture_output=True, text=True, timeout=timeout_s)
            process_s = time.perf_counter() - t0
            if proc.returncode != 0:
                tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
                raise RuntimeError(f"bench case {case.name}: the pipeline failed (exit {proc.returncode}):\n{tail}")
            r = json.loads((folder / "result.json").read_text())
            t = r["timings_s"]
            r.update(case=case.name, description=case.description, seed=seed, process_s=round(process_s, 3),
                     size=list(ph.image.geometry.size), spacing_mm=list(ph.image.geometry.spacing),
                     registry=registry_check(r["model"]["sha256"], r["model"]["name"]),
                     outputs=sorted(p.name for p in Path(spec["out"]).iterdir()))
            r["metrics_projection_s"] = round(t.get("metrics", 0.0) + t.get("projection", 0.0), 3)
            r["targets"] = {"wall_s": case.target_s, "peak_rss_gb": case.target_gb,
                            "metrics_projection_s": METRICS_PROJECTION_TARGET_S}
            results.append(r)
    return results


def _verdict(value: float, target: float | None) -> str:
    if target is None:
        return ""
    return f"target <= {target:g}   {'ok' if value <= target else 'MISSED'}"


def format_pipeline(r: dict[str, Any]) -> str:
    """The per-stage table of one case, targets beside the numbers.

    Wall seconds are the pipeline's own stage timings; CPU seconds (all threads) are measured
    beside them, so a machine shared with other work still shows what each stage costs.
    """
    gb = 1024 ** 3
    nan = float("nan")
    lines = [f"{r['case']}: {r['description']} (seed {r['seed']}, size {r['size']})",
             f"  model {r['model']['name']} {r['model']['version']} sha256 {r['model']['sha256']}",
             f"  sha256 {r['registry']}; device {r['device']}, {r['threads']} torch threads",
             f"  {'stage':40s} {'wall s':>9s} {'cpu s':>9s}"]
    t, sub, sub_cpu, cpu = r["timings_s"], r["sub_s"], r["sub_cpu_s"], r["stage_cpu_s"]
    stages = list(_STAGE_ORDER) + [k for k in t if k not in _STAGE_ORDER and k != "total"]
    for stage in stages:
        if stage == "quantify":
            lines.append(f"  {'quantify (burden, stages, warnings)':40s} {sub.get('quantify', nan):9.3f} "
                         f"{sub_cpu.get('quantify', nan):9.3f}")
            continue
        if stage not in t:
            continue
        lines.append(f"  {stage:40s} {t[stage]:9.3f} {cpu.get(stage, nan):9.3f}")
        for label, parent in SUB_STEPS:
            if parent == stage and label in sub:
                lines.append(f"  {'. ' + label:40s} {sub[label]:9.3f} {sub_cpu[label]:9.3f}")
    missing = sorted({label for label, _p in SUB_STEPS} - set(sub) - {"read labels"})
    if missing:
        lines.append(f"  (sub-steps not seen, the pipeline may have changed: {', '.join(missing)})")
    lines += [f"  {'pipeline stages total (report)':40s} {t['total']:9.3f}",
              f"  {'load to report':40s} {r['wall_s']:9.3f} {r['cpu_s']:9.3f}   "
              f"{_verdict(r['wall_s'], r['targets']['wall_s'])}",
              f"  {'process start-up (imports)':40s} {r['startup_s']:9.3f}",
              f"  {'metrics + projection':40s} {r['metrics_projection_s']:9.3f} "
              f"{cpu.get('metrics', nan) + cpu.get('projection', nan):9.3f}   "
              f"{_verdict(r['metrics_projection_s'], r['targets']['metrics_projection_s'])}",
              f"  {'peak resident memory (GB)':40s} {r['peak_rss_bytes'] / gb:9.2f} {'':9s}   "
              f"{_verdict(r['peak_rss_bytes'] / gb, r['targets']['peak_rss_gb'])}",
              f"  {'. after imports (GB)':40s} {r['rss_after_imports_bytes'] / gb:9.2f}",
              f"  LA {r['la_volume_ml']} mL, burden {r['burden_surface_pct']} %"
              + (f", LA Dice vs truth {r['la_dice']:.3f}" if r.get("la_dice") is not None else "")]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- peers
def _installed(module: str) -> tuple[Any, str | None]:
    """(module, None) when importable, else (None, why): a peer that is absent is skipped, never faked."""
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # noqa: BLE001 - ImportError, or a peer broken by its own dependencies
        return None, f"{module} is not installed or does not import ({type(exc).__name__}: {exc}); pip install -e '.[bench]'"


def peer_sliding_window(module: Any, image_zyx: np.ndarray, window_zyx: Sequence[int], divisor: int, *,
                        device: str = "cpu", overlap: float = 0.5, return_probs: bool = False) -> dict[str, Any]:
    """Our sliding window against MONAI's `sliding_window_inference`, same model, same input.

    Both blend sigmoid probabilities with a Gaussian (sigma 0.125 of the window) at the same
    overlap; window placement and border padding differ slightly, so the probabilities agree
    closely but not exactly. One untimed forward pass warms the TorchScript module up first.
    `return_probs` adds our probabilities (`probabilities`, as `sliding_window` returns them) for reuse.
    """
    monai, why = _installed("monai")
    if monai is None:
        return {"peer": "monai sliding_window_inference", "skipped": why}
    from monai.inferers import sliding_window_inference


    window = [min(round_up(int(w), divisor), round_up(n, divisor)) for w, n in zip(window_zyx, image_zyx.shape)]
    x = torch.from_numpy(np.ascontiguousarray(image_zyx, dtype=np.float32))[None, None].to(device)

    def probs(t: Any) -> dict[str, Any]:
        return {k: torch.sigmoid(v.float()) for k, v in module(t).items()}

    with torch.inference_mode():
        for _ in range(3):  # warm-up: the TorchScript profiling executor optimises after a few calls
            module(x[..., : window[0], : window[1], : window[2]])
        t0 = time.perf_counter()
        ours = sliding_window(module, image_zyx, window, divisor, overlap=overlap, device=device)
        ours_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = sliding_window_inference(x, roi_size=window, sw_batch_size=1, predictor=probs, overlap=overlap,
                                          mode="gaussian", sigma_scale=0.125, padding_mode="constant",
                                          cval=float(image_zyx.min()))
        peer_s = time.perf_counter() - t0
    agreement = {}
    for key, ours_p in ours.items():
        peer_p = theirs[key][0].cpu().numpy()
        diff = np.abs(ours_p - peer_p)
        a, b = ours_p[0] > 0.5, peer_p[0] > 0.5
        both = int(a.sum() + b.sum())
        agreement[key] = {"max_abs_diff": round(float(diff.max()), 5), "mean_abs_diff": round(float(diff.mean()), 6),
                          "mask_dice": round(2 * int((a & b).sum()) / both, 5) if both else 1.0}
    out = {"peer": f"monai {monai.__version__} sliding_window_inference", "shape_zyx": list(image_zyx.shape),
           "window_zyx": window, "ours_s": round(ours_s, 3), "peer_s": round(peer_s, 3),
           "peer_over_ours": round(peer_s / ours_s, 3), "agreement": agreement}
    if return_probs:
        out["probabilities"] = ours
    return out


def peer_hausdorff(pred: Any, ref: Any) -> dict[str, Any]:
    """Our LA metrics against medpy's `hd` and `hd95` on the same two masks (same grid).

    medpy's hd95 takes the 95th percentile of both directions pooled; ours is the larger of the two
    directed 95th percentiles, so hd agrees exactly and hd95 may differ slightly. Our time covers all
    seven LA metrics (mm and voxel units), medpy's only hd and hd95.
    """
    medpy, why = _installed("medpy.metric.binary")
    if medpy is None:
        return {"peer": "medpy hd/hd95", "skipped": why}


    a, b = pred.array.astype(bool), ref.array.astype(bool)
    if not a.any() or not b.any():
        return {"peer": "medpy hd/hd95", "skipped": "a mask is empty: Hausdorff distances are undefined"}
    t0 = time.perf_counter()
    ours = la_metrics(pred, ref)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hd = float(medpy.hd(a, b, voxelspacing=pred.spacing_zyx))
    hd95 = float(medpy.hd95(a, b, voxelspacing=pred.spacing_zyx))
    peer_s = time.perf_counter() - t0
    return {"peer": f"medpy {version('medpy')} hd + hd95", "shape_zyx": list(a.shape), "ours_s": round(ours_s, 3),
            "peer_s": round(peer_s, 3), "peer_over_ours": round(peer_s / ours_s, 3),
            "agreement": {"hd_mm": {"ours": round(ours["hd_mm"], 4), "peer": round(hd, 4),
                                    "abs_diff": round(abs(ours["hd_mm"] - hd), 4)},
                          "hd95_mm": {"ours": round(ours["hd95_mm"], 4), "peer": round(hd95, 4),
                                      "abs_diff": round(abs(ours["hd95_mm"] - hd95), 4)}}}


def bench_peers(case: str | PipelineCase = "la-centred", *, model: str | None = None, device: str = "auto",
                seed: int = 7) -> list[dict[str, Any]]:
    """The peers on one case: MONAI's sliding window on the card grid, one pass without windows, medpy.

    The masks for medpy are our LA (probability > 0.5 on the model grid) and the phantom's truth
    resampled onto that grid with nearest neighbour.
    """

    case = PIPELINE_CASES[case] if isinstance(case, str) else case
    ph = make_phantom(seed, **case.phantom)
    loaded = load_for_inference(model, device)
    card = loaded.card
    grid = grid_for_spacing(ph.image.geometry, card["spacing_mm"])
    img = normalise(resample(ph.image, grid, interpolation="linear"), card["normalisation"])
    window = tuple(int(p) for p in reversed(card["patch_size"]))
    div = int(card["divisor"])
    out = [peer_sliding_window(loaded.module, img.array, window, div, device=loaded.device, return_probs=True)]
    ours = out[0].pop("probabilities", None)
    windows = (ours, out[0]["ours_s"]) if ours is not None else None  # MONAI absent: computed below
    out.append(single_pass_vs_windows(loaded.module, img.array, window, div, device=loaded.device, windows=windows))
    pred = img.with_array((out[-1].pop("windows")["la"][0] > 0.5).astype(np.uint8))
    ref = resample(ph.la, grid, interpolation="nearest")
    out.append(peer_hausdorff(pred, ref))
    for r in out:
        r["case"] = case.name
    return out


def single_pass_vs_windows(module: Any, image_zyx: np.ndarray, window_zyx: Sequence[int], divisor: int, *,
                           device: str = "cpu", windows: tuple[dict[str, np.ndarray], float] | None = None
                           ) -> dict[str, Any]:
    """Not a peer but the obvious alternative: one pass over the whole volume against the card's windows.

    The network is fully convolutional, so a window as large as the volume is valid; it skips the
    overlap (about 6x the voxels at 50 %) at the cost of memory. Agreement as for the peers.
    `windows`: the windowed probabilities and their seconds when already computed. The result
    keeps them under `windows` for the caller.
    """

    if windows is None:
        t0 = time.perf_counter()
        probs = sliding_window(module, image_zyx, window_zyx, divisor, device=device)
        windows = (probs, time.perf_counter() - t0)
    win_probs, windows_s = windows
    t0 = time.perf_counter()
    single = sliding_window(module, image_zyx, image_zyx.shape, divisor, device=device)
    single_s = time.perf_counter() - t0
    agreement = {}
    for key, w in win_probs.items():
        diff = np.abs(w - single[key])
        a, b = w[0] > 0.5, single[key][0] > 0.5
        both = int(a.sum() + b.sum())
        agreement[key] = {"max_abs_diff": round(float(diff.max()), 5), "mean_abs_diff": round(float(diff.mean()), 6),
                          "mask_dice": round(2 * int((a & b).sum()) / both, 5) if both else 1.0}
    return {"peer": "ours, one pass over the whole volume (no windows)", "shape_zyx": list(image_zyx.shape),
            "ours_s": round(windows_s, 3), "peer_s": round(single_s, 3), "peer_over_ours": round(single_s / windows_s, 3),
            "agreement": agreement, "labels": ["windows", "one pass"], "windows": win_probs}


def format_peer(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"  {r['peer']}: skipped: {r['skipped']}"
    ours, peer = r.get("labels", ("ours", "peer"))
    agree = "; ".join(f"{k} " + ", ".join(f"{kk} {vv}" for kk, vv in v.items()) for k, v in r["agreement"].items())
    return (f"  {r['peer']} on {r['case']} {r['shape_zyx']}: {ours} {r['ours_s']:.3f} s, {peer} {r['peer_s']:.3f} s, "
            f"{peer}/{ours} {r['peer_over_ours']:.2f}\n    agreement: {agree}")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="print speed numbers (model forward pass, training step, whole pipeline)",
                       description="forward: one forward pass (default 1x1x80x208x208). train-step: training iterations "
                       "per second. pipeline: segment end to end on a 208x208x80 LA-centred and a 640x640x88 "
                       "full-FOV phantom (per-stage table, peak memory, targets, model SHA-256), then the peers "
                       "(MONAI, medpy; pip install -e '.[bench]') where installed.")
    # checked in run(), not with `choices`: argparse (3.11) checks an empty list against the choices
    p.add_argument("what", nargs="*", default=[], metavar="WHAT",
                   help=f"what to time: {', '.join(BENCHES)} (default: forward)")
    p.add_argument("--model", default=None, help="registered model name or .pt (default: the registry's default)")
    p.add_argument("--levels", type=int, default=None, help="forward: time a fresh network of this depth instead")
    p.add_argument("--shape", nargs=3, type=int, default=[80, 208, 208], metavar=("Z", "Y", "X"),
                   help="forward: input size (default 80 208 208)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iterations", type=int, default=20, help="training iterations to time")
    p.add_argument("--recipe", default="cpu-default")
    p.add_argument("--cases", nargs="+", default=list(PIPELINE_CASES), choices=list(PIPELINE_CASES),
                   help="pipeline: the cases to run (default: all)")
    p.add_argument("--seed", type=int, default=7, help="pipeline: phantom seed")
    p.add_argument("--no-labels", action="store_true", help="pipeline: no manual labels (the metrics stage idles)")
    p.add_argument("--no-peers", action="store_true", help="pipeline: skip the MONAI and medpy comparisons")
    p.add_argument("--json", default=None, metavar="FILE", help="also write every number as JSON")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads to use")
    return p


def run(args) -> int:
    what = args.what or ["forward"]
    unknown = [w for w in what if w not in BENCHES]
    if unknown:
        raise InputError(f"unknown bench {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    rows = []
    everything: dict[str, Any] = {}
    if "forward" in what:
        rows.append((f"forward 1x1x{'x'.join(map(str, args.shape))}",
                     bench_forward(args.model, shape_zyx=args.shape, repeats=args.repeats, device=args.device,
                                   levels=args.levels)))
    if "train-step" in what:
        rows.append((f"train step ({args.recipe})", bench_train_step(args.recipe, args.iterations,
                                                                     [f"device={args.device}"] +
                                                                     ([f"threads={args.threads}"] if args.threads else []))))
    for name, r in rows:
        print(f"{name:28s} " + "  ".join(f"{k}={v}" for k, v in r.items()))
        everything[name] = r
    if "pipeline" in what:
        print("pipeline: segment end to end, each case in a fresh process (wall seconds depend on what else runs "
              "on this machine; CPU seconds less so)", flush=True)
        cases = []
        for name in args.cases:  # one at a time, so each table prints as soon as its case is done
            cases += bench_pipeline([name], model=args.model, device=args.device, threads=args.threads,
                                    seed=args.seed, labels=not args.no_labels)
            print(format_pipeline(cases[-1]), flush=True)
        everything["pipeline"] = cases
        if not args.no_peers:
            print(f"peers on {args.cases[0]} (same model and input; same masks):", flush=True)
            peers = bench_peers(args.cases[0], model=args.model, device=args.device, seed=args.seed)
            for r in peers:
                print(format_peer(r), flush=True)
            everything["peers"] = peers
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(everything, indent=2, default=str))
    return 0
