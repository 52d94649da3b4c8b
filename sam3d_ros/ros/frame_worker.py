"""The node's frame worker: one thread that processes the newest synchronised frame.

Each synchronised set replaces the one waiting in a :class:`~sam3d_ros.core.frame_pairing.
LatestSlot`; the worker takes whatever is newest when it is free, so it never works through a
backlog of stale frames (replaced frames are counted as drops).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from sam3d_ros.core.frame_pairing import LatestSlot


class FrameWorker:
    """Process the newest frame in a thread of its own.

    Args:
        process: ``process(item)`` handles one frame.
        max_rate_hz: returns the largest frame rate (0: no cap).
        enabled: returns whether frames are processed at all (``continuous``).
    """

    def __init__(self, process: Callable[[Any], None], max_rate_hz: Callable[[], float],
                 enabled: Callable[[], bool]) -> None:
        self._process = process
        self._max_rate_hz = max_rate_hz
        self._enabled = enabled
        self._slot = LatestSlot()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def drops(self) -> int:
        """Frames replaced by a newer one before they were processed."""
        return self._slot.drops

    def submit(self, item: Any) -> None:
        """Offer a new frame (replaces one still waiting)."""
        self._slot.put(item)

    def start(self) -> None:
        """Start the thread."""
        self._slot.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sam3d_worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after the frame it works on."""
        self._stop.set()
        self._slot.clear()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60.0)

    def _loop(self) -> None:
        last_start = 0.0
        while not self._stop.is_set():
            rate = float(self._max_rate_hz())
            if rate > 0.0:
                wait = last_start + 1.0 / rate - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
            item = self._slot.take(timeout=0.1)
            if item is None or self._stop.is_set():
                continue
            if not self._enabled():
                continue
            last_start = time.monotonic()
            self._process(item)
