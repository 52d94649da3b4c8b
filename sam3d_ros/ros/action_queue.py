"""A first-in-first-out action server: the ROS form of the hosted endpoint's request queue.

Goals are accepted and processed one at a time in arrival order. While a goal waits it gets
feedback with its queue position; while it runs, the work function reports stage, progress and
log lines, which become feedback too. A goal can be cancelled while queued or between two stages
of its work.

A waiting goal holds no executor thread: a goal's execute callback is started only when the goal
reaches the head of the queue (or when it is cancelled while waiting), so any number of queued
goals never starve the executor that must keep accepting goals and serving the node.

Bursts and memory (see docs/node.md, "Goal queue"):

* At most ``max_queued`` goals are accepted and not finished (the running one included); a goal
  beyond that is rejected at once, and the log says why.
* The goal, result and cancel services keep :func:`service_depth` requests (the ROS default, 10,
  silently loses the rest of a burst: clients wait forever for an answer).
* A finished goal's result is kept ``result_timeout_s`` for clients that ask late (rclpy's
  default is 15 minutes); its request (images included) is released when it finishes.
* :meth:`QueuedActionServer.destroy` aborts every goal still queued or running with a reason
  instead of leaving its client waiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Optional, Set

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from sam3d_ros.core.errors import Cancelled
from sam3d_ros.core.work_gate import WorkGate

ProgressFn = Callable[[str, float, str], None]
"""progress(stage, fraction 0..1, log_line)."""

WorkFn = Callable[[Any, ProgressFn, Callable[[], bool]], Any]
"""work(goal_request, progress, is_cancel_requested) -> result message; raises Cancelled."""

REQUEST_BURST = 128
"""Requests per action service kept until served, at least (a burst of goals sent at once)."""

RESULT_SEND_GRACE_S = 0.5
"""After the last goal's execute callback returns, rclpy sends its result from a task of its
own; :meth:`QueuedActionServer.destroy` waits this long before destroying the server."""


def service_depth(max_queued: int) -> int:
    """Keep-last depth of the goal, result and cancel services for a queue of ``max_queued``.

    Every queued goal has a result request and may have a cancel request outstanding, and a
    burst of goal requests must be read to be answered (accepted or rejected).
    """
    return max(REQUEST_BURST, 4 * int(max_queued))


def _goal_key(goal_handle: ServerGoalHandle) -> bytes:
    return bytes(goal_handle.goal_id.uuid)


def _release_request(request: Any) -> None:
    """Reset a finished goal's request to its defaults.

    rclpy keeps the goal handle, and with it the request, as long as the result
    (``result_timeout_s``); the request's images are not needed once the goal finished.
    """
    empty = type(request)()
    for name in request.get_fields_and_field_types():
        setattr(request, name, getattr(empty, name))


class QueuedActionServer:
    """Serve one action with a bounded FIFO queue and queue-position feedback.

    Args:
        node: the node that owns the server.
        action_type: the action interface (e.g. ``sam3d_ros.action.Reconstruct``).
        name: action name (relative names resolve in the node's namespace; ``~/x`` is private).
        work: called for each goal in turn from an executor thread; returns the result message.
        queue_poll_s: how often queued goals are checked for cancel requests.
        max_queued: goals accepted and not finished (waiting or running) at most; more are
            rejected.
        result_timeout_s: how long a finished goal's result is kept for clients that ask late.
        gate: when given, every accepted goal claims it until it finishes, so that no new
            camera frame enters the engine while goals wait (:class:`WorkGate`).
    """

    def __init__(
        self,
        node: Node,
        action_type: Any,
        name: str,
        work: WorkFn,
        queue_poll_s: float = 0.2,
        max_queued: int = 16,
        result_timeout_s: float = 60.0,
        gate: Optional[WorkGate] = None,
    ) -> None:
        if int(max_queued) < 1:
            raise ValueError(f"max_queued must be at least 1, got {max_queued}")
        self._node = node
        self._action_type = action_type
        self._work = work
        self._max_queued = int(max_queued)
        self._gate = gate
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        # Accepted goals not finished, in arrival order; the head is the one executing.
        self._queue: Deque[ServerGoalHandle] = deque()
        self._started: Set[bytes] = set()  # goal ids (goal handles are not hashable)
        self._closing: Optional[str] = None  # the reason, once destroy() began
        self._rejected = 0
        services = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=service_depth(self._max_queued),
            reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        # Mutually exclusive: a goal request is accepted (and queued) before the next one is
        # looked at, so the queue bound holds without a reservation scheme. Execute callbacks
        # are executor tasks outside the group; they do not block acceptance.
        group = MutuallyExclusiveCallbackGroup()
        self._server = ActionServer(
            node,
            action_type,
            name,
            execute_callback=self._execute,
            goal_callback=self._on_goal,
            handle_accepted_callback=self._on_accepted,
            cancel_callback=lambda _handle: CancelResponse.ACCEPT,
            callback_group=group,
            goal_service_qos_profile=services,
            result_service_qos_profile=services,
            cancel_service_qos_profile=services,
            # Feedback of every queued goal ("queued at position n") goes out together on
            # acceptance and on every start: a depth-10 history would drop some of it.
            feedback_pub_qos_profile=QoSProfile(depth=service_depth(self._max_queued)),
            result_timeout=float(result_timeout_s),
        )
        self._cancel_timer = node.create_timer(
            queue_poll_s, self._finish_cancelled_waiting_goals, callback_group=group
        )

    @property
    def queue_length(self) -> int:
        """Goals accepted and not finished (waiting or running)."""
        with self._lock:
            return len(self._queue)

    @property
    def rejected(self) -> int:
        """Goals rejected so far (queue full, or the server shutting down)."""
        with self._lock:
            return self._rejected

    def destroy(self, reason: str = "the action server is shutting down",
                timeout_s: float = 30.0) -> None:
        """Abort every goal still queued or running with ``reason``, then destroy the server.

        Waiting goals are aborted at once; the running goal is asked to stop (its work sees a
        cancel request) and is aborted when it returns, waited for up to ``timeout_s``. New goals
        are rejected from now on. Needs the node's executor to be spinning on another thread
        (the lifecycle transitions of a multi-threaded executor are).
        """
        with self._lock:
            self._closing = reason
            goals = list(self._queue)
        for goal_handle in goals:
            self._start(goal_handle)  # no-op for the running one
        with self._drained:
            drained = self._drained.wait_for(lambda: not self._queue, timeout_s)
            left = len(self._queue)
        if not drained:
            self._node.get_logger().error(
                f"destroying the action server with {left} goal(s) still running after "
                f"{timeout_s:.0f} s: their clients get no result")
        elif goals:
            time.sleep(RESULT_SEND_GRACE_S)
        self._node.destroy_timer(self._cancel_timer)
        self._server.destroy()

    def _feedback(
        self, goal_handle: ServerGoalHandle, stage: str, progress: float, line: str, position: int
    ) -> None:
        feedback = self._action_type.Feedback()
        feedback.stage = stage
        feedback.progress = float(min(max(progress, 0.0), 1.0))
        feedback.queue_position = int(position)
        feedback.log_line = line
        goal_handle.publish_feedback(feedback)

    def _start(self, goal_handle: ServerGoalHandle) -> None:
        """Run the goal's execute callback (once); call without holding the lock."""
        with self._lock:
            if _goal_key(goal_handle) in self._started:
                return
            self._started.add(_goal_key(goal_handle))
        try:
            goal_handle.execute()
        except Exception:  # noqa: BLE001 -- re-raised unless it is the race below
            # rclpy's execute() checks for a cancel request, then moves the goal to EXECUTING:
            # a cancel arriving in between makes that move invalid (CANCELING cannot execute).
            # Asked again, it sees the request and runs the callback, which ends the goal as
            # cancelled; otherwise the goal would never get a result.
            if not goal_handle.is_cancel_requested:
                raise
            goal_handle.execute()

    def _announce_positions(self) -> None:
        with self._lock:
            if self._closing is not None:
                return
            waiting = [
                (i, g) for i, g in enumerate(self._queue) if _goal_key(g) not in self._started
            ]
        for position, goal_handle in waiting:
            self._announce(goal_handle, position)

    def _announce(self, goal_handle: ServerGoalHandle, position: int) -> None:
        self._feedback(goal_handle, "queued", 0.0, f"queued at position {position}", position)

    def _on_goal(self, _goal: Any) -> GoalResponse:
        with self._lock:
            if self._closing is not None:
                why = f"rejected: {self._closing}"
            elif len(self._queue) >= self._max_queued:
                why = (f"rejected: the queue is full ({len(self._queue)} goals waiting or "
                       f"running, max_queued_goals {self._max_queued})")
            else:
                return GoalResponse.ACCEPT
            self._rejected += 1
            count = self._rejected
        self._node.get_logger().warning(f"goal {why}; {count} rejected so far",
                                        throttle_duration_sec=1.0)
        return GoalResponse.REJECT

    def _on_accepted(self, goal_handle: ServerGoalHandle) -> None:
        with self._lock:
            self._queue.append(goal_handle)
            position = len(self._queue) - 1
            if self._gate is not None:
                self._gate.claim()
        if position == 0 or self._closing is not None:
            self._start(goal_handle)  # (an accepted goal that raced destroy() is aborted)
        else:
            self._announce(goal_handle, position)

    def _finish_cancelled_waiting_goals(self) -> None:
        with self._lock:
            cancelled = [
                g for g in list(self._queue)[1:]
                if _goal_key(g) not in self._started and g.is_cancel_requested
            ]
        for goal_handle in cancelled:
            self._start(goal_handle)  # its execute callback sees it is not at the head

    def _stop_requested(self, goal_handle: ServerGoalHandle) -> bool:
        return goal_handle.is_cancel_requested or self._closing is not None

    def _end_unrun(self, goal_handle: ServerGoalHandle) -> Any:
        """Finish a goal that never ran: cancelled while queued, or aborted by destroy()."""
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
            return self._action_type.Result(error="cancelled while queued")
        goal_handle.abort()
        return self._action_type.Result(error=f"aborted: {self._closing}")

    def _execute(self, goal_handle: ServerGoalHandle) -> Any:
        with self._lock:
            at_head = bool(self._queue) and self._queue[0] is goal_handle
        try:
            if not at_head or self._stop_requested(goal_handle):
                return self._end_unrun(goal_handle)

            def progress(stage: str, fraction: float, line: str) -> None:
                self._feedback(goal_handle, stage, fraction, line, 0)

            try:
                result = self._work(
                    goal_handle.request, progress, lambda: self._stop_requested(goal_handle)
                )
            except Cancelled as exc:
                if goal_handle.is_cancel_requested:
                    goal_handle.canceled()
                    return self._action_type.Result(error=f"cancelled: {exc}")
                goal_handle.abort()
                return self._action_type.Result(error=f"aborted: {self._closing or exc}")
            except Exception as exc:  # noqa: BLE001 - a failed goal must not take the node down
                self._node.get_logger().error(f"goal failed: {exc!r}")
                goal_handle.abort()
                return self._action_type.Result(error=f"internal error: {exc}")
            if getattr(result, "error", ""):
                goal_handle.abort()
            else:
                goal_handle.succeed()
            return result
        finally:
            try:
                self._finish(goal_handle)
            except Exception as exc:  # noqa: BLE001 -- it would replace this goal's result
                # (rclpy then sends an empty one): the next goal's start failed, say so.
                self._node.get_logger().error(f"goal queue: starting the next goal failed: "
                                              f"{exc!r}")

    def _finish(self, goal_handle: ServerGoalHandle) -> None:
        """Drop a goal from the queue; start the next one and tell the others where they are."""
        with self._lock:
            queued = goal_handle in self._queue
            if queued:
                self._queue.remove(goal_handle)
                if self._gate is not None:
                    self._gate.release_claim()
            self._started.discard(_goal_key(goal_handle))
            head = self._queue[0] if self._queue else None
            self._drained.notify_all()
        _release_request(goal_handle.request)
        if head is not None:
            self._start(head)
        self._announce_positions()
