"""Measures of a reconstruction against a real RGB-D frame (benchmarks and tests).

Nothing here needs ground-truth shapes: the measures compare the posed mesh with what the camera
saw (the frame's masks and depth), which is all a real frame offers.

* :func:`silhouette` / :func:`silhouette_iou`: the posed mesh projected with the intrinsics, and
  its IoU with a given mask, ignoring the pixels of other prompted objects (completing an
  occluded part is not penalised);
* :func:`sanity_figures`: share of the mesh in front of the observed depth, depth over width along
  the horizontal viewing direction, mesh extent over the visible points' extent, watertightness;
* :func:`load_real_frame`: the ``../shared/real_rgbd`` folder layout (``rgb.png``, ``depth.npz``,
  ``masks/<id>.png``, ``request_*.json``);
* :func:`real_rgbd_dir`: where those frames are (the one place tests and benchmarks ask).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
from scipy import ndimage

from sam3d_ros.core.conventions import posed_vertices, project
from sam3d_ros.core.depth_hygiene import misregistration_px
from sam3d_ros.core.mesh_decimation import is_closed_manifold
from sam3d_ros.core.types import CameraIntrinsics, ObjectReconstruction


def real_rgbd_dir() -> Path:
    """Folder of the real RGB-D frames: ``$SAM3D_REAL_RGBD``, else ``<repo>/../shared/real_rgbd``.

    It may not exist (a user's clone has no ``../shared``); callers decide whether to skip.
    """
    env = os.environ.get("SAM3D_REAL_RGBD")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "real_rgbd"


def silhouette(
    vertices: np.ndarray, faces: np.ndarray, k: CameraIntrinsics, shape: Sequence[int]
) -> np.ndarray:
    """H×W bool mask of the pixels whose centre the mesh (camera frame) covers.

    Pixel centres are at integer coordinates (``core.conventions.project``). A centre on a
    triangle's edge counts as covered (GPU rasterisers break such ties top-left; the
    difference is a line of pixels along edges that meet a centre exactly). A triangle with a
    corner at most 1 mm in front of the camera is left out whole, not clipped.
    (``cv2.fillConvexPoly``, used before, rounds the corners to whole pixels and fills the
    boundary pixels too: a square covering exactly 10 × 10 pixel centres came out 11 × 11, a
    one-pixel bias outwards that cost the given masks ~0.01–0.03 IoU.)
    """
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), dtype=bool)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    v = np.asarray(vertices, dtype=np.float64)
    if faces.size == 0:
        return out
    tri_ok = (v[:, 2] > 1e-3)[faces].all(axis=1)
    u, vv = project(v, k)
    tri = np.stack([u, vv], axis=1)[faces[tri_ok]]  # (N, 3, 2): (column, row) of the corners
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    tri = tri[np.abs(area) > 1e-12]  # a flat triangle covers no area
    lo = np.maximum(np.ceil(tri.min(axis=1)), 0).astype(np.int64)
    hi = np.minimum(np.floor(tri.max(axis=1)), [w - 1, h - 1]).astype(np.int64)
    live = (hi >= lo).all(axis=1)
    tri, lo, hi = tri[live], lo[live], hi[live]
    # Pixel centres of each triangle's bounding box, tested against its three edges; triangles
    # go in groups of similar box size (a power of two), at most ~1M centres at a time (a
    # triangle larger than that goes alone, in bands of rows).
    side = 1 << np.ceil(np.log2((hi - lo + 1).max(axis=1))).astype(np.int64)
    budget = 1 << 20
    for s in np.unique(side):
        group = np.flatnonzero(side == s)
        if s * s <= budget:
            per = budget // (s * s)
            for start in range(0, group.size, per):
                _cover(out, tri, lo, hi, group[start:start + per], int(s), int(s))
        else:
            rows = max(1, budget // int(s))
            for t in group:
                for r0 in range(int(lo[t, 1]), int(hi[t, 1]) + 1, rows):
                    band_lo = np.array([[lo[t, 0], r0]])
                    band_hi = np.array([[hi[t, 0], min(r0 + rows - 1, int(hi[t, 1]))]])
                    _cover(out, tri[t:t + 1], band_lo, band_hi, np.array([0]), int(s), rows)
    return out


def _cover(out, tri, lo, hi, sel, cols: int, rows: int) -> None:
    """Set the pixels of ``out`` whose centre lies in one of the triangles ``tri[sel]``.

    Tests the ``cols`` × ``rows`` centres from ``lo[sel]`` on (not past ``hi[sel]``).
    """
    oc, orow = (g.ravel()[None] for g in np.meshgrid(np.arange(cols), np.arange(rows)))
    col, row = lo[sel, 0:1] + oc, lo[sel, 1:2] + orow
    corners = tri[sel]
    sides = []
    for i in range(3):
        a, b = corners[:, i], corners[:, (i + 1) % 3]
        sides.append((b[:, 0:1] - a[:, 0:1]) * (row - a[:, 1:2])
                     - (b[:, 1:2] - a[:, 1:2]) * (col - a[:, 0:1]))
    d0, d1, d2 = sides
    hit = ((d0 >= 0) & (d1 >= 0) & (d2 >= 0)) | ((d0 <= 0) & (d1 <= 0) & (d2 <= 0))
    hit &= (col <= hi[sel, 0:1]) & (row <= hi[sel, 1:2])
    out[row[hit], col[hit]] = True


def silhouette_iou(
    predicted: np.ndarray, truth: np.ndarray, ignore: Optional[np.ndarray] = None
) -> float:
    """IoU of two masks over the pixels not in ``ignore``."""
    keep = np.ones(truth.shape, dtype=bool) if ignore is None else ~ignore
    inter = np.count_nonzero(predicted & truth & keep)
    union = np.count_nonzero((predicted | truth) & keep)
    return float(inter / union) if union else 0.0


@dataclass
class SanityFigures:
    """Label-free figures of one reconstructed object."""

    in_front: float
    """Share of the mesh vertices more than 1 cm in front of the observed depth (the nearest
    depth within ``width / 128`` pixels, the sensor's misregistration)."""
    depth_over_width: float
    """Extent along the horizontal viewing direction over the lateral horizontal extent."""
    extent_ratio: float
    """Largest mesh extent over the largest extent of the visible points (2–98 %)."""
    watertight: bool
    extents: np.ndarray = field(default_factory=lambda: np.zeros(3))
    """The object's oriented-box extents, sorted, metres."""


def sanity_figures(
    obj: ObjectReconstruction,
    points: np.ndarray,
    k: CameraIntrinsics,
    up: Optional[np.ndarray] = None,
    tolerance: float = 0.01,
) -> SanityFigures:
    """Label-free figures of ``obj`` against the frame's pointmap (camera frame).

    ``up`` is the support plane's normal (camera frame); without it the camera's −y is used.
    """
    verts = posed_vertices(obj)
    h, w = points.shape[:2]
    u, v = project(verts, k)
    z = verts[:, 2]
    inside = np.isfinite(u) & np.isfinite(v)
    col = np.where(inside, np.rint(u), -1).astype(np.int64)
    row = np.where(inside, np.rint(v), -1).astype(np.int64)
    inside &= (col >= 0) & (col < w) & (row >= 0) & (row < h)
    # The nearest observed depth within the misregistration band (~1 % of the width): colour
    # and depth of real cameras are misregistered by a few pixels, so a mesh that matches the
    # colour silhouette may cover pixels that see the background.
    radius = int(round(misregistration_px(w)))
    z_obs = np.where(np.isfinite(points[:, :, 2]) & (points[:, :, 2] > 0), points[:, :, 2], np.inf)
    z_obs = ndimage.minimum_filter(z_obs, size=2 * radius + 1)
    zo = np.full(verts.shape[0], np.nan)
    zo[inside] = z_obs[row[inside], col[inside]]
    zo[~np.isfinite(zo)] = np.nan
    measured = np.isfinite(zo) & (zo > 0)
    in_front = float(np.mean(z[measured] < zo[measured] - tolerance)) if measured.any() else 0.0

    up = np.array([0.0, -1.0, 0.0]) if up is None else np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    centre = verts.mean(axis=0)
    view = centre - (centre @ up) * up
    view /= max(np.linalg.norm(view), 1e-9)
    lateral = np.cross(up, view)
    depth = np.ptp(verts @ view)
    width = max(np.ptp(verts @ lateral), 1e-6)

    mask = np.asarray(obj.mask, dtype=bool)
    vis = points[mask]
    vis = vis[np.isfinite(vis).all(axis=1) & (vis[:, 2] > 0)]
    if vis.shape[0] >= 10:
        lo, hi = np.percentile(vis, [2, 98], axis=0)
        vis_ext = float(np.linalg.norm(hi - lo))
    else:
        vis_ext = float("nan")
    mesh_ext = float(np.linalg.norm(np.ptp(verts, axis=0)))
    extents = np.sort(np.asarray(obj.extents if obj.extents is not None else np.ptp(verts, 0)))
    return SanityFigures(
        in_front=in_front,
        depth_over_width=float(depth / width),
        extent_ratio=mesh_ext / vis_ext if vis_ext > 0 else float("nan"),
        watertight=is_closed_manifold(np.asarray(obj.mesh.faces)),
        extents=extents.astype(np.float64),
    )


AUTO_REQUEST = {"image_url": "rgb.png", "pointmap_url": "depth.npz"}
"""A request on a real-frame folder without prompts: the frame segmented automatically."""


@dataclass
class RealFrame:
    """One folder of the real RGB-D layout."""

    path: Path
    rgb: np.ndarray
    depth: np.ndarray
    k: np.ndarray
    masks: Dict[int, np.ndarray]
    info: dict

    @property
    def name(self) -> str:
        """The folder's name."""
        return self.path.name

    def request(self, kind: str) -> Optional[dict]:
        """The folder's ``request_<kind>.json`` (boxes, points, masks), or ``None``."""
        p = self.path / f"request_{kind}.json"
        return json.loads(p.read_text()) if p.exists() else None


def load_real_frame(path: Path) -> RealFrame:
    """Read a real-frame folder (see ``../shared/real_rgbd/README.md``)."""
    from PIL import Image

    path = Path(path)
    rgb = np.asarray(Image.open(path / "rgb.png").convert("RGB"))
    with np.load(path / "depth.npz", allow_pickle=False) as data:
        depth = np.asarray(data["depth"], dtype=np.float32)
        k = np.asarray(data["K"], dtype=np.float64)
    masks = {}
    mask_dir = path / "masks"
    if mask_dir.is_dir():
        for p in sorted(mask_dir.glob("*.png")):
            masks[int(p.stem)] = np.asarray(Image.open(p)) > 0
    info = json.loads((path / "frame.json").read_text()) if (path / "frame.json").exists() else {}
    return RealFrame(path=path, rgb=rgb, depth=depth, k=k, masks=masks, info=info)
