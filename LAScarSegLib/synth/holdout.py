"""A second whole-chest LGE generator, kept apart from training on purpose: only for testing.

`thorax` (training) and the phantom share one anatomy (ellipsoids, capsules and tubes placed by
`anatomy.sample_anatomy`) and one appearance model. A model trained and judged on them proves
little, so this generator differs in both, deliberately:
- shape: every structure is a superquadric (random squareness) bent by its own smooth random
  displacement field; the pulmonary veins are curved tubes (quadratic Bezier curves), three to five
  of them (a left common trunk, a right middle vein); the appendage is a bent lobe; the chambers
  are placed from another template, with other spreads; arms beside the chest, breasts in front;
- appearance: an inversion-time-like contrast (blood from dark grey to bright, fat bright or
  suppressed), multi-octave texture, a multi-coil sensitivity profile instead of a smooth bias,
  a motion ghost along the phase-encoding direction, Rician noise, and axial grids stored in
  either left-right order.
The truth: the LA (body, appendage and vein ostia to 8-12 mm), 2-4 mm of tissue between it and
every other blood pool (open only at the mitral opening and the veins' continuation), its wall
(1-3 mm, open at the veins' cut and the mitral opening) and scar (round and elongated patches, about 0-40 % of the wall).
Every number comes from `numpy.random.default_rng([seed, 97])`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from ..core.distance import distance_to
from ..core.image import Geometry, Volume

HOLDOUT_PROVENANCE = "synthetic whole-chest LGE scan from the hold-out generator (LAScarSegLib.synth.holdout)"
MAX_VOXELS = 9_000_000


@dataclass
class HoldoutChest:
    image: Volume  # float32
    la: Volume  # uint8 0/1
    wall: Volume  # uint8 0/1, scar included
    scar: Volume  # uint8 0/1, within the wall
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Shape:
    """A superquadric in a local frame (rows of `axes`), bent by a smooth displacement field."""

    centre: np.ndarray
    axes: np.ndarray
    semi: np.ndarray
    power: float  # 2: ellipsoid; higher: boxier
    bend: list[tuple[np.ndarray, np.ndarray, float]]  # (wave vector, displacement, phase)

    def inside(self, p: np.ndarray) -> np.ndarray:
        """`p`: (..., 3) points in mm; only those within reach of the centre are evaluated."""
        reach = float(self.semi.max()) * 1.8 + sum(float(np.abs(d).sum()) for _, d, _ in self.bend)
        return _within(p, self.centre - reach, self.centre + reach, self._inside)

    def _inside(self, p: np.ndarray) -> np.ndarray:
        q = p - self.centre.astype(np.float32)
        for k, disp, ph in self.bend:
            q = q - np.sin(q @ k.astype(np.float32) + np.float32(ph))[..., None] * disp.astype(np.float32)
        u = np.abs(q @ self.axes.T.astype(np.float32)) / self.semi.astype(np.float32)
        return (u ** np.float32(self.power)).sum(axis=-1) <= 1.0


def _within(p: np.ndarray, lo: np.ndarray, hi: np.ndarray, test: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`test` on the points of `p` inside the box [lo, hi] only (False elsewhere)."""
    out = np.zeros(p.shape[:-1], bool)
    near = np.all((p >= np.asarray(lo, np.float32)) & (p <= np.asarray(hi, np.float32)), axis=-1)
    if near.any():
        out[near] = test(p[near])
    return out


