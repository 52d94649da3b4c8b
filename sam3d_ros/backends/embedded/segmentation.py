"""Embedded CPU segmentation: RGB-D + geometric prompts → object masks, no learned weights.

The backend works on the pointmap (camera optical frame, metres, NaN = invalid):

1. the dominant support plane is fitted once per frame (RANSAC on a subsampled pointmap, see
   :mod:`sam3d_ros.core.support_plane`); points within a few millimetres of it (or below it) are
   "support", everything above it is a foreground candidate;
2. foreground candidates are split into depth-connected regions on the pixel grid: a pixel that
   has a 4-neighbour nearer to the camera by more than a range-dependent jump is the far side of
   a depth discontinuity and is cut, the rest is labelled with 4-connectivity
   (``scipy.ndimage.label``), then cut pixels rejoin the neighbour region they are continuous
   with. Two surfaces at different depths therefore never share a region;
3. prompts pick regions (a box: the region that best explains the box; points: the regions
   under the foreground clicks, split away from background clicks by 3D proximity);
4. pixels whose depth cannot decide (invalid depth, and the band of the object touching the
   plane) are added by colour: an object/background colour-histogram model, grown from the
   object only through such ambiguous pixels, then holes of invalid depth are filled.

With no prompt at all the backend segments the tabletop automatically: every region standing on
the support plane, inside its extent, of a plausible size, becomes one object (left to right).

Everything is vectorised numpy/scipy and deterministic (the RANSAC seed is fixed).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from sam3d_ros.backends.embedded.colour_depth_refine import refine_mask, within_boxes
from sam3d_ros.backends.masks import pass_through_masks
from sam3d_ros.core.depth_hygiene import object_depth
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.object_pool import map_objects, resolve_workers
from sam3d_ros.core.support_plane import Plane, fit_support_plane
from sam3d_ros.core.types import BoxPrompt, Frame, ObjectMask, ObjectPrompt, SegmentationQuery

TEXT_UNSUPPORTED = (
    "the embedded segmentation backend cannot read text prompts; use segmentation_backend "
    "'sam3' (needs the SAM 3 checkpoint) or give box_prompts/point_prompts/mask_urls"
)
NEEDS_DEPTH = (
    "the embedded backend needs depth (a pointmap or depth image) to segment from prompts or "
    "automatically; give pointmap_url/depth, or mask_urls, or use segmentation_backend 'sam3'"
)

_FOUR = ndimage.generate_binary_structure(2, 1)
_EIGHT = ndimage.generate_binary_structure(2, 2)


@dataclass
class _Window:
    """A rectangular crop ``[y0:y1, x0:x1]`` of the frame with its per-pixel data."""

    y0: int
    y1: int
    x0: int
    x1: int
    points: np.ndarray
    z: np.ndarray
    valid: np.ndarray
    height: np.ndarray
    rgb: np.ndarray

    @property
    def shape(self) -> Tuple[int, int]:
        return (self.y1 - self.y0, self.x1 - self.x0)


@dataclass
class _FrameContext:
    """Per-call data shared by every object of one ``segment`` call."""

    rgb: np.ndarray
    points: np.ndarray
    z: np.ndarray
    valid: np.ndarray
    plane: Optional[Plane]
    fx: Optional[float] = None
    cache: Dict[str, object] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def shape(self) -> Tuple[int, int]:
        return (int(self.z.shape[0]), int(self.z.shape[1]))

    def cached(self, key: str, compute: Callable[[], object]):
        """``compute()`` once per call of ``segment`` (objects segmented in parallel share it)."""
        with self._lock:
            if key not in self.cache:
                self.cache[key] = compute()
            return self.cache[key]


# Fewest pixels of a depth region that a click takes (smaller ones are noise specks).
MIN_CLICK_REGION_PX = 20


class EmbeddedSegmenter:
    """CPU segmentation from RGB-D and box / point prompts (no text), or automatic tabletop.

    Args:
        plane_threshold: inlier distance of the support-plane fit (metres).
        support_band: points less than this above the plane (metres) count as support; the
            band touching the plane is decided by colour.
        jump_abs: minimum depth jump (metres) between 4-neighbours that separates two surfaces.
        jump_rel: depth jump as a fraction of the range (used when larger than ``jump_abs``).
        margin: crop margin around a box, as a fraction of the box size...
        min_margin_px: ...and at least this many pixels.
        colour_radius: how far (pixels) colour may grow the mask through ambiguous pixels.
        plane_stride: pixel stride of the pointmap subsample the plane is fitted on.
        plane_iterations: RANSAC hypotheses of the support-plane fit.
        min_object_pixels: automatic mode: smallest object (pixels).
        max_object_height: automatic mode: tallest object above the plane (metres).
        part_gap: box prompts: other regions inside the box join the object when their 3D
            bounds are within this distance (metres) of it (parts of one object).
        attach_gap: point prompts and automatic mode: smaller regions touching the object in
            the image and within this 3D distance (metres) are parts of it.
        rim_tolerance: point prompts: a touching region whose top lies within this height
            (metres) of the clicked region's and which is seen over it is the other side of an
            open container (a bowl's inside and its front wall)...
        rim_jump: ...when the depth steps by at least this much (metres) across the rim (a
            container's width: 7–8 cm on the real frames' mug and bowls; a shallow bowl seen
            from high above, rim 4 cm over its bottom, about 4 cm)...
        wall_lean: ...and the nearer region's top edge lies at most this far (metres) behind
            its base: a wall, not a solid showing its top face (see
            :meth:`_container_partners`).
        max_object_size: the largest graspable object (metres): a click's object lies within
            it of the click (the colour refinement's reach), a clicked patch of the support
            band wider than it is the support itself (refused), not a flat part of an object,
            and a click whose region comes out wider than it is refused (several objects run
            together, or none).
        seed: RANSAC seed (results are deterministic for a given seed).
        colour_refine: refine prompted masks on colour with depth-certain labels
            (:mod:`~sam3d_ros.backends.embedded.colour_depth_refine`; real cameras' depth outlines
            are
            shifted and smeared against the colour image).
        workers: prompted objects segmented at once on this many threads (0 or ``"auto"``:
            the cores, at most four; :mod:`~sam3d_ros.core.object_pool`); the masks are the
            same whatever the count.
    """

    name = "embedded"
    reads_text = False

    def __init__(
        self,
        plane_threshold: float = 0.006,
        support_band: float = 0.007,
        jump_abs: float = 0.01,
        jump_rel: float = 0.02,
        margin: float = 0.15,
        min_margin_px: int = 8,
        colour_radius: int = 4,
        plane_stride: int = 4,
        plane_iterations: int = 160,
        min_object_pixels: int = 150,
        max_object_height: float = 0.6,
        part_gap: float = 0.03,
        attach_gap: float = 0.025,
        rim_tolerance: float = 0.015,
        rim_jump: float = 0.04,
        wall_lean: float = 0.01,
        max_object_size: float = 0.35,
        seed: int = 0,
        colour_refine: bool = True,
        workers=1,
    ):
        self.workers = resolve_workers(workers)
        self.colour_refine = bool(colour_refine)
        self.plane_threshold = float(plane_threshold)
        self.support_band = float(support_band)
        self.jump_abs = float(jump_abs)
        self.jump_rel = float(jump_rel)
        self.margin = float(margin)
        self.min_margin_px = int(min_margin_px)
        self.colour_radius = int(colour_radius)
        self.plane_stride = max(1, int(plane_stride))
        self.plane_iterations = int(plane_iterations)
        self.min_object_pixels = int(min_object_pixels)
        self.max_object_height = float(max_object_height)
        self.part_gap = float(part_gap)
        self.attach_gap = float(attach_gap)
        self.rim_tolerance = float(rim_tolerance)
        self.rim_jump = float(rim_jump)
        self.wall_lean = float(wall_lean)
        self.max_object_size = float(max_object_size)
        self.seed = int(seed)

    # ------------------------------------------------------------------------------------
    # public API
    # ------------------------------------------------------------------------------------

    def segment(self, frame: Frame, query: SegmentationQuery) -> List[ObjectMask]:
        """Return one mask per object, following the hosted precedence.

        Masks are passed through (validated); else each :class:`ObjectPrompt` gives one object;
        else a text prompt is refused (this backend cannot read text); else the tabletop is
        segmented automatically.

        Raises:
            InputError: invalid masks, prompts outside the image, a text-only prompt, or
                missing depth.
        """
        if query.masks:
            return pass_through_masks(frame, query.masks)
        if not query.objects and query.text:
            raise InputError("prompt", TEXT_UNSUPPORTED)
        ctx = self._context(frame)
        if query.objects:
            return map_objects(lambda prompt: self._segment_object(ctx, prompt), query.objects,
                               self.workers)
        return self._automatic(ctx)

    def support_plane(self, frame: Frame) -> Optional[Plane]:
        """The support plane this backend uses for ``frame`` (``None`` when there is none)."""
        return self._context(frame).plane


    # ------------------------------------------------------------------------------------
    # per-frame context
    # ------------------------------------------------------------------------------------

    def _context(self, frame: Frame) -> _FrameContext:
        if frame.points is None:
            raise InputError("pointmap_url", NEEDS_DEPTH)
        pts = np.asarray(frame.points)
        if pts.shape != (frame.height, frame.width, 3):
            raise InputError(
                "pointmap_url",
                f"pointmap shape {pts.shape} does not match the image "
                f"({frame.height}×{frame.width}×3 expected)",
            )
        pts = pts.astype(np.float32, copy=False)
        z = pts[:, :, 2]
        with np.errstate(invalid="ignore"):
            valid = (z > 0) & (z < np.inf)  # NaN compares False
        s = self.plane_stride
        plane = fit_support_plane(
            pts[::s, ::s],
            threshold=self.plane_threshold,
            valid=valid[::s, ::s],
            iterations=self.plane_iterations,
            max_points=2000,
            refine_points=6000,
            refine_iterations=2,
            min_inliers=max(50, int(0.05 * valid[::s, ::s].sum())),
            rng=self.seed,
        )
        rgb = np.asarray(frame.rgb)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        rgb = rgb[:, :, :3]
        if rgb.dtype != np.uint8:
            scale = 255.0 if rgb.dtype.kind == "f" and float(np.nanmax(rgb)) <= 1.0 else 1.0
            rgb = np.clip(np.nan_to_num(rgb.astype(np.float64) * scale), 0, 255).astype(np.uint8)
        fx = None if frame.intrinsics is None else float(frame.intrinsics.fx)
        return _FrameContext(rgb=rgb, points=pts, z=z, valid=valid, plane=plane, fx=fx)

    def _window(self, ctx: _FrameContext, y0: int, y1: int, x0: int, x1: int) -> _Window:
        h, w = ctx.shape
        y0, x0 = max(0, y0), max(0, x0)
        y1, x1 = min(h, y1), min(w, x1)
        pts = ctx.points[y0:y1, x0:x1]
        valid = ctx.valid[y0:y1, x0:x1]
        plane = ctx.plane
        if plane is None:
            plane = self._local_plane(pts, valid)
        if plane is None:
            height = np.where(valid, np.inf, np.nan).astype(np.float32)
        else:
            with np.errstate(invalid="ignore"):
                height = pts @ plane.normal.astype(np.float32) + np.float32(plane.offset)
        return _Window(
            y0=y0,
            y1=y1,
            x0=x0,
            x1=x1,
            points=pts,
            z=ctx.z[y0:y1, x0:x1],
            valid=valid,
            height=height,
            rgb=ctx.rgb[y0:y1, x0:x1],
        )

    def _local_plane(self, pts: np.ndarray, valid: np.ndarray) -> Optional[Plane]:
        """Fit a plane on the border ring of a crop (no frame-wide plane was found)."""
        h, w = valid.shape
        ring = np.zeros_like(valid)
        b = max(2, min(h, w) // 8)
        ring[:b] = ring[-b:] = True
        ring[:, :b] = ring[:, -b:] = True
        if int((ring & valid).sum()) < 60:
            return None
        plane = fit_support_plane(
            pts,
            threshold=self.plane_threshold,
            valid=ring & valid,
            min_inliers=max(30, int(0.3 * (ring & valid).sum())),
            rng=self.seed,
        )
        return plane

    # ------------------------------------------------------------------------------------
    # depth-connected regions
    # ------------------------------------------------------------------------------------

    def _jump(self, z: np.ndarray) -> np.ndarray:
        return np.maximum(np.float32(self.jump_abs), np.float32(self.jump_rel) * z)

    def _regions(self, win: _Window) -> Tuple[np.ndarray, int, np.ndarray]:
        """Depth-connected regions of the foreground candidates of ``win``.

        Returns ``(labels, n, fg)``: int32 labels (0 = none), their count, and the candidate mask.
        """
        with np.errstate(invalid="ignore"):
            fg = win.valid & (win.height > np.float32(self.support_band))
        z = np.where(fg, win.z, np.float32(np.inf)).astype(np.float32)
        h, w = z.shape
        cut = np.zeros((h, w), dtype=bool)
        # A pixel is cut when a neighbour is nearer by more than the jump at the neighbour.
        # ``lim`` = neighbour depth + its jump (inf where the neighbour is no candidate).
        lim_self = z + self._jump(z)
        neighbours = []
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nb = np.full((h, w), np.inf, dtype=np.float32)
            lim = np.full((h, w), np.inf, dtype=np.float32)
            ys = slice(max(0, -dy), h - max(0, dy))
            yd = slice(max(0, dy), h - max(0, -dy))
            xs = slice(max(0, -dx), w - max(0, dx))
            xd = slice(max(0, dx), w - max(0, -dx))
            nb[ys, xs] = z[yd, xd]
            lim[ys, xs] = lim_self[yd, xd]
            neighbours.append((nb, lim, ys, xs, yd, xd))
            with np.errstate(invalid="ignore"):
                cut |= z > lim
        keep = fg & ~cut
        labels, n = ndimage.label(keep, structure=_FOUR)
        labels = labels.astype(np.int32, copy=False)
        # Cut pixels rejoin the continuous neighbour region with the smallest depth difference.
        for _ in range(2):
            todo = fg & (labels == 0)
            if not todo.any():
                break
            best = np.full((h, w), np.inf, dtype=np.float32)
            best_label = np.zeros((h, w), dtype=np.int32)
            for nb, lim, ys, xs, yd, xd in neighbours:
                nb_label = np.zeros((h, w), dtype=np.int32)
                nb_label[ys, xs] = labels[yd, xd]
                with np.errstate(invalid="ignore"):
                    diff = np.abs(z - nb)
                    cont = diff <= lim - nb
                better = todo & (nb_label > 0) & cont & (diff < best)
                best[better] = diff[better]
                best_label[better] = nb_label[better]
            if not (best_label > 0).any():
                break
            labels = np.where(todo, best_label, labels)
        return labels, n, fg

    # ------------------------------------------------------------------------------------
    # colour refinement
    # ------------------------------------------------------------------------------------

    @staticmethod
    def _colour_index(rgb: np.ndarray) -> np.ndarray:
        q = (rgb >> 5).astype(np.int32)  # 8 bins per channel, 512 colours
        return (q[:, :, 0] << 6) | (q[:, :, 1] << 3) | q[:, :, 2]

    def _refine(
        self,
        win: _Window,
        core: np.ndarray,
        fg: np.ndarray,
        labels: np.ndarray,
        allowed: Optional[np.ndarray] = None,
        far_allowed: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """Grow ``core`` by colour through depth-ambiguous pixels, then fill invalid holes.

        Ambiguous pixels within ``colour_radius`` of the core join when their colour is likelier
        under the object's colour histogram than the surroundings'; up to three times as far
        (and inside ``far_allowed``) only when clearly likelier. ``allowed`` bounds everything.
        """
        if not core.any():
            return core
        cidx = self._colour_index(win.rgb)
        with np.errstate(invalid="ignore"):
            support_band = (
                win.valid
                & (win.height <= np.float32(self.support_band))
                & (win.height > -np.float32(self.support_band))
            )
        # Depth cannot decide: no depth, the band where objects touch the plane, cut pixels.
        ambiguous = ~win.valid | support_band | (fg & (labels == 0))
        if allowed is not None:
            ambiguous &= allowed
        # Chessboard distance to the core (one pass, cheaper than repeated dilations).
        dist = ndimage.distance_transform_cdt(~core, metric="chessboard")
        near = dist <= self.colour_radius
        far = dist <= 3 * self.colour_radius
        if far_allowed is not None:
            far &= far_allowed
        candidates = ambiguous & far & ~core
        grown = core
        if candidates.any():
            obj_hist = np.bincount(cidx[core], minlength=512).astype(np.float64)
            bg_sel = ~core
            bg_hist = np.bincount(cidx[bg_sel], minlength=512).astype(np.float64)
            p_obj = (obj_hist + 0.5) / (obj_hist.sum() + 256.0)
            p_bg = (bg_hist + 0.5) / (bg_hist.sum() + 256.0)
            # Close to the object a likelier colour suffices; further away it must be clear.
            ratio = (p_obj / p_bg)[cidx]
            accept = candidates & np.where(near, ratio > 1.0, ratio > 4.0)
            if accept.any():
                lab, _ = ndimage.label(core | accept, structure=_EIGHT)
                keep_ids = np.unique(lab[core])
                grown = np.isin(lab, keep_ids[keep_ids > 0])
        # Fill enclosed holes that are mostly invalid depth or tiny.
        filled = ndimage.binary_fill_holes(grown)
        holes = filled & ~grown
        if holes.any():
            hl, nh = ndimage.label(holes, structure=_FOUR)
            size = np.bincount(hl.ravel(), minlength=nh + 1)
            invalid = np.bincount(hl.ravel(), weights=(~win.valid).ravel(), minlength=nh + 1)
            fill = (invalid >= 0.5 * size) | (size <= 12)
            fill[0] = False
            grown = grown | fill[hl]
        return grown

    # ------------------------------------------------------------------------------------
    # prompts
    # ------------------------------------------------------------------------------------

    def _box_rect(self, ctx: _FrameContext, box: BoxPrompt, field_name: str):
        h, w = ctx.shape
        x0, y0, x1, y1 = int(box.x_min), int(box.y_min), int(box.x_max), int(box.y_max)
        if x1 < x0 or y1 < y0:
            raise InputError(field_name, f"box has x_max < x_min or y_max < y_min: {box}")
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(w - 1, x1), min(h - 1, y1)
        if x1 < x0 or y1 < y0:
            raise InputError(field_name, f"box {box} lies outside the {w}×{h} image")
        return x0, y0, x1, y1

    def _segment_object(self, ctx: _FrameContext, prompt: ObjectPrompt) -> ObjectMask:
        oid = int(prompt.object_id)
        h, w = ctx.shape
        pos_boxes = []
        neg_boxes = []
        for box in prompt.boxes:
            rect = self._box_rect(ctx, box, "box_prompts")
            (pos_boxes if int(getattr(box, "label", 1)) != 0 else neg_boxes).append(rect)
        fg_pts: List[Tuple[int, int]] = []
        bg_pts: List[Tuple[int, int]] = []
        for p in prompt.points:
            if not (0 <= int(p.x) < w and 0 <= int(p.y) < h):
                raise InputError(
                    "point_prompts", f"point ({p.x}, {p.y}) lies outside the {w}×{h} image"
                )
            (fg_pts if int(p.label) != 0 else bg_pts).append((int(p.x), int(p.y)))
        on_support: List[Tuple[int, int]] = []
        across_rim = None
        if pos_boxes:
            mask, score = self._segment_boxes(ctx, pos_boxes, fg_pts, bg_pts)
        elif fg_pts:
            mask, score, on_support, across_rim = self._segment_points(ctx, fg_pts, bg_pts)
        else:
            raise InputError(
                "point_prompts" if prompt.points else "box_prompts",
                f"object {oid} needs a foreground point or a box (only background prompts given)",
            )
        if on_support:
            # The support is no object to reconstruct or grasp: its pixels' colour model (a
            # wooden table's) took in every object of a like colour standing on it (ucn_0: a
            # cracker box, two bowls and a can in 1.4 m of "table" 0.86 m high). Refused for
            # this object alone; the engine goes on with the others.
            band_mm = round(1000 * self.support_band)
            return ObjectMask(
                object_id=oid, region=mask, score=0.0,
                refused=("point_prompts", (
                    f"object {oid}: {_the_clicks(on_support)} "
                    f"{'lie' if len(on_support) > 1 else 'lies'} on the support (the table, or "
                    f"something less than {band_mm} mm above it), not on an object standing "
                    "on it")))
        if self.colour_refine and mask.any():
            box = None
            if pos_boxes:
                box = (
                    min(r[0] for r in pos_boxes),
                    min(r[1] for r in pos_boxes),
                    max(r[2] for r in pos_boxes),
                    max(r[3] for r in pos_boxes),
                )
            mask = refine_mask(
                ctx.rgb, ctx.points, mask, ctx.plane, box=box, fg_points=fg_pts,
                bg_points=bg_pts, fx=ctx.fx, max_object_size=self.max_object_size,
                vouched=across_rim,
            )
        if pos_boxes:
            # The object lies in its box (the box's edge pixels may be a little off): what
            # depth or colour found beyond it belongs to something else.
            mask &= within_boxes(mask.shape, pos_boxes)
        for x0, y0, x1, y1 in neg_boxes:
            mask[y0 : y1 + 1, x0 : x1 + 1] = False
        if pos_boxes and not mask.any():
            # Nothing stands out from the support in the box (a box on the bare table, or on
            # a part without depth and without a colour of its own): no object to reconstruct.
            return ObjectMask(
                object_id=oid, region=mask, score=0.0,
                refused=("box_prompts", (
                    f"object {oid}: nothing but the support (the table) or pixels without depth "
                    f"inside {_the_boxes(pos_boxes)}"
                    + (" outside its negative boxes" if neg_boxes else "")
                    + ": draw the box around an object standing on the support, or check that "
                    "the depth covers it")))
        if mask.any():
            # A region wider than a graspable object is several objects run together
            # (touching, or joined by depth that a sensor's filter smoothed across their
            # edges: ucn_3's drill with the cracker box, a mug and a bowl, 0.4 m), no object
            # (the robot's base plate, a monitor, a box over the whole table), or depth in the
            # wrong unit (0.1 mm steps read as millimetres: everything 10x too large): refused
            # for this object alone, rather than a blob that a grasp planner and a planning
            # scene would take for one. Measured on the object's own depth (no flying pixels
            # spread along the viewing rays at its outline, no table that colour took in at
            # its base).
            body = object_depth(ctx.points, mask, ctx.plane, fill=False).reliable
            size = self._patch_size(ctx.points, body if body.any() else mask)
            if size > self.max_object_size:
                if pos_boxes:
                    field_name, what = "box_prompts", _the_boxes(pos_boxes)
                    advice = ("draw the box around one object; if every object comes out this "
                              "large, check the depth's unit (16UC1 = millimetres, 32FC1 = "
                              "metres)")
                else:
                    field_name, what = "point_prompts", _the_clicks(fg_pts)
                    advice = ("objects touching it could not be told apart, or it is no "
                              "object; draw a box around the object, or add a background "
                              "click (label 0) on what joined it")
                return ObjectMask(
                    object_id=oid, region=np.zeros_like(mask), score=0.0,
                    refused=(field_name, (
                        f"object {oid}: {what} selected a region {size:.2f} m across, more "
                        f"than a graspable object (max_object_size {self.max_object_size:g} "
                        f"m): {advice}")))
        return ObjectMask(object_id=oid, region=mask, label="", score=float(score))

    def _crop_around(self, ctx: _FrameContext, x0: int, y0: int, x1: int, y1: int) -> _Window:
        mx = max(self.min_margin_px, int(round(self.margin * (x1 - x0 + 1))))
        my = max(self.min_margin_px, int(round(self.margin * (y1 - y0 + 1))))
        return self._window(ctx, y0 - my, y1 + 1 + my, x0 - mx, x1 + 1 + mx)

    @staticmethod
    def _stats(labels: np.ndarray, n: int, weights: np.ndarray) -> np.ndarray:
        return np.bincount(labels.ravel(), weights=weights.ravel(), minlength=n + 1)

    def _seed_labels(
        self,
        win: _Window,
        labels: np.ndarray,
        pts: Sequence[Tuple[int, int]],
        radius: int = 6,
        colour_radius: int = 20,
        colour_tol: float = 40.0,
        counts: Optional[np.ndarray] = None,
    ) -> List[int]:
        """Region label under each point, snapped to a nearby region when it has none.

        A point off every region (no depth, or on the support band) takes the nearest region
        within ``radius`` pixels, or within ``colour_radius`` pixels when that region pixel has
        the point's colour (RGB distance below ``colour_tol``). With ``counts`` (pixels per
        label), regions smaller than :data:`MIN_CLICK_REGION_PX` count as none: noise specks.
        """
        if counts is not None:
            labels = np.where(counts[labels] >= MIN_CLICK_REGION_PX, labels, 0)
        out = []
        hh, ww = labels.shape
        for x, y in pts:
            cx, cy = x - win.x0, y - win.y0
            if not (0 <= cx < ww and 0 <= cy < hh):
                out.append(0)
                continue
            lab = int(labels[cy, cx])
            if lab == 0:
                ya, yb = max(0, cy - colour_radius), min(hh, cy + colour_radius + 1)
                xa, xb = max(0, cx - colour_radius), min(ww, cx + colour_radius + 1)
                patch = labels[ya:yb, xa:xb]
                yy, xx = np.nonzero(patch > 0)
                if yy.size:
                    d2 = (yy + ya - cy) ** 2 + (xx + xa - cx) ** 2
                    seed_rgb = (
                        win.rgb[max(0, cy - 1) : cy + 2, max(0, cx - 1) : cx + 2]
                        .reshape(-1, 3)
                        .astype(np.float32)
                        .mean(axis=0)
                    )
                    col = win.rgb[ya:yb, xa:xb][yy, xx].astype(np.float32)
                    cd = np.linalg.norm(col - seed_rgb, axis=1)
                    ok = (d2 <= radius * radius) | (cd < colour_tol)
                    if ok.any():
                        cand = np.flatnonzero(ok)
                        k = cand[np.lexsort((xx[cand], yy[cand], d2[cand]))[0]]
                        lab = int(patch[yy[k], xx[k]])
            out.append(lab)
        return out

    def _split_by_seeds(
        self,
        win: _Window,
        region: np.ndarray,
        fg_xy: Sequence[Tuple[int, int]],
        bg_xy: Sequence[Tuple[int, int]],
    ) -> np.ndarray:
        """Keep the part of ``region`` nearer (in 3D) to a foreground than a background seed."""
        if not bg_xy or not fg_xy:
            return region

        def seed_points(xy):
            out = []
            for x, y in xy:
                p = self._seed_point(win, x - win.x0, y - win.y0)
                if p is not None:
                    out.append(p)
            return np.array(out, dtype=np.float32).reshape(-1, 3)

        fg3, bg3 = seed_points(fg_xy), seed_points(bg_xy)
        if len(fg3) == 0 or len(bg3) == 0:
            return region
        ys, xs = np.nonzero(region & win.valid)
        p = win.points[ys, xs]
        d_fg = np.min(((p[:, None, :] - fg3[None]) ** 2).sum(-1), axis=1)
        d_bg = np.min(((p[:, None, :] - bg3[None]) ** 2).sum(-1), axis=1)
        out = np.zeros_like(region)
        out[ys[d_fg <= d_bg], xs[d_fg <= d_bg]] = True
        # Keep the pieces connected to a foreground seed.
        lab, _ = ndimage.label(out, structure=_FOUR)
        ids = {int(lab[y - win.y0, x - win.x0]) for x, y in fg_xy if self._inside(win, x, y)}
        ids.discard(0)
        if ids:
            out = np.isin(lab, sorted(ids))
        return out

    @staticmethod
    def _region_bounds(win: _Window, region: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Robust 3D axis-aligned bounds (2nd–98th percentile) of a region's points."""
        p = win.points[region & win.valid]
        if p.shape[0] == 0:
            return np.full(3, np.inf), np.full(3, -np.inf)
        lo, hi = np.percentile(p, [2.0, 98.0], axis=0)
        return lo.astype(np.float64), hi.astype(np.float64)

    @staticmethod
    def _inside(win: _Window, x: int, y: int) -> bool:
        return win.x0 <= x < win.x1 and win.y0 <= y < win.y1

    @staticmethod
    def _seed_point(win: _Window, cx: int, cy: int, radius: int = 4) -> Optional[np.ndarray]:
        hh, ww = win.valid.shape
        ya, yb = max(0, cy - radius), min(hh, cy + radius + 1)
        xa, xb = max(0, cx - radius), min(ww, cx + radius + 1)
        v = win.valid[ya:yb, xa:xb]
        if not v.any():
            return None
        pts = win.points[ya:yb, xa:xb][v]
        return np.median(pts, axis=0)

    def _segment_boxes(
        self,
        ctx: _FrameContext,
        rects: Sequence[Tuple[int, int, int, int]],
        fg_pts: Sequence[Tuple[int, int]],
        bg_pts: Sequence[Tuple[int, int]],
    ) -> Tuple[np.ndarray, float]:
        x0 = min(r[0] for r in rects)
        y0 = min(r[1] for r in rects)
        x1 = max(r[2] for r in rects)
        y1 = max(r[3] for r in rects)
        win = self._crop_around(ctx, x0, y0, x1, y1)
        labels, n, fg = self._regions(win)
        hh, ww = win.shape
        in_box = np.zeros((hh, ww), dtype=bool)
        box_hits = np.zeros(n + 1)
        for bx0, by0, bx1, by1 in rects:
            sl = (slice(by0 - win.y0, by1 + 1 - win.y0), slice(bx0 - win.x0, bx1 + 1 - win.x0))
            in_box[sl] = True
            box_hits += np.bincount(labels[sl].ravel(), minlength=n + 1) > 0
        box_area = int(in_box.sum())
        full = np.zeros(ctx.shape, dtype=bool)
        if n == 0:
            return full, 0.0
        total = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
        inside = self._stats(labels, n, in_box)
        yy, xx = np.mgrid[0:hh, 0:ww]
        sum_x = self._stats(labels, n, xx.astype(np.float64))
        sum_y = self._stats(labels, n, yy.astype(np.float64))
        total[0] = inside[0] = 0.0
        safe = np.maximum(total, 1.0)
        cxs, cys = sum_x / safe, sum_y / safe
        bcx = 0.5 * (x0 + x1) - win.x0
        bcy = 0.5 * (y0 + y1) - win.y0
        half_diag = 0.5 * np.hypot(x1 - x0 + 1, y1 - y0 + 1)
        centrality = 1.0 - 0.5 * np.minimum(1.0, np.hypot(cxs - bcx, cys - bcy) / half_diag)

        def scored(size):
            frac = inside / np.maximum(size, 1.0)
            score = inside * frac**2 * centrality * (box_hits / max(1, len(rects)))
            score[0] = -1.0
            score[inside < 1] = -1.0
            return frac, score

        frac, score = scored(total)
        cut = _cut_by_edge(labels, n)
        lead = int(np.argmax(score))
        runner_up = float(np.max(np.delete(score, lead), initial=-1.0))
        if cut[lead] and runner_up >= 0.01 * score[lead]:
            # The leading region reaches the crop's edge: it continues beyond, so its share
            # inside the box is smaller than the crop says (see _size_beyond_window). Asked
            # only when another region could take the lead. The secondary regions below are
            # then judged by these shares too (a cut neighbour is less inside the box).
            frac, score = scored(self._size_beyond_window(ctx, win, labels, total, cut,
                                                          (x0, y0, x1, y1)))

        fg_labels = [lab for lab in self._seed_labels(win, labels, fg_pts) if lab > 0]
        bg_labels = {lab for lab in self._seed_labels(win, labels, bg_pts) if lab > 0}
        if fg_labels:
            chosen = sorted(set(fg_labels))
            main = max(chosen, key=lambda k: (score[k], -k))
        else:
            order = np.argsort(-score, kind="stable")
            candidates = [int(k) for k in order if score[k] > 0 and k not in bg_labels]
            if not candidates:
                return full, 0.0
            main = candidates[0]
            chosen = [main]
        # Secondary regions: (almost) entirely inside the box and close to the main region in 3D
        # (parts split off by self-occlusion, e.g. a handle, or separate parts of one object).
        lo, hi = self._region_bounds(win, labels == main)
        min_size = max(20.0, 0.03 * total[main])
        for k in np.flatnonzero((frac >= 0.9) & (total >= min_size)):
            k = int(k)
            if k == 0 or k in chosen or k in bg_labels:
                continue
            klo, khi = self._region_bounds(win, labels == k)
            gap = np.maximum(0.0, np.maximum(klo - hi, lo - khi))
            # A large region entirely inside the box may be further away (a detached part).
            big_inside = frac[k] >= 0.97 and total[k] >= 0.15 * total[main]
            limit = 0.1 if big_inside else self.part_gap
            if float(np.linalg.norm(gap)) <= limit:
                chosen.append(k)
        stats = _RegionStats(labels, n, win)
        for j in self._attach_parts(stats, labels, chosen, exclude=sorted(bg_labels)):
            if frac[j] >= 0.5:
                chosen.append(j)
        region = np.isin(labels, [k for k in chosen if k not in bg_labels or k in fg_labels])
        region = self._split_by_seeds(win, region, fg_pts, bg_pts)
        allowed = ~np.isin(labels, [k for k in range(1, n + 1) if k not in chosen]) | ~fg
        box_slack = within_boxes(in_box.shape, rects, win.y0, win.x0)
        mask = self._refine(win, region, fg, labels, allowed=allowed, far_allowed=box_slack)
        mask_area = float(mask.sum())
        full[win.y0 : win.y1, win.x0 : win.x1] = mask
        if mask_area == 0:
            return full, 0.0
        in_frac = float((mask & in_box).sum()) / mask_area
        fill = min(1.0, float((mask & in_box).sum()) / max(1.0, 0.3 * box_area))
        return full, float(np.clip(in_frac * fill, 0.0, 1.0))

    def _size_beyond_window(self, ctx, win, labels, total, cut, box) -> np.ndarray:
        """``total`` with the regions ``cut`` by the crop's edge counted over a wider window.

        A region reaching the crop's edge continues beyond it: counted only in the crop, a
        neighbour reaching into the box looks mostly inside it and can outscore the object
        the box was drawn around (a soup can behind a cracker box of its colour: the box's
        top, 3.5k pixels of the crop, won over the can's 0.9k; the whole box is 27k). Such
        regions are counted again over the crop grown by the box's size on every side (the
        region there that holds most of the region's pixels).
        """
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        wide = self._window(ctx, win.y0 - bh, win.y1 + bh, win.x0 - bw, win.x1 + bw)
        wide_labels = self._regions(wide)[0]
        wide_total = np.bincount(wide_labels.ravel())
        dy, dx = win.y0 - wide.y0, win.x0 - wide.x0
        inner = wide_labels[dy:dy + labels.shape[0], dx:dx + labels.shape[1]]
        total = total.copy()
        for k in np.flatnonzero(cut):
            under = inner[labels == k]
            under = under[under > 0]
            if len(under):
                total[k] = max(total[k], wide_total[np.bincount(under).argmax()])
        return total

    def _segment_points(
        self,
        ctx: _FrameContext,
        fg_pts: Sequence[Tuple[int, int]],
        bg_pts: Sequence[Tuple[int, int]],
    ) -> Tuple[np.ndarray, float, List[Tuple[int, int]], Optional[np.ndarray]]:
        """The clicked object's mask, its score, the clicks refused as on the support, and more.

        The fourth item is the part joined across a container's rim (``None`` when none): the
        colour refinement keeps it, though it lies across a depth step from the clicks.
        """
        h, w = ctx.shape
        win = self._window(ctx, 0, h, 0, w)
        labels, n, fg = ctx.cached("regions", lambda: self._regions(win))  # type: ignore[misc]
        full = np.zeros((h, w), dtype=bool)
        stats = ctx.cached("stats", lambda: _RegionStats(labels, n, win))
        # A speck of a few pixels (noise above the support band, on a bowl's inside bottom) is
        # no region to snap to while the click has a region or a support patch of its own.
        fg_labels = sorted({lab for lab in self._seed_labels(win, labels, fg_pts,
                                                             counts=stats.count) if lab > 0})
        region = None
        across_rim = None
        if not fg_labels:
            # Clicks on the support band (or below it), or where nothing has depth. A patch of
            # the band that is neither the support's main part (the largest) nor wider than a
            # graspable object is a flat part of an object, taken with the colour around it
            # (the inside bottom of a cup or bowl seen from above); the support itself is
            # refused. The support's main part counts as such however little of it is seen
            # (a camera close over the table).
            def support_patches():
                with np.errstate(invalid="ignore"):
                    band = win.valid & (win.height <= np.float32(self.support_band))
                patches, n_patches = ndimage.label(band, structure=_FOUR)
                sizes = np.bincount(patches.ravel(), minlength=n_patches + 1)
                sizes[0] = 0
                return patches, int(np.argmax(sizes)) if n_patches else 0

            patches, main = ctx.cached("support_patches", support_patches)  # type: ignore[misc]
            ids = sorted({int(patches[y, x]) for x, y in fg_pts} - {0})
            small = [i for i in ids if i != main
                     and self._patch_size(win.points, patches == i) <= self.max_object_size]
            if ids and not small:
                return full, 0.0, [(x, y) for x, y in fg_pts if patches[y, x] > 0], None
            if small:
                region = np.isin(patches, small)
                for x, y in bg_pts:
                    if patches[y, x] > 0:
                        region &= patches != patches[y, x]
            else:  # no support under the clicks either: the specks they lie on or near
                fg_labels = sorted({lab for lab in self._seed_labels(win, labels, fg_pts)
                                    if lab > 0})
        if region is None:
            if not fg_labels:
                return full, 0.0, [], None
            bg_labels = {lab for lab in self._seed_labels(win, labels, bg_pts) if lab > 0}
            # A bowl's or mug's inside and its front wall are two depth regions (the rim is an
            # occluding edge), either the larger: a click on one takes the other.
            rims = self._container_partners(win, ctx.plane, stats, labels, fg_labels,
                                            exclude=sorted(bg_labels))
            if rims:
                across_rim = np.isin(labels, rims)
            fg_labels = sorted(set(fg_labels) | set(rims))
            parts = self._attach_parts(stats, labels, fg_labels, exclude=sorted(bg_labels))
            fg_labels = sorted(set(fg_labels) | set(parts))
            region = np.isin(labels, fg_labels)
            region = self._split_by_seeds(win, region, fg_pts, bg_pts)
        if not region.any():
            return full, 0.0, [], None
        ys, xs = np.nonzero(region)
        yl, yh, xl, xh = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
        sub = self._crop_around(ctx, xl, yl, xh, yh)
        sl = (slice(sub.y0, sub.y1), slice(sub.x0, sub.x1))
        sub_labels = labels[sl]
        chosen = np.isin(sub_labels, fg_labels)
        allowed = ~((sub_labels > 0) & ~chosen) | ~fg[sl]
        mask = self._refine(sub, region[sl], fg[sl], sub_labels, allowed=allowed)
        full[sl] = mask
        hits = sum(bool(full[y, x]) for x, y in fg_pts) / len(fg_pts)
        misses = sum(bool(full[y, x]) for x, y in bg_pts) / len(bg_pts) if bg_pts else 0.0
        score = float(np.clip(hits * (1.0 - misses), 0.0, 1.0))
        return full, score, [], across_rim

    @staticmethod
    def _patch_size(points: np.ndarray, patch: np.ndarray, stride: int = 4) -> float:
        """Largest side (metres) of a patch's camera-frame bounds, 2nd to 98th percentile.

        Seen across a diagonal it reads up to about a third more than the object's longest
        side (a 0.25 m cube: 0.33 m). A footprint on the table measured with turned rectangles
        reads the same from any side, but it read 10-15 % less on groups of touching objects
        (ucn_2/3: a cracker box with a drill, a bowl and a mug, 0.34 m, under the limit,
        against 0.39 m) and more on a labelled object (m2t2_1's bowl with the cup its mask
        took in: 0.31 m against 0.27 m): these bounds keep the two apart better.
        """
        ys, xs = np.nonzero(patch)
        pts = points[ys[::stride], xs[::stride]].reshape(-1, 3)
        pts = pts[np.isfinite(pts).all(axis=1)]
        if len(pts) == 0:
            return 0.0
        lo, hi = np.percentile(pts, [2, 98], axis=0)
        return float(np.max(hi - lo))

    # ------------------------------------------------------------------------------------
    # automatic tabletop segmentation
    # ------------------------------------------------------------------------------------

    def _automatic(self, ctx: _FrameContext) -> List[ObjectMask]:
        plane = ctx.plane
        if plane is None:
            return []
        h, w = ctx.shape
        win = self._window(ctx, 0, h, 0, w)
        labels, n, fg = self._regions(win)
        if n == 0:
            return []
        # Plane extent: the 2D bounds of the plane inliers in a plane basis.
        normal = plane.normal
        helper = np.array([1.0, 0.0, 0.0]) if abs(normal[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        e1 = np.cross(normal, helper)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(normal, e1)
        basis = np.stack([e1, e2], axis=1).astype(np.float32)
        s = self.plane_stride
        uv_plane = ctx.points[::s, ::s][plane.inliers] @ basis
        lo = np.percentile(uv_plane, 1, axis=0)
        hi = np.percentile(uv_plane, 99, axis=0)

        stats = _RegionStats(labels, n, win)
        count = stats.count
        uv_mean = stats.mean_points @ basis
        mains = []
        for k in np.argsort(-count, kind="stable"):
            k = int(k)
            c = int(count[k])
            if k == 0 or c < self.min_object_pixels:
                continue
            _, top = stats.height_quantiles(k)
            if top > self.max_object_height or top < 0.01:
                continue  # too tall (walls, people) or too flat
            if not (lo[0] <= uv_mean[k, 0] <= hi[0] and lo[1] <= uv_mean[k, 1] <= hi[1]):
                continue  # not above the table
            mains.append(k)
        # Largest first: each object takes the small adjacent parts close to it in 3D.
        owner = np.arange(n + 1)
        groups = []
        for k in mains:
            if owner[k] != k:
                continue
            parts = self._attach_parts(stats, labels, [k], taken=owner != np.arange(n + 1))
            owner[parts] = k
            # Standing on the plane: some part of the object reaches down to it.
            if min(stats.height_quantiles(j)[0] for j in [k] + parts) <= 0.03:
                groups.append([k] + parts)
        clusters = []
        for ids in groups:
            tot = float(count[ids].sum())
            cx = float((stats.mean_xy[ids, 0] * count[ids]).sum() / tot)
            cy = float((stats.mean_xy[ids, 1] * count[ids]).sum() / tot)
            clusters.append((cx, cy, ids))
        clusters.sort(key=lambda c: (c[0], c[1]))
        out = []
        for i, (_, _, ids) in enumerate(clusters):
            x0, y0, x1, y1 = stats.bbox(ids)
            sub = self._crop_around(ctx, x0, y0, x1, y1)
            sl = (slice(sub.y0, sub.y1), slice(sub.x0, sub.x1))
            sub_labels = labels[sl]
            chosen = np.isin(sub_labels, ids)
            allowed = ~((sub_labels > 0) & ~chosen) | ~fg[sl]
            mask = self._refine(sub, chosen, fg[sl], sub_labels, allowed=allowed)
            full = np.zeros((h, w), dtype=bool)
            full[sl] = mask
            score = float(np.clip(count[ids].sum() / max(1.0, float(mask.sum())), 0.0, 1.0))
            out.append(ObjectMask(object_id=i, region=full, label="", score=score))
        return out

    def _attach_parts(
        self,
        stats: "_RegionStats",
        labels: np.ndarray,
        ids: Sequence[int],
        taken: Optional[np.ndarray] = None,
        exclude: Sequence[int] = (),
        radius: int = 3,
    ) -> List[int]:
        """Smaller regions touching ``ids`` in the image and within ``attach_gap`` in 3D."""
        size = float(stats.count[list(ids)].sum())
        out = []
        for j in self._touching(stats, labels, ids, exclude, radius):
            if (taken is not None and taken[j]) or stats.count[j] >= 0.5 * size:
                continue
            out.append(j)
        return out

    def _touching(
        self,
        stats: "_RegionStats",
        labels: np.ndarray,
        ids: Sequence[int],
        exclude: Sequence[int] = (),
        radius: int = 3,
    ) -> List[int]:
        """Regions near ``ids``: within ``radius`` pixels and ``attach_gap`` in 3D, not excluded.

        The 3D gap is between axis-aligned bounds in the camera frame.
        """
        x0, y0, x1, y1 = stats.bbox(ids)
        hh, ww = labels.shape
        ya, yb = max(0, y0 - radius), min(hh, y1 + radius + 1)
        xa, xb = max(0, x0 - radius), min(ww, x1 + radius + 1)
        crop = labels[ya:yb, xa:xb]
        own = np.isin(crop, ids)
        near = ndimage.distance_transform_cdt(~own, metric="chessboard") <= radius
        lo = stats.lo[list(ids)].min(axis=0)
        hi = stats.hi[list(ids)].max(axis=0)
        out = []
        for j in np.unique(crop[near & ~own]):
            j = int(j)
            if j == 0 or j in exclude:
                continue
            gap = np.maximum(0.0, np.maximum(stats.lo[j] - hi, lo - stats.hi[j]))
            if float(np.linalg.norm(gap)) <= self.attach_gap:
                out.append(j)
        return out

    def _container_partners(
        self,
        win: _Window,
        plane: Optional[Plane],
        stats: "_RegionStats",
        labels: np.ndarray,
        ids: Sequence[int],
        exclude: Sequence[int] = (),
    ) -> List[int]:
        """Regions that make one open container with ``ids`` (its inside or its wall).

        A bowl's or mug's inside is seen over its front wall: it lies above the wall in the
        image, behind it across the rim, an occluding edge where the depth steps by about the
        container's width (7.3–7.9 cm on dof6_0's mug and dof6_8/9's bowls), and it reaches up
        to the wall's rim height. The wall is upright or flares out: its top edge lies over its
        base or in front of it (median −1.2 to −1.7 cm on those three), while an object of the
        same height standing behind another shows that one's top face over its front, its top
        edge one object-depth behind (+2.8 to +3.7 cm for ucn_2/3's mustard bottle and the
        can-on-a-box stack before it, whose step across is 13.6 cm). Either side may be the
        larger; :meth:`_attach_parts` joins only smaller regions, and the colour refinement
        would drop a part across the rim without being told. Nothing without a support plane.
        """
        ids = list(ids)
        top = max(stats.height_quantiles(i)[1] for i in ids)
        if plane is None or not np.isfinite(top):
            return []
        size = float(stats.count[ids].sum())
        lo, hi = stats.lo[ids].min(axis=0), stats.hi[ids].max(axis=0)
        z_own = float((stats.mean_points[ids, 2] * stats.count[ids]).sum() / max(size, 1.0))
        # "Over" is up in the image for an upright camera: the crops are turned so that the
        # table's normal points up in them (a wrist camera may be rolled).
        turns = _quarter_turns_to_up(plane)
        out = []
        for j in self._touching(stats, labels, ids, exclude):
            if stats.count[j] < MIN_CLICK_REGION_PX:
                continue
            if abs(stats.height_quantiles(j)[1] - top) > self.rim_tolerance:
                continue  # not one rim
            whole = np.maximum(hi, stats.hi[j]) - np.minimum(lo, stats.lo[j])
            if float(whole.max()) > self.max_object_size:
                continue
            bx0, by0, bx1, by1 = stats.bbox(ids + [j])
            sl = (slice(by0, by1 + 1), slice(bx0, bx1 + 1))
            own, other = np.isin(labels[sl], ids), labels[sl] == j
            wall, inside = (own, other) if stats.mean_points[j, 2] > z_own else (other, own)
            pts, wall, inside = (np.rot90(a, turns) for a in (win.points[sl], wall, inside))
            if (_rim_jump(pts, wall, inside) >= self.rim_jump
                    and _wall_lean(pts, wall, plane) <= self.wall_lean):
                out.append(j)
        return out


def _the_boxes(boxes: Sequence[Tuple[int, int, int, int]]) -> str:
    """``the box (x0, y0, x1, y1)`` / ``the boxes (…), (…)``, for refusals."""
    where = ", ".join(f"({x0}, {y0}, {x1}, {y1})" for x0, y0, x1, y1 in boxes)
    return f"the box{'es' if len(boxes) > 1 else ''} {where}"


def _the_clicks(points: Sequence[Tuple[int, int]]) -> str:
    """``the click at (x, y)`` / ``the clicks at (x, y), (x, y)``, for refusals."""
    where = ", ".join(f"({x}, {y})" for x, y in points)
    return f"the click{'s' if len(points) > 1 else ''} at {where}"


def _quarter_turns_to_up(plane: Plane) -> int:
    """Quarter turns (``np.rot90``'s ``k``) after which the plane's normal points up in an image.

    The normal in the optical frame, seen on the image plane, is ``(x, y)`` with y down: up
    is −y (0 turns), +x needs a quarter turn anticlockwise (1), +y two, −x three.
    """
    nx, ny = float(plane.normal[0]), float(plane.normal[1])
    if abs(ny) >= abs(nx):
        return 0 if ny <= 0 else 2
    return 1 if nx > 0 else 3


def _rim_jump(points: np.ndarray, wall: np.ndarray, inside: np.ndarray, gap_px: int = 8,
              min_columns: int = 5) -> float:
    """Median 3D step from ``wall``'s top edge to the ``inside`` pixel just above it.

    Per image column: the wall's topmost pixel and the lowest inside pixel above it, when
    they are at most ``gap_px`` rows apart (a band without depth may lie between). 0 when
    fewer than ``min_columns`` columns have both (the inside is not seen over the wall).
    """
    h = wall.shape[0]
    rows = np.arange(h)[:, None]
    top_wall = np.where(wall, rows, h).min(axis=0)
    low_inside = np.where(inside & (rows < top_wall[None, :]), rows, -1).max(axis=0)
    cols = np.flatnonzero((low_inside >= 0) & (top_wall < h) & (top_wall - low_inside <= gap_px))
    if cols.size < min_columns:
        return 0.0
    step = points[top_wall[cols], cols] - points[low_inside[cols], cols]
    return float(np.nanmedian(np.linalg.norm(step, axis=1)))


def _wall_lean(points: np.ndarray, wall: np.ndarray, plane: Plane, min_rows: int = 5) -> float:
    """Median horizontal offset (metres, away from the camera) of ``wall``'s top over its base.

    Per image column with at least ``min_rows`` rows of the region: its topmost pixel's point
    minus its lowest pixel's, along the horizontal viewing direction. About 0 for an upright
    wall, negative for a flared one (a bowl), an object-depth for a solid seen with its top face
    (the top's far edge). ``inf`` when no column has enough rows.
    """
    h = wall.shape[0]
    rows = np.arange(h)[:, None]
    top = np.where(wall, rows, h).min(axis=0)
    bottom = np.where(wall, rows, -1).max(axis=0)
    cols = np.flatnonzero((bottom >= 0) & (bottom - top >= min_rows))
    if cols.size == 0:
        return float("inf")
    p_top = points[top[cols], cols].astype(np.float64)
    p_bottom = points[bottom[cols], cols].astype(np.float64)
    n = np.asarray(plane.normal, dtype=np.float64)
    away = p_bottom - np.outer(p_bottom @ n, n)  # the camera is at the origin
    away /= np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-9)
    return float(np.nanmedian(np.einsum("ij,ij->i", p_top - p_bottom, away)))


class _RegionStats:
    """Per-region pixel counts, centroids, image boxes, 3D bounds and heights (vectorised)."""

    def __init__(self, labels: np.ndarray, n: int, win: _Window):
        h, w = labels.shape
        flat = labels.ravel()
        sel = np.flatnonzero(flat > 0)
        lab = flat[sel]
        order = np.argsort(lab, kind="stable")
        sel, lab = sel[order], lab[order]
        self.count = np.bincount(lab, minlength=n + 1)
        starts = np.searchsorted(lab, np.arange(n + 1))
        self._starts = starts
        self._ends = np.searchsorted(lab, np.arange(n + 1), side="right")
        ys, xs = np.divmod(sel, w)
        pts = win.points.reshape(-1, 3)[sel].astype(np.float64)
        self._height = win.height.ravel()[sel].astype(np.float64)
        c = np.maximum(self.count, 1)[:, None]
        self.mean_points = (
            np.stack(
                [np.bincount(lab, weights=pts[:, i], minlength=n + 1) for i in range(3)], axis=1
            )
            / c
        )
        self.mean_xy = (
            np.stack([np.bincount(lab, weights=v, minlength=n + 1) for v in (xs, ys)], axis=1) / c
        )
        nonempty = self.count > 0
        idx = starts[nonempty]
        self.lo = np.full((n + 1, 3), np.inf)
        self.hi = np.full((n + 1, 3), -np.inf)
        self.box = np.zeros((n + 1, 4), dtype=np.int64)
        if idx.size:
            self.lo[nonempty] = np.minimum.reduceat(pts, idx, axis=0)
            self.hi[nonempty] = np.maximum.reduceat(pts, idx, axis=0)
            self.box[nonempty, 0] = np.minimum.reduceat(xs, idx)
            self.box[nonempty, 1] = np.minimum.reduceat(ys, idx)
            self.box[nonempty, 2] = np.maximum.reduceat(xs, idx)
            self.box[nonempty, 3] = np.maximum.reduceat(ys, idx)

    def height_quantiles(self, k: int, q_low: float = 0.02, q_high: float = 0.98):
        """Robust lowest and highest height of region ``k`` above the plane (metres)."""
        hs = np.sort(self._height[self._starts[k] : self._ends[k]])
        c = hs.size
        return float(hs[int(q_low * (c - 1))]), float(hs[int(q_high * (c - 1))])

    def bbox(self, ids: Sequence[int]) -> Tuple[int, int, int, int]:
        """Image bounding box ``(x0, y0, x1, y1)`` (inclusive) of the union of regions."""
        b = self.box[list(ids)]
        return int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())


def _cut_by_edge(labels: np.ndarray, n: int) -> np.ndarray:
    """``(n + 1,)`` bool: which labels reach the array's edge (label 0 never)."""
    cut = np.zeros(n + 1, dtype=bool)
    cut[labels[0]] = cut[labels[-1]] = True
    cut[labels[:, 0]] = cut[labels[:, -1]] = True
    cut[0] = False
    return cut
