"""MoveIt planning-scene messages and their ADD / MOVE / REMOVE logic (no ROS graph)."""

import numpy as np
import pytest
import trimesh
from moveit_msgs.msg import CollisionObject
from rclpy.serialization import deserialize_message, serialize_message
from shape_msgs.msg import SolidPrimitive
from std_msgs.msg import Header

from sam3d_ros.core import conventions as conv
from sam3d_ros.core.grasp_messages import published_pose
from sam3d_ros.core.output_messages import object_vertices_m
from sam3d_ros.core.types import Gaussians, Grasp, Mesh, ObjectReconstruction
from sam3d_ros.ros import moveit_scene as ms

HEADER = Header(frame_id="cam_optical")
ADD, MOVE, REMOVE = (int.from_bytes(c, "little") for c in (
    CollisionObject.ADD, CollisionObject.MOVE, CollisionObject.REMOVE))
OPTS = ms.SceneOptions(prefix="obj_", max_triangles=200, subframes=2)


def op(msg):
    return int.from_bytes(msg.operation, "little")


def xyz(p):
    return np.array([p.x, p.y, p.z])


def xyzw(q):
    return np.array([q.x, q.y, q.z, q.w])


def make_object(object_id=3, t=(0.05, 0.02, 0.7), yaw=0.4, mesh=None, size=0.1, label="mug"):
    """A reconstruction of a closed mesh (canonical: largest extent 1) of ``size`` metres."""
    mesh = mesh if mesh is not None else trimesh.creation.icosphere(3)
    v = np.asarray(mesh.vertices, np.float64)
    v = (v - 0.5 * (v.min(0) + v.max(0))) / np.ptp(v, axis=0).max()
    colours = np.full((len(v), 3), 128, np.uint8)
    g = Gaussians(np.zeros((1, 3), np.float32), np.full((1, 3), 0.01, np.float32),
                  np.array([[0, 0, 0, 1]], np.float32), np.full((1, 3), 0.5, np.float32),
                  np.ones(1, np.float32))
    q = np.array([0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)])
    return ObjectReconstruction(
        object_id=object_id, object_index=0,
        mesh=Mesh(v.astype(np.float32), np.asarray(mesh.faces, np.int32), colours), gaussians=g,
        rotation=q, translation=np.array(t, np.float64), scale=np.full(3, size),
        region=np.zeros((4, 4), bool), label=label, extents=np.ptp(v, axis=0) * size)


def grasps_on(obj, n=3):
    out = []
    for k in range(n):
        approach = np.array([0.0, np.sin(0.3 * k), np.cos(0.3 * k)])
        q = conv.grasp_quaternion(approach, [1.0, 0.0, 0.0])
        out.append(Grasp(position=np.asarray(obj.translation) + [0.0, 0.0, -0.01 * k],
                         orientation=q, width=0.05, score=1.0 - 0.1 * k))
    return out


class Plane:
    """A table 0.75 m below the camera along a tilted 'up' (normal towards the camera)."""

    normal = np.array([0.0, -0.8, -0.6])
    offset = 0.75


# --------------------------------------------------------------------------------------------
# Decimation


