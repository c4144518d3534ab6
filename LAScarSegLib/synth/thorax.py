"""Synthetic whole-thorax LGE scans for learning to find the LA in a whole field of view.

Domain randomisation, as SynthSeg (Billot et al., Medical Image Analysis 2023): a label map of the
chest is drawn on a random acquisition grid and rendered with a random intensity, texture, bias
field, blur and noise per label and per scan, so that a network trained on it learns the LA's
shape and its place among the other structures rather than one generator's look. The patient is
the phantom's (`anatomy.sample_anatomy`: LA with veins and appendage, LV, RA, aortas, fat pads,
torso, lungs, spine) with the right ventricle, pulmonary artery, aortic arch, caval veins, liver
and oesophagus added; the LA label is the phantom's (cavity with the vein ostia to their cut).

A half of the scans take an LGE-like order of intensities (blood bright, each pool on its own,
myocardium dark, lungs black), the other half fully random ones. Every number comes from
`numpy.random.default_rng([seed, 31])`: the same seed gives the same scan.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..core.image import Geometry, Volume, write_volume
from .anatomy import (Anatomy, Box, cylinder, ellipse2, ellipsoid, perpendicular, rotation_matrix, sample_anatomy,
                      tapered_capsule, unit)
from .phantom import Pose, heart_box, la_cavity

THORAX_PROVENANCE = "synthetic whole-thorax LGE scan, domain-randomised (LAScarSegLib.synth.thorax)"
#: Label values of the chest's label map.
LABELS = {"air": 0, "body": 1, "subcutaneous_fat": 2, "lung": 3, "bone": 4, "liver": 5, "la": 6, "lv_blood": 7,
          "myocardium": 8, "rv_blood": 9, "ra_blood": 10, "aorta": 11, "pulmonary_artery": 12, "caval_veins": 13,
          "epicardial_fat": 14, "pulmonary_vein_blood": 15, "oesophagus": 16}
BLOOD = ("la", "lv_blood", "rv_blood", "ra_blood", "aorta", "pulmonary_artery", "caval_veins", "pulmonary_vein_blood")
#: The render grid holds at most this many voxels: a finer drawn spacing is coarsened to fit.
MAX_VOXELS = 7_000_000
FAR = 1e4  # the torso, lungs' mediastinal cut, spine and oesophagus are cylinders along the frame's z


@dataclass
class Thorax:
    """A synthetic whole-thorax scan, its LA label and the label map it was rendered from."""

    image: Volume  # float32
    la: Volume  # uint8 0/1: LA cavity with the vein ostia
    labels: Volume  # uint8, values of LABELS
    info: dict[str, Any] = field(default_factory=dict)


def make_thorax(seed: int = 0, *, max_voxels: int = MAX_VOXELS) -> Thorax:
    """One domain-randomised whole-thorax scan (module docstring); a drawn grid of more than
    `max_voxels` is coarsened to fit (training data for a coarse network needs no finer grid)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 31])
    anat = sample_anatomy(rng, None, None, True, None, None)
    extra = _draw_extras(rng, anat)
    geometry, pose = _draw_acquisition(rng, anat, max_voxels)
    labels = _label_map(geometry, pose, anat, extra, seed)
    lgelike = bool(rng.random() < 0.5)
    image = _render(rng, labels, geometry, lgelike)
    la = (labels == LABELS["la"]).astype(np.uint8)
    info = {"provenance": f"{THORAX_PROVENANCE}, seed {seed}: no real patient data", "seed": int(seed),
            "geometry": geometry.as_dict(), "lge_like_contrast": lgelike,
            "la_volume_ml": round(float(la.sum() * geometry.voxel_volume_mm3 / 1000.0), 2),
            "pose_deg_xyz": [round(float(a), 2) for a in pose.angles], "seconds": 0.0}
    info["seconds"] = round(time.perf_counter() - t0, 3)
    src = f"thorax seed {seed}"
    return Thorax(Volume(image, geometry, src), Volume(la, geometry, src), Volume(labels, geometry, src), info)


def write_thorax_cases(seeds: Sequence[int], out: str | Path, *, max_voxels: int = MAX_VOXELS) -> Path:
    """Scans in the la2018 layout (`train/<id>_lgemri.nii.gz` with `<id>_laendo.nii.gz`), which the
    trainer reads like any data folder; one `<id>.json` of info beside each."""
    folder = Path(out) / "train"
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        th = make_thorax(int(seed), max_voxels=max_voxels)
        cid = f"thorax{int(seed):05d}"
        write_volume(th.image, folder / f"{cid}_lgemri.nii.gz")
        write_volume(th.la, folder / f"{cid}_laendo.nii.gz")
        (folder / f"{cid}.json").write_text(json.dumps(th.info, indent=1))
    return Path(out)


