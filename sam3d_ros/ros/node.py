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

* configure: build and load the backends (all or nothing), create publishers, the prompt
  subscriptions and the action server;
* activate: subscribe to the camera topics, resume the worker;
* deactivate: stop work (unsubscribe; the frame and goal running stop at their next stage
  boundary), clear markers; the backends stay loaded;
* cleanup / shutdown / error: unload the backends, destroy what configure created.

Parameters and topics are documented in ``docs/node.md``.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from sam3d_ros.action import Reconstruct
from sam3d_ros.core import output_messages as out
from sam3d_ros.core.camera_frame import CameraFrame
from sam3d_ros.core.errors import Sam3dError
from sam3d_ros.core.inputs import MAX_SEED
from sam3d_ros.core.run_dirs import prune_runs
from sam3d_ros.core.types import Frame, ObjectReconstruction
from sam3d_ros.msg import Prompt
from sam3d_ros.ros import parameters
from sam3d_ros.ros.action_queue import QueuedActionServer
from sam3d_ros.ros.camera_input import CameraInput
from sam3d_ros.ros.diagnostics import Reporter, describe, pipeline_status
from sam3d_ros.ros.engine_host import EngineHost
from sam3d_ros.ros.frame_worker import FrameWorker
from sam3d_ros.ros.frames import check_dropped, process_in_turn
from sam3d_ros.ros.goals import execute_goal
from sam3d_ros.ros.message_kit import RCLPY
from sam3d_ros.ros.object_ids import ObjectIds
from sam3d_ros.ros.parameters import PARAMS
from sam3d_ros.ros.prompts import PromptInput
from sam3d_ros.ros.publishers import ResultPublishers
from sam3d_ros.ros.spinning import spin_through_destroyed_entities
from sam3d_ros.ros.stats import PipelineStats

NODE_NAME = "sam3d"