@pytest.mark.parametrize("cap", [2000, 500, 100])
@pytest.mark.parametrize("shape", ["icosphere", "box", "capsule", "thin_plate"])
def test_decimation_keeps_the_mesh_closed_and_close(shape, cap):
    mesh = {"icosphere": trimesh.creation.icosphere(4),
            "box": trimesh.creation.box([0.1, 0.06, 0.03]).subdivide().subdivide().subdivide(),
            "capsule": trimesh.creation.capsule(0.1, 0.03, count=[48, 48]),
            "thin_plate": trimesh.creation.box([0.1, 0.1, 0.002]).subdivide().subdivide()
            .subdivide().subdivide()}[shape]
    assert ms.is_closed_manifold(mesh.faces)
    v, f = ms.decimate_closed(mesh.vertices, mesh.faces, cap)
    assert len(f) <= max(cap, len(mesh.faces) if len(mesh.faces) <= cap else cap)
    assert ms.is_closed_manifold(f)
    out = trimesh.Trimesh(v, f, process=False)
    assert out.is_watertight and out.is_winding_consistent  # an independent check
    size = np.ptp(mesh.vertices, axis=0).max()
    if cap >= 500:  # volume and extent survive a reduction to a few hundred triangles
        assert abs(out.volume / mesh.volume - 1) < 0.05, out.volume / mesh.volume
        assert np.allclose(np.ptp(v, axis=0), np.ptp(mesh.vertices, axis=0), atol=0.05 * size)
    # Surfaces close both ways (dense samples stand in for the surfaces; no rtree here).
    from scipy.spatial import cKDTree

    a, b = mesh.sample(20000, seed=0), out.sample(20000, seed=0)
    gap = max(np.percentile(cKDTree(a).query(b)[0], 99), np.percentile(cKDTree(b).query(a)[0], 99))
    assert gap < (0.04 if cap >= 500 else 0.15) * size, gap / size


def test_decimation_leaves_small_meshes_alone_and_cap_zero_keeps_all():
    mesh = trimesh.creation.icosphere(2)
    for cap in (0, len(mesh.faces)):
        v, f = ms.decimate_closed(mesh.vertices, mesh.faces, cap)
        assert np.array_equal(f, mesh.faces) and np.allclose(v, mesh.vertices)


def test_closed_manifold_check_rejects_holes_and_duplicates():
    faces = trimesh.creation.icosphere(1).faces
    assert ms.is_closed_manifold(faces)
    assert not ms.is_closed_manifold(faces[1:])                       # a hole
    assert not ms.is_closed_manifold(np.vstack([faces, faces[:1]]))   # a doubled triangle
    assert not ms.is_closed_manifold(faces[:, ::-1][:1].tolist() + faces[1:].tolist())  # flip


# --------------------------------------------------------------------------------------------
# ADD / MOVE / REMOVE


def test_add_carries_pose_mesh_in_object_frame_and_grasp_subframes():
    obj = make_object(label="mug")
    grasps = grasps_on(obj)
    msgs = ms.CollisionScene().update(HEADER, [obj], [grasps], [3], OPTS)
    assert len(msgs) == 1
    msg = deserialize_message(serialize_message(msgs[0]), CollisionObject)
    assert (op(msg), msg.id, msg.header.frame_id, msg.type.key) == (ADD, "obj_3", "cam_optical",
                                                                    "mug")
    assert np.allclose(xyz(msg.pose.position), obj.translation)
    assert abs(abs(xyzw(msg.pose.orientation) @ obj.rotation) - 1) < 1e-9
    assert len(msg.meshes) == len(msg.mesh_poses) == 1
    assert msg.mesh_poses[0].orientation.w == 1.0 and xyz(msg.mesh_poses[0].position).sum() == 0
    tri = np.array([t.vertex_indices for t in msg.meshes[0].triangles])
    v = np.array([xyz(p) for p in msg.meshes[0].vertices])
    assert len(tri) <= OPTS.max_triangles and ms.is_closed_manifold(tri)
    # Object frame, metres: the same extent as the reconstruction's own object-frame mesh.
    assert np.allclose(np.ptp(v, axis=0), np.ptp(object_vertices_m(obj), axis=0), atol=0.004)
    # Subframes: the best grasps, relative to the object pose; composing gives them back.
    assert list(msg.subframe_names) == ["grasp_0", "grasp_1"]
    r_obj = conv.quat_to_matrix(obj.rotation)
    for pose, grasp in zip(msg.subframe_poses, grasps, strict=False):
        p = r_obj @ xyz(pose.position) + obj.translation
        q = conv.quat_multiply(obj.rotation, xyzw(pose.orientation))
        assert np.allclose(p, grasp.position, atol=1e-9)
        assert abs(abs(q @ grasp.orientation) - 1) < 1e-9


