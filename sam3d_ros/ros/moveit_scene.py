"""MoveIt planning scene: one ``moveit_msgs/CollisionObject`` per tracked object (no ROS graph).

MoveIt's planning scene monitor (``move_group``) subscribes to ``/collision_object`` (reliable,
volatile, keep-last 1024 in moveit2's ``planning_scene_monitor.cpp``) and applies every message
as an operation on its world. :class:`CollisionScene` remembers what it told MoveIt and turns
each frame's objects into the operations that bring MoveIt's world up to date:

* **ADD** when an object appears, and again when its geometry changed (MoveIt's ADD replaces an
  object that exists): ``id`` = the TF child frame ``<tf_prefix><id>``, ``header.frame_id`` =
  the camera optical frame, ``pose`` = the object pose (the same as its TF frame), one mesh in
  the object frame (``mesh_poses`` = identity), closed and decimated to at most
  ``max_triangles`` (:mod:`~sam3d_ros.core.mesh_decimation`), and subframes ``grasp_0`` ..
  ``grasp_{n-1}``: the object's best grasps relative to the object pose (MoveIt names them
  ``<id>/grasp_0`` ...).
* **MOVE** when only the pose changed: the mesh MoveIt holds (in the object frame) still
  matches the new reconstruction in its object frame (within :data:`SHAPE_TOLERANCE_M` or the
  relative tolerance). Only
  ``pose`` is sent; MoveIt keeps the mesh and the subframes relative to it, so the subframes
  remain the grasps of the frame that last added the object.
* **REMOVE** when the object is lost: its id is no longer among the tracker's tracks (an object
  missed for fewer than ``track_max_age`` frames keeps its collision object).
* Nothing when the pose changed by less than :data:`MOVE_MIN_M` / :data:`MOVE_MIN_DEG`.

An optional support-plane box (``<tf_prefix>support_plane``, a thin ``SolidPrimitive`` BOX whose
top face lies on the fitted table plane, under the objects' footprint plus a margin) follows the
same ADD / MOVE rules.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from geometry_msgs.msg import Pose
from moveit_msgs.msg import CollisionObject
from shape_msgs.msg import Mesh as MeshMsg
from shape_msgs.msg import SolidPrimitive
from std_msgs.msg import Header

from sam3d_ros.core import conventions
from sam3d_ros.core.grasp_messages import published_pose
from sam3d_ros.core.mesh_decimation import (  # noqa: F401 - re-exported
    SHAPE_TOLERANCE_M,
    SHAPE_TOLERANCE_REL,
    decimate_closed,
    is_closed_manifold,
    same_shape,
)
from sam3d_ros.core.output_messages import (
    _points,
    _triangles,
    object_size,
    object_vertices_m,
    pose_msg,
)
from sam3d_ros.core.types import Grasp, ObjectReconstruction
from sam3d_ros.ros.message_kit import RCLPY

SUPPORT_ID = "support_plane"
"""Suffix of the support-plane box's id (``<tf_prefix>support_plane``)."""
SUPPORT_THICKNESS_M = 0.01
SUPPORT_MARGIN_M = 0.15
"""The box extends this far beyond the objects' footprint on the plane, every side."""
SUPPORT_MIN_SIZE_M = 0.3

MOVE_MIN_M = 0.001
MOVE_MIN_DEG = 1.0
"""Pose changes below both are not sent (reconstruction jitter would flood MoveIt)."""


# --------------------------------------------------------------------------------------------
# Message pieces


def collision_mesh(obj: ObjectReconstruction, max_triangles: int) -> Tuple[np.ndarray, np.ndarray]:
    """The object's mesh in its object frame (metres), decimated to ``max_triangles``."""
    return decimate_closed(object_vertices_m(obj), np.asarray(obj.mesh.faces), max_triangles)


def mesh_msg(vertices: np.ndarray, faces: np.ndarray) -> MeshMsg:
    """``shape_msgs/Mesh`` of vertices (metres) and faces."""
    msg = MeshMsg()
    msg.vertices = _points(RCLPY, vertices)
    msg.triangles = _triangles(RCLPY, faces)
    return msg


