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
from typing import Any, Callable, TypeVar

import numpy as np
import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..core.datasets import Case
from ..core.errors import InputError
from ..model.network import ModelConfig, build_model
from ..model.variants import TERM_HEADS, Variant, get_variant
from .cases import DataSplit, load_training_cases, make_split, phantom_case, validate
from .checkpoints import atomic_torch_save, initial_weights, load_checkpoint, load_matching, rng_state, set_rng_state
from .distributed import Dist, average_buffers, choose_device, init_distributed
from .losses import LossWeights, total_loss
from .train_config import TrainConfig, departures
from .training_data import Augmentation, TrainingCase, augment, batch_to_inputs, sample_batch

Log = Callable[[str], None]


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


@dataclass
class _Run:
    """Where and how this process trains: config, run folder, device, ranks, log and seeded generators."""

    cfg: TrainConfig
    out: Path
    device: str
    dist: Dist
    say: Log  # logs on rank 0 only
    variant: Variant
    rng: np.random.Generator  # batches (checkpointed, so a resumed run draws what it would have)
    gen: torch.Generator  # augmentations

    @property
    def last(self) -> Path:
        return self.out / "last.pt"

    @property
    def csv_path(self) -> Path:
        return self.out / "metrics.csv"


@dataclass
class _Data:
    """This rank's training cases with their sampling weights, and the validation cases."""

    split: DataSplit
    cases: list[TrainingCase]
    weights: list[float]
    la_only: list[TrainingCase]  # real cases unpainted, for the LA terms only
    val_cases: list[Case]
    la_variant: Variant | None  # the variant's LA terms alone, for unpainted batches; None: no such batch
    aug: Augmentation


@dataclass
class _Learner:
    """The network and what updates it: optimiser, scheduler, AMP scaler, loss weights."""

    mcfg: ModelConfig
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.StepLR
    scaler: torch.amp.GradScaler
    use_amp: bool
    lw: LossWeights
    ddp_model: torch.nn.Module = field(init=False)  # what a step's forward runs: the DDP wrapper under torchrun

    def __post_init__(self) -> None:
        self.ddp_model = self.model


@dataclass
class _Progress:
    """Iteration, best score and clocks; the first three come from the checkpoint on resume."""

    start_it: int = 0
    best: float = -math.inf
    elapsed0: float = 0.0  # seconds trained before this call
    it: int = 0
    end: int = 0
    time_limit: float | None = None  # seconds
    t_start: float = 0.0
    t_log: float = 0.0
    it_log: int = 0
    acc: dict[str, list[float]] = field(default_factory=dict)  # loss terms since the last log row
    stopped_early: bool = False

    def elapsed(self) -> float:
        """Seconds trained in all, earlier calls included."""
        return self.elapsed0 + time.perf_counter() - self.t_start


_T = TypeVar("_T")


def _shard(items: list[_T], ranks: Dist) -> list[_T]:
    """This rank's share of `items`: each rank trains on its own cases (different data per process)."""
    return items[ranks.rank::ranks.world] if ranks.world > 1 else items


def _open_run(cfg: TrainConfig, out: Path, resume: bool, log: Log) -> _Run:
    """Threads, device, process group and run folder (refusing to overwrite a run); seeds the generators."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = choose_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    ranks = init_distributed("cuda" if device.startswith("cuda") else "cpu")
    if device.startswith("cuda") and ranks.world > 1:
        device = f"cuda:{ranks.local_rank}"
    say: Log = (lambda m: log(m)) if ranks.main else (lambda m: None)
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume and (out / "last.pt").exists():
            raise InputError(f"{out}: holds a run already (last.pt); pass --resume to continue it or choose another folder")
    variant = get_variant(cfg.variant)
    torch.manual_seed(cfg.seed + ranks.rank)
    rng = np.random.default_rng([cfg.seed, ranks.rank])
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + ranks.rank)
    return _Run(cfg, out, device, ranks, say, variant, rng, gen)


def _build_data(run: _Run) -> _Data:
    """Split the sources, prepare this rank's training cases and (rank 0) load the validation cases."""
    cfg, ranks, variant = run.cfg, run.dist, run.variant
    datasets, split = make_split(cfg)
    shard, shard_ph, shard_ff = (_shard(split.train_refs, ranks), _shard(split.train_phantoms, ranks),
                                 _shard(split.train_full_fov, ranks))
    if not shard and not shard_ph and not shard_ff:
        raise InputError("no training case left after the validation split (add data or lower val_cases)")
    cases, weights, la_only = load_training_cases(cfg, datasets, shard, shard_ph, run.say, shard_ff)
    # validation: real cases as they are (LA Dice on real images), phantoms for LA and scar
    val_cases = [datasets[s].load(c) for s, c in split.val_refs] if ranks.main else []
    if ranks.main and ("scar" in variant.heads or not split.val_refs):
        val_cases += [phantom_case(s) for s in split.val_phantoms]
    la_terms = tuple(t for t in variant.terms if TERM_HEADS[t] == ("la",))
    la_variant = Variant(f"{variant.name} (LA terms)", ("la",), la_terms) if la_only and la_terms else None
    aug = Augmentation(flip_p=cfg.flip_p, rotate_p=cfg.rotate_p, rotate_deg=cfg.rotate_deg,
                       intensity_p=cfg.intensity_p, bias_p=cfg.bias_p, noise_p=cfg.noise_p)
    return _Data(split, cases, weights, la_only, val_cases, la_variant, aug)


