"""Training targets on the model grid, patch sampling and batch augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from LAScarSegLib.core.datasets import Case
from LAScarSegLib.core.distance import wall_band
from LAScarSegLib.core.errors import InputError
from LAScarSegLib.core.image import Geometry, Volume
from LAScarSegLib.train.training_data import CHANNELS, Augmentation, augment, batch_to_inputs, crop, prepare_case, sample_batch, sample_centre

GEOM = Geometry((80, 72, 40), (0.625, 0.625, 1.25), (10.0, -20.0, 5.0))


def sphere_case(with_scar: bool = True) -> Case:
    z, y, x = np.indices(GEOM.shape, dtype=float)
    sz, sy, sx = GEOM.spacing_zyx
    r = np.sqrt(((z - 20) * sz) ** 2 + ((y - 36) * sy) ** 2 + ((x - 40) * sx) ** 2)
    la = Volume((r <= 12).astype(np.uint8), GEOM, "la")
    rng = np.random.default_rng(0)
    img = Volume((100 * (r <= 12) + 30 + rng.normal(0, 5, GEOM.shape)).astype(np.float32), GEOM, "img")
    wall = wall_band(la, 2.5)
    scar = wall.with_array((wall.array.astype(bool) & (x > 44)).astype(np.uint8)) if with_scar else None
    return Case("sphere", img, la, wall if with_scar else None, scar, {"la": "manual"})


def test_prepare_case_targets_on_model_grid() -> None:
    tc = prepare_case(sphere_case(), (1.25, 1.25, 1.25))
    assert tc.shape == (40, 36, 40) and tc.spacing_zyx == (1.25, 1.25, 1.25)
    a = tc.arrays
    assert set(a) == set(CHANNELS)
    assert abs(float(a["image"].mean())) < 1e-3 and abs(float(a["image"].std()) - 1) < 1e-3
    la = a["la"].astype(bool)
    assert (a["phi"][la] <= 0).all() and (a["phi"][~la] > 0).all()
    assert not (a["wall"].astype(bool) & la).any()
    assert (a["scar"] <= a["wall"]).all() and a["scar"].any()
    assert (a["p_scar"][a["scar"].astype(bool)] == 1).all()
    assert a["m1"].any() and tc.boundary_index.size == a["m1"].sum()
    assert np.isfinite(a["phi"]).all()


def test_prepare_case_without_scar_gives_zero_scar_target() -> None:
    tc = prepare_case(sphere_case(with_scar=False), (1.25, 1.25, 1.25))
    assert not tc.has_scar and not tc.arrays["scar"].any()
    assert (tc.arrays["p_scar"] == 0).all() and tc.arrays["wall"].any()  # wall band stands in
    with pytest.raises(InputError, match="needs an LA label"):
        prepare_case(Case("x", sphere_case().image), (1.25, 1.25, 1.25))


def test_crop_pads_past_the_edges_consistently() -> None:
    tc = prepare_case(sphere_case(), (1.25, 1.25, 1.25))
    patch = crop(tc, (0, 0, 0), (16, 16, 16))  # centred on the corner: 8 voxels of padding each way
    assert patch.shape == (len(CHANNELS), 16, 16, 16)
    img = patch[CHANNELS.index("image")]
    assert (img[:8] == tc.arrays["image"].min()).all()
    np.testing.assert_array_equal(img[8:, 8:, 8:], tc.arrays["image"][:8, :8, :8])
    phi = patch[CHANNELS.index("phi")]
    np.testing.assert_array_equal(phi[:8, 8, 8], np.full(8, tc.arrays["phi"][0, 0, 0]))  # edge-extended
    assert (patch[CHANNELS.index("la")][:8] == 0).all()


def test_sampling_keeps_the_la_in_view_and_is_deterministic() -> None:
    tc = prepare_case(sphere_case(), (1.25, 1.25, 1.25))
    rng = np.random.default_rng(1)
    centres = [sample_centre(tc, (16, 16, 16), rng, la_focus=1.0) for _ in range(50)]
    assert all(tc.arrays["m1"][c] for c in centres)
    b1 = sample_batch([tc], None, 3, (16, 16, 16), np.random.default_rng(5), 0.7)
    b2 = sample_batch([tc], None, 3, (16, 16, 16), np.random.default_rng(5), 0.7)
    np.testing.assert_array_equal(b1, b2)
    assert b1.shape == (3, len(CHANNELS), 16, 16, 16)


def test_a_case_can_carry_its_own_la_focus() -> None:
    """Full-field-of-view phantoms centre fewer patches on the LA than the run does."""
    tc = prepare_case(sphere_case(), (1.25, 1.25, 1.25))
    run_focus = 1.0

    def on_boundary(n: int, seed: int) -> float:
        rng = np.random.default_rng(seed)
        return float(np.mean([tc.arrays["m1"][sample_centre(tc, (8, 8, 8), rng, run_focus)] for _ in range(n)]))

    assert on_boundary(40, 0) == 1.0
    tc.la_focus = 0.0  # the case's own share wins over the run's
    off = on_boundary(200, 1)
    assert off < 0.5  # the boundary shell is a small part of the volume


def test_augmentation_keeps_channels_aligned_and_binary() -> None:
    tc = prepare_case(sphere_case(), (1.25, 1.25, 1.25))
    batch = torch.from_numpy(sample_batch([tc], None, 4, (32, 32, 32), np.random.default_rng(2), 1.0))
    aug = Augmentation(flip_p=0.5, rotate_p=1.0, rotate_deg=20, intensity_p=1.0, bias_p=1.0, noise_p=1.0)
    out = augment(batch, aug, torch.Generator().manual_seed(3), tc.spacing_zyx)
    assert out.shape == batch.shape and not torch.equal(out, batch)
    for name in ("la", "wall", "scar", "m1"):
        vals = torch.unique(out[:, CHANNELS.index(name)])
        assert set(vals.tolist()) <= {0.0, 1.0}
    # the LA and the sign of phi still agree after flips and rotation
    la = out[:, CHANNELS.index("la")].bool()
    phi = out[:, CHANNELS.index("phi")]
    agree = ((phi <= 0.7) == la).float().mean()
    assert agree > 0.97
    # same generator seed: same augmentation
    again = augment(batch, aug, torch.Generator().manual_seed(3), tc.spacing_zyx)
    assert torch.equal(out, again)
    # the input batch is untouched
    assert torch.equal(batch, torch.from_numpy(sample_batch([tc], None, 4, (32, 32, 32), np.random.default_rng(2), 1.0)))


def test_batch_to_inputs_splits_channels() -> None:
    tc = prepare_case(sphere_case(), (1.25, 1.25, 1.25))
    batch = torch.from_numpy(sample_batch([tc], None, 2, (16, 16, 16), np.random.default_rng(0), 1.0))
    x, t = batch_to_inputs(batch, tc.spacing_zyx)
    assert x.shape == (2, 1, 16, 16, 16) and t["p_target"].shape == (2, 2, 16, 16, 16)
    assert torch.equal(t["p_target"][:, 1], batch[:, CHANNELS.index("p_scar")])
    assert t["spacing_zyx"] == (1.25, 1.25, 1.25)
