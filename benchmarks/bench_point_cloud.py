#!/usr/bin/env python3
"""Time of the published point cloud's points (``core.output_messages.object_points``).

Per real frame of ``../shared/real_rgbd`` (labelled frames with their box requests, the others
segmented automatically), the embedded engine's objects, then ``object_points`` timed (median of
``--repeat`` runs) two ways: reading the depth pixels the reconstruction kept
(``ObjectReconstruction.depth_pixels``, what the node does) and running the depth hygiene again
per object (what it did before session 7, and still does for a backend that leaves them out).
Prints the point counts of both.

    python -P benchmarks/bench_point_cloud.py [--frames m2t2_0,ucn_0] [--repeat 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam3d_bench.evaluation import AUTO_REQUEST, load_real_frame, real_rgbd_dir  # noqa: E402
from sam3d_ros.core.engine import Engine  # noqa: E402
from sam3d_ros.core.inputs import parse_request  # noqa: E402
from sam3d_ros.core.output_messages import object_points  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--frames", default="m2t2_0,m2t2_1,ucn_0,ucn_1")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    data = args.data or real_rgbd_dir()
    if not data.is_dir():
        print(f"no real frames at {data}", file=sys.stderr)
        return 2
    engine = Engine(grasp_planner=None)
    print("| frame | size | objects | reused: ms | points | hygiene again: ms | points |")
    print("|---|---|---|---|---|---|---|")
    for name in args.frames.split(","):
        folder = data / name
        labelled = (folder / "masks").is_dir()
        request = load_real_frame(folder).request("boxes") if labelled else dict(AUTO_REQUEST)
        parsed = parse_request(request, folder, engine.input_options)
        objects = engine.process(parsed.frame, parsed.query, parsed.seed).objects
        again = [dataclasses.replace(o, depth_pixels=None) for o in objects]
        cells = []
        for objs in (objects, again):
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                xyz, _, _ = object_points(parsed.frame.points, parsed.frame.rgb, objs)
                times.append(time.perf_counter() - t0)
            cells += [f"{1000 * np.median(times):.1f}", str(len(xyz))]
        h, w = parsed.frame.rgb.shape[:2]
        print(f"| {name} | {w}×{h} | {len(objects)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
