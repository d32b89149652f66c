"""ONNX Runtime speed and fidelity of the exported model at 1080p (CPU provider).

    python scripts/onnx_speed.py [--graph fast|exact|both] [--frames N] [--threads T]

Exports the shipped weights (docs/deploy.md), runs each file on real 1920x1080 sinus frames
and prints, per graph: ms per frame and fps, the largest difference from its PyTorch twin (the
1/255 check of `endolight export`), and PSNR / largest difference against the Python enhancer
(`Enhancer(keep_border=False)`, every pixel sliced). Numbers are for this machine: stop other
work first.
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
from endolight.export import GRAPHS, INPUT_NAME, OUTPUT_NAME, export_model, max_abs_difference  # noqa: E402
from endolight.io.images import read_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", choices=[*GRAPHS, "both"], default="both")
    parser.add_argument("--frames", type=int, default=20, help="timed runs per graph (after 2 warm-up runs)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's default)")
    args = parser.parse_args()
    frames = [read_image(p) for p in sorted((default_data_root() / "sinus" / "clip-b").glob("*.jpg"))[:3]]
    model = load_model()
    exact = Enhancer(model=model, device="cpu", keep_border=False, fused=False)
    references = [exact.enhance_array(f) for f in frames]
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        for graph in GRAPHS if args.graph == "both" else (args.graph,):
            path = export_model(model, Path(tmp) / f"{graph}.onnx", graph=graph)  # type: ignore[arg-type]
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            outs = [session.run([OUTPUT_NAME], {INPUT_NAME: f[None]})[0][0] for f in frames]  # warm-up
            n = max(1, args.frames // 2) if graph == "exact" else args.frames
            start = time.perf_counter()
            for i in range(n):
                session.run([OUTPUT_NAME], {INPUT_NAME: frames[i % len(frames)][None]})
            ms = (time.perf_counter() - start) / n * 1000
            twin = max(max_abs_difference(path, model, f, graph=graph) for f in frames[:1])  # type: ignore[arg-type]
            err = [(o.astype(np.float64) - r) ** 2 for o, r in zip(outs, references, strict=True)]
            psnr = 10 * np.log10(255**2 / np.mean([e.mean() for e in err]))
            worst = max(int(np.abs(o.astype(np.int16) - r).max())
                        for o, r in zip(outs, references, strict=True))
            print(f"{graph:5s} 1080p: {ms:7.1f} ms/frame {1000 / ms:5.1f} fps (ONNX Runtime CPU, "
                  f"{args.threads or 'default'} threads, {n} frames); vs its PyTorch twin {twin}/255; "
                  f"vs Enhancer PSNR {psnr:.1f} dB, max {worst}/255")


if __name__ == "__main__":
    main()
