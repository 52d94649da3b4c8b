"""Every unit, axis, quaternion and frame convention of sam3d_ros, in one place.

Nothing else in the package may flip an axis, reorder a quaternion or convert a depth unit on its
own: it calls a function of this module, so each convention is written (and tested) exactly once.

Conventions (REP 103 / 105 / 117 / 118):

* **Pixels** — ``(u, v)`` = (column, row); the origin is the *centre* of the top-left pixel, so
  the image spans ``[-0.5, W - 0.5] × [-0.5, H - 0.5]``.
* **Depth images** (REP 118) — ``16UC1`` holds millimetres with ``0`` = invalid; ``32FC1`` holds
  metres with ``NaN`` / ``±inf`` / ``0`` = invalid (REP 117). Inside the core, depth is float32
  metres with ``NaN`` = invalid.
* **Camera frame** — the optical frame (x right, y down, z forward), metres. The ROS body frame
  of a camera (REP 103: x forward, y left, z up) is reached with :func:`optical_to_body`.
* **Quaternions** — ``[x, y, z, w]`` (ROS / hosted-schema order), Hamilton convention, active
  rotations of column vectors: ``v' = R(q) @ v``. ``R(a ⊗ b) = R(a) @ R(b)``. Reference models that
  use ``[w, x, y, z]`` are converted at their adapter with :func:`wxyz_to_xyzw`.
* **Frame contract** — the canonical object frame is centred on the object, its axes are the
  object's pose axes, and coordinates are divided by the object's scale::

      p_camera = R(q) @ (scale ⊙ p_canonical) + translation

* **Grasp frame** — origin = midpoint between the two fingertip contacts, +z = approach (the
  gripper moves along +z, fingers point along +z), +y = closing direction, +x = y × z; see
  :func:`grasp_rotation` and :func:`grasp_to_end_effector`.
* **Other axis conventions** — the PyTorch3D camera frame (+x left, +y up, +z forward) and the
  Y-up convention of glTF, both reached with the functions of the "axes" section below.

Arrays of points are ``(..., 3)``; arrays of quaternions are ``(..., 4)``. Functions compute in
float64 and, where noted, return float32 when given float32.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np

from sam3d_ros.core.errors import InputError
from sam3d_ros.core.types import CameraIntrinsics, Gaussians, ObjectReconstruction

ArrayLike = Union[np.ndarray, Sequence[float], Sequence[Sequence[float]]]

# --------------------------------------------------------------------------------------------
# Depth units (REP 118)
# --------------------------------------------------------------------------------------------

DEPTH_16UC1 = "16UC1"
"""Depth image encoding: unsigned 16-bit millimetres, 0 = invalid."""
DEPTH_32FC1 = "32FC1"
"""Depth image encoding: 32-bit float metres, NaN / inf / 0 = invalid."""
MM_PER_M = 1000.0


def depth_to_metres(depth: np.ndarray, encoding: str, field: str = "depth") -> np.ndarray:
    """Convert a depth image to float32 metres with NaN marking invalid pixels.

    Args:
        depth: H×W depth image (an H×W×1 image is accepted and squeezed).
        encoding: ``"16UC1"`` (or its alias ``"mono16"``): integer millimetres, ``0`` = invalid;
            ``"32FC1"``: float metres, ``NaN``, ``±inf`` and values ``<= 0`` are invalid.
        field: request field named in errors.

    Returns:
        H×W float32 depth in metres; every invalid pixel is NaN, every valid one is > 0.

    Raises:
        InputError: unknown encoding, wrong shape, or a dtype that does not match the encoding.
    """
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2:
        raise InputError(field, f"depth must be an H×W image, got shape {depth.shape}")
    if encoding in (DEPTH_16UC1, "mono16"):
        if depth.dtype.kind not in "ui":
            raise InputError(field, f"16UC1 depth must be integer millimetres, got {depth.dtype}")
        metres = depth.astype(np.float32) / np.float32(MM_PER_M)
        metres[depth <= 0] = np.nan
        return metres
    if encoding == DEPTH_32FC1:
        if depth.dtype.kind != "f":
            raise InputError(field, f"32FC1 depth must be float metres, got {depth.dtype}")
        metres = depth.astype(np.float32, copy=True)
        with np.errstate(invalid="ignore"):
            metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
        return metres
    raise InputError(field, f"unsupported depth encoding {encoding!r}; use '16UC1' or '32FC1'")


def _valid_depth_sample(z_m: np.ndarray) -> np.ndarray:
    """The valid depths of every 16th pixel (all of them when that leaves < 1000).

    The unit checks need a median's order of magnitude, not its last digit: a 1280×720 frame's
    full median costs ~8 ms per frame, the sample's 0.5 ms.
    """
    z = np.asarray(z_m, dtype=np.float32).ravel()
    for sample in (z[::16], z):
        with np.errstate(invalid="ignore"):
            valid = sample[np.isfinite(sample) & (sample > 0)]
        if valid.size >= 1000:
            return valid
    return valid


MAX_MEDIAN_DEPTH_M = 50.0
"""Float depth whose median is beyond this is millimetres mislabelled as metres (refused)."""


def check_float_depth_is_metres(z_m: np.ndarray, field: str = "depth") -> None:
    """Refuse float depth (or pointmap z) in millimetres: the one unit rule of node and CLI.

    A float depth image must hold metres (REP 118). Millimetres stored as float are the most
    common unit bug; they put objects hundreds of metres away. No RGB-D camera this package
    serves sees a scene whose median depth exceeds :data:`MAX_MEDIAN_DEPTH_M`, so such a median
    is refused rather than warned about.

    Args:
        z_m: depth in metres, any shape; NaN / inf / ``<= 0`` are ignored.
        field: request field named in the error.

    Raises:
        InputError: the median valid depth exceeds :data:`MAX_MEDIAN_DEPTH_M`.
    """
    valid = _valid_depth_sample(z_m)
    if valid.size == 0:
        return
    median = float(np.median(valid))
    if median > MAX_MEDIAN_DEPTH_M:
        raise InputError(
            field,
            f"float depth must be metres; its median {median:.1f} looks like millimetres "
            "(give millimetres as 16-bit integers: 16UC1 / uint16, or divide by 1000)",
        )


MIN_MEDIAN_DEPTH_M = 0.05
"""16-bit depth whose median is nearer than this is metres stored as integers (refused)."""


def check_integer_depth_is_millimetres(z_m: np.ndarray, field: str = "depth") -> None:
    """Refuse 16-bit depth that holds metres (or centimetres), not millimetres.

    A ``16UC1`` depth image holds millimetres (REP 118). Metres rounded to integers give 0, 1
    and 2 "mm": every object lies within a few millimetres of the camera. No RGB-D camera this
    package serves sees a scene whose median depth is nearer than :data:`MIN_MEDIAN_DEPTH_M`
    (the closest-range ones start at about 7 cm), so such a median is refused.

    Args:
        z_m: depth in metres (after the millimetre conversion), any shape; NaN / inf / ``<= 0``
            are ignored.
        field: request field named in the error.

    Raises:
        InputError: the median valid depth is nearer than :data:`MIN_MEDIAN_DEPTH_M`.
    """
    valid = _valid_depth_sample(z_m)
    if valid.size == 0:
        return
    median_mm = 1000.0 * float(np.median(valid))
    if median_mm < 1000.0 * MIN_MEDIAN_DEPTH_M:
        raise InputError(
            field,
            f"16-bit depth must be millimetres; its median {median_mm:.0f} mm is nearer than any "
            "RGB-D camera sees: metres or centimetres stored as integers? (give metres as float "
            "32FC1 / float32, or millimetres as integers)",
        )


def metres_to_depth16(depth_m: np.ndarray) -> np.ndarray:
    """Convert float metres to a ``16UC1`` depth image (uint16 millimetres, 0 = invalid).

    Values are rounded to the nearest millimetre. NaN, ``±inf``, values ``<= 0`` and values that
    do not fit in 16 bits (``>= 65.5355`` m) become ``0``.

    Args:
        depth_m: depth in metres, any shape.

    Returns:
        uint16 array of the same shape.
    """
    depth_m = np.asarray(depth_m, dtype=np.float64)
    mm = np.rint(np.where(np.isfinite(depth_m), depth_m, 0.0) * MM_PER_M)
    valid = (mm > 0) & (mm <= np.iinfo(np.uint16).max)
    return np.where(valid, mm, 0).astype(np.uint16)


def metres_to_depth32(depth_m: np.ndarray) -> np.ndarray:
    """Convert float metres to a ``32FC1`` depth image (float32 metres, NaN = invalid).

    NaN, ``±inf`` and values ``<= 0`` become NaN.
    """
    out = np.asarray(depth_m, dtype=np.float32).copy()
    with np.errstate(invalid="ignore"):
        out[~(np.isfinite(out) & (out > 0))] = np.nan
    return out


# --------------------------------------------------------------------------------------------
# Pinhole camera
# --------------------------------------------------------------------------------------------


def intrinsics_from_matrix(
    k: ArrayLike, width: int, height: int, field: str = "intrinsics"
) -> CameraIntrinsics:
    """Build :class:`CameraIntrinsics` from a 3×3 matrix ``K`` (or its 9 row-major values).

    Raises:
        InputError: ``K`` is not 3×3, has non-positive / non-finite focal lengths, has skew, or
            the image size is not positive.
    """
    k = np.asarray(k, dtype=np.float64)
    if k.size != 9:
        raise InputError(field, f"K must have 9 values (3×3), got {k.size}")
    k = k.reshape(3, 3)
    if not np.all(np.isfinite(k)):
        raise InputError(field, "K contains non-finite values")
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    if fx <= 0 or fy <= 0:
        raise InputError(field, f"focal lengths must be positive, got fx={fx}, fy={fy}")
    if abs(k[0, 1]) > 1e-9 * fx or np.any(np.abs(k[2] - (0, 0, 1)) > 1e-9) or k[1, 0] != 0:
        raise InputError(field, "K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew)")
    if int(width) <= 0 or int(height) <= 0:
        raise InputError(field, f"image size must be positive, got {width}×{height}")
    return CameraIntrinsics(float(fx), float(fy), float(cx), float(cy), int(width), int(height))


def intrinsics_to_matrix(intrinsics: CameraIntrinsics) -> np.ndarray:
    """Return the 3×3 float64 camera matrix ``K`` of ``intrinsics``."""
    return np.array(
        [[intrinsics.fx, 0.0, intrinsics.cx], [0.0, intrinsics.fy, intrinsics.cy], [0, 0, 1.0]]
    )


def scale_intrinsics(intrinsics: CameraIntrinsics, width: int, height: int) -> CameraIntrinsics:
    """Return the intrinsics of the same camera imaged at ``width × height`` pixels.

    Used when the depth image and the colour image have different sizes (same field of view).
    Follows the pixel-centre convention: the image edge sits at ``-0.5``, so
    ``cx' = (cx + 0.5) · width / W - 0.5``.

    Raises:
        InputError: non-positive target size.
    """
    if int(width) <= 0 or int(height) <= 0:
        raise InputError("intrinsics", f"image size must be positive, got {width}×{height}")
    sx = width / intrinsics.width
    sy = height / intrinsics.height
    return CameraIntrinsics(
        fx=intrinsics.fx * sx,
        fy=intrinsics.fy * sy,
        cx=(intrinsics.cx + 0.5) * sx - 0.5,
        cy=(intrinsics.cy + 0.5) * sy - 0.5,
        width=int(width),
        height=int(height),
    )


def same_aspect(w1: int, h1: int, w2: int, h2: int, tol: float = 0.01) -> bool:
    """True when ``w1 × h1`` and ``w2 × h2`` have the same aspect ratio within ``tol``.

    Images of one camera at two resolutions (the only size differences
    :func:`scale_intrinsics` may bridge).
    """
    return abs(w1 * h2 - w2 * h1) <= tol * max(w1 * h2, w2 * h1)


def backproject(depth_m: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Back-project a metric depth image to a pointmap in the camera optical frame.

    ``X = (u - cx) · z / fx``, ``Y = (v - cy) · z / fy``, ``Z = z``.

    Args:
        depth_m: H×W depth in metres, NaN = invalid (see :func:`depth_to_metres`).
        intrinsics: intrinsics of an H×W image (see :func:`scale_intrinsics`).

    Returns:
        H×W×3 float32 points in metres; all three coordinates are NaN where depth is invalid.

    Raises:
        InputError: the depth size does not match the intrinsics.
    """
    depth_m = np.asarray(depth_m, dtype=np.float32)
    if depth_m.ndim != 2 or depth_m.shape != (intrinsics.height, intrinsics.width):
        raise InputError(
            "intrinsics",
            f"depth is {depth_m.shape} but intrinsics are for "
            f"{intrinsics.height}×{intrinsics.width}; use scale_intrinsics",
        )
    h, w = depth_m.shape
    with np.errstate(invalid="ignore"):
        z = np.where(depth_m > 0, depth_m, np.float32(np.nan))
    xs = ((np.arange(w, dtype=np.float32) - np.float32(intrinsics.cx))
          / np.float32(intrinsics.fx))
    ys = ((np.arange(h, dtype=np.float32) - np.float32(intrinsics.cy))
          / np.float32(intrinsics.fy))
    points = np.empty((h, w, 3), dtype=np.float32)
    np.multiply(z, xs[None, :], out=points[:, :, 0])
    np.multiply(z, ys[:, None], out=points[:, :, 1])
    points[:, :, 2] = z
    return points