def _build_learner(run: _Run, init_from: str | os.PathLike | None, resume: bool) -> _Learner:
    """The network (fine-tuned from `init_from` unless resuming), its optimiser, scheduler and loss weights."""
    cfg = run.cfg
    mcfg = ModelConfig(levels=cfg.levels, base_channels=cfg.base_channels, norm=cfg.norm,
                       heads=run.variant.heads, scar_base_channels=cfg.scar_base_channels)
    model = build_model(mcfg).to(run.device)
    if init_from is not None and not resume:
        load_matching(model, initial_weights(init_from), run.say)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    opt: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_every, gamma=cfg.lr_gamma)
    use_amp = run.device.startswith("cuda") and cfg.amp in ("auto", "on")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    lw = LossWeights(lambda_la=cfg.lambda_la, lambda_scar=cfg.lambda_scar, lambda_m1=cfg.lambda_m1,
                     lambda_m2=cfg.lambda_m2, growth=cfg.lambda_growth, growth_every=cfg.lambda_growth_every,
                     growth_cap=cfg.lambda_growth_cap, boundary_thickness_mm=cfg.boundary_mm,
                     dice_la=cfg.lambda_dice_la)
    return _Learner(mcfg, model, opt, sched, scaler, use_amp, lw)


def _resume_or_start(run: _Run, learner: _Learner, resume: bool) -> _Progress:
    """A fresh start, or with `resume` the weights, optimiser, scheduler, progress and batch RNG of last.pt."""
    if not resume:
        return _Progress()
    if not run.last.exists():
        raise InputError(f"{run.out}: nothing to resume (no last.pt)")
    ckpt = load_checkpoint(run.last)
    learner.model.load_state_dict(ckpt["model"])
    learner.opt.load_state_dict(ckpt["optimizer"])
    learner.sched.load_state_dict(ckpt["scheduler"])
    prog = _Progress(int(ckpt["iteration"]), float(ckpt["best_score"]), float(ckpt["elapsed_s"]))
    if run.dist.rank < len(ckpt.get("rng", [])):
        set_rng_state(run.rng, ckpt["rng"][run.dist.rank])
    run.say(f"resumed {run.out} at iteration {prog.start_it} (best validation score {prog.best:.4f})")
    return prog


def _wrap_distributed(run: _Run, learner: _Learner, data: _Data) -> None:
    """Under torchrun: SyncBatchNorm on CUDA, and a DDP wrapper for the forward passes."""
    if run.dist.world <= 1:
        return
    cuda = run.device.startswith("cuda")
    if cuda:  # global batch statistics (SyncBatchNorm needs CUDA)
        learner.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(learner.model)
    # buffers are averaged after each step instead of broadcast from rank 0 (works on gloo too)
    learner.ddp_model = DDP(learner.model, device_ids=[run.dist.local_rank] if cuda else None,
                            broadcast_buffers=False, find_unused_parameters=data.la_variant is not None)


def _write_run_files(run: _Run, split: DataSplit, start_it: int) -> None:
    """config.json (with its history of stages), split.json and the header of a new metrics.csv (rank 0)."""
    if not run.dist.main:
        return
    cfg, out = run.cfg, run.out
    (out / "config.json").write_text(json.dumps(
        {**cfg.as_dict(), "departures_from_paper": departures(cfg.recipe),
         "stages": _config_stages(out / "config.json", cfg, start_it)}, indent=2, default=str))
    (out / "split.json").write_text(json.dumps(split.as_dict(), indent=2))
    if not run.csv_path.exists():
        with run.csv_path.open("w", newline="") as fh:
            csv.writer(fh).writerow(CSV_FIELDS)


