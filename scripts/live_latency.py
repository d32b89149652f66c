"""A live stream over the loopback into `endolight video`, and where its latency goes.

    python scripts/live_latency.py [WIDTH HEIGHT] [--low-latency] [--frames N]

A child process (this script with ``--send PORT``; tests/test_live.py uses it too) sends the
laparoscopy clip of ../shared/data, resized to WIDTH x HEIGHT, as a
25 fps H.264 MPEG-TS stream to udp://127.0.0.1:PORT (x264 ultrafast, zerolatency, encoded before
sending starts, so only the sending shares this machine), as a camera or a video processor
would; this process enhances it with the shipped model
(`endolight.video.enhance_video`, as `endolight video udp://... -o out.mp4` does) and prints the
frames written and dropped, the latency from decoded to written (p50, p99), the first and
last frames' latencies and which frames took over 50 ms. Stop other work first.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from endolight.data import default_data_root  # noqa: E402

FPS = 25
CLIP = "laparoscopy/cholecystectomy-720p.mp4"


def send(port: int, frames: int, width: int, height: int, source: Path) -> None:
    """Stream ``frames`` frames of ``source`` (a video file or a folder of images, its first 50
    frames looped, resized to ``width`` x ``height``) in real time once the receiver's UDP port
    is bound. The stream is encoded before it is sent, as a camera's own encoder would have
    done, so sending costs this machine next to nothing. Prints ``ready`` when about to wait for
    the receiver, and the count when done."""
    import av
    import cv2

    if source.is_dir():
        images = [cv2.imread(str(f))[..., ::-1] for f in sorted(source.iterdir())[:50]]
    else:
        with av.open(str(source)) as src:
            decoded = zip(range(50), src.decode(video=0), strict=False)
            images = [f.to_ndarray(format="rgb24") for _, f in decoded]
    clip = [np.ascontiguousarray(cv2.resize(image, (width, height))) for image in images]
    # flush_packets: each frame leaves as soon as it is encoded, as a camera's would; without it
    # the muxer's buffer held each frame's tail back, and the last two frames arrived together
    # (frames over 50 ms at the end of 6 of 13 1080p runs; 1 of 26 with it).
    out = av.open(f"udp://127.0.0.1:{port}?pkt_size=1316", "w", format="mpegts",
                  container_options={"flush_packets": "1"})
    stream = out.add_stream("libx264", rate=FPS,
                            options={"preset": "ultrafast", "tune": "zerolatency", "g": str(FPS)})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    packets = []  # (frame index, its packets); zerolatency: each frame's packets come at once
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(clip[i % len(clip)], format="rgb24")
        frame.pts = i
        packets.append((i, list(stream.encode(frame))))
    packets.append((frames - 1, list(stream.encode())))

    def bound() -> bool:  # the receiver listens: nothing sent is lost before it starts
        rows = Path("/proc/net/udp").read_text().splitlines()[1:]
        return any(row.split()[1].endswith(f":{port:04X}") for row in rows)

    print("ready", flush=True)
    give_up = time.perf_counter() + 60
    while not bound():
        if time.perf_counter() > give_up:
            sys.exit("the receiver never listened")
        time.sleep(0.05)
    start = time.perf_counter()
    for i, group in packets:
        time.sleep(max(0.0, start + i / FPS - time.perf_counter()))
        for packet in group:
            out.mux(packet)
    out.close()
    print(frames, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", nargs="*", type=int, default=[1280, 720], help="WIDTH HEIGHT")
    parser.add_argument("--low-latency", action="store_true")
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--source", type=Path, help="video file or folder of frames to send "
                                                     "(default: the laparoscopy clip of the data)")
    parser.add_argument("--send", type=int, metavar="PORT",
                        help="only send the stream to udp://127.0.0.1:PORT (the sender process)")
    args = parser.parse_args()
    width, height = args.size
    if args.send:
        send(args.send, args.frames, width, height, args.source or default_data_root() / CLIP)
        return
    from endolight.allocator import configure
    from endolight.enhancer import Enhancer
    from endolight.video import VideoOptions, enhance_video

    configure()  # as the command line does
    port = 5000 + random.randrange(1000)
    source = ["--source", str(args.source)] if args.source else []
    sender = subprocess.Popen([sys.executable, __file__, str(width), str(height),
                               "--frames", str(args.frames), "--send", str(port), *source],
                              stdout=subprocess.PIPE, text=True)
    # The receiver's 2 s time-out starts once the sender has loaded its frames (on a busy
    # machine that takes longer than the enhancer's warm-up).
    if sender.stdout.readline().strip() != "ready":
        sys.exit("the sender failed to start")
    with tempfile.TemporaryDirectory() as tmp:
        report = enhance_video(f"udp://127.0.0.1:{port}", Path(tmp) / "live.mp4", Enhancer(),
                               VideoOptions(low_latency=args.low_latency, timeout=2))
    sender.communicate()
    lat = np.array(report.latency_ms)
    print(f"{width}x{height}{' --low-latency' if args.low_latency else ''}: sent {args.frames}, "
          f"received {report.decoded}, written {report.written}, dropped {report.dropped}; "
          f"latency p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms")
    steady = lat[FPS:]  # the start (key frame, first field-of-view detections) left out
    if steady.size:
        print(f"after the first second: p50 {np.percentile(steady, 50):.0f} ms, "
              f"p99 {np.percentile(steady, 99):.0f} ms, max {steady.max():.0f} ms")
    print("first 12 frames (ms):", " ".join(f"{x:.0f}" for x in lat[:12]))
    print("last 6 frames (ms):", " ".join(f"{x:.0f}" for x in lat[-6:]))
    print("frames over 50 ms:", [i for i, x in enumerate(lat) if x > 50])


if __name__ == "__main__":
    main()
