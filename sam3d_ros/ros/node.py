"""The ``sam3d`` lifecycle node: RGB-D frames and prompts in; objects, TF, markers out.

The node only converts messages (:mod:`sam3d_ros.core.camera_frame`), schedules work and
publishes (:mod:`sam3d_ros.core.output_messages` with the rclpy kit); segmentation and
reconstruction are the ROS-free :class:`~sam3d_ros.core.engine.Engine`.

Scheduling: the three camera topics are paired by approximate time (:class:`ApproxTimeSync`);
each synchronised frame replaces the one in a single-frame slot (:class:`LatestSlot`) and ONE
worker thread processes whatever frame is newest when it is free, so the node never works
through a backlog of stale frames (replaced frames are counted as drops). On-demand goals on
``~/reconstruct`` are queued first-in-first-out (:class:`~sam3d_ros.ros.action_queue.
QueuedActionServer`) and share the engine with the worker.

Lifecycle (``autostart`` configures and activates at start-up):

* configure: read parameters, build and load the backends, create publishers, the prompt
  subscription and the action server;
* activate: subscribe to the camera topics, start the worker;
* deactivate: stop the worker, unsubscribe, clear markers, unload the backends (GPU memory);
* cleanup / shutdown: destroy everything configure created.

Parameters and topics are documented in ``docs/node.md``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from moveit_msgs.msg import CollisionObject
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import MarkerArray

from sam3d_ros.action import Reconstruct
from sam3d_ros.backends.grasp.analytic import GripperModel
from sam3d_ros.core import grasp_messages as ros_grasps
from sam3d_ros.core import output_messages as out
from sam3d_ros.core.camera_frame import CameraFrame, build_camera_frame, stamp_seconds
from sam3d_ros.core.errors import Cancelled, InputError, NoObjectFound, Sam3dError
from sam3d_ros.core.inputs import (
    DEFAULT_SEED,
    MAX_SEED,
    InputOptions,
    parse_request,
)
from sam3d_ros.core.prompt_messages import prompt_request, query_from_prompt, rename_field
from sam3d_ros.core.tracking import ObjectTracker, relabel
from sam3d_ros.core.types import CameraIntrinsics, Frame, ObjectReconstruction, SegmentationQuery
from sam3d_ros.msg import GraspArray, Prompt, ReconstructedObjectArray
from sam3d_ros.ros.action_queue import QueuedActionServer
from sam3d_ros.ros.message_kit import RCLPY
from sam3d_ros.ros.moveit_scene import CollisionPublisher, SceneOptions

try:  # Jazzy and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # pragma: no cover - Humble
    from rclpy.qos_event import SubscriptionEventCallbacks  # type: ignore

NODE_NAME = "sam3d"
_BIG = 2**31 - 1
_GRIPPER = GripperModel()  # defaults of the gripper parameters (a Franka Hand)
_RUN_DIR_RE = re.compile(r"^(frame|goal)_\d{8}T\d{6}_\d{6}_\d+$")


# --------------------------------------------------------------------------------------------
# ROS-free helpers (unit-tested without a graph)


@dataclass
class CameraMessages:
    """One synchronised set of camera messages, undecoded until processed.

    Each image is raw or compressed, as ``image_transport`` / ``depth_transport`` chose.
    """

    image: Union[Image, CompressedImage]
    depth: Union[Image, CompressedImage]
    camera_info: CameraInfo
    received: float = field(default_factory=time.monotonic)


class ApproxTimeSync:
    """Pair messages of N topics by approximate time stamp (message_filters is not on PyPI).

    Topic 0 is the pivot (the colour image). Each call to :meth:`add` looks for the newest
    pivot message for which every other topic has a message within ``slop_s``; when found,
    ``callback(messages)`` is called with one message per topic and the pivot messages up to
    it, and the other topics' messages older than the matched ones, are consumed. Pivot messages
    that find no partner within ``expire_s`` of the newest pivot are dropped and reported with
    ``on_unmatched(topic_index, reason)`` (the topic that was missing and why).

    Thread-safe; callbacks run outside the lock.
    """

    def __init__(
        self,
        n_topics: int,
        slop_s: float,
        callback: Callable[[List[Any]], None],
        on_unmatched: Optional[Callable[[int, str], None]] = None,
        queue_size: int = 10,
        expire_s: float = 0.5,
        names: Optional[Sequence[str]] = None,
        consume: Optional[Sequence[bool]] = None,
    ) -> None:
        self.n = int(n_topics)
        self.slop_s = float(slop_s)
        self.callback = callback
        self.on_unmatched = on_unmatched
        self.queue_size = int(queue_size)
        self.expire_s = float(expire_s)
        self.names = list(names) if names else [f"topic{i}" for i in range(self.n)]
        self.consume = list(consume) if consume else [True] * self.n
        self._queues: List[Deque[Tuple[float, Any]]] = [deque() for _ in range(self.n)]
        self._received = [0] * self.n
        self._lock = threading.Lock()
        self.matched = 0
        self.unmatched = 0

    def add(self, index: int, stamp_s: float, msg: Any) -> None:
        """Add one message of topic ``index`` with stamp ``stamp_s`` (seconds)."""
        emit = None
        dropped: List[Tuple[int, str]] = []
        with self._lock:
            q = self._queues[index]
            q.append((float(stamp_s), msg))
            self._received[index] += 1
            while len(q) > self.queue_size:
                old = q.popleft()
                if index == 0:
                    dropped.append(self._reason(old[0]))
            emit = self._match()
            if emit is None:
                dropped.extend(self._expire())
            self.unmatched += len(dropped)
        if self.on_unmatched is not None:
            for topic, reason in dropped:
                self.on_unmatched(topic, reason)
        if emit is not None:
            self.callback(emit)

    def _nearest(self, index: int, stamp: float) -> Optional[Tuple[float, Any]]:
        best = None
        for item in self._queues[index]:
            if best is None or abs(item[0] - stamp) < abs(best[0] - stamp):
                best = item
        return best

    def _match(self) -> Optional[List[Any]]:
        pivots = self._queues[0]
        for p_stamp, p_msg in reversed(pivots):
            picks = []
            for k in range(1, self.n):
                item = self._nearest(k, p_stamp)
                if item is None or abs(item[0] - p_stamp) > self.slop_s:
                    break
                picks.append(item)
            else:
                while pivots and pivots[0][0] <= p_stamp:
                    pivots.popleft()
                for k, item in enumerate(picks, start=1):
                    if self.consume[k]:
                        q = self._queues[k]
                        while q and q[0][0] <= item[0]:
                            q.popleft()
                self.matched += 1
                return [p_msg] + [item[1] for item in picks]
        return None

    def _expire(self) -> List[Tuple[int, str]]:
        pivots = self._queues[0]
        if not pivots:
            return []
        newest = pivots[-1][0]
        dropped = []
        while pivots and newest - pivots[0][0] > self.expire_s:
            dropped.append(self._reason(pivots.popleft()[0]))
        return dropped

    def _reason(self, stamp: float) -> Tuple[int, str]:
        for k in range(1, self.n):
            if self._received[k] == 0:
                return k, f"no {self.names[k]} message received"
            item = self._nearest(k, stamp)
            if item is None or abs(item[0] - stamp) > self.slop_s:
                gap = "none queued" if item is None else f"nearest is {abs(item[0] - stamp):.3f} s"
                return k, (
                    f"no {self.names[k]} message within sync_slop_s={self.slop_s:g} s of the "
                    f"{self.names[0]} stamp ({gap})"
                )
        return 0, "dropped from the synchroniser queue"


class LatestSlot:
    """A one-item mailbox: :meth:`put` replaces an unconsumed item (a drop), :meth:`take` waits."""

    def __init__(self) -> None:
        self._item: Any = None
        self._cond = threading.Condition()
        self.drops = 0
        self.puts = 0

    def put(self, item: Any) -> bool:
        """Store ``item``; returns True when it replaced an unprocessed one (counted as a drop)."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.drops += 1
            self._item = item
            self.puts += 1
            self._cond.notify_all()
            return replaced

    def take(self, timeout: Optional[float] = None) -> Any:
        """Remove and return the item, waiting up to ``timeout`` seconds; ``None`` if empty."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> None:
        """Drop the stored item without counting it."""
        with self._cond:
            self._item = None
            self._cond.notify_all()


class FirstDelivery:
    """Tells a message's first delivery from a repeat on another subscription of the same topic.

    A message is keyed by what the middleware reports about its publication (``MessageInfo``'s
    source timestamp and the writer's sequence number), the same on every subscription that
    receives it; the last ``size`` keys are remembered. Thread-safe.
    """

    def __init__(self, size: int = 32) -> None:
        self._keys: Deque[Tuple[int, int]] = deque(maxlen=int(size))
        self._lock = threading.Lock()

    def first(self, info: Optional[Mapping[str, Any]]) -> bool:
        """True the first time a publication is offered (always True without a source stamp)."""
        if not info or not info.get("source_timestamp"):
            return True
        key = (int(info["source_timestamp"]), int(info.get("publication_sequence_number", 0)))
        with self._lock:
            if key in self._keys:
                return False
            self._keys.append(key)
            return True


def prune_runs(output_dir: Path, keep: int) -> List[Path]:
    """Delete the oldest run directories written by the node beyond ``keep`` (0 = keep all).

    Only directories named like the node's runs (``frame_...`` / ``goal_...``) are considered.
    Returns the deleted paths.
    """
    if keep <= 0 or not output_dir.is_dir():
        return []
    runs = sorted(
        (p for p in output_dir.iterdir() if p.is_dir() and _RUN_DIR_RE.match(p.name)),
        key=lambda p: (p.stat().st_mtime, p.name),
    )
    deleted = []
    for path in runs[: max(0, len(runs) - keep)]:
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path)
    return deleted


# --------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: name, default, description and range."""

    name: str
    default: Any
    description: str
    range: Optional[Tuple[float, float]] = None
    choices: Tuple[str, ...] = ()
    when: str = "runtime"


PARAMS: Tuple[ParamSpec, ...] = (
    ParamSpec("autostart", True, "configure and activate at start-up", when="start-up"),
    ParamSpec("segmentation_backend", "embedded", "segmentation backend",
              choices=("embedded", "sam3"), when="configure"),
    ParamSpec("reconstruction_backend", "embedded", "reconstruction backend",
              choices=("embedded", "sam3d_objects"), when="configure"),
    ParamSpec("sam3_checkpoint", "", "local SAM 3 checkpoint directory (sam3 backend); empty = "
              "$SAM3D_ROS_SAM3_CHECKPOINT", when="configure"),
    ParamSpec("sam3d_pipeline_config", "", "SAM 3D Objects pipeline config (sam3d_objects "
              "backend); empty = $SAM3D_OBJECTS_CONFIG", when="configure"),
    ParamSpec("device", "auto", "torch device of the model backends: auto, cpu, cuda, cuda:N",
              when="configure"),
    ParamSpec("default_seed", DEFAULT_SEED, "seed when neither goal nor prompt gives one",
              range=(0, _BIG)),
    ParamSpec("continuous", True, "process camera frames continuously (false: only on "
              "~/reconstruct goals)"),
    ParamSpec("max_rate_hz", 0.0, "cap on continuously processed frames per second; 0 = as "
              "fast as the backend allows", range=(0.0, 1000.0)),
    ParamSpec("sync_slop_s", 0.02, "largest stamp difference of a synchronised image / depth / "
              "camera_info set, seconds", range=(0.0, 10.0), when="activate"),
    ParamSpec("camera_qos_reliability", "best_effort", "reliability of the camera "
              "subscriptions (best_effort = sensor data QoS)",
              choices=("best_effort", "reliable"), when="activate"),
    ParamSpec("camera_qos_depth", 5, "history depth of the camera subscriptions",
              range=(1, 1000), when="activate"),
    ParamSpec("image_transport", "raw", "colour input: raw = sensor_msgs/Image on image; "
              "compressed = sensor_msgs/CompressedImage (JPEG/PNG, image_transport's compressed "
              "format) on <image>/compressed", choices=("raw", "compressed"), when="activate"),
    ParamSpec("depth_transport", "raw", "depth input: raw = sensor_msgs/Image on depth; "
              "compressedDepth = sensor_msgs/CompressedImage (image_transport's compressedDepth "
              "PNG, 16UC1 or 32FC1) on <depth>/compressedDepth",
              choices=("raw", "compressedDepth"), when="activate"),
    ParamSpec("tf_prefix", "sam3d_object_", "TF child frame of object <id> is <tf_prefix><id>"),
    ParamSpec("publish_tf", True, "publish one /tf transform per object"),
    ParamSpec("track_gate_m", 0.05, "largest centre distance (m) at which an object keeps the "
              "id of an object of the previous frames", range=(0.0, 10.0), when="configure"),
    ParamSpec("track_max_age", 3, "frames an unseen object's id is remembered",
              range=(1, 100000), when="configure"),
    ParamSpec("write_artifacts", False, "write GLB/PLY/zip artifacts for every processed "
              "frame (goals decide per goal)"),
    ParamSpec("output_dir", "", "directory of the run directories; empty = "
              "$ROS_HOME/sam3d_runs (ROS_HOME defaults to ~/.ros)"),
    ParamSpec("max_runs_kept", 20, "keep at most this many run directories, deleting the "
              "oldest; 0 = keep all", range=(0, 1000000)),
    ParamSpec("marker_max_triangles", 1000, "triangles per mesh marker (preview decimated by "
              "quadric edge collapse, closed meshes stay closed); 0 = all",
              range=(0, 10000000)),
    ParamSpec("grasp_planner", "analytic", "grasp planner; none = no grasp stage and no grasp "
              "outputs", choices=("analytic", "none"), when="configure"),
    ParamSpec("grasp_top_k", 10, "grasps kept per object, best first", range=(1, 1000),
              when="configure"),
    ParamSpec("grasp_approach", "from_above", "preferred approach direction: from_above "
              "(against the support-plane normal), camera (along the viewing direction) or a "
              "vector 'x,y,z' in the camera optical frame", when="configure"),
    ParamSpec("gripper_max_opening", _GRIPPER.max_opening, "gripper stroke (largest opening "
              "between the fingers), metres", range=(0.001, 1.0), when="configure"),
    ParamSpec("gripper_finger_length", _GRIPPER.finger_length, "finger length from the hand "
              "body to the fingertip, metres", range=(0.001, 1.0), when="configure"),
    ParamSpec("gripper_finger_width", _GRIPPER.finger_width, "finger size along the grasp x "
              "axis, metres", range=(0.001, 1.0), when="configure"),
    ParamSpec("gripper_finger_thickness", _GRIPPER.finger_thickness, "finger size along the "
              "closing (y) axis, metres", range=(0.001, 1.0), when="configure"),
    ParamSpec("gripper_palm_depth", _GRIPPER.palm_depth, "hand body size along the grasp x "
              "axis, metres", range=(0.001, 2.0), when="configure"),
    ParamSpec("gripper_palm_width", _GRIPPER.palm_width, "hand body size along the closing (y) "
              "axis, metres", range=(0.001, 2.0), when="configure"),
    ParamSpec("gripper_palm_height", _GRIPPER.palm_height, "hand body size along the approach "
              "(z) axis, from the end-effector link to the fingers, metres", range=(0.001, 2.0),
              when="configure"),
    ParamSpec("tcp_offset_m", 0.0, "published grasp poses (~/grasps, ~/grasp_poses, "
              "subframes) are moved this far back along the grasp -z: the pose of your "
              "end-effector link (Franka panda_hand: 0.1034); 0 = the grasp frame",
              range=(0.0, 2.0)),
    ParamSpec("publish_grasps", True, "publish ~/grasps, ~/grasp_poses and ~/grasp_markers"),
    ParamSpec("grasp_marker_max", 50, "at most this many gripper markers (every object's best "
              "grasp first, then the second best, ...); 0 = all", range=(0, 1000000)),
    ParamSpec("publish_collision_objects", True, "publish moveit_msgs/CollisionObject "
              "ADD/MOVE/REMOVE on /collision_object for MoveIt's planning scene"),
    ParamSpec("collision_support_plane", False, "also add the fitted support plane as a thin "
              "box <tf_prefix>support_plane"),
    ParamSpec("collision_max_triangles", 2000, "triangles per collision mesh (closed, "
              "decimated); 0 = all", range=(0, 10000000)),
    ParamSpec("collision_grasp_subframes", 3, "subframes grasp_0..grasp_<n-1> (the best "
              "grasps, relative to the object) per collision object; 0 = none",
              range=(0, 1000)),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics", range=(0.05, 60.0),
              when="configure"),
    ParamSpec("input_timeout_s", 2.0, "no synchronised frame for this long while active gives "
              "a diagnostics warning", range=(0.1, 3600.0)),
    ParamSpec("warn_throttle_s", 2.0, "a warning about the same input field is logged at most "
              "once per this many seconds", range=(0.0, 3600.0)),
    ParamSpec("allow_http", False, "goals may read image_uri/pointmap_uri/mask_uris over "
              "http(s)", when="configure"),
    ParamSpec("allowed_input_roots", [""], "goal URIs must resolve inside one of these "
              "directories; [''] = anywhere", when="configure"),
)


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    desc = spec.description
    if spec.choices:
        desc += f" ({'|'.join(spec.choices)})"
    desc += f" [applied at {spec.when}]" if spec.when != "runtime" else " [runtime]"
    d = ParameterDescriptor(description=desc)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(spec.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi),
                                                         step=0.0)]
        else:
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
    return d


