"""Depth hygiene: which depth pixels really belong to an object (one place, every backend).

Real RGB-D cameras (RealSense-class active stereo) differ from clean renders in ways that a
reconstruction must not trust:

* **flying / mixed pixels** at depth edges report a depth between the two surfaces;
* **colour–depth misregistration** of a few pixels (up to ~1 % of the width) and **edge
  bleeding** (the stereo window smears foreground depth onto the background and back): a mask
  drawn on the colour image carries background depth along one side and misses object depth on
  the other; on ``../shared/real_rgbd/m2t2_*`` 35–77 % of the pixels in a 3-pixel ring inside a
  ground-truth mask lie > 3 cm behind the object;
* **holes** on dark, shiny and transparent surfaces.

The consumers of "the object's depth points" go through :func:`object_depth`: the embedded
reconstruction, the SAM 3D Objects depth alignment and the published point cloud (the grasp
planner's "observed contact" test still reads the mask and the raw depth):

1. the mask's outermost ``erode_px`` ring (mixed colour) is dropped; so are, within a few pixels
   of the outline, pixels on a depth edge (a 4-neighbour jump larger than
   ``max(jump_abs, jump_rel · z)``) or beside a hole; pixels seen at a grazing angle
   (:func:`grazing_pixels`); pixels on or below the support plane;
2. the remaining mask pixels are split into depth-continuous pieces (4-neighbours closer than the
   jump threshold); the piece that best covers the mask's *interior* (distance to the mask edge
   weighs each pixel, so a band of background depth along an edge never wins) is the object's
   surface; other pieces join it when their depth lies within the surface's robust depth band,
   or when they are thick, in front of it and within its plausible extent (a bowl's front wall);
3. a joined piece deeper than the object's plausible extent behind the surface's front (its
   lateral size) is dropped; the surface piece itself is kept whole, however long it is along
   the ray;
4. mask pixels whose depth belonged to another piece within the misregistration band
   (:func:`misregistration_px`) of the kept pixels, and pixels without depth that touch the
   kept or filled ones (not across pixels hygiene dropped), are filled with the depth of
   the nearest kept pixel (``filled``): they extend the silhouette at the object's own depth
   and never along a ray. Foreign depth deeper inside the mask is another thing the mask took
   in, and stays out with its holes.

Everything is numpy/scipy on the mask's bounding box, deterministic, a few ms per object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

from .types import MaskCrop

_FOUR = ndimage.generate_binary_structure(2, 1)

# Colour–depth misregistration plus the stereo window's bleeding, as a share of the image width
# (RealSense D4xx frames: up to ~1 %, 10 px at 1280×720).
MISREGISTRATION_FRACTION = 1.0 / 128.0


def misregistration_px(width: int) -> float:
    """How far (pixels) depth and colour of one surface may lie apart in an image this wide."""
    return max(1.0, MISREGISTRATION_FRACTION * float(width))


def jump_threshold(z: np.ndarray, jump_abs: float = 0.01, jump_rel: float = 0.02) -> np.ndarray:
    """Depth difference (metres) between neighbours that separates two surfaces at depth ``z``.

    Active-stereo depth noise grows with range, so the threshold does too.
    """
    return np.maximum(jump_abs, jump_rel * np.nan_to_num(z, nan=0.0))


def depth_edges(
    z: np.ndarray, jump_abs: float = 0.01, jump_rel: float = 0.02, width: int = 1
) -> np.ndarray:
    """Bool mask of pixels next to a depth discontinuity (both sides), dilated by ``width``.

    ``z`` is a depth image in metres with NaN (or 0) for no return; a valid pixel next to an
    invalid one is not an edge (holes are handled separately, see :func:`object_depth`).
    """
    z = np.asarray(z, dtype=np.float32)
    valid = np.isfinite(z) & (z > 0)
    edge = np.zeros(z.shape, dtype=bool)
    for axis in (0, 1):
        a = np.take(z, np.arange(z.shape[axis] - 1), axis=axis)
        b = np.take(z, np.arange(1, z.shape[axis]), axis=axis)
        ok = np.take(valid, np.arange(z.shape[axis] - 1), axis=axis) & np.take(
            valid, np.arange(1, z.shape[axis]), axis=axis
        )
        with np.errstate(invalid="ignore"):
            jump = ok & (np.abs(a - b) > jump_threshold(np.minimum(a, b), jump_abs, jump_rel))
        if axis == 0:
            edge[:-1] |= jump
            edge[1:] |= jump
        else:
            edge[:, :-1] |= jump
            edge[:, 1:] |= jump
    if width > 1:
        edge = ndimage.binary_dilation(edge, iterations=width - 1)
    return edge


def depth_steps(
    z: np.ndarray, step_abs: float = 0.006, step_rel: float = 0.006, baseline: int = 2
) -> np.ndarray:
    """Bool mask of pixels on a depth step that the surface's own slope does not explain.

    Along rows and columns, the depth change over ``baseline`` pixels is compared with the
    mean change over the ``baseline`` pixels on either side (the local slope); a difference
    above ``max(step_abs, step_rel · z)`` is a step, and the pixels it spans are marked (a
    step far above the threshold also marks up to ``baseline`` pixels beside it, whose slope
    estimate takes it in). An occlusion edge between two touching objects is such a step even
    when it is smaller than a jump (:func:`depth_edges`: stereo smoothing turns it into a
    ramp a few pixels wide), while a steep but smooth surface (a face seen at a slant) has
    none; neighbours whose surfaces meet flush (one plane) have none either. Differencing over
    ``baseline`` pixels rather than neighbours averages the sensor's pixel noise. NaN (or 0)
    is no depth: a step needs depth on both of its sides (one-sided slope next to a hole).
    """
    z = np.asarray(z, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        z = np.where(np.isfinite(z) & (z > 0), z, np.nan).astype(np.float32)
    k = int(baseline)
    out = np.zeros(z.shape, dtype=bool)
    for axis in (0, 1):
        zt = z if axis == 1 else z.T
        n = zt.shape[1]
        if n <= 3 * k:
            continue
        a, b = zt[:, k:n - 2 * k], zt[:, 2 * k:n - k]  # b lies k pixels after a
        before = a - zt[:, :n - 3 * k]
        after = zt[:, 3 * k:] - b
        with np.errstate(invalid="ignore"):
            slope = np.where(np.isnan(before), after,
                             np.where(np.isnan(after), before, 0.5 * (before + after)))
            slope = np.where(np.isnan(slope), 0.0, slope)
            step = np.abs(b - a - slope) > np.maximum(step_abs, step_rel * np.fmin(a, b))
        marked = np.zeros(zt.shape, dtype=bool)
        for j in range(k + 1):  # the pixels from a to b
            marked[:, k + j:n - 2 * k + j] |= step
        out |= marked if axis == 1 else marked.T
    return out


def grazing_pixels(
    points: np.ndarray,
    max_angle_deg: float = 80.0,
    window: int = 3,
    step: int = 2,
    jump_abs: float = 0.01,
    jump_rel: float = 0.02,
) -> np.ndarray:
    """Bool mask of pixels whose surface is seen at a grazing angle.

    The normal comes from the pointmap smoothed over the ``window``×``window`` neighbours on the
    same surface (closer in depth than a jump, :func:`jump_threshold`) and differenced ``step``
    pixels apart (one-sided next to an edge); a pixel whose normal makes more than
    ``max_angle_deg`` with its viewing ray is grazing. Stereo depth there is not a surface but a
    smear: the bleeding ramps between an object and its background are such slopes, and lifting
    them grows fins along the viewing rays. Smoothing only within a surface keeps the limbs of
    round objects (a cylinder's side is grazing only in its outermost pixel); pixels whose
    normal cannot be estimated (isolated, or edges on all sides) are left to
    :func:`depth_edges`.
    """
    p = np.asarray(points, dtype=np.float32)
    # One 2-D array per coordinate: reductions across an H×W×3 array's last axis are several
    # times slower than the same arithmetic on planes (the results are the same to the bit).
    px, py, pz = p[:, :, 0], p[:, :, 1], p[:, :, 2]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(px) & np.isfinite(py) & np.isfinite(pz) & (pz > 0)
    z = np.where(valid, pz, np.float32(np.nan))
    thr = jump_threshold(z, jump_abs, jump_rel).astype(np.float32)
    h, w = z.shape
    r = window // 2
    # Neighbours are read as views of padded copies (NaN depth, zero points outside) rather
    # than shifted copies: one allocation per plane, not one per neighbour.
    pad = max(r, step)
    zp = np.pad(z, pad, constant_values=np.nan)
    planes = [np.pad(np.where(valid, c, np.float32(0.0)), pad) for c in (px, py, pz)]

    def at(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
        return a[pad + dy : pad + dy + h, pad + dx : pad + dx + w]

    acc = [np.zeros(z.shape, dtype=np.float32) for _ in range(3)]
    cnt = np.zeros(z.shape, dtype=np.float32)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            with np.errstate(invalid="ignore"):
                same = np.abs(at(zp, dy, dx) - z) <= thr  # False for invalid pixels (NaN)
            for a, plane in zip(acc, planes, strict=True):
                a += at(plane, dy, dx) * same
            cnt += same
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = [a / cnt for a in acc]
    padded = [np.pad(s, pad, constant_values=np.nan) for s in smooth]
    nan = np.float32(np.nan)

    def derivative(dy: int, dx: int):
        with np.errstate(invalid="ignore"):
            ok_p = np.abs(at(zp, dy, dx) - z) <= step * thr
            ok_m = np.abs(at(zp, -dy, -dx) - z) <= step * thr
        both, only_p, only_m = ok_p & ok_m, ok_p & ~ok_m, ok_m & ~ok_p
        out = []
        for s, sp in zip(smooth, padded, strict=True):
            plus, minus = at(sp, dy, dx), at(sp, -dy, -dx)
            out.append(np.where(both, plus - minus,
                                np.where(only_p, (plus - s) * 2.0,
                                         np.where(only_m, (s - minus) * 2.0, nan))))
        return out

    a0, a1, a2 = derivative(0, step)
    b0, b1, b2 = derivative(step, 0)
    n0, n1, n2 = a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0
    with np.errstate(invalid="ignore", divide="ignore"):
        dot = n0 * px + n1 * py + n2 * pz
        norms = np.sqrt(n0 * n0 + n1 * n1 + n2 * n2) * np.sqrt(px * px + py * py + pz * pz)
        steep = np.abs(dot) / norms < np.cos(np.radians(max_angle_deg))  # False where unknown
    return valid & steep


def continuous_regions(
    z: np.ndarray, keep: np.ndarray, jump_abs: float = 0.01, jump_rel: float = 0.02
) -> Tuple[np.ndarray, int]:
    """Label the ``keep`` pixels into pieces where 4-neighbours differ by less than a jump.

    Returns ``(labels, n)`` like :func:`scipy.ndimage.label` (0 = not kept).
    """
    z = np.where(keep, z, np.nan).astype(np.float32)
    cut = keep & depth_edges(z, jump_abs, jump_rel, width=1)
    # Cutting both sides of every jump separates the surfaces; the cut pixels then rejoin the
    # neighbouring piece whose depth they continue.
    labels, n = ndimage.label(keep & ~cut, structure=_FOUR)
    if n == 0 or not cut.any():
        return labels, n
    zp = np.pad(z, 1, constant_values=np.nan)
    limit = jump_threshold(z, jump_abs, jump_rel)
    h, w = z.shape
    for _ in range(2):
        todo = cut & (labels == 0)
        if not todo.any():
            break
        best = np.zeros(z.shape, dtype=np.int32)
        best_dz = np.full(z.shape, np.inf, dtype=np.float32)
        lp = np.pad(labels, 1)
        for dr, dc in ((0, 1), (2, 1), (1, 0), (1, 2)):
            nl = lp[dr : dr + h, dc : dc + w]
            nz = zp[dr : dr + h, dc : dc + w]
            with np.errstate(invalid="ignore"):
                dz = np.abs(nz - z)
                ok = todo & (nl > 0) & (dz < best_dz)
                ok &= dz <= limit
            best = np.where(ok, nl, best)
            best_dz = np.where(ok, dz, best_dz)
        labels = np.where(todo & (best > 0), best, labels)
    return labels, n


@dataclass
class ObjectDepth:
    """The depth pixels of one object after hygiene (all arrays cover the whole image).

    Attributes:
        reliable: H×W bool, mask pixels whose depth is the object's own surface.
        filled: H×W bool, mask pixels whose depth belongs to something else (background,
            occluder) within the misregistration band of the reliable pixels, or without depth
            and touching them or such pixels, given the depth of the nearest reliable
            pixel (silhouette support only, never evidence of depth).
        depth: H×W float32 metres on ``reliable | filled`` (NaN elsewhere).
        box: ``(row0, row1, col0, col1)``, ends exclusive: a window outside which all three
            are empty (scanning it instead of the whole image is the same, and cheaper);
            ``None`` = the whole image.
    """

    reliable: np.ndarray
    filled: np.ndarray
    depth: np.ndarray
    box: Optional[Tuple[int, int, int, int]] = None

    @property
    def window(self) -> Tuple[int, int, int, int]:
        """:attr:`box`, or the whole image when it is not known."""
        if self.box is not None:
            return self.box
        h, w = self.reliable.shape
        return 0, h, 0, w

    @property
    def count(self) -> int:
        """Number of reliable pixels."""
        return int(np.count_nonzero(self.reliable))


def object_depth(
    points: np.ndarray,
    mask: np.ndarray,
    plane=None,
    *,
    jump_abs: float = 0.01,
    jump_rel: float = 0.02,
    edge_px: int = 1,
    erode_px: int = 1,
    max_angle_deg: float = 80.0,
    plane_clearance: float = 0.004,
    depth_extent: float = 1.0,
    depth_margin: float = 0.03,
    fill: bool = True,
    fill_px: Optional[float] = None,
) -> ObjectDepth:
    """The object's reliable depth pixels inside ``mask`` (see the module docstring).

    Args:
        points: H×W×3 pointmap in the camera optical frame (metres; NaN = invalid).
        mask: the object's mask on the colour image (H×W bool, or a
            :class:`~sam3d_ros.core.types.MaskCrop`).
        plane: optional support plane (:class:`~sam3d_ros.core.support_plane.Plane`); pixels less
            than ``plane_clearance`` above it (or below it) are not the object.
        jump_abs, jump_rel: depth-jump threshold ``max(jump_abs, jump_rel · z)``.
        edge_px: pixels dropped on each side of a depth edge on the mask's outline.
        erode_px: the mask's outermost pixels dropped (mixed colour and depth).
        max_angle_deg: pixels whose surface normal is farther than this from the viewing ray
            are dropped (:func:`grazing_pixels`); 90 keeps them.
        plane_clearance: metres above the support plane that still count as the support.
        depth_extent: the object reaches at most this many times its lateral width (plus
            ``depth_margin``) behind its front surface.
        depth_margin: metres added to the plausible depth extent.
        fill: fill the dropped mask pixels with the nearest reliable depth: those whose depth
            belongs to something else within ``fill_px`` pixels of the reliable surface, and
            those without depth that touch the surface or filled pixels.
        fill_px: the band in which foreign depth is filled; default
            :func:`misregistration_px` of the image width.
    """
    region = MaskCrop.of(mask)
    h, w = region.image_shape

    def nothing() -> ObjectDepth:
        return ObjectDepth(
            np.zeros((h, w), bool), np.zeros((h, w), bool), np.full((h, w), np.nan, np.float32),
            box=(0, 0, 0, 0))

    if not region.any():
        return nothing()
    m, (r0, r1, c0, c1) = region.window(edge_px + 2)
    pts = np.asarray(points[r0:r1, c0:c1], dtype=np.float32)
    z = pts[:, :, 2]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(z) & (z > 0)
    z = np.where(valid, z, np.nan).astype(np.float32)

    cand = m & valid
    if erode_px > 0:
        # The mask's outermost pixels mix object and background colour (and depth).
        eroded = ndimage.binary_erosion(m, iterations=erode_px)
        if (eroded & valid).sum() >= 0.3 * cand.sum():
            cand &= eroded
    if edge_px > 0:
        # Mixed pixels sit on the object's outline; inside it, a jump separates two faces of the
        # object (self-occlusion) whose pixels are good, and the pieces below keep them apart.
        outline = m & ~ndimage.binary_erosion(m, iterations=edge_px + 2)
        # Next to a hole counts too: sensors drop most edge pixels, and the survivors beside
        # the holes are the mixed ones.
        edge = depth_edges(z, jump_abs, jump_rel, width=edge_px)
        edge |= ndimage.binary_dilation(~valid, iterations=edge_px)
        cand &= ~(edge & outline)
    if max_angle_deg < 90.0:
        grazing = grazing_pixels(pts, max_angle_deg, jump_abs=jump_abs, jump_rel=jump_rel)
        # A small object seen far away may be all slope at this resolution: keep it then.
        if (cand & ~grazing).sum() >= 0.3 * cand.sum():
            cand &= ~grazing
    if plane is not None:
        with np.errstate(invalid="ignore"):
            height = pts @ np.asarray(plane.normal, np.float32) + np.float32(plane.offset)
        above = cand & (height > plane_clearance)
        # An object seen almost edge-on to its support can have most pixels in the band: keep
        # the band then rather than nothing.
        if above.sum() >= 0.2 * cand.sum():
            cand = above
    if not cand.any():
        return nothing()

    labels, n = continuous_regions(z, cand, jump_abs, jump_rel)
    if n == 0:  # every candidate sits on a depth jump: no surface to trust
        return nothing()
    # Distance to the mask edge weighs each pixel: a band of background depth along an edge
    # scores little, the interior surface much.
    inner = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    score = np.bincount(labels.ravel(), weights=inner.ravel(), minlength=n + 1)
    score[0] = -1.0
    best = int(np.argmax(score))
    surface = labels == best
    zs = z[surface]
    lo, med, hi = np.percentile(zs, [5, 50, 95])
    spread = max(hi - lo, 0.0) + 2.0 * float(jump_threshold(np.float32(med), jump_abs, jump_rel))
    # Plausible extent along the ray: about the object's lateral size (a tall object may be
    # deeper than wide, up to twice).
    def reach_of(sel: np.ndarray) -> float:
        xk, yk = pts[:, :, 0][sel], pts[:, :, 1][sel]
        width = float(np.percentile(xk, 98) - np.percentile(xk, 2))
        tall = float(np.percentile(yk, 98) - np.percentile(yk, 2))
        return depth_extent * max(width, min(tall, 2.0 * width)) + depth_margin

    # Other pieces join the surface when their depth lies within its band (parts seen across
    # holes and texture dropouts, a mug's inside behind its rim), or when they are in front of
    # it, thick (not a band along the mask's edge, which is what misregistration and bleeding
    # leave) and within the object's plausible extent (a bowl's front wall in front of its
    # inner wall). A separate piece behind the band is background seen past the object.
    reach = reach_of(surface)
    join = np.zeros(n + 1, dtype=bool)
    join[best] = True
    if n > 1:
        # Mean depth per piece (one pass; ndimage.median sorts every piece).
        sums = np.bincount(labels.ravel(), weights=np.nan_to_num(z).ravel(), minlength=n + 1)
        piece_med = sums[1:] / np.maximum(np.bincount(labels.ravel(), minlength=n + 1)[1:], 1)
        # Deepest pixel per piece (ndimage.maximum sorts the labels: 6x slower).
        piece_depth = np.zeros(n + 1)
        pieces = labels > 0
        np.maximum.at(piece_depth, labels[pieces], inner[pieces])
        piece_depth = piece_depth[1:]
        same = (piece_med >= lo - 0.5 * spread) & (piece_med <= hi + 0.5 * spread)
        thick = piece_depth >= max(3.0, 0.15 * float(inner[m].max()))
        near = (piece_med >= lo - reach) & (piece_med <= hi + reach)
        join[1:] |= same | (thick & near)
    keep = join[labels] & (labels > 0)

    # Joined pieces reach no deeper than the plausible extent behind the surface's front (a
    # piece of background that happens to lie in the band stops there). The surface itself
    # is continuous: its depth is the object's, however long it is along the ray (smooth
    # bleeding ramps are the slope test's and the support's business).
    front = float(np.percentile(z[surface], 2))
    with np.errstate(invalid="ignore"):
        keep &= surface | (z <= front + reach)

    reliable = np.zeros((h, w), dtype=bool)
    reliable[r0:r1, c0:c1] = keep
    depth = np.full((h, w), np.nan, dtype=np.float32)
    depth[r0:r1, c0:c1][keep] = z[keep]
    filled = np.zeros((h, w), dtype=bool)
    if fill and keep.any():
        # Fill where the depth was missing or belonged to something else (misregistered
        # background, an occluder); not mixed outline pixels, slopes or the support: filling
        # those grows objects by 0.5–1 cm on clean depth.
        todo = m & ~keep & (~valid | (labels > 0))
        if todo.any():
            dist, (ir, ic) = ndimage.distance_transform_edt(~keep, return_indices=True)
            # Depth of something else is the object's only within the misregistration band
            # of its surface; farther in, the mask holds another thing (a neighbour behind,
            # taken in by the segmentation), which lifted to the object's depth became a wall
            # in front of it (clicks on the real frames: mesh vertices > 1 cm in front of
            # the observed depth, worst object 16 % -> 0.6 %; silhouette IoU 0.763 -> 0.784).
            # Pixels without depth are filled where they touch the surface or filled pixels (a
            # dark or shiny patch of the object, however large); not a hole in the neighbour's
            # depth, nor one cut off from the surface by pixels hygiene dropped (a depth edge,
            # the mixed ring beside a hole): beyond an edge a hole is as likely the other
            # side's. Measured against also filling those: clicks on m2t2 0.792 vs 0.786 (the
            # bowls 0.90 / 0.91 vs 0.86 / 0.86), given masks 0.913 vs 0.915.
            band = fill_px if fill_px is not None else misregistration_px(w)
            todo &= ~valid | (dist <= band)
            linked, _ = ndimage.label(keep | todo, structure=_FOUR)
            todo &= np.isin(linked, np.unique(linked[keep]))
            zf = z[ir, ic]
            depth[r0:r1, c0:c1][todo] = zf[todo]
            filled[r0:r1, c0:c1] = todo
    return ObjectDepth(reliable=reliable, filled=filled, depth=depth, box=(r0, r1, c0, c1))
