"""The `lascarseg` command line: a thin layer over the library.

Exit codes (CONTRACTS section 8): 0 done, 1 the job failed, 2 bad usage or input.
Each subcommand lives in the module that does the work and registers itself here through
`add_parser(subparsers)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Callable, Sequence

from .. import __version__
from ..core.errors import DamagedInstall, InputError, LAScarSegError, ModelError
from ..core.outputs import write_json
from ..core.threads import set_threads
from ..infer.masks import LASeed
from ..model.card import card_markdown
from ..model.loading import REGISTERED
from ..model.network import load_scripted
from ..model.registry import register
from ..model.variants import variant_names
from ..synth.seeds import TEST_FULL_FOV_SEED0, TEST_PHANTOM_SEED0, TEST_WHOLE_SCAN_SEED0
from ..train.checkpoints import load_checkpoint
from ..train.export import describe_run, export_checkpoint
from ..train.train_config import RECIPES, departures, make_config
from ..train.trainer import train
from . import bench, demo, phantom_command
from .batch import parse_shard, read_seeds, run_batch
from .evaluate import ids_from_split, run_evaluation
from .pipeline import run_segment

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads to use (default: all)")


# ------------------------------------------------------------------------------------ train
def _add_train(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train or fine-tune a network (MTL-SESA or an ablation variant)",
                       description="Train a variant of the paper's Tables 1-2 with a named recipe. Values come "
                       "from the recipe, then --config, then KEY=VALUE overrides (JSON values). "
                       f"Variants: {', '.join(variant_names())}. Recipes: {', '.join(RECIPES)}. "
                       "Several processes: torchrun --nproc_per_node=N -m LAScarSegLib.app.cli train ...")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics.csv, curves.png)")
    p.add_argument("--recipe", default="cpu-default", choices=RECIPES)
    p.add_argument("--variant", default=None, help="network variant (default mtl-sesa)")
    p.add_argument("--config", default=None, help="YAML or JSON config file")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from last.pt (with its config.json unless --config is given)")
    p.add_argument("--init-from", default=None, help="fine-tune from a checkpoint or an exported .pt model")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    add_threads_option(p)
    return p


def _run_train(args) -> int:
    overrides = list(args.overrides)
    if args.variant:
        overrides.append(f"variant={args.variant}")
    if args.threads:
        overrides.append(f"threads={args.threads}")
    config = args.config
    if args.resume and config is None and (Path(args.out) / "config.json").is_file():
        config = Path(args.out) / "config.json"  # a resume continues the run as it was set up
    cfg = make_config(args.recipe, config, overrides)
    if args.print_config:
        print(json.dumps({**cfg.as_dict(), "departures_from_paper": departures(cfg.recipe)}, indent=2, default=str))
        return EXIT_OK
    summary = train(cfg, args.out, resume=args.resume, init_from=args.init_from)
    print(json.dumps(summary, indent=2))
    return EXIT_OK


# ----------------------------------------------------------------------------------- export
def _add_export(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export a checkpoint as the TorchScript model file with its card")
    p.add_argument("checkpoint", help="a training checkpoint (best.pt or last.pt)")
    p.add_argument("--out", required=True, help="the .pt model file to write")
    p.add_argument("--name", default="lascarseg-mtl-sesa")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--card-extra", default=None, help="JSON file merged into the card (training_data, validation, ...)")
    p.add_argument("--evaluation", default=None,
                   help="a `lascarseg evaluate --out` JSON: its results become the card's validation section")
    p.add_argument("--register", action="store_true", help="add the file to the models.json beside it")
    p.add_argument("--markdown", action="store_true", help="also write the human-readable card (<out>.md)")
    return p


def _run_export(args) -> int:
    ckpt = Path(args.checkpoint)
    extra: dict = {}
    if (ckpt.parent / "split.json").is_file():  # a run folder: the card states what the run used
        extra.update(describe_run(ckpt.parent, int(load_checkpoint(ckpt)["iteration"])))
    if args.evaluation:
        extra["validation"] = json.loads(Path(args.evaluation).read_text())
    if args.card_extra:
        extra.update(json.loads(Path(args.card_extra).read_text()))
    path = export_checkpoint(args.checkpoint, args.out, name=args.name, version=args.version,
                             training_data=extra.pop("training_data", None),
                             validation=extra.pop("validation", None), extra=extra)
    print(f"wrote {path}")
    if args.markdown:
        md = Path(path).with_suffix(".md")
        md.write_text(card_markdown(load_scripted(path)[1]))
        print(f"wrote {md}")
    if args.register:  # a localiser is registered beside the segmentation model, never as the default
        entry = register(path, Path(path).parent / "models.json", default=extra.get("role") != "localiser")
        print(f"registered {entry['name']} {entry['version']} sha256 {entry['sha256']}")
    return EXIT_OK


# --------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="evaluate a model on held-out real LA labels and fresh phantoms")
    p.add_argument("--model", default=None, help="registered model name or .pt file (default: the registry's default)")
    p.add_argument("--data", default=None, help="a data folder with LA labels (any reader layout)")
    p.add_argument("--ids-from", default=None, help="a training run's split.json: evaluate its validation cases")
    p.add_argument("--ids", nargs="*", default=None, help="case ids to evaluate (default: all)")
    p.add_argument("--phantoms", type=int, default=0, help="number of fresh phantoms (seeds from 30000)")
    p.add_argument("--full-fov-phantoms", type=int, default=0,
                   help="number of fresh full-field-of-view phantoms, LA off centre (seeds from 50000)")
    _add_localiser_option(p)
    p.add_argument("--whole-scan-phantoms", type=int, default=0,
                   help="number of whole-chest scans from the hold-out generator (other shapes and appearance "
                        "than any training data; seeds from 70000): LA, scar, and how often a wrong LA is flagged")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", default=None, help="write the results as JSON here")
    add_threads_option(p)
    return p


def _run_evaluate(args) -> int:
    ids = args.ids or (ids_from_split(args.ids_from) if args.ids_from else None)
    if not args.data and not args.phantoms and not args.full_fov_phantoms and not args.whole_scan_phantoms:
        raise InputError("nothing to evaluate: give --data, --phantoms N and/or --full-fov-phantoms N")
    seeds = [TEST_PHANTOM_SEED0 + k for k in range(args.phantoms)]
    ff_seeds = [TEST_FULL_FOV_SEED0 + k for k in range(args.full_fov_phantoms)]
    ws_seeds = [TEST_WHOLE_SCAN_SEED0 + k for k in range(args.whole_scan_phantoms)]
    result = run_evaluation(args.model, real_root=args.data, ids=ids, phantom_seeds=seeds, full_fov_seeds=ff_seeds,
                            whole_scan_seeds=ws_seeds, device=args.device, localiser=args.localiser)
    for part in ("real", "phantoms", "full_fov_phantoms", "whole_scan_phantoms"):
        if part in result:
            print(f"{part}: " + json.dumps(result[part]["summary"]))
            if "localisation" in result[part]:
                print(f"{part} localisation: " + json.dumps(result[part]["localisation"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(result, args.out)
    return EXIT_OK


# ---------------------------------------------------------------------------- segment, batch
def _add_localiser_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--localiser", default=REGISTERED, metavar="NAME|PATH|none",
                   help="the coarse whole-scan network that finds the LA's box first (default: the one models.json "
                        "names, if any; none: the fine network looks over the whole field of view)")


def _add_job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="registered model name or .pt file (default: the bundled model)")
    _add_localiser_option(p)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--band", nargs=2, type=float, default=(-1.0, 3.0), metavar=("START_MM", "END_MM"),
                   help="projection band along the surface normal (default -1 3)")
    p.add_argument("--keep-all-components", action="store_true", help="keep every LA component (default: largest)")
    p.add_argument("--baselines", nargs="*", default=None, metavar="METHOD",
                   help="also run the classical baselines (all when no method is named)")
    p.add_argument("--baselines-on", choices=("predicted", "manual"), default="predicted",
                   help="the LA the baselines run on: the predicted one (default) or the manual --la-label")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder that holds results")
    add_threads_option(p)


def _add_segment(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("segment", help="segment the LA and quantify its scar in one LGE image")
    p.add_argument("image", help="LGE MRI: NIfTI, NRRD, MHA or a DICOM series folder")
    p.add_argument("--out", required=True, help="output folder (written all or nothing)")
    p.add_argument("--la-label", default=None, help="manual LA label: adds LA metrics to the report")
    p.add_argument("--scar-label", default=None, help="manual scar label (0/1, or 421/422 wall labels): adds scar metrics")
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--la-seed", default=None, type=_triple, metavar="R,A,S",
                      help="a point inside the LA in millimetres, RAS (as 3D Slicer shows coordinates): the LA kept is "
                           "the structure at this point (when the automatic localisation is wrong or doubtful)")
    seed.add_argument("--la-seed-ijk", default=None, type=_triple, metavar="I,J,K",
                      help="the same point as the input image's 0-based voxel index (ITK order: I along x, J along y, "
                           "K along z; the reverse of a SimpleITK array's axes)")
    _add_job_options(p)
    return p


def _triple(text: str) -> tuple[float, float, float]:
    """"12.5,-30,40" -> (12.5, -30.0, 40.0); argparse turns a ValueError into a usage error (exit 2)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise ValueError(f"three comma-separated numbers needed, got {text!r}")
    return tuple(float(p) for p in parts)


