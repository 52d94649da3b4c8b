"""A second process for the DDS tests: run as ``python ros_peer.py <role>``.

Roles:
  publisher      publishes a known ReconstructedObjectArray on ``objects`` and a TFMessage on
                 ``/tf`` at 10 Hz until killed.
  action_server  serves ``reconstruct`` (sam3d_ros/action/Reconstruct) through the package's
                 QueuedActionServer (at most 16 goals queued, results kept 5 s); each goal
                 walks five stages of 0.3 s and returns one object whose id is the goal's seed.
                 Commands on stdin: ``destroy`` destroys the server (as a node's cleanup does;
                 ``destroyed`` answers), ``rss`` answers ``rss <resident MiB>``.
"""

import sys
import threading
import time

import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from sam3d_ros.action import Reconstruct
from sam3d_ros.msg import ReconstructedObject, ReconstructedObjectArray, StageTiming
from tf2_msgs.msg import TFMessage

from sam3d_ros.core.errors import Cancelled
from sam3d_ros.ros.action_queue import QueuedActionServer


def known_objects() -> ReconstructedObjectArray:
    """The array the publisher sends; the test checks every field it sets."""
    array = ReconstructedObjectArray()
    array.header.frame_id = "camera_color_optical_frame"
    array.header.stamp.sec = 1234
    for i in range(3):
        # scores exact in float32, so the received message compares equal
        obj = ReconstructedObject(
            id=10 + i, object_index=i, label=f"thing{i}", score=0.25 * (i + 1)
        )
        obj.pose.position.x = 0.1 * i
        obj.pose.position.z = 0.7
        obj.pose.orientation.w = 1.0
        obj.size.x, obj.size.y, obj.size.z = 0.05, 0.06, 0.07 + i / 100
        obj.mesh_uri = f"file:///tmp/object_{i}.glb"
        array.objects.append(obj)
    array.timings = [StageTiming(stage="segment", seconds=0.01)]
    array.segmentation_backend = "embedded"
    return array


def known_tf() -> TFMessage:
    """The /tf message the publisher sends."""
    transform = TransformStamped()
    transform.header.frame_id = "camera_color_optical_frame"
    transform.child_frame_id = "sam3d_object_10"
    transform.transform.translation.z = 0.7
    transform.transform.rotation.w = 1.0
    return TFMessage(transforms=[transform])


def run_publisher(node: Node) -> None:
    objects_pub = node.create_publisher(ReconstructedObjectArray, "objects", 10)
    tf_pub = node.create_publisher(TFMessage, "/tf", 10)

    def publish() -> None:
        objects_pub.publish(known_objects())
        tf_pub.publish(known_tf())

    node.create_timer(0.1, publish)
    rclpy.spin(node)


def walk_stages(goal, progress, cancel_requested):
    """Work function of the peer's server: five stages, cancellable between them."""
    for i, stage in enumerate(["load", "segment", "reconstruct", "export", "done"]):
        if cancel_requested():
            raise Cancelled(f"before {stage}")
        progress(stage, (i + 1) / 5, f"seed {goal.seed}: {stage}")
        time.sleep(0.3)
    result = Reconstruct.Result()
    result.objects.objects.append(ReconstructedObject(id=int(goal.seed)))
    return result


def resident_mib() -> float:
    """Resident memory of this process (MiB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_action_server(node: Node) -> None:
    server = QueuedActionServer(node, Reconstruct, "reconstruct", walk_stages,
                                queue_poll_s=0.05, max_queued=16, result_timeout_s=5.0)

    def commands() -> None:
        for line in sys.stdin:
            if line.strip() == "destroy":
                server.destroy("the test peer is shutting down")
                print("destroyed", flush=True)
            elif line.strip() == "rss":
                print(f"rss {resident_mib():.1f}", flush=True)

    threading.Thread(target=commands, daemon=True).start()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    executor.spin()


if __name__ == "__main__":
    rclpy.init()
    peer = Node("sam3d_test_peer")
    print("ready", flush=True)
    {"publisher": run_publisher, "action_server": run_action_server}[sys.argv[1]](peer)
