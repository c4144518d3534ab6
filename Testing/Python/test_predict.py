"""Card-driven prediction with a real exported TorchScript model, masks, and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from LAScarSegLib.core.errors import InputError, ModelError
from LAScarSegLib.model.card import card_markdown
from LAScarSegLib.train.export import export_checkpoint
from LAScarSegLib.model.loading import load_model
from LAScarSegLib.model.registry import register
from LAScarSegLib.core.image import Geometry, Volume, write_volume
from LAScarSegLib.model.network import ModelConfig, build_model
from LAScarSegLib.model.loading import LoadedModel, load_for_inference, require_heads
from LAScarSegLib.infer.localise import component_warning
from LAScarSegLib.infer.masks import la_mask, scar_mask
from LAScarSegLib.infer.predict import predict


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real exported model file (untrained weights; the card is what matters here)."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    mcfg = ModelConfig(levels=3, base_channels=4)
    ckpt = {"model": build_model(mcfg).state_dict(), "model_config": mcfg.as_dict(), "variant": "mtl-sesa",
            "iteration": 0, "config": {"spacing_mm": [1.25, 1.25, 1.25], "patch_size": [32, 32, 32], "wall_band_mm": 3.0}}
    torch.save(ckpt, folder / "ckpt.pt")
    path = export_checkpoint(folder / "ckpt.pt", folder / "tiny.pt", name="tiny", version="0.0.1",
                             training_data=[{"source": "none", "cases": 0, "labels": [], "provenance": "untrained"}])
    register(path, folder / "models.json")
    return path


def test_registry_checks_sha256(tiny_model: Path, tmp_path: Path) -> None:
    reg = tiny_model.parent / "models.json"
    module, card, sha = load_model("tiny", reg)
    assert card["name"] == "tiny" and len(sha) == 64
    entry = json.loads(reg.read_text())["models"][0]
    assert entry["size_bytes"] == tiny_model.stat().st_size and entry["card"]["divisor"] == 4
    assert "Research use only" in card_markdown(card)
    bad = tmp_path / "reg"
    bad.mkdir()
    (bad / "tiny.pt").write_bytes(tiny_model.read_bytes()[:-10] + b"0123456789")
    (bad / "models.json").write_text(reg.read_text())
    with pytest.raises(ModelError, match="does not match the registry"):
        load_model("tiny", bad / "models.json")
    with pytest.raises(ModelError, match="no model named 'nope'"):
        load_model("nope", reg)


def test_predict_follows_the_card_and_returns_input_grid(tiny_model: Path) -> None:
    loaded = load_for_inference(str(tiny_model), "cpu")
    geom = Geometry((50, 44, 30), (0.7, 0.7, 1.5), (-12.0, 30.0, 4.0))
    img = Volume(np.random.default_rng(0).normal(size=geom.shape).astype(np.float32), geom)
    seen = []
    pred = predict(loaded, img, progress=lambda f, m: seen.append(f))
    assert seen and seen[-1] == pytest.approx(1.0)
    for v in (pred.la, pred.p_normal, pred.p_scar):
        assert v.geometry == geom and v.array.dtype == np.float32 and 0 <= v.array.min() <= v.array.max() <= 1
    require_heads(loaded, {"la", "scar"})
    only_la = LoadedModel(loaded.module, dict(loaded.card, architecture={"heads": ["la"]}), loaded.sha256, "cpu")
    with pytest.raises(ModelError, match=r"lacks the output\(s\) \['scar'\]"):
        require_heads(only_la, {"la", "scar"})
    # a card without the (LAScarSeg-specific) architecture: the outputs it names are the heads
    by_outputs = LoadedModel(loaded.module, {k: v for k, v in loaded.card.items() if k != "architecture"},
                             loaded.sha256, "cpu")
    assert by_outputs.heads == {"la", "scar"}


def test_a_card_without_what_inference_needs_is_refused_clearly(tiny_model: Path, tmp_path: Path) -> None:
    """CONTRACTS section 3: the card is authoritative, so a card that lacks a value the pipeline
    takes from it is a ModelError naming that value (exit 2 from the command line), not a KeyError."""
    from LAScarSegLib.app.cli import main
    from LAScarSegLib.model.network import load_scripted, save_scripted

    module, card = load_scripted(tiny_model)
    bad = dict(card, divisor=0, normalisation="minmax")
    del bad["spacing_mm"]
    path = save_scripted(module, tmp_path / "badcard.pt", bad)
    with pytest.raises(ModelError, match=r"spacing_mm \(missing\), divisor = 0, normalisation = 'minmax'"):
        load_for_inference(str(path), "cpu")
    image = tmp_path / "image.nii.gz"
    write_volume(Volume(np.zeros((16, 16, 16), np.float32), Geometry((16, 16, 16), (1.0, 1.0, 1.0), (0, 0, 0))), image)
    assert main(["segment", str(image), "--model", str(path), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_la_mask_keeps_the_largest_component_and_scar_lies_in_the_band() -> None:
    geom = Geometry((40, 40, 20), (1.0, 1.0, 2.0), (0, 0, 0))
    prob = np.zeros(geom.shape, np.float32)
    prob[5:15, 10:30, 10:30] = 0.9
    prob[2:4, 2:4, 2:4] = 0.8  # a far island
    mask, removed = la_mask(Volume(prob, geom))
    assert removed == 1 and mask.array.sum() == 10 * 20 * 20
    _, kept = la_mask(Volume(prob, geom), keep_largest=False)
    assert kept == 0
    with pytest.raises(InputError, match="no left atrium found"):
        la_mask(Volume(np.zeros(geom.shape, np.float32), geom, "empty.nii.gz"))
    stray = np.zeros(geom.shape, np.float32)
    stray[5:7, 10:20, 10:20] = 0.9  # 200 voxels of 2 mm^3: 0.4 mL, no atrium
    with pytest.raises(InputError, match=r"no left atrium found \(the largest candidate is 0.40 mL, under 1 mL\)"):
        la_mask(Volume(stray, geom, "stray.nii.gz"))
    from LAScarSegLib.infer.masks import Prediction

    p_scar = np.ones(geom.shape, np.float32)
    p_normal = np.zeros(geom.shape, np.float32)
    pred = Prediction(la=Volume(prob, geom), p_normal=Volume(p_normal, geom), p_scar=Volume(p_scar, geom))
    scar, band = scar_mask(pred, mask, 3.0)
    assert scar.array.any() and (scar.array <= band.array).all() and not (scar.array & mask.array).any()


def test_cuda_out_of_memory_falls_back_to_cpu(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: the CUDA run is stood in for by a sliding window that runs out of memory."""
    from LAScarSegLib.infer import predict as predict_module

    real = predict_module.sliding_window
    devices: list[str] = []

    def gpu_runs_out(*args, device="cpu", **kwargs):
        devices.append(device)
        if device == "cuda":
            kwargs["progress"](0.4, "inference: window 2 of 5")  # part of the way, then out of memory
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(*args, device=device, **kwargs)

    monkeypatch.setattr(predict_module, "sliding_window", gpu_runs_out)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    loaded = load_for_inference(str(tiny_model), "cpu")
    loaded.device = "cuda"
    geom = Geometry((24, 24, 16), (1.25, 1.25, 1.25), (0, 0, 0))
    img = Volume(np.random.default_rng(1).normal(size=geom.shape).astype(np.float32), geom)
    fractions: list[float] = []
    pred = predict(loaded, img, progress=lambda f, text: fractions.append(f))
    assert devices == ["cuda", "cpu"] and pred.device == "cpu" and loaded.device == "cpu"
    # the CPU retry goes on from where the CUDA pass got: the progress bar never runs back
    assert fractions[0] == 0.4 and len(fractions) > 1 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("out of memory" in w for w in pred.warnings)
    assert pred.la.geometry == geom