def _seed_of(args) -> LASeed | None:
    if getattr(args, "la_seed", None) is not None:
        return LASeed(ras=args.la_seed)
    if getattr(args, "la_seed_ijk", None) is not None:
        return LASeed(ijk=args.la_seed_ijk)
    return None


def _job_kwargs(args) -> dict:
    return {"model": args.model, "localiser": args.localiser, "device": args.device, "band_mm": tuple(args.band),
            "keep_largest": not args.keep_all_components, "baselines": args.baselines,
            "baselines_on": args.baselines_on}


def _run_segment(args) -> int:
    result = run_segment(args.image, args.out, overwrite=args.overwrite, la_label=args.la_label,
                         scar_label=args.scar_label, la_seed=_seed_of(args), **_job_kwargs(args))
    r = result.report.to_json()
    print(f"LA {r['la']['volume_ml']} mL; scar burden {r['scar']['burden_surface_pct']} % of the LA surface "
          f"(Utah {r['scar']['utah_stage']}, DECAAF {r['scar']['decaaf_stage']}); wrote {args.out}")
    for w in r["warnings"]:
        print(f"warning: {w}")
    return EXIT_OK


def _add_batch(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("batch", help="segment every case of a folder; DIR/<case>/ plus DIR/summary.csv")
    p.add_argument("folder", help="a folder of images, or of cases in a known data layout (labels then used)")
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default=None, metavar="FILE.csv",
                   help="a point inside the LA per case: CSV with columns id, r, a, s (millimetres, RAS); cases "
                        "without a row are found automatically")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="cases in N processes at once, each with its share of --threads (default 1)")
    p.add_argument("--resume", action="store_true",
                   help="keep the cases already done in --out and run the others (failed or unfinished ones too)")
    p.add_argument("--shard", type=_shard, default=None, metavar="K/N",
                   help="only the K-th of N disjoint shares of the sorted cases (one per job of a cluster's job "
                        "array); finished cases in --out are kept; writes summary-K-of-N.csv")
    _add_job_options(p)
    return p


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except InputError as exc:  # a usage error (exit 2) with the message, not argparse's "invalid value"
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run_batch(args) -> int:
    summary = run_batch(args.folder, args.out, overwrite=args.overwrite, resume=args.resume, shard=args.shard,
                        workers=args.workers, threads=args.threads,
                        seeds=read_seeds(args.seeds) if args.seeds else None, **_job_kwargs(args))
    failed = [row for row in summary if row["status"] != "done"]
    name = f"summary-{args.shard[0]}-of-{args.shard[1]}.csv" if args.shard else "summary.csv"
    print(f"{len(summary) - len(failed)} of {len(summary)} cases done; summary in {Path(args.out) / name}")
    for row in failed:
        print(f"failed: {row['id']}: {row['error']}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _commands() -> list[tuple[str, Callable, Callable]]:
    """(name, add_parser, run) of every subcommand; each names the function that builds its parser and the one that runs it."""
    return [
        ("segment", _add_segment, _run_segment),
        ("batch", _add_batch, _run_batch),
        ("demo", demo.add_parser, demo.run),
        ("phantom", phantom_command.add_parser, phantom_command.run),
        ("train", _add_train, _run_train),
        ("export", _add_export, _run_export),
        ("evaluate", _add_evaluate, _run_evaluate),
        ("bench", bench.add_parser, bench.run),
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lascarseg",
        description="Left-atrium and LA-scar segmentation and surface scar quantification from LGE MRI (MTL-SESA).",
    )
    parser.add_argument("--version", action="version", version=f"lascarseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for _name, add, run in _commands():
        p = add(sub)
        p.set_defaults(_run=run)
    return parser


class Stopped(KeyboardInterrupt):
    """SIGTERM (a scheduler's or the user's kill): raised like Ctrl-C, so a job unwinds and removes
    its staging folder instead of leaving half a result beside `--out`."""


def _raise_stopped(signum: int, _frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for bad usage
        return int(exc.code or 0)
    in_main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _raise_stopped) if in_main else None
    try:
        return _run(args)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, before)


def _run(args: argparse.Namespace) -> int:
    try:
        set_threads(getattr(args, "threads", None))
        return int(args._run(args))
    except DamagedInstall as exc:  # not the command's fault: exit 1 with how to repair it
        print(f"lascarseg {args.command}: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (InputError, ModelError) as exc:
        print(f"lascarseg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        how = f"stopped by {exc}" if isinstance(exc, Stopped) else "interrupted"
        print(f"lascarseg {args.command}: {how} (finished outputs are kept, nothing half-written is left)",
              file=sys.stderr)
        return EXIT_FAILED
    except LAScarSegError as exc:
        print(f"lascarseg {args.command}: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the CLI must turn any failure into exit code 1
        if args.debug:
            traceback.print_exc()
        print(f"lascarseg {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
