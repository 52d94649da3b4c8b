"""Data types shared by the ROS-free core, its backends and the ROS node.

Everything here is plain numpy + dataclasses so the core runs without ROS.

Units and frames (see :mod:`sam3d_ros.core.conventions` for the single source of truth):

* pixel coordinates: ``(x, y)`` = (column, row), origin at the top-left pixel centre;
* 3D points: metres, camera optical frame (x right, y down, z forward, REP 103);
* quaternions: ``[x, y, z, w]`` (ROS / hosted-schema order);
* canonical object frame: centred on the object, axes = the object's pose axes, coordinates
  divided by the object's (isotropic) scale, so the object fits in ``[-0.5, 0.5]^3``.
  ``p_camera = R(q) @ (scale * p_canonical) + translation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

MAX_OBJECT_ID = 2**31 - 1
"""Object ids lie in ``[0, MAX_OBJECT_ID]``: they travel in int32 message fields."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an (undistorted) image, in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


@dataclass(frozen=True)
class PointPrompt:
    """A click at pixel (x, y); label 1 = foreground, 0 = background."""

    x: int
    y: int
    label: int = 1
    object_id: Optional[int] = None


@dataclass(frozen=True)
class BoxPrompt:
    """An axis-aligned box in pixels, corners inclusive; label 1 = object inside, 0 = exclude."""

    x_min: int
    y_min: int
    x_max: int
    y_max: int
    object_id: Optional[int] = None
    label: int = 1


@dataclass
class ObjectPrompt:
    """All geometric prompts that refine one object (one ``object_id``)."""

    object_id: int
    points: List[PointPrompt] = field(default_factory=list)
    boxes: List[BoxPrompt] = field(default_factory=list)


@dataclass
class Frame:
    """One RGB-D observation.

    Attributes:
        rgb: H×W×3 uint8, RGB order.
        points: H×W×3 float32 pointmap in the camera optical frame (metres); invalid = NaN.
            ``None`` when no depth/pointmap was given.
        intrinsics: pinhole intrinsics, when known (derived from the pointmap otherwise).
        camera_pose: 4×4 camera-to-world transform (identity when no world frame is given).
    """

    rgb: np.ndarray
    points: Optional[np.ndarray] = None
    intrinsics: Optional[CameraIntrinsics] = None
    camera_pose: np.ndarray = field(default_factory=lambda: np.eye(4))

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.rgb.shape[1])


@dataclass
class SegmentationQuery:
    """What to segment, in the hosted precedence order.

    Masks win, else geometric prompts, else the text prompt, else automatic segmentation.
    """

    masks: List[np.ndarray] = field(default_factory=list)
    objects: List[ObjectPrompt] = field(default_factory=list)
    text: Optional[str] = None


