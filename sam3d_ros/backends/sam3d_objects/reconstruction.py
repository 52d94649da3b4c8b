"""SAM 3D Objects reconstruction backend (``"sam3d_objects"``): adapter over Meta's reference code.

The user installs facebookresearch/sam-3d-objects themselves (its own conda environment, CUDA,
gated checkpoints; it is never vendored here). Its public inference API is
``notebook/inference.py``::

    inference = Inference(pipeline_yaml, compile=False)
    out = inference(image, mask, seed=seed, pointmap=pointmap)   # ONE object per call

This adapter calls it once per mask and converts each output into the frame contract of
:mod:`sam3d_ros.core.conventions`. Reference conventions (read from its source, main, Nov 2025):

* ``pointmap``: ``torch`` tensor H×W×3 in the **PyTorch3D camera frame** (+x left, +y up,
  +z forward), used as given (``compute_pointmap``); from the optical frame ``(x, y, z) →
  (−x, −y, z)``. Invalid points are NaN (their normaliser and intrinsics fit skip non-finite
  points). Without a pointmap the reference runs MoGe: pose and size are then not metric.
* ``rotation`` (1×4, **w x y z**), ``translation`` (1×3), ``scale`` (1×3, isotropic) map the
  object's local frame to the PyTorch3D camera with **row vectors** (``Transform3d().scale(s)
  .rotate(R).translate(t)``, ``R = quaternion_to_matrix(q)``): ``p_cam = (s ⊙ p) @ R + t``.
* ``gs``: Gaussians in the local frame: **Z-up**, inside the normalised box ``[-0.5, 0.5]^3``;
  ``get_xyz``, ``get_scaling`` (linear), ``get_rotation`` (unit, **w x y z**), ``get_opacity``
  (linear), ``_features_dc`` (N×1×3 SH degree-0 coefficients).
* ``glb``: ``trimesh.Trimesh`` of the same object, rotated to **Y-up** by
  ``vertices @ [[1, 0, 0], [0, 0, -1], [0, 1, 0]]`` = ``(x, y, z) → (x, z, −y)``, with vertex
  colours. Undo: ``(X, Y, Z) → (X, −Z, Y)`` (their ``layout_post_optimization_utils.get_mesh``).

Our canonical frame keeps the reference's local axes (Z-up object box) and re-centres /
re-scales them: ``p_local = c + e · p_canonical`` with ``c`` the centre of the object's box and
``e`` its largest extent, so the object fits ``[-0.5, 0.5]^3``. Then
``p_optical = R(q) · (scale ⊙ p_canonical) + t`` with ``R(q) = diag(−1, −1, 1) · R_refᵀ``,
``scale = s · e`` and ``t = R(q) · (s · c) + diag(−1, −1, 1) · t_ref``.

**Depth alignment.** The reference already aligns its layout to the pointmap (its layout
post-optimisation). When the frame has depth, this adapter checks the result once more and
corrects scale and position (:func:`align_to_depth`): the posed mesh's camera-visible surface
(z-buffered surface samples) and the mask's depth points are paired by nearest neighbours in
both directions, pairs beyond 2.5 × the median distance are trimmed, a least-squares scale ``k``
and translation ``d`` (``p ≈ k·m + d``, rotation kept) is solved in closed form, and this
repeats to convergence (a symmetric, trimmed ICP restricted to scale + translation). The
correction is kept only when it lowers the median distance of the depth points to the surface
by at least 20 % (less is the sampling noise of a pose that was already right).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from sam3d_ros.backends.sam3.segmentation import is_out_of_memory, release_gpu_memory
from sam3d_ros.core import conventions
from sam3d_ros.core.cancellation import check_cancelled
from sam3d_ros.core.conventions import posed_vertices
from sam3d_ros.core.depth_hygiene import object_depth
from sam3d_ros.core.errors import BackendError, BackendUnavailableError, InputError
from sam3d_ros.core.types import (
    CameraIntrinsics,
    Frame,
    Gaussians,
    Mesh,
    ObjectMask,
    ObjectReconstruction,
)

_LOG = logging.getLogger(__name__)

CONFIG_ENV = "SAM3D_OBJECTS_CONFIG"
"""Environment variable read when no ``pipeline_config`` is given."""

INSTALL_HELP = (
    "SAM 3D Objects is installed by the user (custom SAM License, NVIDIA GPU with >= 32 GB): "
    "clone facebookresearch/sam-3d-objects, follow its doc/setup.md (mamba env "
    "'sam3d-objects', pip install -e '.[dev]' '.[p3d]' '.[inference]', ./patching/hydra), "
    "request access to facebook/sam-3d-objects on Hugging Face and download the checkpoints to "
    "<repo>/checkpoints/hf/. Then run sam3d_ros inside that environment and pass "
    "pipeline_config:=<repo>/checkpoints/hf/pipeline.yaml (or set ${env})."
).format(env=CONFIG_ENV)

SH_C0 = 0.28209479177387814
"""Degree-0 spherical-harmonics constant: ``rgb = 0.5 + SH_C0 · f_dc``."""



# The reference-model conventions live in sam3d_ros.core.conventions (section "SAM 3D Objects").
optical_to_pytorch3d_pointmap = conventions.optical_to_sam3d_pointmap
sam3d_glb_to_local = conventions.sam3d_glb_to_local
sam3d_pose_to_optical = conventions.sam3d_pose_to_optical


# ------------------------------------------------------------------------------------------------
# output conversion
# ------------------------------------------------------------------------------------------------


def _np(x: Any) -> np.ndarray:
    """Tensor (any device / dtype) or array-like → float64 / native numpy array."""
    if hasattr(x, "detach"):
        x = x.detach()
        if x.is_floating_point():
            x = x.float()
        x = x.cpu().numpy()
    return np.asarray(x)


def _glb_geometry(glb: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (Y-up), faces and RGB uint8 vertex colours of the reference's ``glb``."""
    if hasattr(glb, "geometry") and not hasattr(glb, "faces"):  # a trimesh.Scene
        geoms = list(glb.geometry.values())
        if len(geoms) != 1:
            glb = glb.dump(concatenate=True)
        else:
            glb = geoms[0]
    vertices = np.asarray(glb.vertices, dtype=np.float64)
    faces = np.asarray(glb.faces, dtype=np.int64)
    colors = None
    visual = getattr(glb, "visual", None)
    if visual is not None:
        try:
            if getattr(visual, "kind", None) != "vertex" and hasattr(visual, "to_color"):
                visual = visual.to_color()
            vc = np.asarray(visual.vertex_colors)
            if vc.shape[0] == len(vertices) and vc.shape[1] >= 3:
                colors = vc[:, :3]
                if colors.dtype.kind == "f":
                    colors = np.clip(colors * 255.0 + 0.5, 0, 255)
                colors = colors.astype(np.uint8)
        except Exception:  # noqa: BLE001 - colours are cosmetic
            colors = None
    if colors is None:
        colors = np.full((len(vertices), 3), 180, np.uint8)
    return vertices, faces, colors


