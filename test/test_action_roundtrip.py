"""Reconstruct action round trip against the package's queued action server in another process."""

import time

import pytest
import rclpy
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from ros_process import ros_peer
from sam3d_ros.action import Reconstruct


def spin_until(node, predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()


def send(node, client, seed, feedback_log):
    goal = Reconstruct.Goal(seed=seed)
    future = client.send_goal_async(
        goal, feedback_callback=lambda fb: feedback_log.append(fb.feedback)
    )
    assert spin_until(node, future.done, 10.0)
    handle = future.result()
    assert handle.accepted
    return handle


def test_queue_feedback_cancel_and_result(ros_node):
    with ros_peer("action_server"):
        client = ActionClient(ros_node, Reconstruct, "reconstruct")
        assert client.wait_for_server(timeout_sec=30.0), "action server did not come up"

        fb_a, fb_b, fb_c = [], [], []
        handle_a = send(ros_node, client, 7, fb_a)
        handle_b = send(ros_node, client, 8, fb_b)
        handle_c = send(ros_node, client, 9, fb_c)

        # C waits behind A and B: it is told its queue position, then cancelled while queued.
        assert spin_until(ros_node, lambda: any(f.queue_position == 2 for f in fb_c), 10.0)
        cancel_c = handle_c.cancel_goal_async()
        # B is cancelled once it has started (queue position 0, first stage reported).
        assert spin_until(ros_node, lambda: any(f.queue_position == 1 for f in fb_b), 10.0)
        assert spin_until(
            ros_node, lambda: any(f.queue_position == 0 for f in fb_b), 10.0
        ), "B never started"
        cancel_b = handle_b.cancel_goal_async()

        result_a = handle_a.get_result_async()
        result_b = handle_b.get_result_async()
        result_c = handle_c.get_result_async()
        assert spin_until(
            ros_node,
            lambda: result_a.done() and result_b.done() and result_c.done() and cancel_b.done()
            and cancel_c.done(),
            30.0,
        )

    # A ran to completion with staged feedback and its result.
    assert result_a.result().status == GoalStatus.STATUS_SUCCEEDED
    assert [o.id for o in result_a.result().result.objects.objects] == [7]
    stages = [f.stage for f in fb_a if f.queue_position == 0]
    assert stages == ["load", "segment", "reconstruct", "export", "done"]
    progress = [f.progress for f in fb_a if f.queue_position == 0]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
    assert all("seed 7" in f.log_line for f in fb_a if f.queue_position == 0)

    # B was cancelled between stages; it never finished all five.
    assert result_b.result().status == GoalStatus.STATUS_CANCELED
    assert "cancelled" in result_b.result().result.error
    assert "done" not in [f.stage for f in fb_b]

    # C never ran.
    assert result_c.result().status == GoalStatus.STATUS_CANCELED
    assert all(f.stage == "queued" for f in fb_c)