# ------------------------------------------------------------------------------------ drawing
def _draw_extras(rng: np.random.Generator, anat: Anatomy) -> dict[str, Any]:
    """The structures the LA phantom does not need: right ventricle, pulmonary artery, aortic arch,
    caval veins, liver and oesophagus (frame mm: x left, y posterior, z superior)."""
    u = rng.uniform
    lv = anat.lv
    e_lv, short = lv["axes"][0], lv["semi"][1]
    right_ant = unit(np.array([-0.7, -0.7, 0.0]) + u(-0.15, 0.15, size=3))
    rv_centre = lv["centre"] + right_ant * (short + lv["myo"] + u(4.0, 10.0)) - e_lv * u(0.0, 10.0)
    rv_semi = np.array([lv["semi"][0] * u(0.8, 1.0), short * u(0.6, 0.9), short * u(1.1, 1.5)])
    e2 = perpendicular(e_lv, u(0, 2 * np.pi))
    rv = {"centre": rv_centre, "axes": np.stack([e_lv, e2, np.cross(e_lv, e2)]), "semi": rv_semi,
          "wall": float(u(2.5, 4.5))}
    asc = anat.asc_aorta
    asc_top = asc["start"] + asc["len"] * asc["dir"] * u(0.55, 0.75)
    desc = anat.desc_aorta
    desc_top = desc["start"] + desc["dir"] * ((asc_top[2] - desc["start"][2]) / desc["dir"][2])
    pa_root = rv_centre + np.array([u(5.0, 15.0), -u(5.0, 15.0), rv_semi[2] * u(0.6, 0.9)])
    bifurcation = np.array([asc["root"][0] + u(15.0, 30.0), asc["root"][1] + u(5.0, 20.0), u(15.0, 35.0)])
    r_pa = float(u(11.0, 15.0))
    ra = anat.ra
    svc_x, svc_y = ra["centre"][0] + u(-5.0, 5.0), ra["centre"][1] + u(0.0, 10.0)
    return {
        "rv": rv,
        "arch": (asc_top, desc_top, asc["radius"] * u(0.8, 0.95)),
        "pa": [(pa_root, bifurcation, r_pa), (bifurcation, bifurcation + np.array([u(40, 60), u(20, 35), u(-5, 5)]),
                                              r_pa * 0.7),
               (bifurcation, bifurcation + np.array([-u(45, 70), u(15, 30), u(-10, 0)]), r_pa * 0.7)],
        "svc": (np.array([svc_x, svc_y, ra["centre"][2]]), float(u(8.0, 11.0))),
        "ivc": (np.array([ra["centre"][0] + u(-5.0, 5.0), ra["centre"][1] + u(5.0, 15.0), ra["centre"][2]]),
                float(u(10.0, 13.0))),
        "liver": (np.array([-u(30.0, 60.0), u(0.0, 25.0), -u(95.0, 125.0)]),
                  np.array([u(80.0, 100.0), u(60.0, 80.0), u(45.0, 60.0)])),
        "oesophagus": (np.array([u(-5.0, 15.0), anat.body.semi[1] + u(3.0, 8.0)]), float(u(5.0, 8.0))),
    }


def _draw_acquisition(rng: np.random.Generator, anat: Anatomy, max_voxels: int) -> tuple[Geometry, Pose]:
    """A random axial acquisition grid (spacing, field of view) placed on the chest, and the pose
    of the patient in it; coarsened to `max_voxels`."""
    u = rng.uniform
    spacing = np.array([u(0.7, 1.6)] * 2 + [u(1.0, 2.5)])
    fov = np.array([u(260.0, 420.0)] * 2 + [u(100.0, 170.0)])
    shrink = max(1.0, (np.prod(fov / spacing) / max_voxels) ** (1.0 / 3.0))
    spacing = spacing * shrink
    size = np.maximum(np.round(fov / spacing).astype(int), 16)
    geometry = Geometry(tuple(int(s) for s in size), tuple(float(s) for s in spacing), (0.0, 0.0, 0.0))
    angles = u(-1, 1, size=3) * np.array([15.0, 15.0, 25.0])
    rotation = rotation_matrix(*angles)
    # the field of view is centred near the torso's centre in x and y; the LA lies within it in z
    margin_z = max(0.0, fov[2] / 2.0 - 55.0)
    fov_centre = np.array([anat.torso["centre"][0] + u(-35.0, 35.0), anat.torso["centre"][1] + u(-30.0, 30.0),
                           u(-margin_z, margin_z)])
    image_centre = geometry.index_to_physical((size[None, :] - 1.0) / 2.0)[0]
    return geometry, Pose(angles, rotation, image_centre - rotation @ fov_centre)


