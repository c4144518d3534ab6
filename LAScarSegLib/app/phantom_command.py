"""`lascarseg phantom`: synthetic LGE phantoms from the command line (statistics over seeds, or
one phantom written as NIfTI with its truth and info.json; CONTRACTS section 8)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.errors import InputError
from ..core.image import write_volume
from ..synth.phantom import PHANTOM_PROVENANCE, UTAH_SPACING, make_phantom
from ..synth.stats import format_stats, phantom_stats
from ..synth.thorax import MAX_VOXELS, THORAX_PROVENANCE, write_thorax_cases


# ------------------------------------------------------------------------------ command line
def _parse_seeds(text: str) -> list[int]:
    """'0-19', '3', '0-4,10,12-13' -> seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, "")
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise InputError(f"--seeds: cannot read {text!r}; use for example 0-19 or 0,3,5-7") from None
    if not seeds:
        raise InputError(f"--seeds: no seed in {text!r}")
    return seeds



def _add_subcommands(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="phantom_command", metavar="{stats,write,thorax}")
    sub.required = True
    st = sub.add_parser("stats", help="generate phantoms and print their statistics (min / mean / max)")
    st.add_argument("--seeds", default="0-19", help="seeds, for example 0-19 or 0,3,5-7 (default 0-19)")
    st.add_argument("--full-fov", action="store_true", help="640x640x88 grid with the LA off centre")
    st.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    wr = sub.add_parser("write", help="write one phantom: image, la, wall, scar (.nii.gz) and info.json")
    wr.add_argument("--seed", type=int, default=0)
    wr.add_argument("--out", required=True, help="output folder")
    wr.add_argument("--full-fov", action="store_true", help="640x640x88 grid with the LA off centre")
    wr.add_argument("--burden", type=float, default=None, metavar="PCT", help="scar burden in %% of wall voxels")
    th = sub.add_parser("thorax", help="write domain-randomised whole-thorax scans (training data for finding the "
                        "LA in a whole scan) in the la2018 layout: OUT/train/<id>_lgemri.nii.gz, <id>_laendo.nii.gz")
    th.add_argument("--seeds", default="0-9", help="seeds, for example 0-199 (default 0-9)")
    th.add_argument("--out", required=True, help="output folder")
    th.add_argument("--max-voxels", type=int, default=MAX_VOXELS,
                    help=f"coarsen a drawn grid of more voxels than this (default {MAX_VOXELS})")
    for q in (st, wr, th):
        q.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads to use (default: all)")



def add_parser(sub) -> argparse.ArgumentParser:
    """Register `lascarseg phantom` (CLI convention: add_parser(subparsers) and run(args))."""
    p = sub.add_parser("phantom", help="synthetic LGE phantoms: statistics over seeds, or write one",
                       description="Synthetic LGE phantoms of the left atrium with LA, wall and scar ground "
                       "truth (synthetic data, not patient data).")
    _add_subcommands(p)
    return p



def run(args: argparse.Namespace) -> int:
    if args.phantom_command == "thorax":
        seeds = _parse_seeds(args.seeds)
        write_thorax_cases(seeds, args.out, max_voxels=args.max_voxels)
        print(f"wrote {len(seeds)} whole-thorax scans to {args.out}/train/ ({THORAX_PROVENANCE})")
        return 0
    if args.phantom_command == "stats":
        seeds = _parse_seeds(args.seeds)
        rows = phantom_stats(seeds, full_fov=args.full_fov)
        print(f"{PHANTOM_PROVENANCE}s, {'640x640x88' if args.full_fov else '208x208x80'} at "
              f"{'x'.join(str(s) for s in UTAH_SPACING)} mm, seeds {args.seeds}")
        print(format_stats(rows))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return 0
    ph = make_phantom(args.seed, full_fov=args.full_fov, burden=args.burden)
    out = Path(args.out)
    for name in ("image", "la", "wall", "scar"):
        write_volume(getattr(ph, name), out / f"{name}.nii.gz")
    (out / "info.json").write_text(json.dumps(ph.info, indent=2))
    print(f"wrote {out}/ image, la, wall, scar (.nii.gz) and info.json: seed {args.seed}, "
          f"LA {ph.info['la_volume_ml']:.1f} mL, burden {ph.info['burden_pct']:.1f} %, {ph.info['seconds']:.2f} s")
    return 0
