"""The comparison: every method is one same-size call, every learned comparator learns, metrics
agree with scikit-image, trained methods are cached, and the CLI fails cleanly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import kornia
import numpy as np
import pytest
import torch
from skimage.color import rgb2lab
from skimage.measure import shannon_entropy
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from typer.testing import CliRunner

from endolight import compare
from endolight.checkpoint import default_weights_path, read_metadata, save_weights
from endolight.cli import app
from endolight.compare import QUICK, CompareConfig, figure_grid, organs_not_won, train_all, where_not_best
from endolight.data import PairDataset, list_frames
from endolight.enhancer import Enhancer
from endolight.io.tensors import to_tensor
from endolight.methods import LEARNED, METHODS, get_method
from endolight.methods import ours as ours_module
from endolight.methods.learned import Budget, NetMethod, batches, fit
from endolight.metrics import (
    brightness_uniformity,
    colourfulness,
    entropy,
    lifted_noise,
    lightness_order_error,
    no_reference,
    noise_sigma,
    psnr,
    ssim,
)
from endolight.model import DeepUPE, ModelConfig
from endolight.pairs import heldout_pairs
from endolight.train import load_config, seed_everything


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these small networks run faster so on a shared CPU (no oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pairs(data_root):
    it = heldout_pairs(160, data_root)
    return [next(it) for _ in range(2)]


@pytest.fixture(scope="module")
def batch(data_root):
    """One fixed batch of real training pairs (the comparators overfit it in a short run)."""
    refs = list_frames("train", data_root)[::50][:4]
    dataset = PairDataset(refs, crop=64, max_side=192)
    return next(batches(dataset, Budget(steps=1, batch_size=4, crop=64)))


def _all_methods():
    seed_everything(0)
    methods = dict(METHODS)
    methods.update({name: NetMethod(spec.build()) for name, spec in LEARNED.items()})
    methods["endolight"] = Enhancer(model=DeepUPE(), device="cpu").enhance_array
    return methods


def test_every_method_maps_a_frame_to_a_same_size_uint8_frame(pairs):
    dim = pairs[0].dim[:-3, 1:]  # odd sizes: the networks must not assume multiples of 4 or 8
    for name, method in _all_methods().items():
        out = method(dim)
        assert out.shape == dim.shape and out.dtype == np.uint8, name
        assert not np.array_equal(out, dim) or name == "identity", f"{name} left the frame unchanged"


@pytest.mark.parametrize("name", list(LEARNED))
def test_learned_networks_stay_in_range_on_extreme_frames(name):
    seed_everything(0)
    net = LEARNED[name].build().eval()
    frames = torch.stack([torch.zeros(3, 40, 52), torch.ones(3, 40, 52), torch.rand(3, 40, 52)])
    with torch.no_grad():
        out = net(frames)
    assert out.shape == frames.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


def _losses(name, batch, steps, key="loss", **kw):
    seed_everything(0)
    spec = LEARNED[name] if name in LEARNED else None
    net = spec.build() if spec else ours_module.Net()
    trainer = (spec.module if spec else ours_module).Trainer(net, steps, **kw)
    return [trainer.step(*batch)[key] for _ in range(steps)]


def _falls(losses, frac=0.9):
    return np.mean(losses[-3:]) < frac * np.mean(losses[:3])


@pytest.mark.parametrize("name", ["feqe", "zero-dce", "zero-dce++"])
def test_comparator_loss_falls_on_a_short_run(name, batch):
    losses = _losses(name, batch, 20, lr=1e-3)
    assert _falls(losses), losses


def test_retinexnet_both_phases_learn(batch):
    losses = _losses("retinexnet", batch, 40, lr=3e-3)
    decom, relight = losses[:20], losses[20:]
    assert _falls(decom) and _falls(relight, 0.93), losses


def test_dped_generator_fidelity_falls_while_adversarial_game_runs(batch):
    # The generator's adversarial term is a two-player game and need not fall; what it must do
    # is learn the pairs: its content + colour + TV terms.
    losses = _losses("dped", batch, 20, key="fidelity")
    assert _falls(losses, 0.7), losses


@pytest.mark.parametrize("variant", list(ours_module.ABLATION))
def test_our_model_learns_under_every_ablation_loss(variant, batch):
    losses = _losses("ours", batch, 60, lr=2e-3, weights=ours_module.ABLATION[variant])
    # SSIM-based terms move slowly from the identity-like start (grey S: 30 steps were too few).
    assert _falls(losses, 0.95), losses


def test_psnr_and_ssim_match_skimage(pairs):
    for p in pairs:
        a, b = to_tensor(p.dim)[None], to_tensor(p.target)[None]
        ref_psnr = peak_signal_noise_ratio(p.target / 255, p.dim / 255, data_range=1)
        ref_ssim = structural_similarity(p.dim / 255, p.target / 255, data_range=1, channel_axis=-1,
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert float(psnr(a, b)) == pytest.approx(ref_psnr, abs=1e-4)
        assert float(ssim(a, b)) == pytest.approx(ref_ssim, abs=1e-4)
        assert 0 < ref_ssim < 1


def hand_hue_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """|h_a - h_b| in degrees of the first pixels' CIELAB hue, by scikit-image."""
    ha, hb = (np.degrees(np.arctan2(lab[..., 2], lab[..., 1])) for lab in
              (rgb2lab(x[0, :, 0, 0].numpy()[None, None]) for x in (a, b)))
    return float(abs((ha - hb + 180) % 360 - 180)[0, 0])


