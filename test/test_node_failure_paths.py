"""Failure paths of the node over real DDS (issue 10, paths 1-3): a configure failure reaches
/diagnostics, prompts from volatile and transient-local publishers are applied once each, and an
empty scene publishes an empty result (DELETE markers, REMOVE collision objects) while the node
stays healthy."""

from __future__ import annotations

import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from moveit_msgs.msg import CollisionObject
from node_harness import (
    Recorder,
    camera_info,
    ros_context,
    running_node,
    scene,
)
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sam3d_ros.msg import Prompt
from visualization_msgs.msg import Marker

from sam3d_ros.ros.prompts import FirstDelivery

ERROR = int.from_bytes(DiagnosticStatus.ERROR, "little")
REMOVE = int.from_bytes(CollisionObject.REMOVE, "little")
PREFIX = "obj_"


def level(msg) -> int:
    value = msg.status[0].level
    return int.from_bytes(value, "little") if isinstance(value, bytes) else int(value)


# ------------------------------------------------------------------------------ 1: configure


@pytest.mark.parametrize("params, reason", [
    ({"segmentation_backend": "sam3"}, "no SAM 3 checkpoint configured"),
    ({"reconstruction_backend": "nope"}, "reconstruction_backend"),
], ids=["sam3_without_checkpoint", "unknown_backend"])
def test_configure_failure_is_an_error_in_diagnostics(params, reason, monkeypatch):
    monkeypatch.setenv("SAM3D_ROS_SAM3_CHECKPOINT", "")
    with ros_context(), running_node({**params, "diagnostics_period_s": 0.2},
                                     ready="configure failed") as node:
        rec = Recorder()
        try:
            diag = rec.wait_diag(lambda m: level(m) == ERROR, timeout=15.0)
            assert diag is not None, f"no diagnostics ERROR after configure failed:\n{node.log()}"
            values = rec.diag_values(diag)
            assert reason in diag.status[0].message
            assert diag.status[0].message.startswith("backend: cannot build the backends")
            assert values["state"] == "unconfigured"
            assert values["last_error_field"] == "backend"
            assert reason in values["last_error"]
            assert node.alive()
        finally:
            rec.close()


# ------------------------------------------------------------------------------ 2: prompt QoS


def test_first_delivery_tells_repeats_apart():
    seen = FirstDelivery(size=2)
    a = {"source_timestamp": 10, "publication_sequence_number": 1}
    b = {"source_timestamp": 11, "publication_sequence_number": 2}
    assert seen.first(a) and not seen.first(dict(a))
    assert seen.first(b) and not seen.first(b)
    assert seen.first({"source_timestamp": 0}) and seen.first({"source_timestamp": 0})
    assert seen.first(None)


def _applied(node, text: str) -> int:
    return sum(f"prompt: text={text!r}" in line for line in node.lines[:])


def test_volatile_and_transient_local_prompts_are_each_applied_once():
    with ros_context(), running_node({}) as node:
        rec = Recorder()
        try:
            volatile = rec.node.create_publisher(
                Prompt, "prompt", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                             durability=DurabilityPolicy.VOLATILE))
            assert rec.wait(lambda: volatile.get_subscription_count() > 0, 15.0), (
                "a default (volatile) prompt publisher never matched the node's subscription")
            volatile.publish(Prompt(text="mug"))
            assert node.wait_for_line("prompt: text='mug'", 10.0), node.log()
            # Transient-local reaches both subscriptions: applied once all the same.
            assert rec.wait(lambda: rec.pub_prompt.get_subscription_count() > 0, 15.0)
            rec.pub_prompt.publish(Prompt(text="bowl"))
            assert node.wait_for_line("prompt: text='bowl'", 10.0), node.log()
            volatile.publish(Prompt(text="mug"))  # the same prompt again is a new prompt
            assert rec.wait(lambda: _applied(node, "mug") == 2, 10.0), node.log()
            time.sleep(1.0)
            assert _applied(node, "mug") == 2, node.log()
            assert _applied(node, "bowl") == 1, node.log()
        finally:
            rec.close()


# ------------------------------------------------------------------------------ 3: empty scene


def _stamp(msg):
    if hasattr(msg, "markers"):  # MarkerArray has no header of its own
        return msg.markers[0].header.stamp if msg.markers else None
    return msg.header.stamp


def _for_stamp(rec, key, header, timeout=20.0):
    found = []

    def check():
        found[:] = [m for m in rec.get(key) if _stamp(m) == header.stamp]
        return bool(found)

    assert rec.wait(check, timeout), f"no {key} for the frame"
    return found


def test_empty_scene_publishes_an_empty_result_and_stays_healthy():
    full, empty = scene(seed=1), scene(seed=1, n_objects=0)
    params = {"tf_prefix": PREFIX, "sync_slop_s": 0.01, "camera_qos_reliability": "reliable",
              "track_max_age": 1, "diagnostics_period_s": 0.2}
    with ros_context(), running_node(params) as node:
        rec = Recorder(grasp_topics=True)
        try:
            assert rec.wait_subscribed(), node.log()
            h1 = rec.publish_frame(full.frame.rgb, full.depth_m, camera_info(full.intrinsics))
            objects = _for_stamp(rec, "objects", h1)[0].objects
            ids = sorted(o.id for o in objects)
            assert ids, "automatic segmentation found nothing in the full scene"
            n_grasp_markers = sum(m.action == Marker.ADD
                                  for m in _for_stamp(rec, "grasp_markers", h1)[0].markers)
            assert n_grasp_markers > 0
            assert rec.wait(lambda: {m.id for m in rec.get("collision")}
                            >= {f"{PREFIX}{i}" for i in ids})

            h2 = rec.publish_frame(empty.frame.rgb, empty.depth_m, camera_info(empty.intrinsics))
            assert len(_for_stamp(rec, "objects", h2)[0].objects) == 0
            assert len(_for_stamp(rec, "detections", h2)[0].detections) == 0
            markers = _for_stamp(rec, "markers", h2)[0].markers
            assert all(m.action == Marker.DELETE for m in markers)
            assert {(m.ns, m.id) for m in markers} == {
                (ns, i) for ns in ("sam3d_meshes", "sam3d_labels") for i in ids}
            grasp_markers = _for_stamp(rec, "grasp_markers", h2)[0].markers
            assert all(m.action == Marker.DELETE for m in grasp_markers)
            assert sorted(m.id for m in grasp_markers) == list(range(n_grasp_markers))
            assert len(_for_stamp(rec, "grasps", h2)[0].grasps) == 0
            assert len(_for_stamp(rec, "grasp_poses", h2)[0].poses) == 0
            # One REMOVE message per object: wait for all of them, not just the first.
            def removed():
                return {m.id for m in rec.get("collision") if _stamp(m) == h2.stamp
                        and int.from_bytes(m.operation, "little") == REMOVE}

            expected = {f"{PREFIX}{i}" for i in ids}
            rec.wait(lambda: removed() >= expected, 20.0)
            assert removed() == expected  # track_max_age 1: dropped at once
            assert not [m for m in rec.get("tf")
                        if m.transforms and m.transforms[0].header.stamp == h2.stamp]

            start = rec.count("diagnostics")
            diag = rec.wait_diag(lambda m: rec.diag_values(m)["frames_processed"] == "2",
                                 start=start)
            assert diag is not None, node.log()
            assert level(diag) != ERROR, diag.status[0].message
            assert rec.diag_values(diag)["objects_last_frame"] == "0"
            assert rec.diag_values(diag)["last_error"] == ""
            assert "bad input" not in node.log()
        finally:
            rec.close()