def _write_row(run: _Run, row: dict[str, Any]) -> None:
    """Append one row to metrics.csv (rank 0)."""
    if run.dist.main:
        with run.csv_path.open("a", newline="") as fh:
            csv.DictWriter(fh, CSV_FIELDS).writerow({k: row.get(k, "") for k in CSV_FIELDS})


def _save(run: _Run, learner: _Learner, prog: _Progress, path: Path, elapsed: float) -> None:
    """Checkpoint the current iteration to `path`, atomically, with everything a resume needs."""
    rngs = [rng_state(run.rng)]
    atomic_torch_save({"model": learner.model.state_dict(), "optimizer": learner.opt.state_dict(),
                       "scheduler": learner.sched.state_dict(), "iteration": prog.it, "best_score": prog.best,
                       "elapsed_s": elapsed, "config": run.cfg.as_dict(), "model_config": learner.mcfg.as_dict(),
                       "variant": run.variant.name, "rng": rngs}, path)


def _begin_training(run: _Run, learner: _Learner, prog: _Progress, stop_after: int | None) -> None:
    """Say what is trained, switch to training mode and start the clocks and the iteration range."""
    cfg = run.cfg
    run.say(f"training {run.variant.name} ({cfg.recipe}) on {run.device}, {run.dist.world} process(es), "
            f"{sum(p.numel() for p in learner.model.parameters()) / 1e6:.2f} M parameters, "
            f"iterations {prog.start_it}..{cfg.iterations}")
    learner.model.train()
    prog.t_start = time.perf_counter()
    prog.t_log, prog.it_log = prog.t_start, prog.start_it
    prog.it = prog.start_it
    prog.end = cfg.iterations if stop_after is None else min(cfg.iterations, prog.start_it + stop_after)
    prog.time_limit = cfg.time_limit_min * 60 if cfg.time_limit_min else None


