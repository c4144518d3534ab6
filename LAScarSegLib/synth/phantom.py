"""Synthetic LGE-MRI phantoms of the left atrium with LA, wall and scar ground truth.

No real scar labels exist on the project's machines (METHOD-NOTES section 6), so scar work is
developed and tested on synthetic scar. `make_phantom` makes a whole synthetic LGE image: LA
body, four pulmonary veins, appendage and the mitral opening; a 1-3 mm wall with confluent and
discrete scar patches; bright confounders that are not LA (LV and aortic blood, right atrium, an
enhanced LV-myocardium patch, fat), nulled myocardium, lungs, a smooth bias field, partial-volume
blur and Rician noise. Scar painted into a real image is `LAScarSegLib.synth.scar`; the patient
(its anatomy and appearance) is drawn by `LAScarSegLib.synth.anatomy`.

Only the voxels in a box around the heart are computed at full cost. Every number comes from a
`numpy.random.Generator` seeded by `seed`: the same seed gives identical arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..core.distance import distance_to
from ..core.errors import InputError
from ..core.image import Geometry, Volume
from .anatomy import (Anatomy, Box, aabb, axial_radial, cylinder, ellipse2, ellipsoid, index_box, rotation_matrix,
                      sample_anatomy, tapered_capsule)
from .scar import blood_pool, mask_bounds, scar_patches, smooth_field

UTAH_SIZE = (208, 208, 80)  # x, y, z: the network's crop on the Utah grid
FULL_FOV_SIZE = (640, 640, 88)
UTAH_SPACING = (0.625, 0.625, 1.25)  # mm, x, y, z

PHANTOM_PROVENANCE = "synthetic LGE phantom"

WALL_THICKNESS_MM = (1.0, 3.0)
WALL_RATIO = (0.8, 1.1)  # normal wall / blood pool


# ----------------------------------------------------------------------------------- results
@dataclass
class Phantom:
    """A synthetic LGE image and its ground truth, all on one grid (uint8 0/1 labels)."""

    image: Volume  # float32
    la: Volume  # LA cavity including the vein ostia
    wall: Volume  # LA wall, scar included
    scar: Volume  # subset of wall
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------- state between steps
@dataclass
class Pose:
    """Where the anatomical frame lies in LPS: its rotation (and the angles, degrees) and centre."""

    angles: np.ndarray
    rotation: np.ndarray
    centre: np.ndarray

    def to_lps(self, p: np.ndarray) -> list[float]:
        return [round(float(c), 3) for c in (self.centre + self.rotation @ np.asarray(p, float))]

    def lps_direction(self, d: np.ndarray) -> list[float]:
        return [round(float(c), 5) for c in self.rotation @ np.asarray(d, float)]


@dataclass
class Cavity:
    """The LA and the blood that continues it, as masks of the heart box."""

    body: np.ndarray  # the LA body, before the mitral cut
    laa: np.ndarray  # the appendage
    la: np.ndarray  # the LA label: body, appendage and veins to their cut, less the LV side of the mitral plane
    s_m: np.ndarray  # position across the mitral plane (> 0 on the LV side); -inf outside the LA's box
    vein_cont: np.ndarray  # vein blood beyond the label's cut: unlabelled
    vein_level: np.ndarray  # its intensity
    vessel_wall: np.ndarray  # the veins' own wall beyond the label's cut: unlabelled
    channel: np.ndarray  # the mitral inflow
    lv_side_blood: np.ndarray  # the body's cap beyond the mitral plane and the inflow: LV blood
    extended: np.ndarray  # la | vein_cont | lv_side_blood: no wall grows into it
    r_open: float  # radius of the mitral opening (mm)


@dataclass
class _Wall:
    """The LA wall in the heart box."""

    mask: np.ndarray
    points: np.ndarray  # frame coordinates (N, 3) of its voxels, in mask order
    thickness: np.ndarray  # the local thickness drawn at each (mm)
    d_la: np.ndarray  # distance from the LA (mm); inf beyond a few mm of it
    tau_max: float  # the thickest possible wall (mm), voxel rounding included


# ------------------------------------------------------------------------------- the phantom
def make_phantom(seed: int = 0, *, full_fov: bool = False, burden: float | None = None,
                 snr: float | None = None, la_volume_ml: float | None = None,
                 wall_thickness_mm: float | None = None, vary_thickness: bool = True,
                 size: Sequence[int] | None = None, spacing: Sequence[float] | None = None,
                 origin: Sequence[float] | None = None, direction: Sequence[float] | None = None) -> Phantom:
    """A synthetic LGE image of a left atrium with its LA, wall and scar labels.

    seed: everything random comes from `numpy.random.default_rng(seed)`; same seed, same arrays.
    full_fov: a 640x640x88 grid with the chest in view and the LA 25-45 mm off centre, instead
        of the 208x208x80 crop with the LA within 5 mm of the centre (both 0.625x0.625x1.25 mm).
    burden: scar voxels / wall voxels in PERCENT (0-100); default drawn from 0-40 %.
    snr: blood-pool SNR (blood level / noise SD); default drawn from 6-20.
    la_volume_ml: target LA volume (the measured one is within a few mL); default 60-185 mL.
    wall_thickness_mm: mean wall thickness, 1-3 mm; default drawn from 1.2-2.8 mm, and with
        `vary_thickness` it varies smoothly by up to +-0.5 mm over the wall (clipped to 1-3 mm).
    size, spacing, origin, direction: another grid (x, y, z; direction row-major 3x3). The anatomy
        lives in LPS millimetres, so an oblique direction samples the same patient.
    """
    t_start = time.perf_counter()
    _check_options(burden, snr, la_volume_ml, wall_thickness_mm)
    geometry = _default_geometry(full_fov, size, spacing, origin, direction)
    rng = np.random.default_rng(seed)
    anat = sample_anatomy(rng, la_volume_ml, wall_thickness_mm, vary_thickness, burden, snr)
    pose = _draw_pose(rng, geometry, full_fov)
    texture_rng = np.random.default_rng([seed, 1])  # random fields (wall, scar, fat): own stream
    noise_rng = np.random.default_rng([seed, 2])  # bias field and noise

    img = np.zeros(geometry.shape, np.float32)
    _paint_background(img, geometry, pose, anat)
    hb, la_lo, la_hi = heart_box(geometry, pose, anat)
    cav = la_cavity(hb, anat, la_lo, la_hi, seed)
    wall = _la_wall(hb, anat, cav, texture_rng)
    scar, wall_vals, scar_ratios = _wall_scar(anat, wall, texture_rng)

    # confounders, then the LA; bright structures never touch the labelled wall
    hi_img = img[hb.slices]
    far = wall.d_la > np.float32(wall.tau_max + 1.5)
    _paint_vessels_and_fat(hi_img, hb, anat, far)
    _paint_ventricle(hi_img, hb, anat, cav, far, texture_rng)
    _paint_la(hi_img, anat, cav, wall.mask, wall_vals)

    # partial volume, bias, noise
    sigma_vox = [anat.blur_mm / sp for sp in geometry.spacing_zyx]
    hi_img[...] = ndimage.gaussian_filter(hi_img, sigma_vox, mode="nearest", truncate=3.0)
    la_centroid_idx = np.array([float(np.mean(i)) for i in np.nonzero(cav.la)])[::-1] + hb.lo  # x, y, z in the image
    img = _bias_and_noise(img, geometry, anat, la_centroid_idx, noise_rng)

    info = _info(seed, full_fov, anat, pose, hb, cav, wall, scar, scar_ratios, img, la_centroid_idx)
    info["seconds"] = round(time.perf_counter() - t_start, 3)
    return Phantom(Volume(img, geometry, f"phantom seed {seed}"), _full_label(cav.la, hb, seed),
                   _full_label(wall.mask, hb, seed), _full_label(scar, hb, seed), info)


def _check_options(burden: float | None, snr: float | None, la_volume_ml: float | None,
                   wall_thickness_mm: float | None) -> None:
    if burden is not None and not 0.0 <= float(burden) <= 100.0:
        raise InputError(f"burden is a percentage of wall voxels (0-100), got {burden}")
    if snr is not None and not float(snr) > 0:
        raise InputError(f"snr must be positive, got {snr}")
    if wall_thickness_mm is not None and not WALL_THICKNESS_MM[0] <= float(wall_thickness_mm) <= WALL_THICKNESS_MM[1]:
        raise InputError(f"wall_thickness_mm must be within {WALL_THICKNESS_MM} mm, got {wall_thickness_mm}")
    if la_volume_ml is not None and not 20.0 <= float(la_volume_ml) <= 400.0:
        raise InputError(f"la_volume_ml must be within 20-400 mL, got {la_volume_ml}")


def _default_geometry(full_fov: bool, size, spacing, origin, direction) -> Geometry:
    size = tuple(int(s) for s in (size or (FULL_FOV_SIZE if full_fov else UTAH_SIZE)))
    spacing = tuple(float(s) for s in (spacing or UTAH_SPACING))
    origin = tuple(float(o) for o in (origin if origin is not None else (0.0, 0.0, 0.0)))
    direction = tuple(float(d) for d in (direction if direction is not None else np.eye(3).ravel()))
    dm = np.asarray(direction).reshape(3, 3)
    if not np.allclose(dm @ dm.T, np.eye(3), atol=1e-4):
        raise InputError(f"direction must be an orthonormal 3x3 matrix (row-major), got {list(direction)}")
    return Geometry(size, spacing, origin, direction)


def _draw_pose(rng: np.random.Generator, geometry: Geometry, full_fov: bool) -> Pose:
    """Small rotations about each LPS axis; the LA near the centre, or off centre in a full FOV.

    Both offsets are drawn for every case, so the full-FOV option changes no other number."""
    angles = rng.uniform(-1, 1, size=3) * np.array([12.0, 12.0, 20.0])
    rotation = rotation_matrix(*angles)
    jitter = rng.uniform(-5.0, 5.0, size=3)
    full_offset = np.array([rng.choice([-1.0, 1.0]) * rng.uniform(25.0, 40.0), rng.uniform(-5.0, 20.0),
                            rng.uniform(-8.0, 8.0)])
    image_centre = geometry.index_to_physical((np.asarray(geometry.size, float)[None, :] - 1.0) / 2.0)[0]
    if full_fov:
        # the FOV is placed on the chest, not on the LA: the LA lies 25-45 mm from the centre
        centre = image_centre + full_offset
    else:
        centre = image_centre + jitter
    return Pose(angles, rotation, centre)


def _paint_background(img: np.ndarray, geometry: Geometry, pose: Pose, anat: Anatomy) -> None:
    """Torso (subcutaneous fat, medium-dark tissue), lungs and spine; air (0) elsewhere.

    Only the torso's index box is visited, slab by slab along z to bound memory on the
    640x640x88 grid, and each structure only in its own sub-box of the slab."""
    levels = anat.levels
    tc, ts, tf = anat.torso["centre"], anat.torso["semi"], anat.torso["fat_mm"]
    mc, ms = anat.mediastinum
    sc, sr = anat.spine
    far_z = 1e4  # the torso, lungs' mediastinal cut and spine are cylinders along the frame's z
    size = np.asarray(geometry.size)
    t_lo, t_hi = index_box(geometry, pose.rotation, pose.centre, np.array([tc[0] - ts[0], tc[1] - ts[1], -far_z]),
                           np.array([tc[0] + ts[0], tc[1] + ts[1], far_z]), np.zeros(3, int), size)
    step = max(1, int(4_000_000 // max(1, (t_hi[0] - t_lo[0]) * (t_hi[1] - t_lo[1]))))
    for z0 in range(int(t_lo[2]), int(t_hi[2]), step):  # slabs, not voxels
        box = Box(geometry, pose.rotation, pose.centre, np.array([t_lo[0], t_lo[1], z0]),
                  np.array([t_hi[0], t_hi[1], min(int(t_hi[2]), z0 + step)]))
        out = img[box.slices]
        out[ellipse2(box.q, tc, ts)] = levels["fat"]
        inner_semi = ts - tf
        out[ellipse2(box.q, tc, inner_semi)] = levels["background"]
        for lc, lsemi in anat.lungs:
            sl = box.sub(lc - lsemi, lc + lsemi)
            q = box.view(sl)
            lung = ellipsoid(q, lc, np.eye(3), lsemi) & ~ellipse2(q, mc, ms) & ellipse2(q, tc, inner_semi)
            out[sl][lung] = levels["lung"]
        sl = box.sub(np.array([sc[0] - sr, sc[1] - sr, -far_z]), np.array([sc[0] + sr, sc[1] + sr, far_z]))
        q = box.view(sl)
        out[sl][ellipse2(q, sc, (sr, sr))] = levels["spine"]


def lv_extent(lvd: dict[str, Any]) -> float:
    """How far the LV with its myocardium and fat reaches from its centre (mm), at most."""
    return lvd["semi"][0] + lvd["myo"] + lvd["fat_mm"]


def heart_box(geometry: Geometry, pose: Pose, anat: Anatomy) -> tuple[Box, np.ndarray, np.ndarray]:
    """The index box of everything drawn on the heart (LA with veins and appendage, LV, RA,
    aortas, fat), and the LA's own frame-aligned box (lo, hi mm) within it."""
    semi = anat.body.semi
    body_reach = semi * (1.0 + sum(w for _, _, w, _ in anat.body.modes))
    la_pts = [body_reach, -body_reach]
    for v in anat.veins:
        far_end = v.ostium + v.length_mm * v.direction
        la_pts += [far_end + v.radius + 4, far_end - v.radius - 4]
    _, p1, p2, _, r1, r2 = anat.laa
    la_pts += [p1 + r1 + 4, p1 - r1 - 4, p2 + r2 + 4, p2 - r2 - 4]
    la_lo, la_hi = aabb(la_pts, 5.0)
    lvd = anat.lv
    ext = lv_extent(lvd)
    heart_pts = [la_lo, la_hi, lvd["centre"] + ext, lvd["centre"] - ext,
                 anat.ra["centre"] + anat.ra["semi"] + 3, anat.ra["centre"] - anat.ra["semi"] - 3]
    for ao in (anat.asc_aorta, anat.desc_aorta):
        for p in (ao["start"], ao["start"] + ao["len"] * ao["dir"]):
            heart_pts += [p + ao["radius"] + 3, p - ao["radius"] - 3]
    for fc, fs, _ in anat.fat:
        heart_pts += [fc + fs, fc - fs]
    h_lo, h_hi = aabb(heart_pts, 2.0)
    lo_idx, hi_idx = index_box(geometry, pose.rotation, pose.centre, h_lo, h_hi, np.zeros(3, int),
                               np.asarray(geometry.size))
    return Box(geometry, pose.rotation, pose.centre, lo_idx, hi_idx), la_lo, la_hi


