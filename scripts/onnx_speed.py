"""ONNX Runtime speed and fidelity of the exported model at 1080p (CPU provider).

    python scripts/onnx_speed.py [--graph fast|exact|i420|all] [--frames N] [--threads T]

Exports the shipped weights (docs/deploy.md): the fast and exact graphs on RGB frames (layout
nhwc) and the fast graph on I420 buffers (layout i420); runs each file on real 1920x1080 sinus
frames and prints: ms per frame and fps, the largest difference from its PyTorch twin (the
1/255 check of `endolight export`), and PSNR / largest difference against the Python enhancer
(`Enhancer(keep_border=False)`, every pixel sliced; for I420, both sides as written to a 4:2:0
video, as tests/test_planar.py compares the planar video path). Numbers are for this machine:
stop other work first.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from endolight import Enhancer  # noqa: E402
from endolight.checkpoint import load_model  # noqa: E402
from endolight.data import default_data_root  # noqa: E402
from endolight.export import INPUT_NAME, OUTPUT_NAME, export_model, max_abs_difference  # noqa: E402
from endolight.io.images import read_image  # noqa: E402
from endolight.io.yuv import i420_to_rgb, rgb_to_i420  # noqa: E402

# name -> (graph, layout)
RUNS = {"fast": ("fast", "nhwc"), "exact": ("exact", "nhwc"), "i420": ("fast", "i420")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", choices=[*RUNS, "all"], default="all")
    parser.add_argument("--frames", type=int, default=20, help="timed runs per graph (after 2 warm-up runs)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's default)")
    parser.add_argument("--weights", default=None, help="weights file or shipped name (default: shipped)")
    args = parser.parse_args()
    frames = [read_image(p) for p in sorted((default_data_root() / "sinus" / "clip-b").glob("*.jpg"))[:3]]
    model = load_model(args.weights)
    exact = Enhancer(model=model, device="cpu", keep_border=False, fused=False)
    references = [exact.enhance_array(f) for f in frames]
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNS if args.graph == "all" else (args.graph,):
            graph, layout = RUNS[name]
            path = export_model(model, Path(tmp) / f"{name}.onnx", layout=layout, graph=graph)  # type: ignore[arg-type]
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            inputs = [rgb_to_i420(f) if layout == "i420" else f for f in frames]
            refs = ([i420_to_rgb(rgb_to_i420(exact.enhance_array(i420_to_rgb(b)))) for b in inputs]
                    if layout == "i420" else references)
            outs = [session.run([OUTPUT_NAME], {INPUT_NAME: f[None]})[0][0] for f in inputs]  # warm-up
            outs = [i420_to_rgb(o) for o in outs] if layout == "i420" else outs
            n = max(1, args.frames // 2) if graph == "exact" else args.frames
            start = time.perf_counter()
            for i in range(n):
                session.run([OUTPUT_NAME], {INPUT_NAME: inputs[i % len(inputs)][None]})
            ms = (time.perf_counter() - start) / n * 1000
            twin = max_abs_difference(path, model, frames[0], layout=layout, graph=graph)  # type: ignore[arg-type]
            err = [(o.astype(np.float64) - r) ** 2 for o, r in zip(outs, refs, strict=True)]
            psnr = 10 * np.log10(255**2 / np.mean([e.mean() for e in err]))
            worst = max(int(np.abs(o.astype(np.int16) - r).max()) for o, r in zip(outs, refs, strict=True))
            del session  # its threads stop before the next file is timed
            print(f"{name:5s} 1080p: {ms:7.1f} ms/frame {1000 / ms:5.1f} fps (ONNX Runtime CPU, "
                  f"{args.threads or 'default'} threads, {n} frames); vs its PyTorch twin {twin}/255; "
                  f"vs Enhancer PSNR {psnr:.1f} dB, max {worst}/255")


if __name__ == "__main__":
    main()
