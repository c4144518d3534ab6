"""`lascarseg demo`: the built-in example, run end to end on a synthetic LGE phantom.

The phantom is generated (deterministic by seed) with its LA, wall and scar ground truth; the
checks of the method's core run on it (labels, distance maps, resampling, network and losses);
then the whole segment-and-quantify job runs with the registered model, scored against the
phantom's truth. Without a registered model the demo stops after the checks and says so.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..core.distance import boundary_mask, distance_probability_maps, signed_distance, wall_band
from ..core.errors import ModelError
from ..core.image import grid_for_spacing, resample_mask, write_volume, zscore
from ..core.outputs import atomic_output_dir, write_json
from ..model.network import ModelConfig, build_model
from ..model.variants import get_variant
from ..synth.phantom import make_phantom
from ..train.losses import LossWeights, total_loss
from .evaluate import phantom_true_burdens
from .pipeline import segment, write_outputs

Check = dict[str, Any]


def _check(name: str, ok: bool, value: Any, expect: str) -> Check:
    return {"check": name, "ok": bool(ok), "value": value, "expected": expect}


def core_checks(ph, model_spacing=(1.25, 1.25, 1.25), wall_band_mm: float = 3.0) -> list[Check]:
    """Checks of the method's core on the phantom; each compares a measured value with its bound."""
    la, wall, scar = (m.array.astype(bool) for m in (ph.la, ph.wall, ph.scar))
    out = [
        _check("scar inside wall", not (scar & ~wall).any(), int((scar & ~wall).sum()), "0 scar voxels outside the wall"),
        _check("wall outside LA", not (wall & la).any(), int((wall & la).sum()), "0 wall voxels inside the LA"),
    ]
    band = wall_band(ph.la, wall_band_mm).array.astype(bool)
    cover = float((band & wall).sum() / max(wall.sum(), 1))
    out.append(_check(f"wall band ({wall_band_mm} mm) covers the wall", cover > 0.95, round(cover, 4), "> 0.95"))
    phi = signed_distance(ph.la).array
    sign_ok = bool((phi[la] <= 0).all() and (phi[~la] > 0).all())
    out.append(_check("signed distance: <= 0 inside, > 0 outside (Eq. 1)", sign_ok,
                      [round(float(phi.min()), 2), round(float(phi.max()), 2)], "min < 0 < max, in mm"))
    p_normal, p_scar = distance_probability_maps(ph.wall, ph.scar)
    read_out = (p_scar.array > p_normal.array) & wall
    agree = bool((read_out == (scar & wall)).all())
    out.append(_check("scar read-out p_scar > p_normal recovers the scar (Eq. 4)", agree,
                      int((read_out != (scar & wall)).sum()), "0 disagreeing voxels"))
    m1 = boundary_mask(ph.la, 4.0).array.astype(bool)
    out.append(_check("boundary mask M1 selects voxels (Eq. 5)", m1.sum() > 0, int(m1.sum()), "> 0 voxels"))
    model_grid = grid_for_spacing(ph.la.geometry, model_spacing)
    back = resample_mask(resample_mask(ph.la, model_grid), ph.la.geometry)
    change = float(abs(back.array.sum() - la.sum()) / la.sum() * 100)
    out.append(_check(f"LA volume through the {model_spacing[0]} mm model grid and back", change < 2.0,
                      round(change, 3), "< 2 % change"))
    out.append(_network_check(ph, m1, wall_band_mm))
    return out