# ------------------------------------------------------------------------------ the LA cavity
def la_cavity(hb: Box, anat: Anatomy, la_lo: np.ndarray, la_hi: np.ndarray, seed: int) -> Cavity:
    """The LA label and the unlabelled blood that continues it (veins beyond the cut, LV inflow)."""
    la_sl = hb.sub(la_lo, la_hi)
    ql = hb.view(la_sl)
    body = np.zeros(hb.shape, bool)
    body[la_sl] = anat.body.inside(ql)
    # position across the mitral plane (> 0 on the LV side) and squared distance from its axis
    s_m = np.full(hb.shape, -np.inf, np.float32)
    r2_m = np.full(hb.shape, np.inf, np.float32)
    s_m[la_sl], r2_m[la_sl] = axial_radial(ql, anat.mitral_centre, anat.mitral_normal)
    laa = _appendage(hb, anat)
    vein_cut, vein_cont, vessel_wall, vein_level = _veins(hb, anat)
    union = body | laa | vein_cut
    # the mitral opening: the body's section by the plane; beyond it (LV side) is not LA
    face = body & (np.abs(s_m) <= 1.0)
    r_face = float(np.sqrt(r2_m[face].max())) if face.any() else 0.3 * anat.mitral_h
    r_open = r_face + 2.0
    la = union & ~((s_m > 0) & (r2_m <= r_open ** 2))
    vein_cont &= ~la
    if not la.any():
        raise InputError(f"phantom seed {seed}: the LA lies outside the grid ({hb.geometry.describe()})")
    channel = _mitral_inflow(hb, anat, r_face, r_open)
    lv_side_blood = (channel | union) & ~la & ~vein_cont  # the body's cap beyond the plane is LV inflow
    cav_ext = la | vein_cont | lv_side_blood
    vessel_wall &= ~cav_ext
    return Cavity(body, laa, la, s_m, vein_cont, vein_level, vessel_wall, channel, lv_side_blood, cav_ext, r_open)


