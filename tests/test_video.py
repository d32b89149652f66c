"""Video path: sources and sinks, the threaded pipeline, temporal smoothing, bad input, CLI."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from endolight.bench import moving_clip, static_clip
from endolight.border import fill_border
from endolight.checkpoint import default_weights_path, save_weights
from endolight.cli import app
from endolight.data import CLIP, FrameRef, load_frame
from endolight.enhancer import Enhancer
from endolight.io.images import InputError, expand_sources, write_image
from endolight.io.sinks import VideoSink
from endolight.io.sources import Frame, open_source
from endolight.io.tensors import to_tensor
from endolight.metrics import flicker, mean_brightness, psnr
from endolight.model import DeepUPE, ModelConfig
from endolight.planar import render_plan
from endolight.temporal import GridSmoother, TemporalConfig, TemporalDenoiser
from endolight.video import VideoError, VideoOptions, enhance_video, process, stream_threads

SEQUENCE = "laparoscopy/sequence-320x240"  # 20 consecutive real frames


def _jittery_model(seed: int = 0) -> DeepUPE:
    """A random DeepUPE made sensitive to its input (weights x3, a live prediction head): its
    illumination estimate jumps with sensor noise, as a poorly trained net's does. Per-channel
    illumination, so the flicker is the grid's (what the smoother acts on): a grey S adds a
    per-pixel term (the largest channel) that no grid smoothing can steady."""
    torch.manual_seed(seed)
    model = DeepUPE(ModelConfig(illumination="rgb")).eval()
    with torch.no_grad():
        for m in model.coeffs.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
                m.weight.mul_(3.0)
        torch.nn.init.normal_(model.coeffs.pred.weight, std=0.05)
    return model


@pytest.fixture(scope="module")
def enhancer() -> Enhancer:
    return Enhancer(model=_jittery_model(), device="cpu")


@pytest.fixture(scope="module")
def sequence(data_root) -> list[np.ndarray]:
    files = sorted(expand_sources(data_root / SEQUENCE), key=lambda p: int(p.stem.split("_")[1]))
    return [load_frame(FrameRef(p, "laparoscopy")) for p in files]


def _write_clip(path: Path, frames: list[np.ndarray], fps: Fraction, tb: Fraction, step: int,
                faststart: bool = False) -> list[int]:
    """Encode frames at pts 0, step, 2 step... (time base ``tb``); returns the pts written."""
    h, w = frames[0].shape[:2]
    # faststart: the index (moov atom) first, so a truncated copy still opens and decodes part-way.
    sink = VideoSink(path, w, h, fps, tb, faststart=faststart)
    pts = [i * step for i in range(len(frames))]
    for i, (img, p) in enumerate(zip(frames, pts, strict=True)):
        sink.write(Frame(img, i, p, tb), img)
    sink.close()
    return pts


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        return {"frames": len(frames), "times": [f.time for f in frames], "size": (v.width, v.height),
                "rate": v.average_rate, "time_base": v.time_base, "audio": [a.codec_context.name for a in
                                                                             c.streams.audio],
                "images": [f.to_ndarray(format="rgb24") for f in frames]}


def test_round_trip_keeps_count_size_rate_and_timestamps(tmp_path, sequence, enhancer):
    fps, tb = Fraction(30000, 1001), Fraction(1, 30000)  # NTSC rate: a non-integer fps
    src = tmp_path / "in.mp4"
    pts = _write_clip(src, sequence, fps, tb, 1001)
    report = enhance_video(src, tmp_path / "out.mp4", enhancer, VideoOptions(temporal=None))
    out = _probe(tmp_path / "out.mp4")
    assert report.written == report.decoded == len(sequence) == out["frames"]
    assert out["size"] == (320, 240) and out["rate"] == fps
    assert out["times"] == pytest.approx([float(p * tb) for p in pts], abs=1e-6)
    assert report.latency_ms and 0 < report.latency(50) <= report.latency(99)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]  # no temp left
    # The content is the enhancement of each frame (up to H.264 loss), in order.
    decoded_in = [f.image for f in open_source(src)]
    for k in (0, len(sequence) - 1):
        expected = enhancer.enhance_array(decoded_in[k])
        assert np.abs(out["images"][k].astype(int) - expected).mean() < 3


def test_side_by_side_and_frame_folder_output(tmp_path, sequence, enhancer):
    src = tmp_path / "frames"
    for i, img in enumerate(sequence[:4]):
        write_image(src / f"f{i:02d}.png", img)
    report = enhance_video(src, tmp_path / "sbs.mkv", enhancer, VideoOptions(side_by_side=True))
    out = _probe(tmp_path / "sbs.mkv")
    assert report.written == out["frames"] == 4 and out["size"] == (640, 240)
    assert np.abs(out["images"][0][:, :320].astype(int) - sequence[0]).mean() < 3  # left: input
    # Right: the enhanced frame (the first of a stream: no past to smooth with), up to H.264 loss,
    # and far from the input it would be if the halves were swapped or both the input.
    right = out["images"][0][:, 320:].astype(int)
    assert np.abs(right - enhancer.enhance_array(sequence[0])).mean() < 3
    assert np.abs(right - sequence[0]).mean() > 10
    report = enhance_video(src, tmp_path / "out-frames", enhancer, VideoOptions(low_latency=True))
    written = sorted((tmp_path / "out-frames").iterdir())
    assert [p.name for p in written] == [f"frame_{i:06d}.png" for i in range(4)] and report.dropped == 0
    assert np.isfinite(report.latency(99))


def test_audio_is_copied_up_to_the_last_frame(tmp_path, data_root, enhancer):
    report = enhance_video(data_root / CLIP, tmp_path / "clip.mp4", enhancer, VideoOptions(max_frames=10))
    assert report.written == 10
    with av.open(str(tmp_path / "clip.mp4")) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert a.codec_context.name == "aac" and v.frames == 10
        end = 10 / 25
        packets = [p for p in c.demux(a) if p.dts is not None]
        assert packets and float(packets[-1].pts * packets[-1].time_base) < end
        assert float(packets[-1].pts * packets[-1].time_base) > end - 0.1  # ...but all of it


def test_truncated_mp4_keeps_the_frames_before_the_fault(tmp_path, sequence, enhancer):
    full = tmp_path / "full.mp4"
    _write_clip(full, sequence, Fraction(25), Fraction(1, 25), 1, faststart=True)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(VideoError, match="truncated|decoding failed") as info:
        enhance_video(cut, tmp_path / "out.mp4", enhancer)
    report = info.value.report
    assert 0 < report.written < len(sequence)
    assert f"the {report.written} frames before it were written" in str(info.value)
    out = _probe(tmp_path / "out.mp4")  # a complete, playable file
    assert out["frames"] == report.written
    assert out["times"] == pytest.approx([i / 25 for i in range(report.written)])
    # A recording cut before its index (moov atom last) cannot be opened: nothing is written.
    plain = tmp_path / "plain.mp4"
    _write_clip(plain, sequence[:5], Fraction(25), Fraction(1, 25), 1)
    (tmp_path / "plain-cut.mp4").write_bytes(plain.read_bytes()[:2000])
    with pytest.raises(InputError, match="corrupt, truncated or not a video"):
        enhance_video(tmp_path / "plain-cut.mp4", tmp_path / "none.mp4", enhancer)
    assert not (tmp_path / "none.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def test_ctrl_c_finishes_a_playable_file(tmp_path, sequence, enhancer):
    src = tmp_path / "in.mp4"
    _write_clip(src, sequence, Fraction(25), Fraction(1, 25), 1)

    class Interrupting:  # stops like Ctrl-C while enhancing frame 6
        keep_border, guide_params, planar, calls = False, None, False, 0

        def enhance_array(self, image, **kw):
            self.calls += 1
            if self.calls == 7:
                raise KeyboardInterrupt
            return enhancer.enhance_array(image, **kw)

    source = open_source(src)
    sink = VideoSink(tmp_path / "out.mp4", 320, 240, source.info.fps, source.info.time_base)
    report = process(source, [sink], Interrupting())
    assert report.interrupted and report.written == 6
    assert _probe(tmp_path / "out.mp4")["frames"] == 6


def test_odd_sizes(tmp_path, data_root, enhancer):
    sinus = load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[0], "sinus"))
    odd = cv2.copyMakeBorder(sinus, 0, 1, 0, 1, cv2.BORDER_REFLECT)  # 1921 x 1081
    for i in range(2):
        write_image(tmp_path / "odd" / f"{i}.png", odd)
    report = enhance_video(tmp_path / "odd", tmp_path / "odd.mp4", enhancer, VideoOptions(temporal=None))
    out = _probe(tmp_path / "odd.mp4")
    assert report.written == out["frames"] == 2 and out["size"] == (1921, 1081)
    write_image(tmp_path / "tiny" / "0.png", np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(InputError, match="too small"):
        enhance_video(tmp_path / "tiny", tmp_path / "tiny.mp4", enhancer)


def test_missing_empty_and_zero_frame_sources(tmp_path, sequence, enhancer):
    with pytest.raises(InputError, match="no such file"):
        enhance_video(tmp_path / "missing.mp4", tmp_path / "o.mp4", enhancer)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        enhance_video(tmp_path / "empty.mp4", tmp_path / "o.mp4", enhancer)
    # Seeded garbage (random bytes now and then probed as an audio-only stream: a flaky test).
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(InputError, match="not a video|no video stream"):
        enhance_video(tmp_path / "noise.mp4", tmp_path / "o.mp4", enhancer)
    for name in ("zero.mp4", "zero.mkv"):  # containers with a video track and no frame
        with av.open(str(tmp_path / name), "w") as out:
            st = out.add_stream("libx264", rate=25)
            st.width, st.height, st.pix_fmt = 64, 64, "yuv420p"
            out.start_encoding()
        with pytest.raises(InputError, match="no video stream|not a video"):
            enhance_video(tmp_path / name, tmp_path / "o.mp4", enhancer)
    # Headers intact, first frame cut: the stream opens but yields nothing.
    full = tmp_path / "full.mp4"
    _write_clip(full, sequence[:3], Fraction(25), Fraction(1, 25), 1, faststart=True)
    data = full.read_bytes()
    (tmp_path / "head.mp4").write_bytes(data[: data.find(b"mdat") + 200])
    with pytest.raises(InputError, match="no video frames decoded"):
        enhance_video(tmp_path / "head.mp4", tmp_path / "o.mp4", enhancer)
    assert not (tmp_path / "o.mp4").exists()
    with pytest.raises(InputError, match="refusing to overwrite"):
        enhance_video(full, full, enhancer)
    with pytest.raises(InputError, match="camera 99"):
        enhance_video(99, tmp_path / "o.mp4", enhancer)


def _flicker_and_psnr(enh: Enhancer, dims: list[np.ndarray], targets: list[np.ndarray], smooth: bool,
                      flow: bool = False) -> tuple[float, float]:
    smoother = GridSmoother() if smooth else None
    outs = torch.stack([to_tensor(enh.enhance_array(d, grid_filter=smoother)) for d in dims])
    inputs = torch.stack([to_tensor(d) for d in dims])
    target = torch.stack([to_tensor(t) for t in targets])
    return float(flicker(inputs, outs, flow=flow)), float(psnr(outs, target).mean())


def test_temporal_smoothing_lowers_flicker_on_a_static_real_clip(data_root):
    enh = Enhancer(model=_jittery_model(), device="cpu", keep_border=False)
    dims, targets = static_clip(data_root, 16, width=320)
    fl_frame, psnr_frame = _flicker_and_psnr(enh, dims, targets, smooth=False)
    fl_smooth, psnr_smooth = _flicker_and_psnr(enh, dims, targets, smooth=True)
    # The mechanism, on a stand-in (the per-channel jittery net, not the shipped model: that is
    # the next test). Fixed net, noise seed 7, CPU: deterministic. Measured flicker 0.794 ->
    # 0.693 (ratio 0.873; noise seeds 1-3: 0.82-0.94); bound 0.95 leaves 8 %, and a smoother
    # that does nothing gives exactly 1. PSNR measured -0.002 dB (seeds 1-3: -0.001..+0.005);
    # bound -0.01 dB: smoothing a still scene's grid must not cost quality.
    assert fl_smooth < 0.95 * fl_frame, (fl_smooth, fl_frame)
    assert psnr_smooth >= psnr_frame - 0.01, (psnr_smooth, psnr_frame)


@pytest.mark.skipif(not default_weights_path().is_file(), reason="shipped weights not trained yet")
def test_temporal_smoothing_with_the_shipped_weights(data_root):
    enh = Enhancer(device="cpu", keep_border=False)
    dims, targets = static_clip(data_root, 16, width=320)
    fl_frame, psnr_frame = _flicker_and_psnr(enh, dims, targets, smooth=False)
    fl_smooth, psnr_smooth = _flicker_and_psnr(enh, dims, targets, smooth=True)
    # The shipped (grey-illumination) weights: the grid smoother removes little of their flicker,
    # most of which is the per-pixel grey term and the lifted sensor noise, which no grid
    # smoothing steadies (docs/video.md: 0.936 -> 0.929 in the bench). Shipped weights, noise
    # seed 7, CPU: deterministic (two runs agree to 4 digits). Static clip measured 0.590 ->
    # 0.580, ratio 0.983 (noise seeds 1-3: 0.970-0.986). No few-per-cent margin exists under
    # an effect of 1.7 %, so the bound 0.995 only states that smoothing takes off at least
    # 0.5 %: a smoother that does nothing gives exactly 1, one with under a third of today's
    # effect fails. PSNR measured -0.003 dB (seeds 1-3: -0.000..+0.009); bound -0.01 dB.
    assert fl_smooth < 0.995 * fl_frame, (fl_smooth, fl_frame)
    assert psnr_smooth >= psnr_frame - 0.01, (psnr_smooth, psnr_frame)
    # A moving real clip (held-out frames 200-215): flow-warped flicker measured 0.607 -> 0.600,
    # ratio 0.988 (seeds 1-3: 0.972-0.986), same bound and reason as above. PSNR measured
    # -0.018 dB (seeds 1-3: +0.004..+0.020); bound -0.05 dB. This PSNR check does not catch
    # smearing: on this slow 16-frame pan a smoother with alpha 0.99 and no cut resets also
    # measured -0.018 dB (cuts are held by test_scene_cut_resets_the_smoother).
    dims, targets = moving_clip(data_root, 16, width=320)
    fl_frame, psnr_frame = _flicker_and_psnr(enh, dims, targets, smooth=False, flow=True)
    fl_smooth, psnr_smooth = _flicker_and_psnr(enh, dims, targets, smooth=True, flow=True)
    assert fl_smooth < 0.995 * fl_frame, (fl_smooth, fl_frame)
    assert psnr_smooth >= psnr_frame - 0.05, (psnr_smooth, psnr_frame)


def test_scene_cut_resets_the_smoother(sequence, data_root):
    enh = Enhancer(model=_jittery_model(), device="cpu", keep_border=False)
    other = load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[0], "sinus"), 320)
    other = cv2.resize(other, (320, 240), interpolation=cv2.INTER_AREA)
    smoother = GridSmoother(TemporalConfig(alpha=0.9))
    outs = [enh.enhance_array(f, grid_filter=smoother) for f in [*sequence[:5], other, other]]
    assert smoother.cuts == 2  # the first frame and the cut
    np.testing.assert_array_equal(outs[5], enh.enhance_array(other))  # nothing of the old scene
    # Consecutive frames of one scene are smoothed: frame 4 is not its per-frame result.
    assert not np.array_equal(outs[4], enh.enhance_array(sequence[4]))


def test_flicker_metric():
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.uniform(0.2, 0.6, (1, 3, 32, 32)).astype(np.float32))
    inputs = base * torch.linspace(0.9, 1.1, 6)[:, None, None, None]  # a slow exposure drift
    assert float(flicker(inputs, inputs * 1.4)) == pytest.approx(1.0, abs=1e-4)  # a steady gain
    wobble = inputs * torch.tensor([1.0, 1.1, 0.95, 1.1, 0.9, 1.05])[:, None, None, None]
    assert float(flicker(inputs, wobble)) > 2
    with pytest.raises(ValueError, match="T >= 2"):
        flicker(inputs[:1], inputs[:1])


def test_cli_video_and_errors(tmp_path, sequence):
    weights = tmp_path / "w.safetensors"
    save_weights(_jittery_model(), weights)
    src = tmp_path / "in.mp4"
    _write_clip(src, sequence[:5], Fraction(25), Fraction(1, 25), 1)
    runner = CliRunner()
    res = runner.invoke(app, ["video", str(src), "-o", str(tmp_path / "out.mp4"), "--weights", str(weights),
                              "--low-latency"])
    assert res.exit_code == 0, res.output
    assert "5 frames received, 5 written" in res.output and "0 dropped" in res.output and "p99" in res.output
    res = runner.invoke(app, ["video", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "x.mp4"),
                              "--weights", str(weights)])
    assert res.exit_code == 2 and "error:" in res.output and "no such file" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["video", str(src), "--weights", str(weights)])
    assert res.exit_code == 2 and "give an output" in res.output


# In a fresh process: the compiled kernels' signatures `warm_up` leaves, against those after
# a short stream of a real clip (printed as a list).
NEW_SIGNATURES = """
import importlib, pkgutil, sys
import endolight.fov, endolight.io.yuv, endolight.kernels, endolight.planar, endolight.temporal
from endolight.enhancer import Enhancer
from endolight.video import VideoOptions, enhance_video, warm_up
modules = [importlib.import_module(f"endolight.kernels.{m.name}")
           for m in pkgutil.iter_modules(endolight.kernels.__path__)]