def make_holdout_chest(seed: int = 0) -> HoldoutChest:
    """One hold-out whole-chest scan with LA, wall and scar truth (module docstring)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 97])
    geometry = _grid(rng)
    pts = _points(geometry, rng)
    shapes = _anatomy(rng)
    lab = _labels(pts, shapes, rng)
    _septa(lab, pts, shapes["mitral"], geometry, np.random.default_rng([seed, 98]))
    la = lab == 1
    wall, scar = _wall_and_scar(la, lab, geometry, rng)
    image = _appearance(rng, lab, wall, scar, geometry)
    src = f"hold-out chest seed {seed}"

    def vol(a: np.ndarray) -> Volume:
        return Volume(a.astype(np.uint8), geometry, src)

    info = {"provenance": f"{HOLDOUT_PROVENANCE}, seed {seed}: no real patient data", "seed": int(seed),
            "geometry": geometry.as_dict(), "n_veins": int(shapes["n_veins"]),
            "la_volume_ml": round(float(la.sum() * geometry.voxel_volume_mm3 / 1000.0), 2),
            "burden_pct": round(100.0 * float(scar.sum()) / max(1, int(wall.sum())), 2),
            "seconds": round(time.perf_counter() - t0, 3)}
    return HoldoutChest(Volume(image, geometry, src), vol(la), vol(wall), vol(scar), info)


# ------------------------------------------------------------------------------------ grid
def _grid(rng: np.random.Generator) -> Geometry:
    """An axial grid: 0.6-1.4 mm in-plane, 1-2.5 mm slices, 280-400 mm across, 90-150 mm high,
    stored left-right in either order."""
    sp = np.array([rng.uniform(0.6, 1.4)] * 2 + [rng.uniform(1.0, 2.5)])
    fov = np.array([rng.uniform(280.0, 400.0)] * 2 + [rng.uniform(90.0, 150.0)])
    sp *= max(1.0, (np.prod(fov / sp) / MAX_VOXELS) ** (1.0 / 3.0))
    size = np.round(fov / sp).astype(int)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    direction = (flip, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    origin = (-flip * fov[0] / 2.0, -fov[1] / 2.0, -fov[2] / 2.0)
    return Geometry(tuple(int(s) for s in size), tuple(float(s) for s in sp), origin, direction)


def _points(geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """Patient coordinates (z, y, x, 3) of every voxel: LPS mm turned by a small random pose, with
    the heart's centre moved off the grid's centre."""
    z, y, x = (np.arange(n, dtype=np.float32) for n in geometry.shape)
    idx = np.stack(np.meshgrid(x, y, z, indexing="xy"), axis=-1)  # (y, x, z, 3)
    lps = idx.transpose(2, 0, 1, 3).reshape(-1, 3) @ (np.asarray(geometry.direction_matrix)
                                                     @ np.diag(geometry.spacing)).T.astype(np.float32)
    lps += np.asarray(geometry.origin, np.float32)
    a, b, c = np.radians(rng.uniform(-12, 12, 3))
    rot = (np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
           @ np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
           @ np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]]))
    shift = np.array([rng.uniform(-30, 30), rng.uniform(-40, 10), rng.uniform(-20, 20)], np.float32)
    return ((lps - shift) @ rot.astype(np.float32)).reshape(*geometry.shape, 3)


# --------------------------------------------------------------------------------- anatomy
def _shape(rng: np.random.Generator, centre, semi, spread: float = 0.12, power=(1.8, 3.0), bend_mm: float = 4.0,
           tilt_deg: float = 20.0) -> _Shape:
    ang = np.radians(rng.uniform(-tilt_deg, tilt_deg, 3))
    ca, sa = np.cos(ang), np.sin(ang)
    axes = (np.array([[1, 0, 0], [0, ca[0], -sa[0]], [0, sa[0], ca[0]]])
            @ np.array([[ca[1], 0, sa[1]], [0, 1, 0], [-sa[1], 0, ca[1]]])
            @ np.array([[ca[2], -sa[2], 0], [sa[2], ca[2], 0], [0, 0, 1]]))
    bend = [(rng.normal(size=3) / rng.uniform(15, 40), rng.normal(size=3) * bend_mm / 2, rng.uniform(0, 6.3))
            for _ in range(3)]
    return _Shape(np.asarray(centre, float), axes, np.asarray(semi, float) * (1 + rng.uniform(-spread, spread, 3)),
                  float(rng.uniform(*power)), bend)


def _bezier_tube(a: np.ndarray, b: np.ndarray, c: np.ndarray, r: float) -> Callable[[np.ndarray], np.ndarray]:
    """Inside a tube of radius r around the quadratic Bezier curve a -> c with control point b."""
    t = np.linspace(0, 1, 24)[:, None]
    curve = ((1 - t) ** 2 * a + 2 * (1 - t) * t * b + t ** 2 * c).astype(np.float32)

    def near(p: np.ndarray) -> np.ndarray:
        d2 = np.full(p.shape[:-1], np.inf, np.float32)
        for q in curve:
            d2 = np.minimum(d2, ((p - q) ** 2).sum(axis=-1))
        return d2 <= r * r

    return lambda p: _within(p, curve.min(axis=0) - r, curve.max(axis=0) + r, near)


def _anatomy(rng: np.random.Generator) -> dict[str, Any]:
    """Structures in patient mm (x left, y posterior, z superior), the LA near the origin."""
    u = rng.uniform
    la = _shape(rng, (0, 0, 0), (u(24, 34), u(17, 24), u(20, 28)), power=(2.0, 2.8), bend_mm=3.0)
    veins = []
    n_veins = int(rng.choice([3, 4, 4, 4, 5]))
    sides = {3: [1, -1, -1], 4: [1, 1, -1, -1], 5: [1, 1, -1, -1, -1]}[n_veins]
    heights = {3: [0, 8, -8], 4: [10, -10, 10, -10], 5: [10, -10, 12, 0, -12]}[n_veins]
    for side, h in zip(sides, heights):
        ostium = np.array([side * la.semi[0] * 0.75, la.semi[1] * 0.7, h + u(-3, 3)])
        mid = ostium + np.array([side * u(8, 16), u(8, 14), u(-4, 4) + np.sign(h) * 4])
        end = mid + np.array([side * u(10, 20), u(5, 15), np.sign(h) * u(2, 10)])
        r = (u(8, 11) if n_veins == 3 and side > 0 else u(5, 8))
        veins.append((ostium - 0.3 * (mid - ostium), mid, end, r, float(u(8, 12))))
    laa_base = np.array([la.semi[0] * 0.7, -la.semi[1] * 0.8, la.semi[2] * 0.4])
    laa = _bezier_tube(laa_base, laa_base + np.array([u(8, 14), -u(6, 12), u(0, 8)]),
                       laa_base + np.array([u(10, 20), -u(15, 25), -u(0, 10)]), float(u(5, 8)))
    lv = _shape(rng, (u(25, 40), -u(35, 50), -u(25, 40)), (u(40, 50), u(24, 30), u(24, 30)), tilt_deg=30)
    return {
        "la": la, "veins": veins, "laa": laa, "n_veins": n_veins, "lv": lv,
        "lv_myo": _Shape(lv.centre, lv.axes, lv.semi + u(8, 12), lv.power, lv.bend),
        "rv": _shape(rng, lv.centre + np.array([-u(30, 45), -u(10, 20), u(0, 10)]), (u(35, 45), u(18, 25), u(25, 32)),
                     tilt_deg=30),
        "ra": _shape(rng, (-u(40, 55), -u(5, 15), u(0, 10)), (u(22, 28), u(20, 26), u(25, 32))),
        "aorta_root": _bezier_tube(np.array([u(-5, 5), -u(30, 40), -u(0, 10)]), np.array([u(-10, 0), -u(35, 45), 60.0]),
                                   np.array([u(10, 25), u(40, 55), 65.0]), float(u(13, 16))),
        "aorta_desc": _shape(rng, (u(15, 30), u(45, 60), 0), (u(10, 13), u(10, 13), 400), power=(2.0, 2.0), bend_mm=2),
        "pa": _bezier_tube(np.array([-u(0, 10), -u(50, 60), u(0, 10)]), np.array([u(10, 20), -u(45, 55), u(25, 35)]),
                           np.array([u(40, 60), u(0, 15), u(30, 40)]), float(u(12, 15))),
        "svc": _shape(rng, (-u(35, 50), -u(5, 15), 80), (u(9, 12), u(9, 12), 60), power=(2.0, 2.0), bend_mm=2),
        "body": _shape(rng, (u(-10, 10), u(10, 30), 0), (u(140, 170), u(105, 125), 500), power=(2.0, 2.6), bend_mm=6,
                       tilt_deg=3),
        "lungs": [_shape(rng, (s * u(80, 100), u(10, 30), u(0, 20)), (u(55, 70), u(70, 90), u(110, 140)), bend_mm=8,
                         tilt_deg=5) for s in (1, -1)],
        "spine": _shape(rng, (u(-5, 5), u(85, 100), 0), (u(15, 19), u(15, 19), 500), power=(2.0, 2.4), tilt_deg=3),
        "arms": [_shape(rng, (s * u(190, 215), u(0, 30), 0), (u(35, 45), u(40, 50), 500), tilt_deg=3) for s in (1, -1)],
        "breasts": [_shape(rng, (s * u(50, 80), -u(110, 130), -u(0, 20)), (u(40, 60), u(25, 45), u(35, 50)))
                    for s in (1, -1)] if rng.random() < 0.5 else [],
        "mitral": (np.array([u(15, 22), -u(14, 20), -u(12, 18)]), float(u(13, 17))),
    }


def _labels(p: np.ndarray, s: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """1 LA, 2 LV blood, 3 myocardium, 4 RV, 5 RA, 6 aorta, 7 PA, 8 caval, 9 lung, 10 body, 11 fat,
    12 bone, 13 vein blood beyond the label, 14 arm, 15 breast; 0 air. Later structures win."""
    lab = np.zeros(p.shape[:-1], np.uint8)

    def put(mask: np.ndarray, value: int) -> None:
        lab[mask] = value

    # the chest's large, smooth structures on every second voxel (8x fewer), the heart's on all
    coarse = p[::2, ::2, ::2]

    def fine(mask: np.ndarray) -> np.ndarray:
        up = mask.repeat(2, 0).repeat(2, 1).repeat(2, 2)
        return up[:p.shape[0], :p.shape[1], :p.shape[2]]

    b = s["body"]
    inner = _Shape(b.centre, b.axes, b.semi - rng.uniform(6, 18), b.power, b.bend)
    body = fine(b.inside(coarse))
    put(body, 11)
    put(fine(inner.inside(coarse)), 10)
    for arm in s["arms"]:
        put(fine(arm.inside(coarse)), 14)
    for br in s["breasts"]:
        put(fine(br.inside(coarse)) & ~body, 15)
    for lung in s["lungs"]:
        put(fine(lung.inside(coarse)) & body, 9)
    put(fine(s["spine"].inside(coarse)), 12)
    put(s["aorta_desc"].inside(p), 6)
    put(s["lv_myo"].inside(p), 3)
    put(s["lv"].inside(p), 2)
    put(s["rv"].inside(p), 4)
    put(s["ra"].inside(p), 5)
    put(s["svc"].inside(p), 8)
    put(s["aorta_root"](p), 6)
    put(s["pa"](p), 7)
    la = s["la"].inside(p) | s["laa"](p)
    for a, b, c, r, cut in s["veins"]:
        tube = _bezier_tube(a, b, c, r)(p)
        near = ((p - a) ** 2).sum(axis=-1) <= (cut + np.linalg.norm(b - a) * 0.3) ** 2
        put(tube & ~near & ~la, 13)
        la |= tube & near
    centre, radius = s["mitral"]
    normal = centre / np.linalg.norm(centre)
    beyond = ((p - centre) @ normal > 0) & (((p - centre) ** 2).sum(axis=-1) <= (radius * 1.6) ** 2)
    put(la & beyond, 2)  # the mitral side: LV inflow, not LA
    put(la & ~beyond, 1)
    return lab


def _septa(lab: np.ndarray, p: np.ndarray, mitral: tuple[np.ndarray, float], geometry: Geometry,
           rng: np.random.Generator) -> None:
    """Tissue between the LA and every other blood pool it touches (the interatrial septum, the
    aortic and ventricular walls): 2-4 mm of myocardium, as a real chest has. Only the mitral opening
    (LA blood flowing on into the LV) and the veins' continuation stay open, so the LA's extent is in
    the image, not only in the truth."""
    la = lab == 1
    zs, ys, xs = (np.flatnonzero(la.any(axis=ax)) for ax in ((1, 2), (0, 2), (0, 1)))
    thick = rng.uniform(2.0, 4.0)
    margin = [int(np.ceil((thick + 1) / s)) for s in geometry.spacing_zyx]
    box = tuple(slice(max(0, v[0] - m), v[-1] + m + 1) for v, m in zip((zs, ys, xs), margin))
    near = distance_to(la[box], geometry.spacing_zyx) <= thick
    centre, radius = mitral
    opening = ((p[box] - centre) ** 2).sum(axis=-1) <= (radius * 1.6) ** 2
    other_blood = np.isin(lab[box], (2, 4, 5, 6, 7, 8)) & ~(opening & (lab[box] == 2))
    sub = lab[box]
    sub[near & other_blood] = 3


def _wall_and_scar(la: np.ndarray, lab: np.ndarray, geometry: Geometry,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 1-3 mm wall around the LA (not into other blood), and scar patches in it: a few round and
    elongated blobs of random size, together about 0-40 % of the wall."""
    zs, ys, xs = (np.flatnonzero(la.any(axis=ax)) for ax in ((1, 2), (0, 2), (0, 1)))
    margin = [int(np.ceil(6 / s)) for s in geometry.spacing_zyx]
    box = tuple(slice(max(0, v[0] - m), v[-1] + m + 1) for v, m in zip((zs, ys, xs), margin))
    sub = la[box]
    d = distance_to(sub, geometry.spacing_zyx)
    thick = rng.uniform(1.0, 3.0)
    blood = np.isin(lab[box], (2, 4, 5, 6, 7, 8, 13))
    wall_sub = (d > 0) & (d <= thick) & ~blood
    scar_sub = np.zeros_like(wall_sub)
    target = rng.uniform(0.0, 0.4)
    idx = np.argwhere(wall_sub)
    mm = idx * np.asarray(geometry.spacing_zyx)
    hit = np.zeros(len(idx), bool)
    while len(idx) and hit.sum() < target * len(idx):
        radii = rng.uniform(4, 14, 3)  # round or elongated
        hit |= (((mm - mm[rng.integers(len(idx))]) / radii) ** 2).sum(axis=1) <= 1
    scar_sub[tuple(idx[hit].T)] = True
    wall, scar = np.zeros_like(la), np.zeros_like(la)
    wall[box], scar[box] = wall_sub, scar_sub
    return wall, scar


