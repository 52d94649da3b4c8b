"""Time sam3d_ros.core.export.write_run on 3 objects of ~5k vertices / ~20k Gaussians each.

Usage: python benchmarks/bench_export.py [--repeat N]
Prints wall-clock median / best and CPU-time median (process_time, less sensitive to other
processes on a shared machine) of the whole run-directory write and of its parts.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from sam3d_ros.core import export as ex
from sam3d_ros.core.types import Frame, Gaussians, Mesh, ObjectReconstruction


def make_object(obj_id, rng, n_vert=5000, n_gauss=20000, h=480, w=640):
    n_face = 2 * n_vert
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return ObjectReconstruction(
        object_id=obj_id,
        object_index=obj_id,
        mesh=Mesh(rng.uniform(-0.5, 0.5, (n_vert, 3)).astype(np.float32),
                  rng.integers(0, n_vert, (n_face, 3)).astype(np.int32),
                  rng.integers(0, 256, (n_vert, 3), dtype=np.uint8)),
        gaussians=Gaussians(rng.uniform(-0.5, 0.5, (n_gauss, 3)).astype(np.float32),
                            rng.uniform(0.001, 0.02, (n_gauss, 3)).astype(np.float32),
                            rng.normal(size=(n_gauss, 4)).astype(np.float32),
                            rng.uniform(0, 1, (n_gauss, 3)).astype(np.float32),
                            rng.uniform(0.05, 0.95, n_gauss).astype(np.float32)),
        rotation=q, translation=np.array([0.1 * obj_id, 0.0, 1.0]), scale=np.array([0.2]),
        region=rng.uniform(size=(h, w)) > 0.7, label="thing", score=0.9,
    )


def scene_rows(objs):
    enc = [ex.encode_splat(o.gaussians) for o in objs]
    scene = np.concatenate(enc)
    start = 0
    for o, rows in zip(objs, enc, strict=True):
        ex._pose_splat(scene[start:start + len(rows)], *ex._pose(o))
        start += len(rows)
    return scene


def timeit(fn, repeat):
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1000 * float(np.median(wall)), 1000 * min(wall), 1000 * float(np.median(cpu))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    objs = [make_object(i, rng) for i in range(3)]
    frame = Frame(rgb=np.zeros((480, 640, 3), np.uint8))
    request = {"image_url": "file:///x.png", "seed": 1}
    root = Path(tempfile.mkdtemp(prefix="bench_export_"))
    counter = iter(range(10**6))
    try:
        def full():
            ex.write_run(root / f"run{next(counter)}", request, frame, objs)

        rows = [
            ("write_run (3 obj, 15k vert, 60k gauss)", full),
            ("  glb_bytes scene (camera frame)",
             lambda: ex.glb_bytes([ex.object_glb_mesh(o, "camera") for o in objs])),
            ("  glb_bytes x3 (canonical)",
             lambda: [ex.glb_bytes([ex.object_glb_mesh(o)]) for o in objs]),
            ("  encode_splat x3 (canonical rows)",
             lambda: [ex.encode_splat(o.gaussians) for o in objs]),
            ("  scene splat rows (concat + pose)", lambda: scene_rows(objs)),
            ("  splat_ply_bytes(camera_gaussians) (alt.)",
             lambda: ex.splat_ply_bytes(ex.camera_gaussians(objs))),
        ]
        full()  # warm-up
        for name, fn in rows:
            med, best, cpu = timeit(fn, args.repeat)
            print(f"{name:46s} wall median {med:6.1f} ms  best {best:6.1f} ms  "
                  f"cpu median {cpu:6.1f} ms")
        size = sum(p.stat().st_size for p in (root / "run0").rglob("*") if p.is_file())
        print(f"run directory size: {size / 1e6:.1f} MB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
