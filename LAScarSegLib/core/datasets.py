"""One reader interface over the LGE data layouts LAScarSeg trains and evaluates on.

Layouts (CONTRACTS section 2 fixes the label values):
- ``la2018``: the preprocessed 2018 challenge split, ``<root>/train/<ID>_lgemri.nii.gz`` and
  ``<ID>_laendo.nii.gz`` (LA = 1). LA labels only.
- ``lascarqs2022``: LAScarQS 2022 task 1, ``<root>/<case>/enhanced.nii.gz``,
  ``atriumSegImgMO.nii.gz`` (LA, non-zero) and ``scarSegImgM.nii.gz`` (scar, non-zero; or the
  reference code's wall labels 421 normal wall / 422 scar).
- ``challenge2018``: the original 2018 challenge, ``<root>/<case>/lgemri.nrrd`` and
  ``laendo.nrrd`` (LA = 255).

Every case says which labels it has and where each came from (manual or synthetic), so a report
can never present synthetic scar as real. Readers turn label values into 0/1 masks and refuse a
value set they do not expect, naming the values and the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import InputError
from .image import Volume, read_image, read_label, require_same_grid

WALL_NORMAL_VALUE = 421
WALL_SCAR_VALUE = 422


@dataclass(frozen=True)
class CaseRef:
    """A case on disk: its files and the layout that says how to read their labels."""

    id: str
    layout: str
    image: Path
    la: Path | None = None
    scar: Path | None = None

    @property
    def labels(self) -> frozenset[str]:
        """Labels this case has on disk (a scar file with 421/422 also gives the wall)."""
        out = set()
        if self.la is not None:
            out.add("la")
        if self.scar is not None:
            out.add("scar")
        return frozenset(out)


@dataclass
class Case:
    """A loaded case: image and 0/1 masks on the image grid, each with its provenance."""

    id: str
    image: Volume
    la: Volume | None = None
    wall: Volume | None = None
    scar: Volume | None = None
    provenance: dict[str, str] = field(default_factory=dict)  # label -> "manual" | "synthetic ..."
    source: str = ""

    @property
    def labels(self) -> frozenset[str]:
        return frozenset(k for k in ("la", "wall", "scar") if getattr(self, k) is not None)


# ---------------------------------------------------------------------------------- label values
def _values(label: Volume) -> list[int]:
    return [int(v) for v in np.unique(label.array)]


def binary_from_values(label: Volume, allowed_foreground: Sequence[int], what: str) -> Volume:
    """0/1 mask from a label whose values must be 0 and (some of) `allowed_foreground`."""
    values = _values(label)
    unexpected = [v for v in values if v != 0 and v not in allowed_foreground]
    if unexpected:
        raise InputError(
            f"{label.source}: unexpected {what} label values {values} (expected 0 and "
            f"{list(allowed_foreground)})"
        )
    return label.with_array((label.array != 0).astype(np.uint8))


def binary_from_single_value(label: Volume, what: str) -> Volume:
    """0/1 mask from a label that is non-zero for the structure (one non-zero value)."""
    values = _values(label)
    if len([v for v in values if v != 0]) > 1:
        raise InputError(
            f"{label.source}: unexpected {what} label values {values} (expected 0 and one "
            "non-zero value for the structure)"
        )
    return label.with_array((label.array != 0).astype(np.uint8))


def scar_and_wall_from_values(label: Volume) -> tuple[Volume, Volume | None]:
    """A scar label: either 0/one value (scar only) or the reference code's 421/422 (wall + scar)."""
    values = set(_values(label))
    if values <= {0, WALL_NORMAL_VALUE, WALL_SCAR_VALUE} and WALL_NORMAL_VALUE in values:
        wall = label.with_array(np.isin(label.array, (WALL_NORMAL_VALUE, WALL_SCAR_VALUE)).astype(np.uint8))
        scar = label.with_array((label.array == WALL_SCAR_VALUE).astype(np.uint8))
        return scar, wall
    return binary_from_single_value(label, "scar"), None


def _require_nonempty(mask: Volume, what: str) -> Volume:
    if not mask.array.any():
        raise InputError(f"{mask.source}: {what} label is empty (no voxel set)")
    return mask


# ------------------------------------------------------------------------------------- readers
class Dataset:
    """A folder of cases in one layout. Subclasses say how to find cases and read label values."""

    layout: str = ""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: data folder does not exist")
        self._cases = self.find_cases()
        if not self._cases:
            raise InputError(f"{self.root}: no readable {self.layout} case found (expected {self.expected})")

    expected: str = ""  # the files a case of this layout has, for error messages

    # --- to implement
    def find_cases(self) -> list[CaseRef]:
        raise NotImplementedError

    def read_la(self, label: Volume) -> Volume:
        raise NotImplementedError

    # --- shared
    def cases(self) -> list[CaseRef]:
        return list(self._cases)

    def ids(self) -> list[str]:
        return [c.id for c in self._cases]

    def __len__(self) -> int:
        return len(self._cases)

    def ref(self, case_id: str) -> CaseRef:
        for c in self._cases:
            if c.id == case_id:
                return c
        raise InputError(f"{self.root}: no case {case_id!r}")

    def load(self, case: CaseRef | str) -> Case:
        """Read image and labels as 0/1 masks; image and labels must share one grid."""
        ref = self.ref(case) if isinstance(case, str) else case
        image = read_image(ref.image)
        out = Case(id=ref.id, image=image, source=f"{self.layout}:{self.root}")
        if ref.la is not None:
            la = read_label(ref.la)
            require_same_grid(image, la, "LA label")
            out.la = _require_nonempty(self.read_la(la), "LA")
            out.provenance["la"] = "manual"
        if ref.scar is not None:
            raw = read_label(ref.scar)
            require_same_grid(image, raw, "scar label")
            out.scar, out.wall = scar_and_wall_from_values(raw)
            out.provenance["scar"] = "manual"
            if out.wall is not None:
                out.provenance["wall"] = "manual"
        return out


