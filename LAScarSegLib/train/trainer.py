"""The MTL-SESA trainer: one loop for every variant, on CPU, one GPU or several (torchrun).

Run folder layout (everything needed to resume, inspect and export):
    config.json     the full config (recipe values, file, overrides)
    split.json      train / validation case ids and phantom seeds
    last.pt         the latest checkpoint (every `checkpoint_every` iterations; atomic)
    best.pt         the best checkpoint by validation score
    metrics.csv     one row per log step and per validation
    curves.png      training and validation curves
Checkpoints hold only tensors and plain values, and load with ``weights_only=True``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..core.datasets import Case, open_dataset, split_by_case
from ..core.distance import wall_band
from ..core.errors import InputError
from ..core.image import grid_for_spacing, resample, zscore
from ..infer.windows import sliding_window
from ..model.network import ModelConfig, build_model
from ..model.variants import TERM_HEADS, Variant, get_variant
from ..synth.phantom import make_phantom, paint_synthetic_scar
from ..synth.seeds import FULL_FOV_PHANTOM_SEED0, TRAIN_PHANTOM_SEED0, VAL_PHANTOM_SEED0
from .checkpoints import atomic_torch_save, initial_weights, load_checkpoint, load_matching, rng_state, set_rng_state
from .losses import LossWeights, total_loss
from .train_config import TrainConfig, departures
from .training_data import Augmentation, TrainingCase, augment, batch_to_inputs, prepare_case, sample_batch

Log = Callable[[str], None]


# ------------------------------------------------------------------------------ distributed setup
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """Join a torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def choose_device(requested: str, local_rank: int = 0) -> str:
    if requested == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but CUDA is not available here")
    if requested not in ("cpu",) and not requested.startswith("cuda"):
        raise InputError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return requested


# ------------------------------------------------------------------------------------ data setup
def _paint(case: Case, seed: int, wall_band_mm: float) -> Case:
    painted = paint_synthetic_scar(case.image, case.la, seed, wall_band_mm=wall_band_mm)
    prov = painted.info.get("provenance", "synthetic scar painted into the wall band of a real image")
    return Case(case.id, painted.image, case.la, painted.wall, painted.scar,
                dict(case.provenance, wall=prov, scar=prov), case.source)


def phantom_case(seed: int, full_fov: bool = False) -> Case:
    ph = make_phantom(seed, full_fov=full_fov)
    prov = ph.info.get("provenance", "synthetic LGE phantom")
    return Case(f"phantom-{seed}", ph.image, ph.la, ph.wall, ph.scar,
                {"la": prov, "wall": prov, "scar": prov}, "phantom")


@dataclass
class DataSplit:
    train_refs: list[tuple[int, str]]  # (source index, case id)
    val_refs: list[tuple[int, str]]
    train_phantoms: list[int]
    val_phantoms: list[int]
    train_full_fov: list[int] = field(default_factory=list)  # full-field-of-view phantom seeds

    def as_dict(self) -> dict[str, Any]:
        return {
            "train": [f"{s}:{c}" for s, c in self.train_refs],
            "val": [f"{s}:{c}" for s, c in self.val_refs],
            "train_phantoms": self.train_phantoms,
            "val_phantoms": self.val_phantoms,
            "train_full_fov_phantoms": self.train_full_fov,
        }


def make_split(cfg: TrainConfig) -> tuple[list, DataSplit]:
    """Open the configured sources and split each by case id, deterministically by seed."""
    datasets = []
    train, val = [], []
    for i, src in enumerate(cfg.data):
        ds = open_dataset(src["root"], src.get("layout", "auto"))
        ids = ds.ids()[: src["max_cases"]] if src.get("max_cases") else ds.ids()
        n_val = min(cfg.val_cases, max(0, len(ids) - 1))
        tr, va = split_by_case(ids, n_val, cfg.seed)
        train += [(i, c) for c in tr]
        val += [(i, c) for c in va]
        datasets.append(ds)
    split = DataSplit(
        train, val,
        [TRAIN_PHANTOM_SEED0 + k for k in range(cfg.phantoms)],
        [VAL_PHANTOM_SEED0 + k for k in range(cfg.val_phantoms)],
        [FULL_FOV_PHANTOM_SEED0 + k for k in range(cfg.full_fov_phantoms)],
    )
    return datasets, split


