"""Shape accuracy metrics of a predicted object against the ground truth of a synthetic scene.

All inputs are in the camera optical frame, metres. Definitions:

* **surface samples**: ``n_samples`` (default 20 000) points drawn uniformly on a triangle mesh
  (area-weighted triangle choice, uniform barycentrics), with a fixed seed. A predicted *point
  set* is used as it is (subsampled to ``n_samples`` with the same seed when larger).
* **precision(τ)**: fraction of predicted samples within τ of the ground-truth samples;
  **recall(τ)**: fraction of ground-truth samples within τ of the predicted samples;
  **F(τ)** = 2PR / (P + R) (0 when both are 0). Reported at τ = 5 mm and 1 cm.
* **Chamfer distance** (cm): the mean of the two directed mean nearest-neighbour distances
  (pred → GT and GT → pred), *not* squared.
* **centre**: the centre of the gravity-aligned bounding box: the box whose vertical axis is the
  world z axis (given by ``camera_pose``, camera-to-world) and whose horizontal orientation is
  the minimum-area rectangle around the points' horizontal projection; its centre is mapped back
  to the camera frame. It is invariant to the object's yaw and to the world's yaw, and it is
  computed the same way for meshes (from their vertices) and point sets. **Centre error** (cm)
  is the distance between the predicted and ground-truth centres.

Distances use ``scipy.spatial.cKDTree``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Dict, Iterable, Optional

import numpy as np
from scipy.spatial import ConvexHull, cKDTree

if TYPE_CHECKING:  # pragma: no cover
    from sam3d_bench.scenes import GroundTruthObject, SyntheticScene

DEFAULT_SAMPLES = 20000
THRESHOLDS_M = (0.005, 0.01)


@dataclass
class ShapeScores:
    """Accuracy of one predicted object (fractions in [0, 1], distances in centimetres)."""

    f_5mm: float
    f_1cm: float
    precision_5mm: float
    recall_5mm: float
    precision_1cm: float
    recall_1cm: float
    chamfer_cm: float
    centre_error_cm: float

    def as_dict(self) -> Dict[str, float]:
        """Plain dict of the scores."""
        return asdict(self)


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, n: int = DEFAULT_SAMPLES, seed: int = 0
) -> np.ndarray:
    """Sample ``n`` points uniformly (by area) on a triangle mesh; deterministic for a seed."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        raise ValueError("mesh has no faces")
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    total = area.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("mesh has zero or non-finite area")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(f), size=n, p=area / total)
    r1 = np.sqrt(rng.random(n))
    r2 = rng.random(n)
    a, b, c = tri[idx, 0], tri[idx, 1], tri[idx, 2]
    return (1 - r1)[:, None] * a + (r1 * (1 - r2))[:, None] * b + (r1 * r2)[:, None] * c


def _finite_points(points: np.ndarray, n: int, seed: int) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    p = p[np.isfinite(p).all(axis=1)]
    if len(p) > n:
        p = p[np.random.default_rng(seed).choice(len(p), size=n, replace=False)]
    return p


