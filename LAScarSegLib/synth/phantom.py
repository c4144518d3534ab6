"""Synthetic LGE-MRI phantoms of the left atrium with LA, wall and scar ground truth.

No real scar labels exist on the project's machines (METHOD-NOTES section 6), so scar work is
developed and tested on two kinds of synthetic scar, both made here:

- `make_phantom`: a whole synthetic LGE image: LA body, four pulmonary veins, appendage and the
  mitral opening; a 1-3 mm wall with confluent and discrete scar patches; bright confounders that
  are not LA (LV and aortic blood, right atrium, an enhanced LV-myocardium patch, fat), nulled
  myocardium, lungs, a smooth bias field, partial-volume blur and Rician noise.
- `paint_synthetic_scar`: scar painted with the same patch model into the wall band of a real LGE
  image that has an LA label only.

The anatomy is defined in millimetres in an anatomical frame (x left, y posterior, z superior
before the random pose), placed into the image through `Geometry`, so any spacing, origin or
oblique direction gives the same patient. Only the voxels in a box around the heart are
computed at full cost. Every number comes from a `numpy.random.Generator` seeded by `seed`: the
same seed gives identical arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..core.distance import DEFAULT_WALL_BAND_MM, distance_to, wall_band
from ..core.errors import InputError
from ..core.image import Geometry, Volume

UTAH_SIZE = (208, 208, 80)  # x, y, z: the network's crop on the Utah grid
FULL_FOV_SIZE = (640, 640, 88)
UTAH_SPACING = (0.625, 0.625, 1.25)  # mm, x, y, z

PHANTOM_PROVENANCE = "synthetic LGE phantom"
PAINT_PROVENANCE = "synthetic scar painted into the wall band of a real image"

LA_VOLUME_TARGET_ML = (60.0, 185.0)  # drawn target; the measured volume stays within 50-200 mL
WALL_THICKNESS_MM = (1.0, 3.0)
BURDEN_PCT = (0.0, 40.0)
SNR_RANGE = (6.0, 20.0)
SCAR_RATIO = (1.2, 2.0)  # scar / blood pool
WALL_RATIO = (0.8, 1.1)  # normal wall / blood pool
BLOOD_POOL_EROSION_MM = 3.0  # blood pool = LA eroded by this much (METHOD-NOTES section 4)


# ----------------------------------------------------------------------------------- results
@dataclass
class Phantom:
    """A synthetic LGE image and its ground truth, all on one grid (uint8 0/1 labels)."""

    image: Volume  # float32
    la: Volume  # LA cavity including the vein ostia
    wall: Volume  # LA wall, scar included
    scar: Volume  # subset of wall
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class PaintedScar:
    """A real image with synthetic scar painted into the wall band of its LA label."""

    image: Volume  # a new float32 volume; the input is never modified
    wall: Volume  # the wall band of the LA (LAScarSegLib.distance.wall_band)
    scar: Volume  # subset of wall
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------- helpers
def _unit(v: Sequence[float]) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _rotation(deg_x: float, deg_y: float, deg_z: float) -> np.ndarray:
    """Rz @ Ry @ Rx for angles in degrees: the pose of the anatomy in LPS."""
    ax, ay, az = np.radians([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _perpendicular(n: np.ndarray, angle: float) -> np.ndarray:
    """A unit vector perpendicular to `n`, turned by `angle` (radians) about it."""
    a = _unit(np.cross(n, [0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.cross(n, [1.0, 0.0, 0.0]))
    b = np.cross(n, a)
    return np.cos(angle) * a + np.sin(angle) * b


def _smooth_field(rng: np.random.Generator, points: np.ndarray, wavelength_mm: tuple[float, float],
                  n_modes: int = 16) -> np.ndarray:
    """A smooth random field of about unit variance at `points` (N, 3) mm: a sum of plane waves.

    Evaluated only at the points that need it (wall voxels), so no grid-sized filtering is done;
    the random draws do not depend on N, so the field is the same function for any grid.
    """
    k = rng.normal(size=(n_modes, 3))
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    k *= (2.0 * np.pi / rng.uniform(*wavelength_mm, size=n_modes))[:, None]
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n_modes)
    if len(points) == 0:
        return np.zeros(0, np.float32)
    arg = np.asarray(points, np.float32) @ k.T.astype(np.float32) + phase.astype(np.float32)
    return (np.sqrt(2.0 / n_modes) * np.cos(arg).sum(axis=1)).astype(np.float32)


# ------------------------------------------------------------------------------ coordinates
def _index_box(geometry: Geometry, rotation: np.ndarray, centre: np.ndarray, lo_mm: np.ndarray,
               hi_mm: np.ndarray, clip_lo: np.ndarray, clip_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds (x, y, z; upper exclusive) of the voxels that can lie in an axis-aligned box of
    the anatomical frame, clipped to [clip_lo, clip_hi) (empty when the box misses the image)."""
    corners = np.array([[x, y, z] for x in (lo_mm[0], hi_mm[0]) for y in (lo_mm[1], hi_mm[1])
                        for z in (lo_mm[2], hi_mm[2])])
    idx = geometry.physical_to_index(centre + corners @ rotation.T)
    lo = np.clip(np.floor(idx.min(axis=0)).astype(int), clip_lo, clip_hi)
    hi = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 1, lo, clip_hi)
    return lo, hi


