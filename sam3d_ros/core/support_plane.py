"""Support-plane estimation (RANSAC + least-squares refinement), numpy only, deterministic.

Shared by the embedded segmentation (table removal, automatic tabletop segmentation) and the
embedded reconstruction (object bottoms, gravity axis).

Convention: a plane is ``n · p + d = 0`` with ``n`` a unit normal oriented toward the camera
(the camera sits at the origin of the optical frame, so ``d > 0`` whenever the plane does not pass
through the camera). The signed distance ``n · p + d`` is therefore positive for points between
the plane and the camera, i.e. for objects standing on a table seen from above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

RngLike = Union[None, int, np.random.Generator]

# Used to orient a plane that passes (almost) through the camera: "up" in the optical frame.
_OPTICAL_UP = np.array([0.0, -1.0, 0.0])


@dataclass
class Plane:
    """A plane ``normal · p + offset = 0`` fitted to points.

    Attributes:
        normal: (3,) float64 unit normal, oriented toward the camera (``offset >= 0``).
        offset: ``d`` in ``n · p + d = 0`` (metres).
        inliers: bool mask with the leading shape of the fitted points (N, or H×W for a
            pointmap); False for invalid (NaN) points.
        rms: root-mean-square distance of the inliers to the plane (metres).
    """

    normal: np.ndarray
    offset: float
    inliers: np.ndarray
    rms: float = 0.0

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Signed distance of ``points`` (…×3) to the plane; positive on the camera side.

        NaN points give NaN.
        """
        pts = np.asarray(points, dtype=np.float64)
        return pts @ self.normal + self.offset

    def project(self, points: np.ndarray) -> np.ndarray:
        """Orthogonal projection of ``points`` (…×3) onto the plane."""
        pts = np.asarray(points, dtype=np.float64)
        return pts - self.signed_distance(pts)[..., None] * self.normal

    @property
    def origin(self) -> np.ndarray:
        """The point of the plane closest to the camera origin."""
        return -self.offset * self.normal


def _as_rng(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else int(rng))


def _orient(normal: np.ndarray, offset: float):
    """Flip ``(normal, offset)`` so that the normal points toward the camera."""
    if abs(offset) < 1e-9:
        if float(normal @ _OPTICAL_UP) < 0.0:
            return -normal, -offset
        return normal, offset
    if offset < 0.0:
        return -normal, -offset
    return normal, offset


