"""The node's parameters: one table, its descriptors and the checks of a runtime set.

Each :class:`ParamSpec` gives the name, default, description, range or choices and when a change
takes effect (``when``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.parameter import Parameter

from sam3d_ros.backends.grasp.analytic import GripperModel
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.grasp_messages import parse_approach
from sam3d_ros.core.inputs import DEFAULT_MAX_OBJECTS, DEFAULT_SEED

BIG = 2**31 - 1
_GRIPPER = GripperModel()  # defaults of the gripper parameters (a Franka Hand)


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
    ParamSpec("max_objects", DEFAULT_MAX_OBJECTS, "most objects one frame or goal may have: "
              "more prompted "
              "objects or masks are refused (the field named), automatic or text segmentation "
              "keeps the best-scoring ones", range=(1, 10000), when="configure"),
    ParamSpec("cpu_workers", 0, "threads on which the embedded backends and the analytic grasp "
              "planner work on a frame's objects at once; 0 = the cores the node may use, at "
              "most 4; 1 = one object at a time (the results are the same whatever the count)",
              range=(0, 256), when="configure"),
    ParamSpec("default_seed", DEFAULT_SEED, "seed when neither goal nor prompt gives one",
              range=(0, BIG)),
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
    ParamSpec("grasp_max_samples", 256, "first contacts the planner draws per object at most, "
              "in rounds of 64 until grasp_top_k grasps pass its checks (64 = one round: "
              "faster, more objects without a grasp)", range=(64, 100000), when="configure"),
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
    ParamSpec("diagnostics_window_s", 10.0, "/diagnostics levels come from the failures of the "
              "last this many seconds (a failure older than this no longer counts)",
              range=(0.5, 3600.0)),
    ParamSpec("stop_timeout_s", 30.0, "deactivate and shutdown wait at most this long for the "
              "frame being processed (it is cancelled at its next stage boundary)",
              range=(0.1, 3600.0)),
    ParamSpec("input_timeout_s", 2.0, "no synchronised frame for this long while active gives "
              "a diagnostics warning", range=(0.1, 3600.0)),
    ParamSpec("warn_throttle_s", 2.0, "a warning about the same input field is logged at most "
              "once per this many seconds", range=(0.0, 3600.0)),
    ParamSpec("max_queued_goals", 16, "~/reconstruct goals waiting or running at most; more "
              "are rejected (and logged with the reason)", range=(1, 1000), when="configure"),
    ParamSpec("goal_result_timeout_s", 60.0, "a finished goal's result is kept this long for "
              "clients that ask for it late", range=(1.0, 86400.0), when="configure"),
    ParamSpec("allow_http", False, "goals may read image_uri/pointmap_uri/mask_uris over "
              "http(s)", when="configure"),
    ParamSpec("allowed_input_roots", [""], "goal URIs must resolve inside one of these "
              "directories; [''] = anywhere", when="configure"),
)


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor of one parameter (description with ``when``, range, choices)."""
    desc = spec.description
    if spec.choices:
        desc += f" ({'|'.join(spec.choices)})"
    desc += f" [applied at {spec.when}]" if spec.when != "runtime" else " [runtime]"
    # Read at start-up only: a later set could never take effect.
    d = ParameterDescriptor(description=desc, read_only=spec.when == "start-up")
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


SPECS = {spec.name: spec for spec in PARAMS}


# Lifecycle states in which a parameter may be set, by when it takes effect.
_SETTABLE = {"configure": ("unconfigured",), "activate": ("unconfigured", "inactive")}
_HOW = {"configure": "cleanup, set it, configure again",
        "activate": "deactivate, set it, activate again"}


def check_set(params: List[Parameter], state: str) -> SetParametersResult:
    """Accept or refuse a parameter set in lifecycle ``state``, with the reason.

    A parameter applied at configure can be set only while unconfigured, one applied at
    activate only while not active: a set that would not take effect is refused, not ignored.
    Values are checked against their choices (and ``grasp_approach`` parsed).
    """
    for param in params:
        spec = SPECS.get(param.name)
        if spec is not None and spec.when in _SETTABLE and state not in _SETTABLE[spec.when]:
            return SetParametersResult(
                successful=False,
                reason=f"{param.name} is applied at {spec.when} and the node is {state}: "
                f"{_HOW[spec.when]}")
        if param.name == "grasp_approach":
            try:
                parse_approach(param.value)
            except InputError as exc:
                return SetParametersResult(successful=False, reason=f"{exc.field}: {exc.reason}")
        if spec is None or not spec.choices:
            continue
        if param.value not in spec.choices:
            return SetParametersResult(
                successful=False,
                reason=f"{param.name} must be one of {list(spec.choices)}, got {param.value!r}",
            )
    return SetParametersResult(successful=True)


def gripper(get: Callable[[str], Any]) -> GripperModel:
    """The gripper the ``gripper_*`` parameters describe (``get(name)`` reads one)."""
    return dataclasses.replace(
        _GRIPPER, max_opening=get("gripper_max_opening"),
        finger_length=get("gripper_finger_length"), finger_width=get("gripper_finger_width"),
        finger_thickness=get("gripper_finger_thickness"), palm_depth=get("gripper_palm_depth"),
        palm_width=get("gripper_palm_width"), palm_height=get("gripper_palm_height"))
