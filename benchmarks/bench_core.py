#!/usr/bin/env python3
"""Accuracy and speed of the core's embedded backends on synthetic pybullet tabletop scenes.

Renders N scenes (fixed seeds; cached as pickles in a temp directory, never in git), then for
each prompt mode runs ``make_segmenter(...)`` + ``make_reconstructor(...)`` and scores every
reconstructed object against the ground truth (:mod:`sam3d_ros.synthetic.metrics`):

* ``box``: one box prompt per object = its visible-mask box grown by ``--pad`` pixels;
* ``mask``: the ground-truth visible masks are given;
* ``visible-only``: baseline, the object's valid visible depth pixels lifted to 3D as the shape.

Predicted objects are matched to ground-truth objects by mask IoU (greedy); a ground-truth object
with no prediction counts as F = 0 and is excluded from the distance means (reported as
``missed``). Timing is per frame (all objects): segmentation + reconstruction, and artifact writing
with ``sam3d_ros.export.write_run`` when it exists.

Usage::

    python3 benchmarks/bench_core.py                 # 20 scenes x 3 objects, 640x480
    python3 benchmarks/bench_core.py --scenes 5 --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam3d_ros.synthetic import metrics  # noqa: E402
from sam3d_ros.synthetic.scenes import SyntheticScene, make_tabletop_scene  # noqa: E402
from sam3d_ros.synthetic.sensor import SensorNoise  # noqa: E402

CACHE_VERSION = 5  # bump when the scene generator changes


def canonical_to_camera(points, rotation_xyzw, translation, scale):
    """``p = R(q) · (scale ⊙ p_canonical) + t`` with ``q = [x, y, z, w]``."""
    try:
        from sam3d_ros.conventions import canonical_to_camera as conv
    except ImportError:  # local fallback with the same contract (see docs/ARCHITECTURE.md)
        x, y, z, w = np.asarray(rotation_xyzw, dtype=np.float64) / np.linalg.norm(rotation_xyzw)
        rot = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        p = np.asarray(points, dtype=np.float64) * np.broadcast_to(np.asarray(scale, float), (3,))
        return p @ rot.T + np.asarray(translation, dtype=np.float64)
    return conv(points, rotation_xyzw, translation, scale)


# --------------------------------------------------------------------------------------------
# scenes


def load_scenes(args) -> List[SyntheticScene]:
    key = json.dumps(
        [CACHE_VERSION, args.objects, args.width, args.height, asdict(SensorNoise())],
        sort_keys=True,
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    cache = None if args.no_cache else Path(args.cache_dir) / digest
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    scenes = []
    for i in range(args.scenes):
        seed = args.seed + i
        path = cache / f"scene_{seed}.pkl" if cache is not None else None
        scene = None
        if path is not None and path.exists():
            try:
                with open(path, "rb") as f:
                    scene = pickle.load(f)
            except Exception:
                scene = None
        if scene is None:
            scene = make_tabletop_scene(seed, args.objects, args.width, args.height)
            if path is not None:
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                with open(tmp, "wb") as f:
                    pickle.dump(scene, f, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, path)
        scenes.append(scene)
    return scenes


# --------------------------------------------------------------------------------------------
# backends


def make_backends(args):
    try:
        from sam3d_ros.backends import make_reconstructor, make_segmenter

        seg = make_segmenter(args.segmenter)
    except Exception as exc:  # noqa: BLE001 (report and degrade)
        return None, None, f"segmenter {args.segmenter!r} not available: {exc!r}"
    try:
        rec = make_reconstructor(args.reconstructor)
    except Exception as exc:  # noqa: BLE001
        return seg, None, f"reconstructor {args.reconstructor!r} not available: {exc!r}"
    return seg, rec, None


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def match(recs, scene: SyntheticScene) -> Dict[int, Any]:
    """Greedy mask-IoU matching of reconstructions to ground-truth object ids."""
    pairs = []
    for r_index, rec in enumerate(recs):
        mask = np.asarray(rec.mask, dtype=bool)
        for obj in scene.objects:
            if mask.shape == obj.visible_mask.shape:
                pairs.append((_iou(mask, obj.visible_mask), r_index, obj.object_id))
    pairs.sort(reverse=True)
    used_r, out = set(), {}
    for iou, r_index, gt_id in pairs:
        if iou <= 0.05 or r_index in used_r or gt_id in out:
            continue
        used_r.add(r_index)
        out[gt_id] = recs[r_index]
    return out


def score_reconstruction(rec, obj, scene) -> metrics.ShapeScores:
    v = canonical_to_camera(
        np.asarray(rec.mesh.vertices, dtype=np.float64), rec.rotation, rec.translation, rec.scale
    )
    return metrics.score_mesh(v, rec.mesh.faces, obj, scene.camera_pose)


def run_mode(mode: str, scenes, seg, rec, args) -> Dict[str, Any]:
    scores: List[metrics.ShapeScores] = []
    times, export_times, mask_ious = [], [], []
    missed, errors = 0, []
    write_run = None
    if not args.no_export:
        try:
            from sam3d_ros.export import write_run
        except ImportError:
            write_run = None
    tmp_root = Path(tempfile.mkdtemp(prefix="bench_core_runs_"))
    try:
        for scene in scenes:
            query = scene.box_query(args.pad) if mode == "box" else scene.mask_query()
            try:
                t0 = time.perf_counter()
                masks = seg.segment(scene.frame, query)
                recs = rec.reconstruct(scene.frame, masks, scene.seed)
                times.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"seed {scene.seed}: {exc!r}")
                if args.verbose:
                    traceback.print_exc()
                missed += len(scene.objects)
                scores.extend(_zero() for _ in scene.objects)
                continue
            matched = match(recs, scene)
            for obj in scene.objects:
                r = matched.get(obj.object_id)
                if r is None:
                    missed += 1
                    scores.append(_zero())
                    continue
                mask_ious.append(_iou(np.asarray(r.mask, bool), obj.visible_mask))
                scores.append(score_reconstruction(r, obj, scene))
            if write_run is not None and recs:
                run_dir = tmp_root / f"run_{scene.seed}"
                try:
                    t0 = time.perf_counter()
                    write_run(run_dir, {"image_url": "synthetic.png", "seed": scene.seed},
                              scene.frame, recs)
                    export_times.append(time.perf_counter() - t0)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"export seed {scene.seed}: {exc!r}")
                    write_run = None
                shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return summarize(scores, times, export_times, missed, errors, mask_ious)


def _zero() -> metrics.ShapeScores:
    return metrics.ShapeScores(0, 0, 0, 0, 0, 0, float("nan"), float("nan"))


def summarize(scores, times, export_times, missed, errors, mask_ious=None) -> Dict[str, Any]:
    rows = [s.as_dict() for s in scores]
    out: Dict[str, Any] = {"objects": len(rows), "missed": missed}
    for k in (rows[0] if rows else {}):
        vals = np.array([r[k] for r in rows], dtype=np.float64)
        out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    if mask_ious:
        out["mask_iou"] = float(np.mean(mask_ious))
    if times:
        out["seg_rec_p50_s"] = float(np.percentile(times, 50))
        out["seg_rec_p95_s"] = float(np.percentile(times, 95))
    if export_times:
        out["export_p50_s"] = float(np.percentile(export_times, 50))
        out["export_p95_s"] = float(np.percentile(export_times, 95))
    if errors:
        out["errors"] = errors[:10]
    return out


# --------------------------------------------------------------------------------------------


def _fmt(v: Optional[float], spec: str) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return format(v, spec)


def print_table(results: Dict[str, Any], header: Dict[str, Any]) -> None:
    print(
        f"# {header['scenes']} scenes x {header['objects_per_scene']} objects, "
        f"{header['width']}x{header['height']}, render {header['render_s_mean']:.2f} s/scene "
        f"(mean, uncached)"
    )
    cols = ("mode", "F@5mm", "F@1cm", "Chamfer cm", "centre cm", "mask IoU", "missed",
            "seg+rec p50/p95 s", "export p50/p95 s")
    print(" | ".join(cols))
    print(" | ".join("---" for _ in cols))
    for mode, r in results.items():
        if "unavailable" in r:
            print(f"{mode} | not available: {r['unavailable']}")
            continue
        timing = (
            f"{_fmt(r.get('seg_rec_p50_s'), '.3f')}/{_fmt(r.get('seg_rec_p95_s'), '.3f')}"
            if "seg_rec_p50_s" in r
            else "-"
        )
        export = (
            f"{_fmt(r.get('export_p50_s'), '.3f')}/{_fmt(r.get('export_p95_s'), '.3f')}"
            if "export_p50_s" in r
            else "-"
        )
        print(
            f"{mode} | {_fmt(r.get('f_5mm'), '.3f')} | {_fmt(r.get('f_1cm'), '.3f')} | "
            f"{_fmt(r.get('chamfer_cm'), '.2f')} | {_fmt(r.get('centre_error_cm'), '.2f')} | "
            f"{_fmt(r.get('mask_iou'), '.3f')} | {r.get('missed', 0)} | {timing} | {export}"
        )
        for e in r.get("errors", [])[:3]:
            print(f"    error: {e}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=20)
    p.add_argument("--objects", type=int, default=3)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--seed", type=int, default=1000, help="first scene seed")
    p.add_argument("--pad", type=int, default=4, help="box prompt padding, pixels")
    p.add_argument("--modes", default="box,mask", help="comma list of box, mask")
    p.add_argument("--segmenter", default="embedded")
    p.add_argument("--reconstructor", default="embedded")
    p.add_argument(
        "--cache-dir", default=os.path.join(tempfile.gettempdir(), "sam3d_bench_scenes")
    )
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-export", action="store_true", help="skip artifact writing timing")
    p.add_argument("--json", metavar="PATH", help="write results as JSON ('-' = stdout)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    scenes = load_scenes(args)
    load_s = time.perf_counter() - t0
    header = {
        "scenes": len(scenes),
        "objects_per_scene": args.objects,
        "width": args.width,
        "height": args.height,
        "seeds": [s.seed for s in scenes],
        "render_s_mean": float(np.mean([s.render_seconds for s in scenes])),
        "load_s": load_s,
    }

    results: Dict[str, Any] = {}
    seg, rec, why = make_backends(args)
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        if why is not None:
            results[mode] = {"unavailable": why}
        else:
            results[mode] = run_mode(mode, scenes, seg, rec, args)
    baseline = [metrics.visible_only_baseline(s, o) for s in scenes for o in s.objects]
    results["visible-only"] = summarize(baseline, [], [], 0, [])

    if args.json != "-":
        print_table(results, header)
    if args.json:
        doc = {"config": header, "results": results}
        text = json.dumps(doc, indent=2, default=float)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