class Sam3dNode(LifecycleNode):
    """Lifecycle node ``sam3d`` (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, parameters.descriptor(spec))
        self.add_on_set_parameters_callback(
            lambda params: parameters.check_set(params, self.state))
        group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.state = "unconfigured"
        self.last_size: Optional[tuple] = None
        self.stats = PipelineStats()
        self.report = Reporter(self.get_logger(), self.stats,
                               lambda: self.param("warn_throttle_s"))
        self.engine_host = EngineHost(self.param, self.get_logger())
        self.ids = ObjectIds()
        self.outputs = ResultPublishers(self, self.param, self.stats, self.report.warn_once)
        self.camera = CameraInput(
            self, self.param, self.stats, self._on_frame,
            lambda exc: self.report.input_error(exc, pairing=True), self.report, group)
        self.prompts = PromptInput(self, lambda: self.last_size,
                                   lambda: self.param("max_objects"), self._on_prompt,
                                   self.report, group)
        self._worker = FrameWorker(
            lambda msgs, cancelled: process_in_turn(self, msgs, cancelled),
            self.report.exception, lambda: self.param("max_rate_hz"),
            lambda: self.param("continuous"), lambda msgs: check_dropped(self, msgs))
        self._action: Optional[QueuedActionServer] = None
        self._runs = itertools.count(1)
        # Diagnostics exist from construction: a configure that fails is reported too. They are
        # published by the timer only (never from a camera or worker thread).
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_period = 0.0
        self._diag_timer: Any = None
        self._set_diagnostics_period(float(self.param("diagnostics_period_s")))

    def param(self, name: str) -> Any:
        """The value of parameter ``name``."""
        return self.get_parameter(name).value

    def seed(self, *candidates: Optional[int]) -> int:
        """The first candidate that is a valid seed, else ``default_seed``."""
        for value in candidates:
            if value is not None and 0 <= int(value) <= MAX_SEED:
                return int(value)
        return int(self.param("default_seed"))

    # ---------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read parameters, build and load the backends, create publishers and the action."""
        self.stats.clear_fault()
        self._set_diagnostics_period(float(self.param("diagnostics_period_s")))
        try:
            self.engine_host.build()  # all or nothing: a failure leaves nothing loaded
        except Exception as exc:  # noqa: BLE001 - any backend failure fails the transition
            reason = str(exc) if isinstance(exc, Sam3dError) else describe(exc)
            if not isinstance(exc, Sam3dError):
                self.report.exception("configure", exc)
            self.stats.fault("backend", f"cannot build the backends: {reason}")
            self.get_logger().error(f"configure failed: {reason}")
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
        """Subscribe to the camera topics and (re)start the worker (backends stay loaded)."""
        self.camera.subscribe(lambda: self.state == "active")
        self.state = "active"
        self.stats.activated()
        self._worker.start()
        result = super().on_activate(state)
        self.get_logger().info("active: processing " + (
            "every newest frame" if self.param("continuous") else "~/reconstruct goals only"))
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop work: unsubscribe, cancel the frame and goal running, clear markers.

        The backends stay loaded (activate resumes at once).
        """
        self.state = "inactive"  # goals and camera callbacks see it at once
        self._stop_work(close=False)
        self.outputs.clear()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Abort the goals, unload the backends and destroy what configure created."""
        self._release("the node is cleaned up")
        self.state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything (from any state): goals aborted, backends unloaded."""
        self.state = "finalized"
        self._stop_work(close=True)
        self._release("the node is shutting down")
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Recover to unconfigured after a transition raised; the backends are unloaded."""
        self.state = "unconfigured"
        self._stop_work(close=False)
        self._release("a lifecycle transition failed")
        return TransitionCallbackReturn.SUCCESS

    def shutdown(self) -> None:
        """Stop the worker and unload the backends (main()'s exit path; destroy_node follows)."""
        self.state = "finalized"
        self._stop_work(close=True)
        self.engine_host.release()

    def _stop_work(self, close: bool) -> None:
        """Unsubscribe; cancel the frame in progress and wait for it (``stop_timeout_s``)."""
        self.camera.destroy()
        timeout = float(self.param("stop_timeout_s"))
        idle = self._worker.close(timeout) if close else self._worker.stop(timeout)
        if not idle:
            self.get_logger().warning(
                f"the frame in progress did not reach a stage boundary within stop_timeout_s="
                f"{timeout:g} s; it stops there and publishes nothing")

    def _release(self, reason: str) -> None:
        """Abort goals with ``reason``; unload the backends; destroy what configure created.

        Unloading waits for a stage still running (it ends at its next cancellation check).
        """
        if self._action is not None:
            self._action.destroy(reason)
            self._action = None
        self.engine_host.release()
        self.outputs.destroy()
        self.prompts.destroy()
        self.ids.drop()

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
                grasps: Optional[Sequence[Sequence[Any]]], engine: Any) -> None:
        """Publish one frame's (or goal's) result, computed by ``engine``, on every output."""
        self.outputs.publish(cam, objects, timings, result, total_s, grasps,
                             (engine.segmenter.name, engine.reconstructor.name),
                             self.engine_host.gripper(engine), self.ids.tracked)

    def runs_dir(self) -> Path:
        """Where run directories are written (``output_dir``, else ``$ROS_HOME/sam3d_runs``)."""
        configured = self.param("output_dir")
        if configured:
            return Path(os.path.expanduser(configured))
        ros_home = os.environ.get("ROS_HOME") or os.path.join(os.path.expanduser("~"), ".ros")
        return Path(ros_home) / "sam3d_runs"

    def write_run(self, kind: str, request: Dict[str, Any], frame: Frame,
                  objects: Sequence[ObjectReconstruction],
                  grasps: Optional[Sequence[Sequence[Any]]] = None,
                  failed_objects: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
        """Write a run directory ``<kind>_<UTC time>_<µs>_<n>``; prune old ones.

        ``failed_objects`` (the engine's: prompted objects not segmented or reconstructed) go
        into its ``metadata.json`` as in the CLI's runs.
        """
        from sam3d_ros.core.export import write_run

        base = self.runs_dir()
        now = time.time()
        name = (time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
                + f"_{int((now % 1) * 1e6):06d}_{next(self._runs)}")
        result = write_run(base / f"{kind}_{name}", request, frame, objects, grasps=grasps,
                           failed_objects=failed_objects)
        prune_runs(base, int(self.param("max_runs_kept")))
        return result

    # ---------------------------------------------------------------- diagnostics

    def _set_diagnostics_period(self, period: float) -> None:
        if period != self._diag_period:
            if self._diag_timer is not None:
                self.destroy_timer(self._diag_timer)
            self._diag_period = period
            # Guarded: an exception here must not end the executor (and the node).
            self._diag_timer = self.create_timer(
                period, self.report.guarded("diagnostics timer", self._on_diagnostics_timer),
                callback_group=self._timer_group)

    def _on_diagnostics_timer(self) -> None:
        if self.state == "active":
            died = self._worker.revive()
            if died:
                self.report.error("internal", f"frame worker died ({died}); restarted")
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        active = self.state == "active"
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
                  "goals_rejected": action.rejected if action is not None else 0,
                  "qos_problem": self.camera.qos_problem() if active else ""}
        snap = self.stats.snapshot(float(self.param("diagnostics_window_s")))
        level, message, values = pipeline_status(self.state, snap, settings, counts)
        self._pub_diag.publish(out.diagnostics_msg(
            RCLPY, self.get_clock().now().to_msg(), f"{self.get_name()}: pipeline",
            self.get_fully_qualified_name(), level, message, values))


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
        spin_through_destroyed_entities(executor, node.get_logger().warning)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return status


__all__ = ["NODE_NAME", "Sam3dNode", "main"]
