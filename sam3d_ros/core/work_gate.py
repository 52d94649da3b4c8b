"""Turn-taking for the engine: one user at a time, goals before frames.

The node runs camera frames (a worker thread, continuously) and action goals (one at a time,
from the action queue) on one engine. A plain lock is not fair: a worker that re-acquires it
frame after frame can keep a goal waiting indefinitely. :class:`WorkGate` gives goals priority:

* a goal **claims** the gate when it is accepted (:meth:`WorkGate.claim`) and releases the claim
  when it finishes; while any claim is held, no new frame enters;
* a goal enters (:meth:`WorkGate.goal`) as soon as the current holder leaves; it never waits for
  a frame that started after its claim.

Bound: a goal waits for at most one frame, the one already in the engine when it was accepted
(plus the goals queued ahead of it). Frames may wait as long as goals keep coming: goals are
explicit requests, frames are the newest of a stream and are simply replaced while they wait.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, Optional

from sam3d_ros.core.errors import Cancelled


class WorkGate:
    """One holder at a time; claimed goals go before frames. Thread-safe.

    Args:
        poll_s: how often a waiting goal checks its ``cancelled`` callable.
    """

    def __init__(self, poll_s: float = 0.1) -> None:
        self._cond = threading.Condition()
        self._claims = 0
        self._holder: Optional[str] = None
        self._poll_s = float(poll_s)
        self._turned_away = 0

    @property
    def holder(self) -> Optional[str]:
        """``"goal"``, ``"frame"`` or ``None`` (free)."""
        with self._cond:
            return self._holder

    @property
    def claims(self) -> int:
        """Goals accepted and not finished (each holds off new frames)."""
        with self._cond:
            return self._claims

    @property
    def turned_away(self) -> int:
        """Frames that did not enter because a goal held or claimed the gate."""
        with self._cond:
            return self._turned_away

    def claim(self) -> None:
        """A goal was accepted: no new frame enters until :meth:`release_claim`."""
        with self._cond:
            self._claims += 1

    def release_claim(self) -> None:
        """The goal of one :meth:`claim` finished (whether or not it ran)."""
        with self._cond:
            if self._claims <= 0:
                raise RuntimeError("release_claim without a claim")
            self._claims -= 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def goal(self, cancelled: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """Hold the gate for a goal; waits only for the current holder to leave.

        The goal holds a claim of its own while it waits, so it also goes first when it was
        never :meth:`claim`-ed. Raises :class:`Cancelled` when ``cancelled()`` turns true while
        waiting.
        """
        with self._cond:
            self._claims += 1
            try:
                while self._holder is not None:
                    if cancelled():
                        raise Cancelled("cancelled while waiting for the engine")
                    self._cond.wait(self._poll_s)
                self._holder = "goal"
            finally:
                self._claims -= 1
        try:
            yield
        finally:
            self._leave()

    @contextlib.contextmanager
    def frame(self, timeout: float) -> Iterator[bool]:
        """Hold the gate for a frame if it is free of holders and claims within ``timeout`` s.

        Yields whether the frame entered; a frame that did not must not use the engine (the
        caller takes a newer frame later instead of running a stale one).
        """
        with self._cond:
            entered = self._cond.wait_for(
                lambda: self._holder is None and self._claims == 0, timeout)
            if entered:
                self._holder = "frame"
            else:
                self._turned_away += 1
        try:
            yield entered
        finally:
            if entered:
                self._leave()

    def _leave(self) -> None:
        with self._cond:
            self._holder = None
            self._cond.notify_all()