def test_no_reference_metrics_on_known_images(pairs):
    rng = np.random.default_rng(0)
    flat = np.full((1, 3, 96, 128), 0.5, np.float32)
    noisy = torch.from_numpy(np.clip(flat + rng.normal(0, 4 / 255, flat.shape[-2:]), 0, 1).astype(np.float32))
    # Gray noise of a known sigma (4 levels) on a flat frame is measured as such.
    assert float(noise_sigma(noisy)) == pytest.approx(4.0, rel=0.1)
    assert float(noise_sigma(torch.from_numpy(flat))) == pytest.approx(0.0, abs=1e-3)
    # Noise lifted only in the input's dark half is what lifted_noise reports.
    image = torch.full((1, 3, 96, 128), 0.6)
    image[..., :, :64] = 0.05
    out = image.clone()
    out[..., :, :64] = torch.from_numpy(noisy.numpy()[..., :, :64])
    assert float(lifted_noise(out, image, quantile=0.4)) == pytest.approx(4.0, rel=0.15)
    assert float(lifted_noise(image, image)) == pytest.approx(0.0, abs=1e-3)
    # Even light is uniform; a bright centre with a dark rim is not.
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 96), torch.linspace(-1, 1, 128), indexing="ij")
    cone = (1 - 0.8 * (yy**2 + xx**2).clamp(max=1)).expand(1, 3, 96, 128)
    assert float(brightness_uniformity(torch.full((1, 3, 96, 128), 0.4))) == pytest.approx(1.0)
    assert float(brightness_uniformity(cone)) < 0.5
    # Colourfulness: zero for grey, Hasler & Suesstrunk's mean term for a flat colour.
    assert float(colourfulness(torch.full((1, 3, 8, 8), 0.3))) == pytest.approx(0.0, abs=1e-3)
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1.0
    assert float(colourfulness(red)) == pytest.approx(0.3 * np.hypot(255, 127.5), rel=1e-4)
    # Hue shift vs the input: none for more light (a gain in linear light), the hue rotation
    # for a channel swap.
    tissue = torch.tensor([0.6, 0.3, 0.25]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    brighter = kornia.color.linear_rgb_to_rgb(kornia.color.rgb_to_linear_rgb(tissue) * 1.8)
    assert float(no_reference(brighter, tissue)["hue_shift_input"]) == pytest.approx(0.0, abs=1e-3)
    swapped = float(no_reference(tissue[:, [1, 0, 2]], tissue)["hue_shift_input"])
    assert swapped > 60
    assert swapped == pytest.approx(hand_hue_difference(tissue, tissue[:, [1, 0, 2]]), abs=1e-3)
    # Entropy equals scikit-image's on the 8-bit luma; LOE is zero against itself.
    frame = to_tensor(pairs[0].target)[None]
    luma = np.round(255 * (0.299 * frame[0, 0] + 0.587 * frame[0, 1] + 0.114 * frame[0, 2]).numpy())
    assert float(entropy(frame)) == pytest.approx(shannon_entropy(luma.astype(np.uint8), base=2), abs=0.02)
    assert float(lightness_order_error(frame, frame)) == 0.0
    assert float(lightness_order_error(1 - frame, frame)) > 100


def test_trained_methods_are_cached_and_reloaded(tmp_path, data_root, monkeypatch):
    cfg = replace(QUICK, budget=Budget(steps=2, batch_size=1, crop=32), train_frames=2,
                  train_max_side=96, runs_dir=str(tmp_path / "runs"))
    first = train_all(cfg)
    assert set(first) == {*LEARNED, *(f"ours-{k}" for k in ("lm", "lm---2ls", "mae---ssim", "full"))}
    assert not any(t.cached for t in first.values())
    again = train_all(cfg)
    assert all(t.cached for t in again.values())
    for key in first:
        a, b = first[key].net.state_dict(), again[key].net.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), key
    # A different budget is not mistaken for the cached one.
    changed = train_all(replace(cfg, budget=Budget(steps=3, batch_size=1, crop=32)))
    assert not any(t.cached for t in changed.values())
    # Nor a model trained on pairs from an older degradation model.
    monkeypatch.setattr(compare, "DEGRADE_VERSION", compare.DEGRADE_VERSION - 1)
    assert not any(t.cached for t in train_all(cfg).values())
    # The registry loads a cached comparator as the same call as every other method.
    method = get_method("feqe", tmp_path / "runs" / "feqe.safetensors", device="cpu")
    assert method(np.zeros((20, 24, 3), np.uint8)).shape == (20, 24, 3)