def load_training_cases(cfg: TrainConfig, datasets: list, refs: list[tuple[int, str]],
                        phantom_seeds: list[int], log: Log, full_fov_seeds: Sequence[int] = ()
                        ) -> tuple[list[TrainingCase], list[float], list[TrainingCase]]:
    """Load, paint where configured, and prepare cases.

    Sampling weights give the real cases, the phantoms and the full-field-of-view phantoms their
    configured shares of the patches (the real cases the rest); a missing group's share goes to
    the others. Full-field-of-view phantoms centre their patches on the LA boundary only
    `full_fov_la_focus` of the time: the rest show the chest's other blood pools, which the LA
    crops of la2018 rarely do.

    Returns the cases with every label the variant needs and their sampling weights, and the
    real cases whose scar was painted once more UNPAINTED, for the LA terms only. Painted scar sits
    on the true LA boundary, so a network that only ever sees painted images learns to find the LA
    by the painted rim and fails on real images (measured: LA Dice 0.93 painted vs 0.77 unpainted).
    """
    variant = get_variant(cfg.variant)
    needs_scar = "scar" in variant.heads
    cases: list[TrainingCase] = []
    weights: list[float] = []
    la_only: list[TrainingCase] = []
    real_weight = 1.0 - cfg.phantom_weight - cfg.full_fov_weight
    n_real = max(1, len(refs))
    t0 = time.perf_counter()
    for k, (si, cid) in enumerate(refs):
        src = cfg.data[si]
        case = datasets[si].load(cid)
        if needs_scar and case.scar is None:
            if not src.get("paint_scar", False):
                raise InputError(f"case {cid} of {src['root']}: variant {cfg.variant} needs scar labels; "
                                 "set paint_scar for this source to train on synthetic scar")
            if cfg.unpainted_fraction > 0:
                la_only.append(prepare_case(case, cfg.spacing_mm, beta=cfg.beta, wall_band_mm=cfg.wall_band_mm,
                                            boundary_mm=cfg.boundary_mm))
            case = _paint(case, seed=cfg.seed * 100_003 + k, wall_band_mm=cfg.wall_band_mm)
        cases.append(prepare_case(case, cfg.spacing_mm, beta=cfg.beta, wall_band_mm=cfg.wall_band_mm,
                                  boundary_mm=cfg.boundary_mm))
        weights.append(real_weight * float(src.get("weight", 1.0)) / n_real)
    for seed in phantom_seeds:
        cases.append(prepare_case(phantom_case(seed), cfg.spacing_mm, beta=cfg.beta,
                                  wall_band_mm=cfg.wall_band_mm, boundary_mm=cfg.boundary_mm))
        weights.append(cfg.phantom_weight / len(phantom_seeds))
    for seed in full_fov_seeds:
        tc = prepare_case(phantom_case(seed, full_fov=True), cfg.spacing_mm, beta=cfg.beta,
                          wall_band_mm=cfg.wall_band_mm, boundary_mm=cfg.boundary_mm)
        tc.la_focus = cfg.full_fov_la_focus
        cases.append(tc)
        weights.append(cfg.full_fov_weight / len(full_fov_seeds))
    mb = sum(c.nbytes() for c in cases) / 2**20
    mb += sum(c.nbytes() for c in la_only) / 2**20
    log(f"prepared {len(cases)} cases ({len(refs)} real, {len(phantom_seeds)} phantoms, {len(full_fov_seeds)} "
        f"full-field-of-view phantoms) and {len(la_only)} "
        f"unpainted real cases for the LA terms in {time.perf_counter() - t0:.0f} s, {mb:.0f} MB")
    return cases, weights, la_only


# ------------------------------------------------------------------------------------ validation
def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def validate(model, cfg: TrainConfig, val_cases: list[Case], device: str, divisor: int) -> dict[str, float]:
    """LA Dice at each case's native resolution, and scar Dice in the wall band, on held-out cases."""
    was_training = model.training
    model.eval()
    la_d, la_real, scar_d = [], [], []
    window = [max(p, 96) for p in cfg.patch_zyx]
    try:
        for case in val_cases:
            grid = grid_for_spacing(case.image.geometry, cfg.spacing_mm)
            img = zscore(resample(case.image, grid))
            probs = sliding_window(lambda x: model(x.contiguous()), img.array, window, divisor, device=device)
            if "la" in probs:
                p_la = resample(img.with_array(probs["la"][0]), case.image.geometry)
                pred = p_la.array > 0.5
                la_d.append(_dice(pred, case.la.array))
                if case.source != "phantom":
                    la_real.append(la_d[-1])
            if "scar" in probs and case.scar is not None:
                p_n = resample(img.with_array(probs["scar"][0]), case.image.geometry).array
                p_s = resample(img.with_array(probs["scar"][1]), case.image.geometry).array
                la_ref = case.la if "la" not in probs else case.la.with_array(pred.astype(np.uint8))
                band = case.wall.array.astype(bool) if case.wall is not None else wall_band(la_ref, cfg.wall_band_mm).array.astype(bool)
                scar_pred = (p_s > p_n) & band
                scar_d.append(_dice(scar_pred & case.wall.array.astype(bool), case.scar.array))
    finally:
        model.train(was_training)
    out: dict[str, float] = {}
    if la_d:  # real images decide when there are any: they are what the product meets
        out["val_la_dice"] = float(np.mean(la_real or la_d))
    if scar_d:
        out["val_scar_dice"] = float(np.mean(scar_d))
    if out:  # no validation case at all: nothing to score, the caller keeps the latest weights
        out["val_score"] = float(np.mean([out[k] for k in ("val_la_dice", "val_scar_dice") if k in out]))
    return out


