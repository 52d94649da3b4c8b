"""Shared test setup.

DDS isolation: every test run talks only to itself — discovery limited to this host and a
domain id derived from the process id unless the runner already chose one (tools/test.sh).
"""

import os
import sys
from pathlib import Path

import pytest

# sam3d_bench (synthetic scenes, sensor model, metrics, real-frame evaluation) lives in the source
# tree only, never in an install. Appended, not prepended: the installed sam3d_ros (with its
# generated messages) must still win over the source tree's.
sys.path.append(str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


@pytest.fixture
def ros_node():
    """A fresh rclpy context with one plain node for a test that talks to another process."""
    import rclpy  # here, not at module level: core-only test runs have no rclpy
    from rclpy.node import Node

    rclpy.init()
    node = Node("sam3d_test_client")
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown()
