"""Races of the goal queue (sam3d_ros.ros.action_queue) with rclpy's goal handle.

The goal handle here is a contract fake of rclpy's ``ServerGoalHandle``: the race it plays
(a cancel request landing inside ``execute()``, between rclpy's cancel check and its move to
EXECUTING) cannot be timed with a real client.
"""

import threading
import uuid
from types import SimpleNamespace

import pytest

from sam3d_ros.ros.action_queue import QueuedActionServer


class CancelRacesExecute:
    """``execute()`` fails once as rclpy's does when a cancel arrives mid-call."""

    def __init__(self, cancel_arrives: bool):
        self.goal_id = SimpleNamespace(uuid=uuid.uuid4().bytes)
        self.is_cancel_requested = False
        self.cancel_arrives = cancel_arrives
        self.calls = 0
        self.executed = 0

    def execute(self):
        self.calls += 1
        if self.calls == 1:
            self.is_cancel_requested = self.cancel_arrives
            raise RuntimeError("Failed to update goal state: invalid transition")
        self.executed += 1


def _bare_queue() -> QueuedActionServer:
    queue = QueuedActionServer.__new__(QueuedActionServer)  # _start needs only these
    queue._lock = threading.Lock()
    queue._started = set()
    return queue


def test_a_cancel_landing_inside_execute_still_runs_the_goal_to_its_cancelled_end():
    handle = CancelRacesExecute(cancel_arrives=True)
    queue = _bare_queue()
    queue._start(handle)
    assert handle.executed == 1  # the callback ran: it ends the goal as cancelled
    queue._start(handle)  # started once only
    assert handle.calls == 2


def test_other_execute_failures_are_not_swallowed():
    with pytest.raises(RuntimeError, match="invalid transition"):
        _bare_queue()._start(CancelRacesExecute(cancel_arrives=False))