def _train_step(run: _Run, data: _Data, learner: _Learner, it: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Sample and augment a batch, compute the loss and take one optimiser step; returns loss and terms."""
    cfg = run.cfg
    la_step = data.la_variant is not None and run.rng.random() < cfg.unpainted_fraction
    if la_step:  # an unpainted real batch trains the LA terms only (its scar is unknown)
        batch_np = sample_batch(data.la_only, None, cfg.batch_size, cfg.patch_zyx, run.rng, cfg.la_focus)
    else:
        batch_np = sample_batch(data.cases, data.weights, cfg.batch_size, cfg.patch_zyx, run.rng, cfg.la_focus)
    spacing = data.cases[0].spacing_zyx
    # augment on the training device: on a GPU the rotation resampling of all channels is free
    batch = augment(torch.from_numpy(batch_np).to(run.device, non_blocking=True), data.aug, run.gen, spacing)
    x, targets = batch_to_inputs(batch, spacing)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast("cuda", enabled=learner.use_amp):
        if la_step and run.dist.world == 1:  # DDP needs its own forward; one process may skip the scar decoder
            outputs = learner.model.forward_heads(x, ["la"])
        else:
            outputs = learner.ddp_model(x)
    outputs = {k: v.float() for k, v in outputs.items()}
    variant = data.la_variant if la_step and data.la_variant is not None else run.variant
    loss, terms = total_loss(outputs, targets, variant, learner.lw, it)
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss at iteration {it}: {terms}")
    _optimise(run, learner, loss)
    return loss, terms


def _optimise(run: _Run, learner: _Learner, loss: torch.Tensor) -> None:
    """Backward pass, optimiser and scheduler step; under torchrun, average the BatchNorm buffers."""
    learner.opt.zero_grad(set_to_none=True)
    learner.scaler.scale(loss).backward()
    learner.scaler.step(learner.opt)
    learner.scaler.update()
    learner.sched.step()
    if run.dist.world > 1:
        average_buffers(learner.model, run.dist.world)


def _after_step(run: _Run, data: _Data, learner: _Learner, prog: _Progress, loss: torch.Tensor,
                terms: dict[str, Any]) -> bool:
    """Record the step; log, validate and checkpoint when due. Returns whether every rank's time is up."""
    cfg, it = run.cfg, prog.it
    for k, v in terms.items():
        prog.acc.setdefault(k, []).append(float(v))
    prog.acc.setdefault("loss", []).append(float(loss.detach()))
    elapsed = prog.elapsed()
    if it % cfg.log_every == 0 or it == prog.end:
        _log_training(run, learner, prog, terms, elapsed)
    time_up = prog.time_limit is not None and elapsed >= prog.time_limit
    if run.dist.main and (it % cfg.val_every == 0 or it == prog.end or time_up):
        _validate_and_keep_best(run, data, learner, prog, elapsed)
    if run.dist.main and (it % cfg.checkpoint_every == 0 or it == prog.end or time_up):
        _save(run, learner, prog, run.last, elapsed)
        _plot_curves(run.csv_path, run.out / "curves.png")
    if run.dist.world > 1:  # rank 0 decides, so that every rank stops at the same iteration
        flag = torch.tensor([1.0 if time_up else 0.0])
        tdist.broadcast(flag, 0)
        time_up = bool(flag.item())
    return time_up


def _log_training(run: _Run, learner: _Learner, prog: _Progress, terms: dict[str, Any], elapsed: float) -> None:
    """Write the mean loss terms since the last row to metrics.csv and say them with the rate and ETA."""
    it = prog.it
    now = time.perf_counter()
    rate = (it - prog.it_log) / max(now - prog.t_log, 1e-9)
    prog.t_log, prog.it_log = now, it
    remaining = prog.end - it
    eta = remaining / rate if rate > 0 else float("inf")
    if prog.time_limit:
        eta = min(eta, max(0.0, prog.time_limit - elapsed))
    row = {"kind": "train", "iteration": it, "seconds": round(elapsed, 1), "lr": learner.opt.param_groups[0]["lr"],
           "it_per_s": round(rate, 4), **{k: round(float(np.mean(v)), 6) for k, v in prog.acc.items()}}
    _write_row(run, row)
    run.say(f"it {it}/{prog.end}  loss {row['loss']:.4f}  {rate:.2f} it/s  ETA {eta / 60:.1f} min  "
            + "  ".join(f"{k} {row[k]:.4g}" for k in terms))
    prog.acc = {}


def _validate_and_keep_best(run: _Run, data: _Data, learner: _Learner, prog: _Progress, elapsed: float) -> None:
    """Score the validation cases and keep the best weights in best.pt (the latest when nothing can be scored)."""
    it, best_pt = prog.it, run.out / "best.pt"
    vm = validate(learner.model, run.cfg, data.val_cases, run.device, learner.mcfg.divisor)
    if not vm:
        _save(run, learner, prog, best_pt, elapsed)
        run.say(f"no validation case: best.pt holds the latest weights (iteration {it})")
    else:
        _write_row(run, {"kind": "val", "iteration": it, "seconds": round(elapsed, 1), **vm})
        run.say(f"validation at {it}: " + ", ".join(f"{k} {v:.4f}" for k, v in vm.items()))
    if vm and vm["val_score"] > prog.best:
        prog.best = vm["val_score"]
        _save(run, learner, prog, best_pt, elapsed)
        run.say(f"new best {prog.best:.4f} -> {best_pt}")


def _finish(run: _Run, data: _Data, prog: _Progress) -> dict[str, Any]:
    """The run's summary, also written to summary.json (rank 0)."""
    elapsed = prog.elapsed()
    summary = {"iterations": prog.it, "best_score": prog.best, "elapsed_s": round(elapsed, 1),
               "it_per_s": round((prog.it - prog.start_it) / max(time.perf_counter() - prog.t_start, 1e-9), 4),
               "stopped_by_time_limit": prog.stopped_early, "device": run.device, "world_size": run.dist.world,
               "rank": run.dist.rank, "train_case_ids": [c.id for c in data.cases]}
    if run.dist.main:
        (run.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def train(cfg: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False,
          init_from: str | os.PathLike | None = None, log: Log | None = None,
          stop_after: int | None = None, return_model: bool = False):
    """Train `cfg` into `out_dir`; returns a summary (best score, iterations, rate, case ids).

    `resume` continues from `out_dir/last.pt`; `init_from` fine-tunes from a checkpoint or an
    exported model. `stop_after` ends the run after that many iterations in this call;
    `return_model` returns (summary, model) so a caller can inspect this rank's weights.
    """
    run = _open_run(cfg, Path(out_dir), resume, log or (lambda m: print(m, flush=True)))
    data = _build_data(run)
    learner = _build_learner(run, init_from, resume)
    prog = _resume_or_start(run, learner, resume)
    _wrap_distributed(run, learner, data)
    _write_run_files(run, data.split, prog.start_it)
    _begin_training(run, learner, prog, stop_after)
    while prog.it < prog.end:
        loss, terms = _train_step(run, data, learner, prog.it)
        prog.it += 1
        if _after_step(run, data, learner, prog, loss, terms):
            run.say(f"time limit {cfg.time_limit_min} min reached at iteration {prog.it}")
            prog.stopped_early = True
            break
    summary = _finish(run, data, prog)
    return (summary, learner.model) if return_model else summary