def _gaussians_local(gs: Any) -> Optional[dict]:
    """Arrays of the reference Gaussian object (local frame, ``[w, x, y, z]`` rotations)."""
    if gs is None:
        return None
    dc = _np(gs._features_dc).reshape(-1, 3)
    return {
        "means": _np(gs.get_xyz).reshape(-1, 3).astype(np.float64),
        "scales": _np(gs.get_scaling).reshape(-1, 3).astype(np.float64),
        "rotations_wxyz": _np(gs.get_rotation).reshape(-1, 4).astype(np.float64),
        "opacities": _np(gs.get_opacity).reshape(-1).astype(np.float64),
        "colors": np.clip(0.5 + SH_C0 * dc, 0.0, 1.0),
    }


def reference_output_to_object(
    out: dict, object_id: int, object_index: int, mask, label: str = "",
    score: float = 1.0,
) -> ObjectReconstruction:
    """Convert one SAM 3D Objects output dict into an :class:`ObjectReconstruction`.

    Mesh and Gaussians end up in OUR canonical frame (centred on the object's box, largest
    extent 1, reference local axes), the pose maps it to the camera optical frame.

    Raises:
        BackendError: the output lacks the pose or the mesh, or holds non-finite values.
    """
    for key in ("rotation", "translation", "scale"):
        if out.get(key) is None:
            raise BackendError(f"SAM 3D Objects output has no {key!r}")
    if out.get("glb") is None:
        raise BackendError("SAM 3D Objects output has no 'glb' mesh (decode_formats lacks mesh?)")
    q_opt, t_opt, s3 = sam3d_pose_to_optical(
        _np(out["rotation"]), _np(out["translation"]), _np(out["scale"])
    )
    if not (np.all(np.isfinite(q_opt)) and np.all(np.isfinite(t_opt)) and np.all(s3 > 0)):
        raise BackendError(f"SAM 3D Objects returned an invalid pose: scale {s3.tolist()}")
    if not np.allclose(s3, s3.mean(), rtol=1e-3):
        _LOG.warning("SAM 3D Objects returned an anisotropic scale %s; using its mean", s3)
    s = float(s3.mean())

    vertices_yup, faces, colors = _glb_geometry(out["glb"])
    local = sam3d_glb_to_local(vertices_yup)
    gs = _gaussians_local(out.get("gs"))
    ref = local if len(local) else (gs["means"] if gs is not None else np.zeros((1, 3)))
    lo, hi = ref.min(axis=0), ref.max(axis=0)
    centre = 0.5 * (lo + hi)
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0:
        raise BackendError("SAM 3D Objects returned a degenerate (empty or flat) object")

    q_opt, translation, scale3 = conventions.sam3d_local_to_canonical(
        q_opt, t_opt, s, centre, extent
    )
    mesh = Mesh(
        vertices=((local - centre) / extent).astype(np.float32),
        faces=faces.astype(np.int32),
        colors=colors,
    )
    if gs is not None:
        rot_xyzw = gs["rotations_wxyz"][:, [1, 2, 3, 0]]
        rot_xyzw = rot_xyzw / np.linalg.norm(rot_xyzw, axis=1, keepdims=True)
        gaussians = Gaussians(
            means=((gs["means"] - centre) / extent).astype(np.float32),
            scales=(gs["scales"] / extent).astype(np.float32),
            rotations=np.where(rot_xyzw[:, 3:4] < 0, -rot_xyzw, rot_xyzw).astype(np.float32),
            colors=gs["colors"].astype(np.float32),
            opacities=gs["opacities"].astype(np.float32),
        )
    else:
        gaussians = Gaussians(
            np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32),
            np.zeros((0, 4), np.float32), np.zeros((0, 3), np.float32), np.zeros(0, np.float32),
        )
    return ObjectReconstruction(
        object_id=int(object_id),
        object_index=int(object_index),
        mesh=mesh,
        gaussians=gaussians,
        rotation=q_opt,
        translation=translation,
        scale=scale3,
        region=mask,
        label=label,
        score=float(score),
        extents=(hi - lo) * s,
    )


