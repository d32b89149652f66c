"""The end-to-end video rate against the bare decode + encode of the same file, same process.

    python scripts/video_ratio.py [720p|1080p|4K|"1080p sinus"] [FRAMES] [--runs N] [--crf 18]

For each run: the bare PyAV loop (``endolight.bench.bare_codec``: threaded decode, rgb24,
libx264 ultrafast), then ``endolight.bench.end_to_end`` (what ``endolight video`` does, model
loaded beforehand) on the same benchmark clip (``endolight.bench.cached_clip``: the laparoscopy
clip, upscaled for 1080p and 4K, encoded once into ``/tmp/endolight-bench``). Prints ms a frame,
the ratio, the latency percentiles and the share of CPU time the host stole meanwhile (a virtual
machine's neighbours; runs with much of it are not comparable). Stop other work first: the figures
are this machine's.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the command line sets it

from endolight.allocator import configure  # noqa: E402
from endolight.bench import CLIP_CACHE, bare_codec, cached_clip, cpu_ticks, end_to_end, stolen_share  # noqa: E402
from endolight.io.sinks import DEFAULT_CRF  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", nargs="?", default="1080p")
    parser.add_argument("frames", nargs="?", type=int, default=120)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--crf", type=int, default=DEFAULT_CRF,
                        help="endolight's x264 CRF (the command's default 18; the bare loop's is 23)")
    args = parser.parse_args()
    configure()  # as the command line does
    clip = cached_clip(args.size, args.frames)
    for _ in range(args.runs):
        ticks = cpu_ticks()
        _, bare_ms = bare_codec(clip, CLIP_CACHE / "bare.mp4", args.frames)
        t0 = time.process_time()
        r = end_to_end(clip, CLIP_CACHE / "out.mp4", args.frames, True, None, args.crf)
        cpu = (time.process_time() - t0) * 1e3 / args.frames
        ms = r["seconds"] * 1e3 / r["frames"]
        print(f"{args.size}: bare {bare_ms:.1f} ms/frame, endolight {ms:.1f} ms/frame "
              f"({cpu:.1f} CPU-ms/frame incl. load), ratio {bare_ms / ms:.2f}, "
              f"latency p50 {r['p50']:.0f} p99 {r['p99']:.0f} ms, "
              f"CPU stolen by the host {100 * stolen_share(ticks, cpu_ticks()):.0f} %", flush=True)


if __name__ == "__main__":
    main()
