"""What the module panel shows of a report (its JSON, `Report.to_json()`): the results area and the
one-line status. Plain text and HTML, no Qt."""

from __future__ import annotations

from html import escape
from typing import Any, Mapping

from ..quantify.readout import NETWORK_METHOD


def results_html(report: Mapping[str, Any]) -> str:
    """The results area of the module: burden (and which method gave it), stages, LA volume,
    metrics, the other methods' burdens, warnings, intended use."""
    scar, la = report["scar"], report["la"]
    method = scar.get("method", NETWORK_METHOD)
    source = "MTL-SESA" if method == NETWORK_METHOD else f"baseline {method} on MTL-SESA's LA"
    lines = [f"<b>Scar burden ({escape(source, quote=False)}): {scar['burden_surface_pct']:.1f} % of the LA "
             f"surface</b> ({scar['burden_wall_pct']:.1f} % of the wall volume)",
             f"Utah stage {escape(str(scar['utah_stage']))}, DECAAF stage {scar['decaaf_stage']}",
             f"LA volume {la['volume_ml']:.1f} mL", *_localisation_line(la.get("localisation"))]
    for part, values in report.get("metrics", {}).items():
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        lines.append(f"Metrics ({escape(part)}{', ' + escape(method) if part == 'scar' else ''}): {escape(shown)}")
    for name, entry in report.get("baselines", {}).items():
        if name == method:
            continue  # it is the headline
        label = "MTL-SESA (network)" if name == NETWORK_METHOD else f"Baseline {escape(name)}"
        lines.append(f"{label}: scar burden {entry['burden_surface_pct']:.1f} % of the LA surface")
    lines += [f"<span style='color:#a05a00'>Note: {escape(w)}</span>" for w in report.get("warnings", [])]
    lines.append(f"<i>{escape(str(report.get('intended_use', '')))}</i>")
    return "<br>".join(lines)


def status_text(report: Mapping[str, Any]) -> str:
    """The module's one-line status after a run: done, and the first warning when there are any
    (a CUDA fallback, a resampled label, an implausible volume), so none goes unnoticed."""
    warnings = list(report.get("warnings", []))
    if not warnings:
        return "Done. Edit the 'Left atrium' segment and press Re-quantify to update the scar map."
    more = f" (+{len(warnings) - 1} more under Results)" if len(warnings) > 1 else ""
    return f"Done, with {len(warnings)} note{'s' if len(warnings) > 1 else ''}: {warnings[0]}{more}"


def _localisation_line(loc: Mapping[str, Any] | None) -> list[str]:
    """How the LA was found, and a highlighted request for a point inside it when doubtful."""
    if not loc:
        return []
    if loc.get("mode") == "seed":
        return [f"LA: the structure at the point placed inside it (confidence {loc['confidence']:.2f})"]
    line = f"LA found automatically (localisation confidence {loc['confidence']:.2f})"
    if loc.get("doubtful"):
        return [f"<b style='color:#b00020'>{line}: doubtful. Check the LA; if it is wrong, place a 'Point in LA' "
                "inside it and run again.</b>"]
    return [line]
