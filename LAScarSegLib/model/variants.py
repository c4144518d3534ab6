"""The network variants of the paper's Tables 1 and 2, by name (plain Python, no torch).

A variant says which decoders ("heads") the network has and which loss terms train it:

==================  ===========  =================================================
name                heads        terms
==================  ===========  =================================================
``unet-la-bce``     la           bce_la
``unet-la-se``      la           bce_la + se_la
``unet-scar-bce``   scar         bce_scar
``unet-scar-dice``  scar         dice_scar
``unet-scar-se``    scar         se_scar
``mtl-bce``         la, scar     bce_la + bce_scar
``mtl-se``          la, scar     bce_la + se_la + se_scar
``mtl-sesa``        la, scar     bce_la + se_la + se_scar + sa_m1 + sa_m2 (default)
==================  ===========  =================================================

The terms are defined in `LAScarSegLib.losses`: ``bce_la`` Eq. (2), ``se_la`` Eq. (3),
``se_scar`` Eq. (4), ``sa_m1``/``sa_m2`` Eq. (5) with the ground-truth / predicted LA boundary
mask, ``bce_scar`` and ``dice_scar`` the binary baselines on the scar decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import InputError

HEADS = ("la", "scar")

#: Which network outputs each loss term reads.
TERM_HEADS: dict[str, tuple[str, ...]] = {
    "bce_la": ("la",),
    "se_la": ("la",),
    "bce_scar": ("scar",),
    "dice_scar": ("scar",),
    "se_scar": ("scar",),
    "sa_m1": ("scar",),
    "sa_m2": ("scar", "la"),  # M2 is the boundary of the predicted LA
}

DEFAULT_VARIANT = "mtl-sesa"


@dataclass(frozen=True)
class Variant:
    """A named network variant: its decoders (`heads`) and its loss terms (`terms`)."""

    name: str
    heads: tuple[str, ...]
    terms: tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.heads or len(set(self.heads)) != len(self.heads) or not set(self.heads) <= set(HEADS):
            raise InputError(f"variant {self.name!r}: heads must be distinct names from {HEADS}, got {self.heads}")
        unknown = [t for t in self.terms if t not in TERM_HEADS]
        if unknown or not self.terms:
            raise InputError(f"variant {self.name!r}: unknown loss terms {unknown}; known: {sorted(TERM_HEADS)}")
        for term in self.terms:
            missing = [h for h in TERM_HEADS[term] if h not in self.heads]
            if missing:
                raise InputError(f"variant {self.name!r}: term {term!r} needs head(s) {missing}, heads are {self.heads}")

    @property
    def num_decoders(self) -> int:
        return len(self.heads)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("unet-la-bce", ("la",), ("bce_la",), "U-Net, LA only, BCE (Table 1 U-Net-BCE)"),
        Variant("unet-la-se", ("la",), ("bce_la", "se_la"), "U-Net, LA only, BCE + spatial encoding"),
        Variant("unet-scar-bce", ("scar",), ("bce_scar",), "U-Net, scar only, BCE on (normal wall, scar)"),
        Variant("unet-scar-dice", ("scar",), ("dice_scar",), "U-Net, scar only, soft Dice on scar"),
        Variant("unet-scar-se", ("scar",), ("se_scar",), "U-Net, scar only, distance probability maps"),
        Variant("mtl-bce", ("la", "scar"), ("bce_la", "bce_scar"), "two decoders, BCE on both"),
        Variant("mtl-se", ("la", "scar"), ("bce_la", "se_la", "se_scar"), "two decoders, spatial encoding"),
        Variant(
            "mtl-sesa",
            ("la", "scar"),
            ("bce_la", "se_la", "se_scar", "sa_m1", "sa_m2"),
            "MTL-SESA: two decoders, spatial encoding and shape attention (Eq. 6)",
        ),
    )
}


def variant_names() -> list[str]:
    return list(VARIANTS)


def get_variant(name: str | Variant) -> Variant:
    """The named variant; an unknown name raises `InputError` listing the known ones."""
    if isinstance(name, Variant):
        return name
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown variant {name!r}; known variants: {', '.join(VARIANTS)}") from None
