#!/usr/bin/env python3
"""Write the small example scene ``examples/tabletop/`` from a synthetic pybullet scene.

Files (all small, compressed; see ``examples/tabletop/README.md``):

* ``rgb.png``: 640×480 RGB image;
* ``pointmap.npz``: ``depth`` uint16 millimetres (0 = invalid) and ``K`` float64 3×3;
* ``request.json``: hosted request (``image_url``, ``pointmap_url``, ``box_prompts``, ``seed``);
* ``ground_truth.npz``: camera pose, table plane, instance mask and object meshes (camera frame).

Usage: ``python3 tools/make_example_scene.py [--seed 7] [--out examples/tabletop]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam3d_bench.scenes import make_tabletop_scene  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def intrinsics_matrix(k) -> np.ndarray:
    """3×3 camera matrix of :class:`~sam3d_ros.core.types.CameraIntrinsics`."""
    return np.array([[k.fx, 0.0, k.cx], [0.0, k.fy, k.cy], [0.0, 0.0, 1.0]])


def write_example(out: Path, seed: int, n_objects: int, pad: int, request_seed: int) -> dict:
    """Render the scene and write the example files into ``out``; return the request."""
    scene = make_tabletop_scene(seed, n_objects=n_objects, width=640, height=480)
    out.mkdir(parents=True, exist_ok=True)

    Image.fromarray(scene.frame.rgb).save(out / "rgb.png", optimize=True)

    # The noise model quantises depth to 1 mm, so uint16 millimetres are lossless.
    depth = scene.depth_m
    depth_mm = np.where(np.isfinite(depth), np.rint(depth * 1000.0), 0).astype(np.uint16)
    np.savez_compressed(
        out / "pointmap.npz", depth=depth_mm, K=intrinsics_matrix(scene.intrinsics)
    )

    request = {
        "image_url": "rgb.png",
        "pointmap_url": "pointmap.npz",
        "box_prompts": [
            {
                "x_min": b.x_min,
                "y_min": b.y_min,
                "x_max": b.x_max,
                "y_max": b.y_max,
                "object_id": b.object_id,
            }
            for b in scene.box_prompts(pad)
        ],
        "seed": request_seed,
    }
    (out / "request.json").write_text(json.dumps(request, indent=2) + "\n")

    gt = {
        "camera_pose": scene.camera_pose,
        "table_plane": np.append(scene.table_plane.normal, scene.table_plane.offset),
        "instance_mask": scene.instance_mask.astype(np.uint8),
        "object_ids": np.array([o.object_id for o in scene.objects]),
        "urdf_ids": np.array([o.urdf_id for o in scene.objects]),
        "centres": np.array([o.centre for o in scene.objects]),
        "boxes": np.array([o.box for o in scene.objects]),
    }
    for o in scene.objects:
        gt[f"mesh_vertices_{o.object_id}"] = o.mesh_vertices.astype(np.float32)
        gt[f"mesh_faces_{o.object_id}"] = o.mesh_faces.astype(np.int32)
    np.savez_compressed(out / "ground_truth.npz", **gt)
    return request


def main(argv=None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=7, help="scene seed")
    p.add_argument("--objects", type=int, default=3)
    p.add_argument("--pad", type=int, default=4, help="box prompt padding, pixels")
    p.add_argument("--request-seed", type=int, default=42)
    p.add_argument("--out", default=str(REPO / "examples" / "tabletop"))
    args = p.parse_args(argv)
    out = Path(args.out)
    write_example(out, args.seed, args.objects, args.pad, args.request_seed)
    total = 0
    for f in sorted(out.iterdir()):
        if f.is_file():
            total += f.stat().st_size
            print(f"{f.stat().st_size:>9d}  {f}")
    print(f"{total:>9d}  total bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
