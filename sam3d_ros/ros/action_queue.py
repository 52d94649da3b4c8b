"""A first-in-first-out action server: the ROS form of the hosted endpoint's request queue.

Goals are accepted at once and processed one at a time in arrival order. While a goal waits it
gets feedback with its queue position; while it runs, the work function reports stage, progress
and log lines, which become feedback too. A goal can be cancelled while queued or between two
stages of its work.

A waiting goal holds no executor thread: a goal's execute callback is started only when the goal
reaches the head of the queue (or when it is cancelled while waiting), so any number of queued
goals never starve the executor that must keep accepting goals and serving the node.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Deque, Set

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from sam3d_ros.core.errors import Cancelled

ProgressFn = Callable[[str, float, str], None]
"""progress(stage, fraction 0..1, log_line)."""

WorkFn = Callable[[Any, ProgressFn, Callable[[], bool]], Any]
"""work(goal_request, progress, is_cancel_requested) -> result message; raises Cancelled."""


def _goal_key(goal_handle: ServerGoalHandle) -> bytes:
    return bytes(goal_handle.goal_id.uuid)


class QueuedActionServer:
    """Serve one action with a FIFO queue and queue-position feedback.

    Args:
        node: the node that owns the server.
        action_type: the action interface (e.g. ``sam3d_ros.action.Reconstruct``).
        name: action name (relative names resolve in the node's namespace; ``~/x`` is private).
        work: called for each goal in turn from an executor thread; returns the result message.
        queue_poll_s: how often queued goals are checked for cancel requests.
    """

    def __init__(
        self,
        node: Node,
        action_type: Any,
        name: str,
        work: WorkFn,
        queue_poll_s: float = 0.2,
    ) -> None:
        self._node = node
        self._action_type = action_type
        self._work = work
        self._lock = threading.Lock()
        # Accepted goals not finished, in arrival order; the head is the one executing.
        self._queue: Deque[ServerGoalHandle] = deque()
        self._started: Set[bytes] = set()  # goal ids (goal handles are not hashable)
        group = ReentrantCallbackGroup()
        self._server = ActionServer(
            node,
            action_type,
            name,
            execute_callback=self._execute,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            handle_accepted_callback=self._on_accepted,
            cancel_callback=lambda _handle: CancelResponse.ACCEPT,
            callback_group=group,
        )
        self._cancel_timer = node.create_timer(
            queue_poll_s, self._finish_cancelled_waiting_goals, callback_group=group
        )

    @property
    def queue_length(self) -> int:
        """Goals accepted and not finished (waiting or running)."""
        with self._lock:
            return len(self._queue)

    def destroy(self) -> None:
        """Destroy the underlying action server and its timer."""
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
        goal_handle.execute()

    def _announce_positions(self) -> None:
        with self._lock:
            waiting = [
                (i, g) for i, g in enumerate(self._queue) if _goal_key(g) not in self._started
            ]
        for position, goal_handle in waiting:
            self._feedback(goal_handle, "queued", 0.0, f"queued at position {position}", position)

    def _on_accepted(self, goal_handle: ServerGoalHandle) -> None:
        with self._lock:
            self._queue.append(goal_handle)
            at_head = self._queue[0] is goal_handle
        if at_head:
            self._start(goal_handle)
        else:
            self._announce_positions()

    def _finish_cancelled_waiting_goals(self) -> None:
        with self._lock:
            cancelled = [
                g for g in list(self._queue)[1:]
                if _goal_key(g) not in self._started and g.is_cancel_requested
            ]
        for goal_handle in cancelled:
            self._start(goal_handle)  # its execute callback sees it is not at the head

    def _execute(self, goal_handle: ServerGoalHandle) -> Any:
        with self._lock:
            at_head = bool(self._queue) and self._queue[0] is goal_handle
        if not at_head:  # started only to be cancelled while waiting
            self._finish(goal_handle)
            goal_handle.canceled()
            return self._action_type.Result(error="cancelled while queued")
        try:
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                return self._action_type.Result(error="cancelled while queued")

            def progress(stage: str, fraction: float, line: str) -> None:
                self._feedback(goal_handle, stage, fraction, line, 0)

            try:
                result = self._work(
                    goal_handle.request, progress, lambda: goal_handle.is_cancel_requested
                )
            except Cancelled as exc:
                goal_handle.canceled()
                return self._action_type.Result(error=f"cancelled: {exc}")
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
            self._finish(goal_handle)

    def _finish(self, goal_handle: ServerGoalHandle) -> None:
        """Drop a goal from the queue; start the next one and tell the others where they are."""
        with self._lock:
            if goal_handle in self._queue:
                self._queue.remove(goal_handle)
            self._started.discard(_goal_key(goal_handle))
            head = self._queue[0] if self._queue else None
        if head is not None:
            self._start(head)
        self._announce_positions()
