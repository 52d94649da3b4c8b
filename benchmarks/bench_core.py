#!/usr/bin/env python3
"""Accuracy and speed of the core's embedded backends on synthetic pybullet tabletop scenes.

Renders N scenes (fixed seeds; cached as ``.npz`` files in a temp directory, never in git, read
with ``allow_pickle=False``), then for
each prompt mode runs ``make_segmenter(...)`` + ``make_reconstructor(...)`` and scores every
reconstructed object against the ground truth (:mod:`sam3d_bench.metrics`):

* ``box``: one box prompt per object = its visible-mask box grown by ``--pad`` pixels;
* ``mask``: the ground-truth visible masks are given;
* ``visible-only``: baseline, the object's valid visible depth pixels lifted to 3D as the shape.

Predicted objects are matched to ground-truth objects by mask IoU (greedy); a ground-truth object
with no prediction counts as F = 0 and is excluded from the distance means (reported as
``missed``). Timing is per frame (all objects): segmentation + reconstruction, and artifact writing
with ``sam3d_ros.core.export.write_run`` when it exists.

Scene regimes (``--regime``, :data:`sam3d_bench.scenes.SCENE_REGIMES`): ``default``
(camera looking down at the table, pitch 35-55 deg, 0.55-0.85 m) and ``robot-head`` (more
side-on, calibrated so the visible-only baseline is near the issue's F@1cm 0.78 / F@5mm 0.65 /
Chamfer 0.53 cm). ``--pitch`` / ``--distance`` override the regime's camera ranges.

Sensor (``--sensor``): ``default`` is the :class:`SensorNoise` every earlier figure used;
``realsense`` is :meth:`SensorNoise.realsense` (stereo shadows, mixed edge pixels, dark-surface
holes, z^2 quantisation, 2 px colour-depth misregistration; measured on real frames by
``benchmarks/measure_real_sensor.py``). ``--prompts imperfect`` (the default with ``realsense``)
gives masks shifted / grown / shrunk by a few pixels and boxes with jittered sides
(:class:`PromptNoise`); scoring still uses the exact ground-truth masks.

Usage::

    python3 benchmarks/bench_core.py                 # 20 scenes x 3 objects, 640x480
    python3 benchmarks/bench_core.py --regime robot-head
    python3 benchmarks/bench_core.py --regime robot-head --sensor realsense --scenes 10
    python3 benchmarks/bench_core.py --scenes 5 --json out.json
    python3 benchmarks/bench_core.py --modes ''      # visible-only baseline only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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

from sam3d_bench import metrics  # noqa: E402
from sam3d_bench.scenes import (  # noqa: E402
    SCENE_REGIMES,
    GroundTruthObject,
    SyntheticScene,
    TablePlane,
    make_tabletop_scene,
)
from sam3d_bench.sensor import (  # noqa: E402
    SENSORS,
    PromptNoise,
    prompted_query,
)
from sam3d_ros.core.types import (  # noqa: E402
    CameraIntrinsics,
    Frame,
)

CACHE_VERSION = 6  # bump when the scene generator or the cache format changes


def canonical_to_camera(points, rotation_xyzw, translation, scale):
    """``p = R(q) · (scale ⊙ p_canonical) + t`` with ``q = [x, y, z, w]``."""
    try:
        from sam3d_ros.core.conventions import canonical_to_camera as conv
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


_INTRINSICS = ("fx", "fy", "cx", "cy", "width", "height")
_OBJECT_ARRAYS = ("mesh_vertices", "mesh_faces", "visible_mask", "box", "centre", "pose", "color")


def save_scene(path: Path, scene: SyntheticScene) -> None:
    """Write a scene as plain arrays (``np.savez``; no pickled objects), atomically."""
    k = scene.intrinsics
    arrays: Dict[str, np.ndarray] = {
        "seed": np.array(scene.seed),
        "render_seconds": np.array(scene.render_seconds),
        "rgb": scene.frame.rgb,
        "points": scene.frame.points,
        "intrinsics": np.array([getattr(k, name) for name in _INTRINSICS], dtype=np.float64),
        "camera_pose": scene.frame.camera_pose,
        "depth_m": scene.depth_m,
        "depth_clean": scene.depth_clean,
        "instance_mask": scene.instance_mask,
        "plane_normal": scene.table_plane.normal,
        "plane_offset": np.array(scene.table_plane.offset),
        "object_ids": np.array([o.object_id for o in scene.objects], dtype=np.int64),
        "urdf_ids": np.array([o.urdf_id for o in scene.objects], dtype=np.int64),
    }
    for i, obj in enumerate(scene.objects):
        for name in _OBJECT_ARRAYS:
            arrays[f"obj{i}_{name}"] = np.asarray(getattr(obj, name))
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read_scene(path: Path) -> SyntheticScene:
    """Inverse of :func:`save_scene` (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as z:
        fx, fy, cx, cy, width, height = (float(v) for v in z["intrinsics"])
        k = CameraIntrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=int(width), height=int(height))
        objects = []
        for i, (object_id, urdf_id) in enumerate(zip(z["object_ids"], z["urdf_ids"], strict=True)):
            a = {name: z[f"obj{i}_{name}"] for name in _OBJECT_ARRAYS}
            objects.append(
                GroundTruthObject(
                    object_id=int(object_id),
                    urdf_id=int(urdf_id),
                    mesh_vertices=a["mesh_vertices"],
                    mesh_faces=a["mesh_faces"],
                    visible_mask=a["visible_mask"],
                    box=tuple(int(v) for v in a["box"]),  # type: ignore[arg-type]
                    centre=a["centre"],
                    pose=a["pose"],
                    color=tuple(float(v) for v in a["color"]),  # type: ignore[arg-type]
                )
            )
        return SyntheticScene(
            seed=int(z["seed"]),
            frame=Frame(rgb=z["rgb"], points=z["points"], intrinsics=k,
                        camera_pose=z["camera_pose"]),
            depth_m=z["depth_m"],
            depth_clean=z["depth_clean"],
            objects=objects,
            table_plane=TablePlane(normal=z["plane_normal"], offset=float(z["plane_offset"])),
            instance_mask=z["instance_mask"],
            render_seconds=float(z["render_seconds"]),
        )