def relative_pose(
    frame_position: np.ndarray, frame_orientation: np.ndarray,
    position: np.ndarray, orientation: np.ndarray,
) -> Tuple[np.ndarray, np.ndarray]:
    """A camera-frame pose expressed in another camera-frame pose: ``T_frame⁻¹ · T_pose``."""
    q_frame = conventions.quat_normalize(frame_orientation)
    r = conventions.quat_to_matrix(q_frame)
    p = r.T @ (np.asarray(position, dtype=np.float64) - np.asarray(frame_position, np.float64))
    q = conventions.quat_canonical(conventions.quat_multiply(conventions.quat_conjugate(q_frame),
                                           conventions.quat_normalize(orientation)))
    return p, q


def grasp_subframes(
    obj: ObjectReconstruction, grasps: Sequence[Grasp], count: int, tcp_offset: float = 0.0,
) -> Tuple[List[str], List[Pose]]:
    """Subframes ``grasp_0`` .. of the best ``count`` grasps, relative to the object pose.

    Each is the pose published on ``~/grasps`` (the grasp frame, or the end-effector pose with a
    TCP offset), so a planner can aim the same link at ``<id>/grasp_k``.
    """
    names, poses = [], []
    for k, grasp in enumerate(list(grasps)[: max(0, int(count))]):
        p, q = published_pose(grasp, tcp_offset)
        rel_p, rel_q = relative_pose(obj.translation, obj.rotation, p, q)
        names.append(f"grasp_{k}")
        poses.append(pose_msg(RCLPY, rel_q, rel_p))
    return names, poses


