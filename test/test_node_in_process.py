"""Failures injected into the node in this process (issue 10, paths 7 and 22).

Some failures cannot be sent from outside: a lifecycle transition that raises (rclpy then runs
``on_error``) and an exception inside the diagnostics timer. The node runs here, with the
contract-fake backends (``contract_fakes.py``) counting ``load()`` / ``unload()``, and the
failure is injected by replacing one of its parts. It runs in a context (DDS participant) and a
namespace of its own, destroyed afterwards: no later test may discover its services.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import weakref

import contract_fakes
import pytest
import rclpy
from node_harness import Recorder, ros_context
from rclpy.context import Context
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


@contextlib.contextmanager
def node_in_process(spin: bool = False, **params):
    """The node in a context of its own; yields a weak proxy (and the spinning thread).

    Only this function holds the node, so that it can be collected and its DDS participant
    destroyed at the end (a participant that lingers keeps its services discoverable).
    """
    context = Context()
    rclpy.init(context=context)
    node = Sam3dNode(namespace="/in_process", context=context,
                     parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    executor = MultiThreadedExecutor(num_threads=2, context=context) if spin else None
    spinning = None
    try:
        if executor is not None:
            executor.add_node(node)
            spinning = threading.Thread(target=executor.spin, daemon=True)
            spinning.start()
        yield weakref.proxy(node), spinning
    finally:
        if executor is not None:
            executor.shutdown()
            spinning.join(5.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        del node, executor
        gc.collect()
        context.destroy()


def test_a_transition_that_raises_unloads_the_backends(fakes):
    with node_in_process(autostart=False) as (node, _):
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


def test_an_exception_in_the_diagnostics_timer_does_not_end_the_executor(fakes):
    failures = []
    with ros_context(), node_in_process(spin=True, autostart=False,
                                        diagnostics_period_s=0.1) as (node, spinning):
        snapshot = node.stats.snapshot

        def failing_once(*args, **kwargs):
            if not failures:
                failures.append(1)
                raise RuntimeError("injected: the diagnostics timer failed")
            return snapshot(*args, **kwargs)

        node.stats.snapshot = failing_once
        rec = Recorder()
        try:
            assert rec.wait(lambda: failures, 10.0)
            start = rec.count("diagnostics")
            assert rec.wait(lambda: rec.count("diagnostics") > start + 2, 10.0), (
                "no diagnostics after the timer raised")
            assert spinning.is_alive()
        finally:
            rec.close()
