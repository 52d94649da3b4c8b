"""The node's pipeline statistics: counters, rates, latencies, recent outcomes, the last error.

Written by the camera callbacks, the frame worker and the goal threads, read by the diagnostics
timer: the object owns its lock, every method takes it, and :meth:`PipelineStats.snapshot`
computes the rates and latency percentiles inside it, so a reader never sees a half-updated
state (or iterates a window another thread is trimming).

Recent outcomes (:class:`Recent`) give the diagnostics level: what happened in the last
``window_s`` seconds, and whether the latest outcome failed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Optional, Tuple

from sam3d_ros.core.output_messages import LatencyStats, RateMeter

_MAX_EVENTS = 10000  # a bound on a window's memory whatever the rate


@dataclass(frozen=True)
class Window:
    """Outcomes of one kind in the recent window."""

    ok: int
    failed: int
    latest_failed: bool
    last_failure: str


class Recent:
    """Successes and failures of one kind, time-stamped, for a recent window (not thread-safe)."""

    def __init__(self) -> None:
        self._events: Deque[Tuple[float, bool]] = deque(maxlen=_MAX_EVENTS)
        self._last_failure = ""

    def add(self, ok: bool, now: float, reason: str = "") -> None:
        """Record one outcome at ``now`` (monotonic seconds)."""
        self._events.append((now, ok))
        if not ok:
            self._last_failure = reason

    def window(self, now: float, window_s: float) -> Window:
        """The outcomes of the ``window_s`` seconds before ``now``."""
        while self._events and now - self._events[0][0] > window_s:
            self._events.popleft()
        failed = sum(1 for _, ok in self._events if not ok)
        latest_failed = bool(self._events) and not self._events[-1][1]
        return Window(len(self._events) - failed, failed, latest_failed,
                      self._last_failure if failed else "")


@dataclass
class StatsSnapshot:
    """A consistent copy of :class:`PipelineStats` at one instant."""

    counts: Dict[str, int]
    input_rate_hz: float
    processed_rate_hz: float
    latency: Dict[str, Tuple[float, float, float]]
    last_error: str
    last_error_field: str
    last_error_age_s: Optional[float]
    last_warning: str
    processing: Window
    pairing: Window
    warnings: Window
    window_s: float
    fault: str
    last_synced: float
    activated_at: float
    now: float


class PipelineStats:
    """Counters, rates, latencies, recent outcomes and the last error of the node's pipeline.

    Processing outcomes are frames processed or failed and goals done or failed; pairing
    outcomes are colour images synchronised or dropped without a partner. A fault (a configure
    that failed) holds until :meth:`clear_fault`.
    """

    COUNTS = ("images", "synced", "processed", "failed", "goals", "lost", "objects_last_frame")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {name: 0 for name in self.COUNTS}
        self._image_rate = RateMeter()
        self._processed_rate = RateMeter()
        self._latency = LatencyStats()
        self._processing = Recent()
        self._pairing = Recent()
        self._warnings = Recent()
        self._last_warning = ""
        self._last_error = ""
        self._last_error_field = ""
        self._last_error_time = 0.0
        self._fault = ""
        self._last_synced = 0.0
        self._activated_at = time.monotonic()

    def image_received(self) -> None:
        """A colour image arrived."""
        with self._lock:
            self._counts["images"] += 1
            self._image_rate.tick()

    def frame_synced(self) -> None:
        """A synchronised image / depth / CameraInfo set was formed."""
        with self._lock:
            now = time.monotonic()
            self._counts["synced"] += 1
            self._last_synced = now
            self._pairing.add(True, now)

    def frame_processed(self, n_objects: int) -> None:
        """A camera frame was processed and published."""
        with self._lock:
            now = time.monotonic()
            self._counts["processed"] += 1
            self._processed_rate.tick(now)
            self._processing.add(True, now)
            self._counts["objects_last_frame"] = int(n_objects)

    def goal_done(self) -> None:
        """A goal succeeded."""
        with self._lock:
            self._counts["goals"] += 1
            self._processing.add(True, time.monotonic())

    def messages_lost(self, count: int) -> None:
        """The middleware reported ``count`` camera messages lost."""
        with self._lock:
            self._counts["lost"] += int(count)

    def error(self, field_name: str, reason: str, pairing: bool = False) -> None:
        """A frame or goal failed (``pairing``: an image found no partner) on ``field_name``."""
        with self._lock:
            now = time.monotonic()
            self._last_error = f"{field_name}: {reason}"
            self._last_error_field = field_name
            self._last_error_time = now
            self._counts["failed"] += 1
            (self._pairing if pairing else self._processing).add(False, now, self._last_error)

    def warning(self, field_name: str, reason: str) -> None:
        """A frame was processed but something about it is suspect (a stamp out of order)."""
        with self._lock:
            self._last_warning = f"{field_name}: {reason}"
            self._warnings.add(False, time.monotonic(), self._last_warning)

    def fault(self, field_name: str, reason: str) -> None:
        """A failure that holds until :meth:`clear_fault` (the backends could not be built)."""
        self.error(field_name, reason)
        with self._lock:
            self._fault = f"{field_name}: {reason}"

    def clear_fault(self) -> None:
        """The fault is over (a configure succeeded or is being tried again)."""
        with self._lock:
            self._fault = ""

    def activated(self) -> None:
        """The node became active (the no-input timeout starts now)."""
        with self._lock:
            self._activated_at = time.monotonic()

    def latency(self, name: str, seconds: float) -> None:
        """One latency sample of ``name``, seconds."""
        with self._lock:
            self._latency.add(name, seconds)

    def snapshot(self, window_s: float, now: Optional[float] = None) -> StatsSnapshot:
        """A copy of everything; rates, ages and windows of ``window_s`` seconds at ``now``."""
        with self._lock:
            now = time.monotonic() if now is None else now
            error_age = now - self._last_error_time if self._last_error_time else None
            return StatsSnapshot(
                counts=dict(self._counts), input_rate_hz=self._image_rate.rate(now),
                processed_rate_hz=self._processed_rate.rate(now),
                latency=self._latency.summary(), last_error=self._last_error,
                last_error_field=self._last_error_field, last_error_age_s=error_age,
                last_warning=self._last_warning,
                processing=self._processing.window(now, window_s),
                pairing=self._pairing.window(now, window_s),
                warnings=self._warnings.window(now, window_s), window_s=float(window_s),
                fault=self._fault, last_synced=self._last_synced,
                activated_at=self._activated_at, now=now)
