"""Accuracy and time of the embedded reconstruction on synthetic tabletop scenes (GT masks).

python benchmarks/embedded_reconstruction_accuracy.py [n_scenes] [key=value options...]

Options ``regime=default|robot-head`` (camera regime, as ``bench_core.py --regime``),
``seed=N`` (first scene seed, default 1000), ``verbose=true`` (one line per object) and
``cache=false`` (render every scene again); every other ``key=value`` is passed to
``EmbeddedReconstructor`` (``a,b`` gives a tuple of floats). Scenes come from the same ``.npz``
scene cache as ``bench_core.py`` (plain arrays, read with ``allow_pickle=False``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import load_scenes  # noqa: E402

from sam3d_bench.metrics import mean_scores, score_mesh, visible_only_baseline  # noqa: E402
from sam3d_ros.backends.embedded.reconstruction import EmbeddedReconstructor  # noqa: E402
from sam3d_ros.core.conventions import canonical_to_camera  # noqa: E402
from sam3d_ros.core.types import ObjectMask  # noqa: E402


def _parse(v: str):
    if "," in v:
        return tuple(float(x) for x in v.split(","))
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    opts = dict(a.split("=", 1) for a in sys.argv[2:])
    use_cache = bool(_parse(opts.pop("cache", "true")))
    verbose = bool(_parse(opts.pop("verbose", "false")))
    args = argparse.Namespace(
        regime=opts.pop("regime", "default"),
        seed=int(opts.pop("seed", "1000")),
        scenes=n,
        objects=3,
        width=640,
        height=480,
        pitch=None,
        distance=None,
        no_cache=not use_cache,
        cache_dir=os.path.join(tempfile.gettempdir(), "sam3d_bench_scenes"),
    )
    rec = EmbeddedReconstructor(**{k: _parse(v) for k, v in opts.items()})
    scenes = load_scenes(args)
    scores, base, times = [], [], []
    for sc in scenes:
        masks = [ObjectMask(o.object_id, o.visible_mask) for o in sc.objects]
        t0 = time.perf_counter()
        out = rec.reconstruct(sc.frame, masks, seed=0)
        times.append((time.perf_counter() - t0) / len(masks))
        for o, r in zip(sc.objects, out, strict=True):
            v = canonical_to_camera(
                r.mesh.vertices.astype(np.float64), r.rotation, r.translation, r.scale
            )
            s = score_mesh(v, r.mesh.faces, o, sc.camera_pose)
            scores.append(s)
            base.append(visible_only_baseline(sc, o))
            if verbose:
                print(sc.seed, o.urdf_id, {k: round(x, 3) for k, x in s.as_dict().items()})
    fmt = lambda d: {k: round(x, 3) for k, x in d.items()}  # noqa: E731
    print("baseline", fmt(mean_scores(base)))
    print("embedded", fmt(mean_scores(scores)))
    print(f"ms/object p50 {1000 * np.median(times):.1f}  max {1000 * np.max(times):.1f}")


if __name__ == "__main__":
    main()