# -------------------------------------------------------------------------------- label map
def _label_map(geometry: Geometry, pose: Pose, anat: Anatomy, extra: dict[str, Any], seed: int) -> np.ndarray:
    lab = np.zeros(geometry.shape, np.uint8)
    box = Box(geometry, pose.rotation, pose.centre, np.zeros(3, int), np.asarray(geometry.size))
    _paint_chest(lab, box, anat, extra)
    _paint_heart(lab, box, anat, extra)
    hb, la_lo, la_hi = heart_box(geometry, pose, anat)
    cav = la_cavity(hb, anat, la_lo, la_hi, seed)
    sub = lab[hb.slices]
    sub[cav.lv_side_blood] = LABELS["lv_blood"]
    sub[cav.vein_cont] = LABELS["pulmonary_vein_blood"]
    sub[cav.la] = LABELS["la"]
    return lab


def _put(lab: np.ndarray, box: Box, lo_mm: np.ndarray, hi_mm: np.ndarray, inside, label: str) -> None:
    """Paint `label` where `inside(q)` holds, visiting only the box's voxels that can lie in [lo, hi]."""
    sl = box.sub(np.asarray(lo_mm, float), np.asarray(hi_mm, float))
    if any(s.stop <= s.start for s in sl):
        return
    lab[sl][inside(box.view(sl))] = LABELS[label]


def _paint_chest(lab: np.ndarray, box: Box, anat: Anatomy, extra: dict[str, Any]) -> None:
    """Torso (subcutaneous fat around soft tissue), lungs outside the mediastinum, liver, spine, oesophagus."""
    tc, ts, tf = anat.torso["centre"], anat.torso["semi"], anat.torso["fat_mm"]
    lo, hi = np.array([tc[0] - ts[0], tc[1] - ts[1], -FAR]), np.array([tc[0] + ts[0], tc[1] + ts[1], FAR])
    _put(lab, box, lo, hi, lambda q: ellipse2(q, tc, ts), "subcutaneous_fat")
    _put(lab, box, lo, hi, lambda q: ellipse2(q, tc, ts - tf), "body")
    mc, ms = anat.mediastinum
    for lc, lsemi in anat.lungs:
        _put(lab, box, lc - lsemi, lc + lsemi, lambda q, lc=lc, lsemi=lsemi: ellipsoid(q, lc, np.eye(3), lsemi)
             & ~ellipse2(q, mc, ms) & ellipse2(q, tc, ts - tf), "lung")
    lc, lsemi = extra["liver"]
    _put(lab, box, lc - lsemi, lc + lsemi, lambda q: ellipsoid(q, lc, np.eye(3), lsemi) & ellipse2(q, tc, ts - tf),
         "liver")
    sc, sr = anat.spine
    _put(lab, box, [sc[0] - sr, sc[1] - sr, -FAR], [sc[0] + sr, sc[1] + sr, FAR], lambda q: ellipse2(q, sc, (sr, sr)),
         "bone")
    oc, orad = extra["oesophagus"]
    _put(lab, box, [oc[0] - orad, oc[1] - orad, -FAR], [oc[0] + orad, oc[1] + orad, FAR],
         lambda q: ellipse2(q, oc, (orad, orad)), "oesophagus")


def _capsule(lab: np.ndarray, box: Box, a: np.ndarray, b: np.ndarray, r: float, label: str) -> None:
    lo, hi = np.minimum(a, b) - r - 1, np.maximum(a, b) + r + 1
    _put(lab, box, lo, hi, lambda q: tapered_capsule(q, a, b, r, r), label)


