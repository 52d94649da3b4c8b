"""Shared helpers of the node tests (no tests here): run the installed node, talk to it.

The node runs as its own process (the installed ``lib/sam3d_ros/sam3d_node``, its own DDS
participant); the test process publishes camera frames and prompts and records every output.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from moveit_msgs.msg import CollisionObject
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sam3d_ros.action import Reconstruct
from sam3d_ros.msg import BoxPrompt, GraspArray, Prompt, ReconstructedObjectArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import MarkerArray

from sam3d_ros.core.conventions import metres_to_depth16, metres_to_depth32
from sam3d_ros.ros.conversions import numpy_to_image

NODE_EXE = Path(sys.prefix) / "lib" / "sam3d_ros" / "sam3d_node"
FAKE_NODE = Path(__file__).resolve().parent / "fake_node.py"  # the node with contract fakes
FRAME_ID = "camera_color_optical_frame"


def node_command(ros_args: Sequence[str], fakes: bool = False) -> List[str]:
    """The command line of the installed node executable with ``--ros-args``.

    ``fakes``: the same node with the contract-fake backends (``fake_node.py``).
    """
    assert NODE_EXE.is_file(), f"{NODE_EXE} is not installed (run tools/bootstrap.sh)"
    return [sys.executable, str(FAKE_NODE if fakes else NODE_EXE), "--ros-args", *ros_args]


class NodeProcess:
    """The node in its own process; its log lines are collected in :attr:`lines`."""

    def __init__(self, ros_args: Sequence[str], env: Optional[Dict[str, str]] = None,
                 fakes: bool = False):
        full_env = dict(os.environ)
        full_env.update({"PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
                         "RCUTILS_COLORIZED_OUTPUT": "0"})
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            node_command(ros_args, fakes), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=full_env)
        self.lines: List[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 30.0, start: int = 0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if any(text in line for line in self.lines[start:]):
                    return True
            if self.proc.poll() is not None:
                time.sleep(0.2)
                with self._lock:
                    return any(text in line for line in self.lines[start:])
            time.sleep(0.05)
        return False

    def line_count(self) -> int:
        with self._lock:
            return len(self.lines)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT, as Ctrl-C / launch does
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode


@contextlib.contextmanager
def running_node(params: Optional[Dict[str, Any]] = None, extra: Sequence[str] = (),
                 ready: str = "active: processing", env: Optional[Dict[str, str]] = None,
                 fakes: bool = False):
    args: List[str] = []
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        args += ["-p", f"{key}:={value}"]
    node = NodeProcess([*args, *extra], env, fakes)
    try:
        if ready:
            assert node.wait_for_line(ready, 60.0), f"node did not start:\n{node.log()}"
        yield node
    finally:
        node.stop()


class SpunNode:
    """A node spun in a thread of its own.

    The tests' action clients live on one: on the recorder's node, its executor is busy with
    images, point clouds and markers, and replies wait behind them.
    """

    def __init__(self, name: str = "sam3d_test_client"):
        self.node = Node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.spin_errors: List[str] = []
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception as exc:  # noqa: BLE001 -- the thread must outlive a bad moment
                # An entity created from the test's thread while this one spins can be seen
                # half built (Kilted's rclpy ActionClient registers its waitable before its
                # lock exists: AttributeError '_lock'); the next spin sees it whole. Without
                # this the thread died and every later reply was lost.
                if not rclpy.ok():
                    return
                self.spin_errors.append(repr(exc))
                time.sleep(0.01)

    def close(self) -> None:
        # Stop spinning before the executor and node go, or the spin thread trips over them.
        self._stop.set()
        self.thread.join(timeout=5.0)
        self.executor.shutdown()
        self.node.destroy_node()


class Recorder(SpunNode):
    """A test-side node that publishes camera frames / prompts and records every output."""

    def __init__(self, name: str = "sam3d_test_peer", node_ns: str = "/sam3d",
                 grasp_topics: bool = False):
        super().__init__(name)
        self.lock = threading.Lock()
        self.msgs: Dict[str, List[Any]] = {}
        self.arrival: Dict[str, List[float]] = {}
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_image = self.node.create_publisher(Image, "image", reliable)
        self.pub_depth = self.node.create_publisher(Image, "depth", reliable)
        self.pub_info = self.node.create_publisher(CameraInfo, "camera_info", reliable)
        self.pub_prompt = self.node.create_publisher(
            Prompt, "prompt",
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL))
        topics = [
            ("objects", ReconstructedObjectArray, f"{node_ns}/objects"),
            ("detections", Detection3DArray, f"{node_ns}/detections"),
            ("markers", MarkerArray, f"{node_ns}/markers"),
            ("points", PointCloud2, f"{node_ns}/points"),
            ("debug_image", Image, f"{node_ns}/debug_image"),
            ("tf", TFMessage, "/tf"),
            ("diagnostics", DiagnosticArray, "/diagnostics"),
        ]
        if grasp_topics:  # opt-in: a /collision_object subscriber makes the node build them
            topics += [
                ("grasps", GraspArray, f"{node_ns}/grasps"),
                ("grasp_poses", PoseArray, f"{node_ns}/grasp_poses"),
                ("grasp_markers", MarkerArray, f"{node_ns}/grasp_markers"),
                ("collision", CollisionObject, "/collision_object"),
            ]
        self.subscriptions: Dict[str, Any] = {}
        for key, msg_type, topic in topics:
            self.msgs[key] = []
            self.arrival[key] = []
            self.subscriptions[key] = self.node.create_subscription(
                msg_type, topic, lambda m, k=key: self._record(k, m),
                QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def _record(self, key: str, msg: Any) -> None:
        with self.lock:
            self.msgs[key].append(msg)
            self.arrival[key].append(time.monotonic())

    def get(self, key: str) -> List[Any]:
        with self.lock:
            return list(self.msgs[key])

    def count(self, key: str) -> int:
        with self.lock:
            return len(self.msgs[key])

    def clear(self) -> None:
        with self.lock:
            for key in self.msgs:
                self.msgs[key].clear()
                self.arrival[key].clear()

    # ---------------------------------------------------------------- waiting

    def wait(self, predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def wait_subscribed(self, timeout: float = 20.0) -> bool:
        """Until the node subscribes to the three camera topics."""
        return self.wait(lambda: all(p.get_subscription_count() > 0 for p in
                                     (self.pub_image, self.pub_depth, self.pub_info)), timeout)

    def wait_matched(self, keys: Sequence[str] = ("tf",), timeout: float = 30.0) -> bool:
        """Until the node's publishers of the ``keys`` outputs are matched to this recorder.

        Discovery between two processes can take seconds on a loaded machine: a test that sends
        a few frames once must wait for it, or the node publishes its outputs to nobody.
        """
        return self.wait(lambda: all(self.subscriptions[k].get_publisher_count() > 0
                                     for k in keys), timeout)

    def diag_values(self, msg: DiagnosticArray) -> Dict[str, str]:
        return {kv.key: kv.value for kv in msg.status[0].values}

    def wait_diag(self, predicate: Callable[[DiagnosticArray], bool], start: int = 0,
                  timeout: float = 20.0) -> Optional[DiagnosticArray]:
        found: List[DiagnosticArray] = []

        def check() -> bool:
            for msg in self.get("diagnostics")[start:]:
                if msg.status and predicate(msg):
                    found.append(msg)
                    return True
            return False

        self.wait(check, timeout)
        return found[0] if found else None

    def idle_diag_values(self, keys=("frames_received", "frames_processed", "frames_dropped"),
                         tries: int = 10) -> Dict[str, str]:
        """Diagnostic values once the node is idle: two diagnostics in a row with equal ``keys``.

        A frame is counted as processed after its outputs are published, so a diagnostic read
        right after the previous frame's /tf can miss it; a counter baseline taken then charges
        that frame to whatever comes next.
        """
        def next_values() -> Dict[str, str]:
            msg = self.wait_diag(lambda m: True, start=self.count("diagnostics"))
            assert msg is not None, "no diagnostics"
            return self.diag_values(msg)

        prev = next_values()
        for _ in range(tries):
            cur = next_values()
            if all(cur.get(k) == prev.get(k) for k in keys):
                return cur
            prev = cur
        raise AssertionError(f"the node's frame counters kept moving: {prev}")

    # ---------------------------------------------------------------- publishing

    def stamp(self):
        return self.node.get_clock().now().to_msg()

    def publish_frame(self, rgb: np.ndarray, depth_m: Optional[np.ndarray], info: CameraInfo,
                      stamp=None, frame_id: str = FRAME_ID, depth_encoding: str = "16UC1",
                      rgb_encoding: str = "rgb8", skip: Iterable[str] = ()) -> Header:
        header = Header(stamp=stamp or self.stamp(), frame_id=frame_id)
        if "image" not in skip:
            data = rgb
            if rgb_encoding == "bgr8":
                data = rgb[:, :, ::-1].copy()
            elif rgb_encoding == "mono8":
                data = rgb.mean(axis=2).astype(np.uint8)
            self.pub_image.publish(numpy_to_image(np.ascontiguousarray(data), rgb_encoding,
                                                  header))
        if depth_m is not None and "depth" not in skip:
            if depth_encoding == "16UC1":
                depth = numpy_to_image(metres_to_depth16(depth_m), "16UC1", header)
            else:
                depth = numpy_to_image(metres_to_depth32(depth_m), "32FC1", header)
            self.pub_depth.publish(depth)
        if "camera_info" not in skip:
            info.header = header
            self.pub_info.publish(info)
        return header


def apply_prompt(rec: "Recorder", node: "NodeProcess", prompt: Any, timeout: float = 20.0) -> None:
    """Publish ``prompt`` and return once the node logged that it applied it.

    A frame published before the prompt lands is segmented with the previous one; waiting for
    the node's own line replaces a guessed sleep (the node logs ``prompt: ...`` after the
    prompt is in force).
    """
    start = node.line_count()
    rec.pub_prompt.publish(prompt)
    assert node.wait_for_line("prompt: text=", timeout, start=start), node.log()[-3000:]


def camera_info(intr, width: Optional[int] = None, height: Optional[int] = None) -> CameraInfo:
    """CameraInfo with K and P of pinhole intrinsics
    (``sam3d_ros.core.types.CameraIntrinsics``)."""
    msg = CameraInfo()
    msg.width = int(width or intr.width)
    msg.height = int(height or intr.height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def box_prompt(scene, pad: int = 4, object_ids: bool = True) -> Prompt:
    """A Prompt with one box per ground-truth object (object_id = GT id when asked)."""
    msg = Prompt()
    for b in scene.box_prompts(pad):
        msg.boxes.append(BoxPrompt(x_min=b.x_min, y_min=b.y_min, x_max=b.x_max, y_max=b.y_max,
                                   label=1, object_id=b.object_id if object_ids else -1))
    return msg


def warm_up_action_client(rec: "Recorder", client: Any, feedback_goal: Any = None) -> None:
    """Until the server answers this client's goal, result and cancel requests.

    DDS discovery is not symmetric: ``wait_for_server`` returns when this client sees the
    server, possibly before the server's response writers have matched this client's readers,
    and a response sent before that is lost (seen on a loaded machine as a cancel that never
    got its answer). A goal without an image fails at once and publishes nothing.
    With ``feedback_goal`` (a goal that runs), also until this client receives its feedback:
    the feedback topic is matched on its own, and feedback sent before that is lost.
    """
    deadline = time.monotonic() + 90.0
    while feedback_goal is not None and time.monotonic() < deadline:
        got: List[Any] = []
        sent = client.send_goal_async(feedback_goal, feedback_callback=got.append)
        if rec.wait(sent.done, 10.0) and sent.result().accepted:
            result = sent.result().get_result_async()
            rec.wait(result.done, 60.0)
            if got:
                break
    else:
        if feedback_goal is not None:
            raise AssertionError("no feedback of a running goal reached this client in 90 s")
    while time.monotonic() < deadline:
        sent = client.send_goal_async(Reconstruct.Goal(use_latest_frame=False))
        if not rec.wait(sent.done, 10.0):
            continue
        handle = sent.result()
        result = handle.get_result_async()
        if not rec.wait(result.done, 10.0):
            continue
        cancel = handle.cancel_goal_async()
        if rec.wait(cancel.done, 10.0):
            return
    raise AssertionError("the action server never answered a goal, its result and a cancel")



def explicit_goal(sc: Any, stamp_s: int = 0) -> Any:
    """A ~/reconstruct goal with the scene's image, depth, CameraInfo and box prompt."""
    goal = Reconstruct.Goal(prompt=box_prompt(sc), use_latest_frame=False)
    goal.image = numpy_to_image(sc.frame.rgb, "rgb8")
    goal.depth = numpy_to_image(metres_to_depth16(sc.depth_m), "16UC1")
    goal.camera_info = camera_info(sc.intrinsics)
    for msg in (goal.image, goal.depth, goal.camera_info):
        msg.header.frame_id = FRAME_ID
        msg.header.stamp.sec = int(stamp_s)
    return goal


