"""The committed training configs load, and README's training chain is the one that made the
shipped weights: each stage starts from the stage before, the copied file is the last stage's,
and the shipped weights carry that stage's model config and the best (or last) validation PSNR
of its committed log."""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import pytest

from endolight.checkpoint import default_weights_path, read_metadata
from endolight.model.config import ModelConfig
from endolight.train import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_committed_config_loads(path):
    cfg = load_config(path)  # unknown keys and bad values raise
    assert cfg.out_dir.startswith("runs/")


def test_a_config_states_only_what_differs_from_its_base(tmp_path):
    # `base` names another config (relative to this one, itself possibly based): top-level keys
    # replace the base's, a section replaces key by key, and a cycle is refused.
    (tmp_path / "root.toml").write_text('out_dir = "runs/a"\nlr = 1e-3\nseed = 3\n'
                                        '[model]\nlowres = 128\ngrid_depth = 4\n[loss]\nwc = 2.0\n')
    (tmp_path / "mid.toml").write_text('base = "root.toml"\nlr = 2e-4\n[model]\ngrid_depth = 6\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "leaf.toml").write_text('base = "../mid.toml"\nout_dir = "runs/b"\n')
    cfg = load_config(tmp_path / "sub" / "leaf.toml")
    assert (cfg.out_dir, cfg.lr, cfg.seed) == ("runs/b", 2e-4, 3)
    assert (cfg.model.lowres, cfg.model.grid_depth, cfg.loss.wc) == (128, 6, 2.0)
    assert load_config(tmp_path / "root.toml").lr == 1e-3  # a base is read, not changed
    (tmp_path / "root.toml").write_text('base = "sub/leaf.toml"\n')
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "mid.toml")


def _chain(weights: str) -> tuple[list[tuple], str]:
    """README's chain for the shipped file ``endolight-{weights}.safetensors``: its steps from the
    last ``endolight train --config`` line that does not continue earlier weights, each
    ``("train", config path)`` or ``("soup", input files, output file)``; and the file the
    ``cp`` copies."""
    block = (ROOT / "README.md").read_text().split("## Training the shipped weights")[1]
    steps: list[tuple] = []
    for line in block.split("```")[1].splitlines():
        if m := re.match(r"endolight train --config (\S+)", line):
            path = ROOT / m.group(1)
            steps = [*steps, ("train", path)] if load_config(path).init_weights else [("train", path)]
        elif m := re.match(r"endolight soup (.+?) -o (\S+)", line):
            steps.append(("soup", m.group(1).split(), m.group(2)))
        elif m := re.match(rf"cp (\S+) src/endolight/weights/endolight-{weights}\.safetensors", line):
            return steps, m.group(1)
    raise AssertionError(f"README copies no endolight-{weights}.safetensors")


def _log(cfg: TrainConfig) -> list[dict[str, str]]:
    """A stage's log as docs/ keeps it, named by scripts/training_chain.py's own rule."""
    spec = importlib.util.spec_from_file_location("training_chain", ROOT / "scripts" / "training_chain.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with open(ROOT / script.stage_log(cfg)) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("weights", ["default", "paper"])
def test_readme_chain_made_the_shipped_weights(weights):
    # Every stage starts from weights an earlier step of the chain made (a stage's best or last
    # checkpoint, or an average of them), every average averages such weights, and the shipped
    # file is the chain's product: a stage's checkpoint, with its model config and the best (or
    # last) validation PSNR of its committed log, or an average, naming the files it averaged.
    steps, copied = _chain(weights)
    made: set[str] = set()
    last = None
    for step in steps:
        if step[0] == "train":
            cfg = load_config(step[1])
            assert cfg.init_weights is None or cfg.init_weights in made, (step, cfg.init_weights)
            made |= {f"{cfg.out_dir}/best.safetensors", f"{cfg.out_dir}/last.safetensors"}
            last = cfg
        else:
            assert set(step[1]) <= made, step
            made.add(step[2])
    assert copied in made
    meta = read_metadata(default_weights_path(weights))
    assert ModelConfig.from_json(meta["model_config"]) == last.model
    soups = {step[2]: step[1] for step in steps if step[0] == "soup"}
    if copied in soups:
        assert meta["soup"] == soups[copied]
        return
    kept = Path(copied).name
    assert Path(copied).parent == Path(last.out_dir) and kept in ("best.safetensors", "last.safetensors")
    rows = _log(last)
    psnr = [float(r["val_psnr"]) for r in rows]
    expected = max(psnr) if kept == "best.safetensors" else psnr[-1]
    assert float(meta["val_psnr"]) == pytest.approx(expected, abs=1e-9)