# ------------------------------------------------------------------------------------------------
# depth alignment
# ------------------------------------------------------------------------------------------------


@dataclass
class Alignment:
    """Result of :func:`align_to_depth`: ``p_aligned = scale · p + translation``."""

    scale: float = 1.0
    translation: np.ndarray = None  # type: ignore[assignment]
    pairs: int = 0
    median_before: float = float("nan")
    median_after: float = float("nan")
    applied: bool = False

    def __post_init__(self) -> None:
        if self.translation is None:
            self.translation = np.zeros(3)


def pinhole_from_pointmap(points: np.ndarray) -> Optional[CameraIntrinsics]:
    """Least-squares pinhole intrinsics of an optical-frame pointmap (``None`` if too few)."""
    h, w = points.shape[:2]
    v, u = np.mgrid[0:h, 0:w]
    p = points.reshape(-1, 3).astype(np.float64)
    ok = np.all(np.isfinite(p), axis=1) & (p[:, 2] > 1e-6)
    if ok.sum() < 10:
        return None
    a, b = p[ok, 0] / p[ok, 2], p[ok, 1] / p[ok, 2]
    fx, cx = np.linalg.lstsq(np.stack([a, np.ones_like(a)], 1), u.reshape(-1)[ok], rcond=None)[0]
    fy, cy = np.linalg.lstsq(np.stack([b, np.ones_like(b)], 1), v.reshape(-1)[ok], rcond=None)[0]
    return CameraIntrinsics(float(fx), float(fy), float(cx), float(cy), int(w), int(h))


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0
) -> np.ndarray:
    """Area-weighted random points on a triangle mesh (deterministic for a seed)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if len(f) == 0:
        return v.copy()
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        return v.copy()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(f), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    flip = r1 + r2 > 1
    r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
    t = tri[idx]
    return t[:, 0] + r1[:, None] * (t[:, 1] - t[:, 0]) + r2[:, None] * (t[:, 2] - t[:, 0])


def visible_surface(samples: np.ndarray, k: CameraIntrinsics) -> Tuple[np.ndarray, np.ndarray]:
    """Z-buffer of surface samples: (flat pixel index, nearest sample) per covered pixel."""
    s = samples[samples[:, 2] > 1e-6]
    u = np.rint(k.fx * s[:, 0] / s[:, 2] + k.cx).astype(np.int64)
    v = np.rint(k.fy * s[:, 1] / s[:, 2] + k.cy).astype(np.int64)
    inside = (u >= 0) & (u < k.width) & (v >= 0) & (v < k.height)
    s, pix = s[inside], (v * k.width + u)[inside]
    order = np.lexsort((s[:, 2], pix))
    pix, s = pix[order], s[order]
    first = np.ones(len(pix), bool)
    first[1:] = pix[1:] != pix[:-1]
    return pix[first], s[first]


def align_to_depth(
    vertices: np.ndarray,
    faces: np.ndarray,
    mask: np.ndarray,
    points: np.ndarray,
    intrinsics: Optional[CameraIntrinsics] = None,
    iterations: int = 30,
    min_points: int = 30,
    samples: int = 40000,
    max_scale_change: float = 2.0,
    min_improvement: float = 0.2,
    occlusion_margin: float = 0.01,
) -> Alignment:
    """Scale + translation that make a posed mesh's visible surface match the mask's depth.

    The mesh is rendered into the camera (a z-buffer of area-weighted surface samples), which
    samples its visible surface once per pixel, as the pointmap samples the real one. The
    rendered points that should be seen are those inside the mask, plus those outside it where
    the scene is farther than the mesh (the mesh would be visible there: free space it must not
    fill); those behind nearer scene points (occluded) are ignored. Depth points of the mask
    farther than one object size from their median depth are dropped (flying pixels). Then the
    centroid and RMS spread of the rendered points are matched to those of the depth points —
    ``k = spread_depth / spread_mesh``, ``d = centroid_depth − k · centroid_mesh`` — and the mesh
    is re-rendered, until it converges. A scale about the camera centre leaves the silhouette
    unchanged and scales every point, so depth fixes it; a wrong size in the image changes the
    rendered footprint, so the silhouette fixes it. The depth points are the mask's reliable
    ones (:func:`~sam3d_ros.core.depth_hygiene.object_depth`).

    Args:
        vertices: V×3 posed mesh vertices, optical frame (metres).
        faces: F×3 triangles.
        mask: H×W bool object mask.
        points: H×W×3 optical-frame pointmap (NaN = invalid).
        intrinsics: camera intrinsics; fitted from ``points`` when ``None``.
        iterations: at most this many render-and-match rounds.
        min_points: fewer valid depth (or rendered) points than this → no alignment.
        samples: surface samples used to render the mesh.
        max_scale_change: a fitted scale outside ``[1/x, x]`` is rejected as implausible.
        min_improvement: the correction is applied only when it lowers the median distance of
            the depth points to the rendered surface by at least this fraction (less is the
            sampling noise of a pose that was already right).
        occlusion_margin: a scene point this much nearer than the mesh occludes it (metres).

    Returns:
        :class:`Alignment` (``applied`` False when it did not improve enough or could not
        run).
    """
    from scipy.spatial import cKDTree

    result = Alignment()
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    valid = np.all(np.isfinite(pts), axis=1) & (pts[:, 2] > 0)
    in_mask = np.asarray(mask, bool).reshape(-1)
    k = intrinsics or pinhole_from_pointmap(np.asarray(points))
    if k is None or (in_mask & valid).sum() < min_points:
        return result
    surf = sample_surface(vertices, faces, samples)
    size = float(np.ptp(surf, axis=0).max()) if len(surf) else 0.0
    if size <= 0:
        return result
    # The object's own depth (:mod:`~sam3d_ros.core.depth_hygiene`): a real mask's edge carries
    # background depth and smears that would pull the scale and offset. The outline is kept
    # (no erosion): the rendered surface is compared pixel for pixel with the same set.
    reliable = object_depth(
        np.asarray(points), np.asarray(mask, bool), erode_px=0, edge_px=0, fill=False
    ).reliable.reshape(-1)
    if reliable.sum() < min_points:
        reliable = in_mask & valid
    data = pts[reliable]
    z_med = float(np.median(data[:, 2]))
    scene_z = np.where(valid, pts[:, 2], np.inf)

    def rendered(cur: np.ndarray, scale: float) -> np.ndarray:
        pix, vis = visible_surface(cur, k)
        occluded = ~in_mask[pix] & (scene_z[pix] < vis[:, 2] - occlusion_margin)
        # Inside the mask, compare like with like: only where the depth was kept.
        return vis[~occluded & (~in_mask[pix] | reliable[pix])]

    def median_distance(vis: np.ndarray) -> float:
        return float(np.median(cKDTree(vis).query(data)[0]))

    vis = rendered(surf, 1.0)
    if len(vis) < min_points:
        return result
    result.median_before = median_distance(vis)
    total_k, total_d = 1.0, np.zeros(3)
    for _ in range(max(1, iterations)):
        band = np.abs(data[:, 2] - z_med) <= size * total_k
        d = data[band] if band.sum() >= min_points else data
        spread_d = float(np.sqrt(((d - d.mean(0)) ** 2).sum(1).mean()))
        spread_m = float(np.sqrt(((vis - vis.mean(0)) ** 2).sum(1).mean()))
        if spread_m <= 0:
            break
        kk = spread_d / spread_m
        dd = d.mean(0) - kk * vis.mean(0)
        total_k, total_d = kk * total_k, kk * total_d + dd
        vis = rendered(total_k * surf + total_d, total_k)
        if len(vis) < min_points:
            return result
        if abs(kk - 1.0) < 1e-5 and float(np.linalg.norm(dd)) < 1e-6:
            break
    result.median_after = median_distance(vis)
    result.pairs = len(data)
    plausible = 1.0 / max_scale_change <= total_k <= max_scale_change
    if plausible and result.median_after < (1.0 - min_improvement) * result.median_before:
        result.scale, result.translation, result.applied = total_k, total_d, True
    return result


def apply_alignment(obj: ObjectReconstruction, alignment: Alignment) -> ObjectReconstruction:
    """Compose ``p ↦ k·p + d`` onto an object's pose (canonical geometry is unchanged)."""
    if alignment.applied:
        obj.scale = np.asarray(obj.scale, dtype=np.float64) * alignment.scale
        obj.translation = alignment.scale * np.asarray(obj.translation) + alignment.translation
        if obj.extents is not None:
            obj.extents = np.asarray(obj.extents) * alignment.scale
    return obj


