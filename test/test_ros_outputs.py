"""Output messages built directly from core results (no ROS graph)."""

import json

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.serialization import deserialize_message, serialize_message
from sam3d_ros.msg import ReconstructedObjectArray
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from sam3d_ros.core import conventions as conv
from sam3d_ros.core import output_messages as out
from sam3d_ros.core.point_clouds import pointcloud2_to_arrays
from sam3d_ros.core.types import CameraIntrinsics, Gaussians, MaskCrop, Mesh, ObjectReconstruction
from sam3d_ros.ros.message_kit import RCLPY

HEADER = Header(frame_id="cam_optical")
HEADER.stamp.sec = 12
K = CameraIntrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)


def cube_object(object_id=5, index=0, t=(0.1, -0.05, 0.8), yaw=0.3, extents=(0.06, 0.04, 0.1)):
    v = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)],
                 np.float32)
    ext = np.array(extents)
    scale = float(ext.max())
    v = v * (ext / scale)  # canonical: largest extent = 1
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]],
                     np.int32)
    colors = np.tile(np.array([[200, 10, 30]], np.uint8), (8, 1))
    q = np.array([0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)])
    mask = np.zeros((48, 64), bool)
    mask[20:30, 30:40] = True
    g = Gaussians(np.zeros((1, 3), np.float32), np.full((1, 3), 0.01, np.float32),
                  np.array([[0, 0, 0, 1]], np.float32), np.full((1, 3), 0.5, np.float32),
                  np.ones(1, np.float32))
    return ObjectReconstruction(object_id=object_id, object_index=index,
                                mesh=Mesh(v, faces, colors), gaussians=g, rotation=q,
                                translation=np.array(t), scale=np.full(3, scale), region=mask,
                                label="box", score=0.75, extents=ext)


def test_object_message_mesh_in_object_frame_metres():
    obj = cube_object()
    msg = out.reconstructed_object_msg(RCLPY, obj, "file:///a.glb", "file:///a.ply")
    assert (msg.id, msg.object_index, msg.label, msg.score) == (5, 0, "box", 0.75)
    v = np.array([[p.x, p.y, p.z] for p in msg.mesh.vertices])
    assert np.allclose(np.ptp(v, axis=0), [0.06, 0.04, 0.1], atol=1e-6)
    assert np.allclose([msg.size.x, msg.size.y, msg.size.z], [0.06, 0.04, 0.1])
    assert np.allclose([msg.scale.x, msg.scale.y, msg.scale.z], 0.1)
    # Pose maps the object frame to the camera: same as canonical_to_camera of the core.
    q = [msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z,
         msg.pose.orientation.w]
    t = [msg.pose.position.x, msg.pose.position.y, msg.pose.position.z]
    ref = conv.canonical_to_camera(obj.mesh.vertices.astype(np.float64), obj.rotation,
                                 obj.translation, obj.scale)
    assert np.allclose(conv.quat_rotate(q, v) + t, ref, atol=1e-6)
    assert [list(tri.vertex_indices) for tri in msg.mesh.triangles] == obj.mesh.faces.tolist()
    assert len(msg.vertex_colors) == 8
    assert msg.vertex_colors[0].r == pytest.approx(200 / 255)
    assert msg.mesh_uri == "file:///a.glb" and msg.splat_uri == "file:///a.ply"


def test_fast_elements_serialise_like_checked_ones():
    array = out.objects_array_msg(RCLPY, HEADER, [cube_object(), cube_object(6, 1)],
                                  {"segment": 0.1, "reconstruct": 0.2}, "embedded", "embedded",
                                  total_s=0.35)
    back = deserialize_message(serialize_message(array), ReconstructedObjectArray)
    assert back.objects[1].mesh.vertices[3].z == pytest.approx(array.objects[1].mesh.vertices[3].z)
    assert list(back.objects[0].mesh.triangles[5].vertex_indices) == [0, 5, 1]
    assert [(t.stage, round(t.seconds, 3)) for t in back.timings] == [
        ("segment", 0.1), ("reconstruct", 0.2), ("total", 0.35)]
    assert back.header.frame_id == "cam_optical" and back.camera_pose.orientation.w == 1.0


def test_artifacts_from_hosted_result():
    entry = {"url": "file:///r/scene.glb", "content_type": "model/gltf-binary",
             "file_name": "scene.glb", "file_size": 10}
    result = {"model_glb": entry, "gaussian_splat": dict(entry, file_name="scene.ply"),
              "metadata": [{"object_index": 0}], "individual_glbs": [entry, entry],
              "individual_splats": [entry], "artifacts_zip": entry}
    msg = out.artifacts_msg(RCLPY, result)
    assert msg.model_glb.file_size == 10 and len(msg.individual_glbs) == 2
    assert json.loads(msg.result_json) == result
    assert out.artifacts_msg(RCLPY, None).result_json == ""
    arr = out.objects_array_msg(RCLPY, HEADER, [cube_object(), cube_object(6, 1)], result=result)
    assert arr.objects[0].mesh_uri == entry["url"] and arr.objects[1].splat_uri == ""


