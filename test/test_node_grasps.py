"""The node's grasp outputs and MoveIt planning scene over real DDS: ~/grasps, ~/grasp_poses,
~/grasp_markers and /collision_object ADD → MOVE → REMOVE, late subscribers, the action result
and deactivation. One node process is shared by the tests of this module (they run in order)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from moveit_msgs.msg import CollisionObject
from node_harness import (
    FRAME_ID,
    Recorder,
    apply_prompt,
    box_prompt,
    camera_info,
    ros_context,
    running_node,
    scene,
)
from rclpy.action import ActionClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sam3d_ros.action import Reconstruct
from sam3d_ros.msg import BoxPrompt, Prompt
from visualization_msgs.msg import Marker

from sam3d_ros.core import conventions as conv
from sam3d_ros.core.conventions import metres_to_depth16
from sam3d_ros.ros.conversions import numpy_to_image
from sam3d_ros.ros.moveit_scene import is_closed_manifold

PREFIX = "obj_"
TCP = 0.1034  # a Franka panda_hand link
MAX_MARKERS = 4
MAX_TRIANGLES = 800
SHIFT_PX = 6
ADD, MOVE, REMOVE = (int.from_bytes(c, "little") for c in (
    CollisionObject.ADD, CollisionObject.MOVE, CollisionObject.REMOVE))
PARAMS = {"tf_prefix": PREFIX, "sync_slop_s": 0.01, "camera_qos_reliability": "reliable",
          "tcp_offset_m": TCP, "grasp_marker_max": MAX_MARKERS,
          "collision_max_triangles": MAX_TRIANGLES, "collision_support_plane": True,
          "collision_grasp_subframes": 2}


@pytest.fixture(scope="module")
def env():
    sc = scene(seed=1)
    with ros_context(), running_node(PARAMS) as node:
        rec = Recorder(grasp_topics=True)
        try:
            assert rec.wait_subscribed(), node.log()
            apply_prompt(rec, node, box_prompt(sc))
            yield sc, node, rec
        finally:
            rec.close()


def op(msg):
    return int.from_bytes(msg.operation, "little")


def xyz(p):
    return np.array([p.x, p.y, p.z])


def xyzw(q):
    return np.array([q.x, q.y, q.z, q.w])


def shifted(sc, k):
    """The scene moved k pixels to the right (objects ~1.5 cm along camera x at k = 6)."""
    rgb, depth = np.empty_like(sc.frame.rgb), np.empty_like(sc.depth_m)
    rgb[:, k:], rgb[:, :k] = sc.frame.rgb[:, :-k], sc.frame.rgb[:, :1]
    depth[:, k:], depth[:, :k] = sc.depth_m[:, :-k], sc.depth_m[:, :1]
    prompt = Prompt(boxes=[BoxPrompt(x_min=b.x_min + k, y_min=b.y_min,
                                     x_max=min(b.x_max + k, sc.frame.width - 1), y_max=b.y_max,
                                     label=1, object_id=b.object_id)
                           for b in box_prompt(sc).boxes])
    return rgb, depth, prompt


def for_stamp(rec, key, header, timeout=20.0):
    found = []

    def check():
        found[:] = [m for m in rec.get(key) if m.header.stamp == header.stamp]
        return bool(found)

    assert rec.wait(check, timeout), f"no {key} for the frame"
    return found


def collision_for(rec, header, expected, timeout=20.0):
    """The /collision_object messages of the frame with this header, once ``expected`` came."""
    got = []

    def check():
        got[:] = [m for m in rec.get("collision") if m.header.stamp == header.stamp]
        return len(got) >= expected

    rec.wait(check, timeout)
    return got


def tf_poses(rec, header):
    found = []

    def check():
        found[:] = [m for m in rec.get("tf")
                    if m.transforms and m.transforms[0].header.stamp == header.stamp]
        return bool(found)

    assert rec.wait(check, 20.0), "no /tf for the frame"
    tf = found[0]
    return {t.child_frame_id: (xyz(t.transform.translation), xyzw(t.transform.rotation))
            for t in tf.transforms}


def held_poses(rec):
    """Per id, the position of its last ADD / MOVE, for the ids not REMOVEd since."""
    held = {}
    for m in rec.get("collision"):
        if op(m) == REMOVE:
            held.pop(m.id, None)
        else:
            held[m.id] = xyz(m.pose.position)
    return held


def publish(rec, rgb, depth, sc):
    return rec.publish_frame(rgb, depth, camera_info(sc.intrinsics))


def test_grasps_poses_markers_and_collision_add(env):
    from sam3d_ros.core.camera_frame import build_camera_frame
    from sam3d_ros.core.engine import Engine
    from sam3d_ros.core.prompt_messages import query_from_prompt

    sc, node, rec = env
    header = publish(rec, sc.frame.rgb, sc.depth_m, sc)
    poses = tf_poses(rec, header)
    ids = sorted(int(k[len(PREFIX):]) for k in poses)
    assert len(ids) == 3

    grasps = for_stamp(rec, "grasps", header)[0]
    assert grasps.header.frame_id == FRAME_ID
    # The node adds nothing of its own: the same frame through the core in-process.
    img = numpy_to_image(sc.frame.rgb, "rgb8", header)
    depth = numpy_to_image(metres_to_depth16(sc.depth_m), "16UC1", header)
    cam = build_camera_frame(img, depth, camera_info(sc.intrinsics))
    query, _ = query_from_prompt(box_prompt(sc), cam.frame.width, cam.frame.height)
    ref = Engine().process(cam.frame, query, 42)
    expected = [(o.object_id, k, g) for o, gs in zip(ref.objects, ref.grasps, strict=True)
                for k, g in enumerate(gs)]
    assert len(expected) > 0, "the reference planned no grasp: the scene is no test"
    assert [(g.object_id, g.rank) for g in grasps.grasps] == [(i, k) for i, k, _ in expected]
    for msg, (_, _, g) in zip(grasps.grasps, expected, strict=True):
        approach = conv.grasp_axes(g.orientation)[2]
        # tcp_offset_m: the pose of the end-effector link, 0.1034 m back along the approach.
        assert np.allclose(xyz(msg.pose.position), g.position - TCP * approach, atol=1e-5)
        assert abs(abs(xyzw(msg.pose.orientation) @ g.orientation) - 1) < 1e-6
        assert msg.tcp_offset == pytest.approx(TCP)
        assert msg.width == pytest.approx(g.width, abs=1e-6)
        assert np.allclose([xyz(c) for c in msg.contacts], g.contacts, atol=1e-5)
        assert list(msg.contacts_observed) == [bool(v) for v in g.contacts_observed]
    for object_id in ids:
        scores = [g.score for g in grasps.grasps if g.object_id == object_id]
        assert scores == sorted(scores, reverse=True)

    pose_array = for_stamp(rec, "grasp_poses", header)[0]
    assert pose_array.header.frame_id == FRAME_ID
    assert list(pose_array.poses) == [g.pose for g in grasps.grasps]

    assert rec.wait(lambda: any(m.header.stamp == header.stamp
                                for arr in rec.get("grasp_markers") for m in arr.markers))
    markers = [m for arr in rec.get("grasp_markers") for m in arr.markers
               if m.header.stamp == header.stamp]
    drawn = [m for m in markers if m.action == Marker.ADD]
    assert 0 < len(drawn) <= MAX_MARKERS
    assert all(m.type == Marker.LINE_LIST and m.header.frame_id == FRAME_ID for m in drawn)
    with_grasps = {i for i, _, _ in expected}
    best = [m for m in drawn if m.color.a == 1.0]
    assert len(best) == min(len(with_grasps), MAX_MARKERS)  # one highlighted per object
    # Markers draw the gripper at the grasp frame (not the end-effector pose).
    firsts = [g for g in grasps.grasps if g.rank == 0]
    for marker, first in zip(best, firsts, strict=True):
        approach = conv.quat_to_matrix(xyzw(first.pose.orientation))[:, 2]
        assert np.allclose(xyz(marker.pose.position), xyz(first.pose.position) + TCP * approach,
                           atol=1e-5)

    adds = collision_for(rec, header, 4)
    assert sorted((op(m), m.id) for m in adds) == sorted(
        [(ADD, f"{PREFIX}{i}") for i in ids] + [(ADD, f"{PREFIX}support_plane")])
    for msg in adds:
        assert msg.header.frame_id == FRAME_ID
        if msg.id.endswith("support_plane"):
            assert len(msg.primitives) == 1 and not msg.meshes
            continue
        position, rotation = poses[msg.id]  # the collision object's pose is its TF frame
        assert np.allclose(xyz(msg.pose.position), position, atol=1e-9)
        tri = np.array([t.vertex_indices for t in msg.meshes[0].triangles])
        assert len(tri) <= MAX_TRIANGLES and is_closed_manifold(tri)
        object_id = int(msg.id[len(PREFIX):])
        n_grasps = sum(1 for g in grasps.grasps if g.object_id == object_id)
        assert list(msg.subframe_names) == [f"grasp_{k}" for k in range(min(2, n_grasps))]
        for k, sub in enumerate(msg.subframe_poses):  # object pose ∘ subframe = ~/grasps pose
            g = [g for g in grasps.grasps if g.object_id == object_id][k]
            p = conv.quat_rotate(rotation, xyz(sub.position)) + position
            assert np.allclose(p, xyz(g.pose.position), atol=1e-6)


def test_collision_move_when_the_scene_shifts(env):
    sc, node, rec = env
    before = held_poses(rec)
    rgb, depth, prompt = shifted(sc, SHIFT_PX)
    apply_prompt(rec, node, prompt)
    header = publish(rec, rgb, depth, sc)
    poses = tf_poses(rec, header)
    msgs = collision_for(rec, header, 3)
    by_id = {m.id: m for m in msgs if not m.id.endswith("support_plane")}
    assert sorted(by_id) == sorted(poses)
    moves = [m for m in by_id.values() if op(m) == MOVE]
    # Re-ADD is allowed only for an object whose grasps grew beyond its subframes; the shift
    # keeps the shapes, so most objects only move.
    assert len(moves) >= 2, [(m.id, op(m)) for m in msgs]
    for m in moves:
        assert not m.meshes and not m.primitives and not m.subframe_names
        position, _ = poses[m.id]
        assert np.allclose(xyz(m.pose.position), position, atol=1e-9)
        assert position[0] - before[m.id][0] > 0.008  # it did move right (camera +x)
    assert all(op(m) in (ADD, MOVE) for m in msgs)


def test_late_subscriber_gets_every_object_added(env):
    sc, node, rec = env
    late = []
    sub = rec.node.create_subscription(
        CollisionObject, "/collision_object", late.append,
        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    try:
        time.sleep(1.0)  # discovery
        rgb, depth, _ = shifted(sc, SHIFT_PX)
        header = publish(rec, rgb, depth, sc)
        assert rec.wait(lambda: len([m for m in late if m.header.stamp == header.stamp]) >= 4)
        ops = {(op(m), m.id) for m in late}
        assert {(ADD, f"{PREFIX}{b.object_id}") for b in box_prompt(sc).boxes} <= ops
        assert all(len(m.meshes) == 1 for m in late if op(m) == ADD
                   and not m.id.endswith("support_plane"))
    finally:
        rec.node.destroy_subscription(sub)


def test_collision_remove_when_an_object_leaves(env):
    sc, node, rec = env
    rgb, depth, prompt = shifted(sc, SHIFT_PX)
    gone = prompt.boxes[2].object_id
    apply_prompt(rec, node, Prompt(boxes=prompt.boxes[:2]))
    header = publish(rec, rgb, depth, sc)
    msgs = collision_for(rec, header, 1)
    assert (REMOVE, f"{PREFIX}{gone}") in [(op(m), m.id) for m in msgs]
    assert all(op(m) != REMOVE for m in msgs if m.id != f"{PREFIX}{gone}")
    grasps = for_stamp(rec, "grasps", header)[0]
    assert gone not in {g.object_id for g in grasps.grasps}
    apply_prompt(rec, node, box_prompt(sc))


def test_goal_result_carries_the_grasps(env):
    sc, node, rec = env
    client = ActionClient(rec.node, Reconstruct, "/sam3d/reconstruct")
    assert client.wait_for_server(timeout_sec=20.0)
    publish(rec, sc.frame.rgb, sc.depth_m, sc)
    time.sleep(0.5)
    future = client.send_goal_async(Reconstruct.Goal(prompt=box_prompt(sc), seed=42,
                                                     write_artifacts=False))
    assert rec.wait(future.done, 10.0)
    result_future = future.result().get_result_async()
    assert rec.wait(result_future.done, 60.0)
    result = result_future.result().result
    assert result.error == ""
    assert result.grasps.header == result.objects.header
    assert len(result.grasps.grasps) > 0
    ids = {o.id for o in result.objects.objects}
    assert {g.object_id for g in result.grasps.grasps} <= ids
    assert all(g.tcp_offset == pytest.approx(TCP) for g in result.grasps.grasps)
    # The goal's frame was published too: ~/grasps carries the same list.
    published = for_stamp(rec, "grasps", result.grasps.header)[0]
    assert list(published.grasps) == list(result.grasps.grasps)
    client.destroy()


def test_deactivate_removes_the_collision_objects(env):
    sc, node, rec = env
    time.sleep(1.0)  # the goal's frame may still be in the worker
    held = set(held_poses(rec))
    assert len(held) == 4  # three objects and the support plane
    start = rec.count("collision")
    change = rec.node.create_client(ChangeState, "/sam3d/change_state")
    assert change.wait_for_service(timeout_sec=10.0)
    future = change.call_async(ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
    assert rec.wait(future.done, 20.0) and future.result().success
    assert rec.wait(lambda: {m.id for m in rec.get("collision")[start:] if op(m) == REMOVE}
                    == held)
    assert rec.wait(lambda: any(m.action == Marker.DELETEALL for arr in rec.get("grasp_markers")
                                for m in arr.markers))


def test_bad_grasp_approach_fails_configure_naming_the_parameter():
    # Its own node process; only its log is read (no graph needed).
    with running_node({"grasp_approach": "sideways"}, ready="autostart: configure failed") as node:
        assert node.wait_for_line("grasp_approach: must be one of", 5.0), node.log()[-2000:]
        assert node.alive()
