"""The phantom's anatomy: its frame, the shapes drawn in it, and the random draw of one patient.

The anatomy is defined in millimetres in an anatomical frame (x left, y posterior, z superior
before the random pose), placed into the image through `Geometry`, so any spacing, origin or
oblique direction gives the same patient. `Box` holds the frame coordinates of the voxels of an
index box, and the shape functions (`ellipsoid`, `cylinder`, `tapered_capsule`, `ellipse2`) test
them. `sample_anatomy` draws every number of one patient from the case's generator, in a fixed
order: the same generator state gives the same patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..core.image import Geometry
from .scar import BURDEN_PCT

LA_VOLUME_TARGET_ML = (60.0, 185.0)  # drawn target; the measured volume stays within 50-200 mL
SNR_RANGE = (6.0, 20.0)


# --------------------------------------------------------------------------------- vectors
def unit(v: Sequence[float]) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def rotation_matrix(deg_x: float, deg_y: float, deg_z: float) -> np.ndarray:
    """Rz @ Ry @ Rx for angles in degrees: the pose of the anatomy in LPS."""
    ax, ay, az = np.radians([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def perpendicular(n: np.ndarray, angle: float) -> np.ndarray:
    """A unit vector perpendicular to `n`, turned by `angle` (radians) about it."""
    a = unit(np.cross(n, [0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.cross(n, [1.0, 0.0, 0.0]))
    b = np.cross(n, a)
    return np.cos(angle) * a + np.sin(angle) * b


# ------------------------------------------------------------------------------ coordinates
def index_box(geometry: Geometry, rotation: np.ndarray, centre: np.ndarray, lo_mm: np.ndarray,
              hi_mm: np.ndarray, clip_lo: np.ndarray, clip_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds (x, y, z; upper exclusive) of the voxels that can lie in an axis-aligned box of
    the anatomical frame, clipped to [clip_lo, clip_hi) (empty when the box misses the image)."""
    corners = np.array([[x, y, z] for x in (lo_mm[0], hi_mm[0]) for y in (lo_mm[1], hi_mm[1])
                        for z in (lo_mm[2], hi_mm[2])])
    idx = geometry.physical_to_index(centre + corners @ rotation.T)
    lo = np.clip(np.floor(idx.min(axis=0)).astype(int), clip_lo, clip_hi)
    hi = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 1, lo, clip_hi)
    return lo, hi


class Box:
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
        lo, hi = index_box(self.geometry, self.rotation, self.centre, lo_mm, hi_mm, self.lo, self.hi)
        return tuple(slice(int(lo[a] - self.lo[a]), int(hi[a] - self.lo[a])) for a in (2, 1, 0))

    def view(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(c[sl] for c in self.q)

    def points_view(self, sl: tuple[slice, slice, slice], mask: np.ndarray) -> np.ndarray:
        """Frame coordinates (N, 3) of the voxels of a mask shaped like the sub-box `sl`."""
        return np.stack([c[sl][mask] for c in self.q], axis=1)

    def points(self, mask: np.ndarray) -> np.ndarray:
        """Frame coordinates (N, 3) of the voxels of a box-shaped mask."""
        return np.stack([c[mask] for c in self.q], axis=1)


# ----------------------------------------------------------------------------------- shapes
def ellipsoid(q, centre, axes: np.ndarray, semi) -> np.ndarray:
    """Inside an ellipsoid with unit axes (rows of `axes`) and semi-axes `semi` (mm)."""
    d = [q[a] - np.float32(centre[a]) for a in range(3)]
    acc = None
    for k in range(3):
        u = d[0] * np.float32(axes[k][0] / semi[k]) + d[1] * np.float32(axes[k][1] / semi[k]) \
            + d[2] * np.float32(axes[k][2] / semi[k])
        acc = u * u if acc is None else acc + u * u
    return acc <= 1.0


def axial_radial(q, start, direction) -> tuple[np.ndarray, np.ndarray]:
    """Position along a line (mm from `start`) and squared distance from it."""
    d = [q[a] - np.float32(start[a]) for a in range(3)]
    axial = d[0] * np.float32(direction[0]) + d[1] * np.float32(direction[1]) + d[2] * np.float32(direction[2])
    r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2] - axial * axial
    return axial, r2


def cylinder(q, start, direction, length: float, radius: float) -> np.ndarray:
    axial, r2 = axial_radial(q, start, direction)
    return (axial >= 0) & (axial <= length) & (r2 <= radius * radius)


