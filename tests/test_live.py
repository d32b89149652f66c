"""Live streams over the loopback: a real H.264 MPEG-TS stream sent in real time into ``video``.

The sender is a separate process (PyAV, paced at 25 fps, real laparoscopy frames); the receiver
is the CLI. Checked: frame counts (sent, received, written, dropped), the latency figures, the
exit status of a normal end (the sender stops, or closes a TCP stream) and of a failed stream,
and that a silent source ends within its time-out. The drop policy itself is checked on a paced
in-process source with an enhancer of known cost, so its counts do not depend on the machine's
load.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from io import BytesIO
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from endolight.cli import app
from endolight.enhancer import Enhancer
from endolight.io.images import InputError, expand_sources, read_image
from endolight.io.sinks import FolderSink
from endolight.io.sources import Frame, SourceInfo, open_source
from endolight.video import VideoOptions, enhance_video, live_backlog, process, warm_up

SEQUENCE = "laparoscopy/sequence-320x240"  # 20 consecutive real frames
FPS = 25
TIMEOUT = 2.0  # the receiver's --timeout: short, yet far above a paced sender's gaps (40 ms)

# Loads its frames and says "ready"; sends nothing until the receiver's socket is bound (no frame
# goes into the void), then N frames in real time with a short GOP, as a live encoder does;
# prints N.
SENDER = Path(__file__).parents[1] / "scripts" / "live_latency.py"  # its --send mode

SUMMARY = re.compile(r"stream ended \((?P<why>[^)]*)\): (?P<received>\d+) frames received, "
                     r"(?P<written>\d+) written to .*, (?P<dropped>\d+) dropped.*"
                     r"p50 (?P<p50>[\d.]+) ms, p99 (?P<p99>[\d.]+) ms")


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _frames_in(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _receive(tmp_path: Path, url: str, *args: str) -> tuple[int, str, float]:
    """Run ``endolight video URL`` in this process; (exit code, output, seconds)."""
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["video", url, "-o", str(tmp_path / "live.mp4"), "--timeout", str(TIMEOUT),
                                   *args])
    return res.exit_code, res.output, time.perf_counter() - t0


@pytest.fixture(scope="module")
def warm() -> None:
    """Load the shipped model and its kernels once, so no test's timing includes the first load."""
    Enhancer(device="cpu").enhance_array(np.full((64, 64, 3), 40, np.uint8))


@pytest.mark.parametrize("low_latency", [False, True])
def test_udp_stream_is_enhanced_and_its_end_is_a_normal_end(tmp_path, data_root, warm, low_latency):
    port, sent = _free_port(socket.SOCK_DGRAM), 3 * FPS  # 3 s of 320x240 video
    sender = subprocess.Popen([sys.executable, str(SENDER), "320", "240", "--frames", str(sent),
                               "--send", str(port), "--source", str(data_root / SEQUENCE)],
                              stdout=subprocess.PIPE, text=True)
    assert sender.stdout.readline().strip() == "ready"  # the receiver's time-out starts after this
    args = ["--low-latency"] if low_latency else []
    code, output, _ = _receive(tmp_path, f"udp://127.0.0.1:{port}", *args)
    assert int(sender.communicate(timeout=60)[0]) == sent
    assert code == 0, output  # the end of a live stream is not an error...
    assert "error" not in output.lower()
    m = SUMMARY.search(output)
    assert m, output  # ...and is reported in one line with its reason
    assert m["why"] == f"no data for {TIMEOUT:g} s"  # UDP has no end marker: the time-out ends it
    received, written, dropped = int(m["received"]), int(m["written"]), int(m["dropped"])
    # Every frame sent arrives (loopback, ~20 kB a frame), and every frame is accounted for.
    assert received == sent
    assert written + dropped == received and written == _frames_in(tmp_path / "live.mp4")
    p50, p99 = float(m["p50"]), float(m["p99"])
    assert 0 < p50 <= p99
    if not low_latency:
        assert dropped == 0  # without --low-latency nothing is ever dropped
    else:
        # Whether the enhancer keeps up depends on the machine's load (measured: 12 of 75 written
        # at load 19 on 2 cores), so the drop policy is checked exactly in the
        # paced test below. What holds at any load: the wait stays bounded, a written frame
        # waits at most for the backlog, the frame in work and itself, at the rate it achieved.
        seconds, fps = (float(x) for x in re.search(r"([\d.]+) s \(([\d.]+) fps\)", output).groups())
        per_frame_ms = 1e3 / fps if fps else 1e3 * seconds
        assert p50 <= (live_backlog(FPS) + 2) * per_frame_ms, output


def test_a_low_latency_live_source_hands_out_its_first_frames_as_they_are_sent(data_root):
    """FFmpeg's stream analysis reads 20 frames to measure the frame rate before handing out
    the first; they then arrive in one stale burst (measured: 20 frames within 40 ms, the first
    0.9 s old), which the low-latency queues must drop. A low-latency live source skips that
    analysis and takes the rate from the codec instead."""
    port, sent = _free_port(socket.SOCK_DGRAM), 15
    sender = subprocess.Popen([sys.executable, str(SENDER), "320", "240", "--frames", str(sent),
                               "--send", str(port), "--source", str(data_root / SEQUENCE)],
                              stdout=subprocess.PIPE, text=True)
    assert sender.stdout.readline().strip() == "ready"
    source = open_source(f"udp://127.0.0.1:{port}", low_latency=True, timeout=TIMEOUT)
    try:
        assert source.info.fps == FPS  # from the H.264 timing info, not measured
        arrived = [time.perf_counter() for _ in source]
    finally:
        source.close()
        sender.communicate(timeout=60)
    assert len(arrived) == sent
    # Frame 9 is sent 9/25 s = 360 ms after frame 0, so frames 0-9 span 360 ms less frame 0's
    # wait in the receiver: a burst spans ~20 ms. The bound leaves 160 ms for a busy machine.
    assert arrived[9] - arrived[0] > 0.2


