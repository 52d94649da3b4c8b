"""Mesh-sized sequences of the rosbags kit serialised in one copy (core.recording.bulk_cdr).

The node's output builders with the rosbags kit leave points, colours and triangles as numpy
arrays; the bytes written must be the ones rosbags' own serialiser writes for the same message
built element by element (no ROS graph, no rclpy).
"""

import numpy as np
import pytest

from sam3d_ros.core import output_messages as out
from sam3d_ros.core.message_kit import MessageKit
from sam3d_ros.core.recording import bulk_cdr
from sam3d_ros.core.recording.typestore import RosbagsKit, make_typestore
from sam3d_ros.core.types import Gaussians, Mesh, ObjectReconstruction


class ElementKit(RosbagsKit):
    """The rosbags kit building one message per element, as rosbags' serialiser expects."""

    points = MessageKit.points
    colors = MessageKit.colors
    triangles = MessageKit.triangles


def stock_store():
    """A type store with rosbags' own serialisers only (make_typestore is cached)."""
    return make_typestore.__wrapped__("jazzy")


def make_object(n_vertices, object_id, seed):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n_vertices, 3)).astype(np.float32)
    # An odd triangle count leaves the vertices' length prefix 8-aligned: their data needs
    # padding (the alignment CDR asks for).
    n_faces = 2 * n_vertices + (object_id % 2) if n_vertices else 0
    f = rng.integers(0, max(n_vertices, 1), size=(n_faces, 3)).astype(np.int32)
    g = Gaussians(np.zeros((1, 3), np.float32), np.full((1, 3), 0.01, np.float32),
                  np.array([[0, 0, 0, 1]], np.float32), np.full((1, 3), 0.5, np.float32),
                  np.ones(1, np.float32))
    return ObjectReconstruction(
        object_id=object_id, object_index=object_id,
        mesh=Mesh(v, f, rng.integers(0, 256, size=(n_vertices, 3)).astype(np.uint8)),
        gaussians=g, rotation=np.array([0.0, 0.0, 0.0, 1.0]),
        translation=np.array([0.1, -0.2, 0.7]), scale=np.full(3, 0.1),
        region=np.zeros((4, 4), bool), label="mug" * object_id, score=0.5)


def both(build):
    """``build(kit)`` with the bulk kit and the element kit (their stores are separate)."""
    bulk_kit = RosbagsKit(make_typestore("jazzy"))
    element_kit = ElementKit(stock_store())
    return (bulk_kit, build(bulk_kit)), (element_kit, build(element_kit))


@pytest.mark.parametrize("sizes", [(0,), (1,), (5, 0, 37), (1000, 3)])
@pytest.mark.parametrize("little_endian", [True, False])
def test_builders_write_the_bytes_of_element_messages(sizes, little_endian):
    objects = [make_object(n, i + 1, seed=i) for i, n in enumerate(sizes)]

    def build(kit):
        header = kit.Header(frame_id="camera_color_optical_frame"[:len(sizes) + 5],
                            stamp=kit.Time(sec=12, nanosec=345))
        return {
            "visualization_msgs/msg/MarkerArray": out.markers_msg(kit, header, objects, [9],
                                                                  max_triangles=0),
            "sam3d_ros/msg/ReconstructedObjectArray": out.objects_array_msg(
                kit, header, objects, {"segment": 0.25}, "seg", "rec"),
        }

    (bulk_kit, bulk), (element_kit, element) = both(build)
    assert isinstance(bulk["visualization_msgs/msg/MarkerArray"].markers[0].points, np.ndarray)
    for typename in bulk:
        got = bulk_kit.store.serialize_cdr(bulk[typename], typename,
                                          little_endian=little_endian)
        want = element_kit.store.serialize_cdr(element[typename], typename,
                                              little_endian=little_endian)
        assert bytes(got) == bytes(want), typename


def test_read_back_values_and_lists_still_serialise():
    obj = make_object(7, 3, seed=4)
    store = make_typestore("jazzy")
    kit = RosbagsKit(store)
    header = kit.Header(frame_id="cam")
    marker = out.mesh_marker(kit, header, obj)
    raw = store.serialize_cdr(marker, "visualization_msgs/msg/Marker")
    back = store.deserialize_cdr(raw, "visualization_msgs/msg/Marker")
    corners = np.asarray(obj.mesh.faces).reshape(-1)
    want = out.object_vertices_m(obj)[corners]
    assert np.array_equal([[p.x, p.y, p.z] for p in back.points], want)
    assert np.allclose([[c.r, c.g, c.b, c.a] for c in back.colors],
                       np.c_[obj.mesh.colors[corners] / 255.0, np.ones(len(corners))], atol=1e-7)
    # A message read back holds lists of element messages: written again, the same bytes.
    assert bytes(store.serialize_cdr(back, "visualization_msgs/msg/Marker")) == bytes(raw)


def test_flat_element_types_and_a_wrong_array_is_named():
    store = make_typestore("jazzy")
    assert bulk_cdr.flat_dtype(store, "geometry_msgs/msg/Point") == (np.dtype("<f8"), 3)
    assert bulk_cdr.flat_dtype(store, "std_msgs/msg/ColorRGBA") == (np.dtype("<f4"), 4)
    assert bulk_cdr.flat_dtype(store, "shape_msgs/msg/MeshTriangle") == (np.dtype("<u4"), 3)
    assert bulk_cdr.flat_dtype(store, "geometry_msgs/msg/Pose") is None
    kit = RosbagsKit(store)
    marker = kit.Marker()
    marker.points = np.zeros((4, 2))
    with pytest.raises(ValueError, match="points: expected an N×3 float64 array"):
        store.serialize_cdr(marker, "visualization_msgs/msg/Marker")