class Stop(Exception):
    pass


@pytest.mark.parametrize("name", [*LEARNED, "ours"])
def test_a_stopped_training_run_resumes_to_the_uninterrupted_result(name, data_root, tmp_path):
    dataset = PairDataset(list_frames("train", data_root)[::60][:4], crop=48, max_side=128)
    budget = Budget(steps=4, batch_size=2, crop=48)  # RetinexNet switches phase at step 2

    def run(on_step=None, tag="a"):
        seed_everything(0)
        net = LEARNED[name].build() if name in LEARNED else ours_module.Net()
        trainer = (LEARNED[name].module if name in LEARNED else ours_module).Trainer(net, budget.steps)
        fitted = fit(trainer, dataset, budget, torch.device("cpu"), on_step, tmp_path / "s.pt", tag, every=2)
        return net.state_dict(), fitted

    whole, whole_fit = run()
    (tmp_path / "s.pt").unlink()

    def stop_at_3(i, _terms):
        if i == 3:
            raise Stop
    with pytest.raises(Stop):
        run(stop_at_3)
    steps = []
    resumed, resumed_fit = run(lambda i, _t: steps.append(i))
    assert steps == [3, 4]  # went on from the snapshot at step 2
    assert [t["loss"] for t in resumed_fit.log] == pytest.approx([t["loss"] for t in whole_fit.log], abs=1e-6)
    assert all(torch.allclose(whole[k].float(), resumed[k].float(), atol=1e-6) for k in whole), name
    steps.clear()
    run(lambda i, _t: steps.append(i), tag="another run")  # not this run's snapshot: starts over
    assert steps == [1, 2, 3, 4]


def test_each_protocol_has_its_own_cache_results_and_report():
    # The default protocol keeps the plain names; the paper's run never overwrites them.
    assert compare.for_protocol(CompareConfig(), "endoscope") == CompareConfig()
    paper = compare.for_protocol(CompareConfig(), "paper")
    assert (paper.protocol, paper.runs_dir, paper.out_dir) == ("paper", "runs/compare-paper", "results/paper")
    quick = compare.for_protocol(QUICK, "paper")
    assert (quick.runs_dir, quick.out_dir) == ("runs/compare-quick-paper", "results/quick/paper")
    assert compare.report_path("endoscope") == Path("docs/results.md")
    assert compare.report_path("paper") == Path("docs/results-paper.md")


def test_our_same_budget_model_is_the_shipped_config_and_old_caches_still_match():
    shipped = ModelConfig.from_json(read_metadata(default_weights_path())["model_config"])
    assert CompareConfig().ours_config == shipped
    paper = ModelConfig.from_json(read_metadata(default_weights_path("paper"))["model_config"])
    assert compare.for_protocol(CompareConfig(), "paper").ours_config == paper
    assert paper.illumination == "rgb" and paper != shipped  # the paper preset's per-channel model
    # The report names the config that trained each protocol's shipped weights.
    assert load_config(compare.TRAINING_CONFIG["paper"]).model == paper
    assert load_config(compare.TRAINING_CONFIG["endoscope"]).protocol == "endoscope"
    # A checkpoint saved before an option existed reads as the old behaviour: still a cache hit.
    legacy = ModelConfig(illumination="rgb", denoise=False).to_json().replace(', "denoise_blur": 0.0', "")
    assert "denoise_blur" not in legacy
    assert compare._same_config(legacy, ModelConfig(illumination="rgb", denoise=False))
    assert not compare._same_config(legacy, ModelConfig(illumination="rgb", denoise=False, denoise_blur=0.5))
    assert not compare._same_config(None, shipped) and not compare._same_config("{", shipped)


