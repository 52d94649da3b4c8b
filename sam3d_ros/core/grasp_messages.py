"""The node's grasp outputs, built from core grasps: pure functions, ROS-free.

Like :mod:`sam3d_ros.core.output_messages`, every builder takes a message kit
(:mod:`sam3d_ros.core.message_kit`): rclpy's for the node, rosbags' for an offline recording.

Inputs are the engine's per-object grasp lists (:attr:`sam3d_ros.core.engine.EngineResult.grasps`:
same order as the objects, best first, camera optical frame, the grasp contract of
:mod:`sam3d_ros.core.conventions`) and the objects with their *tracked* ids (the node renumbers
objects after the engine, so a grasp's own ``object_id`` is not used: the object at the same
index is).

* ``~/grasps`` (:func:`grasp_array_msg`): ``sam3d_ros/GraspArray``;
* ``~/grasp_poses`` (:func:`grasp_pose_array_msg`): ``geometry_msgs/PoseArray``, the same poses;
* ``~/grasp_markers`` (:func:`grasp_markers_msg`): a LINE_LIST gripper per grasp.

``tcp_offset`` > 0 turns every published pose into the pose of the user's end-effector link:
the grasp frame moved ``tcp_offset`` metres back along its ``-z``
(:func:`sam3d_ros.core.conventions.grasp_to_end_effector`), same orientation. Markers always draw
the
gripper around the grasp frame (the fingers at the contacts), whatever the offset.
"""

from __future__ import annotations

import re
import threading
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from sam3d_ros.core import conventions
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.message_kit import MessageKit
from sam3d_ros.core.output_messages import object_color, pose_msg
from sam3d_ros.core.types import Grasp, ObjectReconstruction

GRASP_NS = "sam3d_grasps"
"""Marker namespace of the gripper markers (ids 0..n-1 in publishing order)."""

APPROACH_CHOICES = ("from_above", "camera")
"""Named values of ``grasp_approach``; a vector ``"x,y,z"`` (camera optical frame) also works."""

_BEST_LINE_M = 0.004
_OTHER_LINE_M = 0.0015
_OTHER_ALPHA = 0.3


def parse_approach(value: str, field: str = "grasp_approach") -> Optional[np.ndarray]:
    """The planner's ``preferred_approach`` of a ``grasp_approach`` parameter value.

    ``"from_above"`` → ``None`` (the planner goes against the support-plane normal, or along the
    camera's viewing direction when no plane is found); ``"camera"`` → ``[0, 0, 1]`` (from the
    camera's side); ``"x,y,z"`` (or ``"[x, y, z]"``) → that direction, normalised: the way the
    gripper moves, in the camera optical frame.

    Raises:
        InputError: naming ``field``, for anything else or a zero / non-finite vector.
    """
    text = str(value).strip()
    if text == "from_above":
        return None
    if text == "camera":
        return np.array([0.0, 0.0, 1.0])
    parts = [p for p in re.split(r"[,\s]+", text.strip("[]() ")) if p]
    try:
        vec = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        vec = np.zeros(0)
    if vec.shape != (3,):
        raise InputError(field, f"must be one of {list(APPROACH_CHOICES)} or a vector 'x,y,z' "
                                f"in the camera optical frame, got {value!r}")
    norm = float(np.linalg.norm(vec))
    if not np.all(np.isfinite(vec)) or norm < 1e-9:
        raise InputError(field, f"the approach vector must be finite and non-zero, got {value!r}")
    return vec / norm


