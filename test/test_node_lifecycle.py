"""Lifecycle transitions of the node process, default (best-effort) camera QoS, QoS mismatch."""

from __future__ import annotations

import time

import pytest
import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from node_harness import (
    Recorder,
    box_prompt,
    camera_info,
    ros_context,
    running_node,
    scene,
    state,
    transition,
)
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from visualization_msgs.msg import Marker


def outputs_for_frames(rec, sc, seconds):
    """Publish frames at 5 Hz for ``seconds`` (best-effort may lose some); count new TFs."""
    before = rec.count("tf")
    info = camera_info(sc.intrinsics)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rec.publish_frame(sc.frame.rgb, sc.depth_m, info)
        time.sleep(0.2)
        if rec.count("tf") > before:
            return rec.count("tf") - before
    return rec.count("tf") - before


@pytest.fixture
def env():
    sc = scene(seed=1)
    with ros_context(), running_node({"autostart": False}, ready="") as node:
        rec = Recorder()
        try:
            get_state = rec.node.create_client(GetState, "/sam3d/get_state")
            change = rec.node.create_client(ChangeState, "/sam3d/change_state")
            rec.pub_prompt.publish(box_prompt(sc))
            yield sc, node, rec, get_state, change
        finally:
            rec.close()


def test_lifecycle_transitions(env):
    sc, node, rec, get_state, change = env
    # autostart:=false: unconfigured, no camera subscriptions, no outputs.
    assert state(rec, get_state) == "unconfigured"
    assert rec.pub_image.get_subscription_count() == 0

    assert transition(rec, change, Transition.TRANSITION_CONFIGURE)
    assert state(rec, get_state) == "inactive"
    time.sleep(0.5)
    assert rec.pub_image.get_subscription_count() == 0  # inactive: camera not subscribed
    assert outputs_for_frames(rec, sc, 1.5) == 0

    assert transition(rec, change, Transition.TRANSITION_ACTIVATE)
    assert state(rec, get_state) == "active"
    assert rec.wait_subscribed()
    assert node.wait_for_line("reliability=best_effort", 5.0)  # the QoS used is logged
    assert outputs_for_frames(rec, sc, 15.0) > 0

    # Deactivate: processing stops, markers are cleared (DELETEALL), no more outputs.
    start_diag = rec.count("diagnostics")
    assert transition(rec, change, Transition.TRANSITION_DEACTIVATE)
    assert state(rec, get_state) == "inactive"
    assert rec.wait(lambda: any(m.action == Marker.DELETEALL for a in rec.get("markers")
                                for m in a.markers), 5.0)
    assert rec.wait(lambda: rec.pub_image.get_subscription_count() == 0, 5.0)
    time.sleep(0.5)
    assert outputs_for_frames(rec, sc, 1.5) == 0
    diag = rec.wait_diag(lambda m: rec.diag_values(m)["state"] == "inactive", start=start_diag)
    assert diag is not None and rec.diag_values(diag)["backend_state"] == "loaded"

    # Activate again: outputs resume.
    assert transition(rec, change, Transition.TRANSITION_ACTIVATE)
    assert rec.wait_subscribed()
    assert outputs_for_frames(rec, sc, 15.0) > 0

    # Deactivate + cleanup: back to unconfigured; configure + activate works again.
    assert transition(rec, change, Transition.TRANSITION_DEACTIVATE)
    assert transition(rec, change, Transition.TRANSITION_CLEANUP)
    assert state(rec, get_state) == "unconfigured"
    assert transition(rec, change, Transition.TRANSITION_CONFIGURE)
    assert transition(rec, change, Transition.TRANSITION_ACTIVATE)
    assert rec.wait_subscribed()
    assert outputs_for_frames(rec, sc, 15.0) > 0
    assert node.alive()


def test_unknown_backend_fails_configure_and_node_stays_up():
    with ros_context(), running_node({"autostart": False, "reconstruction_backend": "nope"},
                                     ready="") as node:
        rec = Recorder()
        try:
            get_state = rec.node.create_client(GetState, "/sam3d/get_state")
            change = rec.node.create_client(ChangeState, "/sam3d/change_state")
            assert not transition(rec, change, Transition.TRANSITION_CONFIGURE)
            assert state(rec, get_state) == "unconfigured"
            assert node.wait_for_line("reconstruction_backend", 5.0)
            assert node.alive()
        finally:
            rec.close()


def test_qos_mismatch_is_reported():
    """A best-effort camera publisher and a node asked for reliable: warned, not silent."""
    with ros_context(), running_node({"camera_qos_reliability": "reliable"}) as node:
        rec = Recorder()
        try:
            pub = rec.node.create_publisher(
                Image, "image", QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
            assert node.wait_for_line("QoS mismatch on /image", 20.0), node.log()
            diag = rec.wait_diag(lambda m: "QoS mismatch" in m.status[0].message)
            assert diag is not None
            del pub
            assert rclpy.ok()
        finally:
            rec.close()