def _appendage(hb: Box, anat: Anatomy) -> np.ndarray:
    p0, p1, p2, r0, r1, r2 = anat.laa
    laa = np.zeros(hb.shape, bool)
    laa_sl = hb.sub(*aabb([p0, p1, p2], r0 + 1))
    laa[laa_sl] = tapered_capsule(hb.view(laa_sl), p0, p1, r0, r1) | tapered_capsule(hb.view(laa_sl), p1, p2, r1, r2)
    return laa


def _veins(hb: Box, anat: Anatomy) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The veins up to the label's cut, their blood beyond it, their wall beyond it (unlabelled)
    and the intensity of that blood: (cut, continuation, vessel wall, level)."""
    vein_cut = np.zeros(hb.shape, bool)
    vein_cont = np.zeros(hb.shape, bool)
    vessel_wall = np.zeros(hb.shape, bool)
    vein_level = np.zeros(hb.shape, np.float32)
    for v in anat.veins:
        end = v.ostium + v.length_mm * v.direction
        sl = hb.sub(*aabb([v.start, end], v.radius + 4))
        axial, r2v = axial_radial(hb.view(sl), v.start, v.direction)
        tube = (axial >= 0) & (r2v <= v.radius ** 2)
        vein_cut[sl] |= tube & (axial <= v.cut_axial)
        along = (axial > v.cut_axial) & (axial <= 6.0 + v.length_mm)
        cont = tube & along
        vein_cont[sl] |= cont
        vessel_wall[sl] |= along & (r2v > v.radius ** 2) & (r2v <= (v.radius + anat.wall_t0) ** 2)
        vein_level[sl][cont] = v.level
    return vein_cut, vein_cont, vessel_wall, vein_level


def _mitral_inflow(hb: Box, anat: Anatomy, r_face: float, r_open: float) -> np.ndarray:
    """Mitral inflow: the face extruded 3 mm, then a funnel into the LV where its blood pool is wide."""
    lvd, n_mv, mitral_centre = anat.lv, anat.mitral_normal, anat.mitral_centre
    e_lv = lvd["axes"][0]
    ch_end = lvd["centre"] - 0.5 * lvd["semi"][0] * e_lv
    r_end = 0.8 * lvd["semi"][1]
    ch_sl = hb.sub(*aabb([mitral_centre, ch_end], max(r_open, r_end) + 1))
    qc = hb.view(ch_sl)
    s_c, _ = axial_radial(qc, mitral_centre, n_mv)
    extruded = anat.body.inside(tuple(qc[a] - s_c * np.float32(n_mv[a]) for a in range(3))) & (s_c <= 3.0)
    funnel = tapered_capsule(qc, mitral_centre + 2.0 * n_mv, ch_end, 0.6 * r_face, r_end)
    channel = np.zeros(hb.shape, bool)
    channel[ch_sl] = (extruded | funnel) & (s_c > 0)
    return channel


# ------------------------------------------------------------------------ wall: a shell of 1-3 mm
def _la_wall(hb: Box, anat: Anatomy, cav: Cavity, texture_rng: np.random.Generator) -> _Wall:
    """The wall: voxels outside the cavity within a smoothly varying thickness of the LA, open at
    the veins' cut and the mitral opening."""
    spacing_zyx = hb.geometry.spacing_zyx
    half_vox = 0.5 * min(hb.geometry.spacing)  # the surface lies half a voxel beyond LA voxel centres
    min_tau = max(hb.geometry.spacing) + 1e-3  # every 6-neighbour of the LA is wall: a closed shell
    tau_max = max(WALL_THICKNESS_MM[1] + half_vox, min_tau)
    d_la = _distance_near(cav.la, spacing_zyx, tau_max + 2.5)
    cand = (~cav.extended) & (d_la <= tau_max)
    pts = hb.points(cand)
    t_field = smooth_field(texture_rng, pts, (30.0, 70.0), 12)
    thickness = np.clip(anat.wall_t0 + anat.wall_amp * np.clip(t_field, -1.0, 1.0), *WALL_THICKNESS_MM)
    tau = np.maximum(thickness + half_vox, min_tau)
    shell = d_la[cand] <= tau
    wall_c = shell & ~_open_ends(pts, anat, cav.r_open, tau_max)
    wall = np.zeros(hb.shape, bool)
    wall[cand] = wall_c
    return _Wall(wall, pts[wall_c], thickness[wall_c], d_la, tau_max)


