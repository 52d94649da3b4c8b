"""The ``sam3d`` lifecycle node: RGB-D frames and prompts in; objects, TF, markers out.

This module wires the node's parts together; each part is a module of its own:

* :mod:`~sam3d_ros.ros.parameters`: the parameter table, descriptors, checks of runtime sets;
* :mod:`~sam3d_ros.ros.camera_input`: camera subscriptions, approximate-time pairing
  (:mod:`sam3d_ros.core.frame_pairing`); decoding is :mod:`sam3d_ros.core.camera_frame`;
* :mod:`~sam3d_ros.ros.prompts`: the ``prompt`` subscriptions; the Prompt ↔ request
  translation is :mod:`sam3d_ros.core.prompt_messages`;
* :mod:`~sam3d_ros.ros.frame_worker` and :mod:`~sam3d_ros.ros.frames`: the worker that processes
  the newest frame, and what it does with one;
* :mod:`~sam3d_ros.ros.goals`: ``~/reconstruct`` goals, queued first-in-first-out
  (:class:`~sam3d_ros.ros.action_queue.QueuedActionServer`), sharing the engine with the worker;
* :mod:`~sam3d_ros.ros.engine_host`: the engine and its backends' load state;
* :mod:`~sam3d_ros.ros.publishers`, :mod:`~sam3d_ros.ros.object_ids`: outputs and object ids;
* :mod:`~sam3d_ros.ros.stats`, :mod:`~sam3d_ros.ros.diagnostics`: statistics, ``/diagnostics``
  and the logging of failures.

Segmentation and reconstruction are the ROS-free :class:`~sam3d_ros.core.engine.Engine`; the
output messages are built by the ROS-free builders of :mod:`sam3d_ros.core.output_messages` with
the rclpy message kit (:data:`~sam3d_ros.ros.message_kit.RCLPY`).

Lifecycle (``autostart`` configures and activates at start-up):

* configure: read parameters, build and load the backends, create publishers, the prompt
  subscription and the action server;
* activate: subscribe to the camera topics, start the worker;
* deactivate: stop the worker, unsubscribe, clear markers, unload the backends (GPU memory);
* cleanup / shutdown: destroy everything configure created.

Parameters and topics are documented in ``docs/node.md``.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from sam3d_ros.action import Reconstruct
from sam3d_ros.core import output_messages as out
from sam3d_ros.core.camera_frame import CameraFrame
from sam3d_ros.core.inputs import MAX_SEED
from sam3d_ros.core.run_dirs import prune_runs
from sam3d_ros.core.types import Frame, ObjectReconstruction
from sam3d_ros.msg import Prompt
from sam3d_ros.ros import parameters
from sam3d_ros.ros.action_queue import QueuedActionServer
from sam3d_ros.ros.camera_input import CameraInput
from sam3d_ros.ros.diagnostics import Reporter, pipeline_status
from sam3d_ros.ros.engine_host import EngineHost
from sam3d_ros.ros.frame_worker import FrameWorker
from sam3d_ros.ros.frames import process_in_turn
from sam3d_ros.ros.goals import execute_goal
from sam3d_ros.ros.message_kit import RCLPY
from sam3d_ros.ros.object_ids import ObjectIds
from sam3d_ros.ros.parameters import PARAMS
from sam3d_ros.ros.prompts import PromptInput
from sam3d_ros.ros.publishers import ResultPublishers
from sam3d_ros.ros.stats import PipelineStats

NODE_NAME = "sam3d"


class Sam3dNode(LifecycleNode):
    """Lifecycle node ``sam3d`` (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, parameters.descriptor(spec))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.state = "unconfigured"
        self.last_size: Optional[tuple] = None
        self.stats = PipelineStats()
        self.report = Reporter(self.get_logger(), self.stats,
                               lambda: self.param("warn_throttle_s"), self._publish_diagnostics)
        self.engine_host = EngineHost(self.param, self.get_logger())
        self.ids = ObjectIds()
        self.outputs = ResultPublishers(self, self.param, self.stats, self.report.warn_once)
        self.camera = CameraInput(self, self.param, self.stats, self._on_frame,
                                  self.report.input_error, self.report.warn_throttled, group)
        self.prompts = PromptInput(self, lambda: self.last_size, self.report.input_error,
                                   self._on_prompt, self.report.warn_throttled, group)
        self._worker = FrameWorker(lambda msgs: process_in_turn(self, msgs),
                                   lambda: self.param("max_rate_hz"),
                                   lambda: self.param("continuous"))
        self._action: Optional[QueuedActionServer] = None
        self._runs = itertools.count(1)
        self._diag_lock = threading.Lock()
        # Diagnostics exist from construction: a configure that fails is reported too.
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_period = float(self.param("diagnostics_period_s"))
        self._diag_timer = self.create_timer(self._diag_period, self._publish_diagnostics,
                                             callback_group=self._timer_group)

    # ---------------------------------------------------------------- parameters

    def param(self, name: str) -> Any:
        """The value of parameter ``name``."""
        return self.get_parameter(name).value

    def _on_set_parameters(self, params: List[Parameter]) -> SetParametersResult:
        return parameters.check_set(params)

    def seed(self, *candidates: Optional[int]) -> int:
        """The first candidate that is a valid seed, else ``default_seed``."""
        for value in candidates:
            if value is not None and 0 <= int(value) <= MAX_SEED:
                return int(value)
        return int(self.param("default_seed"))

    # ---------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read parameters, build and load the backends, create publishers and the action."""
        self.stats.clear_error()
        self._set_diagnostics_period(float(self.param("diagnostics_period_s")))
        try:
            self.engine_host.build()
        except Exception as exc:  # noqa: BLE001 - any backend failure fails the transition
            self.engine_host.engine = None
            self.engine_host.state = "failed to load"
            self.report.error("backend", f"cannot build the backends: {exc}")
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.ids.configure(self.param("track_gate_m"), self.param("track_max_age"))
        self.outputs.create()
        self.prompts.subscribe()
        self._action = QueuedActionServer(
            self, Reconstruct, "~/reconstruct",
            lambda goal, progress, cancelled: execute_goal(self, goal, progress, cancelled),
            max_queued=int(self.param("max_queued_goals")),
            result_timeout_s=float(self.param("goal_result_timeout_s")),
            gate=self.engine_host.gate)
        self.state = "inactive"
        self.get_logger().info(
            f"configured: segmentation={self.param('segmentation_backend')} "
            f"reconstruction={self.param('reconstruction_backend')} ({self.engine_host.state})")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load unloaded backends, subscribe to the camera topics and start the worker."""
        try:
            self.engine_host.load()
        except Exception as exc:  # noqa: BLE001
            self.report.error("backend", f"cannot load the backends: {exc}")
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.camera.subscribe(lambda: self.state == "active")
        self.state = "active"
        self.stats.activated()
        self._worker.start()
        result = super().on_activate(state)
        self.get_logger().info("active: processing " + (
            "every newest frame" if self.param("continuous") else "~/reconstruct goals only"))
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the worker, unsubscribe, clear markers and unload the backends."""
        self._stop_processing()
        self.outputs.clear()
        self.engine_host.unload()
        self.state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy what configure created and drop the backends."""
        self._destroy_configured()
        self.state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything (from any state); queued and running goals are aborted first."""
        self._stop_processing()
        self._destroy_action("the node is shutting down")
        self.engine_host.unload()
        self._destroy_configured()
        self.state = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Recover to unconfigured after a failed transition."""
        self._stop_processing()
        self._destroy_configured()
        self.state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def shutdown(self) -> None:
        """Stop the worker and release the backends (for main()'s exit path)."""
        self._stop_processing()
        self.engine_host.unload()

    def _stop_processing(self) -> None:
        self._worker.stop()
        self.camera.destroy()

    def _destroy_configured(self) -> None:
        self.outputs.destroy()
        self.prompts.destroy()
        self._destroy_action("the node is cleaned up")
        self.engine_host.drop()
        self.ids.drop()

    def _destroy_action(self, reason: str) -> None:
        """Abort the goals still queued or running with ``reason``; destroy ~/reconstruct."""
        if self._action is not None:
            self._action.destroy(reason)
            self._action = None

    # ---------------------------------------------------------------- input

    def _on_frame(self, cam: Any) -> None:
        if self.param("continuous"):
            self._worker.submit(cam)

    def _on_prompt(self, msg: Prompt) -> None:
        self.ids.reset()
        self.get_logger().info(
            f"prompt: text={msg.text!r} points={len(msg.points)} boxes={len(msg.boxes)} "
            f"masks={len(msg.masks)}")

    # ---------------------------------------------------------------- output

    def publish(self, cam: CameraFrame, objects: Sequence[ObjectReconstruction],
                timings: Dict[str, float], result: Optional[Dict[str, Any]], total_s: float,
                grasps: Optional[Sequence[Sequence[Any]]] = None) -> None:
        """Publish one frame's (or goal's) result on every output."""
        engine = self.engine_host.engine
        self.outputs.publish(cam, objects, timings, result, total_s, grasps,
                             (engine.segmenter.name, engine.reconstructor.name),
                             self.engine_host.gripper(), self.ids.tracked)

    def runs_dir(self) -> Path:
        """Where run directories are written (``output_dir``, else ``$ROS_HOME/sam3d_runs``)."""
        configured = self.param("output_dir")
        if configured:
            return Path(os.path.expanduser(configured))
        ros_home = os.environ.get("ROS_HOME") or os.path.join(os.path.expanduser("~"), ".ros")
        return Path(ros_home) / "sam3d_runs"

    def write_run(self, kind: str, request: Dict[str, Any], frame: Frame,
                  objects: Sequence[ObjectReconstruction],
                  grasps: Optional[Sequence[Sequence[Any]]] = None) -> Dict[str, Any]:
        """Write a run directory ``<kind>_<UTC time>_<µs>_<n>``; prune old ones."""
        from sam3d_ros.core.export import write_run

        base = self.runs_dir()
        now = time.time()
        name = (time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
                + f"_{int((now % 1) * 1e6):06d}_{next(self._runs)}")
        result = write_run(base / f"{kind}_{name}", request, frame, objects, grasps=grasps)
        prune_runs(base, int(self.param("max_runs_kept")))
        return result

    # ---------------------------------------------------------------- diagnostics

    def _set_diagnostics_period(self, period: float) -> None:
        if period != self._diag_period:
            self.destroy_timer(self._diag_timer)
            self._diag_period = period
            self._diag_timer = self.create_timer(period, self._publish_diagnostics,
                                                 callback_group=self._timer_group)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        settings = {
            "continuous": self.param("continuous"),
            "input_timeout_s": self.param("input_timeout_s"),
            "segmentation_backend": self.param("segmentation_backend"),
            "reconstruction_backend": self.param("reconstruction_backend"),
            "device": self.param("device"),
            "backend_state": self.engine_host.state,
            "camera_qos_reliability": self.param("camera_qos_reliability"),
            "image_transport": self.param("image_transport"),
            "depth_transport": self.param("depth_transport"),
        }
        action = self._action
        counts = {"frames_dropped": self._worker.drops, "frames_unmatched": self.camera.unmatched,
                  "frames_deferred_to_goals": self.engine_host.gate.turned_away,
                  "goals_queued": action.queue_length if action is not None else 0,
                  "goals_rejected": action.rejected if action is not None else 0}
        level, message, values = pipeline_status(self.state, self.stats.snapshot(now), settings,
                                                 counts, now)
        msg = out.diagnostics_msg(RCLPY, self.get_clock().now().to_msg(),
                                  f"{self.get_name()}: pipeline",
                                  self.get_fully_qualified_name(), level, message, values)
        with self._diag_lock:
            self._pub_diag.publish(msg)


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


__all__ = ["NODE_NAME", "Sam3dNode", "main"]