def least_squares_plane(points: np.ndarray, weights: Optional[np.ndarray] = None):
    """Total-least-squares plane through N×3 ``points`` (N ≥ 3).

    Returns ``(normal, offset)`` with the normal oriented toward the camera.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if weights is None:
        centroid = pts.mean(axis=0)
        centred = pts - centroid
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        centroid = (pts * w[:, None]).sum(axis=0) / max(w.sum(), 1e-12)
        centred = (pts - centroid) * np.sqrt(w)[:, None]
    # Smallest eigenvector of the 3×3 scatter matrix = normal (cheaper than an N×3 SVD).
    _, vecs = np.linalg.eigh(centred.T @ centred)
    normal = vecs[:, 0]
    normal = normal / np.linalg.norm(normal)
    return _orient(normal, float(-normal @ centroid))


def fit_support_plane(
    points: np.ndarray,
    *,
    threshold: float = 0.006,
    iterations: int = 256,
    max_points: int = 4000,
    min_inliers: int = 50,
    normal_hint: Optional[np.ndarray] = None,
    max_angle_deg: float = 90.0,
    valid: Optional[np.ndarray] = None,
    refine_iterations: int = 3,
    refine_points: int = 20000,
    rng: RngLike = 0,
) -> Optional[Plane]:
    """Fit the dominant plane of ``points`` by RANSAC (MSAC cost), then refine by least squares.

    Args:
        points: N×3 or H×W×3 points (metres, camera optical frame); NaN/inf = invalid.
        threshold: inlier distance to the plane (metres).
        iterations: number of RANSAC hypotheses (evaluated in one vectorised batch).
        max_points: RANSAC runs on a random subsample of at most this many valid points; the
            final inlier mask covers every valid point.
        min_inliers: minimum number of inliers (among all valid points) for a plane to count.
        normal_hint: optional direction the normal should be close to (either sign), e.g. the
            gravity "up" in the camera frame; hypotheses further than ``max_angle_deg`` away are
            rejected.
        max_angle_deg: tolerance on ``normal_hint``.
        valid: optional extra bool mask (leading shape of ``points``) restricting the points used.
        refine_iterations: least-squares re-fits (inliers recomputed each time).
        refine_points: the refinement uses a random subsample of at most this many valid points.
        rng: seed or ``numpy.random.Generator``; the result is deterministic for a given seed.

    Returns:
        The :class:`Plane` (normal toward the camera, inlier mask over all input points), or
        ``None`` when fewer than ``min_inliers`` points support any plane.
    """
    pts = np.asarray(points)
    if pts.shape[-1] != 3:
        raise ValueError(f"points must be N×3 or H×W×3, got shape {pts.shape}")
    lead_shape = pts.shape[:-1]
    flat = pts.reshape(-1, 3)
    # NaN/inf in any coordinate propagates through the sum (much faster than isfinite().all).
    ok = np.isfinite(flat @ np.ones(3, dtype=flat.dtype))
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool).reshape(-1)
    idx = np.flatnonzero(ok)
    if idx.size < max(3, min_inliers):
        return None
    gen = _as_rng(rng)
    if idx.size > max_points:
        sub_idx = np.sort(gen.choice(idx, size=max_points, replace=False))
    else:
        sub_idx = idx
    sub = flat[sub_idx].astype(np.float64)
    m = sub.shape[0]

    # Hypotheses: triplets of distinct subsample points, all scored at once (iterations × m).
    tri = gen.integers(0, m, size=(iterations, 3))
    a, b, c = sub[tri[:, 0]], sub[tri[:, 1]], sub[tri[:, 2]]
    normals = np.cross(b - a, c - a)
    norms = np.linalg.norm(normals, axis=1)
    good = norms > 1e-12
    normals[good] /= norms[good, None]
    if normal_hint is not None:
        hint = np.asarray(normal_hint, dtype=np.float64)
        hint = hint / np.linalg.norm(hint)
        good &= np.abs(normals @ hint) >= np.cos(np.deg2rad(max_angle_deg))
    if not good.any():
        return None
    normals = normals[good]
    offsets = -np.einsum("ij,ij->i", normals, a[good])
    t2 = np.float32(threshold * threshold)
    # Batch the scoring so memory stays bounded (~iterations × m float32).
    costs = np.empty(normals.shape[0])
    sub32 = sub.astype(np.float32)
    step = max(1, 2_000_000 // max(m, 1))
    for s in range(0, normals.shape[0], step):
        r = sub32 @ normals[s : s + step].T.astype(np.float32) + offsets[s : s + step].astype(
            np.float32
        )
        costs[s : s + step] = np.minimum(r * r, t2).sum(axis=0)
    best = int(np.argmin(costs))  # argmin takes the first minimum: deterministic
    normal, offset = normals[best], float(offsets[best])

    # Refine on a larger (still bounded) subsample, then label every valid point once.
    if idx.size > refine_points:
        ref_idx = np.sort(gen.choice(idx, size=refine_points, replace=False))
    else:
        ref_idx = idx
    ref = flat[ref_idx].astype(np.float64)
    for _ in range(max(1, refine_iterations)):
        inl = np.abs(ref @ normal + offset) <= threshold
        if inl.sum() < 3:
            return None
        normal, offset = least_squares_plane(ref[inl])
    normal, offset = _orient(np.asarray(normal, dtype=np.float64), float(offset))
    with np.errstate(invalid="ignore"):
        dist = flat @ normal.astype(np.float32) + np.float32(offset)
        mask = np.abs(dist) <= threshold
    mask &= ok
    n_in = int(mask.sum())
    if n_in < min_inliers:
        return None
    rms = float(np.sqrt(np.mean(np.square(dist[mask], dtype=np.float64))))
    return Plane(normal=normal, offset=offset, inliers=mask.reshape(lead_shape), rms=rms)
