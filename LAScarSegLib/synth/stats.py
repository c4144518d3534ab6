"""Phantom statistics over seeds: the measured properties that bound the generator (LA volume,
wall thickness, veins, burden, SNR) and the time to make each phantom."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .phantom import make_phantom

# ------------------------------------------------------------------------------ statistics
STAT_COLUMNS = (("la_volume_ml", "LA mL", "{:.1f}"), ("wall_thickness_mm", "wall mm", "{:.2f}"),
                ("n_veins", "veins", "{:.0f}"), ("burden_pct", "burden %", "{:.1f}"),
                ("snr", "SNR", "{:.1f}"), ("snr_measured", "SNR meas.", "{:.1f}"), ("seconds", "seconds", "{:.2f}"))



def phantom_stats(seeds: Sequence[int], **kwargs: Any) -> list[dict[str, Any]]:
    """One row per seed: the measured properties the issue bounds (volume, wall, veins, burden,
    SNR) and the generation time. `kwargs` go to `make_phantom`."""
    rows = []
    for seed in seeds:
        info = make_phantom(int(seed), **kwargs).info
        rows.append({"seed": int(seed), **{k: info[k] for k, _, _ in STAT_COLUMNS}})
    return rows



def format_stats(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of `phantom_stats` rows with min / mean / max lines."""
    heads = ["seed"] + [h for _, h, _ in STAT_COLUMNS]
    widths = [max(6, len(h)) for h in heads]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths))

    out = [line(heads)]
    for r in rows:
        out.append(line([str(r["seed"])] + [f.format(r[k]) for k, _, f in STAT_COLUMNS]))
    if rows:
        out.append(line(["-" * w for w in widths]))
        for name, fn in (("min", np.min), ("mean", np.mean), ("max", np.max)):
            out.append(line([name] + [f.format(float(fn([r[k] for r in rows]))) for k, _, f in STAT_COLUMNS]))
    return "\n".join(out)