def _two_blobs(p_big: float, p_small: float, small_mm: float = 16.0) -> Volume:
    """A 1 mm grid with a big cube (40 mm side, 64 mL) and a smaller one, at the given probabilities."""
    geo = Geometry((120, 60, 60), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    prob = np.zeros(geo.shape, np.float32)
    prob[10:50, 10:50, 5:45] = p_big
    k = int(small_mm)
    prob[20:20 + k, 20:20 + k, 70:70 + 2 * k] = p_small
    return Volume(prob, geo, "prob")


def test_component_warning_when_a_smaller_component_is_clearly_more_certain() -> None:
    # a blood pool the network is unsure of (64 mL), bigger than the certain LA (20x20x40 mm = 16 mL)
    small_but_candidate = _two_blobs(0.7, 0.97, small_mm=20.0)
    mask, removed = la_mask(small_but_candidate)
    assert removed == 1 and mask.array.sum() == 40 ** 3  # the result stays the largest component
    warning = component_warning(small_but_candidate)
    assert warning is not None and "(64 mL, 0% of it" in warning and "another of 16 mL (100%)" in warning
    # no warning: the certain one is under 10 mL (16x16x32 mm = 8 mL), the largest is the certain one,
    # the difference is small, or every component is kept
    assert component_warning(_two_blobs(0.7, 0.97)) is None
    assert component_warning(_two_blobs(0.97, 0.7, small_mm=20.0)) is None
    assert component_warning(_two_blobs(0.95, 0.96, small_mm=20.0)) is None
    assert component_warning(small_but_candidate, keep_largest=False) is None


def test_component_through_the_whole_slab_is_no_la_candidate() -> None:
    geo = _two_blobs(0.0, 0.0).geometry  # 60 slices of 1 mm
    # a certain vessel on every slice (20x20 mm in plane: 24 mL), largest, beside a 16 mL blob at 0.8
    prob = _two_blobs(0.0, 0.8, small_mm=20.0).array.copy()
    prob[:, 5:25, 5:25] = 0.99
    warning = component_warning(Volume(prob, geo, "prob"))
    assert warning is not None and "(24 mL, 100% of it" in warning and "runs through the whole slab" in warning
    # alone, it is still no LA: said so, though there is nothing else to prefer
    alone = np.zeros_like(prob)
    alone[:, 5:25, 5:25] = 0.99
    alone_warning = component_warning(Volume(alone, geo, "prob"))
    assert "there is no other candidate" in alone_warning and "cropped to the LA's own slices" in alone_warning
    # the same vessel stopping one slice short is an ordinary component, largest and most certain: kept
    prob[-1] = 0.0
    assert component_warning(Volume(prob, geo, "prob")) is None
    # nor is a through-slab component preferred to the largest: a 12 mL vessel far more certain than a 64 mL LA
    prob = _two_blobs(0.7, 0.0).array.copy()
    prob[:, 46:60, 46:60] = 0.99
    assert component_warning(Volume(prob, geo, "prob")) is None
    prob[1:, 46:60, 46:60] = 0.99
    prob[0, 46:60, 46:60] = 0.0  # off the first slice it is a candidate again, and preferred
    assert "another of 12 mL (100%)" in component_warning(Volume(prob, geo, "prob"))


def test_the_answer_does_not_depend_on_how_the_image_is_stored() -> None:
    """The same phantom stored with x and z reversed (same anatomy, same physical space): the bundled
    model's LA is the same voxels, the scar burden within a quarter of a point (a hostile test got LA
    Dice 0.974 between two storages)."""
    from LAScarSegLib.app.pipeline import segment
    from LAScarSegLib.synth.phantom import make_phantom

    ph = make_phantom(4, size=(112, 112, 48), spacing=(1.0, 1.0, 1.5), la_volume_ml=60.0)
    g = ph.image.geometry
    last = g.index_to_physical(np.array([[g.size[0] - 1, 0, g.size[2] - 1]], float))[0]
    flipped = Geometry(g.size, g.spacing, tuple(last), tuple((g.direction_matrix @ np.diag([-1.0, 1.0, -1.0])).ravel()))
    reverse = (slice(None, None, -1), slice(None), slice(None, None, -1))  # z and x of a (z, y, x) array
    a = segment(ph.image, device="cpu", localiser=None)
    b = segment(Volume(np.ascontiguousarray(ph.image.array[reverse]), flipped), device="cpu", localiser=None)
    la_a, la_b = a.la.array > 0, b.la.array[reverse] > 0
    assert la_a.sum() > 1000 and np.array_equal(la_a, la_b)
    ra, rb = a.report.to_json(), b.report.to_json()
    assert abs(ra["la"]["volume_ml"] - rb["la"]["volume_ml"]) < 0.01
    # the same voxels; the surface is meshed in each storage's own order, so its triangles differ a little
    assert abs(ra["scar"]["burden_surface_pct"] - rb["scar"]["burden_surface_pct"]) < 0.25