class La2018Dataset(Dataset):
    layout = "la2018"
    expected = "train/<ID>_lgemri.nii.gz with <ID>_laendo.nii.gz"

    def find_cases(self) -> list[CaseRef]:
        folder = self.root / "train" if (self.root / "train").is_dir() else self.root
        refs = []
        for img in sorted(folder.glob("*_lgemri.nii.gz")):
            cid = img.name[: -len("_lgemri.nii.gz")]
            la = folder / f"{cid}_laendo.nii.gz"
            refs.append(CaseRef(cid, self.layout, img, la if la.exists() else None))
        return refs

    def read_la(self, label: Volume) -> Volume:
        return binary_from_values(label, (1,), "LA")


class LAScarQS2022Dataset(Dataset):
    layout = "lascarqs2022"
    expected = "<case>/enhanced.nii.gz with atriumSegImgMO.nii.gz and scarSegImgM.nii.gz"

    def find_cases(self) -> list[CaseRef]:
        refs = []
        for img in sorted(self.root.glob("*/enhanced.nii.gz")):
            d = img.parent
            la, scar = d / "atriumSegImgMO.nii.gz", d / "scarSegImgM.nii.gz"
            refs.append(CaseRef(d.name, self.layout, img, la if la.exists() else None,
                                scar if scar.exists() else None))
        return refs

    def read_la(self, label: Volume) -> Volume:
        return binary_from_single_value(label, "LA")


class Challenge2018Dataset(Dataset):
    layout = "challenge2018"
    expected = "<case>/lgemri.nrrd with laendo.nrrd"

    def find_cases(self) -> list[CaseRef]:
        refs = []
        for img in sorted(self.root.glob("*/lgemri.nrrd")):
            la = img.parent / "laendo.nrrd"
            refs.append(CaseRef(img.parent.name, self.layout, img, la if la.exists() else None))
        return refs

    def read_la(self, label: Volume) -> Volume:
        return binary_from_values(label, (255,), "LA")


LAYOUTS: dict[str, type[Dataset]] = {
    cls.layout: cls for cls in (La2018Dataset, LAScarQS2022Dataset, Challenge2018Dataset)
}


def detect_layout(root: str | os.PathLike) -> str:
    """Name the layout of a folder by its files, or raise InputError listing what was expected."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: data folder does not exist")
    if any(root.glob("*_lgemri.nii.gz")) or any(root.glob("train/*_lgemri.nii.gz")):
        return "la2018"
    if any(root.glob("*/enhanced.nii.gz")):
        return "lascarqs2022"
    if any(root.glob("*/lgemri.nrrd")):
        return "challenge2018"
    expected = "; ".join(f"{name}: {cls.expected}" for name, cls in LAYOUTS.items())
    raise InputError(f"{root}: no readable case in any known layout ({expected})")


def open_dataset(root: str | os.PathLike, layout: str = "auto") -> Dataset:
    """Open a data folder; `layout="auto"` detects it from the file names."""
    if layout == "auto":
        layout = detect_layout(root)
    try:
        cls = LAYOUTS[layout]
    except KeyError:
        raise InputError(f"unknown data layout {layout!r}; known: {sorted(LAYOUTS)} or 'auto'") from None
    return cls(root)


def split_by_case(ids: Iterable[str], n_val: int, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split held apart by case id (sorted, then shuffled by seed)."""
    ids = sorted(ids)
    if not 0 <= n_val < len(ids):
        raise InputError(f"validation size {n_val} must be between 0 and {len(ids) - 1}")
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    train = [i for i in ids if i not in set(val)]
    return train, val


def with_synthetic_scar(case: Case, painter: Callable[[Volume, Volume], tuple[Volume, Volume, Volume, str]]) -> Case:
    """A copy of a case with scar painted by `painter(image, la) -> (image, wall, scar, provenance)`.

    The original case is not modified; the new labels are marked synthetic.
    """
    if case.la is None:
        raise InputError(f"case {case.id}: synthetic scar needs an LA label")
    image, wall, scar, provenance = painter(case.image, case.la)
    prov = dict(case.provenance, wall=provenance, scar=provenance)
    return Case(case.id, image, case.la, wall, scar, prov, case.source)
