"""The enhancer's own CPU per video frame, without the codec or the threads of a stream.

    python scripts/enhancer_cpu.py [720p|1080p|4K] [FRAMES] [--passes N] [--weights W]

Decodes FRAMES frames of the benchmark clip (``endolight.bench.cached_clip``) to I420 planes
first, then runs what ``endolight video`` does to each, one stage after the other on one thread
(numba, OpenCV and PyTorch set to one thread; the network in ONNX Runtime, as the enhancer runs
it): the low-resolution half (``plan_planes``, with grid smoothing), the planar kernel
(``render_plan``) and the temporal noise reduction. Prints
CPU milliseconds a frame per stage for the fastest of ``--passes`` passes over the frames.
Inside a stream the same work costs more (decoder, encoder and the two halves share the cores:
``scripts/stage_cpu.py``); this is the figure to compare two versions of the code with, e.g.
``PYTHONPATH=/path/to/other/checkout/src python scripts/enhancer_cpu.py``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ["NUMBA_NUM_THREADS"] = "1"  # before numba is imported

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from endolight.allocator import configure  # noqa: E402
from endolight.bench import cached_clip  # noqa: E402
from endolight.enhancer import Enhancer  # noqa: E402
from endolight.fov import fov_mask  # noqa: E402
from endolight.io.sources import open_source  # noqa: E402
from endolight.io.yuv import i420_to_rgb, ycc_to_rgb  # noqa: E402
from endolight.planar import render_plan, small_planes  # noqa: E402
from endolight.temporal import GridSmoother, TemporalDenoiser  # noqa: E402


def one_pass(enhancer: Enhancer, frames: list[np.ndarray], fov: np.ndarray) -> np.ndarray:
    """CPU milliseconds a frame of (plan, kernel, temporal filter) over ``frames``, in order."""
    smoother, denoiser, spent = GridSmoother(), TemporalDenoiser(), np.zeros(3)
    for planes in frames:
        t0 = time.process_time()
        ycc = small_planes(enhancer.model, planes)  # as video: the small luma goes on to the filter
        plan = enhancer.plan_planes(planes, grid_filter=smoother, fov=fov, small=ycc_to_rgb(*ycc))
        t1 = time.process_time()
        out = render_plan(plan)
        t2 = time.process_time()
        denoiser(planes, out, fov, ycc[0])
        spent += (t1 - t0, t2 - t1, time.process_time() - t2)
    return spent * 1e3 / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", nargs="?", default="1080p")
    parser.add_argument("frames", nargs="?", type=int, default=40)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--weights", default=None, help="weights file or shipped name (default: shipped)")
    args = parser.parse_args()
    configure()  # as the command line does
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    source = open_source(cached_clip(args.size, args.frames))
    try:
        frames = [frame.planes for frame, _ in zip(source, range(args.frames), strict=False)]
    finally:
        source.close()
    if not frames or frames[0] is None:
        raise SystemExit("error: the benchmark clip did not decode to 4:2:0 planes")
    enhancer = Enhancer(weights=args.weights)
    fov = fov_mask(i420_to_rgb(frames[0]))
    one_pass(enhancer, frames[:2], fov)  # compiled kernels and the network's session loaded
    best = min((one_pass(enhancer, frames, fov) for _ in range(args.passes)), key=lambda ms: ms.sum())
    print(f"{args.size}, {len(frames)} frames, one thread: plan {best[0]:.2f}, kernel {best[1]:.2f}, "
          f"temporal filter {best[2]:.2f}, enhancer {best.sum():.2f} CPU-ms a frame", flush=True)


if __name__ == "__main__":
    main()
