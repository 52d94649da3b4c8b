"""~/reconstruct under load, against the node process: goal storms (every goal answered, the queue
capped), goals before camera frames, and goals aborted with a reason at shutdown (issue 10,
items 15, 5 and 11)."""

from __future__ import annotations

import threading
import time

import pytest
from action_msgs.msg import GoalStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from node_harness import (
    Recorder,
    SpunNode,
    box_prompt,
    camera_info,
    explicit_goal,
    ros_context,
    running_node,
    scene,
    warm_up_action_client,
)
from rclpy.action import ActionClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sam3d_ros.action import Reconstruct

from sam3d_ros.core.image_decoding import stamp_to_seconds

MAX_QUEUED = 16  # the node's default max_queued_goals
WAIT_S = 120.0  # liveness bound on a loaded 2-core machine, not a speed target
# A client that sends a burst needs service queues as deep as its burst, as the node has them:
# with the ROS default of 10, answers that arrive together overwrite each other in the client's
# own reader and it waits forever (docs/node.md, "Goal queue").
BURST_QOS = QoSProfile(depth=256, reliability=ReliabilityPolicy.RELIABLE)


def burst_client(rec, peer, action="/sam3d/reconstruct", feedback_goal=None):
    """An action client on ``peer`` (a node of its own, not the busy recorder's)."""
    client = ActionClient(peer.node, Reconstruct, action, goal_service_qos_profile=BURST_QOS,
                          result_service_qos_profile=BURST_QOS,
                          cancel_service_qos_profile=BURST_QOS,
                          feedback_sub_qos_profile=BURST_QOS)
    assert client.wait_for_server(timeout_sec=30.0)
    warm_up_action_client(rec, client, feedback_goal)
    return client


@pytest.fixture(scope="module")
def env():
    sc = scene(seed=1)
    params = {"camera_qos_reliability": "reliable", "sync_slop_s": 0.01}
    with ros_context(), running_node(params) as node:
        rec = Recorder()
        peer = SpunNode()
        try:
            assert rec.wait_subscribed(), node.log()
            rec.pub_prompt.publish(box_prompt(sc))
            client = burst_client(rec, peer, feedback_goal=explicit_goal(sc))
            yield sc, node, rec, client, peer
        finally:
            peer.close()
            rec.close()


def _all_done(futures):
    return all(f.done() for f in futures)


@pytest.mark.parametrize("n_goals", [50, 120])
def test_goal_storm_answers_every_goal_and_caps_the_queue(env, n_goals):
    sc, node, rec, client, _peer = env
    goal = explicit_goal(sc)
    sent = [client.send_goal_async(goal) for _ in range(n_goals)]
    assert rec.wait(lambda: _all_done(sent), WAIT_S), (
        f"{sum(not f.done() for f in sent)} of {n_goals} goals never answered")
    accepted = [f.result() for f in sent if f.result().accepted]
    results = [h.get_result_async() for h in accepted]
    cancels = [h.cancel_goal_async() for h in accepted]
    assert rec.wait(lambda: _all_done(results + cancels), WAIT_S), (
        f"{sum(not f.done() for f in results)} of {len(accepted)} accepted goals without a "
        f"result\n{node.log()[-3000:]}")
    rejected = n_goals - len(accepted)

    # Goals that finished during the storm made room for others; the rest were rejected.
    assert MAX_QUEUED <= len(accepted) < n_goals
    statuses = [r.result().status for r in results]
    assert set(statuses) <= {GoalStatus.STATUS_CANCELED, GoalStatus.STATUS_SUCCEEDED}
    odd = [r.result().result.error for r in results
           if r.result().status == GoalStatus.STATUS_CANCELED
           and "cancelled" not in r.result().result.error]
    assert not odd, f"cancelled goals whose result does not say so: {odd[:5]}"
    assert node.wait_for_line("goal rejected: the queue is full", 10.0)
    assert rec.wait_diag(lambda m: int(rec.diag_values(m)["goals_rejected"]) >= rejected,
                         timeout=30.0) is not None
    # The node goes on: the next goal runs to its result.
    after = client.send_goal_async(goal)
    assert rec.wait(after.done, WAIT_S) and after.result().accepted
    result = after.result().get_result_async()
    assert rec.wait(result.done, WAIT_S)
    assert result.result().status == GoalStatus.STATUS_SUCCEEDED, result.result().result.error
    assert node.alive()


class FrameStream:
    """Camera frames at about 10 Hz from a thread of the test, with fresh stamps."""

    def __init__(self, rec, sc):
        self._rec, self._sc = rec, sc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        info = camera_info(self._sc.intrinsics)
        while not self._stop.wait(0.1):
            self._rec.publish_frame(self._sc.frame.rgb, self._sc.depth_m, info)

    def close(self):
        self._stop.set()
        self._thread.join(10.0)