def tapered_capsule(q, a, b, r_a: float, r_b: float) -> np.ndarray:
    """A rounded cone from `a` (radius r_a) to `b` (radius r_b): the appendage's lobes."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    length = float(np.linalg.norm(b - a))
    d = (b - a) / length
    axial, r2 = axial_radial(q, a, d)
    t = np.clip(axial / np.float32(length), 0.0, 1.0)
    # squared distance to the closest point of the segment
    dist2 = r2 + (axial - t * np.float32(length)) ** 2
    r = np.float32(r_a) + t * np.float32(r_b - r_a)
    return dist2 <= r * r


def ellipse2(q, centre, semi) -> np.ndarray:
    """Inside an elliptic cylinder along the frame's z axis."""
    return ((q[0] - np.float32(centre[0])) / np.float32(semi[0])) ** 2 + \
        ((q[1] - np.float32(centre[1])) / np.float32(semi[1])) ** 2 <= 1.0


def aabb(points: Sequence[np.ndarray], pad: float) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(points, dtype=float).reshape(-1, 3)
    return p.min(axis=0) - pad, p.max(axis=0) + pad


# --------------------------------------------------------------------------------- anatomy
@dataclass
class Vein:
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
class Body:
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
        u = unit(u)
        return self.semi * u * (1.0 + float(self.f(u[0], u[1], u[2])))

    def normal(self, u: np.ndarray) -> np.ndarray:
        """Outward normal of the (unperturbed) ellipsoid at the point of direction u."""
        return unit(unit(u) / self.semi)


@dataclass
class Anatomy:
    """Every random number of one case, drawn in a fixed order from the case's generator."""

    body: Body
    la_volume_target_ml: float
    veins: list[Vein]
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


# ------------------------------------------------------------------------ drawing a patient
def sample_anatomy(rng: np.random.Generator, la_volume_ml: float | None, wall_thickness_mm: float | None,
                   vary_thickness: bool, burden: float | None, snr: float | None) -> Anatomy:
    """Draw one patient. All draws happen whether or not an option overrides them, so forcing
    one option (say the burden) leaves the rest of the case unchanged.

    The steps below draw from `rng` in this order; reordering them changes every phantom."""
    body, v_target, k = _draw_body(rng, la_volume_ml)
    veins = _draw_veins(rng, body, k)
    laa = _draw_appendage(rng, body)
    n_mv, mitral_h, mitral_centre, channel_len = _draw_mitral_opening(rng, body.semi)
    lv = _draw_ventricle(rng, n_mv, mitral_centre, channel_len)
    ra, asc, desc = _draw_right_atrium_and_aorta(rng, body.semi)
    fat = _draw_fat(rng, body, n_mv, mitral_centre)
    torso, lungs, mediastinum, spine = _draw_chest(rng, body.semi, lv, ra, asc)
    appearance = _draw_appearance(rng, wall_thickness_mm, vary_thickness, burden, snr)
    return Anatomy(body=body, la_volume_target_ml=v_target, veins=veins, laa=laa, mitral_normal=n_mv,
                   mitral_h=mitral_h, mitral_centre=mitral_centre, channel_len=channel_len, lv=lv, ra=ra,
                   asc_aorta=asc, desc_aorta=desc, fat=fat, torso=torso,
                   lungs=lungs, mediastinum=mediastinum, spine=spine, **appearance)


def _draw_body(rng: np.random.Generator, la_volume_ml: float | None) -> tuple[Body, float, float]:
    """The LA body sized for the target volume; also that target (mL) and the body's scale (mm)."""
    u = rng.uniform
    # LA body: veins and appendage add about 9 mL, the mitral cap removes a little
    v_target = u(*LA_VOLUME_TARGET_ML)
    if la_volume_ml is not None:
        v_target = float(la_volume_ml)
    ratios = np.array([1.2, 0.85, 1.0]) * (1.0 + u(-0.08, 0.08, size=3))
    v_body = max(v_target - 9.0, 10.0) * 1000.0 / 0.98
    k = (v_body / (4.0 / 3.0 * np.pi * np.prod(ratios))) ** (1.0 / 3.0)
    semi = k * ratios
    modes = [(unit(rng.normal(size=3)), float(rng.integers(1, 3)), float(u(0.015, 0.045)), float(u(0, 2 * np.pi)))
             for _ in range(5)]
    return Body(semi, modes), v_target, k


def _draw_veins(rng: np.random.Generator, body: Body, k: float) -> list[Vein]:
    """The pulmonary veins: left/right x superior/inferior, leaving postero-laterally."""
    u = rng.uniform
    veins = []
    for name, sx, sz in (("LSPV", 1, 1), ("LIPV", 1, -1), ("RSPV", -1, 1), ("RIPV", -1, -1)):
        ud = np.array([sx * 0.68, 0.58, sz * (0.5 if sz > 0 else 0.38)]) + u(-0.1, 0.1, size=3)
        ud = unit(ud)
        ostium = body.surface(ud)
        normal = body.normal(ud)
        direction = unit(normal + np.array([0.15 * sx, 0.25, 0.2 * sz]) + u(-0.12, 0.12, size=3))
        # veins of a small atrium are narrower, so superior and inferior veins stay apart
        radius = (u(5.5, 8.0) if sz > 0 else u(5.0, 7.0)) * min(1.0, k / 30.0)
        veins.append(Vein(name, ostium, direction, float(radius), float(u(8.0, 15.0)), float(u(28.0, 45.0)),
                          float(u(0.95, 1.02))))
    return veins


