"""Geometry helpers of the embedded reconstruction: footprints, surface extraction, smoothing.

Everything is numpy/scipy, vectorised and deterministic. Grids are indexed ``[i, j, k]`` along
the axes of whatever frame the caller voxelised in; this module knows nothing about cameras.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np
from scipy import ndimage, sparse
from scipy.spatial import ConvexHull, QhullError


def min_area_rectangle(xy: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-area enclosing rectangle of 2D points (rotating the hull edges).

    Args:
        xy: N×2 points (N ≥ 1).

    Returns:
        ``(centre, axes, extents)``: the rectangle centre (2,), its axes as the rows of a 2×2
        rotation (row 0 = the longer side, ``det = +1``) and its side lengths (2,), longer first.
    """
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    hull = pts
    if pts.shape[0] >= 3:
        try:
            hull = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear or duplicate points
            hull = pts
    if hull.shape[0] < 2:
        return hull.mean(axis=0), np.eye(2), np.zeros(2)
    edges = np.roll(hull, -1, axis=0) - hull
    angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2).round(9))
    c, s = np.cos(angles), np.sin(angles)
    # Candidate frames: rows (c, s) and (-s, c); project the hull on both.
    u = hull @ np.stack([c, s])  # hull × angles
    v = hull @ np.stack([-s, c])
    du = u.max(axis=0) - u.min(axis=0)
    dv = v.max(axis=0) - v.min(axis=0)
    best = int(np.argmin(du * dv + 1e-12 * (du + dv)))
    a0 = np.array([c[best], s[best]])
    a1 = np.array([-s[best], c[best]])
    mid_u = 0.5 * (u[:, best].max() + u[:, best].min())
    mid_v = 0.5 * (v[:, best].max() + v[:, best].min())
    centre = mid_u * a0 + mid_v * a1
    ext = np.array([du[best], dv[best]])
    axes = np.stack([a0, a1])
    if ext[1] > ext[0]:
        axes = np.stack([a1, -a0])
        ext = ext[::-1].copy()
    return centre, axes, ext


def make_well_composed(occ: np.ndarray, max_iterations: int = 32) -> np.ndarray:
    """Fill the voxels that make 2×2 "checkerboard" faces, so surface nets stay manifold.

    A face of four voxel centres with only the diagonal pair occupied makes the dual surface
    pinch along an edge; occupying the other pair removes the ambiguity (a tiny dilation).
    """
    out = occ.copy()
    for _ in range(max_iterations):
        changed = False
        for a, b in ((0, 1), (0, 2), (1, 2)):
            x00 = _shift_view(out, a, b, 0, 0)
            x10 = _shift_view(out, a, b, 1, 0)
            x01 = _shift_view(out, a, b, 0, 1)
            x11 = _shift_view(out, a, b, 1, 1)
            diag1 = x00 & x11 & ~x10 & ~x01
            diag2 = x10 & x01 & ~x00 & ~x11
            if diag1.any() or diag2.any():
                changed = True
                x10 |= diag1
                x01 |= diag1
                x00 |= diag2
                x11 |= diag2
        if not changed:
            break
    return out


def _shift_view(arr: np.ndarray, a: int, b: int, da: int, db: int) -> np.ndarray:
    """View of ``arr`` shifted by (da, db) ∈ {0, 1}² along axes (a, b), trimmed by one there."""
    sl = [slice(None)] * arr.ndim
    sl[a] = slice(da, arr.shape[a] - 1 + da)
    sl[b] = slice(db, arr.shape[b] - 1 + db)
    return arr[tuple(sl)]


# The 12 edges of a unit cell as pairs of corner offsets.
_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
_EDGES = [
    (a, b)
    for a in range(8)
    for b in range(a + 1, 8)
    if np.abs(_CORNERS[a] - _CORNERS[b]).sum() == 1
]


