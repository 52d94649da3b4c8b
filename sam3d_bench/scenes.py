"""Synthetic RGB-D tabletop scenes with ground truth, rendered with pybullet (CPU, headless).

``make_tabletop_scene(seed)`` builds a table, drops ``n_objects`` random objects from
``pybullet_data/random_urdfs`` (or, ``object_set="household"``, boxes, cans and bottles of YCB
sizes: :mod:`sam3d_bench.household`) onto it, lets physics settle, and renders RGB, depth and an
instance segmentation from a robot-head-like camera looking down at the table. Depth gets the
:class:`~sam3d_bench.sensor.SensorNoise` model.

Frames (same contract as the rest of the core):

* everything returned is in the camera OPTICAL frame (x right, y down, z forward), metres;
* ``camera_pose`` is the 4×4 camera-to-world transform (optical frame → world, world z up, the
  table top is the world plane ``z = 0``);
* pixel ``(u, v)`` = (column, row) with the origin at the centre of the top-left pixel, so a
  camera point projects to ``u = fx * x / z + cx``, ``v = fy * y / z + cy``.

Only ``random_urdfs`` ids 0–899 may be used here: ids 900–999 are reserved for independent
evaluation (:data:`MAX_URDF_ID`).
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from sam3d_bench import household
from sam3d_bench.sensor import SensorNoise, apply_depth_noise, apply_rgb_noise
from sam3d_ros.core.types import (
    BoxPrompt,
    CameraIntrinsics,
    Frame,
    ObjectPrompt,
    SegmentationQuery,
)

MAX_URDF_ID = 900
"""``random_urdfs`` ids ``0 .. MAX_URDF_ID - 1`` are ours; higher ids are held out."""

NEAR_CLIP = 0.05
FAR_CLIP = 6.0
TABLE_HEIGHT = 0.74
"""Table top above the floor (the floor is at world ``z = -TABLE_HEIGHT``)."""


class TablePlane(NamedTuple):
    """The table top in the camera frame: points ``p`` on it satisfy ``normal · p + offset = 0``.

    ``normal`` is a unit vector pointing up (away from the table, towards the camera side), so
    ``signed_distance`` is the height above the table.
    """

    normal: np.ndarray
    offset: float

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Height of camera-frame points above the table (metres)."""
        return np.asarray(points) @ self.normal + self.offset


@dataclass
class GroundTruthObject:
    """One object of a synthetic scene, in the camera optical frame.

    Attributes:
        object_id: 1-based id, also the value in :attr:`SyntheticScene.instance_mask`.
        urdf_id: index into ``pybullet_data/random_urdfs``, or a household object's id
            (:mod:`sam3d_bench.household`, from ``HOUSEHOLD_BASE``).
        mesh_vertices: V×3 float64 full (amodal) surface, camera frame, metres.
        mesh_faces: F×3 int64.
        visible_mask: H×W bool, pixels where this object is the first surface hit.
        box: ``(x_min, y_min, x_max, y_max)`` of ``visible_mask``, inclusive pixel corners.
        centre: (3,) centre of the mesh's axis-aligned box in the body frame, camera frame.
        pose: 4×4 body-to-camera transform (the URDF link frame).
        color: RGBA in [0, 1] used for rendering.
    """

    object_id: int
    urdf_id: int
    mesh_vertices: np.ndarray
    mesh_faces: np.ndarray
    visible_mask: np.ndarray
    box: Tuple[int, int, int, int]
    centre: np.ndarray
    pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    color: Tuple[float, float, float, float] = (0.5, 0.5, 0.5, 1.0)

    @property
    def visible_pixels(self) -> int:
        """Number of visible pixels."""
        return int(self.visible_mask.sum())