def _network_check(ph, m1: np.ndarray, wall_band_mm: float) -> Check:
    """One forward and backward pass of an untrained MTL-SESA network on an LA-centred patch."""

    torch.manual_seed(0)
    zc, yc, xc = (int(v) for v in np.argwhere(ph.la.array).mean(axis=0))
    pz, py, px = 48, 64, 64
    sl = tuple(slice(max(0, c - p // 2), max(0, c - p // 2) + p) for c, p in zip((zc, yc, xc), (pz, py, px)))
    img = zscore(ph.image).array[sl]
    if img.shape != (pz, py, px):
        return _check("network and losses", False, f"patch {img.shape} cut by the border", "a full patch")
    phi = signed_distance(ph.la).array[sl]
    pn, ps = distance_probability_maps(ph.wall, ph.scar)

    def t(a: np.ndarray) -> "torch.Tensor":
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]

    batch = {"la": t(ph.la.array[sl]), "phi": t(phi), "p_target": torch.cat([t(pn.array[sl]), t(ps.array[sl])], 1),
             "wall": t(ph.wall.array[sl]), "scar": t(ph.scar.array[sl]), "m1": t(m1[sl]),
             "spacing_zyx": ph.image.spacing_zyx}
    variant = get_variant("mtl-sesa")
    model = build_model(ModelConfig(levels=4, base_channels=8, heads=variant.heads))
    t0 = time.perf_counter()
    loss, terms = total_loss(model(t(img)), batch, variant, LossWeights(), 0)
    loss.backward()
    grad = sum(float(p.grad.abs().sum()) for p in model.decoders["scar"].parameters() if p.grad is not None)
    ok = bool(torch.isfinite(loss)) and grad > 0
    return _check("MTL-SESA losses finite, gradient reaches the scar decoder", ok,
                  {k: round(float(v), 5) for k, v in terms.items()} | {"seconds": round(time.perf_counter() - t0, 2)},
                  "finite loss, non-zero gradient")


def segment_phantom(ph, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Run the whole segment-and-quantify job on the phantom with the registered model.

    The phantom's own labels are given as manual labels, so the report carries LA and scar metrics
    (scar metrics on SYNTHETIC scar). Outputs go to `out` exactly as `lascarseg segment` writes them.
    """

    try:
        result = segment(ph.image, la_label=ph.la, scar_label=ph.scar)
    except ModelError as exc:
        return {"run": False, "why": f"no usable registered model: {exc}"}
    write_outputs(result, out)
    r = result.report.to_json()

    truth = phantom_true_burdens(ph, float(result.card["wall_band_mm"]))
    log(f"segmentation with {r['model']['name']} {r['model']['version']}: LA {r['la']['volume_ml']} mL "
        f"(truth {truth['la_volume_ml']:.1f}); scar burden {r['scar']['burden_surface_pct']:.1f} % of the LA "
        f"surface (truth {truth['burden_surface_pct']:.1f}), {r['scar']['burden_wall_pct']:.1f} % of the wall "
        f"(truth {truth['burden_wall_pct']:.1f}), Utah {r['scar']['utah_stage']}; "
        f"LA Dice {r['metrics']['la']['dice']:.3f}, surface Dice_scar {r['metrics']['scar']['dice_scar']:.3f}, "
        f"GDice {r['metrics']['scar']['gdice']:.3f}; {r['timings_s']['total']:.1f} s")
    return {"run": True, "folder": out.name, "report": r, "truth": truth}


def preview_png(ph, path: Path) -> None:
    """Axial slice through the LA: the image, and the same slice with LA, wall and scar outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = int(np.argwhere(ph.scar.array).mean(axis=0)[0]) if ph.scar.array.any() else int(np.argwhere(ph.la.array).mean(axis=0)[0])
    img = ph.image.array[z]
    sx, sy = ph.image.geometry.spacing[:2]
    extent = (0, img.shape[1] * sx, img.shape[0] * sy, 0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax in axes:
        ax.imshow(img, cmap="gray", extent=extent, vmin=np.percentile(img, 1), vmax=np.percentile(img, 99.5))
        ax.set_xlabel("mm")
    axes[0].set_title(f"synthetic LGE phantom, slice {z}")
    # wall first: its inner edge is the LA's edge, which is drawn over it, dashed
    for arr, colour, label, style in ((ph.wall.array[z], "yellow", "wall", "solid"),
                                      (ph.scar.array[z], "red", "scar", "solid"),
                                      (ph.la.array[z], "deepskyblue", "LA", "dashed")):
        if arr.any():
            axes[1].contour(arr, levels=[0.5], colors=[colour], linewidths=1.2, linestyles=style,
                            extent=(0, img.shape[1] * sx, 0, img.shape[0] * sy), origin="upper")
            axes[1].plot([], [], color=colour, label=label, linestyle=style)
    axes[1].legend(loc="lower right", fontsize=8)
    axes[1].set_title("ground truth (synthetic)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_demo(out: str | Path, *, seed: int = 0, full_fov: bool = False, overwrite: bool = False,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    t0 = time.perf_counter()
    with atomic_output_dir(out, overwrite, kind="demo") as stage:
        ph = make_phantom(seed, full_fov=full_fov)
        t_ph = time.perf_counter() - t0
        log(f"phantom seed {seed}: {ph.image.geometry.describe()} ({t_ph:.2f} s)")
        for name in ("image", "la", "wall", "scar"):
            write_volume(getattr(ph, name), stage / f"phantom_{name}.nii.gz")
        checks = core_checks(ph)
        preview_png(ph, stage / "phantom_preview.png")
        model = segment_phantom(ph, stage / "segmentation", log)
        summary = {
            "phantom": {k: (v if not isinstance(v, np.generic) else v.item()) for k, v in ph.info.items()},
            "core_checks": checks,
            "all_checks_passed": all(c["ok"] for c in checks),
            "segmentation": model if model["run"] else
                            f"not run ({model['why']}); this demo stops after the phantom and the core checks",
            "seconds": round(time.perf_counter() - t0, 2),
        }
        write_json(summary, stage / "demo_summary.json")
    for c in checks:
        log(f"  [{'ok' if c['ok'] else 'FAILED'}] {c['check']}: {c['value']} (expected {c['expected']})")
    if not model["run"]:
        log(summary["segmentation"])
    log(f"wrote {Path(out)}/ (phantom images and labels, phantom_preview.png, demo_summary.json"
        + (", segmentation/ with report.json and snapshot.png)" if model["run"] else ")"))
    return summary


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="run the built-in example on a synthetic LGE phantom")
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full-fov", action="store_true", help="a 640x640x88 field of view with the LA off centre")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder that holds results")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads to use")
    return p


def run(args) -> int:
    summary = run_demo(args.out, seed=args.seed, full_fov=args.full_fov, overwrite=args.overwrite)
    # the segmentation is the main job: without a usable model the demo has not done it
    return 0 if summary["all_checks_passed"] and isinstance(summary["segmentation"], dict) else 1
