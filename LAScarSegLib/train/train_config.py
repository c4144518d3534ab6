"""Training configuration: the paper's recipe, the CPU recipe, config files and overrides.

A config is a flat set of named values, so every way the CPU recipe departs from the paper is a
value you can read (``departures("cpu-default")``) and override (``key=value`` on the command
line, or a YAML/JSON file). An unknown key is an error that names it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..model.variants import DEFAULT_VARIANT, get_variant

LA2018_DEFAULT = str(Path(__file__).resolve().parents[3] / "shared" / "data" / "la2018")  # beside the checkout


@dataclass
class TrainConfig:
    # --- what is trained
    variant: str = DEFAULT_VARIANT
    recipe: str = "paper"
    seed: int = 0
    # --- network (ModelConfig)
    levels: int = 5
    base_channels: int = 16
    norm: str = "batch"
    scar_base_channels: int | None = None
    # --- data
    data: list[dict[str, Any]] = field(
        default_factory=lambda: [{"root": LA2018_DEFAULT, "layout": "auto", "weight": 1.0, "paint_scar": True}]
    )
    val_cases: int = 12  # real cases held out per data source, by case id
    phantoms: int = 0  # synthetic LGE phantoms added to training
    phantom_weight: float = 0.3  # share of patches drawn from phantoms
    val_phantoms: int = 4
    # Full-field-of-view phantoms (chest in view, LA off centre) are an option, off in both recipes:
    # a cpu-default run with full_fov_phantoms=6, lambda_dice_la=1 and lr_step_every=2000 reached
    # only 0.83 validation LA Dice on real cases (over-segmentation), against 0.88 for the first
    # bundled model (0.1.0) and 0.907 for cpu-default as it is now (README, "Training options").
    full_fov_phantoms: int = 0
    full_fov_weight: float = 0.15  # share of patches drawn from them (taken from the real share)
    full_fov_la_focus: float = 0.3  # their patches centre on the LA boundary this often, else anywhere
    spacing_mm: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # x, y, z
    patch_size: list[int] = field(default_factory=lambda: [208, 208, 80])  # x, y, z
    batch_size: int = 2
    la_focus: float = 0.7  # share of patches centred on the LA boundary
    unpainted_fraction: float = 0.5  # share of batches from real cases as they are (LA terms only)
    # --- optimisation
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step_every: int = 4000
    lr_gamma: float = 0.1
    iterations: int = 12000
    time_limit_min: float | None = None  # stop (and export the best) after this wall time
    # --- loss (Eq. 6)
    lambda_la: float = 0.01
    lambda_scar: float = 10.0
    lambda_m1: float = 0.01
    lambda_m2: float = 0.001
    lambda_growth: float = 1.1
    lambda_growth_every: int = 200
    lambda_growth_cap: float | None = None  # max multiplier of lambda_LA and lambda_M2
    beta: float = 1.0
    lambda_dice_la: float = 0.0  # extra LA soft-Dice term; not in the paper (0 there)
    wall_band_mm: float = 3.0
    boundary_mm: float = 4.0
    # --- augmentation
    flip_p: float = 0.5
    rotate_p: float = 0.3
    rotate_deg: float = 15.0
    intensity_p: float = 0.8
    bias_p: float = 0.3
    noise_p: float = 0.2
    # --- running
    val_every: int = 500
    checkpoint_every: int = 100
    log_every: int = 20
    amp: str = "auto"  # auto: mixed precision on CUDA only
    channels_last: bool = True
    threads: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        get_variant(self.variant)
        if self.optimizer not in ("sgd", "adam"):
            raise InputError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0:
            raise InputError(f"spacing_mm must be three positive numbers, got {self.spacing_mm}")
        if len(self.patch_size) != 3 or min(self.patch_size) <= 0:
            raise InputError(f"patch_size must be three positive integers, got {self.patch_size}")
        div = 2 ** (self.levels - 1)
        bad = [p for p in self.patch_size if p % div]
        if bad:
            raise InputError(f"patch_size {self.patch_size} must be divisible by {div} at {self.levels} levels")
        shares = {"phantom_weight": self.phantom_weight, "full_fov_weight": self.full_fov_weight}
        if min(shares.values()) < 0 or sum(shares.values()) >= 1:
            raise InputError(f"phantom_weight and full_fov_weight must be >= 0 and leave the real cases a share, got {shares}")
        for name in ("la_focus", "full_fov_la_focus", "unpainted_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if self.amp not in ("auto", "on", "off"):
            raise InputError(f"amp must be auto, on or off, got {self.amp!r}")
        for i, src in enumerate(self.data):
            unknown = set(src) - {"root", "layout", "weight", "paint_scar", "max_cases"}
            if unknown or "root" not in src:
                raise InputError(f"data[{i}]: needs 'root'; unknown keys {sorted(unknown)}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def patch_zyx(self) -> tuple[int, int, int]:
        return (self.patch_size[2], self.patch_size[1], self.patch_size[0])


#: The CPU recipe's departures from the paper, each a named config value with its reason.
CPU_DEFAULT: dict[str, tuple[Any, str]] = {
    "levels": (4, "4 levels instead of 5: 8x fewer voxels at the bottleneck, 3x faster on 2 cores"),
    "spacing_mm": ([1.25, 1.25, 1.25], "1.25 mm instead of 1 mm: half the voxels per mm^3"),
    "patch_size": ([64, 64, 48], "64x64x48 patches instead of 208x208x80: one step under a second"),
    "optimizer": ("adam", "Adam instead of SGD: converges within the 2-hour CPU budget"),
    "lr": (1e-3, "same value as the paper, for Adam"),
    "weight_decay": (0.0, "no weight decay with Adam"),
    "lr_step_every": (3000, "decay every 3000 instead of 4000 iterations: a shorter run"),
    "lr_gamma": (0.3, "gentler decay (x0.3) for the shorter run"),
    "iterations": (9000, "about 9000 iterations fit 2 hours on 2 cores (the time limit decides)"),
    "unpainted_fraction": (0.75, "3 in 4 batches are real images as they are, for the LA terms (and run "
                           "only the LA decoder): real LA boundaries, not the painted rim, teach the LA"),
    "lambda_dice_la": (0.4, "an LA soft-Dice term (not in the paper): BCE + SE alone under-segments real "
                       "LAs (volume 0.78-0.95x of the manual label), weight 1 over-segments"),
    "time_limit_min": (115.0, "hard stop so the CPU recipe finishes within 2 hours"),
    "lambda_growth_cap": (10.0, "cap the x1.1 growth of lambda_LA and lambda_M2 at 10x"),
    "phantoms": (24, "synthetic phantoms add scar of known truth"),
    "val_every": (500, "validate every 500 iterations"),
    "threads": (2, "both cores of this machine"),
}

RECIPES = ("paper", "cpu-default")


def recipe_values(recipe: str) -> dict[str, Any]:
    if recipe == "paper":
        return {}
    if recipe == "cpu-default":
        return {k: v for k, (v, _) in CPU_DEFAULT.items()}
    raise InputError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")


def departures(recipe: str) -> dict[str, dict[str, Any]]:
    """Each value where `recipe` differs from the paper: {key: {paper, value, why}}."""
    paper = TrainConfig()
    if recipe == "paper":
        return {}
    recipe_values(recipe)
    return {
        k: {"paper": getattr(paper, k), "value": v, "why": why}
        for k, (v, why) in CPU_DEFAULT.items()
        if getattr(paper, k) != v
    }


def _coerce(key: str, text: str) -> Any:
    """Parse a command-line override value: JSON when it parses (numbers, lists, null), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is a bad config file
        raise InputError(f"{path}: cannot parse config: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: config must be a mapping of keys to values")
    return data


def make_config(recipe: str = "cpu-default", file: str | os.PathLike | None = None,
                overrides: dict[str, Any] | list[str] | None = None) -> TrainConfig:
    """Recipe defaults, then the config file, then overrides (`["key=value", ...]` or a dict)."""
    known = {f.name for f in fields(TrainConfig)}
    values: dict[str, Any] = {}
    sources: list[tuple[str, dict[str, Any]]] = []
    if file is not None:
        data = load_config_file(file)
        for written in ("departures_from_paper", "stages"):  # a run's config.json holds these for readers
            data.pop(written, None)
        recipe = data.pop("recipe", recipe)
        sources.append((str(file), data))
    if isinstance(overrides, list):
        parsed = {}
        for item in overrides:
            if "=" not in item:
                raise InputError(f"override {item!r} must look like key=value")
            k, v = item.split("=", 1)
            parsed[k.strip()] = _coerce(k, v.strip())
        overrides = parsed
    if overrides:
        recipe = overrides.pop("recipe", recipe)
        sources.append(("overrides", overrides))
    values.update(recipe_values(recipe))
    for where, data in sources:
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{where}: unknown config key(s) {unknown}")
        values.update(data)
    return TrainConfig(recipe=recipe, **values)