def test_detections_and_tf_agree():
    objs = [cube_object(5, 0), cube_object(9, 1, t=(-0.2, 0.0, 0.9))]
    dets = out.detections_msg(RCLPY, HEADER, objs)
    tf = out.tf_msg(RCLPY, HEADER, objs, "p_")
    assert [d.id for d in dets.detections] == ["5", "9"]
    assert [t.child_frame_id for t in tf.transforms] == ["p_5", "p_9"]
    for det, tr in zip(dets.detections, tf.transforms, strict=True):
        assert tr.header.frame_id == det.header.frame_id == "cam_optical"
        assert det.bbox.center.position.x == tr.transform.translation.x
        assert det.bbox.center.orientation == tr.transform.rotation
        assert det.results[0].pose.pose == det.bbox.center
        assert det.results[0].hypothesis.class_id == "box"
        assert det.results[0].hypothesis.score == 0.75


def test_markers_mesh_label_and_deletes():
    objs = [cube_object(5, 0), cube_object(9, 1)]
    arr = out.markers_msg(RCLPY, HEADER, objs, previous_ids=[5, 7])
    adds = [m for m in arr.markers if m.action == Marker.ADD]
    deletes = [(m.ns, m.id) for m in arr.markers if m.action == Marker.DELETE]
    assert sorted((m.ns, m.id, m.type) for m in adds) == [
        (out.LABEL_NS, 5, Marker.TEXT_VIEW_FACING), (out.LABEL_NS, 9, Marker.TEXT_VIEW_FACING),
        (out.MESH_NS, 5, Marker.TRIANGLE_LIST), (out.MESH_NS, 9, Marker.TRIANGLE_LIST)]
    assert sorted(deletes) == [(out.LABEL_NS, 7), (out.MESH_NS, 7)]
    mesh = next(m for m in adds if m.type == Marker.TRIANGLE_LIST)
    assert len(mesh.points) == 36 and len(mesh.colors) == 36
    assert mesh.pose.position.z == pytest.approx(0.8)
    label = next(m for m in adds if m.type == Marker.TEXT_VIEW_FACING)
    assert label.text == "5 box" and label.pose.position.y < -0.05  # above the object
    small = out.mesh_marker(RCLPY, HEADER, objs[0], max_triangles=4)
    assert len(small.points) == 12
    clear = out.delete_all_markers(RCLPY, HEADER)
    assert clear.markers[0].action == Marker.DELETEALL


def _label_position(marker):
    return np.array([marker.pose.position.x, marker.pose.position.y, marker.pose.position.z])


def test_label_goes_above_the_box_along_the_support_plane_normal():
    # A table seen by a camera pitched 50° down: its normal (toward the camera) is far from −y.
    tilt = np.radians(50.0)
    normal = np.array([0.0, -np.cos(tilt), -np.sin(tilt)])
    # A box standing on the table: its z axis (0.1 m, the height) along the normal.
    x_axis = np.array([1.0, 0.0, 0.0])
    axes = np.column_stack([x_axis, np.cross(normal, x_axis), normal])
    obj = cube_object(3, t=(0.05, 0.1, 0.7))
    obj.rotation = conv.matrix_to_quat(axes)
    corners = conv.posed_vertices(obj)  # the box's 8 corners, camera frame
    t = np.asarray(obj.translation)

    arr = out.markers_msg(RCLPY, HEADER, [obj], up=normal)
    label = _label_position(next(m for m in arr.markers if m.ns == out.LABEL_NS))
    # On the normal through the box centre, the gap above the box's top face.
    assert np.allclose(label, t + (0.05 + out.LABEL_GAP_M) * normal, atol=1e-9)
    assert (label - t) @ normal == pytest.approx(np.max((corners - t) @ normal)
                                                 + out.LABEL_GAP_M)
    # Camera −y (no plane known) would put it off to the side of the tilted box's top.
    level = _label_position(out.label_marker(RCLPY, HEADER, obj))
    assert np.linalg.norm(np.cross(level - t, normal)) > 0.05
    assert np.allclose(np.cross(level - t, [0.0, -1.0, 0.0]), 0.0)
    # A normal of any length is a direction.
    scaled = out.label_marker(RCLPY, HEADER, obj, up=3.0 * normal)
    assert np.allclose(_label_position(scaled), label)
    with pytest.raises(ValueError, match="up"):
        out.label_marker(RCLPY, HEADER, obj, up=[0.0, 0.0, 0.0])