def test_subframes_with_a_tcp_offset_are_the_end_effector_poses():
    obj = make_object()
    grasps = grasps_on(obj)
    opts = ms.SceneOptions(prefix="obj_", max_triangles=200, subframes=3, tcp_offset=0.1034)
    msg = ms.CollisionScene().update(HEADER, [obj], [grasps], [3], opts)[0]
    r_obj = conv.quat_to_matrix(obj.rotation)
    for pose, grasp in zip(msg.subframe_poses, grasps, strict=True):
        p_ee, _ = published_pose(grasp, 0.1034)
        assert np.allclose(r_obj @ xyz(pose.position) + obj.translation, p_ee, atol=1e-9)
        approach = conv.grasp_axes(grasp.orientation)[2]
        assert np.allclose(p_ee, grasp.position - 0.1034 * approach)


def test_move_remove_and_readd_follow_the_object():
    scene = ms.CollisionScene()
    obj = make_object()
    grasps = [grasps_on(obj)]
    assert [op(m) for m in scene.update(HEADER, [obj], grasps, [3], OPTS)] == [ADD]

    # Same object, a new pose: MOVE with the pose only (MoveIt keeps mesh and subframes).
    moved = make_object(t=(0.09, 0.0, 0.72), yaw=1.1)
    msgs = scene.update(HEADER, [moved], [grasps_on(moved)], [3], OPTS)
    assert [op(m) for m in msgs] == [MOVE]
    assert msgs[0].id == "obj_3" and not msgs[0].meshes and not msgs[0].subframe_names
    assert np.allclose(xyz(msgs[0].pose.position), moved.translation)

    # Jitter below 1 mm / 1°: nothing is sent.
    still = make_object(t=(0.0903, 0.0, 0.72), yaw=1.1 + np.radians(0.3))
    assert scene.update(HEADER, [still], [grasps_on(still)], [3], OPTS) == []

    # Missed in this frame but still tracked: kept. Lost by the tracker: REMOVE.
    assert scene.update(HEADER, [], [], [3], OPTS) == []
    msgs = scene.update(HEADER, [], [], [], OPTS)
    assert [(op(m), m.id) for m in msgs] == [(REMOVE, "obj_3")] and scene.ids == []

    # Back again: ADD; then a different shape under the same id: ADD (replaces).
    assert [op(m) for m in scene.update(HEADER, [obj], grasps, [3], OPTS)] == [ADD]
    bigger = make_object(size=0.15)
    assert [op(m) for m in scene.update(HEADER, [bigger], grasps, [3], OPTS)] == [ADD]
    box = make_object(size=0.15, mesh=trimesh.creation.box([1.0, 0.3, 0.3]))
    assert [op(m) for m in scene.update(HEADER, [box], grasps, [3], OPTS)] == [ADD]


def test_more_grasps_than_the_held_subframes_readd_fewer_do_not():
    scene = ms.CollisionScene()
    obj = make_object()
    assert [len(m.subframe_names) for m in scene.update(HEADER, [obj], [[]], [3], OPTS)] == [0]
    moved = make_object(t=(0.06, 0.02, 0.7))
    msgs = scene.update(HEADER, [moved], [grasps_on(moved, 1)], [3], OPTS)
    assert [(op(m), len(m.subframe_names)) for m in msgs] == [(ADD, 1)]
    moved = make_object(t=(0.07, 0.02, 0.7))
    assert [op(m) for m in scene.update(HEADER, [moved], [[]], [3], OPTS)] == [MOVE]