# ------------------------------------------------------------------------------------------------
# the backend
# ------------------------------------------------------------------------------------------------


def _default_inference_factory(pipeline_config: str, compile: bool) -> Any:
    """Import ``notebook/inference.py`` of the user's sam-3d-objects checkout and build it."""
    config = Path(pipeline_config)
    notebook = None
    for parent in config.resolve().parents:
        if (parent / "notebook" / "inference.py").is_file():
            notebook = parent / "notebook"
            break
    if notebook is None:
        raise BackendUnavailableError(
            f"no notebook/inference.py above {str(config)!r}: pipeline_config must be the "
            f"pipeline.yaml inside a sam-3d-objects checkout. {INSTALL_HELP}"
        )
    if "CONDA_PREFIX" not in os.environ:
        raise BackendUnavailableError(
            "SAM 3D Objects' notebook/inference.py reads $CONDA_PREFIX at import: run inside "
            f"its conda environment. {INSTALL_HELP}"
        )
    if str(notebook) not in sys.path:
        sys.path.insert(0, str(notebook))
    try:
        from inference import Inference  # the reference's notebook/inference.py
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
        raise BackendUnavailableError(
            f"cannot import SAM 3D Objects ({type(exc).__name__}: {exc}); it needs an NVIDIA "
            f"GPU and its own environment. {INSTALL_HELP}"
        ) from exc
    return Inference(str(config), compile=compile)


