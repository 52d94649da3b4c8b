"""Failures injected into the node in this process (issue 10, paths 7 and 22).

Some failures cannot be sent from outside: a lifecycle transition that raises (rclpy then runs
``on_error``) and an exception inside the diagnostics timer. The node runs here, with the
contract-fake backends (``contract_fakes.py``) counting ``load()`` / ``unload()``, and the
failure is injected by replacing one of its parts.
"""

from __future__ import annotations

import threading

import contract_fakes
import pytest
from node_harness import Recorder, ros_context
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from sam3d_ros import backends
from sam3d_ros.ros.node import Sam3dNode


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setitem(backends.SEGMENTERS, "embedded",
                        (contract_fakes.__name__, "FakeSegmenter"))
    monkeypatch.setitem(backends.RECONSTRUCTORS, "embedded",
                        (contract_fakes.__name__, "FakeReconstructor"))
    contract_fakes.EVENTS.clear()
    return contract_fakes.EVENTS


def count(events, text):
    return sum(e == text for e in events)


def test_a_transition_that_raises_unloads_the_backends(fakes):
    with ros_context():
        node = Sam3dNode(parameter_overrides=[Parameter("autostart", value=False)])
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert count(fakes, "load segmenter") == 1 == count(fakes, "load reconstructor")

            def broken(*_args, **_kwargs):
                raise RuntimeError("injected: subscribing failed")

            node.camera.subscribe = broken  # activate raises: rclpy runs on_error
            assert node.trigger_activate() != TransitionCallbackReturn.SUCCESS
            assert node.state == "unconfigured"
            assert count(fakes, "unload segmenter") == 1
            assert count(fakes, "unload reconstructor") == 1
            # Recovered: it configures (and loads) again.
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert count(fakes, "load segmenter") == 2
        finally:
            node.destroy_node()


def test_an_exception_in_the_diagnostics_timer_does_not_end_the_executor(fakes):
    with ros_context():
        node = Sam3dNode(parameter_overrides=[Parameter("autostart", value=False),
                                              Parameter("diagnostics_period_s", value=0.1)])
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        spinning = threading.Thread(target=executor.spin, daemon=True)
        failures = []
        snapshot = node.stats.snapshot

        def failing_once(*args, **kwargs):
            if not failures:
                failures.append(1)
                raise RuntimeError("injected: the diagnostics timer failed")
            return snapshot(*args, **kwargs)

        node.stats.snapshot = failing_once
        rec = Recorder()
        try:
            spinning.start()
            assert rec.wait(lambda: failures, 10.0)
            start = rec.count("diagnostics")
            assert rec.wait(lambda: rec.count("diagnostics") > start + 2, 10.0), (
                "no diagnostics after the timer raised")
            assert spinning.is_alive()
        finally:
            rec.close()
            executor.shutdown()
            spinning.join(5.0)
            node.destroy_node()
