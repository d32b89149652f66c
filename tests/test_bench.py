"""``endolight bench``: a real run whose printed tables agree with themselves (fps from ms/frame,
speed-ups from the two paths' timings, the progress lines from the table). No timing is asserted:
speed is the benchmark's output, not a test."""

from __future__ import annotations

import math
import re

import av
import pytest
from typer.testing import CliRunner

from endolight import bench
from endolight.cli import app

# The CI size (QUICK) still runs two clips and a 1080p encode; the consistency checked here does
# not depend on the size, so the test runs one 720p clip with a handful of frames.
TINY = bench.BenchConfig(sizes=("720p",), frames=4, compute_frames=2, torch_frames=2, flicker_frames=3,
                         rounds=1, quick=True)


def _table(text: str, header_start: str) -> list[dict[str, str]]:
    """The rows of the Markdown table whose header starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    names = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(names, (c.strip() for c in line.strip("|").split("|")), strict=True)))
    return rows


@pytest.fixture(scope="module")
def output(data_root, tmp_path_factory) -> tuple[str, str]:
    mp = pytest.MonkeyPatch()
    mp.setattr(bench, "QUICK", TINY)
    md = tmp_path_factory.mktemp("bench") / "bench.md"
    try:
        r = CliRunner().invoke(app, ["bench", "--quick", "--rounds", "2", "-o", str(md)])
    finally:
        mp.undo()
    assert r.exit_code == 0, r.output
    return r.output, md.read_text()


def test_bench_tables_are_consistent_with_their_timings(output):
    printed, md = output
    assert md.strip() in printed  # the -o file is the printed tables
    speed = _table(md, "| size | path | mode |")
    assert {(r["size"], r["path"], r["mode"]) for r in speed} == {
        ("720p", p, m) for p in ("fused", "pytorch") for m in ("compute", "end-to-end")}
    ms = {}
    for r in speed:
        t = float(r["ms/frame"])
        assert t > 0 and float(r["fps"]) == pytest.approx(1e3 / t, rel=0.01, abs=0.06), r
        assert int(r["frames"]) >= 2
        if r["mode"] == "end-to-end":
            assert float(r["peak RSS MB"]) > 100 and 0 < float(r["latency p50 ms"]) <= float(r["p99 ms"])
        ms[r["path"], r["mode"]] = t
        # The progress line printed while it ran carries the same timing.
        line = re.search(rf"{r['size']} {r['path']}\s+{r['mode']}\s+([\d.]+) ms/frame", printed)
        assert line and float(line.group(1)) == t, r
    (ratios,) = _table(md, "| size | speed-up compute |")
    for mode, column in (("compute", "speed-up compute"), ("end-to-end", "speed-up end-to-end")):
        want = ms["pytorch", mode] / ms["fused", mode]
        # Printed to 0.1x from times printed to 0.1 ms: allow both roundings.
        slack = 0.05 + want * 0.05 * (1 / ms["pytorch", mode] + 1 / ms["fused", mode]) + 1e-9
        assert abs(float(ratios[column].rstrip("x")) - want) <= slack, (column, ratios, ms)


def test_bench_ratio_to_the_bare_codec_is_its_own_rates(output):
    printed, md = output
    (row,) = _table(md, "| clip | frames | bare ms/frame |")
    speed = _table(md, "| size | path | mode |")
    (fused,) = [r for r in speed if (r["path"], r["mode"]) == ("fused", "end-to-end")]
    assert row["clip"] == "720p" and int(row["frames"]) >= 2
    bare_ms, bare_fps, ours = float(row["bare ms/frame"]), float(row["bare fps"]), float(row["endolight fps"])
    assert bare_fps == pytest.approx(1e3 / bare_ms, rel=0.01, abs=0.06), row
    # Two rounds (--rounds 2 over TINY's one): the ratio is the median of the two, each a ratio
    # of two positive rates.
    rounds = [float(r) for r in row["per round"].split(", ")]
    assert len(rounds) == 2 and all(r > 0 for r in rounds), row
    assert abs(float(row["endolight / bare"]) - (rounds[0] + rounds[1]) / 2) <= 0.01, row
    # The first round's endolight time is the fused file -> file row of the speed table (the same
    # run); the medians of two are means. So with e1 that row's ms, e2 = 2 * (1000 / ours) - e1,
    # and the bare loop's two times (ratio x endolight's time) average to the printed bare ms.
    e1 = float(fused["ms/frame"])
    e2 = 2 * 1e3 / ours - e1
    assert e2 > 0, (row, fused)
    bare_mean = (rounds[0] * e1 + rounds[1] * e2) / 2
    # Ratios printed to 0.01, times to 0.1 ms, rates to 0.1 fps: allow the roundings.
    slack = 0.005 * (e1 + e2) + 0.05 * (rounds[0] + rounds[1]) + 0.05 * 2e3 / ours**2 * max(rounds) + 0.05
    assert abs(bare_mean - bare_ms) <= slack, (row, fused, bare_mean)
    stolen = float(row["CPU stolen by the host"].rstrip(" %"))
    assert 0 <= stolen <= 100, row  # Linux (CI): measured, not NaN
    line = re.search(r"720p bare decode\+encode\s+([\d.]+) ms/frame .* endolight / bare ([\d.]+) "
                     r"\(rounds ([\d., ]+); CPU stolen by the host (\d+) %\)", printed)
    assert line, printed
    assert float(line.group(1)) == bare_ms and float(line.group(4)) == stolen
    assert line.group(2) == row["endolight / bare"] and line.group(3) == row["per round"]


def test_stolen_share_of_cpu_ticks():
    assert bench.stolen_share((10, 100), (30, 300)) == pytest.approx(0.1)
    assert math.isnan(bench.stolen_share(None, (30, 300))) and math.isnan(bench.stolen_share((10, 100), None))
    assert math.isnan(bench.stolen_share((10, 100), (10, 100)))  # no time passed: unknown, not 0
    first = bench.cpu_ticks()
    assert first is not None and 0 <= first[0] <= first[1]  # Linux (CI) has /proc/stat
    sum(i * i for i in range(200_000))  # some CPU time passes
    later = bench.cpu_ticks()
    assert later[0] >= first[0] and later[1] >= first[1]


def test_bench_planar_stage_row(output):
    _, md = output
    (row,) = _table(md, "| size | low-res half")
    columns = ("low-res half, with denoising", "without", "full-res half (maps along x, kernel)")
    parts = [float(row[c]) for c in columns]
    assert all(p > 0 for p in parts), row
    # The whole is the two halves, each printed to 0.1 ms.
    assert abs(float(row["whole"]) - (parts[0] + parts[2])) <= 0.11, row


def test_bench_flicker_rows(output):
    _, md = output
    rows = _table(md, "| clip | temporal smoothing |")
    states = [r["temporal smoothing"] for r in rows]
    assert rows and states.count("on") == states.count("off") == len(rows) // 2  # each clip: off and on
    for r in rows:
        assert math.isfinite(float(r["PSNR dB"])) and 0 < float(r["flicker (1 = as steady as the input)"])


def test_cached_clips_are_keyed_on_their_frame_count(data_root, tmp_path):
    # The timing scripts share encoded clips between runs: a 3-frame clip made for one run must
    # not stand in for another run's 5 frames (it did: a 60-frame clip timed as 200).
    short = bench.bench_clip("1080p", data_root, tmp_path, 3)
    longer = bench.bench_clip("1080p", data_root, tmp_path, 5)
    assert short != longer
    for path, n in ((short, 3), (longer, 5)):
        with av.open(str(path)) as container:
            assert sum(1 for _ in container.decode(video=0)) == n
    assert bench.bench_clip("1080p", data_root, tmp_path, 3) == short  # reused, not re-encoded