def _draw_appendage(rng: np.random.Generator, body: Body) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                    float, float, float]:
    """The left atrial appendage: antero-superior-left, a finger that curls antero-laterally.

    Two tapered lobes p0-p1 and p1-p2 with radii r0, r1, r2: (p0, p1, p2, r0, r1, r2)."""
    u = rng.uniform
    ud = unit(np.array([0.55, -0.65, 0.45]) + u(-0.08, 0.08, size=3))
    o = body.surface(ud)
    d1 = unit(body.normal(ud) + np.array([0.2, -0.3, 0.2]) + u(-0.1, 0.1, size=3))
    p0 = o - 6.0 * d1
    p1 = o + u(8.0, 14.0) * d1
    d2 = unit(d1 + np.array([0.35, -0.45, -0.25]) + u(-0.15, 0.15, size=3))
    p2 = p1 + u(10.0, 16.0) * d2
    return (p0, p1, p2, float(u(7.0, 9.0)), float(u(5.5, 7.0)), float(u(3.0, 4.5)))


def _draw_mitral_opening(rng: np.random.Generator, semi: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, float]:
    """The mitral plane's normal, support distance and centre, and the inflow channel's length."""
    u = rng.uniform
    # mitral opening: antero-inferior-left; the plane cuts the body at 88 % of its support
    # distance, leaving an opening of about 15-20 mm radius centred on the section's centre
    n_mv = unit(np.array([0.35, -0.7, -0.6]) + u(-0.1, 0.1, size=3))
    h_max = float(np.sqrt(np.sum((semi * n_mv) ** 2)))
    mitral_h = 0.88 * h_max
    mitral_centre = mitral_h * semi ** 2 * n_mv / h_max ** 2  # centre of the ellipsoid's plane section
    channel_len = float(u(6.0, 10.0))
    return n_mv, mitral_h, mitral_centre, channel_len


def _draw_ventricle(rng: np.random.Generator, n_mv: np.ndarray, mitral_centre: np.ndarray,
                    channel_len: float) -> dict[str, Any]:
    """The LV: blood pool beyond the mitral channel, long axis toward the apex; its myocardium
    with an enhanced patch, and patchy epicardial fat."""
    u = rng.uniform
    e_lv = unit(n_mv + np.array([0.4, -0.1, 0.15]) + u(-0.08, 0.08, size=3))
    lv_long, lv_short, lv_myo = float(u(38.0, 48.0)), float(u(20.0, 26.0)), float(u(8.0, 11.0))
    lv_centre = mitral_centre + e_lv * (channel_len + lv_long)
    e2 = perpendicular(e_lv, u(0, 2 * np.pi))
    lv_axes = np.stack([e_lv, e2, np.cross(e_lv, e2)])
    patch_dir = perpendicular(e_lv, u(0, 2 * np.pi))
    patch_centre = lv_centre + patch_dir * (lv_short + lv_myo / 2) + e_lv * u(-0.4, 0.3) * lv_long
    return {"centre": lv_centre, "axes": lv_axes, "semi": np.array([lv_long, lv_short, lv_short]), "myo": lv_myo,
            "patch_centre": patch_centre, "patch_radius": float(u(7.0, 12.0)), "patch_level": float(u(1.3, 1.8)),
            "level": float(u(0.92, 1.05)), "myo_level": float(u(0.08, 0.2)),
            "fat_mm": float(u(2.0, 4.0)), "fat_fraction": float(u(0.15, 0.4))}


