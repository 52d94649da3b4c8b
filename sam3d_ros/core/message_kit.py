"""Message kits: the classes the shared output builders instantiate, rclpy's or rosbags'.

The node publishes rclpy messages; an offline run (:mod:`sam3d_ros.core.recording`) writes the
same messages into a recording with rosbags, without ROS. Rather than two sets of builders, the
builders (:mod:`~sam3d_ros.core.output_messages`, :mod:`~sam3d_ros.core.grasp_messages`,
:func:`~sam3d_ros.core.point_clouds.pointcloud2_from_arrays`) take a *kit* and build
``kit.Point(...)``, ``kit.Marker(...)``: one builder, two message libraries.

A kit's classes (attributes named as in :data:`MESSAGE_TYPES`) construct from keyword arguments
for any subset of their fields (the rest take the message defaults), allow attribute assignment
and carry the message constants (``kit.Marker.ADD``), as rclpy's generated classes do. The bulk
helpers turn the long arrays of meshes and point clouds into a sequence field's value; a kit
overrides them where its library has a faster way (rclpy: filling slots; rosbags: the array
itself, serialised in one copy).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

MESSAGE_TYPES: Mapping[str, str] = {
    "ArtifactFile": "sam3d_ros/msg/ArtifactFile",
    "Artifacts": "sam3d_ros/msg/Artifacts",
    "ColorRGBA": "std_msgs/msg/ColorRGBA",
    "Detection3D": "vision_msgs/msg/Detection3D",
    "Detection3DArray": "vision_msgs/msg/Detection3DArray",
    "DiagnosticArray": "diagnostic_msgs/msg/DiagnosticArray",
    "DiagnosticStatus": "diagnostic_msgs/msg/DiagnosticStatus",
    "Duration": "builtin_interfaces/msg/Duration",
    "GraspArray": "sam3d_ros/msg/GraspArray",
    "GraspMsg": "sam3d_ros/msg/Grasp",
    "Header": "std_msgs/msg/Header",
    "KeyValue": "diagnostic_msgs/msg/KeyValue",
    "Marker": "visualization_msgs/msg/Marker",
    "MarkerArray": "visualization_msgs/msg/MarkerArray",
    "MeshMsg": "shape_msgs/msg/Mesh",
    "MeshTriangle": "shape_msgs/msg/MeshTriangle",
    "ObjectHypothesisWithPose": "vision_msgs/msg/ObjectHypothesisWithPose",
    "Point": "geometry_msgs/msg/Point",
    "PointCloud2": "sensor_msgs/msg/PointCloud2",
    "PointField": "sensor_msgs/msg/PointField",
    "Pose": "geometry_msgs/msg/Pose",
    "PoseArray": "geometry_msgs/msg/PoseArray",
    "ReconstructedObject": "sam3d_ros/msg/ReconstructedObject",
    "ReconstructedObjectArray": "sam3d_ros/msg/ReconstructedObjectArray",
    "StageTiming": "sam3d_ros/msg/StageTiming",
    "TFMessage": "tf2_msgs/msg/TFMessage",
    "Time": "builtin_interfaces/msg/Time",
    "TransformStamped": "geometry_msgs/msg/TransformStamped",
    "Vector3": "geometry_msgs/msg/Vector3",
}
"""Kit attribute → ROS type name of every message class the builders use."""


class MessageKit:
    """The message classes of one library (see the module docstring).

    Args:
        classes: kit attribute (a key of :data:`MESSAGE_TYPES`) → message class.
    """

    def __init__(self, classes: Mapping[str, Any]) -> None:
        missing = sorted(set(MESSAGE_TYPES) - set(classes))
        if missing:
            raise ValueError(f"message kit lacks {missing}")
        for name, cls in classes.items():
            setattr(self, name, cls)

    def points(self, xyz: np.ndarray) -> Any:
        """``geometry_msgs/Point[]`` of an N×3 ``float64`` array."""
        point = self.Point
        return [point(x=x, y=y, z=z) for x, y, z in xyz.tolist()]

    def colors(self, rgb: np.ndarray, alpha: float) -> Any:
        """``std_msgs/ColorRGBA[]`` of an N×3 ``float64`` array of 0..1 values, alpha ``alpha``."""
        color = self.ColorRGBA
        return [color(r=r, g=g, b=b, a=alpha) for r, g, b in rgb.tolist()]

    def triangles(self, faces: np.ndarray) -> Any:
        """``shape_msgs/MeshTriangle[]`` of an F×3 ``uint32`` array."""
        triangle = self.MeshTriangle
        return [triangle(vertex_indices=row) for row in faces]

    def set_bytes(self, msg: Any, data: np.ndarray) -> None:
        """Store a C-contiguous array's bytes as the ``uint8[]`` field ``msg.data``."""
        msg.data = np.frombuffer(memoryview(np.ascontiguousarray(data)).cast("B"),
                                 dtype=np.uint8).copy()