def published_pose(grasp: Grasp, tcp_offset: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """``(position, orientation_xyzw)`` published for a grasp.

    The grasp frame, or with ``tcp_offset`` > 0 the end-effector link ``tcp_offset`` metres
    behind it along ``-z`` (same orientation).
    """
    p = np.asarray(grasp.position, dtype=np.float64).reshape(3)
    q = conventions.quat_normalize(np.asarray(grasp.orientation, dtype=np.float64).reshape(4))
    if tcp_offset:
        return conventions.grasp_to_end_effector(p, q, float(tcp_offset))
    return p, q


def grasp_pose_msg(kit: MessageKit, grasp: Grasp, tcp_offset: float = 0.0) -> Any:
    """``geometry_msgs/Pose`` of :func:`published_pose`."""
    position, orientation = published_pose(grasp, tcp_offset)
    return pose_msg(kit, orientation, position)


def grasp_contacts(grasp: Grasp) -> np.ndarray:
    """The two contact points (2×3); from the contract (``position ∓ width/2 · y``) if unknown."""
    if grasp.contacts is not None:
        return np.asarray(grasp.contacts, dtype=np.float64).reshape(2, 3)
    _, y, _ = conventions.grasp_axes(grasp.orientation)
    p = np.asarray(grasp.position, dtype=np.float64).reshape(3)
    half = 0.5 * float(grasp.width) * y
    return np.stack([p - half, p + half])


def grasp_msg(kit: MessageKit, grasp: Grasp, object_id: int, rank: int,
              tcp_offset: float = 0.0) -> Any:
    """One ``sam3d_ros/Grasp`` (see msg/Grasp.msg for which pose it carries)."""
    msg = kit.GraspMsg()
    msg.object_id = int(object_id)
    msg.rank = int(rank)
    msg.pose = grasp_pose_msg(kit, grasp, tcp_offset)
    msg.tcp_offset = float(tcp_offset)
    msg.width = float(grasp.width)
    msg.score = float(grasp.score)
    msg.contacts = [kit.Point(x=float(c[0]), y=float(c[1]), z=float(c[2]))
                    for c in grasp_contacts(grasp)]
    observed = grasp.contacts_observed
    msg.contacts_observed = ([bool(v) for v in np.asarray(observed).reshape(2)]
                             if observed is not None else [False, False])
    return msg


def _check_lengths(objects: Sequence[ObjectReconstruction],
                   grasps: Sequence[Sequence[Grasp]]) -> None:
    if len(grasps) != len(objects):
        raise ValueError(f"{len(grasps)} grasp lists for {len(objects)} objects")


def grasp_array_msg(
    kit: MessageKit,
    header: Any,
    objects: Sequence[ObjectReconstruction],
    grasps: Sequence[Sequence[Grasp]],
    tcp_offset: float = 0.0,
) -> Any:
    """``GraspArray``: per object (objects' order, tracked ids), its grasps best first."""
    _check_lengths(objects, grasps)
    msg = kit.GraspArray()
    msg.header = header
    for obj, object_grasps in zip(objects, grasps, strict=True):
        for rank, grasp in enumerate(object_grasps):
            msg.grasps.append(grasp_msg(kit, grasp, obj.object_id, rank, tcp_offset))
    return msg


def grasp_pose_array_msg(
    kit: MessageKit,
    header: Any,
    objects: Sequence[ObjectReconstruction],
    grasps: Sequence[Sequence[Grasp]],
    tcp_offset: float = 0.0,
) -> Any:
    """``geometry_msgs/PoseArray`` of the poses of :func:`grasp_array_msg`, same order."""
    _check_lengths(objects, grasps)
    msg = kit.PoseArray()
    msg.header = header
    msg.poses = [grasp_pose_msg(kit, g, tcp_offset)
                 for object_grasps in grasps for g in object_grasps]
    return msg


def gripper_lines(width: float, gripper) -> np.ndarray:
    """Segments (k×2×3) of a gripper drawn in the grasp frame: two fingers, palm bar, stem.

    Fingers are at ``y = ±width/2`` (their pads on the contacts), from the fingertips
    (``z = contact_depth``) back to the hand (``z = contact_depth - finger_length``); the palm
    bar joins the finger bases; the stem runs from the bar's middle back to the end-effector
    link (``palm_height`` further along ``-z``).
    """
    h = 0.5 * float(width)
    tip = float(gripper.contact_depth)
    base = tip - float(gripper.finger_length)
    back = base - float(gripper.palm_height)
    return np.array([
        [[0.0, -h, tip], [0.0, -h, base]],
        [[0.0, h, tip], [0.0, h, base]],
        [[0.0, -h, base], [0.0, h, base]],
        [[0.0, 0.0, base], [0.0, 0.0, back]],
    ])


def _select_for_markers(grasps: Sequence[Sequence[Grasp]],
                        max_markers: int) -> List[Tuple[int, int]]:
    """(object index, rank) pairs to draw: every object's best grasp first, then the seconds..."""
    order = []
    depth = max((len(g) for g in grasps), default=0)
    for rank in range(depth):
        for i, object_grasps in enumerate(grasps):
            if rank < len(object_grasps):
                order.append((i, rank))
    if max_markers > 0:
        order = order[:max_markers]
    return order


def grasp_markers_msg(
    kit: MessageKit,
    header: Any,
    objects: Sequence[ObjectReconstruction],
    grasps: Sequence[Sequence[Grasp]],
    gripper,
    previous_count: int = 0,
    max_markers: int = 0,
) -> Tuple[Any, int]:
    """Gripper-shaped LINE_LIST markers; returns ``(markers, count)``.

    One marker per drawn grasp, in the grasp frame (``pose`` = the grasp pose, never the
    end-effector pose), namespace :data:`GRASP_NS`, ids ``0..count-1`` in drawing order (each
    object's best grasp first, then every object's second, ...; at most ``max_markers``, 0 = all).
    The best grasp of each object is drawn opaque and thick in the object's colour, the others
    thin and faded. Ids ``count..previous_count-1`` (grasps or objects that vanished since the
    last call) get DELETE markers. ``gripper`` is a
    :class:`~sam3d_ros.backends.grasp.analytic.GripperModel`.
    """
    _check_lengths(objects, grasps)
    msg = kit.MarkerArray()
    chosen = _select_for_markers(grasps, int(max_markers))
    for marker_id, (i, rank) in enumerate(chosen):
        grasp = grasps[i][rank]
        marker = kit.Marker(header=header, ns=GRASP_NS, id=marker_id,
                            type=kit.Marker.LINE_LIST, action=kit.Marker.ADD)
        marker.pose = pose_msg(kit, grasp.orientation, grasp.position)
        best = rank == 0
        marker.scale = kit.Vector3(x=_BEST_LINE_M if best else _OTHER_LINE_M, y=0.0, z=0.0)
        r, g, b = object_color(objects[i].object_id)
        marker.color = kit.ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0,
                                     a=1.0 if best else _OTHER_ALPHA)
        marker.points = [kit.Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
                         for p in gripper_lines(grasp.width, gripper).reshape(-1, 3)]
        msg.markers.append(marker)
    count = len(chosen)
    for gone in range(count, int(previous_count)):
        msg.markers.append(kit.Marker(header=header, ns=GRASP_NS, id=gone,
                                      action=kit.Marker.DELETE))
    return msg, count


