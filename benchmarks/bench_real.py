#!/usr/bin/env python3
"""The embedded pipeline on real RealSense frames (``../shared/real_rgbd``).

For the masked frames (``dof6_*``, ``m2t2_*``) it runs the folder's hosted requests with box,
click and mask prompts through :class:`sam3d_ros.core.engine.Engine` and measures, per object, the
IoU of the result's silhouette (the posed mesh projected with K) with the given mask, ignoring the
pixels of the other prompted objects (completing an occluded part is not penalised), and the same
IoU of the mask the object was reconstructed from (the segmenter's output). For every
frame (unlabelled ones are segmented automatically) it prints label-free figures
(:func:`sam3d_bench.evaluation.sanity_figures`): the share of mesh vertices more than 1 cm in front
of the observed depth, depth over width along the horizontal viewing direction, mesh extent over
the visible points' extent, watertightness; the known sizes (sugar box ``dof6_7``, cracker box in
``m2t2_0``/``m2t2_1``) against their true extents; and the time of segmentation +
reconstruction per frame at 640×480 and 1280×720.

The data are read where they are and never copied::

    python -P benchmarks/bench_real.py                      # ../shared/real_rgbd
    python -P benchmarks/bench_real.py --data DIR --json out.json
    SAM3D_REAL_RGBD=DIR python -P benchmarks/bench_real.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam3d_bench.evaluation import (  # noqa: E402
    AUTO_REQUEST,
    load_real_frame,
    posed_vertices,
    real_rgbd_dir,
    sanity_figures,
    silhouette,
    silhouette_iou,
)
from sam3d_ros.core.engine import Engine  # noqa: E402
from sam3d_ros.core.errors import Sam3dError  # noqa: E402
from sam3d_ros.core.inputs import parse_request  # noqa: E402
from sam3d_ros.core.support_plane import fit_support_plane  # noqa: E402
from sam3d_ros.core.types import SegmentationQuery  # noqa: E402

# Known object sizes (sorted oriented-box extents, metres): see ../shared/real_rgbd/README.md.
SUGAR_BOX = (0.045, 0.092, 0.176)
CRACKER_BOX = (0.072, 0.163, 0.213)
KNOWN_SIZES = {
    ("dof6_7", 1): ("sugar box", SUGAR_BOX),
    ("m2t2_0", 102): ("cracker box", CRACKER_BOX),
    ("m2t2_1", 101): ("cracker box", CRACKER_BOX),
}
MODES = ("boxes", "points", "masks")


def object_ids(request: Dict[str, Any]) -> List[int]:
    """The ground-truth mask id of each object of a request, in result order."""
    if "mask_urls" in request:
        return [int(Path(u).stem) for u in request["mask_urls"]]
    prompts = request.get("box_prompts", []) + request.get("point_prompts", [])
    ids = [p["object_id"] for p in prompts]
    return sorted(set(ids))


def run_request(engine: Engine, frame_dir: Path, request: Dict[str, Any]):
    """Parse and process a request; returns (parsed, outcome, seconds of segment+reconstruct)."""
    parsed = parse_request(request, frame_dir, engine.input_options)
    t0 = time.perf_counter()
    outcome = engine.process(parsed.frame, parsed.query, parsed.seed)
    return parsed, outcome, time.perf_counter() - t0


def frame_up(points: np.ndarray, masks: List[np.ndarray]) -> Optional[np.ndarray]:
    """Support-plane normal (camera frame) fitted outside the objects, or ``None``."""
    valid = np.isfinite(points[:, :, 2])
    for m in masks:
        valid &= ~m
    plane = fit_support_plane(points[::4, ::4], valid=valid[::4, ::4], rng=0)
    return None if plane is None else np.asarray(plane.normal, dtype=np.float64)


def evaluate_frame(engine: Engine, frame_dir: Path, modes=MODES) -> Dict[str, Any]:
    """All figures of one frame folder."""
    rf = load_real_frame(frame_dir)
    out: Dict[str, Any] = {"frame": rf.name, "size": list(rf.rgb.shape[1::-1]), "modes": {}}
    gt_union = np.zeros(rf.depth.shape, dtype=bool)
    for m in rf.masks.values():
        gt_union |= m
    for mode in modes:
        request = rf.request(mode)
        if request is None:
            continue
        try:
            parsed, outcome, seconds = run_request(engine, frame_dir, request)
        except Sam3dError as exc:  # the frame's objects then count as IoU 0
            out["modes"][mode] = {"error": str(exc), "objects": [
                {"id": int(i), "iou": 0.0, "seg_iou": 0.0, "failed": True}
                for i in object_ids(request)
                if i in rf.masks or mode == "masks"]}
            continue
        ids = object_ids(request)
        frame = parsed.frame
        k = frame.intrinsics
        up = frame_up(frame.points, [o.mask for o in outcome.objects])
        per_obj = []
        for obj in outcome.objects:
            gt_id = ids[obj.object_id] if mode == "masks" else obj.object_id
            row: Dict[str, Any] = {"id": int(gt_id)}
            if gt_id in rf.masks:
                others = gt_union & ~rf.masks[gt_id]
                sil = silhouette(posed_vertices(obj), obj.mesh.faces, k, rf.depth.shape)
                row["iou"] = silhouette_iou(sil, rf.masks[gt_id], ignore=others)
                # The mask the object was reconstructed from (the segmenter's), same measure.
                row["seg_iou"] = silhouette_iou(obj.mask, rf.masks[gt_id], ignore=others)
            fig = sanity_figures(obj, frame.points, k, up)
            row.update(
                in_front=fig.in_front,
                depth_over_width=fig.depth_over_width,
                extent_ratio=fig.extent_ratio,
                watertight=fig.watertight,
                extents=[round(float(e), 4) for e in fig.extents],
            )
            known = KNOWN_SIZES.get((rf.name, gt_id))
            if known is not None:
                row["known"] = known[0]
                row["size_error"] = (fig.extents - np.asarray(known[1])).tolist()
            per_obj.append(row)
        out["modes"][mode] = {"seconds": seconds, "objects": per_obj}
    if not rf.masks:  # unlabelled frame: automatic segmentation
        try:
            parsed = parse_request(dict(AUTO_REQUEST), frame_dir, engine.input_options)
            t0 = time.perf_counter()
            outcome = engine.process(parsed.frame, SegmentationQuery(), 42)
            seconds = time.perf_counter() - t0
            up = frame_up(parsed.frame.points, [o.mask for o in outcome.objects])
            rows = []
            for obj in outcome.objects:
                fig = sanity_figures(obj, parsed.frame.points, parsed.frame.intrinsics, up)
                rows.append(dict(in_front=fig.in_front, depth_over_width=fig.depth_over_width,
                                 extent_ratio=fig.extent_ratio, watertight=fig.watertight))
            out["modes"]["auto"] = {"seconds": seconds, "objects": rows}
        except Sam3dError as exc:
            out["modes"]["auto"] = {"error": str(exc)}
    return out


def _mean(values) -> float:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def summarize(frames: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Means per group (m2t2, dof6, all) and mode."""
    groups = {"m2t2": [], "dof6": [], "ucn": [], "graspnet": []}
    for f in frames:
        groups.setdefault(f["frame"].split("_")[0], []).append(f)
    table: Dict[str, Any] = {}
    for group, members in groups.items():
        for mode in MODES + ("auto",):
            rows = [o for f in members for o in f["modes"].get(mode, {}).get("objects", [])]
            errors = sum("error" in f["modes"].get(mode, {}) for f in members)
            if not rows and not errors:
                continue
            ok = [o for o in rows if not o.get("failed")]
            secs = [f["modes"][mode]["seconds"] for f in members
                    if "seconds" in f["modes"].get(mode, {})]
            table[f"{group}/{mode}"] = {
                "objects": len(rows),
                "errors": errors,
                "iou": _mean(o.get("iou") for o in rows),
                "seg_iou": _mean(o.get("seg_iou") for o in rows),
                "in_front_max": max((o["in_front"] for o in ok), default=float("nan")),
                "in_front_mean": _mean(o["in_front"] for o in ok),
                "depth_over_width_median": float(np.median([o["depth_over_width"] for o in ok]))
                if ok else float("nan"),
                "extent_ratio_median": float(np.median([o["extent_ratio"] for o in ok]))
                if ok else float("nan"),
                "watertight": _mean(float(o["watertight"]) for o in ok),
                "seconds_p50": float(np.median(secs)) if secs else float("nan"),
            }
    return table