def average_buffers(model, world: int) -> None:
    """Make BatchNorm running statistics identical on every rank (mean over ranks)."""
    for buf in model.buffers():
        if torch.is_floating_point(buf):
            tdist.all_reduce(buf, op=tdist.ReduceOp.SUM)
            buf.div_(world)
        else:  # num_batches_tracked: identical by construction, keep rank 0's
            tdist.broadcast(buf, 0)


# ----------------------------------------------------------------------------------------- train
def _config_stages(path: Path, cfg: TrainConfig, start_it: int) -> list[dict[str, Any]]:
    """The run's config history: a resume with other values adds a stage naming what changed.

    config.json holds the current values, so without this a resumed run with new overrides would
    hide the values its earlier iterations were trained with.
    """
    new = json.loads(json.dumps(cfg.as_dict(), default=str))
    if start_it == 0 or not path.is_file():
        return [{"from_iteration": start_it, "changed": {}}]
    old = json.loads(path.read_text())
    stages = old.get("stages") or [{"from_iteration": 0, "changed": {}}]
    changed = {k: {"before": old.get(k), "after": v} for k, v in new.items() if old.get(k) != v}
    if changed:
        stages.append({"from_iteration": start_it, "changed": changed})
    return stages



def _plot_curves(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    tr = [r for r in rows if r["kind"] == "train"]
    va = [r for r in rows if r["kind"] == "val"]
    if tr:
        it = [int(r["iteration"]) for r in tr]
        ax1.plot(it, [float(r["loss"]) for r in tr], label="total loss")
        for key in ("bce_la", "se_scar", "sa_m1", "sa_m2"):
            if tr[0].get(key):
                ax1.plot(it, [float(r[key] or "nan") for r in tr], label=key, alpha=0.7)
        ax1.set_xlabel("iteration")
        ax1.set_yscale("symlog", linthresh=1e-2)
        ax1.legend(fontsize=8)
        ax1.set_title("training loss")
    for key in ("val_la_dice", "val_scar_dice"):
        pts = [(int(r["iteration"]), float(r[key])) for r in va if r.get(key)]
        if pts:
            ax2.plot(*zip(*pts), marker="o", label=key)
    ax2.set_xlabel("iteration")
    ax2.set_ylim(0, 1)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8)
    else:
        ax2.text(0.5, 0.5, "no validation case", ha="center", transform=ax2.transAxes)
    ax2.set_title("validation")
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


CSV_FIELDS = ["kind", "iteration", "seconds", "lr", "loss", "bce_la", "se_la", "dice_la", "bce_scar", "dice_scar",
              "se_scar", "sa_m1", "sa_m2", "it_per_s", "val_la_dice", "val_scar_dice", "val_score"]