class _Box:
    """Anatomical-frame coordinates (mm, float32) of the voxels in an index box of the image.

    Computed once per box as broadcast sums (the map from index to the frame is affine); the
    boxes of single structures are views into it (`sub`), so each structure costs only its own
    extent.
    """

    def __init__(self, geometry: Geometry, rotation: np.ndarray, centre: np.ndarray,
                 lo_idx: np.ndarray, hi_idx: np.ndarray) -> None:
        self.geometry, self.rotation, self.centre = geometry, rotation, centre
        self.lo, self.hi = np.asarray(lo_idx, int), np.asarray(hi_idx, int)  # x, y, z; hi exclusive
        m = rotation.T @ geometry.direction_matrix @ np.diag(geometry.spacing)
        q0 = rotation.T @ (np.asarray(geometry.origin) - centre)
        i, j, k = (np.arange(self.lo[a], self.hi[a], dtype=np.float64) for a in range(3))
        self.q = tuple(
            (q0[a] + m[a, 2] * k).astype(np.float32)[:, None, None] + (m[a, 1] * j).astype(np.float32)[None, :, None]
            + (m[a, 0] * i).astype(np.float32)[None, None, :]
            for a in range(3)
        )

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Where the box lies in the image array (z, y, x)."""
        return tuple(slice(int(self.lo[a]), int(self.hi[a])) for a in (2, 1, 0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.q[0].shape

    def sub(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[slice, slice, slice]:
        """Slices (relative to this box) of the voxels that can lie in a frame-aligned box."""
        lo, hi = _index_box(self.geometry, self.rotation, self.centre, lo_mm, hi_mm, self.lo, self.hi)
        return tuple(slice(int(lo[a] - self.lo[a]), int(hi[a] - self.lo[a])) for a in (2, 1, 0))

    def view(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(c[sl] for c in self.q)

    def points_view(self, sl: tuple[slice, slice, slice], mask: np.ndarray) -> np.ndarray:
        """Frame coordinates (N, 3) of the voxels of a mask shaped like the sub-box `sl`."""
        return np.stack([c[sl][mask] for c in self.q], axis=1)

    def points(self, mask: np.ndarray) -> np.ndarray:
        """Frame coordinates (N, 3) of the voxels of a box-shaped mask."""
        return np.stack([c[mask] for c in self.q], axis=1)


def _ellipsoid(q, centre, axes: np.ndarray, semi) -> np.ndarray:
    """Inside an ellipsoid with unit axes (rows of `axes`) and semi-axes `semi` (mm)."""
    d = [q[a] - np.float32(centre[a]) for a in range(3)]
    acc = None
    for k in range(3):
        u = d[0] * np.float32(axes[k][0] / semi[k]) + d[1] * np.float32(axes[k][1] / semi[k]) \
            + d[2] * np.float32(axes[k][2] / semi[k])
        acc = u * u if acc is None else acc + u * u
    return acc <= 1.0


def _axial_radial(q, start, direction) -> tuple[np.ndarray, np.ndarray]:
    """Position along a line (mm from `start`) and squared distance from it."""
    d = [q[a] - np.float32(start[a]) for a in range(3)]
    axial = d[0] * np.float32(direction[0]) + d[1] * np.float32(direction[1]) + d[2] * np.float32(direction[2])
    r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2] - axial * axial
    return axial, r2


def _cylinder(q, start, direction, length: float, radius: float) -> np.ndarray:
    axial, r2 = _axial_radial(q, start, direction)
    return (axial >= 0) & (axial <= length) & (r2 <= radius * radius)


def _tapered_capsule(q, a, b, r_a: float, r_b: float) -> np.ndarray:
    """A rounded cone from `a` (radius r_a) to `b` (radius r_b): the appendage's lobes."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    length = float(np.linalg.norm(b - a))
    d = (b - a) / length
    axial, r2 = _axial_radial(q, a, d)
    t = np.clip(axial / np.float32(length), 0.0, 1.0)
    # squared distance to the closest point of the segment
    dist2 = r2 + (axial - t * np.float32(length)) ** 2
    r = np.float32(r_a) + t * np.float32(r_b - r_a)
    return dist2 <= r * r


def _aabb(points: Sequence[np.ndarray], pad: float) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(points, dtype=float).reshape(-1, 3)
    return p.min(axis=0) - pad, p.max(axis=0) + pad


# --------------------------------------------------------------------------------- anatomy
@dataclass
class _Vein:
    name: str
    ostium: np.ndarray  # on the body surface, frame mm
    direction: np.ndarray
    radius: float
    cut_mm: float  # the LA label ends this far beyond the ostium
    length_mm: float  # blood continues (unlabelled) this far beyond the ostium
    level: float

    @property
    def start(self) -> np.ndarray:
        return self.ostium - 6.0 * self.direction  # starts inside the body, so the junction is closed

    @property
    def cut_axial(self) -> float:
        return 6.0 + self.cut_mm

    @property
    def end_point(self) -> np.ndarray:
        return self.ostium + self.cut_mm * self.direction


@dataclass
class _Body:
    """The LA body: an ellipsoid whose radius is modulated by a few smooth angular modes."""

    semi: np.ndarray  # semi-axes: left-right, antero-posterior, superior-inferior (mm)
    modes: list[tuple[np.ndarray, float, float, float]]  # (direction, order, weight, phase)

    def f(self, ux, uy, uz):
        """Relative radius change in unit-sphere direction (ux, uy, uz) (arrays or floats)."""
        out = 0.0
        for v, m, w, ph in self.modes:
            out = out + np.float32(w) * np.cos(np.float32(m * np.pi) * (
                ux * np.float32(v[0]) + uy * np.float32(v[1]) + uz * np.float32(v[2])) + np.float32(ph))
        return out

    def inside(self, q) -> np.ndarray:
        x, y, z = (q[a] / np.float32(self.semi[a]) for a in range(3))
        rho = np.sqrt(x * x + y * y + z * z) + np.float32(1e-6)
        return rho <= 1.0 + self.f(x / rho, y / rho, z / rho)

    def surface(self, u: np.ndarray) -> np.ndarray:
        """The surface point in unit-sphere direction u."""
        u = _unit(u)
        return self.semi * u * (1.0 + float(self.f(u[0], u[1], u[2])))

    def normal(self, u: np.ndarray) -> np.ndarray:
        """Outward normal of the (unperturbed) ellipsoid at the point of direction u."""
        return _unit(_unit(u) / self.semi)


@dataclass
class _Anatomy:
    """Every random number of one case, drawn in a fixed order from the case's generator."""

    body: _Body
    la_volume_target_ml: float
    veins: list[_Vein]
    laa: tuple[np.ndarray, np.ndarray, np.ndarray, float, float, float]
    mitral_normal: np.ndarray
    mitral_h: float
    mitral_centre: np.ndarray
    channel_len: float
    lv: dict[str, Any]
    ra: dict[str, Any]
    asc_aorta: dict[str, Any]
    desc_aorta: dict[str, Any]
    fat: list[tuple[np.ndarray, np.ndarray, float]]
    torso: dict[str, Any]
    lungs: list[tuple[np.ndarray, np.ndarray]]
    mediastinum: tuple[np.ndarray, np.ndarray]
    spine: tuple[np.ndarray, float]
    wall_t0: float
    wall_amp: float
    wall_ratio: float
    scar_ratio: float
    burden_pct: float
    snr: float
    blood_level: float
    blur_mm: float
    levels: dict[str, float]