class GraspOutputs:
    """The node's three grasp publishers and the marker count between frames.

    Args:
        kit: the message kit of the publishers' messages.
        grasps_pub, poses_pub, markers_pub: publishers of ``GraspArray``, ``PoseArray`` and
            ``MarkerArray`` (anything with ``publish`` and ``get_subscription_count``).
    """

    def __init__(self, kit: MessageKit, grasps_pub: Any, poses_pub: Any,
                 markers_pub: Any) -> None:
        self.kit = kit
        self.grasps_pub = grasps_pub
        self.poses_pub = poses_pub
        self.markers_pub = markers_pub
        self._marker_count = 0
        self._lock = threading.Lock()  # the worker and goal threads both publish

    @property
    def publishers(self) -> Tuple[Any, Any, Any]:
        """The three publishers (for destruction)."""
        return self.grasps_pub, self.poses_pub, self.markers_pub

    def publish(
        self,
        header: Any,
        objects: Sequence[ObjectReconstruction],
        grasps: Sequence[Sequence[Grasp]],
        gripper: Any,
        tcp_offset: float = 0.0,
        max_markers: int = 0,
    ) -> None:
        """Publish one frame's grasps on the topics that have subscribers."""
        if _subscribed(self.grasps_pub):
            self.grasps_pub.publish(grasp_array_msg(self.kit, header, objects, grasps,
                                                    tcp_offset))
        if _subscribed(self.poses_pub):
            self.poses_pub.publish(grasp_pose_array_msg(self.kit, header, objects, grasps,
                                                        tcp_offset))
        with self._lock:
            # The count is kept even without subscribers, so a late RViz gets correct DELETEs.
            markers, count = grasp_markers_msg(self.kit, header, objects, grasps, gripper,
                                               self._marker_count, max_markers)
            self._marker_count = count
            if _subscribed(self.markers_pub):
                self.markers_pub.publish(markers)

    def clear_markers(self, header: Any) -> None:
        """DELETEALL on the marker topic (deactivation)."""
        with self._lock:
            if self._marker_count:
                marker = self.kit.Marker(header=header, action=self.kit.Marker.DELETEALL)
                self.markers_pub.publish(self.kit.MarkerArray(markers=[marker]))
                self._marker_count = 0


def _subscribed(pub: Any) -> bool:
    return pub is not None and pub.get_subscription_count() > 0