def _distance_near(mask: np.ndarray, spacing_zyx, reach_mm: float) -> np.ndarray:
    """Distance (mm) from a mask, computed only within `reach_mm` of its bounding box; inf beyond.

    Distances are only needed within a few mm of the LA, and the box keeps them cheap."""
    lo_b, hi_b = mask_bounds(mask)
    margin = np.ceil(reach_mm / np.asarray(spacing_zyx)).astype(int)
    d_box = tuple(slice(int(max(a - m, 0)), int(min(b + m, n))) for a, b, m, n in zip(lo_b, hi_b, margin, mask.shape))
    d = np.full(mask.shape, np.inf, np.float32)
    d[d_box] = distance_to(mask[d_box], spacing_zyx)
    return d


def _open_ends(pts: np.ndarray, anat: Anatomy, r_open: float, tau_max: float) -> np.ndarray:
    """Which wall candidates (N, 3 frame mm) lie across a vein's end (the label's cut) or the
    mitral opening, where the wall stays open."""
    open_end = np.zeros(len(pts), bool)
    for v in anat.veins:
        ax = (pts - v.start) @ v.direction
        r2v = np.sum((pts - v.start) ** 2, axis=1) - ax ** 2
        open_end |= (ax > v.cut_axial) & (r2v <= (v.radius + tau_max + 1.0) ** 2)
    rel = pts - anat.mitral_centre
    s_p = rel @ anat.mitral_normal
    open_end |= (s_p > 0) & (np.sum(rel ** 2, axis=1) - s_p ** 2 <= (r_open + 1.0) ** 2)
    return open_end


