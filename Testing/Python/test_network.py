"""LAScarSegLib.network: the multi-decoder 3D U-Net, TorchScript export and the model file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from LAScarSegLib.core.errors import InputError, ModelError  # noqa: E402
from LAScarSegLib.model.card import CARD_FILE  # noqa: E402
from LAScarSegLib.model.network import Decoder, Encoder, ModelConfig, build_model, count_parameters, freeze_for_inference, load_scripted, save_scripted, script_model  # noqa: E402
from LAScarSegLib.model.variants import VARIANTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(levels=3, base_channels=4)
CARD = {"format_version": 1, "name": "test-model", "version": "0.0.1", "variant": "mtl-sesa",
        "spacing_mm": [1.25, 1.25, 1.25], "divisor": 4, "outputs": {"la": "logit", "scar": "logits"}}


def _x(b=1, z=16, y=16, x=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, z, y, x, generator=g)


def _small(heads=("la", "scar"), seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(ModelConfig(heads=heads, **{**SMALL, **kw}))


# ------------------------------------------------------------------------------------- imports
def test_variants_import_without_torch_and_the_network_with_it() -> None:
    """The variants are plain data (the Slicer side and configs read them without torch); the network
    and the losses import torch at the top (CONTRACTS section 1: only the Slicer process's set is
    torch-free, `test_imports.py`)."""
    code = ("import sys\nimport LAScarSegLib.model.variants as v\n"
            "assert v.get_variant('mtl-sesa').heads == ('la', 'scar')\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    code2 = ("import sys\nfrom LAScarSegLib.model.network import ModelConfig\nfrom LAScarSegLib.train.losses import "
             "LossWeights\nc = ModelConfig(); w = LossWeights(); assert c.divisor == 16 and w.at(200)['lambda_la'] > 0.01\n"
             "print('torch' in sys.modules)\n")
    out2 = subprocess.run([sys.executable, "-c", code2], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out2.stdout.strip().splitlines()[-1] == "True"


# -------------------------------------------------------------------------------------- config
def test_model_config_defaults_and_validation() -> None:
    c = ModelConfig()
    assert (c.levels, c.base_channels, c.norm, c.heads) == (5, 16, "batch", ("la", "scar"))
    assert c.divisor == 16 and c.channels == (16, 32, 64, 128, 256)
    assert ModelConfig(levels=4).divisor == 8
    assert ModelConfig(scar_base_channels=8).decoder_channels("scar") == (8, 16, 32, 64)
    assert ModelConfig(scar_base_channels=8).decoder_channels("la") == (16, 32, 64, 128)
    assert ModelConfig.from_dict(json.loads(json.dumps(c.as_dict()))) == c
    assert ModelConfig.for_variant("unet-scar-se").heads == ("scar",)
    for bad in (dict(levels=1), dict(base_channels=0), dict(norm="layer"), dict(heads=()),
                dict(heads=("la", "la")), dict(heads=("lv",)), dict(scar_base_channels=0)):
        with pytest.raises(InputError):
            ModelConfig(**bad)
    with pytest.raises(InputError, match="unknown model config keys"):
        ModelConfig.from_dict({"levels": 4, "widht": 3})


def _expected_parameters(levels: int, base: int, heads: tuple[str, ...]) -> int:
    """Independent count: conv 3x3x3 with bias + BatchNorm (2 per channel), per the paper's design."""
    ch = [base * 2**i for i in range(levels)]

    def block(cin, cout):
        return (cin * cout * 27 + cout + 2 * cout) + (cout * cout * 27 + cout + 2 * cout)

    enc = sum(block(ci, co) for ci, co in zip([1] + ch[:-1], ch))
    total = enc
    for head in heads:
        dec = 0
        for lev in range(levels - 1):
            dec += ch[lev + 1] * ch[lev] * 8 + ch[lev]  # ConvTranspose3d(2, stride 2)
            dec += block(2 * ch[lev], ch[lev])
        dec += ch[0] * {"la": 1, "scar": 2}[head] + {"la": 1, "scar": 2}[head]
        total += dec
    return total


def test_default_model_size_matches_the_reference() -> None:
    model = build_model(ModelConfig())
    n = count_parameters(model)
    assert n == _expected_parameters(5, 16, ("la", "scar"))
    assert 7.6e6 < n < 8.0e6  # reference: about 7.8 M
    single = count_parameters(build_model(ModelConfig(heads=("la",))))
    assert single == _expected_parameters(5, 16, ("la",))
    light = count_parameters(build_model(ModelConfig(scar_base_channels=8)))
    assert single < light < n