def _sample_anatomy(rng: np.random.Generator, la_volume_ml: float | None, wall_thickness_mm: float | None,
                    vary_thickness: bool, burden: float | None, snr: float | None) -> _Anatomy:
    """Draw one patient. All draws happen whether or not an option overrides them, so forcing
    one option (say the burden) leaves the rest of the case unchanged."""
    u = rng.uniform
    # LA body: veins and appendage add about 9 mL, the mitral cap removes a little
    v_target = u(*LA_VOLUME_TARGET_ML)
    if la_volume_ml is not None:
        v_target = float(la_volume_ml)
    ratios = np.array([1.2, 0.85, 1.0]) * (1.0 + u(-0.08, 0.08, size=3))
    v_body = max(v_target - 9.0, 10.0) * 1000.0 / 0.98
    k = (v_body / (4.0 / 3.0 * np.pi * np.prod(ratios))) ** (1.0 / 3.0)
    semi = k * ratios
    modes = [(_unit(rng.normal(size=3)), float(rng.integers(1, 3)), float(u(0.015, 0.045)), float(u(0, 2 * np.pi)))
             for _ in range(5)]

    body = _Body(semi, modes)
    a, b = semi[0], semi[1]
    # pulmonary veins: left/right x superior/inferior, leaving postero-laterally
    veins = []
    for name, sx, sz in (("LSPV", 1, 1), ("LIPV", 1, -1), ("RSPV", -1, 1), ("RIPV", -1, -1)):
        ud = np.array([sx * 0.68, 0.58, sz * (0.5 if sz > 0 else 0.38)]) + u(-0.1, 0.1, size=3)
        ud = _unit(ud)
        ostium = body.surface(ud)
        normal = body.normal(ud)
        direction = _unit(normal + np.array([0.15 * sx, 0.25, 0.2 * sz]) + u(-0.12, 0.12, size=3))
        # veins of a small atrium are narrower, so superior and inferior veins stay apart
        radius = (u(5.5, 8.0) if sz > 0 else u(5.0, 7.0)) * min(1.0, k / 30.0)
        veins.append(_Vein(name, ostium, direction, float(radius), float(u(8.0, 15.0)), float(u(28.0, 45.0)),
                           float(u(0.95, 1.02))))
    # left atrial appendage: antero-superior-left, a finger that curls antero-laterally
    ud = _unit(np.array([0.55, -0.65, 0.45]) + u(-0.08, 0.08, size=3))
    o = body.surface(ud)
    d1 = _unit(body.normal(ud) + np.array([0.2, -0.3, 0.2]) + u(-0.1, 0.1, size=3))
    p0 = o - 6.0 * d1
    p1 = o + u(8.0, 14.0) * d1
    d2 = _unit(d1 + np.array([0.35, -0.45, -0.25]) + u(-0.15, 0.15, size=3))
    p2 = p1 + u(10.0, 16.0) * d2
    laa = (p0, p1, p2, float(u(7.0, 9.0)), float(u(5.5, 7.0)), float(u(3.0, 4.5)))
    # mitral opening: antero-inferior-left; the plane cuts the body at 88 % of its support
    # distance, leaving an opening of about 15-20 mm radius centred on the section's centre
    n_mv = _unit(np.array([0.35, -0.7, -0.6]) + u(-0.1, 0.1, size=3))
    h_max = float(np.sqrt(np.sum((semi * n_mv) ** 2)))
    mitral_h = 0.88 * h_max
    mitral_centre = mitral_h * semi ** 2 * n_mv / h_max ** 2  # centre of the ellipsoid's plane section
    channel_len = float(u(6.0, 10.0))
    # LV: blood pool beyond the mitral channel, long axis toward the apex
    e_lv = _unit(n_mv + np.array([0.4, -0.1, 0.15]) + u(-0.08, 0.08, size=3))
    lv_long, lv_short, lv_myo = float(u(38.0, 48.0)), float(u(20.0, 26.0)), float(u(8.0, 11.0))
    lv_centre = mitral_centre + e_lv * (channel_len + lv_long)
    e2 = _perpendicular(e_lv, u(0, 2 * np.pi))
    lv_axes = np.stack([e_lv, e2, np.cross(e_lv, e2)])
    patch_dir = _perpendicular(e_lv, u(0, 2 * np.pi))
    patch_centre = lv_centre + patch_dir * (lv_short + lv_myo / 2) + e_lv * u(-0.4, 0.3) * lv_long
    lv = {"centre": lv_centre, "axes": lv_axes, "semi": np.array([lv_long, lv_short, lv_short]), "myo": lv_myo,
          "patch_centre": patch_centre, "patch_radius": float(u(7.0, 12.0)), "patch_level": float(u(1.3, 1.8)),
          "level": float(u(0.92, 1.05)), "myo_level": float(u(0.08, 0.2)),
          "fat_mm": float(u(2.0, 4.0)), "fat_fraction": float(u(0.15, 0.4))}
    ra_semi = np.array([u(20.0, 26.0), u(18.0, 24.0), u(22.0, 30.0)])
    ra = {"centre": np.array([-(a + u(5.0, 9.0) + ra_semi[0]), -u(8.0, 16.0), u(-2.0, 10.0)]), "semi": ra_semi,
          "level": float(u(0.92, 1.05))}
    r_asc = float(u(12.0, 15.0))
    asc_root = np.array([-u(2.0, 12.0), -(b + r_asc + u(4.0, 10.0)), -u(0.0, 10.0)])
    asc_dir = _unit(np.array([-0.15, -0.3, 1.0]) + u(-0.1, 0.1, size=3))
    asc = {"start": asc_root - 8.0 * asc_dir, "dir": asc_dir, "len": 100.0, "radius": r_asc,
           "level": float(u(0.85, 1.0))}
    r_desc = float(u(9.0, 12.0))
    desc_c = np.array([u(0.1, 0.35) * a, b + r_desc + u(7.0, 12.0), 0.0])
    desc_dir = _unit(np.array([u(-0.08, 0.08), u(-0.08, 0.08), 1.0]))
    desc = {"start": desc_c - 90.0 * desc_dir, "dir": desc_dir, "len": 180.0, "radius": r_desc,
            "level": float(u(0.85, 1.0))}
    fat = []
    for _ in range(3):
        ud = _unit(np.array([rng.normal(), -abs(rng.normal()) * 0.8, rng.normal()]))
        centre = body.surface(ud) + ud * u(6.0, 12.0)
        fat.append((centre, u(3.0, 7.0, size=3), float(u(0.8, 1.2))))
    perp = _perpendicular(n_mv, u(0, 2 * np.pi))
    fat.append((mitral_centre + perp * (0.55 * float(semi.max()) + u(8.0, 12.0)), u(3.0, 6.0, size=3),
                float(u(0.8, 1.2))))
    # chest: sternum about 100 mm anterior of the LA, skin of the back about 140 mm posterior
    torso = {"centre": np.array([-u(0.0, 15.0), u(10.0, 25.0), 0.0]),
             "semi": np.array([u(125.0, 150.0), u(115.0, 130.0)]), "fat_mm": float(u(8.0, 18.0))}
    lungs = [(np.array([a + u(45.0, 60.0), u(10.0, 30.0), 0.0]),
              np.array([u(60.0, 75.0), u(75.0, 95.0), u(110.0, 130.0)])),
             (np.array([-(a + u(50.0, 65.0)), u(5.0, 25.0), 0.0]),
              np.array([u(60.0, 75.0), u(75.0, 95.0), u(110.0, 130.0)]))]
    # mediastinum: the lungs stop at an ellipse around the heart (LA, RA, LV with its myocardium)
    lv_reach = lv_long + lv_myo + 4.0
    xy = np.array([[a, b], [-a, -b], [ra["centre"][0] - ra_semi[0], ra["centre"][1]],
                   [lv_centre[0] + lv_reach * abs(e_lv[0]) + 0.5 * lv_short, lv_centre[1]],
                   [lv_centre[0], lv_centre[1] - lv_reach * abs(e_lv[1]) - 0.5 * lv_short],
                   [asc_root[0], asc_root[1] - r_asc]])
    m_lo, m_hi = xy.min(axis=0), xy.max(axis=0)
    mediastinum = (np.array([*(m_lo + m_hi) / 2.0, 0.0]), (m_hi - m_lo) / 2.0 * 1.2 + u(4.0, 10.0))
    spine = (np.array([u(-10.0, 5.0), b + u(48.0, 60.0), 0.0]), float(u(15.0, 19.0)))
    wall_t0 = float(u(1.2, 2.8))
    if wall_thickness_mm is not None:
        wall_t0 = float(wall_thickness_mm)
    wall_amp = float(u(0.15, 0.5))
    if not vary_thickness:
        wall_amp = 0.0
    wall_ratio = float(u(0.8, 1.05))
    scar_ratio = float(u(1.35, 1.85))
    burden_pct = float(u(*BURDEN_PCT))
    if burden is not None:
        burden_pct = float(burden)
    snr_v = float(u(*SNR_RANGE))
    if snr is not None:
        snr_v = float(snr)
    levels = {"background": float(u(0.3, 0.45)), "fat": float(u(0.75, 0.95)), "lung": float(u(0.03, 0.07)),
              "spine": float(u(0.35, 0.5)), "vessel_wall": float(u(0.3, 0.45))}
    return _Anatomy(body=body, la_volume_target_ml=v_target, veins=veins, laa=laa, mitral_normal=n_mv,
                    mitral_h=mitral_h, mitral_centre=mitral_centre, channel_len=channel_len, lv=lv, ra=ra,
                    asc_aorta=asc, desc_aorta=desc, fat=fat, torso=torso,
                    lungs=lungs, mediastinum=mediastinum, spine=spine, wall_t0=wall_t0, wall_amp=wall_amp,
                    wall_ratio=wall_ratio, scar_ratio=scar_ratio, burden_pct=burden_pct, snr=snr_v,
                    blood_level=float(u(120.0, 300.0)), blur_mm=float(u(0.3, 0.6)), levels=levels)