def _wall_scar(anat: Anatomy, wall: _Wall, texture_rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Scar in the wall, ablation-like around the vein ostia: (scar mask of the heart box,
    intensity ratio of each wall voxel, the ratios of the scar voxels)."""
    hotspots = [(v.ostium, v.radius + 4.0) for v in anat.veins]
    scar_w, ratio_w = scar_patches(texture_rng, wall.points, anat.burden_pct, anat.scar_ratio, hotspots)
    wall_tex = smooth_field(texture_rng, wall.points, (6.0, 20.0), 12)
    wall_vals = np.clip(anat.wall_ratio + 0.03 * wall_tex, *WALL_RATIO).astype(np.float32)
    wall_vals[scar_w] = ratio_w[scar_w]
    scar = np.zeros(wall.mask.shape, bool)
    scar[wall.mask] = scar_w
    return scar, wall_vals, ratio_w[scar_w]


# ------------------------------------------------------------------------------- intensities
def _paint(hi_img: np.ndarray, mask: np.ndarray, value, sl=None) -> None:
    if sl is None:
        hi_img[mask] = value
    else:
        hi_img[sl][mask] = value


def _paint_vessels_and_fat(hi_img: np.ndarray, hb: Box, anat: Anatomy, far: np.ndarray) -> None:
    """The aortas and the right atrium, each in a darker vessel wall, and the fat pads."""
    levels = anat.levels
    eye = np.eye(3)
    for ao in (anat.desc_aorta, anat.asc_aorta):
        end = ao["start"] + ao["len"] * ao["dir"]
        sl = hb.sub(*aabb([ao["start"], end], ao["radius"] + 3))
        qs = hb.view(sl)
        _paint(hi_img, cylinder(qs, ao["start"], ao["dir"], ao["len"], ao["radius"] + 1.5) & far[sl],
               levels["vessel_wall"], sl)
        _paint(hi_img, cylinder(qs, ao["start"], ao["dir"], ao["len"], ao["radius"]) & far[sl], ao["level"], sl)
    ra = anat.ra
    sl = hb.sub(ra["centre"] - ra["semi"] - 3, ra["centre"] + ra["semi"] + 3)
    qs = hb.view(sl)
    _paint(hi_img, ellipsoid(qs, ra["centre"], eye, ra["semi"] + 2.0) & far[sl], levels["vessel_wall"], sl)
    _paint(hi_img, ellipsoid(qs, ra["centre"], eye, ra["semi"]) & far[sl], ra["level"], sl)
    for fc, fs, level in anat.fat:
        sl = hb.sub(fc - fs, fc + fs)
        _paint(hi_img, ellipsoid(hb.view(sl), fc, eye, fs) & far[sl], level, sl)


def _paint_ventricle(hi_img: np.ndarray, hb: Box, anat: Anatomy, cav: Cavity, far: np.ndarray,
                     texture_rng: np.random.Generator) -> None:
    """The LV: epicardial fat, nulled myocardium with an enhanced patch, and its blood pool."""
    lvd = anat.lv
    ext = lv_extent(lvd)
    sl = hb.sub(lvd["centre"] - ext, lvd["centre"] + ext)
    qs = hb.view(sl)
    lv_blood = ellipsoid(qs, lvd["centre"], lvd["axes"], lvd["semi"])
    lv_outer = ellipsoid(qs, lvd["centre"], lvd["axes"], lvd["semi"] + lvd["myo"])
    myo = lv_outer & ~lv_blood & ~cav.channel[sl] & ~cav.extended[sl]
    # epicardial fat in patches around the LV: bright, and not LA
    fat_shell = ellipsoid(qs, lvd["centre"], lvd["axes"], lvd["semi"] + lvd["myo"] + lvd["fat_mm"]) & ~lv_outer \
        & far[sl]
    fat_field = smooth_field(texture_rng, hb.points_view(sl, fat_shell), (20.0, 50.0), 8)
    if fat_field.size:
        fat_shell[fat_shell] = fat_field > np.float32(np.quantile(fat_field, 1.0 - lvd["fat_fraction"]))
    _paint(hi_img, fat_shell, anat.levels["fat"], sl)
    _paint(hi_img, myo, lvd["myo_level"], sl)
    pr = lvd["patch_radius"]
    patch = ellipsoid(qs, lvd["patch_centre"], np.eye(3), np.array([pr, pr, pr])) & myo & far[sl]
    _paint(hi_img, patch, lvd["patch_level"], sl)
    _paint(hi_img, lv_blood & (far[sl] | (cav.s_m[sl] > 0.5)), lvd["level"], sl)


def _paint_la(hi_img: np.ndarray, anat: Anatomy, cav: Cavity, wall: np.ndarray, wall_vals: np.ndarray) -> None:
    """The LA and its continuations, painted last so nothing else overlaps its labels."""
    _paint(hi_img, cav.vessel_wall, np.float32(anat.wall_ratio))
    _paint(hi_img, cav.lv_side_blood, anat.lv["level"])
    _paint(hi_img, cav.vein_cont, cav.vein_level[cav.vein_cont])
    hi_img[wall] = wall_vals
    _paint(hi_img, cav.la, np.float32(1.0))


def _bias_field(rng: np.random.Generator, geometry: Geometry, at_index: np.ndarray) -> tuple[np.ndarray, ...]:
    """A smooth multiplicative bias, separable along the image axes (coil sensitivity lives in the
    scanner frame), as three 1D factors broadcastable to (z, y, x), equal to 1 at `at_index`."""
    factors = []
    for axis in range(3):  # x, y, z
        # up to about +-10 % over a 400 mm field of view, a few % across the LA
        amp, lam, phase, slope = rng.uniform(0.04, 0.1), rng.uniform(400.0, 800.0), rng.uniform(0, 2 * np.pi), \
            rng.uniform(-0.04, 0.04) / 100.0
        t = np.arange(geometry.size[axis]) * geometry.spacing[axis]
        t0 = at_index[axis] * geometry.spacing[axis]
        f = amp * np.cos(2 * np.pi * t / lam + phase) + slope * t
        f0 = amp * np.cos(2 * np.pi * t0 / lam + phase) + slope * t0
        factors.append(np.exp(f - f0).astype(np.float32))
    fx, fy, fz = factors
    return fz[:, None, None], fy[None, :, None], fx[None, None, :]


def _bias_and_noise(img: np.ndarray, geometry: Geometry, anat: Anatomy, la_centroid_idx: np.ndarray,
                    noise_rng: np.random.Generator) -> np.ndarray:
    """The relative image scaled to the blood level, biased (1 at the LA's centroid), with Rician
    noise: the magnitude image. `img` is scaled in place and then consumed."""
    bz, by, bx = _bias_field(noise_rng, geometry, la_centroid_idx)
    B = np.float32(anat.blood_level)
    img *= B
    img *= bz
    img *= by
    img *= bx
    sigma = np.float32(anat.blood_level / anat.snr)
    n1 = noise_rng.standard_normal(geometry.shape, dtype=np.float32)
    n1 *= sigma
    n1 += img
    np.square(n1, out=n1)
    img = noise_rng.standard_normal(geometry.shape, dtype=np.float32)
    img *= sigma
    np.square(img, out=img)
    img += n1
    del n1
    np.sqrt(img, out=img)
    return img


# -------------------------------------------------------------------- labels and measurements
def _full_label(mask: np.ndarray, hb: Box, seed: int) -> Volume:
    arr = np.zeros(hb.geometry.shape, np.uint8)
    arr[hb.slices] = mask
    return Volume(arr, hb.geometry, f"phantom seed {seed}")


def _info(seed: int, full_fov: bool, anat: Anatomy, pose: Pose, hb: Box, cav: Cavity, wall: _Wall,
          scar: np.ndarray, scar_ratios: np.ndarray, img: np.ndarray, la_centroid_idx: np.ndarray) -> dict[str, Any]:
    """The phantom's `info`: what was drawn, and what is measured on the arrays."""
    geometry = hb.geometry
    la = cav.la
    voxel_ml = geometry.voxel_volume_mm3 / 1000.0
    n_wall, n_scar = int(wall.mask.sum()), int(scar.sum())
    bp_vals = img[hb.slices][blood_pool(la, geometry.spacing_zyx)]
    bp_mean, bp_sd = float(bp_vals.mean()), float(bp_vals.std())
    # veins measured: LA parts outside the body and the appendage, as separate components
    lab, n_comp = ndimage.label(la & ~cav.body & ~cav.laa)
    sizes = np.bincount(lab.ravel())[1:] if n_comp else np.zeros(0, int)
    n_veins = int(np.sum(sizes * voxel_ml * 1000.0 >= 20.0))
    centroid_mm = geometry.index_to_physical(la_centroid_idx[None, :])[0]
    return {
        "provenance": f"{PHANTOM_PROVENANCE} (LAScarSegLib.synth.phantom, seed {seed}): no real patient data",
        "seed": int(seed),
        "full_fov": bool(full_fov),
        "la_volume_ml": round(float(la.sum() * voxel_ml), 3),
        "la_volume_target_ml": round(anat.la_volume_target_ml, 3),
        "wall_thickness_mm": round(float(anat.wall_t0), 3),
        "wall_thickness_range_mm": [round(float(wall.thickness.min()), 3), round(float(wall.thickness.max()), 3)]
        if n_wall else [0.0, 0.0],
        "n_veins": n_veins,
        "veins": [{"name": v.name, "end_centre_mm": pose.to_lps(v.end_point),
                   "direction": pose.lps_direction(v.direction), "radius_mm": round(v.radius, 3)} for v in anat.veins],
        "mitral": {"centre_mm": pose.to_lps(anat.mitral_centre), "normal": pose.lps_direction(anat.mitral_normal),
                   "radius_mm": round(cav.r_open, 3)},
        "burden_pct": round(100.0 * n_scar / n_wall, 4) if n_wall else 0.0,
        "burden_target_pct": round(anat.burden_pct, 4),
        "wall_voxels": n_wall,
        "scar_voxels": n_scar,
        "snr": round(anat.snr, 4),
        "snr_measured": round(bp_mean / bp_sd, 4) if bp_sd > 0 else float("inf"),
        "blood_pool_level": round(anat.blood_level, 4),
        "blood_pool_mean": round(bp_mean, 4),
        "scar_ratio_mean": round(float(scar_ratios.mean()), 4) if n_scar else None,
        "wall_ratio": round(anat.wall_ratio, 4),
        "blur_sigma_mm": round(anat.blur_mm, 4),
        "pose_deg_xyz": [round(float(a), 3) for a in pose.angles],
        "la_centroid_mm": [round(float(c), 3) for c in centroid_mm],
        "geometry": geometry.as_dict(),
    }
