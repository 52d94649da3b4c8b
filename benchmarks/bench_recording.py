"""Offline throughput of ``sam3d-reconstruct --bag``, where its time goes, and its memory.

    .venv/jazzy/bin/python -P benchmarks/bench_recording.py [--frames 20] [--storage mcap]
        [--compressed] [--minutes 10 --hz 30 --distinct 7 --every 60]

Writes a 640×480 recording of the example tabletop scene (3 box-prompted objects, raw or
``--compressed`` images, new sensor noise per frame) into a temporary folder and processes it
with the embedded backends, as the CLI does. ``--minutes`` makes a long recording instead
(``--hz`` frames per second) from ``--distinct`` frames repeated in turn with advancing stamps,
processed with ``--every`` / ``--max-rate``; choose ``--distinct`` coprime with ``--every`` so
every distinct frame is processed.

Prints, per processed frame: (a) reading + pairing + decoding (with ``--every`` N, the reading
of the N - 1 frames skipped before it), (b) the engine (segment + reconstruct + grasp), (c)
building the node's output messages (tracked ids, the same builders and marker-preview cache as
the node), (d) serialising and writing them and the copied inputs. From these: the node's
frame rate on this machine, 1/(b + c) with every output subscribed and 1/b without heavy
subscribers (both upper bounds: the node decodes its inputs too); the offline rate
1/(a + b + c + d); the offline path's own share (a + d)/(a + b + c + d) (target: at most 10 %,
i.e. the offline rate at least 0.9 of the node's). And the process's resident memory over the
processed frames: the mean of the first and of the last tenth, and its slope.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam3d_bench.recordings import example_request, make_recording  # noqa: E402
from sam3d_ros.core.engine import Engine  # noqa: E402
from sam3d_ros.core.recording.offline import process_recording  # noqa: E402
from sam3d_ros.core.recording.reader import FrameSelection  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def _memory(rss: List[Tuple[int, float]]) -> str:
    """First / last tenth of the processed frames, their difference and the fitted slope."""
    values = np.array([r for _, r in rss])
    tenth = max(1, len(values) // 10)
    first, last = float(values[:tenth].mean()), float(values[-tenth:].mean())
    slope = float(np.polyfit(np.arange(len(values)), values, 1)[0]) if len(values) > 1 else 0.0
    tenths = " ".join(f"{part.mean():.0f}" for part in np.array_split(values, 10) if len(part))
    return (f"RSS over {len(values)} processed frames: first tenth {first:.1f} MB, last tenth "
            f"{last:.1f} MB ({last - first:+.1f} MB); max {values.max():.1f} MB; "
            f"slope {100 * slope:+.2f} MB per 100 frames\nRSS per tenth, MB: {tenths}")


def main() -> int:
    """Run the benchmark; prints a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--compressed", action="store_true")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="a long recording of this many minutes instead of --frames")
    parser.add_argument("--hz", type=float, default=10.0, help="frames per second recorded")
    parser.add_argument("--distinct", type=int, default=0,
                        help="distinct frames, repeated (0: every frame its own noise)")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--max-rate", type=float, default=0.0)
    args = parser.parse_args()
    frames = int(round(args.minutes * 60 * args.hz)) if args.minutes > 0 else args.frames
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        bag = make_recording(root / "in", frames=frames, period_ns=int(round(1e9 / args.hz)),
                             storage=args.storage, compressed=args.compressed, step=1,
                             distinct=args.distinct)
        request = example_request(root / "request.json", step=1)
        made = time.monotonic() - t0
        size_in = sum(f.stat().st_size for f in bag.iterdir()) / 2**20
        rss: List[Tuple[int, float]] = []
        summary = process_recording(
            bag, root / "out", Engine(), json.loads(request.read_text()), {},
            FrameSelection(every=args.every, max_rate_hz=args.max_rate),
            on_frame=lambda index, n: rss.append((index, _rss_mb())))
        size_out = sum(f.stat().st_size for f in (root / "out").glob("*.mcap")) / 2**20
    n = summary.processed
    s = summary.seconds
    a, b, c, d = (s[k] / n for k in ("decode_s", "engine_s", "build_s", "write_s"))
    frame_s = a + b + c + d
    kind = ("compressed" if args.compressed else "raw") + f" {args.storage}"
    repeat = f", {args.distinct} distinct frames repeated" if args.distinct else ""
    print(f"recording: {frames} frames 640x480 at {args.hz:g} Hz ({kind}{repeat}), "
          f"{size_in:.0f} MiB, made in {made:.0f} s")
    print(f"processed {n} (every {args.every}, max rate {args.max_rate:g} Hz), "
          f"{summary.objects} objects; output {size_out:.1f} MiB; run {s['total_s']:.0f} s "
          f"(of which opening and closing {s['total_s'] - n * frame_s:.1f} s)")
    print("per processed frame, ms:")
    for label, value in (("(a) read + pair + decode", a), ("(b) engine", b),
                         ("(c) build the node's outputs", c), ("(d) serialise + write", d),
                         ("a + b + c + d", frame_s)):
        print(f"  {label:30s} {1000 * value:8.1f}")
    node_all, node_light, offline = 1 / (b + c), 1 / b, 1 / frame_s
    share = (a + d) / frame_s
    print(f"node, every output subscribed  1/(b+c) {node_all:6.2f} frames/s")
    print(f"node, no heavy subscribers     1/b     {node_light:6.2f} frames/s")
    print(f"offline                 1/(a+b+c+d)    {offline:6.2f} frames/s "
          f"= {offline / node_all:.2f} x the first, {offline / node_light:.2f} x the second")
    print(f"offline path's share (a+d)/total       {100 * share:6.1f} % (target <= 10 %: "
          f"{'met' if share <= 0.10 else 'missed'})")
    print(_memory(rss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