# ------------------------------------------------------------------------------- scar model
def _scar_patches(rng: np.random.Generator, points: np.ndarray, burden_pct: float, scar_ratio: float,
                  hotspots: Sequence[tuple[np.ndarray, float]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Choose scar among wall voxels (frame or physical mm, (N, 3)) and its intensity ratio.

    Confluent patches are the top of a coarse random field (wavelengths 18-45 mm), discrete spots
    the top of a fine one (4-9 mm) among the rest; `hotspots` (centre, sigma mm) raise the coarse
    field around the vein ostia as ablation lesions do. Taking exact top-k voxels makes the voxel
    burden equal to the request. The ratio to the blood pool is brighter in a patch's core than
    at its rim (a grey zone), within SCAR_RATIO. Returns (scar bool (N,), ratio float32 (N,)).
    """
    frac_large = rng.uniform(0.55, 0.9)
    hot_weight = rng.uniform(0.0, 1.5)
    coarse = _smooth_field(rng, points, (18.0, 45.0), 16)
    fine = _smooth_field(rng, points, (4.0, 9.0), 24)
    texture = _smooth_field(rng, points, (15.0, 40.0), 8)
    n = len(points)
    scar = np.zeros(n, bool)
    ratio = np.zeros(n, np.float32)
    n_scar = int(round(burden_pct / 100.0 * n))
    if n_scar <= 0:
        return scar, ratio
    for centre, sigma in hotspots:
        d2 = np.sum((points - np.asarray(centre, np.float32)) ** 2, axis=1)
        coarse += np.float32(hot_weight) * np.exp(-d2 / np.float32(2.0 * sigma * sigma))
    core = np.zeros(n, np.float32)
    n_large = int(round(frac_large * n_scar))
    if n_large > 0:
        top = np.argpartition(-coarse, n_large - 1)[:n_large]
        scar[top] = True
        core[top] = np.tanh((coarse[top] - coarse[top].min()) / 0.5)
    n_small = n_scar - n_large
    if n_small > 0:
        rest = np.flatnonzero(~scar)
        top = rest[np.argpartition(-fine[rest], n_small - 1)[:n_small]]
        scar[top] = True
        core[top] = np.tanh((fine[top] - fine[top].min()) / 0.5)
    ratio[scar] = np.clip(scar_ratio + 0.1 * texture[scar] + 0.3 * (core[scar] - 0.5), *SCAR_RATIO)
    return scar, ratio


# ------------------------------------------------------------------------------- the phantom
def _default_geometry(full_fov: bool, size, spacing, origin, direction) -> Geometry:
    size = tuple(int(s) for s in (size or (FULL_FOV_SIZE if full_fov else UTAH_SIZE)))
    spacing = tuple(float(s) for s in (spacing or UTAH_SPACING))
    origin = tuple(float(o) for o in (origin if origin is not None else (0.0, 0.0, 0.0)))
    direction = tuple(float(d) for d in (direction if direction is not None else np.eye(3).ravel()))
    dm = np.asarray(direction).reshape(3, 3)
    if not np.allclose(dm @ dm.T, np.eye(3), atol=1e-4):
        raise InputError(f"direction must be an orthonormal 3x3 matrix (row-major), got {list(direction)}")
    return Geometry(size, spacing, origin, direction)


def _ellipse2(q, centre, semi) -> np.ndarray:
    """Inside an elliptic cylinder along the frame's z axis."""
    return ((q[0] - np.float32(centre[0])) / np.float32(semi[0])) ** 2 + \
        ((q[1] - np.float32(centre[1])) / np.float32(semi[1])) ** 2 <= 1.0


def _paint_background(img: np.ndarray, geometry: Geometry, rotation: np.ndarray, centre: np.ndarray,
                      anat: _Anatomy) -> None:
    """Torso (subcutaneous fat, medium-dark tissue), lungs and spine; air (0) elsewhere.

    Only the torso's index box is visited, slab by slab along z to bound memory on the
    640x640x88 grid, and each structure only in its own sub-box of the slab."""
    levels = anat.levels
    tc, ts, tf = anat.torso["centre"], anat.torso["semi"], anat.torso["fat_mm"]
    mc, ms = anat.mediastinum
    sc, sr = anat.spine
    far_z = 1e4  # the torso, lungs' mediastinal cut and spine are cylinders along the frame's z
    size = np.asarray(geometry.size)
    t_lo, t_hi = _index_box(geometry, rotation, centre, np.array([tc[0] - ts[0], tc[1] - ts[1], -far_z]),
                            np.array([tc[0] + ts[0], tc[1] + ts[1], far_z]), np.zeros(3, int), size)
    step = max(1, int(4_000_000 // max(1, (t_hi[0] - t_lo[0]) * (t_hi[1] - t_lo[1]))))
    for z0 in range(int(t_lo[2]), int(t_hi[2]), step):  # slabs, not voxels
        box = _Box(geometry, rotation, centre, np.array([t_lo[0], t_lo[1], z0]),
                   np.array([t_hi[0], t_hi[1], min(int(t_hi[2]), z0 + step)]))
        out = img[box.slices]
        out[_ellipse2(box.q, tc, ts)] = levels["fat"]
        inner_semi = ts - tf
        out[_ellipse2(box.q, tc, inner_semi)] = levels["background"]
        for lc, lsemi in anat.lungs:
            sl = box.sub(lc - lsemi, lc + lsemi)
            q = box.view(sl)
            lung = _ellipsoid(q, lc, np.eye(3), lsemi) & ~_ellipse2(q, mc, ms) & _ellipse2(q, tc, inner_semi)
            out[sl][lung] = levels["lung"]
        sl = box.sub(np.array([sc[0] - sr, sc[1] - sr, -far_z]), np.array([sc[0] + sr, sc[1] + sr, far_z]))
        q = box.view(sl)
        out[sl][_ellipse2(q, sc, (sr, sr))] = levels["spine"]


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
    if burden is not None and not 0.0 <= float(burden) <= 100.0:
        raise InputError(f"burden is a percentage of wall voxels (0-100), got {burden}")
    if snr is not None and not float(snr) > 0:
        raise InputError(f"snr must be positive, got {snr}")
    if wall_thickness_mm is not None and not WALL_THICKNESS_MM[0] <= float(wall_thickness_mm) <= WALL_THICKNESS_MM[1]:
        raise InputError(f"wall_thickness_mm must be within {WALL_THICKNESS_MM} mm, got {wall_thickness_mm}")
    if la_volume_ml is not None and not 20.0 <= float(la_volume_ml) <= 400.0:
        raise InputError(f"la_volume_ml must be within 20-400 mL, got {la_volume_ml}")
    geometry = _default_geometry(full_fov, size, spacing, origin, direction)
    rng = np.random.default_rng(seed)
    anat = _sample_anatomy(rng, la_volume_ml, wall_thickness_mm, vary_thickness, burden, snr)
    semi = anat.body.semi

    # pose: small rotations about each LPS axis; the LA near the centre, or off centre in a full FOV
    angles = rng.uniform(-1, 1, size=3) * np.array([12.0, 12.0, 20.0])
    rotation = _rotation(*angles)
    jitter = rng.uniform(-5.0, 5.0, size=3)
    full_offset = np.array([rng.choice([-1.0, 1.0]) * rng.uniform(25.0, 40.0), rng.uniform(-5.0, 20.0),
                            rng.uniform(-8.0, 8.0)])
    image_centre = geometry.index_to_physical((np.asarray(geometry.size, float)[None, :] - 1.0) / 2.0)[0]
    if full_fov:
        # the FOV is placed on the chest, not on the LA: the LA lies 25-45 mm from the centre
        centre = image_centre + full_offset
    else:
        centre = image_centre + jitter
    texture_rng = np.random.default_rng([seed, 1])  # random fields (wall, scar, fat): own stream
    noise_rng = np.random.default_rng([seed, 2])  # bias field and noise

    levels = anat.levels
    img = np.zeros(geometry.shape, np.float32)
    _paint_background(img, geometry, rotation, centre, anat)

    # ---------------------------------------------------------------- the heart box
    body_reach = semi * (1.0 + sum(w for _, _, w, _ in anat.body.modes))
    la_pts = [body_reach, -body_reach]
    for v in anat.veins:
        far_end = v.ostium + v.length_mm * v.direction
        la_pts += [far_end + v.radius + 4, far_end - v.radius - 4]
    p0, p1, p2, r0, r1, r2 = anat.laa
    la_pts += [p1 + r1 + 4, p1 - r1 - 4, p2 + r2 + 4, p2 - r2 - 4]
    la_lo, la_hi = _aabb(la_pts, 5.0)
    lvd = anat.lv
    ext = lvd["semi"][0] + lvd["myo"] + lvd["fat_mm"]
    heart_pts = [la_lo, la_hi, lvd["centre"] + ext, lvd["centre"] - ext,
                 anat.ra["centre"] + anat.ra["semi"] + 3, anat.ra["centre"] - anat.ra["semi"] - 3]
    for ao in (anat.asc_aorta, anat.desc_aorta):
        for p in (ao["start"], ao["start"] + ao["len"] * ao["dir"]):
            heart_pts += [p + ao["radius"] + 3, p - ao["radius"] - 3]
    for fc, fs, _ in anat.fat:
        heart_pts += [fc + fs, fc - fs]
    h_lo, h_hi = _aabb(heart_pts, 2.0)
    lo_idx, hi_idx = _index_box(geometry, rotation, centre, h_lo, h_hi, np.zeros(3, int), np.asarray(geometry.size))
    hb = _Box(geometry, rotation, centre, lo_idx, hi_idx)
    n_mv, h_mv = anat.mitral_normal, anat.mitral_h

    # ---------------------------------------------------------------- LA cavity and its extension
    shape = hb.shape
    mitral_centre = anat.mitral_centre
    la_sl = hb.sub(la_lo, la_hi)
    ql = hb.view(la_sl)
    body = np.zeros(shape, bool)
    body[la_sl] = anat.body.inside(ql)
    # position across the mitral plane (> 0 on the LV side) and squared distance from its axis
    s_m = np.full(shape, -np.inf, np.float32)
    r2_m = np.full(shape, np.inf, np.float32)
    s_m[la_sl], r2_m[la_sl] = _axial_radial(ql, mitral_centre, n_mv)
    laa = np.zeros(shape, bool)
    laa_sl = hb.sub(*_aabb([p0, p1, p2], r0 + 1))
    laa[laa_sl] = _tapered_capsule(hb.view(laa_sl), p0, p1, r0, r1) | _tapered_capsule(hb.view(laa_sl), p1, p2, r1, r2)
    vein_cut = np.zeros(shape, bool)
    vein_cont = np.zeros(shape, bool)
    vessel_wall = np.zeros(shape, bool)  # the veins' own wall beyond the label's cut: unlabelled
    vein_level = np.zeros(shape, np.float32)
    for v in anat.veins:
        end = v.ostium + v.length_mm * v.direction
        sl = hb.sub(*_aabb([v.start, end], v.radius + 4))
        axial, r2v = _axial_radial(hb.view(sl), v.start, v.direction)
        tube = (axial >= 0) & (r2v <= v.radius ** 2)
        vein_cut[sl] |= tube & (axial <= v.cut_axial)
        along = (axial > v.cut_axial) & (axial <= 6.0 + v.length_mm)
        cont = tube & along
        vein_cont[sl] |= cont
        vessel_wall[sl] |= along & (r2v > v.radius ** 2) & (r2v <= (v.radius + anat.wall_t0) ** 2)
        vein_level[sl][cont] = v.level
    union = body | laa | vein_cut
    # the mitral opening: the body's section by the plane; beyond it (LV side) is not LA
    face = body & (np.abs(s_m) <= 1.0)
    r_face = float(np.sqrt(r2_m[face].max())) if face.any() else 0.3 * h_mv
    r_open = r_face + 2.0
    la = union & ~((s_m > 0) & (r2_m <= r_open ** 2))
    vein_cont &= ~la
    if not la.any():
        raise InputError(f"phantom seed {seed}: the LA lies outside the grid ({geometry.describe()})")
    # mitral inflow: the face extruded 3 mm, then a funnel into the LV where its blood pool is wide
    e_lv = lvd["axes"][0]
    ch_end = lvd["centre"] - 0.5 * lvd["semi"][0] * e_lv
    r_end = 0.8 * lvd["semi"][1]
    ch_sl = hb.sub(*_aabb([mitral_centre, ch_end], max(r_open, r_end) + 1))
    qc = hb.view(ch_sl)
    s_c, _ = _axial_radial(qc, mitral_centre, n_mv)
    extruded = anat.body.inside(tuple(qc[a] - s_c * np.float32(n_mv[a]) for a in range(3))) & (s_c <= 3.0)
    funnel = _tapered_capsule(qc, mitral_centre + 2.0 * n_mv, ch_end, 0.6 * r_face, r_end)
    channel = np.zeros(shape, bool)
    channel[ch_sl] = (extruded | funnel) & (s_c > 0)
    del qc, s_c, extruded, funnel
    lv_side_blood = (channel | union) & ~la & ~vein_cont  # the body's cap beyond the plane is LV inflow
    cav_ext = la | vein_cont | lv_side_blood

    # ---------------------------------------------------------------- wall: a shell of 1-3 mm
    spacing_zyx = geometry.spacing_zyx
    half_vox = 0.5 * min(geometry.spacing)  # the surface lies half a voxel beyond LA voxel centres
    min_tau = max(geometry.spacing) + 1e-3  # every 6-neighbour of the LA is wall: a closed shell
    tau_max = max(WALL_THICKNESS_MM[1] + half_vox, min_tau)
    # distances are only needed within a few mm of the LA: computed in its bounding box
    lo_b, hi_b = _mask_bounds(la)
    margin = np.ceil((tau_max + 2.5) / np.asarray(spacing_zyx)).astype(int)
    d_box = tuple(slice(int(max(a - m, 0)), int(min(b + m, n))) for a, b, m, n in zip(lo_b, hi_b, margin, shape))
    d_la = np.full(shape, np.inf, np.float32)
    d_la[d_box] = distance_to(la[d_box], spacing_zyx)
    cand = (~cav_ext) & (d_la <= tau_max)
    pts = hb.points(cand)
    t_field = _smooth_field(texture_rng, pts, (30.0, 70.0), 12)
    thickness = np.clip(anat.wall_t0 + anat.wall_amp * np.clip(t_field, -1.0, 1.0), *WALL_THICKNESS_MM)
    tau = np.maximum(thickness + half_vox, min_tau)
    shell = d_la[cand] <= tau
    # no wall across the vein ends (the label's cut) nor across the mitral opening
    open_end = np.zeros(len(pts), bool)
    for v in anat.veins:
        ax = (pts - v.start) @ v.direction
        r2v = np.sum((pts - v.start) ** 2, axis=1) - ax ** 2
        open_end |= (ax > v.cut_axial) & (r2v <= (v.radius + tau_max + 1.0) ** 2)
    rel = pts - mitral_centre
    s_p = rel @ n_mv
    open_end |= (s_p > 0) & (np.sum(rel ** 2, axis=1) - s_p ** 2 <= (r_open + 1.0) ** 2)
    wall_c = shell & ~open_end
    wall = np.zeros(shape, bool)
    wall[cand] = wall_c
    vessel_wall &= ~cav_ext
    wall_thickness = thickness[wall_c]

    # ---------------------------------------------------------------- scar
    wall_pts = pts[wall_c]
    hotspots = [(v.ostium, v.radius + 4.0) for v in anat.veins]
    scar_w, ratio_w = _scar_patches(texture_rng, wall_pts, anat.burden_pct, anat.scar_ratio, hotspots)
    wall_tex = _smooth_field(texture_rng, wall_pts, (6.0, 20.0), 12)
    wall_vals = np.clip(anat.wall_ratio + 0.03 * wall_tex, *WALL_RATIO).astype(np.float32)
    wall_vals[scar_w] = ratio_w[scar_w]
    scar = np.zeros(shape, bool)
    scar[wall] = scar_w

    # ---------------------------------------------------------------- confounders, then the LA
    hi_img = img[hb.slices]
    far = d_la > np.float32(tau_max + 1.5)  # bright structures never touch the labelled wall
    eye = np.eye(3)

    def paint(mask: np.ndarray, value, sl=None) -> None:
        if sl is None:
            hi_img[mask] = value
        else:
            hi_img[sl][mask] = value

    for ao in (anat.desc_aorta, anat.asc_aorta):
        end = ao["start"] + ao["len"] * ao["dir"]
        sl = hb.sub(*_aabb([ao["start"], end], ao["radius"] + 3))
        qs = hb.view(sl)
        paint(_cylinder(qs, ao["start"], ao["dir"], ao["len"], ao["radius"] + 1.5) & far[sl], levels["vessel_wall"], sl)
        paint(_cylinder(qs, ao["start"], ao["dir"], ao["len"], ao["radius"]) & far[sl], ao["level"], sl)
    ra = anat.ra
    sl = hb.sub(ra["centre"] - ra["semi"] - 3, ra["centre"] + ra["semi"] + 3)
    qs = hb.view(sl)
    paint(_ellipsoid(qs, ra["centre"], eye, ra["semi"] + 2.0) & far[sl], levels["vessel_wall"], sl)
    paint(_ellipsoid(qs, ra["centre"], eye, ra["semi"]) & far[sl], ra["level"], sl)
    for fc, fs, level in anat.fat:
        sl = hb.sub(fc - fs, fc + fs)
        paint(_ellipsoid(hb.view(sl), fc, eye, fs) & far[sl], level, sl)
    sl = hb.sub(lvd["centre"] - ext, lvd["centre"] + ext)
    qs = hb.view(sl)
    lv_blood = _ellipsoid(qs, lvd["centre"], lvd["axes"], lvd["semi"])
    lv_outer = _ellipsoid(qs, lvd["centre"], lvd["axes"], lvd["semi"] + lvd["myo"])
    myo = lv_outer & ~lv_blood & ~channel[sl] & ~cav_ext[sl]
    # epicardial fat in patches around the LV: bright, and not LA
    fat_shell = _ellipsoid(qs, lvd["centre"], lvd["axes"], lvd["semi"] + lvd["myo"] + lvd["fat_mm"]) & ~lv_outer \
        & far[sl]
    fat_field = _smooth_field(texture_rng, hb.points_view(sl, fat_shell), (20.0, 50.0), 8)
    if fat_field.size:
        fat_shell[fat_shell] = fat_field > np.float32(np.quantile(fat_field, 1.0 - lvd["fat_fraction"]))
    paint(fat_shell, levels["fat"], sl)
    paint(myo, lvd["myo_level"], sl)
    pr = lvd["patch_radius"]
    patch = _ellipsoid(qs, lvd["patch_centre"], eye, np.array([pr, pr, pr])) & myo & far[sl]
    paint(patch, lvd["patch_level"], sl)
    paint(lv_blood & (far[sl] | (s_m[sl] > 0.5)), lvd["level"], sl)
    # the LA and its continuations last, so nothing else overlaps its labels
    paint(vessel_wall, np.float32(anat.wall_ratio))
    paint(lv_side_blood, lvd["level"])
    paint(vein_cont, vein_level[vein_cont])
    hi_img[wall] = wall_vals
    paint(la, np.float32(1.0))

    # ---------------------------------------------------------------- partial volume, bias, noise
    sigma_vox = [anat.blur_mm / sp for sp in spacing_zyx]
    hi_img[...] = ndimage.gaussian_filter(hi_img, sigma_vox, mode="nearest", truncate=3.0)
    la_centroid_idx = np.array([float(np.mean(i)) for i in np.nonzero(la)])[::-1] + hb.lo  # x, y, z in the image
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

    # ---------------------------------------------------------------- labels and measurements
    def full_label(mask: np.ndarray) -> Volume:
        arr = np.zeros(geometry.shape, np.uint8)
        arr[hb.slices] = mask
        return Volume(arr, geometry, f"phantom seed {seed}")

    la_v, wall_v, scar_v = full_label(la), full_label(wall), full_label(scar)
    voxel_ml = geometry.voxel_volume_mm3 / 1000.0
    n_wall, n_scar = int(wall.sum()), int(scar.sum())
    bp_vals = img[hb.slices][_blood_pool(la, spacing_zyx)]
    bp_mean, bp_sd = float(bp_vals.mean()), float(bp_vals.std())
    # veins measured: LA parts outside the body and the appendage, as separate components
    lab, n_comp = ndimage.label(la & ~body & ~laa)
    sizes = np.bincount(lab.ravel())[1:] if n_comp else np.zeros(0, int)
    n_veins = int(np.sum(sizes * voxel_ml * 1000.0 >= 20.0))
    centroid_mm = geometry.index_to_physical(la_centroid_idx[None, :])[0]

    def to_lps(p: np.ndarray) -> list[float]:
        return [round(float(c), 3) for c in (centre + rotation @ np.asarray(p, float))]

    info: dict[str, Any] = {
        "provenance": f"{PHANTOM_PROVENANCE} (LAScarSegLib.phantom, seed {seed}): no real patient data",
        "seed": int(seed),
        "full_fov": bool(full_fov),
        "la_volume_ml": round(float(la.sum() * voxel_ml), 3),
        "la_volume_target_ml": round(anat.la_volume_target_ml, 3),
        "wall_thickness_mm": round(float(anat.wall_t0), 3),
        "wall_thickness_range_mm": [round(float(wall_thickness.min()), 3), round(float(wall_thickness.max()), 3)]
        if n_wall else [0.0, 0.0],
        "n_veins": n_veins,
        "veins": [{"name": v.name, "end_centre_mm": to_lps(v.end_point), "direction": _lps_dir(rotation, v.direction),
                   "radius_mm": round(v.radius, 3)} for v in anat.veins],
        "mitral": {"centre_mm": to_lps(mitral_centre), "normal": _lps_dir(rotation, n_mv),
                   "radius_mm": round(r_open, 3)},
        "burden_pct": round(100.0 * n_scar / n_wall, 4) if n_wall else 0.0,
        "burden_target_pct": round(anat.burden_pct, 4),
        "wall_voxels": n_wall,
        "scar_voxels": n_scar,
        "snr": round(anat.snr, 4),
        "snr_measured": round(bp_mean / bp_sd, 4) if bp_sd > 0 else float("inf"),
        "blood_pool_level": round(anat.blood_level, 4),
        "blood_pool_mean": round(bp_mean, 4),
        "scar_ratio_mean": round(float(ratio_w[scar_w].mean()), 4) if n_scar else None,
        "wall_ratio": round(anat.wall_ratio, 4),
        "blur_sigma_mm": round(anat.blur_mm, 4),
        "pose_deg_xyz": [round(float(a), 3) for a in angles],
        "la_centroid_mm": [round(float(c), 3) for c in centroid_mm],
        "geometry": geometry.as_dict(),
    }
    info["seconds"] = round(time.perf_counter() - t_start, 3)
    return Phantom(Volume(img, geometry, f"phantom seed {seed}"), la_v, wall_v, scar_v, info)


def _lps_dir(rotation: np.ndarray, d: np.ndarray) -> list[float]:
    return [round(float(c), 5) for c in rotation @ np.asarray(d, float)]


def _mask_bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds (lower, upper exclusive) of a non-empty mask along each array axis."""
    lo, hi = [], []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo.append(int(hit[0]) if hit.size else 0)
        hi.append(int(hit[-1]) + 1 if hit.size else 0)
    return np.array(lo), np.array(hi)


def _blood_pool(la: np.ndarray, spacing_zyx) -> np.ndarray:
    """LA voxels deeper than BLOOD_POOL_EROSION_MM (the whole LA if none is that deep).

    Computed in the LA's bounding box plus a margin, where the distance transform is cheap."""
    if not la.any():
        return la.copy()
    lo, hi = _mask_bounds(la)
    lo = np.maximum(lo - 2, 0)
    hi = np.minimum(hi + 2, la.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    sub = la[sl]
    padded = np.pad(sub, 1)  # outside the image counts as outside the LA
    deep = (distance_to(~padded, spacing_zyx) > BLOOD_POOL_EROSION_MM)[1:-1, 1:-1, 1:-1] & sub
    if not deep.any():
        deep = sub
    out = np.zeros_like(la)
    out[sl] = deep
    return out


# ------------------------------------------------------------------- scar in a real image
def paint_synthetic_scar(image: Volume, la: Volume, seed: int, *, burden: float | None = None,
                         wall_band_mm: float = DEFAULT_WALL_BAND_MM) -> PaintedScar:
    """Paint synthetic scar into the wall band of a real LGE image that has an LA label only.

    The wall is `wall_band(la, wall_band_mm)`; scar patches come from the phantom's patch model
    (confluent and discrete, exact voxel burden; `burden` in percent, default drawn from 0-40 %).

    Intensity. The la2018 images are z-scored, so their zero is the volume mean, not zero signal,
    and a plain `ratio * blood-pool mean` would be wrong (even negative). Ratios are therefore
    taken above an estimated zero-signal level z0, the 0.5th intensity percentile (air and lung,
    about -0.65 in la2018): a scar voxel becomes z0 + ratio * (bp_mean - z0) + e, with ratio in
    1.2-2.0 (the image intensity ratio, IIR, in original units as far as z0 is right) and e a
    random texture with the blood pool's SD and a 1.5-4 mm correlation length, so painted scar
    is as noisy as the blood pool without white-noise speckle the real images do not have. The blood pool is
    the LA eroded by 3 mm. For an image with a true zero (raw magnitudes) z0 is close to it.
    Only scar voxels change; the input arrays are never modified.
    """
    if not image.geometry.same_grid(la.geometry):
        raise InputError(f"{la.source or 'LA label'}: label grid differs from the image {image.source or ''}: "
                         f"label {la.geometry.describe()}; image {image.geometry.describe()}")
    if burden is not None and not 0.0 <= float(burden) <= 100.0:
        raise InputError(f"burden is a percentage of wall voxels (0-100), got {burden}")
    la_mask = np.asarray(la.array)
    values = np.unique(la_mask)
    if not np.all(np.isin(values, (0, 1))):
        raise InputError(f"{la.source or 'LA label'}: LA must be a 0/1 mask, found values {values[:10].tolist()}")
    la_mask = la_mask.astype(bool)
    if not la_mask.any():
        raise InputError(f"{la.source or 'LA label'}: LA label is empty; no wall to paint scar into")
    src = np.asarray(image.array, dtype=np.float32)
    rng = np.random.default_rng([seed, 7])
    burden_pct = float(rng.uniform(*BURDEN_PCT))
    if burden is not None:
        burden_pct = float(burden)
    scar_ratio = float(rng.uniform(1.35, 1.85))

    wall_v = wall_band(la.with_array(la_mask.astype(np.uint8)), wall_band_mm)
    wall = wall_v.array.astype(bool)
    bp = _blood_pool(la_mask, image.spacing_zyx)
    bp_vals = src[bp]
    bp_mean, bp_sd = float(bp_vals.mean()), float(bp_vals.std())
    z0 = float(np.percentile(src, 0.5))
    if not bp_mean > z0:
        raise InputError(f"{image.source or 'image'}: blood-pool mean {bp_mean:.4g} is not above the image's "
                         f"zero-signal level {z0:.4g}; this does not look like an LGE image")
    idx = np.nonzero(wall)
    pts = image.geometry.index_to_physical(np.stack([idx[2], idx[1], idx[0]], axis=1).astype(float))
    scar_w, ratio_w = _scar_patches(rng, pts, burden_pct, scar_ratio)
    # texture: spatially correlated like the real image's (1.5-4 mm), SD of the blood pool
    noise = _smooth_field(rng, pts[scar_w], (1.5, 4.0), 24)
    out = src.copy()  # never the caller's array, whatever its dtype was
    sel = tuple(i[scar_w] for i in idx)
    out[sel] = np.float32(z0) + ratio_w[scar_w] * np.float32(bp_mean - z0) + np.float32(bp_sd) * noise
    scar = np.zeros(wall.shape, np.uint8)
    scar[sel] = 1
    n_wall, n_scar = int(wall.sum()), int(scar_w.sum())
    info: dict[str, Any] = {
        "provenance": f"{PAINT_PROVENANCE} (LAScarSegLib.phantom.paint_synthetic_scar, seed {seed}); "
                      f"image: {image.source or 'in memory'}",
        "seed": int(seed),
        "wall_band_mm": float(wall_band_mm),
        "burden_pct": round(100.0 * n_scar / n_wall, 4) if n_wall else 0.0,
        "burden_target_pct": round(burden_pct, 4),
        "wall_voxels": n_wall,
        "scar_voxels": n_scar,
        "blood_pool_mean": round(bp_mean, 5),
        "blood_pool_sd": round(bp_sd, 5),
        "zero_level": round(z0, 5),
        "scar_ratio_mean": round(float(ratio_w[scar_w].mean()), 4) if n_scar else None,
        "intensity_model": "z0 + ratio * (blood_pool_mean - z0) + texture (SD blood_pool_sd, 1.5-4 mm); "
                           "z0 = 0.5th intensity percentile",
    }
    return PaintedScar(image.with_array(out), wall_v, Volume(scar, image.geometry, image.source), info)


