"""The node's executor survives an entity destroyed while it waits (sam3d_ros.ros.spinning).

The race (deactivate destroys a camera subscription, with its QoS event handlers, from one
executor thread while another builds the wait set) cannot be timed in a test. It is played
deterministically with real rclpy entities: a subscription's event handler is destroyed while it
is still on the node, which is the state the executor sees when the destroy lands between its
snapshot of the node's waitables and its wait set. The handler is then taken off the node, as
``destroy_subscription`` had done before the destroy in the real race.
"""

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.event_handler import SubscriptionEventCallbacks  # noqa: E402
from rclpy.exceptions import InvalidHandle  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import Empty  # noqa: E402

from sam3d_ros.ros.spinning import spin_through_destroyed_entities  # noqa: E402


@pytest.fixture
def node_with_destroyed_handler():
    """(node, executor, handler): ``handler`` destroyed and still on the node; a 20 ms timer."""
    rclpy.init()
    node = Node("sam3d_test_spinning")
    sub = node.create_subscription(
        Empty, "spinning_test", lambda _msg: None, 1,
        event_callbacks=SubscriptionEventCallbacks(message_lost=lambda _info: None))
    assert sub.event_handlers, "the subscription has no event handler to destroy"
    handler = sub.event_handlers[0]
    ticks = []
    node.create_timer(0.02, lambda: ticks.append(time.monotonic()))
    node.ticks = ticks
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    handler.destroy()  # still in node.waitables: the executor's next wait set trips over it
    try:
        yield node, executor, handler
    finally:
        try:
            executor.shutdown()
            if handler not in node.waitables:  # destroy_node takes it off the node again
                node.add_waitable(handler)
            node.destroy_node()
        finally:
            rclpy.try_shutdown()


def _spin_in_thread(target):
    box = {}

    def run():
        try:
            box["result"] = target()
        except BaseException as exc:  # noqa: BLE001 -- handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_plain_spin_ends_on_a_destroyed_waitable(node_with_destroyed_handler):
    """Why the wrapper exists: rclpy's own spin raises out (the node process ended)."""
    _node, executor, _handler = node_with_destroyed_handler
    thread, box = _spin_in_thread(executor.spin)
    thread.join(timeout=10.0)
    assert not thread.is_alive() and isinstance(box.get("error"), InvalidHandle), box


def test_spin_goes_on_after_the_destroyed_waitable_is_gone(node_with_destroyed_handler):
    node, executor, handler = node_with_destroyed_handler
    warnings = []

    def warn(line):
        warnings.append(line)
        if handler in node.waitables:
            node.remove_waitable(handler)  # what destroy_subscription did before destroying

    thread, box = _spin_in_thread(lambda: spin_through_destroyed_entities(executor, warn))
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not (warnings and len(node.ticks) >= 5):
        time.sleep(0.02)
    recovered_at = time.monotonic()
    ticks_after = [t for t in node.ticks if t > recovered_at - 0.5]
    assert thread.is_alive(), f"the spin ended: {box}"
    assert len(warnings) == 1 and "destroyed" in warnings[0], warnings
    assert ticks_after, "the timer never fired after the recovery"
    executor.shutdown()
    thread.join(timeout=10.0)
    assert box.get("result") == 1, box


def test_spin_gives_up_on_an_entity_that_stays_destroyed(node_with_destroyed_handler):
    """Not a race: the error comes back at once every time, so it is raised, not looped on."""
    _node, executor, _handler = node_with_destroyed_handler
    warnings = []
    thread, box = _spin_in_thread(
        lambda: spin_through_destroyed_entities(executor, warnings.append, max_repeats=5))
    thread.join(timeout=10.0)
    assert not thread.is_alive()
    assert isinstance(box.get("error"), InvalidHandle), box
    assert len(warnings) == 4


def test_spin_does_not_swallow_an_error_of_a_callback():
    """An InvalidHandle raised in a callback (a publisher used after its destroy) is the node's
    bug, not the wait-set race: it ends the spin at once, as rclpy's own spin does."""
    rclpy.init()
    node = Node("sam3d_test_spinning_callback")
    publisher = node.create_publisher(Empty, "spinning_test_out", 1)
    node.destroy_publisher(publisher)
    node.create_timer(0.02, lambda: publisher.publish(Empty()))
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    warnings = []
    try:
        thread, box = _spin_in_thread(
            lambda: spin_through_destroyed_entities(executor, warnings.append))
        thread.join(timeout=10.0)
        assert not thread.is_alive()
        assert isinstance(box.get("error"), InvalidHandle), box
        assert warnings == []
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