def test_support_plane_box_under_the_objects():
    scene = ms.CollisionScene()
    opts = ms.SceneOptions(prefix="obj_", max_triangles=200, support_plane=True)
    objects = [make_object(3, t=(0.05, 0.3, 0.5)), make_object(4, t=(-0.2, 0.35, 0.45))]
    msgs = scene.update(HEADER, objects, None, [3, 4], opts, Plane())
    assert [(op(m), m.id) for m in msgs] == [(ADD, "obj_3"), (ADD, "obj_4"),
                                             (ADD, "obj_support_plane")]
    box = msgs[2]
    prim = box.primitives[0]
    assert prim.type == SolidPrimitive.BOX and len(box.primitive_poses) == 1
    dims = np.array(prim.dimensions)
    assert dims[2] == pytest.approx(ms.SUPPORT_THICKNESS_M)
    r = conv.quat_to_matrix(xyzw(box.pose.orientation))
    centre = xyz(box.pose.position)
    normal = Plane.normal / np.linalg.norm(Plane.normal)
    assert np.allclose(r[:, 2], normal)  # box z = the plane normal (up)
    top = centre + r[:, 2] * dims[2] / 2
    assert abs(top @ normal + Plane.offset) < 1e-9  # the top face lies on the plane
    # The top face covers every object's footprint with the margin.
    for obj in objects:
        pts = conv.canonical_to_camera(obj.mesh.vertices.astype(float), obj.rotation,
                                     obj.translation, obj.scale)
        local = (pts - centre) @ r
        assert np.all(np.abs(local[:, :2]) <= dims[:2] / 2 - ms.SUPPORT_MARGIN_M + 1e-9)
    # Objects shift a little: the box moves; support plane off: the box is removed.
    shifted = [make_object(3, t=(0.07, 0.3, 0.5)), make_object(4, t=(-0.18, 0.35, 0.45))]
    msgs = scene.update(HEADER, shifted, None, [3, 4], opts, Plane())
    assert [(op(m), m.id) for m in msgs][-1] == (MOVE, "obj_support_plane")
    msgs = scene.update(HEADER, shifted, None, [3, 4], OPTS)
    assert (REMOVE, "obj_support_plane") in [(op(m), m.id) for m in msgs]
    assert ms.support_box(None, shifted) is None and ms.support_box(Plane(), []) is None


def test_resync_and_remove_all():
    scene = ms.CollisionScene()
    obj = make_object()
    scene.update(HEADER, [obj], [grasps_on(obj)], [3], OPTS)
    moved = make_object(t=(0.1, 0.02, 0.7))
    scene.update(HEADER, [moved], [grasps_on(moved)], [3], OPTS)
    late = Header(frame_id="cam_optical")
    late.stamp.sec = 9
    again = scene.resync(late)
    assert [(op(m), m.id, m.header.stamp.sec) for m in again] == [(ADD, "obj_3", 9)]
    assert np.allclose(xyz(again[0].pose.position), moved.translation)  # the latest pose
    assert len(again[0].meshes) == 1 and len(again[0].subframe_names) == 2
    assert [(op(m), m.id) for m in scene.remove_all(HEADER)] == [(REMOVE, "obj_3")]
    assert scene.ids == [] and scene.resync(HEADER) == []


class FakePublisher:
    """Contract fake of an rclpy publisher: records messages, settable subscriber count."""

    def __init__(self, subscribers=1):
        self.subscribers = subscribers
        self.sent = []

    def get_subscription_count(self):
        return self.subscribers

    def publish(self, msg):
        self.sent.append(msg)


def test_publisher_resyncs_late_subscribers_and_idles_without_any():
    pub = FakePublisher(subscribers=0)
    out = ms.CollisionPublisher(pub)
    obj = make_object()
    calls = []

    def plane():
        calls.append(1)
        return Plane()

    opts = ms.SceneOptions(prefix="obj_", max_triangles=200, support_plane=True)
    assert out.publish(HEADER, [obj], None, [3], opts, plane) == [] and pub.sent == []
    assert calls == []  # nothing is computed for nobody
    pub.subscribers = 1
    assert [op(m) for m in out.publish(HEADER, [obj], None, [3], opts, plane)] == [ADD, ADD]
    assert calls == [1]
    pub.subscribers = 2  # a second subscriber (e.g. a restarted move_group) joins
    sent = out.publish(HEADER, [obj], None, [3], opts, plane)
    assert sorted((op(m), m.id) for m in sent) == [(ADD, "obj_3"), (ADD, "obj_support_plane")]
    assert pub.sent[-2:] == sent
    assert [op(m) for m in out.remove_all(HEADER)] == [REMOVE, REMOVE]