def test_queued_goals_go_before_camera_frames(env):
    """A goal waits for at most the frame in progress when it was accepted.

    Three goals are accepted at once while frames stream in: of the camera frames captured
    after the first goal was accepted, at most one (one that entered the engine in the moment
    between rclpy's acceptance and the goal's claim) is published before the first goal's
    result, and none between the goals, although each goal ends with the engine free and a new
    frame waiting. Judged on the node's /tf, one writer whose messages arrive in order, by the
    frames' capture stamps against the acceptance stamp the server sent (arrival times in this
    process are not comparable across topics: a /tf published before the acceptance can be
    delivered after it; the goals' feedback can arrive after their results).
    """
    sc, node, rec, client, peer = env
    goal_stamps = (1, 2, 3)
    feedback = []  # every goal's feedback, read from the topic (the client drops late ones)
    sub = peer.node.create_subscription(
        Reconstruct.Impl.FeedbackMessage, "/sam3d/reconstruct/_action/feedback",
        lambda m: feedback.append((bytes(m.goal_id.uuid), m.feedback)), BURST_QOS)
    assert rec.wait(lambda: sub.get_publisher_count() > 0, WAIT_S)

    def tf_sequence():  # (stamp second, stamp in s, arrival time) of every /tf, in order
        with rec.lock:
            pairs = [(m.transforms[0].header.stamp, t)
                     for m, t in zip(rec.msgs["tf"], rec.arrival["tf"], strict=True)
                     if m.transforms]
        return [(s.sec, stamp_to_seconds(s), t) for s, t in pairs]

    def frame_tfs():
        return [t for sec, _stamp, t in tf_sequence() if sec not in goal_stamps]

    stream = FrameStream(rec, sc)
    try:
        seen = len(frame_tfs())
        assert rec.wait(lambda: len(frame_tfs()) >= seen + 2, WAIT_S), "frames not processed"
        sent = [client.send_goal_async(explicit_goal(sc, stamp)) for stamp in goal_stamps]
        assert rec.wait(lambda: _all_done(sent), WAIT_S)
        assert all(f.result().accepted for f in sent)
        results = [f.result().get_result_async() for f in sent]
        assert rec.wait(lambda: _all_done(results), WAIT_S), node.log()[-3000:]
        done_at = time.monotonic()
        # Frames resume once no goal is queued.
        assert rec.wait(lambda: any(t > done_at for t in frame_tfs()), WAIT_S)
    finally:
        stream.close()
    assert all(r.result().status == GoalStatus.STATUS_SUCCEEDED for r in results)
    accepted = stamp_to_seconds(sent[0].result().stamp)  # server clock, as the frames' stamps
    sequence = tf_sequence()
    order = [sec for sec, _stamp, _t in sequence]
    assert all(order.count(stamp) == 1 for stamp in goal_stamps), order
    first, last = order.index(1), order.index(3)
    assert order[first:last + 1] == [1, 2, 3], f"frames ran between the queued goals: {order}"
    ahead = [round(stamp - accepted, 3) for sec, stamp, _t in sequence[:first]
             if sec not in goal_stamps and stamp > accepted]
    assert len(ahead) <= 1, (
        f"{len(ahead)} frames captured after the first goal was accepted ran before it "
        f"(capture time after acceptance, s: {ahead})")
    # The third goal did wait, and was told its place.
    third = bytes(sent[2].result().goal_id.uuid)
    assert rec.wait(lambda: any(g == third and f.queue_position >= 1 for g, f in feedback),
                    WAIT_S)
    assert rec.wait_diag(
        lambda m: int(rec.diag_values(m)["frames_deferred_to_goals"]) > 0, timeout=30.0)


def test_shutdown_aborts_queued_and_running_goals_with_the_reason(env):
    sc, _node, rec, _client, peer = env
    name = "sam3d_goal_shutdown"
    with running_node({"continuous": False}, extra=["-r", f"__node:={name}"]) as node:
        client = burst_client(rec, peer, f"/{name}/reconstruct")
        feedback = [[] for _ in range(4)]
        sent = [client.send_goal_async(explicit_goal(sc, i + 1),
                                       feedback_callback=lambda m, fb=fb: fb.append(m.feedback))
                for i, fb in enumerate(feedback)]
        assert rec.wait(lambda: _all_done(sent), WAIT_S)
        handles = [f.result() for f in sent]
        assert all(h.accepted for h in handles)
        results = [h.get_result_async() for h in handles]
        assert rec.wait(lambda: any(f.queue_position >= 1 for f in feedback[3]), WAIT_S)
        change = rec.node.create_client(ChangeState, f"/{name}/change_state")
        assert change.wait_for_service(timeout_sec=30.0)
        shutdown = change.call_async(ChangeState.Request(
            transition=Transition(id=Transition.TRANSITION_ACTIVE_SHUTDOWN)))
        assert rec.wait(lambda: _all_done(results), WAIT_S), (
            f"a goal was left without a result\n{node.log()[-3000:]}")
        assert rec.wait(shutdown.done, WAIT_S) and shutdown.result().success
        assert node.alive()
    reason = "aborted: the node is shutting down"
    outcome = [(r.result().status, r.result().result.error) for r in results]
    # The goals still queued are aborted with the reason; the one running stops at its next
    # stage with the same reason, or had just finished.
    assert outcome[-1] == (GoalStatus.STATUS_ABORTED, reason)
    assert all(o in ((GoalStatus.STATUS_ABORTED, reason), (GoalStatus.STATUS_SUCCEEDED, ""))
               for o in outcome)
    assert all(f.stage == "queued" for f in feedback[3])
