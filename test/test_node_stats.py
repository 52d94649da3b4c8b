"""The node's statistics and diagnostics level (issue 10, paths 4 and 9), without a graph.

Path 4: the worker, goal threads and camera callbacks write the statistics while the
diagnostics timer reads them; the statistics own one lock and compute rates and percentiles
inside it. Path 9: the level comes from the recent window (``diagnostics_window_s``), with the
reason, never from one old event.
"""

from __future__ import annotations

import threading

import pytest

from sam3d_ros.ros.diagnostics import pipeline_status
from sam3d_ros.ros.stats import PipelineStats

SETTINGS = {"continuous": True, "input_timeout_s": 2.0}
COUNTS = {"frames_dropped": 0, "frames_unmatched": 0, "frames_deferred_to_goals": 0,
          "goals_queued": 0, "goals_rejected": 0, "qos_problem": ""}


class PausingReads:
    """Wraps a statistics store; its read method pauses until the test releases it."""

    def __init__(self, inner, read: str) -> None:
        self._inner, self._read = inner, read
        self.inside, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name != self._read:
            return attr

        def paused(*args, **kwargs):
            self.inside.set()
            assert self.release.wait(10.0)
            return attr(*args, **kwargs)

        return paused


@pytest.mark.parametrize("store, read, write", [
    ("_latency", "summary", lambda s: s.latency("segment", 0.1)),
    ("_image_rate", "rate", lambda s: s.image_received()),
    ("_processed_rate", "rate", lambda s: s.frame_processed(1)),
], ids=["latency", "input_rate", "processed_rate"])
def test_a_write_waits_while_the_diagnostics_read_the_window(store, read, write):
    """A write during a snapshot waits for it: the reader never iterates a changing window."""
    stats = PipelineStats()
    pausing = PausingReads(getattr(stats, store), read)
    setattr(stats, store, pausing)
    reader = threading.Thread(target=lambda: stats.snapshot(10.0))
    reader.start()
    assert pausing.inside.wait(10.0)
    written = threading.Event()
    writer = threading.Thread(target=lambda: (write(stats), written.set()))
    writer.start()
    try:
        # A liveness bound, not a speed: an unguarded write finishes in microseconds.
        assert not written.wait(0.5), "a write went through while the window was being read"
    finally:
        pausing.release.set()
        reader.join(10.0)
        writer.join(10.0)
    assert written.is_set()


def level(stats, now, state="active", qos="", continuous=True):
    snap = stats.snapshot(10.0, now)
    lvl, message, values = pipeline_status(state, snap, {**SETTINGS, "continuous": continuous},
                                           {**COUNTS, "qos_problem": qos})
    return lvl, message, values


def test_one_unmatched_image_among_synchronised_frames_is_a_warning():
    stats = PipelineStats()
    now = stats.snapshot(10.0).now
    stats.frame_synced()
    stats.error("depth", "no depth message within sync_slop_s", pairing=True)
    stats.frame_synced()
    stats.frame_processed(2)
    lvl, message, values = level(stats, now + 0.1)
    assert lvl == "WARN" and "without a partner" in message and "depth" in message
    assert values["unmatched_in_window"] == 1
    assert level(stats, now + 11.0, continuous=False)[0] == "OK"  # out of the window


def test_a_succeeded_goal_ends_the_error_of_a_failed_frame():
    stats = PipelineStats()
    now = stats.snapshot(10.0).now
    stats.error("depth", "no valid depth pixel")
    lvl, message, _ = level(stats, now + 0.1)
    assert lvl == "ERROR" and message == "depth: no valid depth pixel"
    stats.goal_done()
    lvl, message, _ = level(stats, now + 0.2)
    assert lvl == "WARN" and "1 of 2 frames/goals failed" in message
    assert "depth: no valid depth pixel" in message
    lvl, _, values = level(stats, now + 11.0, continuous=False)
    assert lvl == "OK" and values["last_error"] == "depth: no valid depth pixel"


def test_an_old_failure_no_longer_counts_without_new_frames():
    stats = PipelineStats()
    now = stats.snapshot(10.0).now
    stats.error("camera_info", "no camera_info message received", pairing=True)
    assert level(stats, now + 0.1)[0] == "ERROR"  # every recent image lacked a partner
    assert level(stats, now + 10.5, state="inactive")[0] == "OK"


def test_a_fault_holds_until_cleared():
    stats = PipelineStats()
    now = stats.snapshot(10.0).now
    stats.fault("backend", "cannot build the backends: no checkpoint")
    lvl, message, _ = level(stats, now + 3600.0, state="unconfigured")
    assert lvl == "ERROR" and message.startswith("backend: cannot build the backends")
    stats.clear_fault()
    assert level(stats, now + 3600.0, state="unconfigured")[0] == "OK"


def test_a_qos_problem_is_reported_while_it_lasts():
    stats = PipelineStats()
    now = stats.snapshot(10.0).now
    stats.frame_synced()
    stats.frame_processed(1)
    lvl, message, _ = level(stats, now + 0.1, qos="QoS mismatch on /image: ...")
    assert lvl == "WARN" and message.startswith("QoS mismatch")
    assert level(stats, now + 0.2) == ("OK", "processing", level(stats, now + 0.2)[2])