def _draw_right_atrium_and_aorta(rng: np.random.Generator, semi: np.ndarray) -> tuple[dict[str, Any], ...]:
    """The right atrium (right of the LA), the ascending aorta (anterior, its root "root") and the
    descending aorta (posterior): (ra, ascending, descending)."""
    u = rng.uniform
    a, b = semi[0], semi[1]
    ra_semi = np.array([u(20.0, 26.0), u(18.0, 24.0), u(22.0, 30.0)])
    ra = {"centre": np.array([-(a + u(5.0, 9.0) + ra_semi[0]), -u(8.0, 16.0), u(-2.0, 10.0)]), "semi": ra_semi,
          "level": float(u(0.92, 1.05))}
    r_asc = float(u(12.0, 15.0))
    asc_root = np.array([-u(2.0, 12.0), -(b + r_asc + u(4.0, 10.0)), -u(0.0, 10.0)])
    asc_dir = unit(np.array([-0.15, -0.3, 1.0]) + u(-0.1, 0.1, size=3))
    asc = {"start": asc_root - 8.0 * asc_dir, "dir": asc_dir, "len": 100.0, "radius": r_asc,
           "level": float(u(0.85, 1.0)), "root": asc_root}
    r_desc = float(u(9.0, 12.0))
    desc_c = np.array([u(0.1, 0.35) * a, b + r_desc + u(7.0, 12.0), 0.0])
    desc_dir = unit(np.array([u(-0.08, 0.08), u(-0.08, 0.08), 1.0]))
    desc = {"start": desc_c - 90.0 * desc_dir, "dir": desc_dir, "len": 180.0, "radius": r_desc,
            "level": float(u(0.85, 1.0))}
    return ra, asc, desc


def _draw_fat(rng: np.random.Generator, body: Body, n_mv: np.ndarray,
              mitral_centre: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Fat pads: three anterior of the LA and one beside the mitral opening, (centre, semi, level)."""
    u = rng.uniform
    fat = []
    for _ in range(3):
        ud = unit(np.array([rng.normal(), -abs(rng.normal()) * 0.8, rng.normal()]))
        centre = body.surface(ud) + ud * u(6.0, 12.0)
        fat.append((centre, u(3.0, 7.0, size=3), float(u(0.8, 1.2))))
    perp = perpendicular(n_mv, u(0, 2 * np.pi))
    fat.append((mitral_centre + perp * (0.55 * float(body.semi.max()) + u(8.0, 12.0)), u(3.0, 6.0, size=3),
                float(u(0.8, 1.2))))
    return fat


def _draw_chest(rng: np.random.Generator, semi: np.ndarray, lv: dict[str, Any], ra: dict[str, Any],
                asc: dict[str, Any]) -> tuple[dict[str, Any], list, tuple, tuple]:
    """Torso, lungs, mediastinum and spine: (torso, lungs, mediastinum, spine)."""
    u = rng.uniform
    a, b = semi[0], semi[1]
    # chest: sternum about 100 mm anterior of the LA, skin of the back about 140 mm posterior
    torso = {"centre": np.array([-u(0.0, 15.0), u(10.0, 25.0), 0.0]),
             "semi": np.array([u(125.0, 150.0), u(115.0, 130.0)]), "fat_mm": float(u(8.0, 18.0))}
    lungs = [(np.array([a + u(45.0, 60.0), u(10.0, 30.0), 0.0]),
              np.array([u(60.0, 75.0), u(75.0, 95.0), u(110.0, 130.0)])),
             (np.array([-(a + u(50.0, 65.0)), u(5.0, 25.0), 0.0]),
              np.array([u(60.0, 75.0), u(75.0, 95.0), u(110.0, 130.0)]))]
    # mediastinum: the lungs stop at an ellipse around the heart (LA, RA, LV with its myocardium)
    lv_centre, e_lv = lv["centre"], lv["axes"][0]
    lv_long, lv_short = lv["semi"][0], lv["semi"][1]
    lv_reach = lv_long + lv["myo"] + 4.0
    xy = np.array([[a, b], [-a, -b], [ra["centre"][0] - ra["semi"][0], ra["centre"][1]],
                   [lv_centre[0] + lv_reach * abs(e_lv[0]) + 0.5 * lv_short, lv_centre[1]],
                   [lv_centre[0], lv_centre[1] - lv_reach * abs(e_lv[1]) - 0.5 * lv_short],
                   [asc["root"][0], asc["root"][1] - asc["radius"]]])
    m_lo, m_hi = xy.min(axis=0), xy.max(axis=0)
    mediastinum = (np.array([*(m_lo + m_hi) / 2.0, 0.0]), (m_hi - m_lo) / 2.0 * 1.2 + u(4.0, 10.0))
    spine = (np.array([u(-10.0, 5.0), b + u(48.0, 60.0), 0.0]), float(u(15.0, 19.0)))
    return torso, lungs, mediastinum, spine


def _draw_appearance(rng: np.random.Generator, wall_thickness_mm: float | None, vary_thickness: bool,
                     burden: float | None, snr: float | None) -> dict[str, Any]:
    """Wall thickness, intensity ratios, scar burden, SNR, tissue levels, blood level and blur:
    the `Anatomy` fields from `wall_t0` on, by name."""
    u = rng.uniform
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
    return {"wall_t0": wall_t0, "wall_amp": wall_amp, "wall_ratio": wall_ratio, "scar_ratio": scar_ratio,
            "burden_pct": burden_pct, "snr": snr_v, "levels": levels,
            "blood_level": float(u(120.0, 300.0)), "blur_mm": float(u(0.3, 0.6))}
