"""The node's output publishers (created at configure) and the publishing of one result.

Heavy outputs are built only while someone subscribes; ``/tf`` is published first and
``/collision_object`` last (the heaviest).
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from geometry_msgs.msg import PoseArray
from moveit_msgs.msg import CollisionObject
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import MarkerArray

from sam3d_ros.core import grasp_messages as grasp_out
from sam3d_ros.core import output_messages as out
from sam3d_ros.core.camera_frame import CameraFrame, stamp_seconds
from sam3d_ros.core.types import ObjectReconstruction
from sam3d_ros.msg import GraspArray, ReconstructedObjectArray
from sam3d_ros.ros.conversions import numpy_to_image
from sam3d_ros.ros.message_kit import RCLPY
from sam3d_ros.ros.moveit_scene import CollisionPublisher, SceneOptions
from sam3d_ros.ros.stats import PipelineStats


def _has_subscribers(pub: Any) -> bool:
    return pub is not None and pub.get_subscription_count() > 0


class ResultPublishers:
    """Objects, detections, markers, points, debug image, TF, grasps and MoveIt's scene.

    Args:
        node: the lifecycle node that owns the publishers.
        param: ``param(name)`` reads a node parameter.
        stats: receives the publishing latencies.
        warn_once: ``warn_once(key, message)``.
    """

    def __init__(self, node: Any, param: Callable[[str], Any], stats: PipelineStats,
                 warn_once: Callable[[str, str], None]) -> None:
        self._node = node
        self._p = param
        self._stats = stats
        self._warn_once = warn_once
        self._lock = threading.Lock()
        self._pubs: Dict[str, Any] = {}
        self._grasp_out: Optional[grasp_out.GraspOutputs] = None
        self._collision: Optional[CollisionPublisher] = None
        self._marker_ids: List[int] = []
        self._marker_cache = out.MarkerPreviewCache()
        self._frame_id = ""

    def create(self) -> None:
        """Create the lifecycle publishers."""
        node = self._node
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                              history=HistoryPolicy.KEEP_LAST)
        for key, msg_type, topic in (
            ("objects", ReconstructedObjectArray, "~/objects"),
            ("detections", Detection3DArray, "~/detections"),
            ("markers", MarkerArray, "~/markers"), ("points", PointCloud2, "~/points"),
            ("debug", Image, "~/debug_image"),
        ):
            self._pubs[key] = node.create_lifecycle_publisher(msg_type, topic, reliable)
        self._pubs["tf"] = node.create_lifecycle_publisher(
            TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self._grasp_out = grasp_out.GraspOutputs(
            RCLPY,
            node.create_lifecycle_publisher(GraspArray, "~/grasps", reliable),
            node.create_lifecycle_publisher(PoseArray, "~/grasp_poses", reliable),
            node.create_lifecycle_publisher(MarkerArray, "~/grasp_markers", reliable))
        # MoveIt's planning scene monitor subscribes reliable + volatile (keep-last 1024):
        # match it, with room for one operation per object of a few frames.
        self._collision = CollisionPublisher(node.create_lifecycle_publisher(
            CollisionObject, "/collision_object",
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)))

    def destroy(self) -> None:
        """Destroy the publishers."""
        for pub in self._pubs.values():
            self._node.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if self._grasp_out is not None:
            for pub in self._grasp_out.publishers:
                self._node.destroy_lifecycle_publisher(pub)
            self._grasp_out = None
        if self._collision is not None:
            self._node.destroy_lifecycle_publisher(self._collision.publisher)
            self._collision = None

    def clear(self) -> None:
        """Delete the markers and take our objects out of MoveIt's scene (deactivation)."""
        markers = self._pubs.get("markers")
        if markers is not None and self._marker_ids:
            markers.publish(out.delete_all_markers(RCLPY, Header(stamp=self._now())))
            self._marker_ids = []
        self._marker_cache.clear()
        header = Header(stamp=self._now())
        if self._grasp_out is not None:
            self._grasp_out.clear_markers(header)
        if self._collision is not None:
            # The node stops maintaining them: take our objects out of MoveIt's scene.
            self._collision.remove_all(Header(stamp=header.stamp, frame_id=self._frame_id))

    def _now(self) -> Any:
        return self._node.get_clock().now().to_msg()

    def publish(self, cam: CameraFrame, objects: Sequence[ObjectReconstruction],
                timings: Dict[str, float], result: Optional[Dict[str, Any]], total_s: float,
                grasps: Optional[Sequence[Sequence[Any]]], names: Sequence[str],
                gripper: Any, tracked: Sequence[int]) -> None:
        """Publish one frame's result.

        Args:
            cam: the frame and its header.
            objects: the objects with their final ids.
            timings: seconds per stage.
            result: the hosted result of a written run, or ``None``.
            total_s: receive-to-publish seconds.
            grasps: per object, or ``None`` without a grasp planner.
            names: segmentation and reconstruction backend names.
            gripper: the gripper of the grasp markers.
            tracked: ids the tracker holds (collision objects of the others are removed).
        """
        header = cam.header
        self._frame_id = header.frame_id

        @functools.lru_cache(maxsize=1)
        def plane() -> Any:
            """The support plane, fitted once and only when an output needs it."""
            from sam3d_ros.backends.grasp.analytic import AnalyticGraspPlanner

            return AnalyticGraspPlanner.fit_plane(cam.frame, objects) if objects else None

        if not header.frame_id:
            self._warn_once("empty_frame_id",
                            "the image header has an empty frame_id; outputs and TF need one")
        pubs = self._pubs
        if self._p("publish_tf") and pubs.get("tf") is not None and objects:
            # TF has no delete: frames of objects gone are simply no longer published.
            pubs["tf"].publish(out.tf_msg(RCLPY, header, objects, self._p("tf_prefix")))
            now = self._node.get_clock().now().nanoseconds * 1e-9
            self._stats.latency("frame_to_tf", now - stamp_seconds(header))
        self._stats.latency("receive_to_publish", total_s)
        for stage, seconds in timings.items():
            self._stats.latency(stage, seconds)
        if _has_subscribers(pubs.get("detections")):
            pubs["detections"].publish(out.detections_msg(RCLPY, header, objects))
        if _has_subscribers(pubs.get("objects")):
            pubs["objects"].publish(out.objects_array_msg(
                RCLPY, header, objects, timings, names[0], names[1], result, cam.frame.camera_pose,
                total_s))
        if pubs.get("markers") is not None:
            with self._lock:
                previous, self._marker_ids = self._marker_ids, [o.object_id for o in objects]
            if _has_subscribers(pubs["markers"]):
                t_markers = time.monotonic()
                support = plane()  # labels go "above" along its normal
                pubs["markers"].publish(out.markers_msg(
                    RCLPY, header, objects, previous, int(self._p("marker_max_triangles")),
                    cache=self._marker_cache,
                    up=support.normal if support is not None else None))
                self._stats.latency("markers", time.monotonic() - t_markers)
        if _has_subscribers(pubs.get("points")):
            pubs["points"].publish(
                out.points_msg(RCLPY, header, cam.frame.points, cam.frame.rgb, objects))
        if _has_subscribers(pubs.get("debug")):
            img = out.debug_image(cam.frame.rgb, objects, cam.frame.intrinsics)
            pubs["debug"].publish(numpy_to_image(img, "rgb8", header))
        self._publish_grasps(cam, objects, grasps, gripper, tracked, plane)

    def _publish_grasps(self, cam: CameraFrame, objects: Sequence[ObjectReconstruction],
                        grasps: Optional[Sequence[Sequence[Any]]], gripper: Any,
                        tracked: Sequence[int], plane: Callable[[], Any]) -> None:
        """~/grasps, ~/grasp_poses, ~/grasp_markers and /collision_object (last: the heaviest)."""
        tcp = float(self._p("tcp_offset_m"))
        if grasps is not None and self._grasp_out is not None and self._p("publish_grasps"):
            self._grasp_out.publish(cam.header, objects, grasps, gripper, tcp,
                                    int(self._p("grasp_marker_max")))
        if self._collision is None:
            return
        if not self._p("publish_collision_objects"):
            self._collision.remove_all(cam.header)  # switched off: take ours out of MoveIt
            return
        options = SceneOptions(
            prefix=self._p("tf_prefix"), max_triangles=int(self._p("collision_max_triangles")),
            subframes=int(self._p("collision_grasp_subframes")), tcp_offset=tcp,
            support_plane=bool(self._p("collision_support_plane")))
        self._collision.publish(cam.header, objects, grasps, list(tracked), options, plane)
