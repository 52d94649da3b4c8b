"""Offline throughput of ``sam3d-reconstruct --bag`` and what reading and writing cost.

    .venv/jazzy/bin/python -P benchmarks/bench_recording.py [--frames 20] [--storage mcap]

Writes a 640×480 recording of the example tabletop scene (3 box-prompted objects, raw or
``--compressed`` images, new sensor noise per frame, 10 Hz) into a temporary folder and
processes it with the embedded backends, as the CLI does. Prints, per frame: the whole
offline run, the engine alone (segment + reconstruct + grasp: the node's own work per frame, a
bound on its frame rate on this machine), reading + pairing + decoding, and building +
serialising + writing the outputs; the share of the last two in the total (target: at most
10 %); and the process's resident memory after the first frame and at the end (flat = the run
keeps no per-frame state).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

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
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    """Run the benchmark; prints a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--compressed", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        bag = make_recording(root / "in", frames=args.frames, storage=args.storage,
                             compressed=args.compressed, step=1)
        request = example_request(root / "request.json", step=1)
        made = time.monotonic() - t0
        rss = []
        summary = process_recording(
            bag, root / "out", Engine(), json.loads(request.read_text()), {},
            FrameSelection(), on_frame=lambda index, n: rss.append(_rss_mb()))
        n = summary.processed
        s = summary.seconds
        total = s["total_s"]
        overhead = s["decode_s"] + s["write_s"]
        size = sum(f.stat().st_size for f in (root / "out").glob("*.mcap")) / 2**20
    kind = ("compressed" if args.compressed else "raw") + f" {args.storage}"
    print(f"recording: {args.frames} frames 640x480 ({kind}), made in {made:.1f} s; "
          f"processed {n}, {summary.objects} objects; output {size:.1f} MiB")
    print(f"offline total        {1000 * total / n:8.1f} ms/frame  {n / total:6.2f} frames/s")
    print(f"engine only          {1000 * s['engine_s'] / n:8.1f} ms/frame  "
          f"{n / s['engine_s']:6.2f} frames/s (the node's work per frame)")
    print(f"read+pair+decode     {1000 * s['decode_s'] / n:8.1f} ms/frame")
    print(f"build+write outputs  {1000 * s['write_s'] / n:8.1f} ms/frame")
    print(f"decode+write share   {100 * overhead / total:8.1f} % of the total (target <= 10 %)")
    print(f"RSS after frame 1    {rss[0]:8.1f} MB; at the end {rss[-1]:.1f} MB "
          f"(max {max(rss):.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
