"""LAScarSegLib.losses and LAScarSegLib.variants: Eqs. (2)-(6) of MTL-SESA and the ablation rows."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from LAScarSegLib.core.distance import boundary_mask, distance_probability_maps, signed_distance  # noqa: E402
from LAScarSegLib.core.errors import InputError, ModelError  # noqa: E402
from LAScarSegLib.core.image import Geometry, Volume  # noqa: E402
from LAScarSegLib.train.losses import DEFAULT_BOUNDARY_MM, LossWeights, bce_la, bce_scar, boundary_masks, dice_la, dice_scar, m2_mask, sa, se_la, se_scar, term_weights, total_loss  # noqa: E402
from LAScarSegLib.model.network import ModelConfig, build_model  # noqa: E402
from LAScarSegLib.model.variants import DEFAULT_VARIANT, TERM_HEADS, VARIANTS, Variant, get_variant  # noqa: E402

SPACING_ZYX = (2.0, 1.0, 1.0)  # anisotropic: thick slices
SHAPE = (16, 32, 32)  # z, y, x


def _geometry(shape=SHAPE, spacing_zyx=SPACING_ZYX) -> Geometry:
    z, y, x = shape
    return Geometry(size=(x, y, z), spacing=(spacing_zyx[2], spacing_zyx[1], spacing_zyx[0]), origin=(0.0, 0.0, 0.0))


def _ball(centre_mm, radius_mm, shape=SHAPE, spacing_zyx=SPACING_ZYX) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing_zyx)], indexing="ij")
    c = centre_mm
    return ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius_mm**2).astype(np.uint8)


def _t(a: np.ndarray) -> "torch.Tensor":
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]


def _logits(mask: np.ndarray, scale: float = 8.0) -> "torch.Tensor":
    return _t(mask.astype(np.float32) * 2 - 1) * scale


def _case(seed: int, shape=SHAPE, scar: bool = True, la: bool = True) -> dict:
    """A tiny synthetic case: a ball LA, a 2 mm wall shell around it, scar on one side."""
    rng = np.random.default_rng(seed)
    ext = [n * s for n, s in zip(shape, SPACING_ZYX)]
    centre = [e / 2 + rng.uniform(-2, 2) for e in ext]
    r = 8.0 + rng.uniform(-1, 1)
    la_m = _ball(centre, r, shape) if la else np.zeros(shape, np.uint8)
    wall = (_ball(centre, r + 2.5, shape) & ~la_m.astype(bool)).astype(np.uint8) if la else np.zeros(shape, np.uint8)
    scar_m = wall.copy()
    xx = np.arange(shape[2])[None, None, :] * SPACING_ZYX[2]
    scar_m[np.broadcast_to(xx < centre[2] + rng.uniform(-3, 3), shape)] = 0
    if not scar:
        scar_m[:] = 0
    g = _geometry(shape)
    phi = signed_distance(Volume(la_m, g)).array
    pn, ps = distance_probability_maps(Volume(wall, g), Volume(scar_m, g))
    return {
        "la": _t(la_m), "phi": _t(phi), "p_target": torch.cat([_t(pn.array), _t(ps.array)], 1),
        "wall": _t(wall), "scar": _t(scar_m), "m1": _t(boundary_mask(Volume(la_m, g), DEFAULT_BOUNDARY_MM).array),
        "spacing_zyx": SPACING_ZYX,
    }


def _cat(batches: list[dict]) -> dict:
    return {k: (torch.cat([b[k] for b in batches]) if k != "spacing_zyx" else batches[0][k]) for k in batches[0]}


def _outputs(seed: int, batch: dict, heads=("la", "scar")) -> dict:
    """Plausible logits: the truth blurred by noise (so M2 exists and differs from M1)."""
    g = torch.Generator().manual_seed(seed)
    B, _, *sp = batch["la"].shape
    out = {}
    if "la" in heads:
        out["la"] = (batch["la"] * 2 - 1) * 3 + torch.randn(B, 1, *sp, generator=g) * 2
    if "scar" in heads:
        out["scar"] = torch.randn(B, 2, *sp, generator=g)
    return {k: v.requires_grad_() for k, v in out.items()}


# ------------------------------------------------------------------------------------ variants
def test_variants_table() -> None:
    expected = {
        "unet-la-bce": (("la",), ("bce_la",)),
        "unet-la-se": (("la",), ("bce_la", "se_la")),
        "unet-scar-bce": (("scar",), ("bce_scar",)),
        "unet-scar-dice": (("scar",), ("dice_scar",)),
        "unet-scar-se": (("scar",), ("se_scar",)),
        "mtl-bce": (("la", "scar"), ("bce_la", "bce_scar")),
        "mtl-se": (("la", "scar"), ("bce_la", "se_la", "se_scar")),
        "mtl-sesa": (("la", "scar"), ("bce_la", "se_la", "se_scar", "sa_m1", "sa_m2")),
    }
    assert {n: (v.heads, v.terms) for n, v in VARIANTS.items()} == expected
    assert DEFAULT_VARIANT == "mtl-sesa" and get_variant("mtl-sesa") is VARIANTS["mtl-sesa"]
    with pytest.raises(InputError) as info:
        get_variant("mtl-sesa2")
    assert "mtl-sesa2" in str(info.value) and all(n in str(info.value) for n in expected)
    with pytest.raises(InputError, match="needs head"):
        Variant("bad", ("scar",), ("se_scar", "sa_m2"))
    with pytest.raises(InputError, match="unknown loss terms"):
        Variant("bad", ("la",), ("bce_la", "hd_la"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        VARIANTS["mtl-sesa"].terms = ()  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_runs_only_its_terms_on_its_heads(name: str) -> None:
    variant = VARIANTS[name]
    batch = _case(1)
    outs = _outputs(1, batch, variant.heads)
    loss, terms = total_loss(outs, batch, variant, LossWeights(), 0)
    assert tuple(terms) == variant.terms
    assert all(math.isfinite(v) for v in terms.values())
    w = term_weights(variant, LossWeights(), 0)
    assert float(loss.detach()) == pytest.approx(sum(w[t] * terms[t] for t in variant.terms), rel=1e-5)
    loss.backward()
    for head in variant.heads:
        assert outs[head].grad is not None and torch.isfinite(outs[head].grad).all()
    # a model without a needed head is refused, naming the key
    for head in variant.heads:
        partial = {k: v for k, v in outs.items() if k != head}
        with pytest.raises(ModelError, match=f"'{head}'"):
            total_loss(partial, batch, variant, LossWeights(), 0)
    # outputs of a real model of the variant's shape are accepted
    model = build_model(ModelConfig.for_variant(name, levels=2, base_channels=2))
    assert len(model.decoders) == variant.num_decoders
    l2, t2 = total_loss(model(torch.randn(1, 1, *SHAPE)), batch, name, LossWeights(), 0)
    assert tuple(t2) == variant.terms and torch.isfinite(l2)


def test_missing_batch_keys_and_bad_shapes_are_named() -> None:
    batch = _case(2)
    outs = _outputs(2, batch)
    for key, term in (("phi", "se_la"), ("p_target", "se_scar"), ("spacing_zyx", "sa_m2")):
        b = {k: v for k, v in batch.items() if k != key}
        with pytest.raises(InputError, match=f"'{term}' needs batch key.*'{key}'"):
            total_loss(outs, b, "mtl-sesa", LossWeights(), 0)
    with pytest.raises(InputError, match=r"batch\['phi'\] has shape"):
        total_loss(outs, {**batch, "phi": batch["phi"][:, :, :8]}, "mtl-sesa", LossWeights(), 0)
    with pytest.raises(ModelError, match=r"'scar' must be \[B, 2"):
        total_loss({**outs, "scar": outs["scar"][:, :1]}, batch, "mtl-sesa", LossWeights(), 0)
    # without m1, M1 is computed from the LA with the same definition
    no_m1 = {k: v for k, v in batch.items() if k != "m1"}
    _, a = total_loss(outs, batch, "mtl-sesa", LossWeights(), 0)
    _, b = total_loss(outs, no_m1, "mtl-sesa", LossWeights(), 0)
    assert a["sa_m1"] == pytest.approx(b["sa_m1"], rel=1e-6)


# ------------------------------------------------------------------------------------- weights
def test_loss_weights_schedule_growth_and_cap() -> None:
    w = LossWeights()
    assert (w.lambda_la, w.lambda_scar, w.lambda_m1, w.lambda_m2, w.growth, w.growth_every, w.growth_cap) == (
        0.01, 10.0, 0.01, 0.001, 1.1, 200, None)
    assert w.at(0) == {"lambda_la": 0.01, "lambda_scar": 10.0, "lambda_m1": 0.01, "lambda_m2": 0.001}
    assert w.at(199) == w.at(0)
    a = w.at(200)
    assert a["lambda_la"] == pytest.approx(0.011) and a["lambda_m2"] == pytest.approx(0.0011)
    assert a["lambda_scar"] == 10.0 and a["lambda_m1"] == 0.01
    assert w.at(2000)["lambda_la"] == pytest.approx(0.01 * 1.1**10)
    assert w.at(200 * 100)["lambda_m2"] == pytest.approx(0.001 * 1.1**100)  # unbounded as in the paper
    assert math.isfinite(w.at(10**9)["lambda_la"])  # no overflow
    capped = LossWeights(growth_cap=2.0)
    assert capped.at(200 * 5)["lambda_la"] == pytest.approx(0.01 * 1.1**5)  # 1.61 < 2
    assert capped.at(200 * 8)["lambda_la"] == pytest.approx(0.02)  # 1.1**8 = 2.14 capped at 2
    assert capped.at(10**7)["lambda_m2"] == pytest.approx(0.002)
    tw = term_weights("mtl-sesa", capped, 200 * 8)
    assert tw == pytest.approx({"bce_la": 1.0, "se_la": 0.02, "se_scar": 10.0, "sa_m1": 0.01, "sa_m2": 0.002})
    assert term_weights("unet-scar-dice", w, 0) == {"dice_scar": 1.0}
    assert w.boundary_thickness_mm == DEFAULT_BOUNDARY_MM == 4.0
    for bad in (dict(growth=0.0), dict(growth_every=0), dict(lambda_la=-1.0), dict(growth_cap=0.0),
                dict(boundary_thickness_mm=0.0), dict(lambda_scar=float("nan"))):
        with pytest.raises(InputError):
            LossWeights(**bad)
    with pytest.raises(InputError):
        w.at(-1)


# ------------------------------------------------------------------------------------ LA terms
def test_se_la_penalises_a_far_false_island_more_than_a_near_one() -> None:
    shape = (24, 40, 40)
    ext = [n * s for n, s in zip(shape, SPACING_ZYX)]  # 48 x 40 x 40 mm
    centre = [e / 2 for e in ext]
    truth = _ball(centre, 9.0, shape)
    phi_vol = signed_distance(Volume(truth, _geometry(shape)))
    phi = _t(phi_vol.array)
    near = truth | _ball([centre[0], centre[1], centre[2] + 13.0], 2.0, shape)  # 2 mm off the surface
    far = truth | _ball([4.0, 4.0, 4.0], 2.0, shape)  # about 30 mm away
    assert near.sum() - truth.sum() == far.sum() - truth.sum() > 0  # islands of equal size
    se_true, se_near, se_far = (float(se_la(_logits(m), phi)) for m in (truth, near, far))
    assert se_true < se_near < se_far
    # Eq. (3) exactly: mean of (sigmoid - 0.5) * phi
    lg = _logits(far, 1.5)
    expected = np.mean((1 / (1 + np.exp(-lg.numpy().astype(np.float64))) - 0.5) * phi_vol.array)
    assert float(se_la(lg, phi)) == pytest.approx(expected, rel=1e-5)
    # BCE does not see the distance: near and far islands cost the same
    assert float(bce_la(_logits(near), _t(truth))) == pytest.approx(float(bce_la(_logits(far), _t(truth))), rel=1e-5)


def test_se_la_ignores_non_finite_phi() -> None:
    empty = np.zeros(SHAPE, np.uint8)
    phi = _t(signed_distance(Volume(empty, _geometry())).array)
    assert torch.isinf(phi).all()
    lg = torch.randn(1, 1, *SHAPE, requires_grad=True)
    v = se_la(lg, phi)
    assert float(v.detach()) == 0.0
    v.backward()
    assert torch.isfinite(lg.grad).all() and float(lg.grad.abs().sum()) == 0.0
    # partly non-finite: only the finite voxels count
    phi2 = torch.ones(1, 1, *SHAPE)
    phi2[..., :4] = float("inf")
    phi2[..., 4:6] = float("nan")
    ref = ((torch.sigmoid(lg.detach()) - 0.5)[..., 6:]).sum() / lg.numel()
    assert float(se_la(lg.detach(), phi2)) == pytest.approx(float(ref), rel=1e-5)


# ---------------------------------------------------------------------------------- scar terms
def test_bce_dice_and_se_scar_values() -> None:
    batch = _case(3)
    normal = batch["wall"] * (1 - batch["scar"])
    perfect = torch.cat([normal, batch["scar"]], 1) * 20 - 10
    assert float(bce_scar(perfect, batch["wall"], batch["scar"])) < 1e-3
    assert float(bce_scar(-perfect, batch["wall"], batch["scar"])) > 1.0
    assert float(dice_scar(perfect, batch["scar"])) < 1e-3
    assert float(dice_scar(-perfect, batch["scar"])) > 0.9
    p = batch["p_target"].clamp(1e-4, 1 - 1e-4)
    assert float(se_scar(torch.log(p / (1 - p)), batch["p_target"])) < 1e-8
    lg = torch.zeros(1, 2, *SHAPE)
    assert float(se_scar(lg, batch["p_target"])) == pytest.approx(float(((0.5 - batch["p_target"]) ** 2).mean()), rel=1e-6)


def test_dice_la_joins_only_when_weighted_and_only_with_an_la_head() -> None:
    batch = _case(4)
    perfect = _logits(batch["la"][0, 0].numpy(), 20.0)
    assert float(dice_la(perfect, batch["la"])) < 1e-3
    assert float(dice_la(-perfect, batch["la"])) > 0.9
    # the paper's Eq. 6 has no LA Dice: weight 0 (the default) leaves every variant's terms as they are
    assert "dice_la" not in term_weights("mtl-sesa", LossWeights(), 0)
    w = LossWeights(dice_la=0.5)
    assert term_weights("mtl-sesa", w, 0)["dice_la"] == 0.5
    assert "dice_la" not in term_weights("unet-scar-se", w, 0)  # no LA head, nothing to weigh
    outs = _outputs(4, batch)
    loss, terms = total_loss(outs, batch, "mtl-sesa", w, 0)
    base, base_terms = total_loss(outs, batch, "mtl-sesa", LossWeights(), 0)
    assert set(terms) == set(base_terms) | {"dice_la"}
    assert terms["dice_la"] == pytest.approx(float(dice_la(outs["la"].detach(), batch["la"])), rel=1e-6)
    assert float((loss - base).detach()) == pytest.approx(0.5 * terms["dice_la"], rel=1e-4)
    with pytest.raises(InputError, match="dice_la"):
        LossWeights(dice_la=-1.0)


def test_sa_zero_when_prediction_equals_target_positive_otherwise() -> None:
    batch = _case(4)
    lg = torch.randn(1, 2, *SHAPE, generator=torch.Generator().manual_seed(0))
    target = torch.sigmoid(lg)
    mask = batch["m1"]
    assert mask.sum() > 0
    assert float(sa(lg, target, mask)) == 0.0
    worse = lg.clone()
    worse[:, 1] += 1.0
    v = float(sa(worse, target, mask))
    assert v > 0
    # averaged over the voxels of M: explicit formula
    d = (torch.sigmoid(worse[:, 0]) - torch.sigmoid(worse[:, 1])) - (target[:, 0] - target[:, 1])
    expected = float((d[mask[:, 0] > 0] ** 2).mean())
    assert v == pytest.approx(expected, rel=1e-5)
    # a change outside M does not matter; a change inside does
    outside = worse.clone()
    outside[:, 0][mask[:, 0] == 0] += 5.0
    assert float(sa(outside, target, mask)) == pytest.approx(v, rel=1e-6)
    # empty M: 0, not 0/0
    z = torch.zeros_like(mask)
    wz = worse.clone().requires_grad_()
    e = sa(wz, target, z)
    e.backward()
    assert float(e.detach()) == 0.0 and torch.isfinite(wz.grad).all()


def test_sa_keeps_samples_apart() -> None:
    """Sample 0: error but no mask; sample 1: mask but no error. The reference's (B,1)x(B) broadcast
    would multiply sample 0's error by sample 1's mask and give a positive loss."""
    batch = _cat([_case(5), _case(6)])
    lg = torch.randn(2, 2, *SHAPE, generator=torch.Generator().manual_seed(1))
    target = torch.sigmoid(lg).clone()
    target[0] = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(2))  # sample 0 wrong
    mask = batch["m1"].clone()
    mask[0] = 0
    assert float(sa(lg, target, mask)) == 0.0
    # and each sample is averaged over its own mask: batch value = mean of the per-sample values
    mask = batch["m1"]
    both = float(sa(lg, target, mask))
    singles = [float(sa(lg[i : i + 1], target[i : i + 1], mask[i : i + 1])) for i in range(2)]
    assert singles[0] > 0 and singles[1] == 0.0
    assert both == pytest.approx(sum(singles) / 2, rel=1e-6)


def test_m2_mask_is_the_boundary_of_the_predicted_la() -> None:
    shape = (20, 32, 32)
    ext = [n * s for n, s in zip(shape, SPACING_ZYX)]
    la = _ball([e / 2 for e in ext], 9.0, shape)
    # graded logits: 0.5 - phi (mm): sigmoid > 0.5 exactly on the LA (phi <= 0), 0.38 one mm out
    lg = (0.5 - _t(signed_distance(Volume(la, _geometry(shape))).array)).requires_grad_()
    m2 = m2_mask(lg, SPACING_ZYX, 4.0)
    assert m2.requires_grad is False and m2.dtype == torch.float32 and m2.device == lg.device
    assert tuple(m2.shape) == (1, 1, *shape)
    expected = boundary_mask(Volume(la, _geometry(shape)), 4.0).array
    assert np.array_equal(m2[0, 0].numpy(), expected)
    assert m2.sum() > 0 and float((m2[0, 0].numpy() * (1 - expected)).sum()) == 0
    # spacing matters (mm, not voxels): isotropic 1 mm gives a thinner shell along z
    iso = m2_mask(lg, (1.0, 1.0, 1.0), 4.0)
    assert not torch.equal(iso, m2)
    # per-sample spacing and bad spacing
    two = torch.cat([lg.detach(), lg.detach()])
    both = m2_mask(two, [SPACING_ZYX, (1.0, 1.0, 1.0)], 4.0)
    assert torch.equal(both[0:1], m2) and torch.equal(both[1:2], iso)
    with pytest.raises(InputError, match="spacing_zyx"):
        m2_mask(lg, (1.0, 1.0), 4.0)
    with pytest.raises(InputError, match="spacing_zyx"):
        m2_mask(lg, (1.0, -1.0, 1.0), 4.0)
    # a prediction with no LA gives an empty M2
    assert float(m2_mask(-lg.detach().abs(), SPACING_ZYX).sum()) == 0.0


def test_patch_faces_are_not_la_boundary() -> None:
    full = torch.ones(1, 1, *SHAPE)
    assert float(boundary_masks(full, SPACING_ZYX, 4.0).sum()) == 0.0  # a patch inside the LA
    half = torch.zeros(1, 1, *SHAPE)
    half[..., :, :, :16] = 1  # the LA fills x < 16 and leaves the patch at y, z faces
    m = boundary_masks(half, SPACING_ZYX, 4.0)[0, 0]
    cols = m.sum(dim=(0, 1))  # per x column
    xs = torch.nonzero(cols).flatten().tolist()
    assert xs == [13, 14, 15, 16, 17]  # |phi| <= 2 mm around the plane between x = 15 and 16
    assert bool((m[:, :, 13:18] == 1).all())  # including along the patch faces


# ------------------------------------------------------------------------------ whole loss
def test_losses_finite_without_scar_and_without_la() -> None:
    for kw in (dict(scar=False), dict(la=False)):
        batch = _case(7, **kw)
        if not kw.get("la", True):
            assert torch.isinf(batch["phi"]).all() and float(batch["p_target"].sum()) == 0.0
        for name, variant in VARIANTS.items():
            outs = _outputs(7, batch, variant.heads)
            loss, terms = total_loss(outs, batch, variant, LossWeights(), 10_000)
            assert torch.isfinite(loss), (name, kw, terms)
            assert all(math.isfinite(v) for v in terms.values()), (name, kw, terms)
            loss.backward()
            assert all(torch.isfinite(o.grad).all() for o in outs.values()), (name, kw)


@pytest.mark.parametrize("name", ["mtl-sesa", "unet-scar-dice", "mtl-bce"])
def test_batch_of_two_equals_mean_of_two_batches_of_one(name: str) -> None:
    b0, b1 = _case(8), _case(9, scar=False)
    o0, o1 = _outputs(8, b0), _outputs(9, b1)
    both = _cat([b0, b1])
    ob = {k: torch.cat([o0[k], o1[k]]).detach() for k in o0}
    w = LossWeights()
    l2, t2 = total_loss(ob, both, name, w, 400)
    l0, t0 = total_loss(o0, b0, name, w, 400)
    l1, t1 = total_loss(o1, b1, name, w, 400)
    assert float(l2) == pytest.approx((float(l0.detach()) + float(l1.detach())) / 2, rel=1e-5)
    for t in t2:
        assert t2[t] == pytest.approx((t0[t] + t1[t]) / 2, rel=1e-5, abs=1e-7), t
    if name == "mtl-sesa":
        assert t0["sa_m2"] > 0 and t0["sa_m1"] > 0 and t0["sa_m1"] != t0["sa_m2"]


def test_phantom_batch_m1_m2_and_sa_gradient_reach_the_scar_decoder() -> None:
    from LAScarSegLib.synth.phantom import make_phantom

    ph = make_phantom(1, burden=20.0)
    spacing = ph.image.spacing_zyx
    assert spacing[0] != spacing[1]  # anisotropic Utah grid
    scar_idx = np.argwhere(ph.scar.array)
    assert len(scar_idx)
    size = np.array([48, 64, 64])
    centre = scar_idx[len(scar_idx) // 2]
    lo = np.clip(centre - size // 2, 0, np.array(ph.image.array.shape) - size)
    sl = tuple(slice(int(a), int(a + n)) for a, n in zip(lo, size))
    phi = signed_distance(ph.la).array[sl]
    pn, ps = distance_probability_maps(ph.wall, ph.scar)
    m1 = boundary_mask(ph.la, DEFAULT_BOUNDARY_MM).array[sl]
    img = ph.image.array[sl].astype(np.float32)
    img = (img - img.mean()) / img.std()
    batch = {"la": _t(ph.la.array[sl]), "phi": _t(phi), "p_target": torch.cat([_t(pn.array[sl]), _t(ps.array[sl])], 1),
             "wall": _t(ph.wall.array[sl]), "scar": _t(ph.scar.array[sl]), "m1": _t(m1), "spacing_zyx": spacing}
    assert 0 < float(batch["la"].mean()) < 1 and float(batch["scar"].sum()) > 0

    torch.manual_seed(0)
    model = build_model(ModelConfig(levels=4, base_channels=2))
    out = model(_t(img))
    # a realistic LA prediction: the truth shifted by 2 voxels along x (LA decoder logits added
    # with a small weight so that the LA output stays attached to the network)
    shifted = torch.roll(batch["la"], shifts=2, dims=4)
    la_pred = (shifted * 2 - 1) * 6 + 0.01 * out["la"]
    m2 = m2_mask(la_pred, spacing, DEFAULT_BOUNDARY_MM)
    assert float(batch["m1"].sum()) > 100 and float(m2.sum()) > 100
    assert not torch.equal(m2, batch["m1"])
    inter = float((m2 * batch["m1"]).sum())
    union = float(((m2 + batch["m1"]) > 0).sum())
    assert inter / union > 0.3  # both shells follow the same LA surface

    sa1 = sa(out["scar"], batch["p_target"], batch["m1"])
    sa2 = sa(out["scar"], batch["p_target"], m2)
    assert float(sa1.detach()) > 0 and float(sa2.detach()) > 0
    (sa1 * 0.01 + sa2 * 0.001).backward(retain_graph=True)
    g_scar = sum(float(p.grad.abs().sum()) for p in model.decoders["scar"].parameters())
    g_enc = sum(float(p.grad.abs().sum()) for p in model.encoder.parameters())
    assert g_scar > 0 and g_enc > 0
    # M2 is detached: the SA terms do not train the LA decoder
    assert all(p.grad is None for p in model.decoders["la"].parameters())

    # Eq. (6) on the network's own outputs (plus the shifted LA): finite, all terms active
    model.zero_grad(set_to_none=True)
    loss, terms = total_loss({"la": la_pred, "scar": out["scar"]}, batch, "mtl-sesa", LossWeights(), 0)
    assert torch.isfinite(loss.detach()) and set(terms) == set(VARIANTS["mtl-sesa"].terms)
    assert terms["sa_m2"] == pytest.approx(float(sa2.detach()), rel=1e-6)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.decoders["scar"].parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in model.decoders["la"].parameters())  # via BCE and SE


def test_term_heads_are_consistent_with_the_losses() -> None:
    assert set(TERM_HEADS) == {t for v in VARIANTS.values() for t in v.terms} | {"bce_scar", "dice_scar"}


@pytest.mark.parametrize("spacing_zyx,thickness", [((1.25, 0.625, 0.625), 4.0), ((1.0, 1.0, 1.0), 4.0),
                                                   ((1.25, 1.25, 1.25), 3.0), ((0.9, 1.3, 0.7), 2.5)])
def test_boundary_masks_on_the_tensor_device_equal_the_distance_definition(spacing_zyx, thickness) -> None:
    """The convolution shell of `boundary_masks` is `distance.boundary_mask` voxel for voxel."""
    from scipy import ndimage

    from LAScarSegLib.core.distance import boundary_mask
    from LAScarSegLib.core.image import Geometry, Volume

    rng = np.random.default_rng(7)
    blobs = ndimage.gaussian_filter(rng.random((40, 44, 48)), 3.0)
    la = (blobs > np.quantile(blobs, 0.6)).astype(np.uint8)
    la[:3], la[-3:], la[:, :3], la[:, -3:], la[:, :, :3], la[:, :, -3:] = 0, 0, 0, 0, 0, 0  # off the border
    geom = Geometry((48, 44, 40), spacing_zyx[::-1], (0.0, 0.0, 0.0))
    expected = boundary_mask(Volume(la, geom), thickness).array
    got = boundary_masks(torch.from_numpy(la[None, None].astype(np.float32)), spacing_zyx, thickness)[0, 0].numpy()
    assert expected.sum() > 1000 and np.array_equal(got.astype(np.uint8), expected)