def train(cfg: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False,
          init_from: str | os.PathLike | None = None, log: Log | None = None,
          stop_after: int | None = None, return_model: bool = False):
    """Train `cfg` into `out_dir`; returns a summary (best score, iterations, rate, case ids).

    `resume` continues from `out_dir/last.pt`; `init_from` fine-tunes from a checkpoint or an
    exported model. `stop_after` ends the run after that many iterations in this call;
    `return_model` returns (summary, model) so a caller can inspect this rank's weights.
    """


    out = Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = choose_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist = init_distributed("cuda" if device.startswith("cuda") else "cpu")
    if device.startswith("cuda") and dist.world > 1:
        device = f"cuda:{dist.local_rank}"
    log = log or (lambda m: print(m, flush=True))
    say = (lambda m: log(m)) if dist.main else (lambda m: None)
    last = out / "last.pt"
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume and last.exists():
            raise InputError(f"{out}: holds a run already (last.pt); pass --resume to continue it or choose another folder")
    variant = get_variant(cfg.variant)
    torch.manual_seed(cfg.seed + dist.rank)
    rng = np.random.default_rng([cfg.seed, dist.rank])
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + dist.rank)

    datasets, split = make_split(cfg)
    # each rank trains on its own shard of the training cases (different data per process)
    shard = split.train_refs[dist.rank::dist.world] if dist.world > 1 else split.train_refs
    shard_ph = split.train_phantoms[dist.rank::dist.world] if dist.world > 1 else split.train_phantoms
    shard_ff = split.train_full_fov[dist.rank::dist.world] if dist.world > 1 else split.train_full_fov
    if not shard and not shard_ph and not shard_ff:
        raise InputError("no training case left after the validation split (add data or lower val_cases)")
    cases, weights, la_only = load_training_cases(cfg, datasets, shard, shard_ph, say, shard_ff)
    # validation: real cases as they are (LA Dice on real images), phantoms for LA and scar
    val_cases = [datasets[s].load(c) for s, c in split.val_refs] if dist.main else []
    if dist.main and ("scar" in variant.heads or not split.val_refs):
        val_cases += [phantom_case(s) for s in split.val_phantoms]
    la_terms = tuple(t for t in variant.terms if TERM_HEADS[t] == ("la",))
    la_variant = Variant(f"{variant.name} (LA terms)", ("la",), la_terms) if la_only and la_terms else None

    mcfg = ModelConfig(levels=cfg.levels, base_channels=cfg.base_channels, norm=cfg.norm,
                       heads=variant.heads, scar_base_channels=cfg.scar_base_channels)
    model = build_model(mcfg).to(device)
    if init_from is not None and not resume:
        load_matching(model, initial_weights(init_from), say)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_every, gamma=cfg.lr_gamma)
    use_amp = device.startswith("cuda") and cfg.amp in ("auto", "on")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    lw = LossWeights(lambda_la=cfg.lambda_la, lambda_scar=cfg.lambda_scar, lambda_m1=cfg.lambda_m1,
                     lambda_m2=cfg.lambda_m2, growth=cfg.lambda_growth, growth_every=cfg.lambda_growth_every,
                     growth_cap=cfg.lambda_growth_cap, boundary_thickness_mm=cfg.boundary_mm,
                     dice_la=cfg.lambda_dice_la)
    aug = Augmentation(flip_p=cfg.flip_p, rotate_p=cfg.rotate_p, rotate_deg=cfg.rotate_deg,
                       intensity_p=cfg.intensity_p, bias_p=cfg.bias_p, noise_p=cfg.noise_p)

    start_it, best, elapsed0 = 0, -math.inf, 0.0
    if resume:
        if not last.exists():
            raise InputError(f"{out}: nothing to resume (no last.pt)")
        ckpt = load_checkpoint(last)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start_it, best, elapsed0 = int(ckpt["iteration"]), float(ckpt["best_score"]), float(ckpt["elapsed_s"])
        if dist.rank < len(ckpt.get("rng", [])):
            set_rng_state(rng, ckpt["rng"][dist.rank])
        say(f"resumed {out} at iteration {start_it} (best validation score {best:.4f})")

    ddp_model = model
    if dist.world > 1:

        if device.startswith("cuda"):  # global batch statistics (SyncBatchNorm needs CUDA)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # buffers are averaged after each step instead of broadcast from rank 0 (works on gloo too)
        ddp_model = DDP(model, device_ids=[dist.local_rank] if device.startswith("cuda") else None,
                        broadcast_buffers=False, find_unused_parameters=la_variant is not None)

    csv_path = out / "metrics.csv"
    if dist.main:
        (out / "config.json").write_text(json.dumps(
            {**cfg.as_dict(), "departures_from_paper": departures(cfg.recipe),
             "stages": _config_stages(out / "config.json", cfg, start_it)}, indent=2, default=str))
        (out / "split.json").write_text(json.dumps(split.as_dict(), indent=2))
        if not csv_path.exists():
            with csv_path.open("w", newline="") as fh:
                csv.writer(fh).writerow(CSV_FIELDS)

    def write_row(row: dict[str, Any]) -> None:
        if dist.main:
            with csv_path.open("a", newline="") as fh:
                csv.DictWriter(fh, CSV_FIELDS).writerow({k: row.get(k, "") for k in CSV_FIELDS})

    def save(path: Path, iteration: int, elapsed: float) -> None:
        rngs = [rng_state(rng)]
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "iteration": iteration, "best_score": best,
                            "elapsed_s": elapsed, "config": cfg.as_dict(), "model_config": mcfg.as_dict(),
                            "variant": variant.name, "rng": rngs}, path)

    say(f"training {variant.name} ({cfg.recipe}) on {device}, {dist.world} process(es), "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, iterations {start_it}..{cfg.iterations}")
    model.train()
    t_start = time.perf_counter()
    t_log, it_log = t_start, start_it
    acc: dict[str, list[float]] = {}
    it = start_it
    end = cfg.iterations if stop_after is None else min(cfg.iterations, start_it + stop_after)
    time_limit = cfg.time_limit_min * 60 if cfg.time_limit_min else None
    stopped_early = False
    while it < end:
        la_step = la_variant is not None and rng.random() < cfg.unpainted_fraction
        if la_step:  # an unpainted real batch trains the LA terms only (its scar is unknown)
            batch_np = sample_batch(la_only, None, cfg.batch_size, cfg.patch_zyx, rng, cfg.la_focus)
        else:
            batch_np = sample_batch(cases, weights, cfg.batch_size, cfg.patch_zyx, rng, cfg.la_focus)
        # augment on the training device: on a GPU the rotation resampling of all channels is free
        batch = augment(torch.from_numpy(batch_np).to(device, non_blocking=True), aug, gen, cases[0].spacing_zyx)
        x, targets = batch_to_inputs(batch, cases[0].spacing_zyx)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast("cuda", enabled=use_amp):
            if la_step and dist.world == 1:  # DDP needs its own forward; one process may skip the scar decoder
                outputs = model.forward_heads(x, ["la"])
            else:
                outputs = ddp_model(x)
        outputs = {k: v.float() for k, v in outputs.items()}
        loss, terms = total_loss(outputs, targets, la_variant if la_step else variant, lw, it)
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at iteration {it}: {terms}")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        if dist.world > 1:
            average_buffers(model, dist.world)
        it += 1
        for k, v in terms.items():
            acc.setdefault(k, []).append(float(v))
        acc.setdefault("loss", []).append(float(loss.detach()))
        elapsed = elapsed0 + time.perf_counter() - t_start
        if it % cfg.log_every == 0 or it == end:
            now = time.perf_counter()
            rate = (it - it_log) / max(now - t_log, 1e-9)
            t_log, it_log = now, it
            remaining = end - it
            eta = remaining / rate if rate > 0 else float("inf")
            if time_limit:
                eta = min(eta, max(0.0, time_limit - elapsed))
            row = {"kind": "train", "iteration": it, "seconds": round(elapsed, 1), "lr": opt.param_groups[0]["lr"],
                   "it_per_s": round(rate, 4), **{k: round(float(np.mean(v)), 6) for k, v in acc.items()}}
            write_row(row)
            say(f"it {it}/{end}  loss {row['loss']:.4f}  {rate:.2f} it/s  ETA {eta / 60:.1f} min  "
                + "  ".join(f"{k} {row[k]:.4g}" for k in terms))
            acc = {}
        time_up = time_limit is not None and elapsed >= time_limit
        if dist.main and (it % cfg.val_every == 0 or it == end or time_up):
            vm = validate(model, cfg, val_cases, device, mcfg.divisor)
            if not vm:
                save(out / "best.pt", it, elapsed)
                say(f"no validation case: best.pt holds the latest weights (iteration {it})")
            else:
                write_row({"kind": "val", "iteration": it, "seconds": round(elapsed, 1), **vm})
                say(f"validation at {it}: " + ", ".join(f"{k} {v:.4f}" for k, v in vm.items()))
            if vm and vm["val_score"] > best:
                best = vm["val_score"]
                save(out / "best.pt", it, elapsed)
                say(f"new best {best:.4f} -> {out / 'best.pt'}")
        if dist.main and (it % cfg.checkpoint_every == 0 or it == end or time_up):
            save(last, it, elapsed)
            _plot_curves(csv_path, out / "curves.png")
        if dist.world > 1:

            flag = torch.tensor([1.0 if time_up else 0.0])
            tdist.broadcast(flag, 0)
            time_up = bool(flag.item())
        if time_up:
            say(f"time limit {cfg.time_limit_min} min reached at iteration {it}")
            stopped_early = True
            break
    elapsed = elapsed0 + time.perf_counter() - t_start
    summary = {"iterations": it, "best_score": best, "elapsed_s": round(elapsed, 1),
               "it_per_s": round((it - start_it) / max(time.perf_counter() - t_start, 1e-9), 4),
               "stopped_by_time_limit": stopped_early, "device": device, "world_size": dist.world,
               "rank": dist.rank, "train_case_ids": [c.id for c in cases]}
    if dist.main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return (summary, model) if return_model else summary
