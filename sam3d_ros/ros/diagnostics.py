"""The node's ``/diagnostics`` status from its statistics, and how failures are logged.

:class:`Reporter` logs warnings (once, or throttled per key) and records errors in the
:class:`~sam3d_ros.ros.stats.PipelineStats`; :func:`pipeline_status` turns a statistics snapshot
and the node's settings into the level, message and values of the ``<node>: pipeline`` status.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Dict, Mapping, Tuple

from sam3d_ros.core.errors import InputError
from sam3d_ros.ros.stats import PipelineStats, StatsSnapshot


class Reporter:
    """Log warnings and errors; errors also go into the statistics.

    Args:
        logger: the node's logger.
        stats: where errors are recorded.
        throttle_s: returns the throttle period of :meth:`warn_throttled`, seconds.
        on_error: called after an error was recorded.
    """

    def __init__(self, logger: Any, stats: PipelineStats, throttle_s: Callable[[], float],
                 on_error: Callable[[], None]) -> None:
        self._logger = logger
        self._stats = stats
        self._throttle_s = throttle_s
        self._on_error = on_error
        self._warned_once: set = set()
        self._warn_times: Dict[str, float] = {}

    def warn_once(self, key: str, message: str) -> None:
        """Log ``message`` the first time ``key`` is seen."""
        if key not in self._warned_once:
            self._warned_once.add(key)
            self._logger.warning(message)

    def warn_throttled(self, key: str, message: str) -> None:
        """Log ``message`` at most once per throttle period per ``key``."""
        now = time.monotonic()
        if now - self._warn_times.get(key, -1e9) >= float(self._throttle_s()):
            self._warn_times[key] = now
            self._logger.warning(message)

    def error(self, field_name: str, reason: str) -> None:
        """Record a failure of ``field_name`` with ``reason``."""
        self._stats.error(field_name, reason)
        self._on_error()

    def input_error(self, exc: InputError) -> None:
        """Warn (throttled per field and kind of reason) and record a bad input."""
        # Numbers in the reason do not make another kind.
        key = f"input:{exc.field}:{re.sub(r'[0-9.]+', '#', exc.reason)}"
        self.warn_throttled(key, f"bad input: {exc.field}: {exc.reason}")
        self.error(exc.field, exc.reason)


def pipeline_status(state: str, snap: StatsSnapshot, settings: Mapping[str, Any],
                    counts: Mapping[str, int], now: float) -> Tuple[str, str, Dict[str, Any]]:
    """``(level, message, values)`` of the pipeline status.

    Args:
        state: the lifecycle state (``unconfigured``, ``inactive``, ``active``, ...).
        snap: the statistics.
        settings: ``continuous``, ``input_timeout_s`` and the values shown first (backends,
            device, backend state, camera QoS and transports), in order.
        counts: ``frames_dropped``, ``frames_unmatched``, ``frames_deferred_to_goals``,
            ``goals_queued``, ``goals_rejected``.
        now: monotonic seconds of ``snap``.
    """
    level, message = "OK", state
    if state == "active":
        idle = now - max(snap.last_synced, snap.activated_at)
        if snap.qos_problem:
            level, message = "WARN", snap.qos_problem
        elif settings["continuous"] and idle > float(settings["input_timeout_s"]):
            level, message = "WARN", f"no synchronised camera frame for {idle:.1f} s"
        else:
            message = "processing"
    if snap.frame_failed and snap.last_error:
        level, message = "ERROR", snap.last_error
    shown = {k: v for k, v in settings.items() if k not in ("continuous", "input_timeout_s")}
    values: Dict[str, Any] = {
        "state": state,
        **shown,
        "input_rate_hz": snap.input_rate_hz,
        "processed_rate_hz": snap.processed_rate_hz,
        "frames_received": snap.counts["images"],
        "frames_synchronised": snap.counts["synced"],
        "frames_processed": snap.counts["processed"],
        "objects_last_frame": snap.counts["objects_last_frame"],
        "frames_dropped": counts["frames_dropped"],
        "frames_unmatched": counts["frames_unmatched"],
        "messages_lost_in_transport": snap.counts["lost"],
        "failures": snap.counts["failed"],
        "goals_done": snap.counts["goals"],
        "goals_queued": counts["goals_queued"],
        "goals_rejected": counts["goals_rejected"],
        "frames_deferred_to_goals": counts["frames_deferred_to_goals"],
    }
    for name, (_last, p50, p95) in sorted(snap.latency.items()):
        values[f"latency_{name}_ms_p50"] = 1000.0 * p50
        values[f"latency_{name}_ms_p95"] = 1000.0 * p95
    values["last_error"] = snap.last_error
    values["last_error_field"] = snap.last_error_field
    age = snap.last_error_age_s
    values["last_error_age_s"] = "" if age is None else f"{age:.1f}"
    return level, message, values
