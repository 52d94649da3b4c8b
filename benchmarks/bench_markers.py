"""Cost and quality of the rviz mesh-marker preview (``core.output_messages.mesh_marker``).

    .venv/jazzy/bin/python -P benchmarks/bench_markers.py [--scenes 5] [--budget 1000]

Embedded reconstructions (box prompts) of synthetic 640×480 tabletop scenes; per object: its
triangles, the boundary edges of the old preview (an evenly spaced subset of the triangles) and
of the decimated one, the decimation time
(:func:`~sam3d_ros.core.output_messages.marker_preview`), the whole marker build without a cache,
and the marker build through :class:`~sam3d_ros.core.output_messages.MarkerPreviewCache` for the
**next frame** of the still scene
(the same rendering with new sensor noise, reconstructed again): whether the cached preview
was reused and what that cost. Timings are medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from std_msgs.msg import Header

# sam3d_bench from the checkout; appended, so that sam3d_ros is the installed one (with msgs)
sys.path.append(str(Path(__file__).resolve().parents[1]))

from sam3d_bench.scenes import make_tabletop_scene  # noqa: E402
from sam3d_bench.sensor import SensorNoise, apply_depth_noise  # noqa: E402
from sam3d_ros.core import conventions as conv  # noqa: E402
from sam3d_ros.core import output_messages as out  # noqa: E402
from sam3d_ros.core.engine import Engine  # noqa: E402
from sam3d_ros.core.mesh_decimation import boundary_edge_count, is_closed_manifold  # noqa: E402
from sam3d_ros.core.types import Frame  # noqa: E402
from sam3d_ros.ros.message_kit import RCLPY  # noqa: E402

HEADER = Header(frame_id="camera_color_optical_frame")


def median_ms(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def next_frame(sc, seed):
    """The same still scene seen again: new depth noise on the clean rendering."""
    depth = apply_depth_noise(sc.depth_clean, SensorNoise(), np.random.default_rng(seed),
                              rgb=sc.frame.rgb, fx=sc.intrinsics.fx)
    return Frame(rgb=sc.frame.rgb, points=conv.backproject(depth, sc.intrinsics),
                 intrinsics=sc.intrinsics)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--budget", type=int, default=1000, help="marker_max_triangles")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    engine = Engine()
    rows = []
    print("| scene/object | triangles | boundary edges: spaced subset → decimated | closed | "
          "decimate ms | marker ms (no cache) | next frame: reused | marker ms (cache) |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in range(args.first_seed, args.first_seed + args.scenes):
        sc = make_tabletop_scene(seed, n_objects=3)
        query = sc.box_query(4)
        first = engine.process(sc.frame, query, 42).objects
        second = {o.object_id: o for o in engine.process(next_frame(sc, 1000 + seed), query,
                                                         42).objects}
        for obj in first:
            faces = np.asarray(obj.mesh.faces)
            spaced = faces[np.linspace(0, len(faces) - 1, min(args.budget, len(faces)))
                           .round().astype(np.int64)]
            preview = out.marker_preview(obj, args.budget)
            dec_ms = median_ms(lambda o=obj: out.marker_preview(o, args.budget), args.repeat)
            marker_ms = median_ms(lambda o=obj: out.mesh_marker(RCLPY, HEADER, o, args.budget),
                                  args.repeat)
            cache = out.MarkerPreviewCache()
            out.mesh_marker(RCLPY, HEADER, obj, args.budget, cache=cache)
            again = second.get(obj.object_id)
            reused, cached_ms = None, float("nan")
            if again is not None:
                t0 = time.perf_counter()
                out.mesh_marker(RCLPY, HEADER, again, args.budget, cache=cache)
                cached_ms = 1000.0 * (time.perf_counter() - t0)
                reused = cache.reused == 1
            row = (len(faces), boundary_edge_count(spaced), boundary_edge_count(preview.faces),
                   is_closed_manifold(preview.faces), dec_ms, marker_ms, reused, cached_ms)
            rows.append(row)
            print(f"| {seed}/{obj.object_id} | {row[0]} | {row[1]} → {row[2]} | {row[3]} | "
                  f"{dec_ms:.0f} | {marker_ms:.0f} | {reused} | {cached_ms:.1f} |", flush=True)
    arr = np.array([[r[0], r[1], r[2], r[4], r[5], r[7]] for r in rows], dtype=float)
    hits = [r[6] for r in rows if r[6] is not None]
    print(f"\n{len(rows)} objects: triangles median {np.median(arr[:, 0]):.0f}; boundary edges "
          f"spaced subset median {np.median(arr[:, 1]):.0f}, decimated max {arr[:, 2].max():.0f}"
          f" (closed {sum(r[3] for r in rows)}/{len(rows)}); decimation ms median "
          f"{np.median(arr[:, 3]):.0f} / max {arr[:, 3].max():.0f}; marker without cache ms "
          f"median {np.median(arr[:, 4]):.0f}; next frame reused {sum(hits)}/{len(hits)}, "
          f"marker through the cache ms median {np.nanmedian(arr[:, 5]):.1f}")


if __name__ == "__main__":
    main()
