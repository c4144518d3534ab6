"""The report of one run, typed: its JSON (`to_json`) is exactly CONTRACTS section 5's `report.json`.

Built in one place (`readout.read_out`), for `segment`, re-quantify, `evaluate` and the Slicer
logic; written by `app.pipeline.write_outputs`; shown in Slicer as its JSON (`to_json`), which is
also `LAScarSegResult.report`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..core.image import Volume
from ..infer.masks import Localisation

SCHEMA_VERSION = 1
#: The keys of report["metrics"]["scar"] (the paper's surface protocol).
SCAR_METRIC_KEYS = ("accuracy", "dice_scar", "dice_normal", "gdice")
#: report.json's units are the keys' suffixes; the Slicer table's Unit column reads them.
UNITS = (("_ml", "mL"), ("_pct", "%"), ("_mm", "mm"), ("_vox", "voxels"), ("_s", "s"))


@dataclass
class ModelInfo:
    name: str
    version: str
    sha256: str


@dataclass
class LAReadout:
    volume_ml: float
    components_removed: int
    localisation: Localisation | None = None  # how the LA was found (automatic or at the user's point)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"volume_ml": self.volume_ml, "components_removed": self.components_removed}
        if self.localisation is not None:
            out["localisation"] = self.localisation.to_json()
        return out


@dataclass
class ScarReadout:
    """Burdens and stages of the scar shown; `method` only when a baseline's scar is shown."""

    burden_surface_pct: float
    burden_wall_pct: float
    utah_stage: str
    decaaf_stage: int
    method: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"burden_surface_pct": self.burden_surface_pct, "burden_wall_pct": self.burden_wall_pct,
               "utah_stage": self.utah_stage, "decaaf_stage": self.decaaf_stage}
        return out if self.method is None else {"method": self.method, **out}


@dataclass
class Report:
    """report.json as a value: sections typed where their keys are fixed, metrics and baselines as
    the dicts the metric functions return (their keys are fixed there)."""

    input: dict[str, Any]
    model: ModelInfo
    device: str
    intended_use: str
    la: LAReadout
    scar: ScarReadout
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    baselines: dict[str, dict[str, Any]] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """The dict written as report.json (a deep copy: changing it leaves the report as it was)."""
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "input": copy.deepcopy(self.input),
            "model": {"name": self.model.name, "version": self.model.version, "sha256": self.model.sha256},
            "device": self.device,
            "intended_use": self.intended_use,
            "warnings": list(self.warnings),
            "la": self.la.to_json(),
            "scar": self.scar.to_json(),
        }
        if self.metrics:
            out["metrics"] = copy.deepcopy(self.metrics)
        if self.baselines is not None:
            out["baselines"] = copy.deepcopy(self.baselines)
        out["timings_s"] = dict(self.timings_s)
        return out

    def set_total_time(self) -> None:
        """timings_s["total"]: the sum of the stages (write included once it is known)."""
        self.timings_s["total"] = round(sum(v for k, v in self.timings_s.items() if k != "total"), 3)


def input_info(image: Volume) -> dict[str, Any]:
    """report["input"]: where the image came from and its grid."""
    g = image.geometry
    return {"path": image.source, "size": list(g.size), "spacing_mm": list(g.spacing),
            "origin_mm": list(g.origin), "direction": list(g.direction)}


def report_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(Metric, Value, Unit) for every leaf of a report's `la`, `scar` and `metrics` (its JSON).

    Metric is the dotted path (`la.volume_ml`, `metrics.la.dice`); the unit comes from the key's
    suffix, as report.json names its units; Value is `str(value)`, which round-trips floats.
    """
    rows: list[tuple[str, str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, sub in value.items():
                walk(f"{prefix}.{key}", sub)
            return
        unit = next((u for suffix, u in UNITS if prefix.endswith(suffix)), "")
        rows.append((prefix, "" if value is None else str(value), unit))

    for section in ("la", "scar", "metrics"):
        if section in report:
            walk(section, report[section])
    return rows