def backproject_pixels(
    rows: np.ndarray, cols: np.ndarray, depth_m: np.ndarray, intrinsics: CameraIntrinsics
) -> np.ndarray:
    """Back-project pixels ``(row, col)`` with depths (metres) to N×3 optical-frame points.

    The same pinhole model as :func:`backproject`, for a sparse set of pixels.
    """
    z = np.asarray(depth_m, dtype=np.float64)
    x = (np.asarray(cols, dtype=np.float64) - intrinsics.cx) * z / intrinsics.fx
    y = (np.asarray(rows, dtype=np.float64) - intrinsics.cy) * z / intrinsics.fy
    return np.stack([x, y, z], axis=-1)


def project(points: np.ndarray, intrinsics: CameraIntrinsics) -> Tuple[np.ndarray, np.ndarray]:
    """Project optical-frame points to pixel coordinates.

    Args:
        points: ``(..., 3)`` points in the camera optical frame.
        intrinsics: pinhole intrinsics.

    Returns:
        ``(u, v)``: float64 arrays of shape ``points.shape[:-1]``; NaN where ``z <= 0`` or the
        point is not finite. No bounds check against the image size.
    """
    p = np.asarray(points, dtype=np.float64)
    z = p[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(p).all(axis=-1) & (z > 0)
        zs = np.where(ok, z, np.nan)
        u = intrinsics.fx * p[..., 0] / zs + intrinsics.cx
        v = intrinsics.fy * p[..., 1] / zs + intrinsics.cy
    return u, v


def _fit_line(a: np.ndarray, b: np.ndarray) -> Tuple[float, float]:
    """Least-squares ``b ≈ f·a + c``; returns ``(f, c)``."""
    design = np.stack([a, np.ones_like(a)], axis=1)
    (f, c), *_ = np.linalg.lstsq(design, b, rcond=None)
    return float(f), float(c)


def intrinsics_from_pointmap(
    points: np.ndarray, min_valid: int = 16, field: str = "pointmap"
) -> CameraIntrinsics:
    """Fit pinhole intrinsics to an H×W×3 optical-frame pointmap.

    Solves ``u = fx · X/Z + cx`` and ``v = fy · Y/Z + cy`` by least squares over the valid pixels
    (finite, ``Z > 0``), then refits once without the pixels whose residual exceeds
    ``max(0.5 px, 5 · MAD)`` (robust to a few outliers such as flying pixels).

    Args:
        points: H×W×3 pointmap in metres, NaN = invalid.
        min_valid: fewest valid pixels accepted.
        field: request field named in errors.

    Returns:
        intrinsics of the H×W image.

    Raises:
        InputError: wrong shape, too few valid pixels, or a degenerate fit (non-positive focal
            length, e.g. a pointmap in the PyTorch3D frame, or all points on one ray).
    """
    points = np.asarray(points)
    if points.ndim != 3 or points.shape[2] != 3:
        raise InputError(field, f"pointmap must be H×W×3, got shape {points.shape}")
    h, w = points.shape[:2]
    p = points.reshape(-1, 3).astype(np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(p).all(axis=1) & (p[:, 2] > 0)
    idx = np.flatnonzero(valid)
    if idx.size < min_valid:
        raise InputError(field, f"only {idx.size} valid points; need at least {min_valid}")
    u = (idx % w).astype(np.float64)
    v = (idx // w).astype(np.float64)
    a = p[idx, 0] / p[idx, 2]
    b = p[idx, 1] / p[idx, 2]
    if np.ptp(a) <= 1e-9 or np.ptp(b) <= 1e-9:
        raise InputError(field, "valid points do not span both image axes; cannot fit intrinsics")
    result = []
    for ray, pix in ((a, u), (b, v)):
        f, c = _fit_line(ray, pix)
        resid = np.abs(pix - (f * ray + c))
        mad = float(np.median(resid))
        keep = resid <= max(0.5, 5.0 * mad)
        if 2 <= keep.sum() < keep.size and np.ptp(ray[keep]) > 1e-9:
            f, c = _fit_line(ray[keep], pix[keep])
        result.append((f, c))
    (fx, cx), (fy, cy) = result
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
        raise InputError(
            field,
            f"fitted focal lengths are not positive (fx={fx:.3g}, fy={fy:.3g}); is the pointmap "
            "in the optical frame (x right, y down, z forward)?",
        )
    return CameraIntrinsics(fx, fy, cx, cy, int(w), int(h))


# --------------------------------------------------------------------------------------------
# Quaternions [x, y, z, w]
# --------------------------------------------------------------------------------------------


def xyzw_to_wxyz(q: ArrayLike) -> np.ndarray:
    """Reorder ``(..., 4)`` quaternions from ``[x, y, z, w]`` to ``[w, x, y, z]``."""
    q = np.asarray(q)
    return np.concatenate([q[..., 3:4], q[..., 0:3]], axis=-1)


def wxyz_to_xyzw(q: ArrayLike) -> np.ndarray:
    """Reorder ``(..., 4)`` quaternions from ``[w, x, y, z]`` to ``[x, y, z, w]``."""
    q = np.asarray(q)
    return np.concatenate([q[..., 1:4], q[..., 0:1]], axis=-1)


def quat_normalize(q: ArrayLike) -> np.ndarray:
    """Return ``(..., 4)`` quaternions scaled to unit norm (float64); the sign is kept.

    Raises:
        ValueError: a quaternion is non-finite or has (near) zero norm.
    """
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise ValueError(f"quaternions must have shape (..., 4), got {q.shape}")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norm)) or np.any(norm < 1e-12):
        raise ValueError("quaternion with zero or non-finite norm")
    return q / norm


def quat_canonical(q: ArrayLike) -> np.ndarray:
    """Return unit quaternions with the canonical sign ``w >= 0`` (``q`` and ``-q`` are equal)."""
    q = quat_normalize(q)
    return np.where(q[..., 3:4] < 0, -q, q)


def quat_conjugate(q: ArrayLike) -> np.ndarray:
    """Return the conjugate ``[-x, -y, -z, w]`` (the inverse rotation of a unit quaternion)."""
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([-1.0, -1.0, -1.0, 1.0])


def quat_multiply(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Hamilton product ``a ⊗ b`` of ``[x, y, z, w]`` quaternions (broadcasting).

    ``R(a ⊗ b) = R(a) @ R(b)``: rotate by ``b`` first, then by ``a``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        axis=-1,
    )


def quat_left_matrix(a: ArrayLike) -> np.ndarray:
    """4×4 float64 matrix ``L`` with ``quat_multiply(a, b) == L @ b`` (``[x, y, z, w]`` order).

    Lets a single quaternion pre-multiply many (``b_rows @ L.T``) as one matrix product.
    """
    x, y, z, w = np.asarray(a, dtype=np.float64).reshape(4)
    return np.array([
        [w, -z, y, x],
        [z, w, -x, y],
        [-y, x, w, z],
        [-x, -y, -z, w],
    ])


def quat_to_matrix(q: ArrayLike) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` of ``(..., 4)`` ``[x, y, z, w]`` quaternions.

    The quaternions are normalised first.

    Raises:
        ValueError: zero-norm or non-finite quaternion.
    """
    x, y, z, w = np.moveaxis(quat_normalize(q), -1, 0)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    m = np.stack(
        [
            1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
            2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
            2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
        ],
        axis=-1,
    )
    return m.reshape(m.shape[:-1] + (3, 3))


def matrix_to_quat(m: ArrayLike) -> np.ndarray:
    """Unit ``[x, y, z, w]`` quaternions (``w >= 0``) of ``(..., 3, 3)`` rotation matrices.

    Numerically robust for every rotation (Shepperd's method: the largest of ``w, x, y, z`` is
    computed from the diagonal, the others from off-diagonal terms). Slightly non-orthonormal
    input is tolerated; the result is normalised.

    Raises:
        ValueError: wrong shape, non-finite values, or a reflection (``det < 0``).
    """
    m = np.asarray(m, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must have shape (..., 3, 3), got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("rotation matrix contains non-finite values")
    if np.any(np.linalg.det(m) <= 0):
        raise ValueError("matrix is not a rotation (det <= 0)")
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Four candidate solutions, each well-conditioned when its leading component is largest.
    cands = np.stack(
        [
            np.stack([1 + m00 - m11 - m22, m01 + m10, m02 + m20, m21 - m12], axis=-1),
            np.stack([m01 + m10, 1 - m00 + m11 - m22, m12 + m21, m02 - m20], axis=-1),
            np.stack([m02 + m20, m12 + m21, 1 - m00 - m11 + m22, m10 - m01], axis=-1),
            np.stack([m21 - m12, m02 - m20, m10 - m01, 1 + m00 + m11 + m22], axis=-1),
        ],
        axis=-2,
    )
    diag = np.stack([m00 - m11 - m22, m11 - m00 - m22, m22 - m00 - m11, m00 + m11 + m22], -1)
    best = np.argmax(diag, axis=-1)
    q = np.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    return quat_canonical(q)


def quat_rotate(q: ArrayLike, v: ArrayLike) -> np.ndarray:
    """Rotate ``(..., 3)`` vectors by ``[x, y, z, w]`` quaternions: ``R(q) @ v`` (float64)."""
    return np.einsum("...ij,...j->...i", quat_to_matrix(q), np.asarray(v, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# Frame contract: canonical object frame ↔ camera optical frame
# --------------------------------------------------------------------------------------------


def scale_vector(scale: Union[float, ArrayLike, None]) -> np.ndarray:
    """Return ``scale`` as a float64 3-vector (``None`` → ones, a scalar → repeated).

    Accepts a scalar, ``[s]``, ``[sx, sy, sz]`` or ``[[sx, sy, sz]]`` (hosted schema).

    Raises:
        ValueError: not 1 or 3 values, or a value that is not finite and positive.
    """
    if scale is None:
        return np.ones(3)
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    if s.size == 1:
        s = np.repeat(s, 3)
    if s.size != 3:
        raise ValueError(f"scale must have 1 or 3 values, got {s.size}")
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"scale must be finite and positive, got {s.tolist()}")
    return s


def _matvec(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``m @ p`` for every ``(..., k)`` point; einsum, not BLAS, whose threads stall when busy."""
    return np.einsum("ij,...j->...i", m, points)


def _like(result: np.ndarray, template: np.ndarray) -> np.ndarray:
    return result.astype(np.float32) if template.dtype == np.float32 else result


def pose_matrix(
    rotation: ArrayLike, translation: ArrayLike, scale: Union[float, ArrayLike, None] = None
) -> np.ndarray:
    """4×4 float64 matrix ``[R(q)·diag(scale) | t]`` mapping canonical → camera coordinates.

    Args:
        rotation: ``[x, y, z, w]`` quaternion.
        translation: ``[tx, ty, tz]`` in metres (any shape with 3 values).
        scale: scalar or 3 values; ``None`` = 1 (a rigid transform).
    """
    t = np.asarray(translation, dtype=np.float64).reshape(3)
    out = np.eye(4)
    out[:3, :3] = quat_to_matrix(np.asarray(rotation).reshape(4)) * scale_vector(scale)[None, :]
    out[:3, 3] = t
    return out


def transform_points(matrix: ArrayLike, points: np.ndarray) -> np.ndarray:
    """Apply a 4×4 affine transform to ``(..., 3)`` points; float32 in → float32 out."""
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points)
    out = _matvec(m[:3, :3], p.astype(np.float64)) + m[:3, 3]
    return _like(out, p)


def canonical_to_camera(
    points: np.ndarray,
    rotation_xyzw: ArrayLike,
    translation: ArrayLike,
    scale: Union[float, ArrayLike],
) -> np.ndarray:
    """Map canonical-frame points to the camera optical frame.

    ``p_camera = R(q) @ (scale ⊙ p_canonical) + translation``.

    Args:
        points: ``(..., 3)`` canonical coordinates (unitless, object fits ``[-0.5, 0.5]^3``).
        rotation_xyzw: ``[x, y, z, w]`` quaternion.
        translation: metres.
        scale: scalar or ``[sx, sy, sz]`` metres per canonical unit.

    Returns:
        ``(..., 3)`` points in metres; float32 in → float32 out.
    """
    return transform_points(pose_matrix(rotation_xyzw, translation, scale), points)


def posed_vertices(obj: ObjectReconstruction) -> np.ndarray:
    """An object's mesh vertices in the camera optical frame (metres, float64)."""
    return canonical_to_camera(
        np.asarray(obj.mesh.vertices, dtype=np.float64), obj.rotation, obj.translation, obj.scale
    )


def camera_to_canonical(
    points: np.ndarray,
    rotation_xyzw: ArrayLike,
    translation: ArrayLike,
    scale: Union[float, ArrayLike],
) -> np.ndarray:
    """Inverse of :func:`canonical_to_camera`: ``p_canonical = (R(q)ᵀ @ (p - t)) / scale``."""
    p = np.asarray(points)
    r = quat_to_matrix(np.asarray(rotation_xyzw).reshape(4))
    t = np.asarray(translation, dtype=np.float64).reshape(3)
    out = _matvec(r.T, p.astype(np.float64) - t) / scale_vector(scale)
    return _like(out, p)


def transform_gaussians(
    g: Gaussians,
    rotation: ArrayLike,
    translation: ArrayLike,
    scale: Union[float, ArrayLike] = 1.0,
) -> Gaussians:
    """Apply the similarity transform ``x ↦ s·R(q)·x + t`` to 3D Gaussians.

    Means map like points, each covariance ``Σ = M diag(σ²) Mᵀ`` maps to ``s² R Σ Rᵀ``, i.e. the
    standard deviations are multiplied by ``s`` and the orientation becomes ``q ⊗ q_i``.
    Colours and opacities are unchanged. With the pose of an object this maps its canonical
    Gaussians to the camera frame.

    Args:
        g: Gaussians (means, linear scales, ``[x, y, z, w]`` rotations).
        rotation: ``[x, y, z, w]`` quaternion.
        translation: 3 values.
        scale: isotropic scale (a scalar or 3 equal values).

    Returns:
        new float32 :class:`Gaussians`; output rotations are unit quaternions with ``w >= 0``.

    Raises:
        ValueError: anisotropic scale (a Gaussian is then no longer axis-scaled in its own
            frame), or an invalid rotation.
    """
    s = scale_vector(scale)
    if not np.allclose(s, s[0], rtol=1e-6, atol=0):
        raise ValueError(f"transform_gaussians needs an isotropic scale, got {s.tolist()}")
    q = quat_normalize(np.asarray(rotation).reshape(4))
    n = len(g)
    rots = np.asarray(g.rotations, dtype=np.float64).reshape(n, 4)
    return Gaussians(
        means=canonical_to_camera(
            np.asarray(g.means, dtype=np.float32).reshape(n, 3), q, translation, s
        ),
        scales=(np.asarray(g.scales, dtype=np.float64).reshape(n, 3) * s[0]).astype(np.float32),
        rotations=(quat_canonical(quat_multiply(q, rots)) if n else rots).astype(np.float32),
        colors=np.asarray(g.colors, dtype=np.float32).copy(),
        opacities=np.asarray(g.opacities, dtype=np.float32).copy(),
    )


# --------------------------------------------------------------------------------------------
# Grasp frame (parallel-jaw grasps, see sam3d_ros.backends.grasp.analytic)
# --------------------------------------------------------------------------------------------
# A grasp is a pose in the camera optical frame: origin = midpoint between the two fingertip
# contact points; +z = approach (the gripper moves along +z towards the object, the fingers point
# along +z); +y = closing direction (the line between the fingers); +x = y × z (right-handed).
# ``width`` = the opening at contact (distance between the contacts).


def _unit(v: np.ndarray, what: str) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if not (np.all(np.isfinite(v)) and np.all(n > 1e-12)):
        raise ValueError(f"{what} must be finite and non-zero")
    return v / n


def grasp_rotation(approach: ArrayLike, closing: ArrayLike) -> np.ndarray:
    """Rotation matrix ``[x y z]`` (columns) of the grasp frame, ``(..., 3, 3)`` float64.

    ``z`` = the unit ``approach``; ``y`` = ``closing`` made orthogonal to ``z`` (Gram-Schmidt,
    so ``z`` wins when they are not exactly orthogonal); ``x = y × z``.

    Raises:
        ValueError: zero / non-finite vectors, or ``closing`` parallel to ``approach``.
    """
    z = _unit(np.asarray(approach, dtype=np.float64), "approach")
    c = np.asarray(closing, dtype=np.float64)
    y = _unit(c - np.sum(c * z, axis=-1, keepdims=True) * z, "closing (orthogonal to approach)")
    x = np.cross(y, z)
    return np.stack([x, y, z], axis=-1)


def grasp_quaternion(approach: ArrayLike, closing: ArrayLike) -> np.ndarray:
    """Unit ``[x, y, z, w]`` quaternion of :func:`grasp_rotation`."""
    return matrix_to_quat(grasp_rotation(approach, closing))


def grasp_axes(orientation_xyzw: ArrayLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, z)`` axes of a grasp orientation: (finger-width, closing, approach) directions."""
    r = quat_to_matrix(quat_normalize(orientation_xyzw))
    return r[..., :, 0], r[..., :, 1], r[..., :, 2]


def grasp_to_end_effector(
    position: ArrayLike,
    orientation_xyzw: ArrayLike,
    tcp_offset: float,
    ee_in_grasp_xyzw: ArrayLike = (0.0, 0.0, 0.0, 1.0),
) -> Tuple[np.ndarray, np.ndarray]:
    """Pose of an end-effector link that puts the grasp frame at the given grasp pose.

    The end-effector link sits ``tcp_offset`` metres behind the grasp origin along the approach
    axis (for a Franka Hand the ``panda_hand`` link has the grasp frame's axes and
    ``tcp_offset = 0.1034``): ``p_ee = p - tcp_offset · z``. ``ee_in_grasp_xyzw`` is the fixed
    rotation of the link's axes in the grasp frame, for grippers whose link axes differ (e.g. a
    gripper that closes along its x axis: a 90° turn about z). Works on ``(..., 3)`` /
    ``(..., 4)`` arrays.

    Returns:
        ``(position, orientation_xyzw)`` of the end-effector link, same frame as the grasp.
    """
    q = quat_normalize(orientation_xyzw)
    p = np.asarray(position, dtype=np.float64)
    z = quat_to_matrix(q)[..., :, 2]
    p_ee = p - float(tcp_offset) * z
    q_ee = quat_canonical(quat_multiply(q, quat_normalize(ee_in_grasp_xyzw)))
    return p_ee, q_ee


def end_effector_to_grasp(
    position: ArrayLike,
    orientation_xyzw: ArrayLike,
    tcp_offset: float,
    ee_in_grasp_xyzw: ArrayLike = (0.0, 0.0, 0.0, 1.0),
) -> Tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`grasp_to_end_effector`: the grasp pose of an end-effector pose."""
    q_g = quat_canonical(
        quat_multiply(quat_normalize(orientation_xyzw), quat_conjugate(
            quat_normalize(ee_in_grasp_xyzw)))
    )
    z = quat_to_matrix(q_g)[..., :, 2]
    return np.asarray(position, dtype=np.float64) + float(tcp_offset) * z, q_g


# --------------------------------------------------------------------------------------------
# Axes: optical ↔ ROS body, optical ↔ PyTorch3D camera, Z-up ↔ Y-up (glTF)
# --------------------------------------------------------------------------------------------

OPTICAL_TO_PYTORCH3D = np.diag([-1.0, -1.0, 1.0])
"""``p_pytorch3d = OPTICAL_TO_PYTORCH3D @ p_optical`` (its own inverse; a 180° turn about z)."""
ZUP_TO_YUP = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
"""``p_yup = ZUP_TO_YUP @ p_zup``: (x, y, z) → (x, z, −y), a −90° turn about x."""
YUP_TO_ZUP = ZUP_TO_YUP.T
"""``p_zup = YUP_TO_ZUP @ p_yup``: (X, Y, Z) → (X, −Z, Y)."""
OPTICAL_TO_BODY = np.array([[0.0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0]])
"""``p_body = OPTICAL_TO_BODY @ p_optical`` (REP 103 body frame: x forward, y left, z up)."""
OPTICAL_IN_BODY_XYZW = np.array([-0.5, 0.5, -0.5, 0.5])
"""Rotation of the optical frame in the camera body frame, as the static TF publishes it."""


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.asarray(points)
    return _like(_matvec(m, p.astype(np.float64)), p)


def optical_to_pytorch3d(points: np.ndarray) -> np.ndarray:
    """ROS optical (x right, y down, z fwd) → PyTorch3D camera (x left, y up, z fwd).

    ``(x, y, z) → (−x, −y, z)``; float32 stays float32, NaN stays NaN.
    """
    return _apply(OPTICAL_TO_PYTORCH3D, points)


def pytorch3d_to_optical(points: np.ndarray) -> np.ndarray:
    """PyTorch3D camera frame → ROS optical frame: ``(x, y, z) → (−x, −y, z)``."""
    return _apply(OPTICAL_TO_PYTORCH3D, points)


def zup_to_yup(points: np.ndarray) -> np.ndarray:
    """Z-up → Y-up (glTF): ``(x, y, z) → (x, z, −y)``."""
    return _apply(ZUP_TO_YUP, points)


def yup_to_zup(points: np.ndarray) -> np.ndarray:
    """Y-up (glTF) → Z-up: ``(X, Y, Z) → (X, −Z, Y)``."""
    return _apply(YUP_TO_ZUP, points)


def optical_to_body(points: np.ndarray) -> np.ndarray:
    """Camera optical frame → camera body frame (REP 103): ``(x, y, z) → (z, −x, −y)``."""
    return _apply(OPTICAL_TO_BODY, points)


def body_to_optical(points: np.ndarray) -> np.ndarray:
    """Camera body frame (REP 103) → camera optical frame: ``(X, Y, Z) → (−Y, −Z, X)``."""
    return _apply(OPTICAL_TO_BODY.T, points)


# --- Reference-model conventions (SAM 3D Objects) ---
# Read from facebookresearch/sam-3d-objects (main, Nov 2025): notebook/inference.py,
# pipeline/inference_pipeline_pointmap.py (compute_pointmap), data/dataset/tdfy/transforms_3d.py
# (compose_transform), utils/visualization/scene_visualizer.py (object_pointcloud),
# model/backbone/tdfy_dit/utils/postprocessing_utils.py (to_glb) and
# pipeline/layout_post_optimization_utils.py (get_mesh). Used by
# sam3d_ros.backends.sam3d_objects.reconstruction; proven on synthetic data in
# test/test_sam3d_objects_reconstruction.py.


def optical_to_sam3d_pointmap(points: np.ndarray) -> np.ndarray:
    """Optical-frame pointmap → the ``pointmap`` SAM 3D Objects expects (PyTorch3D camera axes).

    ``(x, y, z) → (−x, −y, z)``, float32, NaN kept (the reference skips non-finite points).
    Wrap the result with ``torch.from_numpy`` before passing it.
    """
    return optical_to_pytorch3d(np.asarray(points, dtype=np.float32))


def sam3d_glb_to_local(vertices_yup: np.ndarray) -> np.ndarray:
    """Vertices of a SAM 3D Objects ``glb`` (Y-up) → its local Z-up object frame.

    The reference's ``to_glb`` does ``vertices @ [[1, 0, 0], [0, 0, -1], [0, 1, 0]]``, i.e.
    ``(x, y, z) → (x, z, −y)``; this undoes it: ``(X, Y, Z) → (X, −Z, Y)``.
    """
    return yup_to_zup(vertices_yup)


def sam3d_pose_to_optical(
    rotation_wxyz: ArrayLike, translation: ArrayLike, scale: ArrayLike
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SAM 3D Objects output pose → ``(q_xyzw, t, scale3)`` in the optical frame.

    The reference maps its local frame to the PyTorch3D camera with row vectors
    (``Transform3d().scale(s).rotate(R).translate(t)``, ``R = quaternion_to_matrix(q_wxyz)``):
    ``p_cam = (s ⊙ p) @ R + t``, i.e. ``R ᵀ·(s ⊙ p) + t`` for column vectors (the effective
    rotation is ``q⁻¹``). With ``F = diag(−1, −1, 1)``, ``p_optical = F·p_cam``, so the result
    satisfies ``p_optical = R(q_xyzw)·(scale3 ⊙ p_local) + t`` with ``R(q_xyzw) = F·Rᵀ`` and
    ``t = F·t_ref``. Inputs may carry the reference's batch dimension (1×4, 1×3, 1×3).
    """
    r_ref = quat_to_matrix(wxyz_to_xyzw(np.asarray(rotation_wxyz, np.float64).reshape(-1)[:4]))
    t_ref = np.asarray(translation, dtype=np.float64).reshape(-1)[:3]
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    s3 = np.repeat(s[:1], 3) if s.size == 1 else s[:3].copy()
    return matrix_to_quat(OPTICAL_TO_PYTORCH3D @ r_ref.T), OPTICAL_TO_PYTORCH3D @ t_ref, s3


def sam3d_local_to_canonical(
    rotation_xyzw: ArrayLike, translation: ArrayLike, scale: float, centre: ArrayLike,
    extent: float,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-centre / re-scale a posed SAM 3D Objects local frame into OUR canonical frame.

    With ``p_local = centre + extent · p_canonical`` (``centre`` the middle of the object's
    box in the reference's normalised box, ``extent`` its largest side) and the optical pose
    ``p_optical = R(q)·(scale · p_local) + t`` of :func:`sam3d_pose_to_optical` (isotropic
    ``scale``), returns the canonical pose ``(q, t + scale·R(q)·centre, [scale·extent] * 3)``.
    The axes are kept (the reference's Z-up object axes).
    """
    q = quat_normalize(np.asarray(rotation_xyzw).reshape(4))
    c = np.asarray(centre, dtype=np.float64).reshape(3)
    t = np.asarray(translation, dtype=np.float64).reshape(3) + float(scale) * quat_rotate(q, c)
    return q, t, np.full(3, float(scale) * float(extent))