def test_a_cached_run_saved_before_a_loss_option_existed_still_matches(tmp_path):
    # Our ablation rows are keyed on their LossWeights. A checkpoint saved before `wc` and
    # `colour_sigma` existed lacks them: it matches while they hold their defaults (the old
    # behaviour), not once the new term is on; a changed or unknown field never matches.
    from endolight.losses import LossWeights

    cfg = replace(QUICK, budget=Budget(steps=2, batch_size=1, crop=32))
    model_cfg = ModelConfig()
    path = tmp_path / "ours.safetensors"

    def save(trainer_key: dict) -> None:
        key = {**compare._run_key({"weights": LossWeights()}, cfg), "trainer": trainer_key}
        save_weights(DeepUPE(model_cfg), path, key)

    old = compare._jsonable({"weights": LossWeights()})
    for name in ("wc", "colour_sigma"):
        del old["weights"][name]
    save(old)
    assert compare._checkpoint_matches(path, model_cfg, {"weights": LossWeights()}, cfg)
    assert not compare._checkpoint_matches(path, model_cfg, {"weights": LossWeights(wc=1.0)}, cfg)
    assert not compare._checkpoint_matches(path, model_cfg, {"weights": LossWeights(wm=2.0)}, cfg)
    save({"weights": {**old["weights"], "gone": 1}})
    assert not compare._checkpoint_matches(path, model_cfg, {"weights": LossWeights()}, cfg)


def test_loss_curves_draw_one_line_per_run_and_skip_empty_ones():
    from endolight.figures import COLOURS, loss_curves

    rows = [{"step": i + 1, "loss": 1 / (i + 1)} for i in range(40)]
    img = loss_curves({"a": rows, "b": [{**r, "loss": 2 * r["loss"]} for r in rows], "none": []})
    present = [bool(np.all(img == np.array(c, np.uint8), axis=-1).any()) for c in COLOURS[:3]]
    # Two runs drawn in the first two colours; the run without rows gets no line (nor legend).
    assert present == [True, True, False]


def test_where_not_best_reports_margins():
    summary = {"ours": {"psnr": 20.0, "ssim": 0.80, "delta_e": 5.0, "loe": 100.0},
               "a": {"psnr": 21.5, "ssim": 0.70, "delta_e": 4.0, "loe": 200.0},
               "b": {"psnr": 19.0, "ssim": 0.90, "delta_e": 6.0, "loe": 50.0}}
    lines = where_not_best(summary, "ours", ["ours", "a", "b"])
    assert lines == ["- PSNR: a by 1.50", "- SSIM: b by 0.1000", "- ΔE2000: a by 1.00", "- LOE: b by 50.0"]
    assert where_not_best({"ours": summary["ours"]}, "ours", ["ours"]) == []


def test_organs_not_won_names_each_organ_and_metric_lost():
    ours = {"psnr": 26.29, "ssim": 0.784, "delta_e": 3.09, "loe": 500.0}
    summary = {"all": {"ours": ours, "dped": ours},
               "sinus": {"ours": ours, "dped": {"psnr": 26.40, "ssim": 0.797, "delta_e": 3.60, "loe": 1.0}},
               "larynx": {"ours": ours, "dped": {"psnr": 20.0, "ssim": 0.5, "delta_e": 3.00, "loe": 1.0}},
               "gastro": {"ours": ours, "dped": {"psnr": 20.0, "ssim": 0.5, "delta_e": 9.00, "loe": 1.0}}}
    # LOE is not a per-organ column; the overall group is not an organ; gastro is won everywhere.
    assert organs_not_won(summary, "ours", ["ours", "dped"]) == [
        "- larynx: ΔE2000: dped by 0.09", "- sinus: PSNR: dped by 0.11; SSIM: dped by 0.0130"]