class Sam3dObjectsReconstructor:
    """SAM 3D Objects (one reference call per mask) in the sam3d_ros frame contract.

    Args:
        pipeline_config: ``<sam-3d-objects>/checkpoints/hf/pipeline.yaml`` (default:
            ``$SAM3D_OBJECTS_CONFIG``).
        compile: ``torch.compile`` the reference models (slow warm-up, faster calls).
        align_depth: check/correct scale and translation against the mask's depth points
            (see the module docstring); needs a pointmap in the frame.
        alignment_iterations: rounds of the depth alignment.
        inference_factory: ``factory(pipeline_config, compile) → callable`` with the reference
            ``Inference.__call__(image, mask, seed=..., pointmap=...)`` signature. The default
            imports the user's ``notebook/inference.py``; tests inject a contract fake.
    """

    name = "sam3d_objects"

    def __init__(
        self,
        pipeline_config: Optional[str] = None,
        compile: bool = False,
        align_depth: bool = True,
        alignment_iterations: int = 30,
        inference_factory: Optional[Callable[[str, bool], Any]] = None,
    ):
        if pipeline_config is None:
            pipeline_config = os.environ.get(CONFIG_ENV) or None
        self.pipeline_config = None if pipeline_config is None else str(pipeline_config)
        self.compile = bool(compile)
        self.align_depth = bool(align_depth)
        if int(alignment_iterations) < 1:
            raise InputError("alignment_iterations", "must be at least 1")
        self.alignment_iterations = int(alignment_iterations)
        self._factory = inference_factory or _default_inference_factory
        self._inference: Any = None
        self._lock = threading.RLock()
        self.last_alignments: List[Alignment] = []

    @property
    def loaded(self) -> bool:
        """Whether the reference pipeline is in memory."""
        return self._inference is not None

    def load(self) -> None:
        """Build the reference pipeline (idempotent; ~minutes: loads several GB of weights).

        Raises:
            BackendUnavailableError: no / missing config, package not importable (no GPU,
                wrong environment), or building the pipeline failed.
        """
        with self._lock:
            if self._inference is not None:
                return
            if not self.pipeline_config:
                raise BackendUnavailableError(f"no SAM 3D Objects pipeline_config. {INSTALL_HELP}")
            if not Path(self.pipeline_config).is_file():
                raise BackendUnavailableError(
                    f"SAM 3D Objects pipeline_config {self.pipeline_config!r} does not exist. "
                    f"{INSTALL_HELP}"
                )
            try:
                self._inference = self._factory(self.pipeline_config, self.compile)
            except BackendUnavailableError:
                raise
            except Exception as exc:  # noqa: BLE001
                release_gpu_memory()
                what = "ran out of GPU memory" if is_out_of_memory(exc) else (
                    f"failed: {type(exc).__name__}: {exc}"
                )
                raise BackendUnavailableError(
                    f"building SAM 3D Objects from {self.pipeline_config!r} {what}. {INSTALL_HELP}"
                ) from exc

    def unload(self) -> None:
        """Drop the reference pipeline and free its GPU memory."""
        with self._lock:
            self._inference = None
            release_gpu_memory()

    def reconstruct(
        self, frame: Frame, masks: Sequence[ObjectMask], seed: int
    ) -> List[ObjectReconstruction]:
        """One reference call per mask, converted to the frame contract, in mask order.

        Raises:
            InputError: a mask of the wrong shape or empty; a pointmap of the wrong shape.
            BackendUnavailableError: see :meth:`load`.
            BackendError: the reference failed (GPU OOM, exception, invalid output); GPU
                memory is released and the backend stays usable.
        """
        rgb = np.ascontiguousarray(np.asarray(frame.rgb)[:, :, :3], dtype=np.uint8)
        shape = (frame.height, frame.width)
        for i, m in enumerate(masks):
            if tuple(m.region.image_shape) != shape:
                raise InputError(f"masks[{i}]",
                                 f"mask shape {tuple(m.region.image_shape)} != image {shape}")
            if not m.region.any():
                raise InputError(f"masks[{i}]", f"mask of object {m.object_id} is empty")
        points = None if frame.points is None else np.asarray(frame.points, dtype=np.float32)
        if points is not None and points.shape != shape + (3,):
            raise InputError("pointmap_url", f"pointmap shape {points.shape} != {shape + (3,)}")
        if points is None:
            _LOG.warning("no pointmap: SAM 3D Objects estimates depth (MoGe); not metric")
        self.load()
        import torch

        pointmap = None
        if points is not None:
            pointmap = torch.from_numpy(optical_to_pytorch3d_pointmap(points))
        out_objects = []
        self.last_alignments = []
        with self._lock:
            for index, m in enumerate(masks):
                check_cancelled()  # minutes per object on a GPU: stop between objects
                mk = m.region.full()  # the model takes the whole image's mask, one at a time
                try:
                    out = self._inference(rgb, mk, seed=seed, pointmap=pointmap)
                    obj = reference_output_to_object(
                        out, m.object_id, index, m.region, label=m.label, score=m.score
                    )
                    del out
                except (InputError, BackendUnavailableError):
                    raise
                except Exception as exc:  # noqa: BLE001 - any failure → BackendError
                    release_gpu_memory()
                    what = "ran out of GPU memory" if is_out_of_memory(exc) else (
                        f"failed: {type(exc).__name__}: {exc}"
                    )
                    raise BackendError(
                        f"SAM 3D Objects {what} (object {m.object_id}, mask {index})"
                    ) from exc
                if points is not None and self.align_depth:
                    alignment = align_to_depth(
                        posed_vertices(obj), obj.mesh.faces, mk, points, frame.intrinsics,
                        iterations=self.alignment_iterations,
                    )
                    self.last_alignments.append(alignment)
                    if alignment.applied and (
                        abs(alignment.scale - 1) > 1e-3 or np.linalg.norm(alignment.translation)
                        > 1e-3
                    ):
                        _LOG.info(
                            "object %s: depth alignment scale ×%.4f, shift %s m (median %.4f → "
                            "%.4f m)", m.object_id, alignment.scale,
                            np.round(alignment.translation, 4), alignment.median_before,
                            alignment.median_after,
                        )
                    apply_alignment(obj, alignment)
                out_objects.append(obj)
        return out_objects