def _paint_heart(lab: np.ndarray, box: Box, anat: Anatomy, extra: dict[str, Any]) -> None:
    """Fat pads, ventricles with myocardium, right atrium, caval veins, aorta and pulmonary artery
    (the LA is painted last, over them)."""
    for fc, fs, _ in anat.fat:
        _put(lab, box, fc - fs, fc + fs, lambda q, fc=fc, fs=fs: ellipsoid(q, fc, np.eye(3), fs), "epicardial_fat")
    rv = extra["rv"]
    reach = rv["semi"].max() + rv["wall"]
    _put(lab, box, rv["centre"] - reach, rv["centre"] + reach,
         lambda q: ellipsoid(q, rv["centre"], rv["axes"], rv["semi"] + rv["wall"]), "myocardium")
    _put(lab, box, rv["centre"] - reach, rv["centre"] + reach,
         lambda q: ellipsoid(q, rv["centre"], rv["axes"], rv["semi"]), "rv_blood")
    lv = anat.lv
    reach = lv["semi"].max() + lv["myo"]
    _put(lab, box, lv["centre"] - reach, lv["centre"] + reach,
         lambda q: ellipsoid(q, lv["centre"], lv["axes"], lv["semi"] + lv["myo"]), "myocardium")
    _put(lab, box, lv["centre"] - reach, lv["centre"] + reach,
         lambda q: ellipsoid(q, lv["centre"], lv["axes"], lv["semi"]), "lv_blood")
    ra = anat.ra
    _put(lab, box, ra["centre"] - ra["semi"], ra["centre"] + ra["semi"],
         lambda q: ellipsoid(q, ra["centre"], np.eye(3), ra["semi"]), "ra_blood")
    for (c, r), sign in ((extra["svc"], 1.0), (extra["ivc"], -1.0)):
        _put(lab, box, [c[0] - r, c[1] - r, min(c[2], sign * FAR)], [c[0] + r, c[1] + r, max(c[2], sign * FAR)],
             lambda q, c=c, r=r: cylinder(q, c, np.array([0.0, 0.0, sign]), FAR, r), "caval_veins")
    for ao in (anat.asc_aorta, anat.desc_aorta):
        _capsule(lab, box, ao["start"], ao["start"] + ao["len"] * ao["dir"], ao["radius"], "aorta")
    a, b, r = extra["arch"]
    _capsule(lab, box, a, b, r, "aorta")
    for a, b, r in extra["pa"]:
        _capsule(lab, box, a, b, r, "pulmonary_artery")


# -------------------------------------------------------------------------------- appearance
def _label_means(rng: np.random.Generator, lgelike: bool) -> np.ndarray:
    """A mean intensity per label: an LGE-like order with each structure drawn on its own, or
    fully random (SynthSeg)."""
    u = rng.uniform
    if not lgelike:
        means = u(0.0, 1.0, size=len(LABELS))
        means[LABELS["air"]] = u(0.0, 0.15)
        return means
    means = np.zeros(len(LABELS))
    blood = u(0.5, 0.9)
    ranges = {"air": (0.0, 0.05), "body": (0.15, 0.45), "subcutaneous_fat": (0.5, 1.0), "lung": (0.0, 0.08),
              "bone": (0.1, 0.5), "liver": (0.15, 0.5), "myocardium": (0.03, 0.3), "epicardial_fat": (0.45, 1.0),
              "oesophagus": (0.15, 0.5)}
    for name, value in LABELS.items():
        means[value] = blood * u(0.8, 1.2) if name in BLOOD else u(*ranges[name])
    return means


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """Unit-variance noise varying over about `cells` cells per axis, upsampled to `shape`."""
    coarse = rng.normal(size=tuple(max(2, min(cells, s)) for s in shape))
    up = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=1, mode="nearest")
    return up[tuple(slice(0, s) for s in shape)].astype(np.float32)


def _render(rng: np.random.Generator, lab: np.ndarray, geometry: Geometry, lgelike: bool) -> np.ndarray:
    """The scan: label means with texture, partial-volume blur, a bias field, Rician noise, a gamma
    curve and a random scale."""
    u = rng.uniform
    means = _label_means(rng, lgelike).astype(np.float32)
    spread = u(0.02, 0.12, size=len(LABELS)).astype(np.float32)
    img = means[lab] + spread[lab] * _smooth_noise(rng, lab.shape, int(rng.integers(6, 40)))
    blur_mm = u(0.3, 1.5)
    img = ndimage.gaussian_filter(img, [blur_mm / s for s in geometry.spacing_zyx], mode="nearest", truncate=3.0)
    img *= np.exp(u(0.0, 0.5) * _smooth_noise(rng, lab.shape, 3))
    sigma = u(0.01, 0.07) * float(np.percentile(img, 99))
    img = np.sqrt((img + sigma * rng.standard_normal(img.shape, dtype=np.float32)) ** 2
                  + (sigma * rng.standard_normal(img.shape, dtype=np.float32)) ** 2)
    top = float(np.percentile(img, 99.5)) or 1.0
    img = np.clip(img / top, 0.0, None) ** np.float32(np.exp(u(-0.4, 0.4)))
    return (img * np.float32(u(50.0, 1000.0))).astype(np.float32)
