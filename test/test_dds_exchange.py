"""Two processes exchange the package's messages and /tf over real DDS."""

import time

import pytest
import rclpy
from ros_peer import known_objects, known_tf
from ros_process import ros_peer
from sam3d_ros.msg import ReconstructedObjectArray
from tf2_msgs.msg import TFMessage


def test_objects_and_tf_cross_process_boundary(ros_node):
    received = {}
    ros_node.create_subscription(
        ReconstructedObjectArray, "objects", lambda m: received.setdefault("objects", m), 10
    )
    ros_node.create_subscription(TFMessage, "/tf", lambda m: received.setdefault("tf", m), 10)
    with ros_peer("publisher"):
        deadline = time.monotonic() + 30.0
        while len(received) < 2 and time.monotonic() < deadline:
            rclpy.spin_once(ros_node, timeout_sec=0.1)
    assert set(received) == {"objects", "tf"}, "no message from the peer process within 30 s"

    got, want = received["objects"], known_objects()
    assert got.header.frame_id == want.header.frame_id
    assert got.header.stamp.sec == 1234
    assert [o.id for o in got.objects] == [10, 11, 12]
    assert [o.label for o in got.objects] == ["thing0", "thing1", "thing2"]
    assert got.objects[2].size.z == pytest.approx(0.09)
    assert got.objects[1].pose.position.x == pytest.approx(0.1)
    assert got.objects[0].mesh_uri == "file:///tmp/object_0.glb"
    assert got.timings[0].stage == "segment"
    assert got == want

    tf = received["tf"]
    assert tf == known_tf()
    assert tf.transforms[0].child_frame_id == "sam3d_object_10"
