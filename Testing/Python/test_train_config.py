"""Recipes, config files and overrides of the trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from LAScarSegLib.core.errors import InputError
from LAScarSegLib.train.train_config import CPU_DEFAULT, TrainConfig, departures, make_config


def test_paper_recipe_is_the_paper() -> None:
    cfg = make_config("paper")
    assert (cfg.optimizer, cfg.momentum, cfg.weight_decay, cfg.lr) == ("sgd", 0.9, 1e-4, 1e-3)
    assert (cfg.lr_step_every, cfg.lr_gamma) == (4000, 0.1)
    assert (cfg.lambda_la, cfg.lambda_scar, cfg.lambda_m1, cfg.lambda_m2) == (0.01, 10.0, 0.01, 0.001)
    assert (cfg.lambda_growth, cfg.lambda_growth_every, cfg.lambda_growth_cap) == (1.1, 200, None)
    assert cfg.beta == 1.0 and cfg.patch_size == [208, 208, 80] and cfg.spacing_mm == [1.0, 1.0, 1.0]
    assert cfg.variant == "mtl-sesa" and departures("paper") == {}


def test_cpu_default_departures_are_named_values() -> None:
    cfg = make_config("cpu-default")
    d = departures("cpu-default")
    assert {"optimizer", "patch_size", "spacing_mm", "lambda_growth_cap", "levels"} <= set(d)
    for key, info in d.items():
        assert getattr(cfg, key) == info["value"] != info["paper"]
        assert info["why"]
    # every departure is a real config field
    assert set(CPU_DEFAULT) <= set(TrainConfig.__dataclass_fields__)
    # the options beyond the paper are off in the paper's recipe (and in the CPU one, see train_config)
    paper = make_config("paper")
    assert (paper.lambda_dice_la, paper.full_fov_phantoms) == (0.0, 0)
    on = make_config("cpu-default", overrides=["lambda_dice_la=1", "full_fov_phantoms=2"])
    assert (on.lambda_dice_la, on.full_fov_phantoms) == (1.0, 2)


@pytest.mark.parametrize("override, key", [
    ({"phantom_weight": 0.6, "full_fov_weight": 0.4}, "full_fov_weight"),
    ({"full_fov_weight": -0.1}, "full_fov_weight"),
    ({"full_fov_la_focus": 1.5}, "full_fov_la_focus"),
    ({"unpainted_fraction": -0.5}, "unpainted_fraction"),
])
def test_patch_shares_must_be_fractions(override: dict, key: str) -> None:
    with pytest.raises(InputError, match=key):
        make_config("cpu-default", overrides=dict(override))


def test_file_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"batch_size": 4, "lr": 0.01}))
    cfg = make_config("cpu-default", f, ["lr=0.002", "variant=mtl-se", "patch_size=[32,32,32]", "lambda_growth_cap=null"])
    assert cfg.batch_size == 4 and cfg.lr == 0.002 and cfg.variant == "mtl-se"
    assert cfg.patch_size == [32, 32, 32] and cfg.lambda_growth_cap is None
    y = tmp_path / "c.yaml"
    y.write_text("recipe: paper\nbatch_size: 3\n")
    assert make_config("cpu-default", y).recipe == "paper"


def test_bad_configs_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unknown config key\(s\) \['learning_rate'\]"):
        make_config("cpu-default", overrides=["learning_rate=0.1"])
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"optimiser": "sgd"}))
    with pytest.raises(InputError, match=r"bad\.json: unknown config key\(s\) \['optimiser'\]"):
        make_config("cpu-default", f)
    with pytest.raises(InputError, match="unknown variant 'unet-xyz'"):
        make_config("cpu-default", overrides=["variant=unet-xyz"])
    with pytest.raises(InputError, match="unknown recipe"):
        make_config("gpu-fast")
    with pytest.raises(InputError, match="divisible by 8"):
        make_config("cpu-default", overrides=["patch_size=[60,64,48]"])
    with pytest.raises(InputError, match="key=value"):
        make_config("cpu-default", overrides=["lr"])
    (tmp_path / "broken.yaml").write_text("a: [1, 2\n")
    with pytest.raises(InputError, match="cannot parse config"):
        make_config("cpu-default", tmp_path / "broken.yaml")


def test_default_data_is_the_la2018_folder_beside_the_checkout() -> None:
    root = Path(make_config("cpu-default").data[0]["root"])
    assert root == Path(__file__).resolve().parents[3] / "shared" / "data" / "la2018"


def test_a_runs_config_json_reads_back_as_the_same_config(tmp_path: Path) -> None:
    """`train --resume` reads the run's config.json, which also holds what the trainer wrote for readers."""
    cfg = make_config("cpu-default", overrides=["iterations=7", "lr=0.0005", 'data=[{"root": "x", "weight": 1.0}]'])
    written = {**cfg.as_dict(), "departures_from_paper": departures(cfg.recipe),
               "stages": [{"from_iteration": 0, "changed": {}}]}
    (tmp_path / "config.json").write_text(json.dumps(written, default=str))
    again = make_config("paper", tmp_path / "config.json")  # the file's recipe wins over the default
    assert again.as_dict() == cfg.as_dict()


def test_cli_resume_continues_with_the_runs_own_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from LAScarSegLib.app.cli import main

    cfg = make_config("cpu-default", overrides=["iterations=7", "patch_size=[32,32,32]"])
    (tmp_path / "config.json").write_text(json.dumps({**cfg.as_dict(), "stages": []}, default=str))
    assert main(["train", "--out", str(tmp_path), "--resume", "--print-config", "lr=0.002"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["iterations"], shown["patch_size"], shown["lr"]) == (7, [32, 32, 32], 0.002)
    assert main(["train", "--out", str(tmp_path), "--print-config"]) == 0  # no resume: the recipe's values
    assert json.loads(capsys.readouterr().out)["iterations"] != 7