def surface_nets(occ: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Closed triangle surface of a binary voxel grid (naive surface nets).

    Voxel ``[i, j, k]`` has its centre at grid coordinate ``(i, j, k)``. One vertex per dual cell
    (the cube between 8 voxel centres) crossed by the surface, at the mean of the crossing edge
    midpoints; one quad (two triangles) per pair of neighbouring voxels that differ. The result is
    closed and consistently oriented (counter-clockwise seen from outside) for any grid; call
    :func:`make_well_composed` first to avoid pinched edges.

    Returns:
        ``(vertices, faces)``: V×3 float64 in grid coordinates, F×3 int64.
    """
    g = np.pad(np.asarray(occ, dtype=bool), 1)
    nx, ny, nz = g.shape
    gu = g.view(np.uint8)
    total = np.zeros((nx - 1, ny - 1, nz - 1), dtype=np.uint8)
    for i, j, k in _CORNERS:
        total += gu[i : nx - 1 + i, j : ny - 1 + j, k : nz - 1 + k]
    active = (total > 0) & (total < 8)
    cells = np.argwhere(active)
    vid = np.full(active.shape, -1, dtype=np.int64)
    vid[tuple(cells.T)] = np.arange(cells.shape[0])
    # Corner values of the active cells only, then the mean midpoint of their crossing edges.
    cv = np.stack([g[tuple((cells + off).T)] for off in _CORNERS], axis=1)  # n × 8
    ea = np.array([a for a, _ in _EDGES])
    eb = np.array([b for _, b in _EDGES])
    cross = (cv[:, ea] != cv[:, eb]).astype(np.float64)  # n × 12
    mids = 0.5 * (_CORNERS[ea] + _CORNERS[eb])  # 12 × 3
    verts = cells + (cross @ mids) / cross.sum(axis=1, keepdims=True) - 1.0  # undo the padding

    quads = []
    # Axis x: voxels (i, j, k) and (i+1, j, k); cells (i, j-1|j, k-1|k).
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(0, g.shape[axis] - 1)
        hi[axis] = slice(1, g.shape[axis])
        a_val = g[tuple(lo)]
        b_val = g[tuple(hi)]
        diff = a_val != b_val
        # Edges on the outer layer of the other axes cannot change sign (padding): skip them.
        o1, o2 = (axis + 1) % 3, (axis + 2) % 3
        idx = np.argwhere(diff)
        idx = idx[(idx[:, o1] >= 1) & (idx[:, o2] >= 1)]
        if idx.shape[0] == 0:
            continue
        outward = a_val[tuple(idx.T)]  # inside at the low end → normal along +axis
        c = []
        for d1, d2 in ((-1, -1), (0, -1), (0, 0), (-1, 0)):
            cell = idx.copy()
            cell[:, o1] += d1
            cell[:, o2] += d2
            c.append(vid[tuple(cell.T)])
        q = np.stack(c, axis=1)
        q[~outward] = q[~outward][:, ::-1]
        quads.append(q)
    if not quads:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    q = np.concatenate(quads)
    # Split each quad along its shorter diagonal.
    d02 = np.linalg.norm(verts[q[:, 0]] - verts[q[:, 2]], axis=1)
    d13 = np.linalg.norm(verts[q[:, 1]] - verts[q[:, 3]], axis=1)
    use02 = d02 <= d13
    t1 = np.where(use02[:, None], q[:, [0, 1, 2]], q[:, [0, 1, 3]])
    t2 = np.where(use02[:, None], q[:, [0, 2, 3]], q[:, [1, 2, 3]])
    faces = np.concatenate([t1, t2])
    return verts, faces


def vertex_adjacency(faces: np.ndarray, n_vertices: int) -> sparse.csr_matrix:
    """Row-normalised vertex adjacency (umbrella operator) of a triangle mesh."""
    f = np.asarray(faces, dtype=np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    # Duplicates are summed: on a closed manifold every edge counts twice, uniformly.
    adj = sparse.csr_matrix((np.ones(i.size), (i, j)), shape=(n_vertices, n_vertices))
    deg = np.asarray(adj.sum(axis=1)).ravel()
    deg[deg == 0] = 1.0
    return sparse.diags(1.0 / deg) @ adj


def taubin_smooth(
    verts: np.ndarray,
    faces: np.ndarray,
    iterations: int = 4,
    lam: float = 0.5,
    mu: float = -0.53,
    fixed: np.ndarray | None = None,
) -> np.ndarray:
    """Taubin λ|μ smoothing (no shrinkage); vertices flagged in ``fixed`` do not move."""
    v = np.asarray(verts, dtype=np.float64).copy()
    if iterations <= 0 or v.shape[0] == 0:
        return v
    op = vertex_adjacency(faces, v.shape[0])
    free = None if fixed is None else ~np.asarray(fixed, dtype=bool)
    for _ in range(iterations):
        for w in (lam, mu):
            delta = op @ v - v
            if free is not None:
                delta[~free] = 0.0
            v += w * delta
    return v


def face_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Face normals (F×3), twice the face area long (outward for counter-clockwise faces)."""
    p0, p1, p2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    a, b = p1 - p0, p2 - p0
    # Written out: np.cross takes twice as long on N×3 arrays (measured; its axis handling).
    return np.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1],
                     a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                     a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], axis=1)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (outward for counter-clockwise faces)."""
    fn = face_normals(verts, faces)
    idx = faces.T.ravel()
    n_v = verts.shape[0]
    vn = np.stack(
        [np.bincount(idx, weights=np.tile(fn[:, d], 3), minlength=n_v) for d in range(3)], axis=1
    )
    n = np.linalg.norm(vn, axis=1, keepdims=True)
    return vn / np.maximum(n, 1e-12)


def fill_height_map(top: np.ndarray, filled: np.ndarray, close_size: int = 3):
    """Close small gaps of a height map and fill its enclosed holes with the nearest heights.

    Args:
        top: 2D float heights, any value where ``filled`` is False.
        filled: 2D bool, True where a column has data.
        close_size: size of the morphological closing of the footprint (0/1 disables it).

    Returns:
        ``(top, filled)`` with the gaps closed.
    """
    fp = filled
    if close_size > 1:
        st = np.ones((close_size, close_size), dtype=bool)
        fp = ndimage.binary_closing(np.pad(fp, close_size), structure=st)
        fp = fp[close_size:-close_size, close_size:-close_size] | filled
    # Enclosed holes: background components (4-connected) that do not touch the border. One
    # labelling pass (binary_fill_holes propagates iteratively and is much slower).
    labels, n = ndimage.label(~fp)
    if n:
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        hole = np.ones(n + 1, dtype=bool)
        hole[border] = False
        hole[0] = False
        fp = fp | hole[labels]
    new = fp & ~filled
    if not new.any():
        return top, filled
    # Each new column takes the height of the nearest observed column.
    _, (ii, jj) = ndimage.distance_transform_edt(~filled, return_indices=True)
    out = top.copy()
    out[new] = top[ii[new], jj[new]]
    return out, fp


def fit_circle(xy: np.ndarray) -> Tuple[np.ndarray, float, float]:
    """Least-squares circle through 2D points (Kåsa's algebraic fit).

    Returns ``(centre (2,), radius, rms distance of the points to the circle)``.
    """
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    a = np.c_[2.0 * pts, np.ones(len(pts))]
    b = (pts**2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    centre = sol[:2]
    radius = float(np.sqrt(max(sol[2] + centre @ centre, 0.0)))
    rms = float(np.sqrt(np.mean((np.linalg.norm(pts - centre, axis=1) - radius) ** 2)))
    return centre, radius, rms


def support_footprint(
    points: np.ndarray,
    top_band: float = 0.012,
    box_tolerance: float = 0.004,
    circle_tolerance: float = 0.003,
    min_side: float = 0.02,
    max_radius: float = 0.15,
    with_sides: bool = False,
):
    """Fit a box or an upright cylinder to the visible points of an object (gravity frame).

    ``points`` are N×3 ``(a, b, height)``. The side points (below the top band) must lie on the
    fitted footprint's outline: on the edges of the minimum-area rectangle of all the points
    (median distance ≤ ``box_tolerance``, 90 % within three times it) or of that rectangle
    with its seen faces moved onto their planes (:func:`_face_planes`; median ≤ half of
    ``box_tolerance``, 90 % within it), or on a circle (RMS ≤ ``circle_tolerance``, seen over
    at least 100° of arc). A single visible face fits a degenerate rectangle: rectangles
    thinner than ``min_side`` are refused, since the hidden depth is then not measured.

    Returns ``None`` or ``(kind, centre, axes_or_radius, extents)``: ``("box", centre (2,), axes
    (2×2 rows), extents (2,))``, the rectangle with its seen faces on their planes and its
    hidden sides where the points thin out (:func:`_hidden_sides`), or
    ``("cylinder", centre (2,), [radius], [2 radius, 2 radius])``. ``with_sides``: returns
    ``(fit, sides)``, :class:`BoxSides` (nothing seen or trimmed but for a box).
    """
    fit, sides = _footprint(points, top_band, box_tolerance, circle_tolerance, min_side,
                            max_radius)
    return (fit, sides) if with_sides else fit


class BoxSides(NamedTuple):
    """A box fit's sides, ``[k, j]`` = side ``j`` (0: low, 1: high) along axis ``k``."""

    seen: np.ndarray
    """(2, 2) bool: a seen face lies on it."""
    trimmed: np.ndarray
    """(2, 2) metres the side moved in from the outermost point (hidden sides only)."""


def _footprint(points, top_band, box_tolerance, circle_tolerance, min_side, max_radius):
    """:func:`support_footprint`'s fit and its :class:`BoxSides`."""
    none = BoxSides(np.zeros((2, 2), dtype=bool), np.zeros((2, 2)))
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape[0] < 50:
        return None, none
    h = pts[:, 2]
    top = float(np.percentile(h, 98))
    side = h < top - top_band
    if side.sum() < 30 or top < 2 * top_band:
        return None, none
    xy = pts[:, :2]
    c, axes, ext = min_area_rectangle(xy)
    box_rms = np.inf
    box_ok = False
    seen = np.zeros((2, 2), dtype=bool)
    if ext.min() >= min_side:
        local = (xy[side] - c) @ axes.T
        inside = np.min(ext / 2 - np.abs(local), axis=1)
        box_rms = float(np.sqrt(np.mean(np.maximum(inside, 0.0) ** 2)))
        box_ok = (np.median(inside) <= box_tolerance
                  and np.percentile(inside, 90) <= 3 * box_tolerance)
        # The rectangle touches the outermost side points: with noisy depth a box's seen faces
        # lie a few noise deviations inside it and can fail the test above (synthetic cracker
        # boxes: median 4.0-4.2 mm). Measured from the faces' planes instead
        # (:func:`_face_planes`), such a box's side points lie within 0.5-0.9 mm (median),
        # 90 % within 2 mm; a mug with its handle 3.7 / 11 mm. This second test is strict
        # (90 % within ``box_tolerance``): at 3 times it, random_urdfs shapes built of slabs
        # passed too and were completed as boxes (bench_core robot-head F@5mm 0.784 -> 0.772).
        c, ext, seen = _face_planes(xy[side], c, axes, ext, 2 * box_tolerance)
        local = (xy[side] - c) @ axes.T
        off = np.min(np.abs(ext / 2 - np.abs(local)), axis=1)
        box_ok = box_ok or (np.median(off) <= 0.5 * box_tolerance
                            and np.percentile(off, 90) <= box_tolerance)
    centre, radius, rms = fit_circle(xy[side])
    # Two faces of a small box seen at a corner also fit an arc: the better fit wins. The
    # circle must hold the object too: one face of a box seen from low fits an arc of a small
    # circle that its top reaches far beyond (a potted-meat can 5 × 9.7 cm with the RealSense
    # model: an arc of radius 2.1 cm, RMS 2.5 mm, better than the box's 3.5 mm).
    within = np.percentile(np.linalg.norm(xy - centre, axis=1), 98) <= radius + 0.005
    if (rms <= circle_tolerance and min_side / 2 <= radius <= max_radius and rms < box_rms
            and within):
        ang = np.arctan2(*(xy[side] - centre).T[::-1])
        hist = np.histogram(ang, bins=36, range=(-np.pi, np.pi))[0]
        if (hist > 0).sum() * 10 >= 100:
            return ("cylinder", centre, np.array([radius]),
                    np.array([2 * radius, 2 * radius])), none
    if box_ok:
        c, ext, trimmed = _hidden_sides(xy, c, axes, ext, seen)
        return ("box", c, axes, ext), BoxSides(seen, trimmed)
    return None, none


def _face_planes(xy: np.ndarray, centre, axes, ext, band: float, cover: float = 0.5):
    """Move each side of a fitted rectangle onto the median of the face seen on it.

    Returns ``(centre, extents, seen)``; ``seen[k, j]`` tells whether side ``j`` (0: low,
    1: high) along axis ``k`` is a seen face.

    The minimum-area rectangle touches the outermost points, so a visible face's side lies a
    few noise deviations out (the extreme of many noisy samples of one plane); the median of
    the points within ``band`` of the side (away from the corners) is the plane itself. A side
    counts as a seen face when those points cover at least ``cover`` of its length away from
    the corners; elsewhere (a hidden face, whose position the ends of the seen faces give) the
    side stays where it is.
    """
    local = (xy - centre) @ axes.T
    lo, hi = -ext / 2, ext / 2
    new_lo, new_hi = lo.copy(), hi.copy()
    seen = np.zeros((2, 2), dtype=bool)
    for k in (0, 1):
        other = 1 - k
        length = ext[other] - 2 * band  # the side's length away from the corners
        for sign, edge in ((-1.0, lo[k]), (1.0, hi[k])):
            # Not within the band of the adjacent sides: a perpendicular face's points reach
            # into this side's band at the corners, spread over the band's width.
            near = local[(np.abs(local[:, k] - edge) <= band)
                         & (np.abs(local[:, other]) <= ext[other] / 2 - band)]
            if len(near) < 10 or length <= 0:
                continue
            span = np.percentile(near[:, other], 95) - np.percentile(near[:, other], 5)
            if span < cover * length:
                continue
            plane = float(np.median(near[:, k]))
            seen[k, int(sign > 0)] = True
            if sign < 0:
                new_lo[k] = min(max(plane, lo[k]), hi[k])
            else:
                new_hi[k] = max(min(plane, hi[k]), lo[k])
    new_ext = new_hi - new_lo
    if np.any(new_ext <= 0.5 * ext):  # degenerate: keep the rectangle
        return centre, ext, np.zeros((2, 2), dtype=bool)
    return centre + (0.5 * (new_lo + new_hi)) @ axes, new_ext, seen


def _hidden_sides(xy: np.ndarray, centre, axes, ext, seen, window: float = 0.01,
                  step: float = 0.001, sparse: float = 0.5, min_points: int = 30,
                  per_bin: int = 20):
    """Place each side that is no seen face where the points thin out, not at the extreme.

    A hidden side of a box is where the seen faces (mostly the top) end. The rectangle puts it
    at the outermost point: a stray mixed pixel beyond that end (synthetic cracker boxes with
    the measured RealSense model: 7.5-7.8 cm instead of 7.2, which a gripper opening 8 cm no
    longer takes). Measured from the outermost points but the 0.1 % (at least 10) farthest
    out (strays can lie centimetres beyond), walking out from ``window`` inside in bins of
    ``step`` (wider where the reference strip gives fewer than ``per_bin`` points a bin), the
    side goes to the middle of the first bin holding fewer than ``sparse`` times the points
    per metre of the strip between ``window`` and twice it (half: where a surface's end
    blurred by symmetric noise lies; strays are sparser).
    Measured on the mass of the last ``window`` instead (the surface ending where the count
    says), real boxes seen from low came out short (dof6 Cheez-It IoU 0.96 -> 0.91): there
    the top thins out gradually towards its far edge. Sides with fewer than ``min_points`` in
    the reference strip stay where they are.

    Returns ``(centre, extents, trimmed)``: ``trimmed[k, j]`` how far side ``j`` along axis
    ``k`` moved in (whether that thin end was surface is the silhouette's to say:
    :meth:`~sam3d_ros.backends.embedded.reconstruction.EmbeddedReconstructor._hidden_sides_to_silhouette`).
    """
    local = (xy - centre) @ axes.T
    lo, hi = -ext / 2, ext / 2
    new_lo, new_hi = lo.copy(), hi.copy()
    trimmed = np.zeros((2, 2))
    strays = max(10, int(np.ceil(0.001 * len(xy))))  # outermost points a walk skips
    for k in (0, 1):
        w = min(window, ext[k] / 4)
        for j, sign in ((0, -1.0), (1, 1.0)):
            if seen[k, j]:
                continue
            inward = sign * ((hi if j else lo)[k] - local[:, k])  # distance in from the side
            # The walk starts at the outermost points but a few strays: mixed pixels can lie
            # centimetres beyond the top's end, leaving the reference strip empty (a bleach
            # bottle 6.5 cm deep with the RealSense model: 11 of 29k points up to 2.7 cm
            # behind it, so the side stayed there, 9.5 cm).
            start = float(np.partition(inward, strays)[strays]) if len(inward) > strays else 0.0
            reference = np.count_nonzero((inward >= start + w) & (inward < start + 2 * w))
            if reference < min_points:
                continue
            n_bins = max(min(int(round(w / step)), reference // per_bin), 1)
            counts = np.histogram(inward, bins=n_bins, range=(start, start + w))[0]
            thin = counts < sparse * reference / n_bins
            if not thin.any():
                continue
            d = start + (int(np.flatnonzero(thin)[-1]) + 0.5) * w / n_bins  # innermost thin bin
            trimmed[k, j] = d
            if j:
                new_hi[k] -= d
            else:
                new_lo[k] += d
    return centre + (0.5 * (new_lo + new_hi)) @ axes, new_hi - new_lo, trimmed


def footprint_samples(fit, spacing: float, inset: float = 0.0) -> np.ndarray:
    """Points (M×2) on a grid of ``spacing`` covering a :func:`support_footprint` fit.

    The points stay ``inset`` inside its outline. A height-map cell is filled by any point in
    it, so points on the outline fill cells reaching up to a cell beyond it (on average half
    a cell: a box came out ~a voxel too wide and deep); half a cell inside, the filled cells
    end on the outline on average.
    """
    kind, centre, shape, ext = fit
    half = np.maximum(np.asarray(ext, dtype=np.float64) / 2 - inset, 0.0)
    n = np.maximum(np.ceil(2 * half / spacing).astype(int), 1) + 1
    u = np.linspace(-half[0], half[0], n[0])
    v = np.linspace(-half[1], half[1], n[1])
    uu, vv = np.meshgrid(u, v, indexing="ij")
    local = np.stack([uu.ravel(), vv.ravel()], axis=1)
    if kind == "cylinder":
        local = local[np.linalg.norm(local, axis=1) <= max(shape[0] - inset, 0.0)]
        return centre + local
    return centre + local @ shape
