"""Failure paths of the node over real DDS (issue 10).

Paths 1-3: a configure failure reaches /diagnostics, prompts from volatile and transient-local
publishers are applied once each, and an empty scene publishes an empty result (DELETE markers,
REMOVE collision objects) while the node stays healthy.

Paths 6-13 and 22, with the node's backends replaced by contract fakes (``contract_fakes.py``,
``fake_node.py``) where a backend must be slow, fail or be counted: deactivate and shutdown
interrupt a running frame; a failed load unloads what was loaded; deactivate keeps the backends
loaded; diagnostics levels come from a recent window and clear; unexpected exceptions reach the
log with their traceback; a distorted CameraInfo is warned about; parameters that would not
take effect are refused; the frame worker survives (or is revived) and never doubles.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from action_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from moveit_msgs.msg import CollisionObject
from node_harness import (
    Recorder,
    box_prompt,
    call,
    camera_info,
    explicit_goal,
    ros_context,
    running_node,
    scene,
    transition,
)
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sam3d_ros.action import Reconstruct
from sam3d_ros.msg import Prompt
from sensor_msgs.msg import Image
from visualization_msgs.msg import Marker

from sam3d_ros.ros.prompts import FirstDelivery

ERROR = int.from_bytes(DiagnosticStatus.ERROR, "little")
WARN = int.from_bytes(DiagnosticStatus.WARN, "little")
OK = int.from_bytes(DiagnosticStatus.OK, "little")
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


# ------------------------------------------------------------------------------ helpers

# Reliable camera QoS: a single best-effort 300 kB frame can be lost on a loaded host.
RELIABLE = {"camera_qos_reliability": "reliable", "sync_slop_s": 0.01}
FAKE_LINE = re.compile(r"FAKE (.+) t=([0-9.]+)$")


def fake_events(node):
    """``(event, monotonic time)`` of every contract-fake line the node printed, in order."""
    return [(m.group(1), float(m.group(2))) for m in map(FAKE_LINE.search, node.log().splitlines())
            if m]


def fake_time(node, event):
    times = [t for e, t in fake_events(node) if e == event]
    assert times, f"no FAKE {event!r}:\n{node.log()[-3000:]}"
    return times[0]


def count(node, event):
    return sum(e == event for e, _ in fake_events(node))


def lifecycle(rec):
    return rec.node.create_client(ChangeState, "/sam3d/change_state")


def publish_scene(rec, sc, info=None):
    return rec.publish_frame(sc.frame.rgb, sc.depth_m, info or camera_info(sc.intrinsics))


def tf_for(rec, header, timeout=30.0):
    def found():
        return [m for m in rec.get("tf") if m.transforms
                and m.transforms[0].header.stamp == header.stamp]

    rec.wait(lambda: bool(found()), timeout)
    return found()


def action_client(rec):
    """A ``~/reconstruct`` client whose goals, results and cancels the server answers.

    DDS discovery is not symmetric (see test_node_action): a throw-away goal first.
    """
    client = ActionClient(rec.node, Reconstruct, "/sam3d/reconstruct")
    assert client.wait_for_server(timeout_sec=30.0)
    deadline = time.monotonic() + 90.0
    while time.monotonic() < deadline:
        sent = client.send_goal_async(Reconstruct.Goal(use_latest_frame=False))
        if rec.wait(sent.done, 10.0):
            result = sent.result().get_result_async()
            if rec.wait(result.done, 10.0):
                return client
    pytest.fail("the action server never answered")


def run_goal(rec, client, goal, timeout=120.0):
    sent = client.send_goal_async(goal)
    assert rec.wait(sent.done, 30.0)
    result = sent.result().get_result_async()
    assert rec.wait(result.done, timeout), "no result"
    return result.result()


# ------------------------------------------------------------------------------ 6: cancellation


def test_deactivate_returns_within_2_s_of_the_running_stage_end(tmp_path):
    """The frame running is cancelled at its next stage boundary; deactivate waits for that only.

    The segment stage is held until the test opens the gate; the reconstruct stage would take
    3 × 30 s. Deactivate must answer within 2 s of the segment stage's end, and the frame must
    not start reconstructing.
    """
    gate = tmp_path / "segment_gate"
    env = {"SAM3D_FAKE_SEGMENT_GATE": str(gate), "SAM3D_FAKE_RECONSTRUCT_S": "30"}
    sc = scene(seed=1)
    with ros_context(), running_node(RELIABLE, env=env, fakes=True) as node:
        rec = Recorder()
        try:
            change = lifecycle(rec)
            assert change.wait_for_service(timeout_sec=20.0)
            assert rec.wait_subscribed(), node.log()
            publish_scene(rec, sc)
            assert node.wait_for_line("FAKE segment start", 60.0), node.log()
            answer = change.call_async(ChangeState.Request(
                transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
            time.sleep(1.0)  # deactivate is waiting for the stage now
            gate.touch()
            # A liveness bound of the harness; the bound under test is the one below.
            assert rec.wait(answer.done, 50.0), f"deactivate never answered:\n{node.log()}"
            answered = time.monotonic()
            assert answer.result().success
            assert answered - fake_time(node, "segment end") < 2.0, node.log()[-3000:]
            assert not [e for e, _ in fake_events(node) if e.startswith("reconstruct")]
        finally:
            rec.close()


def test_shutdown_stops_a_long_reconstruction_between_objects():
    """Ctrl-C during a reconstruction that checks cancellation between its steps: the backends
    are unloaded within 2 s (the stage ends at its next check, then shutdown unloads)."""
    sc = scene(seed=1)
    with ros_context(), running_node(RELIABLE, env={"SAM3D_FAKE_RECONSTRUCT_S": "60"},
                                     fakes=True) as node:
        rec = Recorder()
        try:
            assert rec.wait_subscribed(), node.log()
            publish_scene(rec, sc)
            assert node.wait_for_line("FAKE reconstruct object 0", 60.0), node.log()
            interrupted = time.monotonic()
            node.proc.send_signal(signal.SIGINT)
            assert node.wait_for_line("FAKE unload reconstructor", 14.0), node.log()[-3000:]
            assert fake_time(node, "unload reconstructor") - interrupted < 2.0
            assert count(node, "unload segmenter") == 1
        finally:
            rec.close()


# ------------------------------------------------------------------------------ 7, 8: backends


def test_a_failed_load_unloads_the_backends_already_loaded():
    with ros_context(), running_node({"diagnostics_period_s": 0.2},
                                     env={"SAM3D_FAKE_FAIL_LOAD": "reconstructor"}, fakes=True,
                                     ready="configure failed") as node:
        rec = Recorder()
        try:
            assert count(node, "load segmenter") == 1 == count(node, "load reconstructor")
            assert count(node, "unload segmenter") == 1, node.log()
            assert count(node, "unload reconstructor") == 0  # its load failed: nothing held
            diag = rec.wait_diag(lambda m: level(m) == ERROR)
            assert diag is not None and "does not fit in GPU memory" in diag.status[0].message
            assert rec.diag_values(diag)["backend_state"] == "failed to load"
        finally:
            rec.close()


def test_deactivate_keeps_the_backends_loaded_cleanup_unloads():
    with ros_context(), running_node({"autostart": False, "diagnostics_period_s": 0.2},
                                     fakes=True, ready="") as node:
        rec = Recorder()
        try:
            change = lifecycle(rec)
            assert transition(rec, change, Transition.TRANSITION_CONFIGURE)
            for _ in range(2):
                assert transition(rec, change, Transition.TRANSITION_ACTIVATE)
                assert transition(rec, change, Transition.TRANSITION_DEACTIVATE)
            assert count(node, "load segmenter") == 1 == count(node, "load reconstructor")
            assert count(node, "unload segmenter") == 0 == count(node, "unload reconstructor")
            start = rec.count("diagnostics")
            diag = rec.wait_diag(lambda m: rec.diag_values(m)["state"] == "inactive",
                                 start=start)
            assert diag is not None and rec.diag_values(diag)["backend_state"] == "loaded"
            assert transition(rec, change, Transition.TRANSITION_CLEANUP)
            assert count(node, "unload segmenter") == 1 == count(node, "unload reconstructor")
        finally:
            rec.close()


# ------------------------------------------------------------------------------ 9: diagnostics


def test_a_qos_mismatch_clears_when_the_publisher_goes():
    sc = scene(seed=1)
    params = {**RELIABLE, "diagnostics_period_s": 0.2}
    with ros_context(), running_node(params) as node:
        rec = Recorder()
        try:
            best_effort = rec.node.create_publisher(
                Image, "image", QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
            assert rec.wait_diag(lambda m: "QoS mismatch" in m.status[0].message) is not None
            rec.node.destroy_publisher(best_effort)
            assert rec.wait_subscribed(), node.log()
            header = publish_scene(rec, sc)
            assert tf_for(rec, header), node.log()[-3000:]
            diag = rec.wait_diag(lambda m: level(m) == OK, start=rec.count("diagnostics"))
            assert diag is not None, rec.get("diagnostics")[-1].status[0].message
            assert "QoS" not in diag.status[0].message
        finally:
            rec.close()


def test_one_sync_mismatch_in_a_stream_is_a_warning_not_an_error():
    sc = scene(seed=1)
    info = camera_info(sc.intrinsics)
    params = {**RELIABLE, "diagnostics_period_s": 0.1}
    with ros_context(), running_node(params) as node:
        rec = Recorder()
        try:
            assert rec.wait_subscribed(), node.log()
            assert tf_for(rec, publish_scene(rec, sc)), node.log()[-3000:]
            start = rec.count("diagnostics")
            rec.publish_frame(sc.frame.rgb, sc.depth_m, info, skip=("depth", "camera_info"))
            time.sleep(0.7)
            # The next image alone first: the lone one expires (reported), then its partners.
            header = rec.publish_frame(sc.frame.rgb, sc.depth_m, info,
                                       skip=("depth", "camera_info"))
            time.sleep(0.3)
            rec.publish_frame(sc.frame.rgb, sc.depth_m, info, stamp=header.stamp,
                              skip=("image",))
            assert tf_for(rec, header), node.log()[-3000:]
            warn = rec.wait_diag(lambda m: "without a partner" in m.status[0].message,
                                 start=start)
            assert warn is not None and level(warn) == WARN, node.log()[-3000:]
            assert "depth" in warn.status[0].message
            assert rec.diag_values(warn)["unmatched_in_window"] == "1"
            assert not [m for m in rec.get("diagnostics")[start:] if level(m) == ERROR]
        finally:
            rec.close()


def test_a_succeeded_goal_ends_the_error_of_a_failed_frame():
    sc = scene(seed=1)
    with ros_context(), running_node({**RELIABLE, "diagnostics_period_s": 0.2}) as node:
        rec = Recorder()
        try:
            client = action_client(rec)
            assert rec.wait_subscribed(), node.log()
            rec.publish_frame(sc.frame.rgb, sc.depth_m * 0.0, camera_info(sc.intrinsics))
            error = rec.wait_diag(lambda m: level(m) == ERROR
                                  and rec.diag_values(m)["last_error_field"] == "depth")
            assert error is not None, node.log()[-3000:]
            res = run_goal(rec, client, explicit_goal(sc))
            assert res.status == GoalStatus.STATUS_SUCCEEDED, res.result.error
            diag = rec.wait_diag(lambda m: True, start=rec.count("diagnostics"))
            assert level(diag) == WARN, diag.status[0].message
            assert "frames/goals failed in the last" in diag.status[0].message
        finally:
            rec.close()


def test_diagnostics_are_published_by_the_timer_only():
    """Failing frames do not publish /diagnostics from the camera or worker threads."""
    sc = scene(seed=1)
    params = {**RELIABLE, "diagnostics_period_s": 60.0, "warn_throttle_s": 0.0}
    with ros_context(), running_node(params) as node:
        rec = Recorder()
        try:
            assert rec.wait_subscribed(), node.log()
            assert rec.wait(lambda: any(
                (i.node_namespace, i.node_name) == ("/", "sam3d")
                for i in rec.node.get_publishers_info_by_topic("/diagnostics")))
            started = time.monotonic()
            start_log = node.line_count()
            for _ in range(5):
                rec.publish_frame(sc.frame.rgb, sc.depth_m * 0.0, camera_info(sc.intrinsics))
                time.sleep(0.3)
            assert rec.wait(lambda: sum("bad input: depth" in ln
                                        for ln in node.lines[start_log:]) >= 5, 30.0)
            time.sleep(0.5)
            ticks = int((time.monotonic() - started) // 60.0) + 1  # the timer's, at most
            assert rec.count("diagnostics") <= ticks
        finally:
            rec.close()


# ------------------------------------------------------------------------------ 10: tracebacks


def test_a_backend_exception_is_logged_with_its_traceback_once_per_kind(tmp_path):
    raise_file = tmp_path / "raise"
    raise_file.write_text("zero_division")
    sc = scene(seed=1)
    params = {**RELIABLE, "warn_throttle_s": 600.0}
    with ros_context(), running_node(params, env={"SAM3D_FAKE_RAISE": str(raise_file)},
                                     fakes=True) as node:
        rec = Recorder()
        try:
            client = action_client(rec)
            assert rec.wait_subscribed(), node.log()
            for n in range(1, 4):
                publish_scene(rec, sc)
                assert rec.wait(lambda n=n: count(node, "raise zero_division") >= n, 30.0)
            res = run_goal(rec, client, explicit_goal(sc))
            assert res.status == GoalStatus.STATUS_ABORTED
            assert "ZeroDivisionError: division by zero" in res.result.error
            log = node.log()
            frames = [b for b in log.split("processing failed: ")[1:] if "Traceback" in b]
            assert len(frames) == 1, log[-4000:]  # once per kind and throttle period
            assert "in _deep_bug" in frames[0] and "ZeroDivisionError" in frames[0]
            assert "goal failed: " in log and log.count("in _deep_bug") == 2
        finally:
            rec.close()


# ------------------------------------------------------------------------------ 12: rectified


def test_distorted_camera_info_is_warned_about_once():
    sc = scene(seed=1)
    info = camera_info(sc.intrinsics)
    info.d = [0.12, -0.25, 0.001, 0.0, 0.1]
    with ros_context(), running_node(RELIABLE) as node:
        rec = Recorder()
        try:
            assert rec.wait_subscribed(), node.log()
            for _ in range(3):
                assert tf_for(rec, publish_scene(rec, sc, info)), node.log()[-3000:]
            warnings = [ln for ln in node.lines if "non-zero distortion coefficients" in ln]
            assert len(warnings) == 1, node.log()[-3000:]
            assert "/camera_info" in warnings[0] and "rectified" in warnings[0]
        finally:
            rec.close()


# ------------------------------------------------------------------------------ 13: parameters


def set_parameter(rec, client, name, value):
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    return call(rec, client, request).results[0]


def test_parameters_that_would_not_take_effect_are_refused():
    with ros_context(), running_node({}) as node:
        rec = Recorder()
        try:
            client = rec.node.create_client(SetParameters, "/sam3d/set_parameters")
            refused = set_parameter(rec, client, "segmentation_backend", "sam3")
            assert not refused.successful
            assert "applied at configure" in refused.reason and "cleanup" in refused.reason
            refused = set_parameter(rec, client, "sync_slop_s", 0.05)
            assert not refused.successful
            assert "applied at activate" in refused.reason and "deactivate" in refused.reason
            refused = set_parameter(rec, client, "autostart", False)
            assert not refused.successful and "read-only" in refused.reason
            assert set_parameter(rec, client, "max_rate_hz", 5.0).successful  # runtime
            change = lifecycle(rec)
            assert transition(rec, change, Transition.TRANSITION_DEACTIVATE)
            assert set_parameter(rec, client, "sync_slop_s", 0.05).successful
            assert not set_parameter(rec, client, "segmentation_backend", "sam3").successful
            assert transition(rec, change, Transition.TRANSITION_ACTIVATE)
            assert node.wait_for_line("sync_slop_s=0.05", 10.0)  # applied at activate
        finally:
            rec.close()


# ------------------------------------------------------------------------------ 22: worker


@pytest.mark.parametrize("kind", ["unprintable", "system_exit"])
def test_the_frame_worker_outlives_a_failure_in_its_error_path(kind, tmp_path):
    """``unprintable``: the exception breaks the frame's error report itself; ``system_exit``:
    the thread ends (as a library calling sys.exit() does). Either way the next frame is
    processed; a worker that died is reported as an ERROR and restarted."""
    raise_file = tmp_path / "raise"
    raise_file.write_text(kind)
    sc = scene(seed=1)
    params = {**RELIABLE, "diagnostics_period_s": 0.2}
    with ros_context(), running_node(params, env={"SAM3D_FAKE_RAISE": str(raise_file)},
                                     fakes=True) as node:
        rec = Recorder()
        try:
            assert rec.wait_subscribed(), node.log()
            start = rec.count("diagnostics")
            publish_scene(rec, sc)
            assert node.wait_for_line(f"FAKE raise {kind}", 30.0), node.log()
            diag = rec.wait_diag(lambda m: level(m) == ERROR, start=start)
            assert diag is not None, node.log()[-3000:]
            if kind == "system_exit":
                assert "frame worker died (SystemExit: 3); restarted" in diag.status[0].message
            os.remove(raise_file)
            assert tf_for(rec, publish_scene(rec, sc)), node.log()[-3000:]
            assert node.alive()
        finally:
            rec.close()


def test_a_frame_longer_than_the_stop_timeout_leaves_one_worker(tmp_path):
    gate = tmp_path / "segment_gate"
    sc = scene(seed=1)
    params = {**RELIABLE, "stop_timeout_s": 1.0}
    with ros_context(), running_node(params, env={"SAM3D_FAKE_SEGMENT_GATE": str(gate)},
                                     fakes=True) as node:
        rec = Recorder()
        try:
            change = lifecycle(rec)
            assert rec.wait_subscribed(), node.log()
            publish_scene(rec, sc)
            assert node.wait_for_line("FAKE segment start", 60.0), node.log()
            assert transition(rec, change, Transition.TRANSITION_DEACTIVATE, timeout=20.0)
            assert node.wait_for_line("did not reach a stage boundary", 5.0)
            assert transition(rec, change, Transition.TRANSITION_ACTIVATE)
            assert rec.wait_subscribed(), node.log()
            header = publish_scene(rec, sc)
            time.sleep(0.5)
            gate.touch()
            assert tf_for(rec, header), node.log()[-3000:]
            events = [e for e, _ in fake_events(node)]
            # The first frame stopped after its stage; the second ran in the same (one) worker.
            assert events[events.index("segment end") + 1].startswith("segment start")
            threads = {e.split("thread=")[1] for e in events if e.startswith("segment start")}
            assert len(threads) == 1, events
        finally:
            rec.close()


# ------------------------------------------------------------------------------ 16: max_objects


def test_max_objects_caps_prompts_goals_and_automatic_segmentation():
    sc = scene(seed=1)  # three objects
    with ros_context(), running_node({**RELIABLE, "max_objects": 2}) as node:
        rec = Recorder()
        try:
            client = action_client(rec)
            assert rec.wait_subscribed(), node.log()
            transforms = tf_for(rec, publish_scene(rec, sc))[0].transforms
            assert len(transforms) == 2, node.log()[-3000:]
            assert node.wait_for_line("kept the 2 highest-scoring (max_objects)", 5.0)
            start = node.line_count()
            rec.pub_prompt.publish(box_prompt(sc))
            assert node.wait_for_line("bad input: prompt.boxes: 3 objects prompted; at most 2 "
                                      "objects per request (max_objects); prompt rejected",
                                      10.0, start=start), node.log()[-3000:]
            res = run_goal(rec, client, explicit_goal(sc))
            assert res.status == GoalStatus.STATUS_ABORTED
            assert res.result.error.startswith("goal.prompt.boxes: 3 objects prompted"), (
                res.result.error)
        finally:
            rec.close()
