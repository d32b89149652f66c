"""Weight averaging (endolight soup): the average of real weights files, tensor by tensor, scored
on real validation pairs; refused for different models and for an output that is an input."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from endolight.checkpoint import default_weights_path, load_model, read_metadata, save_weights
from endolight.cli import app
from endolight.soup import average_weights

runner = CliRunner()


def _moved(tmp_path, scale: float):
    """The shipped default weights with every tensor scaled: a second file of the same model."""
    model = load_model()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    path = tmp_path / f"scaled-{scale}.safetensors"
    save_weights(model, path)
    return path


def test_average_is_the_mean_of_each_tensor(tmp_path):
    shipped = default_weights_path()
    other = _moved(tmp_path, 0.5)
    got = average_weights([shipped, other]).state_dict()
    a, b = load_file(str(shipped)), load_file(str(other))
    assert got.keys() == a.keys()
    for k in a:  # (a + 0.5 a) / 2 = 0.75 a, computed in float64 and rounded once
        torch.testing.assert_close(got[k], ((a[k].double() + b[k].double()) / 2).float(), rtol=0, atol=0)
    assert any(not torch.equal(got[k], a[k]) for k in a)
    same = average_weights([shipped, shipped]).state_dict()  # a file averaged with itself is itself
    assert all(torch.equal(same[k], a[k]) for k in a)


def test_cli_soup_writes_scores_and_refuses_bad_input(tmp_path, data_root):
    other = _moved(tmp_path, 0.9)
    out = tmp_path / "soup.safetensors"
    config = tmp_path / "val.toml"
    config.write_text(f'data_root = "{data_root}"\nmax_frames = 8\nval_max_side = 128\n')
    r = runner.invoke(app, ["soup", "default", str(other), "-o", str(out), "--config", str(config)])
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if "val PSNR" in line]
    assert [row.split(":")[0] for row in rows] == ["default", str(other), "average"]
    psnrs = [float(row.split("val PSNR ")[1].split()[0]) for row in rows]
    assert psnrs[0] > psnrs[1] + 1  # weights scaled by 0.9 are far off the trained ones...
    assert psnrs[1] < psnrs[2] < psnrs[0]  # ...and their average with them in between
    meta = read_metadata(out)
    assert meta["soup"] == ["default", str(other)] and abs(meta["val_psnr"] - psnrs[2]) < 1e-3
    # Refused with a clear message: another model, an output that is an input, too few files,
    # a file that is not a weights file.
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not tensors")
    for args, words in ((["default", "paper"], "model configs differ"), (["default", str(other)], "inputs"),
                        (["default"], "at least two"), (["default", str(junk)], "not a weights file")):
        target = other if words == "inputs" else tmp_path / "x.safetensors"
        r = runner.invoke(app, ["soup", *args, "-o", str(target)])
        assert r.exit_code == 2 and words in r.output, r.output
    assert not (tmp_path / "x.safetensors").exists()