modules += [endolight.fov, endolight.io.yuv, endolight.planar, endolight.temporal]
def signatures():
    return {(m.__name__, name, str(s)) for m in modules for name, f in vars(m).items()
            if hasattr(f, "py_func") and hasattr(f, "signatures") for s in f.signatures}
enhancer = Enhancer(device="cpu")
warm_up(enhancer)
before = signatures()
for i, source in enumerate(sys.argv[2:]):
    enhance_video(source, f"{sys.argv[1]}/out{i}.mp4", enhancer, VideoOptions(max_frames=6))
print(sorted(signatures() - before))
"""


def test_warm_up_leaves_no_kernel_to_load_during_a_stream(tmp_path, data_root):
    # A live stream warms the enhancer before its source opens: loading a compiled kernel
    # holds the GIL, so none may be left for the stream's first frames (the grid smoother's
    # histogram was, until 6 December, and its strided input at 1080p until 7 December). The
    # real clip's decoder planes take the planar path; at 1080p its small copy is thinned.
    import subprocess
    import sys

    big = tmp_path / "1080p.mp4"
    with av.open(str(data_root / CLIP)) as src:
        decoded = zip(range(6), src.decode(video=0), strict=False)
        frames = [cv2.resize(f.to_ndarray(format="rgb24"), (1920, 1080)) for _, f in decoded]
    sink = VideoSink(big, 1920, 1080, Fraction(25), Fraction(1, 25))
    for i, image in enumerate(frames):
        sink.write(Frame(image, i, i, Fraction(1, 25)), image)
    sink.close()
    sources = [str(data_root / CLIP), str(big)]
    proc = subprocess.run([sys.executable, "-c", NEW_SIGNATURES, str(tmp_path), *sources],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout


def test_cli_crf_sets_the_outputs_quality(tmp_path, sequence):
    # x264's quality setting reaches the encoder: a coarser one writes a smaller file, further
    # from the lossless enhanced frames; an impossible value is refused before any work.
    src = tmp_path / "in.mp4"
    _write_clip(src, sequence[:6], Fraction(25), Fraction(1, 25), 1)
    frames = _cli_frames(src, tmp_path / "png", "--no-temporal")
    sizes, errors = {}, {}
    for crf in (18, 35):
        out = tmp_path / f"crf{crf}.mp4"
        res = CliRunner().invoke(app, ["video", str(src), "-o", str(out), "--no-temporal", "--crf", str(crf)])
        assert res.exit_code == 0, res.output
        with av.open(str(out)) as c:
            decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        sizes[crf] = out.stat().st_size
        errors[crf] = np.mean([np.abs(d.astype(int) - f).mean()
                               for d, f in zip(decoded, frames, strict=True)])
    assert sizes[35] < 0.5 * sizes[18]
    assert errors[18] < errors[35]
    res = CliRunner().invoke(app, ["video", str(src), "-o", str(tmp_path / "x.mp4"), "--crf", "60"])
    assert res.exit_code == 2 and "crf" in res.output.lower() and not (tmp_path / "x.mp4").exists()


def test_border_follows_the_clips_accumulated_view(tmp_path, data_root, enhancer):
    # A real clip with a round view, dimmed and noisy: every pixel outside the view of the
    # frames seen before it (1, 2, 4, 8: the tracker's schedule) is the border's, to the byte.
    from endolight.data import list_frames
    from endolight.degrade import DegradeConfig
    from endolight.pairs import make_pair

    refs = [r for r in list_frames("heldout", data_root) if r.index is not None][:12]
    frames = [make_pair(load_frame(r, 320), 50 + i, DegradeConfig())[0] for i, r in enumerate(refs)]
    src = tmp_path / "frames"
    for i, img in enumerate(frames):
        write_image(src / f"f{i:02d}.png", img)
    enhance_video(src, tmp_path / "out", enhancer, VideoOptions(temporal=None))
    outs = [cv2.imread(str(p))[..., ::-1] for p in sorted((tmp_path / "out").iterdir())]
    assert len(outs) == 12
    for k in (0, 5, 11):
        view = _view_in_force(frames, k)
        assert 0.6 < view.mean() < 0.95
        assert np.array_equal(outs[k][~view], _border_written(frames[k], ~view))
        assert np.abs(outs[k][view].astype(int) - frames[k][view]).mean() > 1  # inside: enhanced


def _border_written(frame: np.ndarray, border: np.ndarray) -> np.ndarray:
    """The pixels of ``border`` as the enhancer writes them (:func:`endolight.border.fill_border`)."""
    return fill_border(np.zeros_like(frame), frame, border)[border]


def _view_in_force(frames: list[np.ndarray], k: int) -> np.ndarray:
    """The view `video` uses at frame ``k`` of a scene: the first frame's own, then the one
    FovTracker re-derived once 2, 4, 8... frames were seen, from the frame after."""
    from endolight.fov import detect_fov

    seen = 1 << max(k, 1).bit_length() - 1
    return detect_fov(frames[:seen])


def _cli_frames(src: Path, out: Path, *args: str) -> list[np.ndarray]:
    """``endolight video SRC -o OUT ARGS`` with the shipped weights, to a folder of PNG frames."""
    res = CliRunner().invoke(app, ["video", str(src), "-o", str(out), *args])
    assert res.exit_code == 0, res.output
    return [cv2.imread(str(p))[..., ::-1] for p in sorted(out.iterdir())]


def test_cli_video_options_change_the_output_as_documented(tmp_path, data_root):
    from endolight.bench import flat_regions, noise_sigma
    from endolight.degrade import DegradeConfig
    from endolight.fov import detect_fov
    from endolight.pairs import make_pair

    clean = load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[0], "sinus"), 320)
    frames = [make_pair(clean, 10 + i, DegradeConfig())[0] for i in range(4)]  # dim and noisy, round view
    src = tmp_path / "in"
    for i, img in enumerate(frames):
        write_image(src / f"f{i:02d}.png", img)  # lossless input: outputs compare to the byte
    view = detect_fov(frames[:1])
    base = _cli_frames(src, tmp_path / "base")
    inside = [f[view].astype(int) for f in frames]

    def mean_in(outs: list[np.ndarray]) -> float:
        return float(np.mean([o[view].mean() for o in outs]))

    # The shipped model's documented effects (README): each holds for any model that brightens.
    # --strength: 0 is the input to the byte (the temporal noise reduction, a step of its own,
    # off); 0.5 lies between the input and full strength.
    none = _cli_frames(src, tmp_path / "s0", "--strength", "0", "--no-temporal")
    assert all(np.array_equal(o, f) for o, f in zip(none, frames, strict=True))
    half = _cli_frames(src, tmp_path / "s05", "--strength", "0.5")
    assert np.mean([f.mean() for f in inside]) + 2 < mean_in(half) < mean_in(base) - 2
    # --exposure: the mean luma inside the view in force follows the target, whatever the
    # model's own level. Each frame alone meets it to 0.01 (measured 0.349-0.351 and 0.598-0.599;
    # tests/test_fidelity.py::test_exposure_target_is_met). The temporal noise reduction then
    # blends each pixel with the past where the input is still, and these four frames' exposures
    # jump (0.1-1 apart, drawn per frame), and so does the view in force over a scene's first
    # frames (here 52, 52, 38, 38 % of the frame; the clean view is 43 %): a frame met its target
    # over another view than the next one's, so the blend's mean misses it either way. Measured
    # 0.330-0.342 for 0.35 and 0.540-0.571 for 0.6 when frame 0's view was cut to 27 %, then
    # 0.349-0.406 for 0.35 and 0.598-0.670 for 0.6 since dim frames' views are found at a common
    # exposure (4 Dec). The bound with temporal filtering: 0.1 either way, 1.4x the largest miss
    # (each frame alone is held to 0.01 above).
    def luma_in_view(outs: list[np.ndarray]) -> list[float]:
        views = [torch.from_numpy(_view_in_force(frames, k))[None, None] for k in range(len(outs))]
        return [float(mean_brightness(to_tensor(o)[None], v)[0]) for o, v in zip(outs, views, strict=True)]

    for t in (0.35, 0.6):
        alone = luma_in_view(_cli_frames(src, tmp_path / f"e{round(t * 100)}", "--exposure", str(t),
                                         "--no-temporal"))
        assert all(abs(v - t) < 0.01 for v in alone), (t, alone)
        filtered = luma_in_view(_cli_frames(src, tmp_path / f"et{round(t * 100)}", "--exposure", str(t)))
        assert all(abs(v - t) < 0.1 for v in filtered), (t, filtered)
    # (Denoising of lifted regions is the model's own, in every frame: no option.)
    flat = flat_regions(clean, view)
    plain = _cli_frames(src, tmp_path / "plain", "--no-temporal")
    # --no-keep-border: the border is brightened too; by default it is not enhanced (to the byte:
    # the input, its noise flattened by endolight.border).
    # The video's view is accumulated over the scene's first frames (FovTracker), re-derived
    # once 1, 2, 4, 8... were seen: frame k keeps the border of the view built from `seen` frames.
    for k in range(len(frames)):
        border = ~_view_in_force(frames, k)
        for outs in (plain, base):
            np.testing.assert_array_equal(outs[k][border], _border_written(frames[k], border))
    free = _cli_frames(src, tmp_path / "nokeep", "--no-keep-border")
    assert free[0][~view].mean() > frames[0][~view].mean() + 1
    # --no-temporal: each frame is enhanced on its own (what enhance_array gives per frame);
    # with smoothing and temporal noise reduction the later frames differ from that.
    enh = Enhancer(device="cpu")
    for k in (0, 3):
        np.testing.assert_array_equal(plain[k], enh.enhance_array(frames[k], fov=_view_in_force(frames, k)))
    assert np.abs(base[3].astype(int) - plain[3]).mean() > 0.5
    # --no-temporal-denoise: grid smoothing only, so still-scene noise stays higher.
    nodn = _cli_frames(src, tmp_path / "nodn", "--no-temporal-denoise")
    assert noise_sigma(base[3], flat) < 0.9 * noise_sigma(nodn[3], flat)


def test_scene_cut_resets_the_field_of_view(tmp_path, data_root, enhancer):
    from endolight.fov import detect_fov

    refs = [FrameRef(p, "sinus") for p in expand_sources(data_root / "sinus/clip-a")[:4]]
    scope_a = [cv2.resize(load_frame(r, 320), (320, 240), interpolation=cv2.INTER_AREA) for r in refs]
    scope_b = [cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA) for f in
               (load_frame(FrameRef(p, "laparoscopy"), 320) for p in
                sorted(expand_sources(data_root / SEQUENCE), key=lambda p: int(p.stem.split("_")[1]))[:4])]
    view_a, view_b = detect_fov(scope_a[:1]), detect_fov(scope_b[:1])
    assert (view_b & ~view_a).mean() > 0.05  # the second scope sees where the first had border
    src = tmp_path / "frames"
    for i, img in enumerate([*scope_a, *scope_b]):
        write_image(src / f"f{i:02d}.png", img)
    report = enhance_video(src, tmp_path / "out", enhancer)
    assert report.cuts == 2  # the first frame and the cut
    outs = [cv2.imread(str(p))[..., ::-1] for p in sorted((tmp_path / "out").iterdir())]
    # The cut is detected while frame 4 is enhanced (it still has the old view: the old border
    # kept); from frame 5 on the view is the new scope's: enhanced where the old scope's border
    # was (kept to the byte had the old mask stayed), and its own border kept.
    old_view = detect_fov(scope_a)  # the view accumulated over the first scene (4 frames)
    np.testing.assert_array_equal(outs[4][~old_view], _border_written(scope_b[0], ~old_view))
    newly_seen = view_b & ~view_a
    assert np.abs(outs[5][newly_seen].astype(int) - scope_b[1][newly_seen]).mean() > 5
    np.testing.assert_array_equal(outs[5][~view_b], _border_written(scope_b[1], ~view_b))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=st.integers(8, 90).map(lambda v: 2 * v + 1), h=st.integers(8, 90).map(lambda v: 2 * v + 1))
def test_any_odd_size_round_trips_through_the_video_writer(tmp_path, w, h):
    rng = np.random.default_rng(w * 1000 + h)
    frames = [cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 3) for _ in range(3)]
    path = tmp_path / f"odd-{w}x{h}.mp4"
    _write_clip(path, frames, Fraction(25), Fraction(1, 25), 1)
    out = _probe(path)
    assert out["size"] == (w, h) and out["frames"] == 3
    for got, want in zip(out["images"], frames, strict=True):
        # Lossy, but the same picture: measured up to 3.3 levels on a 17x17 texture (CRF 18);
        # another picture of the same statistics differs by ~10.
        assert np.abs(got.astype(int) - want).mean() < 5


def test_written_video_carries_the_bt601_tag(tmp_path, sequence):
    from endolight.io.sinks import BT601, LIMITED_RANGE

    path = tmp_path / "tagged.mp4"
    _write_clip(path, sequence[:2], Fraction(25), Fraction(1, 25), 1)
    with av.open(str(path)) as c:
        ctx = c.streams.video[0].codec_context
        assert int(ctx.colorspace) == BT601 == 6 and int(ctx.color_range) == LIMITED_RANGE == 1
        # The colours decode back: the tag and the conversion agree (a BT.709 tag would shift them).
        img = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(img.astype(int) - sequence[0]).mean() < 3


def test_over_limit_frames_give_the_clear_error_in_video(tmp_path, sequence, monkeypatch):
    import endolight.io.images as images
    import endolight.io.sources as sources

    clip = tmp_path / "in.mp4"
    _write_clip(clip, sequence[:2], Fraction(25), Fraction(1, 25), 1)
    write_image(tmp_path / "frames" / "0.png", sequence[0])
    # A 64 MP frame costs 200 MB; the limit is lowered below 320 x 240 instead (same check).
    monkeypatch.setattr(images, "MAX_PIXELS", 320 * 240 - 1)
    monkeypatch.setattr(sources, "MAX_PIXELS", 320 * 240 - 1)
    for src, message in ((clip, "outside the supported sizes"), (tmp_path / "frames", "MP limit")):
        res = CliRunner().invoke(app, ["video", str(src), "-o", str(tmp_path / "o.mp4")])
        assert res.exit_code == 2 and res.output.startswith("error: ") and message in res.output, res.output
        assert "Traceback" not in res.output and not (tmp_path / "o.mp4").exists()


def test_stream_threads_sets_one_torch_and_one_opencv_thread_then_restores(enhancer):
    # A fused-path stream runs PyTorch and OpenCV on one thread each (their barriers and wake-ups
    # cost more than they save beside the codec), and gives both back as they were; the plain
    # PyTorch path keeps its threads.
    saved = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(2)
    torch.set_num_threads(2)
    try:
        with stream_threads(enhancer):
            assert (cv2.getNumThreads(), torch.get_num_threads()) == (1, 1)
        assert (cv2.getNumThreads(), torch.get_num_threads()) == (2, 2)
        with stream_threads(Enhancer(model=enhancer.model, device="cpu", fused=False)):
            assert (cv2.getNumThreads(), torch.get_num_threads()) == (2, 2)
    finally:
        cv2.setNumThreads(saved[0])
        torch.set_num_threads(saved[1])


class _Kept:
    """A sink that keeps the frames it is given."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def write(self, frame: Frame, image: np.ndarray) -> None:
        self.images.append(image.copy())

    def close(self) -> None:
        return None


