"""The node's ``/diagnostics`` status from its statistics, and how failures are logged.

:class:`Reporter` logs warnings (once, or throttled per key), unexpected exceptions with their
traceback (once per kind, throttled), records errors in the
:class:`~sam3d_ros.ros.stats.PipelineStats` and guards executor callbacks, so that an exception
in a timer or subscription callback is logged instead of ending the executor.
:func:`pipeline_status` turns a statistics snapshot and the node's settings into the level,
message and values of the ``<node>: pipeline`` status; the level comes from the recent window
(``diagnostics_window_s``), never from one old event:

* ERROR: the backends could not be built (until a configure succeeds); the latest frame or goal
  failed (until one succeeds, at most for the window); colour images found no depth /
  CameraInfo partner and none was paired in the window (the input is broken);
* WARN: frames or goals failed in the window but the latest succeeded; a camera stamp out of
  order (backwards, far in the future) in the window; some images without a partner in the
  window (one mismatch in a stream is never an ERROR); a camera publisher whose QoS cannot
  reach the subscription (now); no input;
* OK otherwise (an empty scene too).
"""

from __future__ import annotations

import functools
import re
import time
import traceback
from typing import Any, Callable, Dict, Mapping, Tuple

from sam3d_ros.core.errors import InputError
from sam3d_ros.ros.stats import PipelineStats, StatsSnapshot


class Reporter:
    """Log warnings and errors; errors also go into the statistics.

    Args:
        logger: the node's logger.
        stats: where errors are recorded.
        throttle_s: returns the throttle period of :meth:`warn_throttled`, seconds.
    """

    def __init__(self, logger: Any, stats: PipelineStats,
                 throttle_s: Callable[[], float]) -> None:
        self._logger = logger
        self._stats = stats
        self._throttle_s = throttle_s
        self._warned_once: set = set()
        self._warn_times: Dict[str, float] = {}

    def warn_once(self, key: str, message: str) -> None:
        """Log ``message`` the first time ``key`` is seen."""
        if key not in self._warned_once:
            self._warned_once.add(key)
            self._logger.warning(message)

    def _due(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._warn_times.get(key, -1e9) >= float(self._throttle_s()):
            self._warn_times[key] = now
            return True
        return False

    def warn_throttled(self, key: str, message: str) -> None:
        """Log ``message`` at most once per throttle period per ``key``."""
        if self._due(key):
            self._logger.warning(message)

    def exception(self, where: str, exc: BaseException) -> None:
        """Log an unexpected exception with its traceback, once per kind per throttle period.

        The kind is ``where`` and the class of the exception's root cause, so a backend bug
        wrapped in a :class:`~sam3d_ros.core.errors.BackendError` is one kind.
        """
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        if self._due(f"exception:{where}:{type(root).__name__}"):
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self._logger.error(f"{where}: {describe(exc)}\n{text.rstrip()}")

    def error(self, field_name: str, reason: str, pairing: bool = False) -> None:
        """Record a failure of ``field_name`` with ``reason`` (``pairing``: a sync mismatch)."""
        self._stats.error(field_name, reason, pairing)

    def input_warning(self, field_name: str, reason: str) -> None:
        """Warn (throttled per field) and show it in ``/diagnostics`` (WARN, ``last_warning``)."""
        self.warn_throttled(f"input-warning:{field_name}", f"input: {field_name}: {reason}")
        self._stats.warning(field_name, reason)

    def input_error(self, exc: InputError, pairing: bool = False) -> None:
        """Warn (throttled per field and kind of reason) and record a bad input."""
        # Numbers in the reason do not make another kind.
        key = f"input:{exc.field}:{re.sub(r'[0-9.]+', '#', exc.reason)}"
        self.warn_throttled(key, f"bad input: {exc.field}: {exc.reason}")
        self.error(exc.field, exc.reason, pairing)

    def guarded(self, where: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` for an executor callback: an exception is logged, never raised."""

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - it would end the executor and the node
                self.exception(where, exc)
                return None

        return call


def describe(exc: BaseException) -> str:
    """``Class: message`` of an exception, even when its ``str()`` raises."""
    try:
        return f"{exc.__class__.__name__}: {exc}"
    except Exception:  # noqa: BLE001 - an exception whose str() fails still gets reported
        return f"{exc.__class__.__name__} (its message cannot be formatted)"




def pipeline_status(state: str, snap: StatsSnapshot, settings: Mapping[str, Any],
                    counts: Mapping[str, Any]) -> Tuple[str, str, Dict[str, Any]]:
    """``(level, message, values)`` of the pipeline status.

    Args:
        state: the lifecycle state (``unconfigured``, ``inactive``, ``active``, ...).
        snap: the statistics.
        settings: ``continuous``, ``input_timeout_s`` and the values shown first (backends,
            device, backend state, camera QoS and transports), in order.
        counts: ``frames_dropped``, ``frames_unmatched``, ``frames_deferred_to_goals``,
            ``goals_queued``, ``goals_rejected`` and ``qos_problem`` (the camera QoS mismatch
            now, or ``""``).
    """
    level, message = _level(state, snap, settings, counts["qos_problem"])
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
        "window_s": snap.window_s,
        "failures_in_window": snap.processing.failed,
        "unmatched_in_window": snap.pairing.failed,
    }
    for name, (_last, p50, p95) in sorted(snap.latency.items()):
        values[f"latency_{name}_ms_p50"] = 1000.0 * p50
        values[f"latency_{name}_ms_p95"] = 1000.0 * p95
    values["last_error"] = snap.last_error
    values["last_error_field"] = snap.last_error_field
    age = snap.last_error_age_s
    values["last_error_age_s"] = "" if age is None else f"{age:.1f}"
    values["last_warning"] = snap.last_warning
    return level, message, values


def _level(state: str, snap: StatsSnapshot, settings: Mapping[str, Any],
           qos_problem: str) -> Tuple[str, str]:
    """The level and its reason (see the module docstring)."""
    window = f"{snap.window_s:g} s"
    work, pairs = snap.processing, snap.pairing
    if snap.fault:
        return "ERROR", snap.fault
    if work.latest_failed:
        return "ERROR", work.last_failure
    if state == "active" and pairs.failed and not pairs.ok:  # no image paired: input broken
        return "ERROR", pairs.last_failure
    if work.failed:
        return "WARN", (f"{work.failed} of {work.failed + work.ok} frames/goals failed in the "
                        f"last {window}; last: {work.last_failure}")
    if state != "active":
        return "OK", state
    if snap.warnings.failed:
        return "WARN", snap.warnings.last_failure
    if qos_problem:
        return "WARN", qos_problem
    if pairs.failed:
        return "WARN", (f"{pairs.failed} colour image(s) without a partner in the last "
                        f"{window}; last: {pairs.last_failure}")
    idle = snap.now - max(snap.last_synced, snap.activated_at)
    if settings["continuous"] and idle > float(settings["input_timeout_s"]):
        return "WARN", f"no synchronised camera frame for {idle:.1f} s"
    return "OK", "processing"
