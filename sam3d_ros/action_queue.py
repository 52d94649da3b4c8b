"""A first-in-first-out action server: the ROS form of the hosted endpoint's request queue.

Goals are accepted at once and processed one at a time in arrival order. While a goal waits it
gets feedback with its queue position; while it runs, the work function reports stage, progress
and log lines, which become feedback too. A goal can be cancelled while queued or between two
stages of its work.

Execute callbacks of waiting goals block on a condition variable, so the node must spin a
MultiThreadedExecutor and the server uses a ReentrantCallbackGroup.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Deque, Optional

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from .errors import Cancelled

ProgressFn = Callable[[str, float, str], None]
"""progress(stage, fraction 0..1, log_line)."""

WorkFn = Callable[[Any, ProgressFn, Callable[[], bool]], Any]
"""work(goal_request, progress, is_cancel_requested) -> result message; raises Cancelled."""


class QueuedActionServer:
    """Serve one action with a FIFO queue and queue-position feedback.

    Args:
        node: the node that owns the server.
        action_type: the action interface (e.g. ``sam3d_ros.action.Reconstruct``).
        name: action name (relative names resolve in the node's namespace; ``~/x`` is private).
        work: called for each goal in turn from an executor thread; returns the result message.
        queue_poll_s: how often a waiting goal re-sends its queue position and checks cancel.
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
        self._queue_poll_s = queue_poll_s
        self._queue: Deque[ServerGoalHandle] = deque()
        self._turn = threading.Condition()
        self._server = ActionServer(
            node,
            action_type,
            name,
            execute_callback=self._execute,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            handle_accepted_callback=self._on_accepted,
            cancel_callback=lambda _handle: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )

    @property
    def queue_length(self) -> int:
        """Goals accepted and not finished (waiting or running)."""
        with self._turn:
            return len(self._queue)

    def destroy(self) -> None:
        """Destroy the underlying action server."""
        self._server.destroy()

    def _on_accepted(self, goal_handle: ServerGoalHandle) -> None:
        with self._turn:
            self._queue.append(goal_handle)
        goal_handle.execute()

    def _position(self, goal_handle: ServerGoalHandle) -> int:
        with self._turn:
            return self._queue.index(goal_handle)

    def _feedback(
        self, goal_handle: ServerGoalHandle, stage: str, progress: float, line: str, position: int
    ) -> None:
        feedback = self._action_type.Feedback()
        feedback.stage = stage
        feedback.progress = float(min(max(progress, 0.0), 1.0))
        feedback.queue_position = int(position)
        feedback.log_line = line
        goal_handle.publish_feedback(feedback)

    def _execute(self, goal_handle: ServerGoalHandle) -> Any:
        try:
            if not self._wait_for_turn(goal_handle):
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
            with self._turn:
                if goal_handle in self._queue:
                    self._queue.remove(goal_handle)
                self._turn.notify_all()

    def _wait_for_turn(self, goal_handle: ServerGoalHandle) -> bool:
        """Block until this goal heads the queue; False if it was cancelled while waiting."""
        last_position: Optional[int] = None
        while True:
            position = self._position(goal_handle)
            if goal_handle.is_cancel_requested:
                return False
            if position == 0:
                return True
            if position != last_position:
                self._feedback(goal_handle, "queued", 0.0, f"queued at position {position}",
                               position)
                last_position = position
            with self._turn:
                self._turn.wait(timeout=self._queue_poll_s)
