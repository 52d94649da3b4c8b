"""The node's pipeline statistics: counters, rates, latencies and the last error.

Written by the camera callbacks, the frame worker and the goal threads, read by the diagnostics
timer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from sam3d_ros.ros.outputs import LatencyStats, RateMeter


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
    frame_failed: bool
    last_synced: float
    qos_problem: str
    activated_at: float


class PipelineStats:
    """Counters, rates, latencies and the last error of the node's pipeline."""

    COUNTS = ("images", "synced", "processed", "failed", "goals", "lost", "objects_last_frame")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {name: 0 for name in self.COUNTS}
        self._image_rate = RateMeter()
        self._processed_rate = RateMeter()
        self._latency = LatencyStats()
        self._last_error = ""
        self._last_error_field = ""
        self._last_error_time = 0.0
        self._frame_failed = False
        self._last_synced = 0.0
        self._qos_problem = ""
        self._activated_at = time.monotonic()

    def image_received(self) -> None:
        """A colour image arrived."""
        with self._lock:
            self._counts["images"] += 1
            self._image_rate.tick()

    def frame_synced(self) -> None:
        """A synchronised image / depth / CameraInfo set was formed."""
        with self._lock:
            self._counts["synced"] += 1
            self._last_synced = time.monotonic()

    def frame_processed(self, n_objects: int) -> None:
        """A camera frame was processed and published (clears a frame failure)."""
        with self._lock:
            self._counts["processed"] += 1
            self._processed_rate.tick()
            self._frame_failed = False
            self._counts["objects_last_frame"] = int(n_objects)

    def goal_done(self) -> None:
        """A goal succeeded."""
        with self._lock:
            self._counts["goals"] += 1

    def messages_lost(self, count: int) -> None:
        """The middleware reported ``count`` camera messages lost."""
        with self._lock:
            self._counts["lost"] += int(count)

    def error(self, field_name: str, reason: str) -> None:
        """A frame, goal or transition failed: ``field_name`` and ``reason``."""
        with self._lock:
            self._last_error = f"{field_name}: {reason}"
            self._last_error_field = field_name
            self._last_error_time = time.monotonic()
            self._counts["failed"] += 1
            self._frame_failed = True

    def clear_error(self) -> None:
        """Forget the last error (a new configure)."""
        with self._lock:
            self._last_error = ""
            self._last_error_field = ""
            self._frame_failed = False

    def qos_problem(self, text: str) -> None:
        """A camera publisher's QoS cannot reach the subscription."""
        self._qos_problem = text

    def activated(self) -> None:
        """The node became active (the no-input timeout starts now)."""
        self._activated_at = time.monotonic()

    def latency(self, name: str, seconds: float) -> None:
        """One latency sample of ``name``, seconds."""
        self._latency.add(name, seconds)

    def snapshot(self, now: Optional[float] = None) -> StatsSnapshot:
        """A copy of everything, rates and ages at ``now`` (monotonic seconds)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            counts = dict(self._counts)
            last_error, error_field = self._last_error, self._last_error_field
            error_age = now - self._last_error_time if self._last_error_time else None
            failed = self._frame_failed
            last_synced = self._last_synced
        return StatsSnapshot(
            counts=counts, input_rate_hz=self._image_rate.rate(now),
            processed_rate_hz=self._processed_rate.rate(now), latency=self._latency.summary(),
            last_error=last_error, last_error_field=error_field, last_error_age_s=error_age,
            frame_failed=failed, last_synced=last_synced, qos_problem=self._qos_problem,
            activated_at=self._activated_at)