@dataclass(frozen=True, eq=False)
class MaskCrop:
    """A bool mask of an H×W image, kept as the crop of its bounding box.

    Memory follows the object, not the image: a 1280×720 mask is 0.9 MB in full, and a frame
    of many small objects would otherwise hold one such array per object in every result.
    An empty mask is a 0×0 crop. Build one with :meth:`of`.

    Attributes:
        pixels: h×w bool, the mask inside its bounding box (rows ``top:top+h``,
            columns ``left:left+w`` of the image).
        top, left: the box's first row and column in the image.
        image_shape: ``(H, W)`` of the image the mask belongs to.
    """

    pixels: np.ndarray
    top: int
    left: int
    image_shape: Tuple[int, int]

    @classmethod
    def of(cls, mask) -> "MaskCrop":
        """The crop of an H×W mask (any array-like; non-zero = inside); a MaskCrop is kept."""
        if isinstance(mask, MaskCrop):
            return mask
        arr = np.asarray(mask)
        if arr.ndim != 2:
            raise ValueError(f"a mask is an H×W array, got shape {arr.shape}")
        arr = arr.astype(bool, copy=False)
        shape = (int(arr.shape[0]), int(arr.shape[1]))
        rows = np.flatnonzero(arr.any(axis=1))
        if rows.size == 0:
            return cls(np.zeros((0, 0), bool), 0, 0, shape)
        cols = np.flatnonzero(arr.any(axis=0))
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        pixels = arr[r0:r1, c0:c1].copy()
        pixels.flags.writeable = False  # shared by the results that hold it
        return cls(pixels, r0, c0, shape)

    @property
    def shape(self) -> Tuple[int, int]:
        """The image's ``(H, W)`` (what ``np.shape`` of the full mask would say)."""
        return self.image_shape

    @property
    def bbox(self) -> Tuple[int, int, int, int]:
        """``(row0, row1, col0, col1)`` of the crop, ends exclusive."""
        h, w = self.pixels.shape
        return self.top, self.top + h, self.left, self.left + w

    @property
    def area(self) -> int:
        """Number of pixels inside the mask."""
        return int(np.count_nonzero(self.pixels))

    def any(self) -> bool:
        """Whether the mask has a pixel."""
        return bool(self.pixels.any())

    def full(self, writeable: bool = True) -> np.ndarray:
        """The H×W bool mask (a new array; read-only unless ``writeable``)."""
        out = np.zeros(self.image_shape, dtype=bool)
        r0, r1, c0, c1 = self.bbox
        out[r0:r1, c0:c1] = self.pixels
        out.flags.writeable = writeable
        return out

    def window(self, pad: int) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
        """The mask on its box grown by ``pad`` pixels (clipped to the image), and that box.

        Returns ``(mask, (row0, row1, col0, col1))`` with ``mask`` the (row1-row0)×(col1-col0)
        bool array (a new array). An empty mask gives a 0×0 array.
        """
        if self.pixels.size == 0:
            return np.zeros((0, 0), bool), (0, 0, 0, 0)
        h, w = self.image_shape
        r0, r1, c0, c1 = self.bbox
        box = (max(r0 - pad, 0), min(r1 + pad, h), max(c0 - pad, 0), min(c1 + pad, w))
        return self.over(box), box

    def over(self, box: Tuple[int, int, int, int]) -> np.ndarray:
        """The mask on the image window ``(row0, row1, col0, col1)``, ends exclusive.

        A new array; the window may reach past the image (the mask is False there).
        """
        a0, a1, b0, b1 = (int(v) for v in box)
        out = np.zeros((max(a1 - a0, 0), max(b1 - b0, 0)), dtype=bool)
        r0, r1, c0, c1 = self.bbox
        i0, i1, j0, j1 = max(r0, a0), min(r1, a1), max(c0, b0), min(c1, b1)
        if i0 < i1 and j0 < j1:
            out[i0 - a0:i1 - a0, j0 - b0:j1 - b0] = self.pixels[i0 - r0:i1 - r0, j0 - c0:j1 - c0]
        return out

    def contains(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether each pixel ``(rows[i], cols[i])`` is in the mask (False off the image)."""
        rows, cols = np.asarray(rows), np.asarray(cols)
        r0, r1, c0, c1 = self.bbox
        inside = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
        out = np.zeros(inside.shape, dtype=bool)
        out[inside] = self.pixels[rows[inside] - r0, cols[inside] - c0]
        return out

    def paste_into(self, target: np.ndarray) -> None:
        """OR the mask into an H×W bool array in place."""
        r0, r1, c0, c1 = self.bbox
        target[r0:r1, c0:c1] |= self.pixels


class _HoldsRegion:
    """``region`` is always a :class:`MaskCrop`: an H×W array given (or assigned) is cropped."""

    region: MaskCrop

    def __setattr__(self, name: str, value) -> None:
        if name == "region":
            value = MaskCrop.of(value)
        super().__setattr__(name, value)

    @property
    def mask(self) -> np.ndarray:
        """The H×W bool mask, read-only, built on demand.

        Per-frame work reads :attr:`region`; a new mask is a new :attr:`region`.
        """
        return self.region.full(writeable=False)


@dataclass(eq=False)
class ObjectMask(_HoldsRegion):
    """One segmented object: its mask (kept as a crop; an H×W array given is cropped).

    ``refused``: why the segmenter found nothing to reconstruct for this object's prompt
    (``(field, reason)``, e.g. a click on the table; the region is then empty): the engine
    reports it among the failed objects and goes on with the others.
    """

    object_id: int
    region: MaskCrop
    label: str = ""
    score: float = 1.0
    refused: Optional[Tuple[str, str]] = None


@dataclass
class Gaussians:
    """3D Gaussians (SH degree 0) in some frame, stated by whoever holds them.

    Attributes:
        means: N×3 float32 centres.
        scales: N×3 float32 standard deviations (linear, not log), same units as ``means``.
        rotations: N×4 float32 unit quaternions ``[x, y, z, w]``.
        colors: N×3 float32 RGB in [0, 1].
        opacities: N float32 in (0, 1) (linear, not logit).
    """

    means: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    colors: np.ndarray
    opacities: np.ndarray

    def __len__(self) -> int:
        return int(self.means.shape[0])


@dataclass
class Mesh:
    """Triangle mesh with per-vertex colours.

    Attributes:
        vertices: V×3 float32.
        faces: F×3 int32, counter-clockwise seen from outside.
        colors: V×3 uint8 RGB.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray


@dataclass
class ObjectReconstruction(_HoldsRegion):
    """One reconstructed object, in the frame contract of :mod:`sam3d_ros.core.conventions`.

    ``mesh`` and ``gaussians`` are in the canonical object frame; ``rotation`` ([x, y, z, w]),
    ``translation`` (metres) and ``scale`` map canonical to the camera optical frame.
    """

    object_id: int
    object_index: int
    mesh: Mesh
    gaussians: Gaussians
    rotation: np.ndarray
    translation: np.ndarray
    scale: np.ndarray
    region: MaskCrop
    """The object's mask on the image (a crop; an H×W array given is cropped)."""
    label: str = ""
    score: float = 1.0
    extents: Optional[np.ndarray] = None
    """Object size along its own axes in metres (the oriented bounding box), when known."""
    depth_pixels: Optional[MaskCrop] = None
    """The mask's pixels whose depth the backend took as the object's own (the depth
    hygiene's reliable pixels), when it has them: the published point cloud reuses them
    rather than run the hygiene again. ``None``: found when needed."""


@runtime_checkable
class SegmentationBackend(Protocol):
    """Turns a frame and a query into one mask per object."""

    name: str
    reads_text: bool

    def segment(self, frame: Frame, query: SegmentationQuery) -> List[ObjectMask]:
        """Return one mask per object. Raises InputError for unusable prompts."""
        ...


@runtime_checkable
class ReconstructionBackend(Protocol):
    """Turns a frame and masks into posed 3D objects."""

    name: str

    def reconstruct(
        self, frame: Frame, masks: Sequence[ObjectMask], seed: int
    ) -> List[ObjectReconstruction]:
        """Return one reconstruction per mask, in the same order.

        A backend that takes long per object calls
        :func:`sam3d_ros.core.cancellation.check_cancelled` between objects.
        """
        ...


@dataclass
class Grasp:
    """One parallel-jaw grasp, in the camera optical frame (the grasp contract).

    Grasp frame (see :func:`sam3d_ros.core.conventions.grasp_rotation`): origin = midpoint between
    the
    two fingertip contact points; +z = approach (the gripper moves along +z towards the object,
    fingers point along +z); +y = closing direction (the line between the fingers); +x = y × z.

    Attributes:
        position: (3,) grasp origin, metres.
        orientation: (4,) unit quaternion ``[x, y, z, w]`` of the grasp frame.
        width: opening at contact (distance between the two contacts), metres.
        score: quality in ``[0, 1]``, higher is better.
        object_id: the object grasped.
        contacts: (2, 3) the two contact points (at ``position ∓ width/2 · y``).
        contacts_observed: (2,) bool, whether each contact lies on observed (measured) surface
            rather than on the completed (hidden) part of the shape.
    """

    position: np.ndarray
    orientation: np.ndarray
    width: float
    score: float
    object_id: int = -1
    contacts: Optional[np.ndarray] = None
    contacts_observed: Optional[np.ndarray] = None

    def to_dict(self) -> Dict[str, object]:
        """The contract entry ``{"position", "orientation", "width", "score"}`` plus extras.

        Extras: ``contacts`` ([[x, y, z], [x, y, z]]) and ``contacts_observed`` ([bool, bool]).
        """
        out: Dict[str, object] = {
            "position": [float(v) for v in np.asarray(self.position).reshape(3)],
            "orientation": [float(v) for v in np.asarray(self.orientation).reshape(4)],
            "width": float(self.width),
            "score": float(self.score),
        }
        if self.contacts is not None:
            out["contacts"] = [[float(v) for v in row]
                               for row in np.asarray(self.contacts).reshape(2, 3)]
        if self.contacts_observed is not None:
            out["contacts_observed"] = [bool(v) for v in np.asarray(self.contacts_observed)]
        return out


@runtime_checkable
class GraspPlanner(Protocol):
    """Turns reconstructed objects (closed meshes in the frame contract) into grasps."""

    name: str

    def plan(
        self,
        frame: Frame,
        objects: Sequence[ObjectReconstruction],
        seed: int,
        support_plane: Optional[object] = None,
    ) -> List[List[Grasp]]:
        """Return, per object (same order), its grasps best first, in the camera optical frame.

        ``support_plane`` is anything with a unit ``normal`` (pointing to the camera side) and
        an ``offset`` (``normal · p + offset = 0``), e.g.
        :class:`sam3d_ros.core.support_plane.Plane`;
        ``None`` lets the planner fit it from ``frame.points``.
        """
        ...


StageTimings = Dict[str, float]
"""Seconds spent per pipeline stage (``load``, ``segment``, ``reconstruct``, ``grasp``,
``export``)."""
