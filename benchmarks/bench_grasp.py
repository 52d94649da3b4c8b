#!/usr/bin/env python3
"""Grasp success in a pybullet simulation: pipeline grasps vs true-mesh grasps vs a naive baseline.

For each synthetic tabletop scene (:func:`sam3d_bench.scenes.make_tabletop_scene`,
``random_urdfs`` ids < 900, or with ``--object-set household`` boxes, cans and bottles of YCB
sizes) and each object:

* ``pipeline``: box prompts → ``EmbeddedSegmenter`` → ``EmbeddedReconstructor`` → the analytic
  grasp planner (the full core, grasps in the camera optical frame per the grasp contract);
* ``true-mesh``: the same planner fed the ground-truth meshes (same frame, same masks): the
  simulation's ceiling for this planner;
* ``naive``: one top-down grasp at the centroid of the object's visible points, closing across
  the narrower horizontal extent of those points, width from that extent.

Every grasp is executed in a fresh copy of the scene (the objects at their true poses on the
table): a free-floating parallel-jaw gripper (Franka Hand geometry of
:class:`~sam3d_ros.backends.grasp.analytic.GripperModel`, boxes; two prismatic fingers under
bounded-force position control) starts at the pre-grasp pose (10 cm back along the approach),
moves in, closes, lifts 15 cm and holds for 1 s. Success: the object ends at least 10 cm above
where it started, still between the fingers. A gripper that touches anything at the pre-grasp
pose fails. Grasps are converted to the world with the scene's camera pose
(:mod:`sam3d_ros.core.conventions`). ``top-1``: the best grasp succeeds; ``top-5``: any of the
best five
does. An object with no grasp counts as a failure.

Usage::

    python3 benchmarks/bench_grasp.py                  # 60 scenes x 3 objects
    python3 benchmarks/bench_grasp.py --scenes 5 --json out.json
    python3 benchmarks/bench_grasp.py --object-set household   # boxes, cans, bottles
    python3 benchmarks/bench_grasp.py --sensor realsense       # realistic depth, imperfect boxes

Sixty scenes by default: thirty were too few (at 33d810c, seeds 0–29 and 30–59 of the same
code read top-1 0.91 and 0.79).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam3d_bench.grasp_sim import rate, run_scenes  # noqa: E402
from sam3d_bench.scenes import OBJECT_SETS  # noqa: E402
from sam3d_bench.sensor import SENSORS, PromptNoise  # noqa: E402
from sam3d_ros.backends import make_grasp_planner  # noqa: E402


def commit() -> str:
    """The checked-out commit (and a dirty flag)."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                      text=True).strip()
        dirty = subprocess.call(["git", "diff", "--quiet", "HEAD"], cwd=root) != 0
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=60)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--object-set", default="random_urdfs", choices=OBJECT_SETS,
                        help="the scenes' objects: random_urdfs shapes or household boxes, "
                             "cans and bottles of YCB sizes (sam3d_bench.household)")
    parser.add_argument("--sensor", default="default", choices=sorted(SENSORS),
                        help="depth sensor model: default (earlier figures) or realsense "
                             "(SensorNoise.realsense, measured on real frames; box prompts then "
                             "a few pixels off, PromptNoise)")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    realsense = args.sensor == "realsense"

    planner = make_grasp_planner("analytic")
    t_start = time.perf_counter()
    rows, plan_ms = run_scenes(
        range(args.first_seed, args.first_seed + args.scenes), args.objects, planner=planner,
        on_row=(lambda row: print(json.dumps(row), flush=True)) if args.verbose else None,
        object_set=args.object_set, noise=SENSORS[args.sensor],
        prompts=PromptNoise() if realsense else None)
    elapsed = time.perf_counter() - t_start
    sha = commit()
    last = args.first_seed + args.scenes - 1
    print(f"\nbench_grasp @ {sha}: {args.object_set}, {args.sensor} sensor, "
          f"{args.scenes} scenes x {args.objects} "
          f"objects (seeds {args.first_seed}-{last}), {len(rows)} objects, {elapsed:.0f} s")
    print(f"{'method':<28}{'top-1':>8}{'any-of-top-5':>14}")
    print(f"{'pipeline (box prompts)':<28}{rate(rows, 'pipeline', 'top1'):>8.2f}"
          f"{rate(rows, 'pipeline', 'topk'):>14.2f}")
    print(f"{'true-mesh (ceiling)':<28}{rate(rows, 'true_mesh', 'top1'):>8.2f}"
          f"{rate(rows, 'true_mesh', 'topk'):>14.2f}")
    print(f"{'naive visible top-down':<28}{rate(rows, 'naive', 'top1'):>8.2f}{'-':>14}")
    print(f"grasp synthesis: median {np.median(plan_ms):.1f} ms/object, "
          f"max {np.max(plan_ms):.1f} ms/object (pipeline meshes, K={planner.top_k}, "
          f"support plane fitted separately)")
    if args.json:
        Path(args.json).write_text(json.dumps({"commit": sha, "object_set": args.object_set,
                                               "sensor": args.sensor,
                                               "rows": rows,
                                               "plan_ms": plan_ms}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