def test_points_of_masks_with_object_index():
    objs = [cube_object(5, 0), cube_object(9, 1)]
    corner = np.zeros((48, 64), bool)
    corner[0:8, 0:8] = True
    objs[1].region = MaskCrop.of(corner)
    depth = np.full((48, 64), 1.0, np.float32)
    depth[20:30, 36:40] = 2.5  # the right band of object 0's mask sees the background
    points = conv.backproject(depth, K)
    points[24, 32] = np.nan  # invalid depth pixel: skipped
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 1] = 77
    cloud = pointcloud2_to_arrays(out.points_msg(RCLPY, HEADER, points, rgb, objs))
    index = np.asarray(cloud.object_index)
    xyz = np.asarray(cloud.xyz)
    # Only the objects' own depth: no background band, no invalid pixel, every object present.
    assert np.sum(index == 0) > 20 and np.sum(index == 1) > 20
    assert np.allclose(xyz[:, 2], 1.0)
    assert np.all(np.isfinite(xyz))
    assert np.all(np.asarray(cloud.rgb)[:, 1] == 77)


def test_points_are_the_depth_pixels_the_backend_kept():
    """A backend that ran the depth hygiene names the pixels it kept (``depth_pixels``): the
    cloud is those, not a second hygiene's; for another image size it is found again."""
    obj = cube_object(5, 0)
    depth = np.full((48, 64), 1.0, np.float32)
    points = conv.backproject(depth, K)
    rgb = np.zeros((48, 64, 3), np.uint8)
    own = np.zeros((48, 64), bool)
    own[22:25, 33:36] = True  # 9 pixels of the 10 x 10 mask
    obj.depth_pixels = MaskCrop.of(own)
    cloud = pointcloud2_to_arrays(out.points_msg(RCLPY, HEADER, points, rgb, [obj]))
    rows = np.rint(np.asarray(cloud.xyz)[:, 1] * K.fy + K.cy).astype(int)  # depth 1 m
    cols = np.rint(np.asarray(cloud.xyz)[:, 0] * K.fx + K.cx).astype(int)
    assert sorted(zip(rows, cols, strict=True)) == sorted(zip(*np.nonzero(own), strict=True))
    obj.depth_pixels = MaskCrop.of(np.ones((10, 10), bool))  # another image's
    again = pointcloud2_to_arrays(out.points_msg(RCLPY, HEADER, points, rgb, [obj]))
    obj.depth_pixels = None
    fresh = pointcloud2_to_arrays(out.points_msg(RCLPY, HEADER, points, rgb, [obj]))
    assert len(np.asarray(fresh.xyz)) > 50
    assert np.array_equal(np.asarray(again.xyz), np.asarray(fresh.xyz))


def test_debug_image_draws_masks_boxes_axes_and_label():
    obj = cube_object()
    obj.translation = np.array([0.0, 0.0, 1.0])
    rgb = np.full((48, 64, 3), 128, np.uint8)
    img = out.debug_image(rgb, [obj], K)
    assert img.shape == rgb.shape and img.dtype == np.uint8 and not np.shares_memory(img, rgb)
    assert np.all(rgb == 128)  # input untouched
    color = np.array(out.object_color(5))
    inside = img[27, 35].astype(int)
    assert np.all(np.abs(inside - (0.55 * 128 + 0.45 * color)) <= 2)  # blended mask
    assert np.all(img[20, 30:40] == color)  # box outline on the mask's top edge
    u, v = conv.project(np.array([[0.05, 0.0, 1.0]]), K)  # end of the x axis (red)
    assert img[int(round(v[0])), int(round(u[0])) - 1].tolist() == [255, 0, 0]
    assert np.any(img[:20] != 128)  # label drawn above the box


def test_diagnostics_rate_and_latency():
    meter = out.RateMeter(window_s=5.0)
    for i in range(11):
        meter.tick(100.0 + 0.1 * i)
    assert meter.rate(101.0) == pytest.approx(10.0)
    assert meter.rate(110.0) == 0.0
    stats = out.LatencyStats(size=3)
    for s in (1.0, 2.0, 3.0, 4.0):
        stats.add("segment", s)
    assert stats.summary()["segment"] == (4.0, 3.0, pytest.approx(3.9))
    msg = out.diagnostics_msg(RCLPY, HEADER.stamp, "sam3d: pipeline", "/sam3d", "ERROR",
                              "depth: bad", {"frames": 3, "latency_ms": 12.3456})
    status = msg.status[0]
    assert status.level == DiagnosticStatus.ERROR and status.message == "depth: bad"
    assert [(kv.key, kv.value) for kv in status.values] == [("frames", "3"),
                                                            ("latency_ms", "12.35")]