_SCENES: Dict[tuple, Any] = {}


def scene(seed: int = 1, width: int = 320, height: int = 240, n_objects: int = 3):
    """A cached synthetic tabletop scene."""
    from sam3d_bench.scenes import make_tabletop_scene

    key = (seed, width, height, n_objects)
    if key not in _SCENES:
        _SCENES[key] = make_tabletop_scene(seed, n_objects=n_objects, width=width, height=height)
    return _SCENES[key]


def _call(rec: "Recorder", client: Any, request: Any, timeout: float) -> tuple:
    """``(answer, resent)``: the answer to ``request``, sent again once if none came soon.

    A service's answer is lost when the server has not yet matched the client's response
    reader although the client already sees the service (rmw_fastrtps drops it: ros2/ros2
    #1017; seen in CI on a loaded machine: no answer to a fresh client's first call in 20 s).
    """
    assert client.wait_for_service(timeout_sec=timeout)
    deadline = time.monotonic() + timeout
    first = client.call_async(request)
    if rec.wait(first.done, min(5.0, timeout / 2)):
        return first.result(), False
    again = client.call_async(request)
    assert rec.wait(lambda: first.done() or again.done(), max(0.0, deadline - time.monotonic()))
    return (first if first.done() else again).result(), True


def call(rec: "Recorder", client: Any, request: Any, timeout: float = 20.0) -> Any:
    """Call a service of the node and wait for the answer (a request safe to repeat)."""
    return _call(rec, client, request, timeout)[0]