# ---------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_outputs_and_decoders_for_every_variant(name: str) -> None:
    variant = VARIANTS[name]
    model = build_model(ModelConfig.for_variant(name, **SMALL)).eval()
    n_decoders = sum(isinstance(m, Decoder) for m in model.modules())
    n_encoders = sum(isinstance(m, Encoder) for m in model.modules())
    assert n_decoders == len(variant.heads) == variant.num_decoders
    assert n_encoders == 1
    assert sorted(model.decoders.keys()) == sorted(variant.heads)
    with torch.no_grad():
        out = model(_x(2, 8, 12, 16))
    assert set(out) == set(variant.heads)
    expected = {"la": (2, 1, 8, 12, 16), "scar": (2, 2, 8, 12, 16)}
    for k, v in out.items():
        assert tuple(v.shape) == expected[k] and v.dtype == torch.float32
        assert torch.isfinite(v).all()


def test_decoders_are_independent_and_share_the_encoder() -> None:
    model = _small()
    out = model(_x())
    out["scar"].sum().backward()
    assert all(p.grad is None for p in model.decoders["la"].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoders["scar"].parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_forward_heads_runs_only_the_named_decoders_and_stays_out_of_the_scripted_model() -> None:
    model = _small().eval()
    x = _x()
    with torch.no_grad():
        full = model(x)
        la_only = model.forward_heads(x, ["la"])
    assert set(la_only) == {"la"}
    assert torch.equal(la_only["la"], full["la"])
    model.train()
    model.forward_heads(x, ["la"])["la"].sum().backward()  # the training step of an LA-only batch
    assert all(p.grad is None for p in model.decoders["scar"].parameters())
    assert all(p.grad is not None for p in model.decoders["la"].parameters())
    scripted = script_model(_small().eval())
    assert not hasattr(scripted, "forward_heads")  # the exported interface is forward only


@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_norms_forward_and_script(norm: str) -> None:
    model = _small(norm=norm, base_channels=6).eval()
    x = _x(1, 8, 8, 8)
    scripted = script_model(model)
    with torch.no_grad():
        a, b = model(x), scripted(x)
    assert set(a) == set(b) == {"la", "scar"}
    for k in a:
        assert torch.equal(a[k], b[k])
    assert model.training is False  # we set eval above; script_model works on a copy
    train_model = _small(norm=norm)
    script_model(train_model)
    assert train_model.training is True


def test_bad_input_size_is_a_clear_error_in_eager_and_scripted() -> None:
    model = _small().eval()  # divisor 4
    scripted = script_model(model)
    for m in (model, scripted):
        with pytest.raises(Exception, match=r"\(z, y, x\) = \(10, 16, 16\) is not divisible by 4"):
            m(_x(1, 10, 16, 16))
        with pytest.raises(Exception, match=r"must be \[B, 1, Z, Y, X\]"):
            m(torch.zeros(1, 2, 16, 16, 16))
    with pytest.raises(ValueError):  # eager raises a ValueError
        model(_x(1, 16, 18, 16))


def test_eval_batch_of_two_equals_two_batches_of_one() -> None:
    model = _small(seed=3)
    # non-trivial BatchNorm running statistics
    model.train()
    with torch.no_grad():
        for s in range(3):
            model(_x(2, seed=10 + s) * 2 + 1)
    model.eval()
    x = _x(2, seed=5)
    with torch.no_grad():
        both = model(x)
        one = [model(x[i : i + 1]) for i in range(2)]
    for k in both:
        assert torch.allclose(both[k], torch.cat([o[k] for o in one]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(one[0]["la"], one[1]["la"])  # the two inputs differ


def test_channels_last_3d_matches_contiguous_forward_and_backward() -> None:
    model = _small(seed=1)
    model_cl = _small(seed=1).to(memory_format=torch.channels_last_3d)
    x = _x(2, seed=7)
    a = model(x)
    b = model_cl(x.contiguous(memory_format=torch.channels_last_3d))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5)
    (a["la"].sum() + a["scar"].sum()).backward()
    (b["la"].sum() + b["scar"].sum()).backward()
    # (biases before a norm have a gradient of zero up to rounding: compare the whole gradient)
    ga = torch.cat([p.grad.flatten() for p in model.parameters()])
    gb = torch.cat([p.grad.flatten() for p in model_cl.parameters()])
    assert float((ga - gb).norm()) <= 1e-4 * float(ga.norm())


# ------------------------------------------------------------------------------- model file
def test_scripted_model_saves_and_reloads_bit_identical_with_its_card(tmp_path: Path) -> None:
    model = _small(seed=2)
    model.train()
    with torch.no_grad():
        model(_x(2, seed=1) + 0.5)  # move the BatchNorm statistics off their defaults
    scripted = script_model(model)
    path = save_scripted(scripted, tmp_path / "sub" / "model.pt", CARD)
    assert path == tmp_path / "sub" / "model.pt"
    assert sorted(os.listdir(tmp_path / "sub")) == ["model.pt"]  # no temporary file left behind
    loaded, card = load_scripted(path)
    assert card == CARD
    assert loaded.training is False
    x = _x(2, seed=9)
    with torch.no_grad():
        a, b = scripted(x), loaded(x)
        ref = model.eval()(x)
    assert set(b) == {"la", "scar"}
    for k in a:
        assert torch.equal(a[k], b[k])
        assert torch.equal(a[k], ref[k])
    with zipfile.ZipFile(path) as z:  # the card is a plain JSON member of the archive
        names = [n for n in z.namelist() if n.endswith("extra/" + CARD_FILE)]
        assert len(names) == 1 and json.loads(z.read(names[0])) == CARD


def test_frozen_model_matches_and_round_trips(tmp_path: Path) -> None:
    model = _small(seed=4)
    model.train()
    with torch.no_grad():
        model(_x(2, seed=3) * 3)
    model.eval()
    x = _x(2, seed=8)
    with torch.no_grad():
        ref = model(x)
    for channels_last in (False, True):
        frozen = freeze_for_inference(model, channels_last=channels_last)
        with torch.no_grad():
            out = frozen(x)
        assert set(out) == {"la", "scar"}
        for k in ref:
            assert torch.allclose(out[k], ref[k], atol=1e-5, rtol=1e-4)
        path = save_scripted(frozen, tmp_path / f"frozen{int(channels_last)}.pt", CARD)
        loaded, card = load_scripted(path)
        assert card == CARD
        with torch.no_grad():
            again = loaded(x)
        for k in ref:
            assert torch.equal(again[k], out[k])
        with pytest.raises(Exception, match="not divisible by 4"):
            loaded(_x(1, 6, 8, 8))
    assert model.training is False and next(model.parameters()).is_contiguous()
    # a ScriptModule is accepted too
    frozen2 = freeze_for_inference(script_model(model))
    with torch.no_grad():
        assert torch.allclose(frozen2(x)["scar"], ref["scar"], atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")
def test_load_refuses_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file does not exist"):
        load_scripted(tmp_path / "nope.pt")
    with pytest.raises(ModelError, match="is not a file"):
        load_scripted(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(ModelError, match=r"junk\.pt: not a LAScarSeg TorchScript model file"):
        load_scripted(junk)
    model = _small()
    sd = tmp_path / "state_dict.pt"
    torch.save(model.state_dict(), sd)
    with pytest.raises(ModelError, match="not a LAScarSeg TorchScript model file"):
        load_scripted(sd)
    legacy = tmp_path / "legacy.pt"
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelError, match="not a LAScarSeg TorchScript model file"):
        load_scripted(legacy)
    scripted = script_model(model)
    nocard = tmp_path / "nocard.pt"
    torch.jit.save(scripted, str(nocard))
    with pytest.raises(ModelError, match="has no model_card.json"):
        load_scripted(nocard)
    for name, text, pattern in (
        ("badjson.pt", "{format_version: 1", "is not valid JSON"),
        ("list.pt", "[1, 2]", "must hold a JSON object"),
        ("v2.pt", json.dumps({**CARD, "format_version": 2}), "format_version 2"),
        ("nov.pt", json.dumps({"name": "x"}), "format_version None"),
    ):
        p = tmp_path / name
        torch.jit.save(scripted, str(p), _extra_files={CARD_FILE: text})
        with pytest.raises(ModelError, match=pattern) as info:
            load_scripted(p)
        assert name in str(info.value)


def test_save_refuses_a_bad_card_or_a_plain_module(tmp_path: Path) -> None:
    scripted = script_model(_small())
    with pytest.raises(ModelError, match="format_version"):
        save_scripted(scripted, tmp_path / "a.pt", {"name": "no version"})
    with pytest.raises(InputError, match="not JSON-serialisable"):
        save_scripted(scripted, tmp_path / "b.pt", {"format_version": 1, "bad": object()})
    with pytest.raises(InputError, match="needs a TorchScript module"):
        save_scripted(_small(), tmp_path / "c.pt", CARD)
    assert os.listdir(tmp_path) == []  # nothing written, no temporary left