@dataclass
class SyntheticScene:
    """A rendered scene with ground truth (see the module docstring for frames)."""

    seed: int
    frame: Frame
    depth_m: np.ndarray
    """H×W float32 noisy depth, metres, NaN invalid (the depth behind ``frame.points``)."""
    depth_clean: np.ndarray
    """H×W float32 noise-free rendered depth, metres, NaN where nothing was hit."""
    objects: List[GroundTruthObject]
    table_plane: TablePlane
    instance_mask: np.ndarray
    """H×W int32: ``object_id`` of the visible object, 0 for table / floor / background."""
    render_seconds: float = 0.0

    @property
    def intrinsics(self) -> CameraIntrinsics:
        """Camera intrinsics."""
        assert self.frame.intrinsics is not None
        return self.frame.intrinsics

    @property
    def camera_pose(self) -> np.ndarray:
        """4×4 camera-to-world transform."""
        return self.frame.camera_pose

    def box_prompts(self, pad: int = 0) -> List[BoxPrompt]:
        """One box prompt per object: its visible-mask box grown by ``pad`` pixels (clipped)."""
        w, h = self.frame.width, self.frame.height
        out = []
        for obj in self.objects:
            x0, y0, x1, y1 = obj.box
            out.append(
                BoxPrompt(
                    max(0, x0 - pad),
                    max(0, y0 - pad),
                    min(w - 1, x1 + pad),
                    min(h - 1, y1 + pad),
                    object_id=obj.object_id,
                )
            )
        return out

    def box_query(self, pad: int = 0) -> SegmentationQuery:
        """Segmentation query with one box prompt per object."""
        return SegmentationQuery(
            objects=[
                ObjectPrompt(object_id=b.object_id, boxes=[b]) for b in self.box_prompts(pad)
            ]
        )

    def mask_query(self) -> SegmentationQuery:
        """Segmentation query that passes the ground-truth visible masks."""
        return SegmentationQuery(masks=[obj.visible_mask.copy() for obj in self.objects])


# --------------------------------------------------------------------------------------------
# geometry helpers