def state(rec: "Recorder", client: Any) -> str:
    """The node's lifecycle state label (``client``: a ``GetState`` client)."""
    return call(rec, client, GetState.Request()).current_state.label


_TRANSITION_GOAL = {
    Transition.TRANSITION_CONFIGURE: "inactive",
    Transition.TRANSITION_CLEANUP: "unconfigured",
    Transition.TRANSITION_ACTIVATE: "active",
    Transition.TRANSITION_DEACTIVATE: "inactive",
}


def transition(rec: "Recorder", client: Any, transition_id: int, timeout: float = 20.0) -> bool:
    """Trigger a lifecycle transition (``client``: a ``ChangeState`` client).

    When the first answer was lost and the request was sent again, the repeat is refused if
    the first took effect: the node's state then says whether the transition happened.
    """
    answer, resent = _call(
        rec, client, ChangeState.Request(transition=Transition(id=transition_id)), timeout)
    if answer.success or not resent or transition_id not in _TRANSITION_GOAL:
        return bool(answer.success)
    get_state = rec.node.create_client(
        GetState, client.srv_name.rsplit("/", 1)[0] + "/get_state")
    try:
        return state(rec, get_state) == _TRANSITION_GOAL[transition_id]
    finally:
        rec.node.destroy_client(get_state)


@contextlib.contextmanager
def ros_context():
    rclpy.init()
    try:
        yield
    finally:
        rclpy.try_shutdown()