def print_report(frames: List[Dict[str, Any]], table: Dict[str, Any], commit: str,
                 workers: int = 1) -> None:
    """Print the tables."""
    print(f"# bench_real @ {commit}, {workers} worker thread(s) per frame")
    print("| group/mode | objects | errors | IoU | mask IoU (segmenter) | in front >1cm (mean / "
          "max) | depth/width p50 | extent ratio p50 | watertight | seg+rec p50 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, r in table.items():
        print(f"| {key} | {r['objects']} | {r['errors']} | {r['iou']:.3f} | {r['seg_iou']:.3f} | "
              f"{r['in_front_mean']:.3f} / {r['in_front_max']:.3f} | "
              f"{r['depth_over_width_median']:.2f} | {r['extent_ratio_median']:.2f} | "
              f"{r['watertight']:.2f} | {1000 * r['seconds_p50']:.0f} ms |")
    print()
    print("| known size | frame | mode | extents (cm, sorted) | truth (cm) | largest-axis error |")
    print("|---|---|---|---|---|---|")
    for f in frames:
        for mode, res in f["modes"].items():
            for o in res.get("objects", []):
                if "known" in o:
                    name = o["known"]
                    truth = SUGAR_BOX if name == "sugar box" else CRACKER_BOX
                    ext = " × ".join(f"{100 * e:.1f}" for e in o["extents"])
                    tru = " × ".join(f"{100 * e:.1f}" for e in truth)
                    print(f"| {name} | {f['frame']} | {mode} | {ext} | {tru} | "
                          f"{100 * o['size_error'][2]:+.1f} cm |")
    print()
    print("| frame | mode | per-object IoU |")
    print("|---|---|---|")
    for f in frames:
        for mode, res in f["modes"].items():
            if "error" in res:
                print(f"| {f['frame']} | {mode} | error: {res['error']} |")
            elif any("iou" in o for o in res["objects"]):
                ious = " ".join(f"{o['id']}:{o['iou']:.2f}" for o in res["objects"] if "iou" in o)
                print(f"| {f['frame']} | {mode} | {ious} |")


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    """Run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="real_rgbd folder")
    p.add_argument("--frames", default="", help="comma-separated frame names (default: all)")
    p.add_argument("--modes", default=",".join(MODES), help="request kinds to run")
    p.add_argument("--json", type=Path, default=None, help="write all figures here")
    p.add_argument("--workers", default="1",
                   help="threads per frame's objects (Engine(workers=...); 1 = the issue's "
                   "one-core figure, auto = up to 4 cores); the figures other than time are "
                   "the same whatever the count")
    args = p.parse_args(argv)
    data = args.data or real_rgbd_dir()
    if not data.is_dir():
        print(f"real frames not found at {data} (set --data or SAM3D_REAL_RGBD)", file=sys.stderr)
        return 2
    names = [n for n in args.frames.split(",") if n] or sorted(
        d.name for d in data.iterdir() if (d / "rgb.png").exists()
    )
    modes = tuple(m for m in args.modes.split(",") if m)
    # Segmentation + reconstruction only: grasp planning has its own benchmark.
    engine = Engine(grasp_planner=None, workers=args.workers)
    frames = []
    for name in names:
        frames.append(evaluate_frame(engine, data / name, modes))
        print(f"  {name} done", file=sys.stderr)
    table = summarize(frames)
    print_report(frames, table, _commit(), engine.segmenter.workers)
    if args.json:
        args.json.write_text(json.dumps({"frames": frames, "summary": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