def gravity_box_centre(points: np.ndarray, camera_pose: Optional[np.ndarray] = None) -> np.ndarray:
    """Centre (camera frame) of the gravity-aligned min-area bounding box of camera-frame points.

    ``camera_pose`` is the camera-to-world transform (world z up); identity when ``None`` (then
    the camera z axis plays the role of "up", which is still a consistent definition).
    """
    pose = np.eye(4) if camera_pose is None else np.asarray(camera_pose, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    p = p[np.isfinite(p).all(axis=1)]
    if len(p) == 0:
        return np.full(3, np.nan)
    rot = pose[:3, :3]
    w = p @ rot.T  # world orientation; translation is irrelevant for a centre
    xy = w[:, :2]
    z_mid = 0.5 * (w[:, 2].min() + w[:, 2].max())
    centre_xy = 0.5 * (xy.min(axis=0) + xy.max(axis=0))
    try:
        hull = xy[ConvexHull(xy).vertices]
    except Exception:  # degenerate (collinear / too few points): axis-aligned box
        hull = None
    if hull is not None:
        best = np.inf
        edges = np.roll(hull, -1, axis=0) - hull
        for e in edges:
            norm = np.linalg.norm(e)
            if norm < 1e-12:
                continue
            ux = e / norm
            uy = np.array([-ux[1], ux[0]])
            a, b = hull @ ux, hull @ uy
            area = np.ptp(a) * np.ptp(b)
            if area < best:
                best = area
                centre_xy = 0.5 * (a.min() + a.max()) * ux + 0.5 * (b.min() + b.max()) * uy
    centre_world = np.array([centre_xy[0], centre_xy[1], z_mid])
    return rot.T @ centre_world


def compare_samples(
    pred: np.ndarray,
    gt: np.ndarray,
    pred_centre: np.ndarray,
    gt_centre: np.ndarray,
) -> ShapeScores:
    """Scores from two point samples (metres) and their centres."""
    if len(pred) == 0:
        return ShapeScores(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, float("inf"), float("inf"))
    d_pred, _ = cKDTree(gt).query(pred, k=1)
    d_gt, _ = cKDTree(pred).query(gt, k=1)
    out = {}
    for tau, name in zip(THRESHOLDS_M, ("5mm", "1cm"), strict=True):
        prec = float(np.mean(d_pred <= tau))
        rec = float(np.mean(d_gt <= tau))
        out[f"precision_{name}"] = prec
        out[f"recall_{name}"] = rec
        out[f"f_{name}"] = 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)
    chamfer_cm = 100.0 * 0.5 * (float(d_pred.mean()) + float(d_gt.mean()))
    centre_cm = 100.0 * float(np.linalg.norm(np.asarray(pred_centre) - np.asarray(gt_centre)))
    return ShapeScores(chamfer_cm=chamfer_cm, centre_error_cm=centre_cm, **out)


def gt_samples(
    gt: "GroundTruthObject", n: int = DEFAULT_SAMPLES, seed: int = 0
) -> np.ndarray:
    """Surface samples of a ground-truth object (camera frame, metres)."""
    return sample_surface(gt.mesh_vertices, gt.mesh_faces, n, seed)


def score_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    gt: "GroundTruthObject",
    camera_pose: Optional[np.ndarray] = None,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> ShapeScores:
    """Score a predicted mesh (camera frame, metres) against a ground-truth object."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces).reshape(-1, 3)
    if len(f) == 0 or len(v) == 0:
        return compare_samples(np.zeros((0, 3)), gt_samples(gt, n_samples, seed), 0, 0)
    pred = sample_surface(v, f, n_samples, seed + 1)
    return compare_samples(
        pred,
        gt_samples(gt, n_samples, seed),
        gravity_box_centre(v, camera_pose),
        gravity_box_centre(gt.mesh_vertices, camera_pose),
    )


def score_points(
    points: np.ndarray,
    gt: "GroundTruthObject",
    camera_pose: Optional[np.ndarray] = None,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> ShapeScores:
    """Score a predicted point set (N×3 or H×W×3, camera frame, NaN ignored) as a surface."""
    pred = _finite_points(points, n_samples, seed + 1)
    return compare_samples(
        pred,
        gt_samples(gt, n_samples, seed),
        gravity_box_centre(pred, camera_pose),
        gravity_box_centre(gt.mesh_vertices, camera_pose),
    )


def visible_only_baseline(
    scene: "SyntheticScene", obj: "GroundTruthObject", n_samples: int = DEFAULT_SAMPLES
) -> ShapeScores:
    """Score the object's visible, valid depth pixels lifted to 3D, as if they were the shape."""
    assert scene.frame.points is not None
    pts = scene.frame.points[obj.visible_mask]
    return score_points(pts, obj, scene.camera_pose, n_samples)


def mean_scores(scores: Iterable[ShapeScores]) -> Dict[str, float]:
    """Field-wise mean of several scores (empty dict for none)."""
    rows = [s.as_dict() for s in scores]
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
