"""The node's frame worker: one guarded thread that processes the newest synchronised frame.

Each synchronised set replaces the one waiting in a :class:`~sam3d_ros.core.frame_pairing.
LatestSlot`; the worker takes whatever is newest when it is free, so it never works through a
backlog of stale frames (replaced frames are counted as drops, and handed to ``on_dropped`` so
that a bad frame is reported even when it is never processed).

One thread serves the node's whole life: :meth:`FrameWorker.stop` (deactivate) only pauses it and
cancels the frame in progress, and :meth:`FrameWorker.start` (activate) resumes it, so a frame
that outlives the stop wait can never leave two workers behind. An exception while processing
is reported and the worker carries on; if the thread dies all the same (a ``BaseException``
such as ``SystemExit`` from a library), :meth:`FrameWorker.revive` says why and starts another.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from sam3d_ros.core.frame_pairing import LatestSlot
from sam3d_ros.ros.diagnostics import describe


class FrameWorker:
    """Process the newest frame in a thread of its own.

    Args:
        process: ``process(item, cancelled)`` handles one frame; ``cancelled()`` turns true when
            the frame is to stop (deactivate, shutdown).
        on_error: ``on_error(where, exc)`` for an exception ``process`` let through.
        max_rate_hz: returns the largest frame rate (0: no cap).
        enabled: returns whether frames are processed at all (``continuous``).
        on_dropped: ``on_dropped(item)`` for a frame replaced unprocessed (in the caller of
            :meth:`submit`: keep it cheap).
    """

    def __init__(self, process: Callable[[Any, Callable[[], bool]], None],
                 on_error: Callable[[str, BaseException], None],
                 max_rate_hz: Callable[[], float], enabled: Callable[[], bool],
                 on_dropped: Optional[Callable[[Any], None]] = None) -> None:
        self._process = process
        self._on_dropped = on_dropped
        self._on_error = on_error
        self._max_rate_hz = max_rate_hz
        self._enabled = enabled
        self._slot = LatestSlot()
        self._cond = threading.Condition()
        self._running = False  # taking frames (active)
        self._closed = False
        self._current: Optional[threading.Event] = None  # the cancel flag of the frame running
        self._thread: Optional[threading.Thread] = None
        self._death = ""

    @property
    def drops(self) -> int:
        """Frames replaced by a newer one before they were processed."""
        return self._slot.drops

    def submit(self, item: Any) -> None:
        """Offer a new frame (replaces one still waiting, handed to ``on_dropped``)."""
        dropped = self._slot.swap(item)
        if dropped is not None and self._on_dropped is not None:
            self._on_dropped(dropped)

    def start(self) -> None:
        """Take frames (activate); starts the thread the first time."""
        with self._cond:
            self._slot.clear()
            self._running = True
            self._closed = False
            if self._thread is None or not self._thread.is_alive():
                self._spawn()
            self._cond.notify_all()

    def stop(self, timeout: float) -> bool:
        """Stop taking frames and cancel the one in progress; wait up to ``timeout`` seconds.

        Returns:
            True when no frame is in progress any more (False: it is still in a stage that
            does not check cancellation; it stops at the next check and publishes nothing).
        """
        with self._cond:
            self._running = False
            self._slot.clear()
            if self._current is not None:
                self._current.set()
            self._cond.notify_all()
            if self._thread is threading.current_thread():
                return True
            return self._cond.wait_for(lambda: self._current is None, timeout)

    def close(self, timeout: float) -> bool:
        """Stop and end the thread (shutdown); returns whether the frame in progress ended."""
        idle = self.stop(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return idle

    def revive(self) -> str:
        """Start a new thread if the worker's died while running; returns why it died (or "")."""
        with self._cond:
            if not self._running or self._thread is None or self._thread.is_alive():
                return ""
            reason = self._death or "the thread ended"
            self._death = ""
            self._current = None
            self._spawn()
            return reason

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sam3d_worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - recorded for revive(); the thread ends
            with self._cond:
                self._death = describe(exc)
            self._on_error("frame worker died", exc)

    def _wait_running(self, timeout: Optional[float] = None) -> bool:
        """Wait until running (or closed, or ``timeout``); returns whether running."""
        with self._cond:
            self._cond.wait_for(lambda: self._running or self._closed, timeout)
            return self._running and not self._closed

    def _loop(self) -> None:
        last_start = 0.0
        while not self._closed:
            if not self._wait_running(0.5):
                continue
            rate = float(self._max_rate_hz())
            if rate > 0.0:
                wait = last_start + 1.0 / rate - time.monotonic()
                if wait > 0:
                    with self._cond:
                        if self._cond.wait_for(lambda: not self._running, wait):
                            continue
            item = self._slot.take(timeout=0.1)
            if item is None or not self._enabled():
                continue
            with self._cond:
                if not self._running:
                    continue
                cancel = self._current = threading.Event()
            last_start = time.monotonic()
            try:
                self._process(item, cancel.is_set)
            except Exception as exc:  # noqa: BLE001 - the worker outlives any one frame
                self._on_error("frame worker", exc)
            finally:
                with self._cond:
                    self._current = None
                    self._cond.notify_all()