def test_silent_source_fails_clearly_within_its_time_out(tmp_path):
    enhancer = Enhancer(device="cpu")
    warm_up(enhancer)  # loaded before the clock starts: the wait measured is the source's
    url = f"udp://127.0.0.1:{_free_port(socket.SOCK_DGRAM)}"
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"no data within 1 s"):
        enhance_video(url, tmp_path / "none.mp4", enhancer, VideoOptions(timeout=1.0))
    assert time.perf_counter() - t0 < 1.0 + 2.0  # the time-out, plus a margin for a busy machine
    assert not (tmp_path / "none.mp4").exists()
    code, output, _ = _receive(tmp_path, url)
    assert code == 2 and output.startswith("error: ") and "no data within 2 s" in output
    assert "Traceback" not in output


def _mpegts(frames: list[np.ndarray]) -> bytes:
    buf = BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        st = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "tune": "zerolatency"})
        st.width, st.height, st.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            for p in st.encode(vf):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return buf.getvalue()


def _serve_tcp(data: bytes, reset: bool) -> tuple[int, threading.Thread]:
    """A one-shot TCP server: sends ``data``, then closes cleanly (FIN) or aborts (RST)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(60)

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            conn.sendall(data)
            if reset:
                time.sleep(0.5)  # the receiver decodes what arrived, then the connection breaks
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server.getsockname()[1], thread


def test_tcp_stream_closed_by_its_sender_ends_normally_and_a_broken_one_fails(tmp_path, data_root, warm):
    frames = [read_image(p) for p in sorted(expand_sources(data_root / SEQUENCE),
                                            key=lambda p: int(p.stem.split("_")[1]))]
    data = _mpegts(frames)
    port, thread = _serve_tcp(data, reset=False)
    code, output, _ = _receive(tmp_path, f"tcp://127.0.0.1:{port}")
    thread.join(10)
    m = SUMMARY.search(output)
    assert code == 0 and m, output
    assert m["why"] == "the sender closed the stream"
    assert int(m["received"]) == int(m["written"]) == len(frames) and int(m["dropped"]) == 0
    # A connection that breaks mid-stream is a failure: one error line, exit 1, and the frames
    # before the break are in a playable file.
    port, thread = _serve_tcp(data[: len(data) // 2], reset=True)
    code, output, _ = _receive(tmp_path, f"tcp://127.0.0.1:{port}")
    thread.join(10)
    assert code == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "stream failed after" in errors[0], output
    written = int(re.search(r"the (\d+) frames before it were written", errors[0])[1])
    assert 0 < written < len(frames) and _frames_in(tmp_path / "live.mp4") == written


class PacedLiveSource:
    """A live source without a network: ``n`` frames at ``fps`` in real time."""

    def __init__(self, n: int, fps: int = FPS) -> None:
        self.n, self.fps = n, fps
        self.info = SourceInfo(name="paced", width=64, height=48, fps=Fraction(fps),
                               time_base=Fraction(1, fps), frames=None, live=True, audio=False)

    def __iter__(self):
        t0 = time.perf_counter()
        for i in range(self.n):
            time.sleep(max(0.0, t0 + i / self.fps - time.perf_counter()))
            yield Frame(np.full((48, 64, 3), i % 256, np.uint8), i, i, self.info.time_base)

    def close(self) -> None:
        pass


class SleepyEnhancer:
    """Takes ``seconds`` per frame without using the CPU (so the machine's load does not matter)."""

    keep_border, guide_params, planar = False, None, False

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def enhance_array(self, image, **kw):
        time.sleep(self.seconds)
        return image


@pytest.mark.parametrize(("cost", "behind"), [(0.010, False), (0.100, True)])
def test_low_latency_drops_only_when_the_enhancer_falls_behind(tmp_path, cost, behind):
    n = 50  # 2 s at 25 fps
    sink = FolderSink(tmp_path / "out")
    opts = VideoOptions(low_latency=True, temporal=None)
    report = process(PacedLiveSource(n), [sink], SleepyEnhancer(cost), opts)
    assert report.decoded == n and report.written + report.dropped == n
    assert report.written == len(list((tmp_path / "out").iterdir()))
    if not behind:
        # 10 ms of a frame's 40: it keeps up, so every frame is written (scheduling hiccups up
        # to LIVE_BACKLOG_S are absorbed by the backlog).
        assert report.dropped == 0
        # Wall-clock, so not deterministic: measured p50 13.1-13.8 ms (three runs, nice 19 on a
        # loaded 2-core machine); bound 40 ms, one frame interval, 3x the measured value.
        assert report.latency(50) < 40
    else:
        # 100 ms a frame against 40 ms arrivals: it can write at most one frame per 100 ms, so
        # ~20 of 50 frames (2 s) plus the backlog; the rest are dropped and counted, and a
        # written frame waited at most the backlog plus its own and the previous frame's work.
        backlog = live_backlog(FPS)
        # Wall-clock: measured 23 written (backlog 3) and p99 342-356 ms in three runs; the
        # bounds are the arithmetic above (15..25 frames, 600 ms), not fitted to the run.
        assert 15 <= report.written <= 20 + backlog + 2
        assert report.latency(99) < 1e3 * (backlog + 2) * cost + 100