# --------------------------------------------------------------------------------------------
# The node


class Sam3dNode(LifecycleNode):
    """Lifecycle node ``sam3d`` (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._cb_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._engine: Any = None
        self._engine_lock = threading.Lock()
        self._state = "unconfigured"
        self._backend_state = "not loaded"
        self._tracker: Optional[ObjectTracker] = None
        self._tracker_lock = threading.Lock()

        # Handles created by configure / activate.
        self._pub_objects: Any = None
        self._pub_detections: Any = None
        self._pub_markers: Any = None
        self._pub_points: Any = None
        self._pub_debug: Any = None
        self._pub_tf: Any = None
        self._pub_diag: Any = None
        self._grasp_out: Optional[ros_grasps.GraspOutputs] = None
        self._collision: Optional[CollisionPublisher] = None
        self._sub_prompt: List[Any] = []
        self._prompt_seen = FirstDelivery()
        self._camera_subs: List[Any] = []
        self._action: Optional[QueuedActionServer] = None
        self._diag_timer: Any = None
        self._sync: Optional[ApproxTimeSync] = None
        self._slot = LatestSlot()
        self._worker: Optional[threading.Thread] = None
        self._stop = threading.Event()

        # Shared state.
        self._lock = threading.Lock()
        self._prompt: Optional[Prompt] = None
        self._latest: Optional[CameraMessages] = None
        self._last_size: Optional[Tuple[int, int]] = None
        self._marker_ids: List[int] = []
        self._marker_cache = out.MarkerPreviewCache()
        self._tracked_ids: List[int] = []
        self._frame_id = ""
        self._warned_once: set = set()
        self._warn_times: Dict[str, float] = {}
        self._diag_lock = threading.Lock()
        self._reset_stats()
        # Diagnostics exist from construction: a configure that fails is reported too.
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_period = float(self._p("diagnostics_period_s"))
        self._diag_timer = self.create_timer(self._diag_period, self._publish_diagnostics,
                                             callback_group=self._timer_group)

    # ---------------------------------------------------------------- parameters

    def _p(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _on_set_parameters(self, params: List[Parameter]) -> SetParametersResult:
        specs = {s.name: s for s in PARAMS}
        for param in params:
            if param.name == "grasp_approach":
                try:
                    ros_grasps.parse_approach(param.value)
                except InputError as exc:
                    return SetParametersResult(successful=False,
                                               reason=f"{exc.field}: {exc.reason}")
            spec = specs.get(param.name)
            if spec is None or not spec.choices:
                continue
            if param.value not in spec.choices:
                return SetParametersResult(
                    successful=False,
                    reason=f"{param.name} must be one of {list(spec.choices)}, "
                    f"got {param.value!r}",
                )
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read parameters, build and load the backends, create publishers and the action."""
        self._clear_error()
        self._set_diagnostics_period(float(self._p("diagnostics_period_s")))
        try:
            self._engine = self._build_engine()
        except Exception as exc:  # noqa: BLE001 - any backend failure fails the transition
            self._backend_state = "failed to load"
            self._set_error("backend", f"cannot build the backends: {exc}")
            self.get_logger().error(f"configure failed: {exc}")
            self._engine = None
            return TransitionCallbackReturn.FAILURE
        self._tracker = ObjectTracker(self._p("track_gate_m"), self._p("track_max_age"))
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                              history=HistoryPolicy.KEEP_LAST)
        self._pub_objects = self.create_lifecycle_publisher(
            ReconstructedObjectArray, "~/objects", reliable)
        self._pub_detections = self.create_lifecycle_publisher(
            Detection3DArray, "~/detections", reliable)
        self._pub_markers = self.create_lifecycle_publisher(MarkerArray, "~/markers", reliable)
        self._pub_points = self.create_lifecycle_publisher(PointCloud2, "~/points", reliable)
        self._pub_debug = self.create_lifecycle_publisher(Image, "~/debug_image", reliable)
        self._pub_tf = self.create_lifecycle_publisher(
            TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self._grasp_out = ros_grasps.GraspOutputs(
            RCLPY,
            self.create_lifecycle_publisher(GraspArray, "~/grasps", reliable),
            self.create_lifecycle_publisher(PoseArray, "~/grasp_poses", reliable),
            self.create_lifecycle_publisher(MarkerArray, "~/grasp_markers", reliable))
        # MoveIt's planning scene monitor subscribes reliable + volatile (keep-last 1024):
        # match it, with room for one operation per object of a few frames.
        self._collision = CollisionPublisher(self.create_lifecycle_publisher(
            CollisionObject, "/collision_object",
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)))
        self._create_prompt_subscriptions()
        self._action = QueuedActionServer(self, Reconstruct, "~/reconstruct", self._execute_goal)
        self._state = "inactive"
        self.get_logger().info(
            f"configured: segmentation={self._p('segmentation_backend')} "
            f"reconstruction={self._p('reconstruction_backend')} ({self._backend_state})")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load unloaded backends, subscribe to the camera topics and start the worker."""
        try:
            self._load_backends()
        except Exception as exc:  # noqa: BLE001
            self._set_error("backend", f"cannot load the backends: {exc}")
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._create_camera_subscriptions()
        self._slot.clear()
        self._stop.clear()
        self._state = "active"
        self._activated_at = time.monotonic()
        self._worker = threading.Thread(target=self._work_loop, name="sam3d_worker", daemon=True)
        self._worker.start()
        result = super().on_activate(state)
        self.get_logger().info("active: processing " + (
            "every newest frame" if self._p("continuous") else "~/reconstruct goals only"))
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the worker, unsubscribe, clear markers and unload the backends."""
        self._stop_processing()
        if self._pub_markers is not None and self._marker_ids:
            header = Header(stamp=self.get_clock().now().to_msg())
            self._pub_markers.publish(out.delete_all_markers(RCLPY, header))
            self._marker_ids = []
        self._marker_cache.clear()
        header = Header(stamp=self.get_clock().now().to_msg())
        if self._grasp_out is not None:
            self._grasp_out.clear_markers(header)
        if self._collision is not None:
            # The node stops maintaining them: take our objects out of MoveIt's scene.
            self._collision.remove_all(Header(stamp=header.stamp, frame_id=self._frame_id))
        self._unload_backends()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy what configure created and drop the backends."""
        self._destroy_configured()
        self._state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything (from any state)."""
        self._stop_processing()
        self._unload_backends()
        self._destroy_configured()
        self._state = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Recover to unconfigured after a failed transition."""
        self._stop_processing()
        self._destroy_configured()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def shutdown(self) -> None:
        """Stop the worker and release the backends (for main()'s exit path)."""
        self._stop_processing()
        self._unload_backends()

    # ---------------------------------------------------------------- backends

    def _backend_options(self) -> Dict[str, Dict[str, Any]]:
        """Node parameters as keyword options of each backend, by registry name."""
        return {
            "embedded": {},
            "sam3": {
                "checkpoint": self._p("sam3_checkpoint") or None,
                "device": self._p("device"),
            },
            "sam3d_objects": {"pipeline_config": self._p("sam3d_pipeline_config") or None},
        }

    def _build_engine(self) -> Any:
        from sam3d_ros.backends import make_reconstructor, make_segmenter
        from sam3d_ros.core.engine import Engine

        options = self._backend_options()
        segmentation = self._p("segmentation_backend")
        reconstruction = self._p("reconstruction_backend")
        segmenter = make_segmenter(segmentation, **options.get(segmentation, {}))
        reconstructor = make_reconstructor(reconstruction, **options.get(reconstruction, {}))
        roots = [r for r in self._p("allowed_input_roots") if r]
        input_options = InputOptions(allow_http=self._p("allow_http"),
                                     allowed_roots=roots or None)
        engine = Engine(segmenter, reconstructor, input_options=input_options,
                        grasp_planner=self._build_grasp_planner())
        self._engine = engine
        self._load_backends()
        return engine

    def _gripper(self) -> GripperModel:
        return dataclasses.replace(
            _GRIPPER, max_opening=self._p("gripper_max_opening"),
            finger_length=self._p("gripper_finger_length"),
            finger_width=self._p("gripper_finger_width"),
            finger_thickness=self._p("gripper_finger_thickness"),
            palm_depth=self._p("gripper_palm_depth"), palm_width=self._p("gripper_palm_width"),
            palm_height=self._p("gripper_palm_height"))

    def _build_grasp_planner(self) -> Any:
        from sam3d_ros.backends import make_grasp_planner

        if self._p("grasp_planner") == "none":
            return None
        approach = ros_grasps.parse_approach(self._p("grasp_approach"))
        return make_grasp_planner(self._p("grasp_planner"), gripper=self._gripper(),
                                  top_k=int(self._p("grasp_top_k")),
                                  preferred_approach=approach)

    def _load_backends(self) -> None:
        if self._engine is None:
            return
        for backend in (self._engine.segmenter, self._engine.reconstructor):
            load = getattr(backend, "load", None)
            if callable(load):
                load()
        self._backend_state = "loaded"

    def _unload_backends(self) -> None:
        if self._engine is None:
            return
        with self._engine_lock:
            for backend in (self._engine.segmenter, self._engine.reconstructor):
                unload = getattr(backend, "unload", None)
                if callable(unload):
                    try:
                        unload()
                    except Exception as exc:  # noqa: BLE001
                        self.get_logger().warning(f"unload of {backend.name} failed: {exc}")
        self._backend_state = "unloaded"

    # ---------------------------------------------------------------- subscriptions

    def _camera_qos(self) -> QoSProfile:
        reliability = (ReliabilityPolicy.RELIABLE
                       if self._p("camera_qos_reliability") == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        return QoSProfile(depth=int(self._p("camera_qos_depth")), reliability=reliability,
                          history=HistoryPolicy.KEEP_LAST,
                          durability=DurabilityPolicy.VOLATILE)

    def _create_camera_subscriptions(self) -> None:
        qos = self._camera_qos()
        slop = float(self._p("sync_slop_s"))
        self._sync = ApproxTimeSync(
            3, slop, self._on_synced, self._on_unmatched,
            expire_s=max(0.5, 5.0 * slop), names=("image", "depth", "camera_info"),
            consume=(True, True, False))
        self._camera_subs = []
        for index, (topic, msg_type) in enumerate((
            self._transport_topic("image", self._p("image_transport")),
            self._transport_topic("depth", self._p("depth_transport")),
            ("camera_info", CameraInfo),
        )):
            resolved = self.resolve_topic_name(topic)
            events = SubscriptionEventCallbacks(
                incompatible_qos=lambda info, t=resolved: self._on_incompatible_qos(t, info),
                message_lost=self._on_message_lost)
            sub = self.create_subscription(
                msg_type, topic, lambda msg, i=index: self._on_camera(i, msg), qos,
                callback_group=self._cb_group, event_callbacks=events)
            self._camera_subs.append(sub)
        names = ", ".join(s.topic_name for s in self._camera_subs)
        self.get_logger().info(
            f"camera subscriptions {names} (image_transport={self._p('image_transport')}, "
            f"depth_transport={self._p('depth_transport')}): "
            f"reliability={self._p('camera_qos_reliability')} "
            f"depth={qos.depth} (parameter camera_qos_reliability); sync_slop_s={slop:g}")
        self._check_publisher_qos()

    def _transport_topic(self, base: str, transport: str) -> Tuple[str, Any]:
        """Topic and type of one camera stream: ``base`` (raw) or ``<base>/<transport>``.

        Like image_transport, the base name is resolved (namespace, remappings such as
        ``image:=/camera/color/image_raw``) before the transport's suffix is appended, so one
        remap serves every transport.
        """
        if transport == "raw":
            return base, Image
        return f"{self.resolve_topic_name(base)}/{transport}", CompressedImage

    def _check_publisher_qos(self) -> None:
        """Warn when a publisher on a camera topic cannot reach our subscription."""
        want_reliable = self._p("camera_qos_reliability") == "reliable"
        for sub in self._camera_subs:
            try:
                infos = self.get_publishers_info_by_topic(sub.topic_name)
            except Exception:  # noqa: BLE001
                continue
            for info in infos:
                if want_reliable and info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT:
                    self._on_incompatible_qos(sub.topic_name, None, info.node_name)

    def _on_incompatible_qos(self, topic: str, info: Any, publisher: str = "") -> None:
        text = (f"QoS mismatch on {topic}: a publisher{' ' + publisher if publisher else ''} "
                f"offers best_effort but camera_qos_reliability="
                f"{self._p('camera_qos_reliability')}; no messages will arrive. Set "
                "camera_qos_reliability:=best_effort")
        if info is not None:
            policy = str(getattr(info, "last_policy_kind", "")).rsplit("POLICY_", 1)[-1].lower()
            text = (f"QoS mismatch on {topic}: incompatible publisher ({policy}); we "
                    f"subscribe with reliability={self._p('camera_qos_reliability')}, "
                    f"depth={self._p('camera_qos_depth')}. Set camera_qos_reliability to "
                    "match the publisher")
        self._qos_problem = text
        self._warn_throttled(f"qos:{topic}", text)

    def _on_message_lost(self, info: Any) -> None:
        with self._lock:
            self._stats["lost"] += int(getattr(info, "total_count_change", 0))

    def _destroy_camera_subscriptions(self) -> None:
        for sub in self._camera_subs:
            self.destroy_subscription(sub)
        self._camera_subs = []
        self._sync = None

    def _on_camera(self, index: int, msg: Any) -> None:
        sync = self._sync
        if sync is None or self._state != "active":
            return
        if index == 0:
            with self._lock:
                self._stats["images"] += 1
                self._image_rate.tick()
        sync.add(index, stamp_seconds(msg.header), msg)

    def _on_synced(self, msgs: List[Any]) -> None:
        cam = CameraMessages(msgs[0], msgs[1], msgs[2])
        with self._lock:
            self._latest = cam
            self._stats["synced"] += 1
            self._last_synced = time.monotonic()
        if self._p("continuous"):
            self._slot.put(cam)

    def _on_unmatched(self, topic: int, reason: str) -> None:
        names = ("image", "depth", "camera_info")
        field_name = names[topic] if 0 <= topic < 3 else "sync"
        sub = self._camera_subs[topic] if topic < len(self._camera_subs) else None
        where = f" (topic {sub.topic_name})" if sub is not None else ""
        self._input_error(InputError(field_name, reason + where))

    def _create_prompt_subscriptions(self) -> None:
        """Reliable prompt subscriptions, transient-local and volatile.

        A transient-local subscription gets a latched prompt published before the node started
        but is incompatible with a volatile (default QoS) publisher; the volatile one hears
        those. A transient-local publisher reaches both: :class:`FirstDelivery` applies its
        prompt once. Only a best-effort publisher is left out, and is warned about.
        """
        for durability in (DurabilityPolicy.TRANSIENT_LOCAL, DurabilityPolicy.VOLATILE):
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=durability)
            events = None
            if durability == DurabilityPolicy.VOLATILE:
                events = SubscriptionEventCallbacks(incompatible_qos=self._on_prompt_qos)
            self._sub_prompt.append(self.create_subscription(
                Prompt, "prompt", self._on_prompt, qos, callback_group=self._cb_group,
                event_callbacks=events))

    def _on_prompt_qos(self, info: Any) -> None:
        topic = self._sub_prompt[0].topic_name if self._sub_prompt else "prompt"
        publishers = [f"{i.node_namespace.rstrip('/')}/{i.node_name}"
                      for i in self.get_publishers_info_by_topic(topic)
                      if i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT]
        self._warn_throttled(
            f"qos:{topic}", f"QoS mismatch on {topic}: publisher {', '.join(publishers) or '?'} "
            "is best_effort; prompts are subscribed reliable and its prompts will not arrive. "
            "Publish prompts reliable")

    def _on_prompt(self, msg: Prompt, info: Any) -> None:
        if not self._prompt_seen.first(info):
            return  # the same publication through the other prompt subscription
        size = self._last_size
        try:
            query_from_prompt(msg, *(size or (None, None)))
        except InputError as exc:
            kept = "keeping the previous prompt" if self._prompt is not None else "no prompt set"
            self._input_error(InputError(exc.field, f"{exc.reason}; prompt rejected, {kept}"))
            return
        with self._lock:
            self._prompt = msg
        if self._tracker is not None:
            with self._tracker_lock:
                self._tracker.reset()
        self.get_logger().info(
            f"prompt: text={msg.text!r} points={len(msg.points)} boxes={len(msg.boxes)} "
            f"masks={len(msg.masks)}")

    # ---------------------------------------------------------------- processing

    def _stop_processing(self) -> None:
        self._stop.set()
        self._slot.clear()
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=60.0)
        self._destroy_camera_subscriptions()

    def _work_loop(self) -> None:
        last_start = 0.0
        while not self._stop.is_set():
            rate = float(self._p("max_rate_hz"))
            if rate > 0.0:
                wait = last_start + 1.0 / rate - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
            cam = self._slot.take(timeout=0.1)
            if cam is None or self._stop.is_set():
                continue
            if not self._p("continuous"):
                continue
            last_start = time.monotonic()
            self._process_camera(cam)

    def _seed(self, *candidates: int) -> int:
        for value in candidates:
            if value is not None and 0 <= int(value) <= MAX_SEED:
                return int(value)
        return int(self._p("default_seed"))

    def _process_camera(self, msgs: CameraMessages) -> None:
        t0 = time.monotonic()
        timings: Dict[str, float] = {}
        query: Optional[SegmentationQuery] = None
        try:
            cam = build_camera_frame(msgs.image, msgs.depth, msgs.camera_info,
                                     warn=self._warn_once)
            self._last_size = (cam.frame.width, cam.frame.height)
            timings["load"] = time.monotonic() - t0
            with self._lock:
                prompt = self._prompt
            query, explicit = query_from_prompt(prompt, cam.frame.width, cam.frame.height)
            seed = self._seed(prompt.seed if prompt is not None else None)
            with self._engine_lock:
                if self._engine is None:
                    return
                # Nothing found is an empty result (an empty table), not a failed frame.
                res = self._engine.process(cam.frame, query, seed, timings=timings,
                                           allow_empty=True)
            objects = self._assign_ids(res.objects, res.masks, explicit)
            result = None
            if self._p("write_artifacts") and objects:
                request = {"source": "ros", "frame_id": cam.header.frame_id,
                           "stamp": stamp_seconds(cam.header), "seed": seed,
                           **prompt_request(prompt)}
                t_export = time.monotonic()
                result = self._write_run("frame", request, cam.frame, objects, res.grasps)
                timings["export"] = time.monotonic() - t_export
            self._publish(cam, objects, timings, result, time.monotonic() - msgs.received,
                          res.grasps)
            with self._lock:
                self._stats["processed"] += 1
                self._processed_rate.tick()
                self._last_ok = time.monotonic()
                self._frame_failed = False
                self._stats["objects_last_frame"] = len(objects)
        except InputError as exc:
            self._input_error(self._ros_field(exc, query_kind=_kind(query)))
        except Sam3dError as exc:
            self._set_error("backend", str(exc))
            self._warn_throttled("backend", f"processing failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bad frame must never take the node down
            self._set_error("internal", f"{exc.__class__.__name__}: {exc}")
            self.get_logger().error(f"processing failed: {traceback.format_exc()}")

    def _ros_field(self, exc: InputError, query_kind: str = "", prefix: str = "",
                   uris: bool = False) -> InputError:
        """Name the ROS field (topic or goal field) behind a core error's hosted field name."""
        name = exc.field
        if uris:  # a goal with image_uri / pointmap_uri / mask_uris
            for hosted, ros in (("image_url", "image_uri"), ("pointmap_url", "pointmap_uri"),
                                ("mask_urls", "mask_uris")):
                if name.startswith(hosted):
                    return InputError(ros + name[len(hosted):], exc.reason)
        if name.startswith("mask_urls"):
            name = name.replace("mask_urls", f"{prefix}prompt.masks" if query_kind == "masks"
                                else f"{prefix}objects", 1)
        elif name.startswith(("box_prompts", "point_prompts")):
            name = rename_field(name, f"{prefix}prompt")
        elif name == "prompt":
            name = f"{prefix}prompt.text"
        elif name == "image_url":
            name = f"{prefix}image"
        elif name == "pointmap_url":
            name = f"{prefix}depth"
        return InputError(name, exc.reason)

    def _assign_ids(
        self, objects: Sequence[ObjectReconstruction], masks: Sequence[Any],
        explicit: Mapping[int, int],
    ) -> List[ObjectReconstruction]:
        with self._tracker_lock:
            relabelled = relabel(self._tracker, objects, explicit)
            self._tracked_ids = ([o.object_id for o in relabelled] if self._tracker is None
                                 else [t.object_id for t in self._tracker.tracks])
        return relabelled

    def _runs_dir(self) -> Path:
        configured = self._p("output_dir")
        if configured:
            return Path(os.path.expanduser(configured))
        ros_home = os.environ.get("ROS_HOME") or os.path.join(os.path.expanduser("~"), ".ros")
        return Path(ros_home) / "sam3d_runs"

    def _write_run(self, kind: str, request: Dict[str, Any], frame: Frame,
                   objects: Sequence[ObjectReconstruction],
                   grasps: Optional[Sequence[Sequence[Any]]] = None) -> Dict[str, Any]:
        from sam3d_ros.core.export import write_run

        base = self._runs_dir()
        with self._lock:
            self._run_counter += 1
            counter = self._run_counter
        now = time.time()
        name = (time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
                + f"_{int((now % 1) * 1e6):06d}_{counter}")
        result = write_run(base / f"{kind}_{name}", request, frame, objects, grasps=grasps)
        prune_runs(base, int(self._p("max_runs_kept")))
        return result

    # ---------------------------------------------------------------- publishing

    def _publish(self, cam: CameraFrame, objects: Sequence[ObjectReconstruction],
                 timings: Dict[str, float], result: Optional[Dict[str, Any]],
                 total_s: float, grasps: Optional[Sequence[Sequence[Any]]] = None) -> None:
        header = cam.header
        self._frame_id = header.frame_id
        if not header.frame_id:
            self._warn_once("empty_frame_id",
                            "the image header has an empty frame_id; outputs and TF need one")
        if self._p("publish_tf") and self._pub_tf is not None and objects:
            # TF has no delete: frames of objects gone are simply no longer published.
            self._pub_tf.publish(out.tf_msg(RCLPY, header, objects, self._p("tf_prefix")))
            now = self.get_clock().now().nanoseconds * 1e-9
            self._latency.add("frame_to_tf", now - stamp_seconds(header))
        self._latency.add("receive_to_publish", total_s)
        for stage, seconds in timings.items():
            self._latency.add(stage, seconds)
        if _has_subscribers(self._pub_detections):
            self._pub_detections.publish(out.detections_msg(RCLPY, header, objects))
        if _has_subscribers(self._pub_objects):
            self._pub_objects.publish(out.objects_array_msg(
                RCLPY, header, objects, timings, self._engine.segmenter.name,
                self._engine.reconstructor.name, result, cam.frame.camera_pose, total_s))
        if self._pub_markers is not None:
            with self._lock:
                previous, self._marker_ids = self._marker_ids, [o.object_id for o in objects]
            if _has_subscribers(self._pub_markers):
                t_markers = time.monotonic()
                self._pub_markers.publish(out.markers_msg(
                    RCLPY, header, objects, previous, int(self._p("marker_max_triangles")),
                    cache=self._marker_cache))
                self._latency.add("markers", time.monotonic() - t_markers)
        if _has_subscribers(self._pub_points):
            self._pub_points.publish(
                out.points_msg(RCLPY, header, cam.frame.points, cam.frame.rgb, objects))
        if _has_subscribers(self._pub_debug):
            from sam3d_ros.ros.conversions import numpy_to_image

            img = out.debug_image(cam.frame.rgb, objects, cam.frame.intrinsics)
            self._pub_debug.publish(numpy_to_image(img, "rgb8", header))
        self._publish_grasps(cam, objects, grasps)

    def _publish_grasps(self, cam: CameraFrame, objects: Sequence[ObjectReconstruction],
                        grasps: Optional[Sequence[Sequence[Any]]]) -> None:
        """~/grasps, ~/grasp_poses, ~/grasp_markers and /collision_object (last: the heaviest)."""
        tcp = float(self._p("tcp_offset_m"))
        if grasps is not None and self._grasp_out is not None and self._p("publish_grasps"):
            self._grasp_out.publish(cam.header, objects, grasps, self._engine_gripper(), tcp,
                                    int(self._p("grasp_marker_max")))
        if self._collision is None:
            return
        if not self._p("publish_collision_objects"):
            self._collision.remove_all(cam.header)  # switched off: take ours out of MoveIt
            return
        with self._tracker_lock:
            tracked = list(self._tracked_ids)
        options = SceneOptions(
            prefix=self._p("tf_prefix"), max_triangles=int(self._p("collision_max_triangles")),
            subframes=int(self._p("collision_grasp_subframes")), tcp_offset=tcp,
            support_plane=bool(self._p("collision_support_plane")))

        def plane() -> Any:
            from sam3d_ros.backends.grasp.analytic import AnalyticGraspPlanner

            return AnalyticGraspPlanner.fit_plane(cam.frame, objects)

        self._collision.publish(cam.header, objects, grasps, tracked, options, plane)

    def _engine_gripper(self) -> GripperModel:
        planner = self._engine.grasp_planner if self._engine is not None else None
        return getattr(planner, "gripper", None) or self._gripper()

    # ---------------------------------------------------------------- action

    def _execute_goal(self, goal: Any, progress: Callable[[str, float, str], None],
                      cancelled: Callable[[], bool]) -> Any:
        result = Reconstruct.Result()
        if self._state != "active":
            result.error = f"node: not active (state {self._state}); activate it first"
            return result
        timings: Dict[str, float] = {}
        query_kind = ""
        try:
            progress("load", 0.0, "reading inputs")
            t0 = time.monotonic()
            seed = self._seed(goal.seed if goal.seed >= 0 else None,
                              goal.prompt.seed if goal.prompt.seed >= 0 else None)
            cam: Optional[CameraFrame] = None
            explicit: Dict[int, int] = {}
            if goal.image_uri:
                parsed = parse_request(self._goal_request(goal, seed), None,
                                       self._engine.input_options)
                for warning in parsed.warnings:
                    progress("load", 0.05, f"warning: {warning}")
                frame, query = parsed.frame, parsed.query
                request = parsed.request
            else:
                if goal.use_latest_frame:
                    with self._lock:
                        latest = self._latest
                    if latest is None:
                        raise InputError(
                            "image", "no synchronised camera frame received yet (image, depth "
                            "and camera_info within sync_slop_s); or set use_latest_frame "
                            "false and give image/depth/camera_info")
                    cam = build_camera_frame(latest.image, latest.depth, latest.camera_info,
                                             warn=self._warn_once)
                else:
                    depth = goal.depth if goal.depth.width and goal.depth.height else None
                    cam = build_camera_frame(goal.image, depth, goal.camera_info, "goal.",
                                             warn=self._warn_once)
                frame = cam.frame
                query, explicit = query_from_prompt(goal.prompt, frame.width, frame.height,
                                                    "goal.prompt")
                request = {"source": "ros_goal", "frame_id": cam.header.frame_id,
                           "stamp": stamp_seconds(cam.header), "seed": seed,
                           **prompt_request(goal.prompt)}
            query_kind = _kind(query)
            timings["load"] = time.monotonic() - t0
            progress("load", 0.1, f"inputs ready ({frame.width}x{frame.height})")
            with self._engine_lock:
                res = self._engine.process(frame, query, seed, progress, cancelled, timings)
            objects = (self._assign_ids(res.objects, res.masks, explicit) if cam is not None
                       else list(res.objects))
            if cancelled():
                raise Cancelled("cancelled before export")
            hosted = None
            if goal.write_artifacts:
                progress("export", 0.9, "writing artifacts")
                t_export = time.monotonic()
                hosted = self._write_run("goal", request, frame, objects, res.grasps)
                timings["export"] = time.monotonic() - t_export
                progress("export", 1.0, f"export done in {timings['export']:.2f} s")
            header = cam.header if cam is not None else Header(
                frame_id=goal.camera_info.header.frame_id or goal.image.header.frame_id,
                stamp=self.get_clock().now().to_msg())
            total = time.monotonic() - t0
            result.objects = out.objects_array_msg(
                RCLPY, header, objects, timings, self._engine.segmenter.name,
                self._engine.reconstructor.name, hosted, frame.camera_pose, total)
            result.artifacts = out.artifacts_msg(RCLPY, hosted)
            if res.grasps is not None:
                result.grasps = ros_grasps.grasp_array_msg(RCLPY, header, objects, res.grasps,
                                                           float(self._p("tcp_offset_m")))
            else:
                result.grasps.header = header
            if cam is not None:
                self._publish(cam, objects, timings, hosted, total, res.grasps)
            with self._lock:
                self._stats["goals"] += 1
            progress("done", 1.0, f"{len(objects)} object(s) in {total:.2f} s")
            return result
        except Cancelled:
            raise
        except NoObjectFound as exc:
            # A goal asks for objects: it fails, but an empty table is not a node fault.
            err = self._ros_field(exc, query_kind, "goal.", uris=bool(goal.image_uri))
            self.get_logger().info(f"goal found nothing: {err.field}: {err.reason}")
            result.error = f"{err.field}: {err.reason}"
        except InputError as exc:
            err = self._ros_field(exc, query_kind, "goal.", uris=bool(goal.image_uri))
            self._input_error(err)
            result.error = f"{err.field}: {err.reason}"
        except Sam3dError as exc:
            self._set_error("backend", str(exc))
            result.error = f"backend: {exc}"
        return result

    def _goal_request(self, goal: Any, seed: int) -> Dict[str, Any]:
        if goal.prompt.masks:
            raise InputError("prompt.masks", "with image_uri give masks as mask_uris")
        request: Dict[str, Any] = {"image_url": goal.image_uri, "seed": seed,
                                   **prompt_request(goal.prompt)}
        request.pop("mask_count", None)
        for item in request.get("point_prompts", []) + request.get("box_prompts", []):
            item.setdefault("object_id", None)
        if goal.pointmap_uri:
            request["pointmap_url"] = goal.pointmap_uri
        if goal.mask_uris:
            request["mask_urls"] = list(goal.mask_uris)
        info = goal.camera_info
        if info.width and info.height and any(info.k):
            from sam3d_ros.core.image_decoding import intrinsics_from_camera_info

            k = intrinsics_from_camera_info(info, "camera_info")
            request["intrinsics"] = {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy}
        return request

    # ---------------------------------------------------------------- errors & diagnostics

    def _reset_stats(self) -> None:
        self._stats = {"images": 0, "synced": 0, "processed": 0, "failed": 0, "goals": 0,
                       "lost": 0, "objects_last_frame": 0}
        self._image_rate = out.RateMeter()
        self._processed_rate = out.RateMeter()
        self._latency = out.LatencyStats()
        self._last_error = ""
        self._last_error_field = ""
        self._last_error_time = 0.0
        self._last_ok = 0.0
        self._last_synced = 0.0
        self._frame_failed = False
        self._qos_problem = ""
        self._run_counter = 0
        self._activated_at = time.monotonic()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned_once:
            self._warned_once.add(key)
            self.get_logger().warning(message)

    def _warn_throttled(self, key: str, message: str) -> None:
        now = time.monotonic()
        period = float(self._p("warn_throttle_s"))
        if now - self._warn_times.get(key, -1e9) >= period:
            self._warn_times[key] = now
            self.get_logger().warning(message)

    def _clear_error(self) -> None:
        with self._lock:
            self._last_error = ""
            self._last_error_field = ""
            self._frame_failed = False

    def _set_diagnostics_period(self, period: float) -> None:
        if period != self._diag_period:
            self.destroy_timer(self._diag_timer)
            self._diag_period = period
            self._diag_timer = self.create_timer(period, self._publish_diagnostics,
                                                 callback_group=self._timer_group)

    def _set_error(self, field_name: str, reason: str) -> None:
        with self._lock:
            self._last_error = f"{field_name}: {reason}"
            self._last_error_field = field_name
            self._last_error_time = time.monotonic()
            self._stats["failed"] += 1
            self._frame_failed = True
        self._publish_diagnostics()

    def _input_error(self, exc: InputError) -> None:
        # Throttled per field and kind of reason (numbers in the reason do not count).
        key = f"input:{exc.field}:{re.sub(r'[0-9.]+', '#', exc.reason)}"
        self._warn_throttled(key, f"bad input: {exc.field}: {exc.reason}")
        self._set_error(exc.field, exc.reason)

    def _publish_diagnostics(self) -> None:
        if self._pub_diag is None:
            return
        now = time.monotonic()
        with self._lock:
            stats = dict(self._stats)
            last_error, error_field = self._last_error, self._last_error_field
            error_age = now - self._last_error_time if self._last_error_time else None
            failed_last = self._frame_failed
            last_synced = self._last_synced
        drops = self._slot.drops
        unmatched = self._sync.unmatched if self._sync is not None else 0
        level, message = "OK", self._state
        if self._state == "active":
            idle = now - max(last_synced, self._activated_at)
            if self._qos_problem:
                level, message = "WARN", self._qos_problem
            elif self._p("continuous") and idle > float(self._p("input_timeout_s")):
                level, message = "WARN", f"no synchronised camera frame for {idle:.1f} s"
            else:
                message = "processing"
        if failed_last and last_error:
            level, message = "ERROR", last_error
        values: Dict[str, Any] = {
            "state": self._state,
            "segmentation_backend": self._p("segmentation_backend"),
            "reconstruction_backend": self._p("reconstruction_backend"),
            "device": self._p("device"),
            "backend_state": self._backend_state,
            "camera_qos_reliability": self._p("camera_qos_reliability"),
            "image_transport": self._p("image_transport"),
            "depth_transport": self._p("depth_transport"),
            "input_rate_hz": self._image_rate.rate(now),
            "processed_rate_hz": self._processed_rate.rate(now),
            "frames_received": stats["images"],
            "frames_synchronised": stats["synced"],
            "frames_processed": stats["processed"],
            "objects_last_frame": stats["objects_last_frame"],
            "frames_dropped": drops,
            "frames_unmatched": unmatched,
            "messages_lost_in_transport": stats["lost"],
            "failures": stats["failed"],
            "goals_done": stats["goals"],
            "goals_queued": self._action.queue_length if self._action is not None else 0,
        }
        for name, (_last, p50, p95) in sorted(self._latency.summary().items()):
            values[f"latency_{name}_ms_p50"] = 1000.0 * p50
            values[f"latency_{name}_ms_p95"] = 1000.0 * p95
        values["last_error"] = last_error
        values["last_error_field"] = error_field
        values["last_error_age_s"] = "" if error_age is None else f"{error_age:.1f}"
        msg = out.diagnostics_msg(RCLPY, self.get_clock().now().to_msg(),
                                  f"{self.get_name()}: pipeline",
                                  self.get_fully_qualified_name(), level, message, values)
        with self._diag_lock:
            self._pub_diag.publish(msg)

    def _destroy_configured(self) -> None:
        for attr in ("_pub_objects", "_pub_detections", "_pub_markers", "_pub_points",
                     "_pub_debug", "_pub_tf"):
            pub = getattr(self, attr)
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
                setattr(self, attr, None)
        if self._grasp_out is not None:
            for pub in self._grasp_out.publishers:
                self.destroy_lifecycle_publisher(pub)
            self._grasp_out = None
        if self._collision is not None:
            self.destroy_lifecycle_publisher(self._collision.publisher)
            self._collision = None
        for sub in self._sub_prompt:
            self.destroy_subscription(sub)
        self._sub_prompt = []
        if self._action is not None:
            self._action.destroy()
            self._action = None
        self._engine = None
        self._tracker = None
        self._backend_state = "not loaded"


def _kind(query: Optional[SegmentationQuery]) -> str:
    if query is None:
        return ""
    if query.masks:
        return "masks"
    if query.objects:
        return "prompts"
    return "text" if query.text else "auto"


def _has_subscribers(pub: Any) -> bool:
    return pub is not None and pub.get_subscription_count() > 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run the node (``ros2 run sam3d_ros sam3d_node``); returns the exit status."""
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = Sam3dNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    status = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: configure failed; staying unconfigured")
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: activate failed; staying inactive")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return status


__all__ = [
    "ApproxTimeSync",
    "CameraIntrinsics",
    "LatestSlot",
    "NODE_NAME",
    "PARAMS",
    "Sam3dNode",
    "main",
    "prune_runs",
]
