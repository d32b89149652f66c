"""Where `endolight video`'s CPU goes: per thread, and per stage of the enhancer, inside a stream.

    python scripts/stage_cpu.py [720p|1080p|4K] [FRAMES]

Runs ``endolight.bench.end_to_end`` (what ``endolight video`` does) on the benchmark clip
(``endolight.bench.cached_clip``) once to warm up, then FRAMES frames while it records
- each thread's CPU time from ``/proc`` (Python's threads by name; the decoder's threads are
  ``av:h264:*``; x264's and numba's threads show as ``python-TID``), sampled every 0.2 s so
  threads that end with the stream are counted;
- the calling thread's CPU (``time.thread_time``) inside each stage of the enhancer, by wrapping
  the functions the stream calls (a stage's parallel kernels also run on numba's other thread,
  which only the per-thread table shows).
Prints CPU milliseconds per frame. Stop other work first: the figures are this machine's.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the command line sets it

import endolight.planar as planar  # noqa: E402
import endolight.temporal as temporal  # noqa: E402
import endolight.video as video  # noqa: E402
from endolight.allocator import configure  # noqa: E402
from endolight.bench import CLIP_CACHE, cached_clip, end_to_end  # noqa: E402
from endolight.enhancer import Enhancer  # noqa: E402
from endolight.model.net import CoefficientNet  # noqa: E402
from endolight.network_runtime import OnnxNetwork  # noqa: E402

STAGES: list[tuple[object, str, str]] = [
    (Enhancer, "plan_planes", "planner: all of it"),
    (planar, "shrunk_planes", "  small copy (planes)"),
    (planar, "network_input", "  network input"),
    (CoefficientNet, "forward", "  network (PyTorch)"),
    (OnnxNetwork, "__call__", "  network (ONNX Runtime)"),
    (temporal.GridSmoother, "__call__", "  grid smoothing"),
    (planar, "planar_maps", "  maps"),
    (planar, "guided_fit", "    guided-filter fit"),
    (planar, "slice_lowres", "    guide and slice"),
    (video._SceneView, "__call__", "field of view (first frames)"),
    (video, "render_plan", "full-res kernel (calling thread)"),
    (temporal.TemporalDenoiser, "__call__", "temporal noise reduction"),
]


def _timed(f: Callable, label: str, acc: dict[str, float]) -> Callable:
    def wrapper(*args, **kwargs):
        t = time.thread_time()
        try:
            return f(*args, **kwargs)
        finally:
            acc[label] += time.thread_time() - t
    return wrapper


def _threads() -> dict[str, tuple[str, float]]:
    """Thread id -> (name, CPU seconds) of this process's live threads."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for tid in os.listdir("/proc/self/task"):
        try:
            comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[tid] = (comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def main() -> None:
    size = sys.argv[1] if len(sys.argv) > 1 else "1080p"
    frames = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    configure()  # as the command line does
    clip = cached_clip(size, frames)
    end_to_end(clip, CLIP_CACHE / "out.mp4", 30, True, None)  # compiled kernels loaded, caches warm
    acc: dict[str, float] = defaultdict(float)
    for owner, name, label in STAGES:
        setattr(owner, name, _timed(getattr(owner, name), label, acc))
    names: dict[str, str] = {}
    latest: dict[str, tuple[str, float]] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            names.update({str(t.native_id): t.name for t in threading.enumerate() if t.native_id})
            latest.update(_threads())
            time.sleep(0.2)

    before = _threads()
    sampler = threading.Thread(target=sample, name="sampler", daemon=True)
    sampler.start()
    start = time.perf_counter()
    end_to_end(clip, CLIP_CACHE / "out.mp4", frames, True, None)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    latest.update(_threads())
    per_thread: dict[str, float] = defaultdict(float)
    for tid, (comm, cpu) in latest.items():
        name = names.get(tid, comm)
        per_thread[f"{name}-{tid}" if name == "python" else name] += cpu - before.get(tid, (comm, 0.0))[1]
    ms = 1e3 / frames
    print(f"{size}, {frames} frames: {wall * ms:.1f} ms a frame (wall)\n\nCPU ms a frame, per thread:")
    for name, cpu in sorted(per_thread.items(), key=lambda x: -x[1]):
        if cpu * ms >= 0.05 and name != "sampler":
            print(f"  {name:28s} {cpu * ms:6.1f}")
    print(f"  {'all':28s} {sum(per_thread.values()) * ms:6.1f}")
    print("\nCPU ms a frame, per stage (the thread that runs it):")
    for _, _, label in STAGES:
        print(f"  {label:34s} {acc[label] * ms:6.2f}")


if __name__ == "__main__":
    main()
