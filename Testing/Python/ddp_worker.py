"""Run by test_trainer.py under torchrun: a few distributed steps, then this rank's weights.

Usage: torchrun --nproc_per_node=2 ddp_worker.py OUT INIT_WEIGHTS KEY=VALUE...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from LAScarSegLib.train.train_config import make_config
from LAScarSegLib.train.trainer import train

if __name__ == "__main__":
    out, init, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    cfg = make_config("cpu-default", overrides=overrides)
    summary, model = train(cfg, out, init_from=init, return_model=True, log=lambda m: None)
    rank = summary["rank"]
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, out / f"rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps(summary))
