"""Reconstruct action round trip against the package's queued action server in another process."""

import time

import numpy as np
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_process import ros_peer
from sam3d_ros.action import Reconstruct
from sensor_msgs.msg import Image


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


# A client that sends a burst needs service queues as deep as its burst, as the server has them
# (QueuedActionServer's service_depth): with the ROS default of 10, answers that arrive together
# overwrite each other in the client's own reader and the client waits forever.
BURST_QOS = QoSProfile(depth=256, reliability=ReliabilityPolicy.RELIABLE)
WAIT_S = 90.0  # liveness bound on a loaded 2-core machine, not a speed target


def burst_client(node):
    client = ActionClient(node, Reconstruct, "reconstruct", goal_service_qos_profile=BURST_QOS,
                          result_service_qos_profile=BURST_QOS,
                          cancel_service_qos_profile=BURST_QOS)
    assert client.wait_for_server(timeout_sec=30.0), "action server did not come up"
    _warm_up(node, client)
    return client


def _warm_up(node, client):
    """Until the server answers this client's goal, result and cancel requests.

    DDS discovery is not symmetric: the client may see the server before the server's response
    writers match the client's readers, and an answer sent before that is lost.
    """
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        sent = client.send_goal_async(Reconstruct.Goal(seed=0))
        if not spin_until(node, sent.done, 10.0):
            continue
        handle = sent.result()
        answers = [handle.cancel_goal_async(), handle.get_result_async()]
        if spin_until(node, lambda a=answers: all(f.done() for f in a), 10.0):
            return
    pytest.fail("the action server never answered a goal, its cancel and its result")


@pytest.mark.parametrize("n_goals", [50, 120])
def test_submit_and_cancel_storm_answers_every_goal(ros_node, n_goals):
    with ros_peer("action_server"):
        client = burst_client(ros_node)
        sent = [client.send_goal_async(Reconstruct.Goal(seed=i)) for i in range(n_goals)]
        assert spin_until(ros_node, lambda: all(f.done() for f in sent), WAIT_S), (
            f"{sum(not f.done() for f in sent)} of {n_goals} goals never answered")
        accepted = [f.result() for f in sent if f.result().accepted]
        results = [h.get_result_async() for h in accepted]
        cancels = [h.cancel_goal_async() for h in accepted]
        assert spin_until(ros_node, lambda: all(f.done() for f in results + cancels), WAIT_S), (
            f"{sum(not f.done() for f in results)} of {len(accepted)} accepted goals "
            "without a result")
        # The queue still works: a goal after the storm runs to its result.
        after = send(ros_node, client, 99, [])
        result_after = after.get_result_async()
        assert spin_until(ros_node, result_after.done, WAIT_S)

    # The queue holds 16: the rest were rejected at once (a goal may have finished meanwhile).
    assert 16 <= len(accepted) < n_goals
    statuses = [r.result().status for r in results]
    assert set(statuses) <= {GoalStatus.STATUS_CANCELED, GoalStatus.STATUS_SUCCEEDED}
    assert statuses.count(GoalStatus.STATUS_CANCELED) >= len(accepted) - 1
    assert result_after.result().status == GoalStatus.STATUS_SUCCEEDED
    assert [o.id for o in result_after.result().result.objects.objects] == [99]


def test_destroying_the_server_aborts_queued_and_running_goals(ros_node):
    with ros_peer("action_server") as peer:
        client = burst_client(ros_node)
        feedback = [[], [], []]
        handles = [send(ros_node, client, seed, fb)
                   for seed, fb in zip((1, 2, 3), feedback, strict=True)]
        assert spin_until(ros_node, lambda: any(f.stage == "load" for f in feedback[0])
                          and any(f.queue_position == 2 for f in feedback[2]), WAIT_S)
        results = [h.get_result_async() for h in handles]
        peer.stdin.write("destroy\n")
        peer.stdin.flush()
        assert spin_until(ros_node, lambda: all(r.done() for r in results), WAIT_S), (
            "a goal was left without a result")
    for result in results:
        assert result.result().status == GoalStatus.STATUS_ABORTED
        assert result.result().result.error == "aborted: the test peer is shutting down"
    assert "done" not in [f.stage for f in feedback[0]]  # the running goal was stopped
    assert all(f.stage == "queued" for f in feedback[1] + feedback[2])


def _peer_rss_mib(peer):
    peer.stdin.write("rss\n")
    peer.stdin.flush()
    for line in peer.stdout:  # log lines of the peer come this way too
        if line.startswith("rss "):
            return float(line.split()[1])
    raise AssertionError("the peer ended without answering rss")


def test_finished_goals_keep_neither_their_images_nor_their_results(ros_node):
    side = 1024  # a 3 MiB rgb8 image per goal
    image = Image(height=side, width=side, encoding="rgb8", step=3 * side)
    image.data = np.random.default_rng(0).integers(0, 256, 3 * side * side, np.uint8).tobytes()
    with ros_peer("action_server") as peer:
        client = burst_client(ros_node)

        def submit_and_cancel(count):
            sent = [client.send_goal_async(Reconstruct.Goal(image=image, use_latest_frame=False))
                    for _ in range(count)]
            assert spin_until(ros_node, lambda: all(f.done() for f in sent), WAIT_S)
            handles = [f.result() for f in sent if f.result().accepted]
            done = [h.get_result_async() for h in handles] + [
                h.cancel_goal_async() for h in handles]
            assert spin_until(ros_node, lambda: all(f.done() for f in done), WAIT_S)
            return handles

        submit_and_cancel(10)  # the transport's buffers for such goals exist from here on
        before = _peer_rss_mib(peer)
        handles = [h for _ in range(6) for h in submit_and_cancel(10)]
        grown = _peer_rss_mib(peer) - before
        # A finished goal's result expires after the server's result timeout (5 s here).
        late = handles[-1]
        assert spin_until(
            ros_node, lambda: _result_status(ros_node, late) == GoalStatus.STATUS_UNKNOWN,
            WAIT_S), "the result was never dropped"
    # 60 goals carried 180 MiB of images: a server keeping them would have grown by that.
    assert len(handles) == 60
    assert grown < 60.0, f"the server grew by {grown:.0f} MiB over 60 finished goals"


def _result_status(node, handle):
    future = handle.get_result_async()
    assert spin_until(node, future.done, WAIT_S)
    return future.result().status