def _range(text: Optional[str]):
    if text is None:
        return None
    lo, hi = (float(v) for v in text.split(","))
    return (lo, hi)


def scene_kwargs(args) -> Dict[str, Any]:
    """Keyword arguments of ``make_tabletop_scene`` for the regime and overrides."""
    kwargs = dict(SCENE_REGIMES[args.regime])
    if args.pitch is not None:
        kwargs["pitch_deg_range"] = _range(args.pitch)
    if args.distance is not None:
        kwargs["distance_range"] = _range(args.distance)
    return kwargs


def prompt_noise(args) -> PromptNoise:
    """Prompt noise of the run: ``--prompts``, by default imperfect with the realistic sensor."""
    kind = args.prompts or ("imperfect" if args.sensor == "realsense" else "exact")
    return PromptNoise() if kind == "imperfect" else PromptNoise.none()


def load_scenes(args) -> List[SyntheticScene]:
    kwargs = scene_kwargs(args)
    noise = SENSORS[args.sensor]
    key_items: List[Any] = [
        CACHE_VERSION, args.objects, args.width, args.height, asdict(noise)
    ]
    if kwargs:  # the default regime keeps its cache key
        key_items.append({k: list(v) for k, v in sorted(kwargs.items())})
    key = json.dumps(key_items, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    cache = None if args.no_cache else Path(args.cache_dir) / digest
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    scenes = []
    for i in range(args.scenes):
        seed = args.seed + i
        path = cache / f"scene_{seed}.npz" if cache is not None else None
        scene = None
        if path is not None and path.exists():
            try:
                scene = read_scene(path)
            except Exception:  # noqa: BLE001 (stale or partial file: render again)
                scene = None
        if scene is None:
            scene = make_tabletop_scene(seed, args.objects, args.width, args.height,
                                        noise=noise, **kwargs)
            if path is not None:
                save_scene(path, scene)
        scenes.append(scene)
    return scenes


# --------------------------------------------------------------------------------------------
# backends


def _options(pairs) -> Dict[str, Any]:
    """``["key=value", ...]`` → keyword arguments (values read as Python literals)."""
    import ast

    out: Dict[str, Any] = {}
    for pair in pairs or ():
        key, _, value = pair.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def make_backends(args):
    try:
        from sam3d_ros.backends import make_reconstructor, make_segmenter

        seg = make_segmenter(args.segmenter, **_options(args.seg_opt))
    except Exception as exc:  # noqa: BLE001 (report and degrade)
        return None, None, f"segmenter {args.segmenter!r} not available: {exc!r}"
    try:
        rec = make_reconstructor(args.reconstructor, **_options(args.rec_opt))
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
            from sam3d_ros.core.export import write_run
        except ImportError:
            write_run = None
    tmp_root = Path(tempfile.mkdtemp(prefix="bench_core_runs_"))
    try:
        for scene in scenes:
            query = prompted_query(scene, mode, prompt_noise(args), args.pad)
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
        f"# regime {header['regime']} {header['scene_kwargs'] or ''}, sensor {header['sensor']}, "
        f"prompts {header['prompts']}, "
        f"{header['scenes']} scenes x {header['objects_per_scene']} objects, "
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
    p.add_argument("--regime", default="default", choices=sorted(SCENE_REGIMES),
                   help="camera regime of the scenes (see module docstring)")
    p.add_argument("--sensor", default="default", choices=sorted(SENSORS),
                   help="depth sensor model: default (earlier figures) or realsense (measured)")
    p.add_argument("--prompts", choices=("exact", "imperfect"),
                   help="prompt masks/boxes exact or a few px off (default: imperfect with "
                        "--sensor realsense, else exact)")
    p.add_argument("--pitch", metavar="MIN,MAX", help="override: camera pitch range, degrees")
    p.add_argument("--distance", metavar="MIN,MAX", help="override: camera distance range, m")
    p.add_argument("--pad", type=int, default=4, help="box prompt padding, pixels")
    p.add_argument("--modes", default="box,mask",
                   help="comma list of box, mask ('' = visible-only baseline only)")
    p.add_argument("--segmenter", default="embedded")
    p.add_argument("--reconstructor", default="embedded")
    p.add_argument("--seg-opt", action="append", metavar="KEY=VALUE",
                   help="segmenter option (repeatable), e.g. colour_refine=False")
    p.add_argument("--rec-opt", action="append", metavar="KEY=VALUE",
                   help="reconstructor option (repeatable), e.g. primitives=False")
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
        "regime": args.regime,
        "sensor": args.sensor,
        "prompts": "exact" if prompt_noise(args) == PromptNoise.none() else "imperfect",
        "scene_kwargs": scene_kwargs(args),
        "scenes": len(scenes),
        "objects_per_scene": args.objects,
        "width": args.width,
        "height": args.height,
        "seeds": [s.seed for s in scenes],
        "render_s_mean": float(np.mean([s.render_seconds for s in scenes])),
        "load_s": load_s,
    }

    results: Dict[str, Any] = {}
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    seg, rec, why = make_backends(args) if modes else (None, None, None)
    for mode in modes:
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