def test_a_stream_is_its_stages_run_frame_by_frame(tmp_path, data_root):
    # What `process` writes from decoded planes is the planar path's two halves, the grid
    # smoother and the temporal filter run on each frame in order: the small luma the planner
    # hands the filter is the filter's own motion map.
    path = tmp_path / "clip.mp4"
    _write_clip(path, moving_clip(data_root, 6, 320)[0], Fraction(25), Fraction(1, 25), 1)
    enhancer = Enhancer(weights="default", keep_border=False)
    sink = _Kept()
    report = process(open_source(path), [sink], enhancer)
    assert report.error is None and report.enhanced == 6
    smoother, denoiser = GridSmoother(TemporalConfig()), TemporalDenoiser(TemporalConfig())
    source = open_source(path)
    want = [denoiser(f.planes, render_plan(enhancer.plan_planes(f.planes, grid_filter=smoother)))
            for f in source]
    source.close()
    assert len(sink.images) == len(want) == 6
    for got, expected in zip(sink.images, want, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_i420_frames_are_encoded_from_their_own_memory(tmp_path, data_root):
    # A contiguous I420 frame goes to the encoder without a copy: the file must be the one the
    # copied route writes (a view of the same frames), and decode to those frames.
    with av.open(str(data_root / CLIP)) as src:
        frames = [f.to_ndarray(format="yuv420p") for _, f in zip(range(4), src.decode(video=0), strict=False)]
    h, w = frames[0].shape[0] * 2 // 3, frames[0].shape[1]
    strided = [np.pad(f, ((0, 0), (0, 8)))[:, :w] for f in frames]  # same pixels, not contiguous
    assert all(f.flags.c_contiguous for f in frames) and not any(f.flags.c_contiguous for f in strided)
    files = []
    for name, images in (("own.mp4", frames), ("copied.mp4", strided)):
        sink = VideoSink(tmp_path / name, w, h, Fraction(25), Fraction(1, 25))
        for i, image in enumerate(images):
            sink.write(Frame(image, i, i, Fraction(1, 25)), image)
        files.append(sink.close().read_bytes())
    assert files[0] == files[1]
    with av.open(str(tmp_path / "own.mp4")) as written:
        decoded = [f.to_ndarray(format="yuv420p") for f in written.decode(video=0)]
    assert len(decoded) == 4
    for got, want in zip(decoded, frames, strict=True):
        assert np.abs(got.astype(int) - want).mean() < 1.5  # CRF 18: near lossless