# ------------------------------------------------------------------------------ appearance
def _octaves(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    for cells, w in ((4, 0.5), (12, 0.3), (36, 0.2)):
        c = rng.normal(size=tuple(max(2, min(cells, n)) for n in shape))
        up = ndimage.zoom(c, [n / m for n, m in zip(shape, c.shape)], order=1)
        out += w * up[tuple(slice(0, n) for n in shape)].astype(np.float32)
    return out


def _appearance(rng: np.random.Generator, lab: np.ndarray, wall: np.ndarray, scar: np.ndarray,
                geometry: Geometry) -> np.ndarray:
    """Inversion-time-like contrast, texture, coil sensitivities, a motion ghost and Rician noise."""
    u = rng.uniform
    blood = u(0.35, 1.0)
    fat = u(0.05, 0.25) if rng.random() < 0.3 else u(0.6, 1.0)  # fat suppressed in a third of scans
    level = {0: 0.0, 1: blood * u(0.9, 1.1), 2: blood * u(0.85, 1.15), 3: u(0.02, 0.2), 4: blood * u(0.8, 1.1),
             5: blood * u(0.85, 1.1), 6: blood * u(0.85, 1.2), 7: blood * u(0.8, 1.15), 8: blood * u(0.7, 1.0),
             9: u(0.0, 0.05), 10: u(0.15, 0.4), 11: fat, 12: u(0.1, 0.4), 13: blood * u(0.8, 1.1), 14: u(0.15, 0.4),
             15: u(0.2, 0.6)}
    lut = np.array([level[k] for k in range(16)], np.float32)
    img = lut[lab] * (1 + 0.15 * _octaves(rng, lab.shape))
    img[wall & ~scar] = u(0.05, 0.3)
    img[scar] = blood * u(1.1, 1.8)
    img = ndimage.gaussian_filter(img, [u(0.4, 1.0) / s for s in geometry.spacing_zyx])
    yy, xx = np.meshgrid(np.linspace(-1, 1, lab.shape[1]), np.linspace(-1, 1, lab.shape[2]), indexing="ij")
    sens = np.zeros(yy.shape, np.float32)
    for k in range(int(rng.integers(2, 9))):
        a = 2 * np.pi * k / 8 + u(-0.3, 0.3)
        sens += np.exp(-((xx - 1.2 * np.cos(a)) ** 2 + (yy - 1.2 * np.sin(a)) ** 2) / u(0.5, 1.5)).astype(np.float32)
    img *= (sens / sens.max())[None] ** u(0.3, 1.0)
    shift = int(rng.integers(5, max(6, lab.shape[1] // 4)))
    img += u(0.0, 0.12) * np.roll(img, shift, axis=1)  # a motion ghost along the phase-encoding (y) direction
    sigma = u(0.01, 0.05)
    img = np.sqrt((img + sigma * rng.standard_normal(img.shape, dtype=np.float32)) ** 2
                  + (sigma * rng.standard_normal(img.shape, dtype=np.float32)) ** 2)
    return (img * u(100, 2000)).astype(np.float32)