def test_organs_not_won_inside_the_view_reads_the_field_of_view_measures():
    # Sinus: lost on the whole frame's SSIM, won inside the view; laparoscopy the other way round.
    from endolight.evaluate import FOV

    def means(ssim, ssim_fov):
        return {"psnr": 25.0, "ssim": ssim, "delta_e": 3.0, "psnr_fov": 22.0, "ssim_fov": ssim_fov,
                "delta_e_fov": 5.0}

    summary = {"sinus": {"ours": means(0.784, 0.830), "dped": means(0.797, 0.816)},
               "laparoscopy": {"ours": means(0.724, 0.773), "dped": means(0.694, 0.783)}}
    assert organs_not_won(summary, "ours", ["ours", "dped"]) == ["- sinus: SSIM: dped by 0.0130"]
    assert organs_not_won(summary, "ours", ["ours", "dped"], FOV) == ["- laparoscopy: SSIM: dped by 0.0100"]


def test_eval_table_prints_psnr_ssim_and_delta_e_per_organ():
    from endolight.evaluate import markdown_table, summarize

    rows = [{"method": m, "organ": o, "image": "x", "psnr": p, "ssim": 0.5, "delta_e": d, "loe": 1.0}
            for m, o, p, d in (("a", "sinus", 26.0, 3.0), ("a", "sinus", 27.0, 4.0),
                               ("a", "larynx", 20.0, 9.0), ("b", "sinus", 25.0, 2.5),
                               ("b", "larynx", 21.0, 8.0))]
    md = markdown_table(summarize(rows), {"sinus": 2, "larynx": 1})
    assert "| sinus (2) | 26.50 / 0.500 / 3.50 | 25.00 / 0.500 / 2.50 |" in md
    assert "| larynx (1) | 20.00 / 0.500 / 9.00 | 21.00 / 0.500 / 8.00 |" in md
    assert "inside the field of view" not in md  # rows without the field-of-view measures


def test_eval_table_prints_the_field_of_view_measures_per_organ():
    # A border that decides a whole-frame cell (sinus: b's SSIM there, a's inside the view).
    from endolight.evaluate import TISSUE, markdown_table, summarize

    def row(m, o, ssim, ssim_fov):
        tissue = dict.fromkeys(TISSUE, 1.0) | {"psnr_fov": 22.0, "ssim_fov": ssim_fov, "delta_e_fov": 5.0}
        return {"method": m, "organ": o, "image": "x", "psnr": 25.0, "ssim": ssim, "delta_e": 3.0, "loe": 1.0,
                **tissue}

    rows = [row("a", "sinus", 0.78, 0.82), row("b", "sinus", 0.80, 0.81),
            row("a", "larynx", 0.70, 0.70), row("b", "larynx", 0.60, 0.60)]
    md = markdown_table(summarize(rows), {"sinus": 1, "larynx": 1})
    whole, _, view = md.partition("per organ inside the field of view")
    assert "| sinus (1) | 25.00 / 0.780 / 3.00 | 25.00 / 0.800 / 3.00 |" in whole
    assert "| sinus (1) | 22.00 / 0.820 / 5.00 | 22.00 / 0.810 / 5.00 |" in view
    assert "| larynx (1) | 22.00 / 0.700 / 5.00 | 22.00 / 0.600 / 5.00 |" in view


def test_figure_grid_lays_out_rows_and_columns():
    rows = [[np.full((60, 80, 3), v, np.uint8) for v in (0, 128, 255)] for _ in range(2)]
    grid = figure_grid(rows, ["input", "x", "ground truth"], cell=50)
    assert grid.dtype == np.uint8 and grid.ndim == 3
    assert grid.shape[1] == 3 * (50 + 4) and grid.shape[0] == 22 + 2 * (50 + 4)


def test_cli_compare_bad_weights_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["compare", "--quick", "--weights", str(tmp_path / "none.safetensors"),
                                      "--output", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "none.safetensors" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # failed before any training


def test_endolight_fidelity_options_by_name(pairs):
    # "endolight+hue+highlights" is the shipped model with those options, one name per table row.
    from endolight.fidelity import FidelityConfig

    dim = pairs[0].dim
    by_name = get_method("endolight+hue+highlights", device="cpu")(dim)
    fid = FidelityConfig(preserve_hue=True, highlights=True)
    direct = Enhancer(device="cpu", fidelity=fid).enhance_array(dim)
    assert np.array_equal(by_name, direct)
    assert not np.array_equal(by_name, get_method("endolight", device="cpu")(dim))
    with pytest.raises(KeyError, match="unknown endolight option 'sharpen'"):
        get_method("endolight+sharpen")
