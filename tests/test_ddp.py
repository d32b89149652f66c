"""`endolight train` under torchrun: 2 CPU processes with gloo must end with identical weights."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

from endolight.model import DeepUPE
from endolight.train import seed_everything

# Each rank runs the real CLI. The DeepUPE constructor and the dataset are wrapped only to
# record what the rank ended with and which samples it drew: rank<R>.safetensors / .json.
WORKER = textwrap.dedent("""
    import json, os, sys
    import endolight.train as train_mod
    from endolight.cli import app
    from safetensors.torch import save_file

    nets, drawn = [], []
    Base = train_mod.DeepUPE

    def make(cfg):
        nets.append(Base(cfg))
        return nets[-1]

    class Recording(train_mod.PairDataset):
        def __getitem__(self, idx):
            drawn.append(idx)
            return super().__getitem__(idx)

    train_mod.DeepUPE = make
    train_mod.PairDataset = Recording
    out, rank = sys.argv[1], os.environ["RANK"]
    app(["train", "--config", sys.argv[2], "--out-dir", out], standalone_mode=False)
    state = {k: v.contiguous() for k, v in nets[0].state_dict().items()}
    save_file(state, os.path.join(out, f"rank{rank}.safetensors"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump(drawn, fh)
""")

CONFIG = """
epochs = 1
batch_size = 2
crop = 64
max_side = 128
repeats = 2
val_max_side = 64
max_frames = 4
device = "cpu"
seed = 3
"""


def test_two_gloo_processes_hold_identical_weights(tmp_path: Path, data_root: Path) -> None:
    worker, config, out = tmp_path / "worker.py", tmp_path / "tiny.toml", tmp_path / "run"
    worker.write_text(WORKER)
    config.write_text(CONFIG)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ENDOLIGHT_DATA": str(data_root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), str(out), str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # The sampler split the epoch: 4 frames x 2 repeats = 8 samples, 4 per rank, none shared.
    drawn0, drawn1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(drawn0) == len(drawn1) == 4 and sorted(drawn0 + drawn1) == list(range(8))

    rank0, rank1 = (load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between ranks"

    # Training moved the weights, and what rank 0 saved is what both ranks hold.
    seed_everything(3)
    init = DeepUPE().state_dict()
    assert any(not torch.equal(rank0[k], init[k]) for k in rank0)
    saved = load_file(str(out / "last.safetensors"))
    assert all(torch.equal(saved[k], rank0[k]) for k in rank0)

    # Rank 0 alone logs: one epoch row, one progress bar, one final line.
    with (out / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1"]
    assert proc.stdout.count("checkpoints in") == 1

