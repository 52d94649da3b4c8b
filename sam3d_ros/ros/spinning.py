"""Spinning the node's executor so that an entity destroyed while it waits does not end it.

rclpy (Jazzy and Kilted) snapshots a node's waitables, then enters each one and adds it to the
wait set. A waitable destroyed between the snapshot and the add (a QoS event handler of a
subscription destroyed by ``deactivate`` from another executor thread, or an action server
destroyed by ``cleanup``) is skipped when entered but still added, and the add raises
``InvalidHandle`` out of ``Executor.spin``: the node process ended. ``destroy_subscription``
takes the handler off the node before destroying it (an action server's destroy takes it off
right after), so a later wait set is whole: spinning again is the fix. Seen in the bad-input
campaign (20 deactivate/activate cycles under 30 Hz frames), about once per thousand cycles
on a loaded machine. An ``InvalidHandle`` from a callback is a bug of the node and ends it.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from rclpy.exceptions import InvalidHandle

#: An ``InvalidHandle`` that keeps coming back this many times without a clean spin in between
#: is not the race above (something destroyed stays on the node): it ends the spin.
MAX_REPEATS = 100


def spin_through_destroyed_entities(executor: Any, warn: Callable[[str], None],
                                    max_repeats: int = MAX_REPEATS) -> int:
    """``executor.spin()``, spun again after an ``InvalidHandle`` from its wait set; how often.

    ``warn`` gets one line per recovery. Raises the error after ``max_repeats`` in a row, each
    within a second of the last (a destroyed entity still on the node, not a race), and at
    once when it came from a callback (rclpy's multi-threaded executor re-raises a callback's
    exception from ``spin``).
    """
    recovered = 0
    repeats = 0
    last = float("-inf")
    while True:
        try:
            executor.spin()
            return recovered
        except InvalidHandle as exc:
            if not _while_waiting(exc):
                raise  # from a callback (a publisher used after its destroy): a bug, not the race
            now = time.monotonic()
            repeats = repeats + 1 if now - last < 1.0 else 1
            last = now
            if repeats >= max_repeats:
                raise
            recovered += 1
            warn(f"the executor met an entity destroyed while it waited ({exc}); spinning on")


def _while_waiting(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while rclpy built its wait set (not in a callback)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_wait_for_ready_callbacks":
            return True
        tb = tb.tb_next
    return False


__all__ = ["MAX_REPEATS", "spin_through_destroyed_entities"]