def depth_to_points(depth: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Back-project an H×W metric depth image to an H×W×3 float32 optical-frame pointmap."""
    h, w = depth.shape
    u = np.arange(w, dtype=np.float64)[None, :]
    v = np.arange(h, dtype=np.float64)[:, None]
    z = depth.astype(np.float64)
    x = (u - intrinsics.cx) / intrinsics.fx * z
    y = (v - intrinsics.cy) / intrinsics.fy * z
    return np.stack([x, y, z], axis=-1).astype(np.float32)


def project_points(points: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Project N×3 camera-frame points to N×2 pixel coordinates ``(u, v)``."""
    p = np.asarray(points, dtype=np.float64)
    return np.stack(
        [
            intrinsics.fx * p[:, 0] / p[:, 2] + intrinsics.cx,
            intrinsics.fy * p[:, 1] / p[:, 2] + intrinsics.cy,
        ],
        axis=-1,
    )


def default_intrinsics(width: int, height: int) -> CameraIntrinsics:
    """RealSense-D435-like intrinsics: fx = fy = 600 px at 640×480, scaled with the width."""
    s = width / 640.0
    return CameraIntrinsics(
        fx=600.0 * s,
        fy=600.0 * s,
        cx=0.5 * width - 0.5 + 3.5 * s,
        cy=0.5 * height - 0.5 - 2.5 * s,
        width=int(width),
        height=int(height),
    )


def look_at_pose(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world pose of an optical frame at ``eye`` looking at ``target`` (world z up)."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


def _gl_view_matrix(camera_pose: np.ndarray) -> List[float]:
    # OpenGL camera: x right, y up, z backward = optical frame with y and z flipped.
    world_from_gl = camera_pose @ np.diag([1.0, -1.0, -1.0, 1.0])
    view = np.linalg.inv(world_from_gl)
    return view.T.reshape(-1).tolist()  # column-major


def _gl_projection_matrix(k: CameraIntrinsics, near: float, far: float) -> List[float]:
    # Our pixel centres are at integer coordinates. pybullet's TinyRenderer samples pixel (u, v)
    # (rows top-down, after its vertical flip) at the continuous GL coordinate (u, v + 0.5)
    # rather than (u + 0.5, v + 0.5), measured: so the GL principal point is (cx, cy + 1).
    w, h = float(k.width), float(k.height)
    cxc, cyc = k.cx, k.cy + 1.0
    proj = np.array(
        [
            [2.0 * k.fx / w, 0.0, 1.0 - 2.0 * cxc / w, 0.0],
            [0.0, 2.0 * k.fy / h, 2.0 * cyc / h - 1.0, 0.0],
            [0.0, 0.0, -(far + near) / (far - near), -2.0 * far * near / (far - near)],
            [0.0, 0.0, -1.0, 0.0],
        ]
    )
    return proj.T.reshape(-1).tolist()


def linearize_depth_buffer(buffer: np.ndarray, near: float, far: float) -> np.ndarray:
    """Convert an OpenGL depth buffer in [0, 1] to metric optical-axis depth ``z`` (metres)."""
    d = np.asarray(buffer, dtype=np.float64)
    return far * near / (far - (far - near) * d)


def _quat_to_matrix(q: Sequence[float]) -> np.ndarray:
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


# --------------------------------------------------------------------------------------------
# assets


def pybullet_data_path() -> str:
    """Directory of the ``pybullet_data`` package."""
    import pybullet_data

    return pybullet_data.getDataPath()


def random_urdf_path(urdf_id: int) -> str:
    """Path of ``random_urdfs/NNN/NNN.urdf``; only ids below :data:`MAX_URDF_ID` are allowed."""
    urdf_id = int(urdf_id)
    if not 0 <= urdf_id < MAX_URDF_ID:
        # Not a bare `assert`: must hold under `python -O` too.
        raise AssertionError(
            f"random_urdfs id {urdf_id} is reserved: only ids 0-{MAX_URDF_ID - 1} may be used"
        )
    name = f"{urdf_id:03d}"
    return os.path.join(pybullet_data_path(), "random_urdfs", name, f"{name}.urdf")


OBJECT_SETS = ("random_urdfs", "household")
"""Object sets of :func:`make_tabletop_scene`: ``pybullet_data/random_urdfs`` (irregular
procedural shapes) or :mod:`sam3d_bench.household` (boxes, cans and bottles of YCB sizes)."""


def object_urdf_path(object_id: int) -> str:
    """URDF of a scene object: a ``random_urdfs`` id or a household id."""
    if household.is_household(object_id):
        return household.urdf_path(object_id)
    return random_urdf_path(object_id)


@lru_cache(maxsize=256)
def _visual_mesh(urdf_id: int) -> Tuple[np.ndarray, np.ndarray, Tuple[float, float, float, float]]:
    """Scaled visual mesh (link frame) and colour of a random URDF or a household object."""
    import trimesh

    if household.is_household(urdf_id):
        return household.mesh(urdf_id)
    path = random_urdf_path(urdf_id)
    root = ET.parse(path).getroot()
    visual = root.find("./link/visual")
    assert visual is not None, path
    mesh_el = visual.find("./geometry/mesh")
    assert mesh_el is not None, path
    scale = np.array([float(s) for s in mesh_el.get("scale", "1 1 1").split()])
    origin = visual.find("origin")
    xyz = np.zeros(3)
    if origin is not None:
        xyz = np.array([float(s) for s in origin.get("xyz", "0 0 0").split()])
        if any(float(s) != 0.0 for s in origin.get("rpy", "0 0 0").split()):
            raise NotImplementedError(f"{path}: rotated visual origins are not supported")
    color_el = visual.find("./material/color")
    rgba = (0.5, 0.5, 0.5, 1.0)
    if color_el is not None:
        rgba = tuple(float(s) for s in color_el.get("rgba", "0.5 0.5 0.5 1").split())  # type: ignore
    obj_path = os.path.join(os.path.dirname(path), mesh_el.get("filename", ""))
    mesh = trimesh.load(obj_path, force="mesh", process=False)
    vertices = np.asarray(mesh.vertices, dtype=np.float64) * scale + xyz
    faces = np.asarray(mesh.faces, dtype=np.int64)
    vertices.setflags(write=False)
    faces.setflags(write=False)
    return vertices, faces, rgba  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# scene generation


def _color_distance(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.linalg.norm(np.asarray(a[:3]) - np.asarray(b[:3])))


MIN_OBJECT_EXTENT = 0.01
"""Objects thinner than this (smallest axis-aligned extent, metres) are not drawn."""


def _draw_urdf_id(rng: np.random.Generator, exclude: Sequence[int] = (),
                  object_set: str = "random_urdfs") -> int:
    """Draw an object id of ``object_set``.

    A random URDF id below :data:`MAX_URDF_ID` of a graspable-size object, or a household id.
    """
    if object_set == "household":
        choices = [i for i in household.household_ids() if i not in exclude]
        return int(choices[int(rng.integers(0, len(choices)))])
    while True:
        urdf_id = int(rng.integers(0, MAX_URDF_ID))
        if urdf_id in exclude:
            continue
        verts = _visual_mesh(urdf_id)[0]
        if np.ptp(verts, axis=0).min() >= MIN_OBJECT_EXTENT:
            return urdf_id


SCENE_REGIMES: Dict[str, Dict[str, Any]] = {
    "default": {},
    "robot-head": {"distance_range": (0.8, 1.2), "pitch_deg_range": (12.0, 32.0)},
}
"""Named camera regimes: keyword arguments of :func:`make_tabletop_scene` (``{}`` = its defaults).

* ``default``: a camera looking down at the table (pitch 35–55°, 0.55–0.85 m): objects are mostly
  seen from above, an easy case (visible-only baseline about F@1cm 0.84 / F@5mm 0.71 / Chamfer
  0.40 cm, 20 scenes × 3 objects at 640×480).
* ``robot-head``: a more side-on robot-head view (pitch 12–32°, 0.8–1.2 m, camera 0.17–0.64 m
  above the table), calibrated towards the issue's visible-only figures F@1cm 0.78 / F@5mm 0.65 /
  Chamfer 0.53 cm: measured about 0.80 / 0.66 / 0.52–0.55 cm (see ``benchmarks/README.md``).
"""


def make_tabletop_scene(
    seed: int,
    n_objects: int = 3,
    width: int = 640,
    height: int = 480,
    noise: Optional[SensorNoise] = SensorNoise(),  # noqa: B008 (frozen dataclass)
    intrinsics: Optional[CameraIntrinsics] = None,
    urdf_ids: Optional[Sequence[int]] = None,
    distance_range: Tuple[float, float] = (0.55, 0.85),
    pitch_deg_range: Tuple[float, float] = (35.0, 55.0),
    settle_steps: int = 300,
    shadows: bool = True,
    min_visible_fraction: float = 0.0008,
    max_attempts: int = 30,
    object_set: str = "random_urdfs",
) -> SyntheticScene:
    """Render a tabletop scene with ``n_objects`` random objects resting on a table.

    Args:
        seed: everything (camera, objects, colours, placement, noise) is a function of it.
        n_objects: number of objects (each fully inside the image, at least partly visible).
        width, height: image size in pixels.
        noise: depth noise model; ``None`` gives the clean depth in ``frame.points``.
        intrinsics: camera intrinsics (default :func:`default_intrinsics`).
        urdf_ids: explicit object ids (default: drawn from the seed out of ``object_set``).
        distance_range: camera distance to the look-at point on the table, metres.
        pitch_deg_range: camera pitch below the horizon, degrees.
        settle_steps: physics steps (240 Hz) after dropping the objects.
        shadows: render shadows (slightly slower, more realistic).
        min_visible_fraction: minimum visible pixels per object, as a fraction of the image.
        max_attempts: placements tried before giving up (``RuntimeError``).
        object_set: where objects are drawn from (:data:`OBJECT_SETS`): ``random_urdfs``
            (ids < 900) or ``household`` (:mod:`sam3d_bench.household`).
    """
    import pybullet as pb

    t0 = time.perf_counter()
    rng = np.random.default_rng([int(seed), 0x5A3D])
    k = intrinsics or default_intrinsics(width, height)
    if (k.width, k.height) != (width, height):
        raise ValueError("intrinsics size differs from width/height")
    if urdf_ids is not None and len(urdf_ids) != n_objects:
        raise ValueError("len(urdf_ids) must equal n_objects")
    if object_set not in OBJECT_SETS:
        raise ValueError(f"object_set must be one of {OBJECT_SETS}, got {object_set!r}")
    if object_set == "household" and urdf_ids is None and n_objects >= len(household.CATALOGUE):
        # One object must stay free to replace an object that fell or hides.
        raise ValueError(f"the household set draws at most {len(household.CATALOGUE) - 1} "
                         "objects per scene")

    # Camera: a robot head / wrist camera looking down at a point on the table.
    target = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), 0.0])
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    pitch = np.deg2rad(rng.uniform(*pitch_deg_range))
    distance = rng.uniform(*distance_range)
    back = np.array([-np.cos(azimuth), -np.sin(azimuth), 0.0])
    eye = target + distance * (np.cos(pitch) * back + np.array([0.0, 0.0, np.sin(pitch)]))
    camera_pose = look_at_pose(eye, target)
    cam_from_world = np.linalg.inv(camera_pose)
    view = _gl_view_matrix(camera_pose)
    proj = _gl_projection_matrix(k, NEAR_CLIP, FAR_CLIP)

    table_rgba = (
        *np.clip(np.array([0.55, 0.45, 0.35]) + rng.uniform(-0.2, 0.2, size=3), 0.05, 0.95),
        1.0,
    )
    floor_rgba = (0.3, 0.3, 0.32, 1.0)
    light_dir = [rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(1.5, 3.0)]
    min_visible = max(30, int(min_visible_fraction * width * height))
    margin = 2

    if urdf_ids is None:
        ids: List[int] = []
        for _ in range(n_objects):
            ids.append(_draw_urdf_id(rng, exclude=ids, object_set=object_set))
    else:
        ids = [int(i) for i in urdf_ids]
    for i in ids:
        object_urdf_path(i)  # id check

    client = pb.connect(pb.DIRECT)
    try:
        for _attempt in range(max_attempts):
            pb.resetSimulation(physicsClientId=client)
            pb.setGravity(0, 0, -9.81, physicsClientId=client)
            pb.setTimeStep(1.0 / 240.0, physicsClientId=client)
            # Table: a thick box whose top face is the world plane z = 0, on a floor.
            half = [0.9, 0.9, TABLE_HEIGHT / 2]
            pb.createMultiBody(
                baseMass=0,
                baseCollisionShapeIndex=pb.createCollisionShape(
                    pb.GEOM_BOX, halfExtents=half, physicsClientId=client
                ),
                baseVisualShapeIndex=pb.createVisualShape(
                    pb.GEOM_BOX, halfExtents=half, rgbaColor=table_rgba, physicsClientId=client
                ),
                basePosition=[*(target[:2] - 0.3 * back[:2]), -TABLE_HEIGHT / 2],
                physicsClientId=client,
            )
            floor_half = [6.0, 6.0, 0.01]
            pb.createMultiBody(
                baseMass=0,
                baseCollisionShapeIndex=pb.createCollisionShape(
                    pb.GEOM_BOX, halfExtents=floor_half, physicsClientId=client
                ),
                baseVisualShapeIndex=pb.createVisualShape(
                    pb.GEOM_BOX, halfExtents=floor_half, rgbaColor=floor_rgba,
                    physicsClientId=client,
                ),
                basePosition=[0, 0, -TABLE_HEIGHT - 0.01],
                physicsClientId=client,
            )

            # Place objects: non-overlapping footprints around the look-at point, in view.
            radius = 0.10 + 0.03 * n_objects
            placed: List[Tuple[np.ndarray, float]] = []
            bodies = []
            colors = []
            ok = True
            for urdf_id in ids:
                verts, _, rgba = _visual_mesh(urdf_id)
                r_xy = float(np.linalg.norm(verts[:, :2], axis=1).max())
                for _ in range(200):
                    xy = target[:2] + rng.uniform(-radius, radius, size=2)
                    if any(np.linalg.norm(xy - c) < r_xy + r + 0.01 for c, r in placed):
                        continue
                    pc = cam_from_world @ np.array([xy[0], xy[1], 0.03, 1.0])
                    uv = project_points(pc[None, :3], k)[0]
                    m = 0.08 * width
                    if m <= uv[0] <= width - m and m <= uv[1] <= height - m:
                        break
                else:
                    ok = False
                    break
                placed.append((xy, r_xy))
                yaw = rng.uniform(0.0, 2.0 * np.pi)
                z0 = -float(verts[:, 2].min()) + 0.002
                body = pb.loadURDF(
                    object_urdf_path(urdf_id),
                    basePosition=[xy[0], xy[1], z0],
                    baseOrientation=pb.getQuaternionFromEuler([0, 0, yaw]),
                    physicsClientId=client,
                )
                if _color_distance(rgba, table_rgba) < 0.35:
                    rgba = (*rng.uniform(0.05, 0.95, size=3), 1.0)
                    while _color_distance(rgba, table_rgba) < 0.35:
                        rgba = (*rng.uniform(0.05, 0.95, size=3), 1.0)
                pb.changeVisualShape(body, -1, rgbaColor=list(rgba), physicsClientId=client)
                bodies.append(body)
                colors.append(tuple(float(c) for c in rgba))
            if not ok:
                continue
            for _ in range(settle_steps):
                pb.stepSimulation(physicsClientId=client)

            # Ground-truth poses and meshes.
            poses = []
            for body in bodies:
                pos, quat = pb.getBasePositionAndOrientation(body, physicsClientId=client)
                world_from_body = np.eye(4)
                world_from_body[:3, :3] = _quat_to_matrix(quat)
                world_from_body[:3, 3] = pos
                poses.append(world_from_body)

            _, _, rgba_img, depth_buf, seg = pb.getCameraImage(
                width,
                height,
                viewMatrix=view,
                projectionMatrix=proj,
                lightDirection=light_dir,
                shadow=1 if shadows else 0,
                lightAmbientCoeff=0.55,
                lightDiffuseCoeff=0.5,
                lightSpecularCoeff=0.1,
                renderer=pb.ER_TINY_RENDERER,
                physicsClientId=client,
            )
            seg = np.asarray(seg, dtype=np.int64).reshape(height, width)
            # An object must be inside the image (mask off the border) and visible enough.
            masks = [seg == b for b in bodies]
            good = True
            for world_from_body, mask in zip(poses, masks, strict=True):
                if world_from_body[2, 3] < -0.02 or mask.sum() < min_visible:
                    good = False
                    break
                if (
                    mask[:margin].any()
                    or mask[-margin:].any()
                    or mask[:, :margin].any()
                    or mask[:, -margin:].any()
                ):
                    good = False
                    break
            if good:
                break
            if urdf_ids is None and _attempt % 3 == 2:
                # Replace objects that keep failing (fell off, hidden, too thin to see).
                for j, (world_from_body, mask) in enumerate(zip(poses, masks, strict=True)):
                    if world_from_body[2, 3] < -0.02 or mask.sum() < min_visible:
                        ids[j] = _draw_urdf_id(rng, exclude=ids, object_set=object_set)
        else:
            raise RuntimeError(f"seed {seed}: no valid placement in {max_attempts} attempts")
    finally:
        pb.disconnect(physicsClientId=client)

    rgb_clean = np.asarray(rgba_img, dtype=np.uint8).reshape(height, width, 4)[:, :, :3]
    rgb = apply_rgb_noise(rgb_clean, noise, np.random.default_rng([int(seed), 0xC010]))
    depth_clean = linearize_depth_buffer(
        np.asarray(depth_buf, dtype=np.float64).reshape(height, width), NEAR_CLIP, FAR_CLIP
    )
    depth_clean[(seg < 0) | (depth_clean >= FAR_CLIP * 0.999)] = np.nan
    depth_clean = depth_clean.astype(np.float32)
    noise_rng = np.random.default_rng([int(seed), 0xD3E7])
    depth_noisy = apply_depth_noise(depth_clean, noise, noise_rng, rgb=rgb_clean, fx=k.fx)
    points = depth_to_points(depth_noisy, k)

    instance = np.zeros((height, width), dtype=np.int32)
    objects: List[GroundTruthObject] = []
    for index, (urdf_id, world_from_body, mask, rgba) in enumerate(
        zip(ids, poses, masks, colors, strict=True)
    ):
        object_id = index + 1
        verts, faces, _ = _visual_mesh(urdf_id)
        cam_from_body = cam_from_world @ world_from_body
        v_cam = verts @ cam_from_body[:3, :3].T + cam_from_body[:3, 3]
        centre_body = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
        centre = cam_from_body[:3, :3] @ centre_body + cam_from_body[:3, 3]
        rows, cols = np.nonzero(mask)
        box = (int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))
        instance[mask] = object_id
        objects.append(
            GroundTruthObject(
                object_id=object_id,
                urdf_id=urdf_id,
                mesh_vertices=v_cam,
                mesh_faces=np.array(faces),
                visible_mask=mask,
                box=box,
                centre=centre,
                pose=cam_from_body,
                color=rgba,
            )
        )

    normal = cam_from_world[:3, :3] @ np.array([0.0, 0.0, 1.0])
    # World plane z = 0 through the world origin; in the camera frame it passes through o_cam.
    o_cam = cam_from_world[:3, 3]
    plane = TablePlane(normal=normal, offset=float(-normal @ o_cam))

    frame = Frame(rgb=rgb, points=points, intrinsics=k, camera_pose=camera_pose)
    return SyntheticScene(
        seed=int(seed),
        frame=frame,
        depth_m=depth_noisy,
        depth_clean=depth_clean,
        objects=objects,
        table_plane=plane,
        instance_mask=instance,
        render_seconds=time.perf_counter() - t0,
    )