def support_box(
    plane: Any, objects: Sequence[ObjectReconstruction],
    thickness: float = SUPPORT_THICKNESS_M, margin: float = SUPPORT_MARGIN_M,
) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(position, orientation_xyzw, dimensions)`` of a box whose top face lies on ``plane``.

    ``plane`` has a unit ``normal`` (towards the camera, i.e. up) and an ``offset``
    (``normal · p + offset = 0``). Box z = the normal; x = the camera x axis projected onto the
    plane. Its top face covers the objects' footprint (their mesh vertices projected onto the
    plane) plus ``margin`` each side, at least :data:`SUPPORT_MIN_SIZE_M` square. ``None``
    without a plane or objects.
    """
    if plane is None or not objects:
        return None
    normal = conventions._unit(np.asarray(plane.normal, dtype=np.float64).reshape(3),
                               "plane.normal")
    offset = float(plane.offset)
    x = np.array([1.0, 0.0, 0.0]) - normal[0] * normal
    if np.linalg.norm(x) < 1e-6:  # plane facing sideways to the camera: use camera y instead
        x = np.array([0.0, 1.0, 0.0]) - normal[1] * normal
    x = x / np.linalg.norm(x)
    y = np.cross(normal, x)
    pts = np.concatenate([conventions.canonical_to_camera(np.asarray(o.mesh.vertices, np.float64),
                                                 o.rotation, o.translation, o.scale)
                          for o in objects])
    on_plane = pts - (pts @ normal + offset)[:, None] * normal
    u, w = on_plane @ x, on_plane @ y
    lo = np.array([u.min(), w.min()]) - margin
    hi = np.array([u.max(), w.max()]) + margin
    size = np.maximum(hi - lo, SUPPORT_MIN_SIZE_M)
    centre_uv = 0.5 * (lo + hi)
    origin = -offset * normal  # the plane's point nearest the camera
    # origin ⟂ x, y, so the plane point with coordinates (u, w) is origin + u·x + w·y.
    centre = origin + centre_uv[0] * x + centre_uv[1] * y - 0.5 * thickness * normal
    rotation = np.stack([x, y, normal], axis=1)
    return centre, conventions.matrix_to_quat(rotation), np.array([size[0], size[1], thickness])


# --------------------------------------------------------------------------------------------
# The diff against what MoveIt was told


@dataclass
class SceneOptions:
    """How collision objects are built (node parameters)."""

    prefix: str = "sam3d_object_"
    max_triangles: int = 2000
    subframes: int = 3
    tcp_offset: float = 0.0
    support_plane: bool = False


@dataclass
class _Entry:
    """What MoveIt holds for one id: the last ADD (re-sent on resync) and the pose since."""

    added: CollisionObject
    position: np.ndarray
    orientation: np.ndarray
    vertices: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    """The added reconstruction's mesh vertices in its object frame, undecimated (the shape
    test compares like with like)."""
    dimensions: Optional[np.ndarray] = None
    """Box dimensions (support plane)."""
    subframes: int = 0


def _pose_changed(p0, q0, p1, q1) -> bool:
    moved = float(np.linalg.norm(np.asarray(p1) - np.asarray(p0))) > MOVE_MIN_M
    dot = min(1.0, abs(float(np.dot(conventions.quat_normalize(q0),
                                    conventions.quat_normalize(q1)))))
    turned = math.degrees(2.0 * math.acos(dot)) > MOVE_MIN_DEG
    return moved or turned


class CollisionScene:
    """The objects MoveIt was told about, and the operations that keep it current.

    Not thread-safe: the caller serialises :meth:`update`, :meth:`resync`, :meth:`remove_all`.
    """

    def __init__(self) -> None:
        self._entries: Dict[str, _Entry] = {}

    @property
    def ids(self) -> List[str]:
        """The collision-object ids MoveIt currently holds from us."""
        return sorted(self._entries)

    def forget(self) -> None:
        """Drop all state (nobody is subscribed: the next update ADDs everything)."""
        self._entries.clear()

    def resync(self, header: Header) -> List[CollisionObject]:
        """ADD messages of everything held, at its latest pose, with ``header``.

        For a subscriber that joined late: a volatile topic gives it no history.
        """
        out = []
        for entry in self._entries.values():
            msg = _copy_add(entry.added)
            msg.header = header
            msg.pose = pose_msg(RCLPY, entry.orientation, entry.position)
            out.append(msg)
        return out

    def remove_all(self, header: Header) -> List[CollisionObject]:
        """REMOVE messages of everything held; the state is cleared."""
        out = [_remove(header, obj_id) for obj_id in sorted(self._entries)]
        self._entries.clear()
        return out

    def update(
        self,
        header: Header,
        objects: Sequence[ObjectReconstruction],
        grasps: Optional[Sequence[Sequence[Grasp]]],
        tracked_ids: Sequence[int],
        options: SceneOptions,
        plane: Any = None,
    ) -> List[CollisionObject]:
        """Operations for one frame: REMOVEs, then ADD / MOVE per object, then the support box.

        Args:
            header: the source image's header (stamp, camera optical frame).
            objects: this frame's objects with their tracked ids.
            grasps: per object (same order) its grasps best first, or ``None`` (no planner).
            tracked_ids: ids the tracker still remembers (this frame's and recently unseen ones);
                held objects outside it are REMOVEd.
            options: ids, decimation, subframes, TCP offset, support plane on/off.
            plane: the support plane (``normal``, ``offset``) when ``options.support_plane``.
        """
        if grasps is not None and len(grasps) != len(objects):
            raise ValueError(f"{len(grasps)} grasp lists for {len(objects)} objects")
        out: List[CollisionObject] = []
        keep = {f"{options.prefix}{int(i)}" for i in tracked_ids}
        keep |= {f"{options.prefix}{int(o.object_id)}" for o in objects}
        support_id = f"{options.prefix}{SUPPORT_ID}"
        if options.support_plane:
            keep.add(support_id)
        for obj_id in sorted(set(self._entries) - keep):
            out.append(_remove(header, obj_id))
            del self._entries[obj_id]
        for i, obj in enumerate(objects):
            msg = self._object_op(header, obj, grasps[i] if grasps is not None else [], options)
            if msg is not None:
                out.append(msg)
        if options.support_plane:
            box = support_box(plane, objects)
            if box is not None:
                msg = self._support_op(header, support_id, *box)
                if msg is not None:
                    out.append(msg)
        return out

    def _object_op(self, header: Header, obj: ObjectReconstruction, grasps: Sequence[Grasp],
                   options: SceneOptions) -> Optional[CollisionObject]:
        obj_id = f"{options.prefix}{int(obj.object_id)}"
        position = np.asarray(obj.translation, dtype=np.float64).reshape(3)
        orientation = conventions.quat_normalize(np.asarray(obj.rotation,
                                                            dtype=np.float64).reshape(4))
        n_sub = min(int(options.subframes), len(grasps))
        entry = self._entries.get(obj_id)
        if entry is not None and n_sub <= entry.subframes:
            # MoveIt keeps the held mesh in the object frame and only moves the frame: a MOVE
            # is right while that mesh matches the new reconstruction in its object frame.
            if same_shape(entry.vertices, object_vertices_m(obj),
                          float(np.max(object_size(obj)))):
                if not _pose_changed(entry.position, entry.orientation, position, orientation):
                    return None
                entry.position, entry.orientation = position, orientation
                return _move(header, obj_id, position, orientation)
        vertices, faces = collision_mesh(obj, int(options.max_triangles))
        msg = CollisionObject()
        msg.header = header
        msg.id = obj_id
        msg.pose = pose_msg(RCLPY, orientation, position)
        msg.type.key = str(obj.label)
        msg.meshes = [mesh_msg(vertices, faces)]
        msg.mesh_poses = [pose_msg(RCLPY, [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0])]
        msg.subframe_names, msg.subframe_poses = grasp_subframes(obj, grasps, n_sub,
                                                                 options.tcp_offset)
        msg.operation = CollisionObject.ADD
        self._entries[obj_id] = _Entry(msg, position, orientation,
                                       vertices=object_vertices_m(obj), subframes=n_sub)
        return msg

    def _support_op(self, header: Header, obj_id: str, position: np.ndarray,
                    orientation: np.ndarray, dims: np.ndarray) -> Optional[CollisionObject]:
        entry = self._entries.get(obj_id)
        if entry is not None and entry.dimensions is not None and np.all(
                np.abs(entry.dimensions - dims) <= 2 * SUPPORT_MARGIN_M / 3):
            # Same box (the footprint margin absorbs small changes): move it only.
            if not _pose_changed(entry.position, entry.orientation, position, orientation):
                return None
            entry.position, entry.orientation = position, orientation
            return _move(header, obj_id, position, orientation)
        msg = CollisionObject()
        msg.header = header
        msg.id = obj_id
        msg.pose = pose_msg(RCLPY, orientation, position)
        msg.primitives = [SolidPrimitive(type=SolidPrimitive.BOX,
                                         dimensions=[float(d) for d in dims])]
        msg.primitive_poses = [pose_msg(RCLPY, [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0])]
        msg.operation = CollisionObject.ADD
        self._entries[obj_id] = _Entry(msg, position, orientation, dimensions=np.array(dims))
        return msg


def _move(header: Header, obj_id: str, position: np.ndarray,
          orientation: np.ndarray) -> CollisionObject:
    # MOVE carries the pose only: MoveIt warns about (and ignores) geometry in a MOVE.
    return CollisionObject(header=header, id=obj_id, pose=pose_msg(RCLPY, orientation, position),
                           operation=CollisionObject.MOVE)


def _remove(header: Header, obj_id: str) -> CollisionObject:
    return CollisionObject(header=header, id=obj_id, operation=CollisionObject.REMOVE)


def _copy_add(msg: CollisionObject) -> CollisionObject:
    out = CollisionObject()
    for name in CollisionObject.get_fields_and_field_types():
        setattr(out, name, getattr(msg, name))
    return out


class CollisionPublisher:
    """Publishes a :class:`CollisionScene`'s operations; thread-safe.

    Volatile topics give a late subscriber no history, so when the subscriber count rises the
    objects held are ADDed again (MoveIt's ADD replaces); when nobody is subscribed, nothing is
    built and the state is dropped (the next subscriber gets fresh ADDs).

    Args:
        publisher: a ``CollisionObject`` publisher (``publish``, ``get_subscription_count``).
    """

    def __init__(self, publisher: Any) -> None:
        self.publisher = publisher
        self.scene = CollisionScene()
        self._lock = threading.Lock()
        self._subscribers = 0

    def publish(
        self,
        header: Header,
        objects: Sequence[ObjectReconstruction],
        grasps: Optional[Sequence[Sequence[Grasp]]],
        tracked_ids: Sequence[int],
        options: SceneOptions,
        plane: Any = None,
    ) -> List[CollisionObject]:
        """Publish this frame's operations; returns them (empty without subscribers).

        ``plane`` may be a callable returning the plane, called only when needed.
        """
        with self._lock:
            count = self.publisher.get_subscription_count()
            previous, self._subscribers = self._subscribers, count
            if count == 0:
                self.scene.forget()
                return []
            sent = self.scene.resync(header) if count > previous else []
            if options.support_plane and callable(plane):
                plane = plane()
            sent += self.scene.update(header, objects, grasps, tracked_ids, options, plane)
            for msg in sent:
                self.publisher.publish(msg)
            return sent

    def remove_all(self, header: Header) -> List[CollisionObject]:
        """REMOVE everything held (deactivation); returns the messages sent."""
        with self._lock:
            sent = self.scene.remove_all(header)
            for msg in sent:
                self.publisher.publish(msg)
            return sent
