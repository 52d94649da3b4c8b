"""``~/reconstruct`` goals: inputs (URIs, explicit images or the latest frame) → engine → result.

:func:`execute_goal` is the work function of the node's
:class:`~sam3d_ros.ros.action_queue.QueuedActionServer`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

from std_msgs.msg import Header

from sam3d_ros.action import Reconstruct
from sam3d_ros.core import grasp_messages as grasp_out
from sam3d_ros.core import output_messages as out
from sam3d_ros.core.camera_frame import (
    CameraFrame,
    build_camera_frame,
    check_frame_id,
    stamp_seconds,
)
from sam3d_ros.core.errors import Cancelled, InputError, NoObjectFound, Sam3dError
from sam3d_ros.core.image_decoding import intrinsics_from_camera_info
from sam3d_ros.core.inputs import parse_request
from sam3d_ros.core.prompt_messages import prompt_request, query_from_prompt, query_kind, ros_field
from sam3d_ros.ros.diagnostics import describe
from sam3d_ros.ros.message_kit import RCLPY


def execute_goal(node: Any, goal: Any, progress: Callable[[str, float, str], None],
                 cancelled: Callable[[], bool]) -> Any:
    """Run one goal with the node's engine; returns the ``Reconstruct`` result (error set).

    The goal stops at the next stage boundary when its client cancels it or the node stops
    being active (deactivate, shutdown).
    """
    result = Reconstruct.Result()
    if node.state != "active":
        result.error = f"node: not active (state {node.state}); activate it first"
        return result

    def cancel() -> bool:
        return cancelled() or node.state != "active"

    timings: Dict[str, float] = {}
    kind = ""
    host = node.engine_host
    try:
        progress("load", 0.0, "reading inputs")
        t0 = time.monotonic()
        seed = node.seed(goal.seed if goal.seed >= 0 else None,
                         goal.prompt.seed if goal.prompt.seed >= 0 else None)
        cam: Optional[CameraFrame] = None
        explicit: Dict[int, int] = {}
        if goal.image_uri:
            parsed = parse_request(goal_request(goal, seed), None, host.engine.input_options)
            for warning in parsed.warnings:
                progress("load", 0.05, f"warning: {warning}")
            frame, query = parsed.frame, parsed.query
            request = parsed.request
        else:
            if goal.use_latest_frame:
                latest = node.camera.latest
                if latest is None:
                    raise InputError(
                        "image", "no synchronised camera frame received yet (image, depth "
                        "and camera_info within sync_slop_s); or set use_latest_frame "
                        "false and give image/depth/camera_info")
                cam = build_camera_frame(latest.image, latest.depth, latest.camera_info,
                                         warn=node.report.warn_once)
                check_frame_id(latest.image)
            else:
                depth = goal.depth if goal.depth.width and goal.depth.height else None
                cam = build_camera_frame(goal.image, depth, goal.camera_info, "goal.",
                                         warn=node.report.warn_once)
                check_frame_id(goal.image, "goal.")  # results are in the image's frame
            frame = cam.frame
            query, explicit = query_from_prompt(goal.prompt, frame.width, frame.height,
                                                "goal.prompt")
            request = {"source": "ros_goal", "frame_id": cam.header.frame_id,
                       "stamp": stamp_seconds(cam.header), "seed": seed,
                       **prompt_request(goal.prompt)}
        kind = query_kind(query)
        timings["load"] = time.monotonic() - t0
        progress("load", 0.1, f"inputs ready ({frame.width}x{frame.height})")
        # Waits for at most the frame in progress when the goal was accepted.
        with host.gate.goal(cancel):
            engine, res = host.process(frame, query, seed, progress, cancel, timings)
        if cancel():
            raise Cancelled("cancelled after processing")
        for warning in res.warnings:  # e.g. automatic segmentation kept max_objects
            progress("segment", 0.3, f"warning: {warning}")
        for failure in res.failed_objects:  # the others are returned
            progress(failure["stage"], 0.85,
                     "warning: object {object_id} skipped: {reason}".format(**failure))
        objects = (node.ids.assign(res.objects, explicit) if cam is not None
                   else list(res.objects))
        if cancel():
            raise Cancelled("cancelled before export")
        hosted = None
        if goal.write_artifacts:
            progress("export", 0.9, "writing artifacts")
            t_export = time.monotonic()
            hosted = node.write_run("goal", request, frame, objects, res.grasps,
                                    res.failed_objects)
            timings["export"] = time.monotonic() - t_export
            progress("export", 1.0, f"export done in {timings['export']:.2f} s")
        header = cam.header if cam is not None else Header(
            frame_id=goal.camera_info.header.frame_id or goal.image.header.frame_id,
            stamp=node.get_clock().now().to_msg())
        total = time.monotonic() - t0
        result.objects = out.objects_array_msg(
            RCLPY, header, objects, timings, engine.segmenter.name, engine.reconstructor.name,
            hosted, frame.camera_pose, total)
        result.artifacts = out.artifacts_msg(RCLPY, hosted)
        if res.grasps is not None:
            result.grasps = grasp_out.grasp_array_msg(RCLPY, header, objects, res.grasps,
                                                      float(node.param("tcp_offset_m")))
        else:
            result.grasps.header = header
        if cam is not None:
            node.publish(cam, objects, timings, hosted, total, res.grasps, engine)
        node.stats.goal_done()
        progress("done", 1.0, f"{len(objects)} object(s) in {total:.2f} s")
        return result
    except Cancelled:
        raise
    except NoObjectFound as exc:
        # A goal asks for objects: it fails, but an empty table is not a node fault.
        err = ros_field(exc, kind, "goal.", uris=bool(goal.image_uri))
        node.get_logger().info(f"goal found nothing: {err.field}: {err.reason}")
        result.error = f"{err.field}: {err.reason}"
    except InputError as exc:
        err = ros_field(exc, kind, "goal.", uris=bool(goal.image_uri))
        node.report.input_error(err)
        result.error = f"{err.field}: {err.reason}"
    except Sam3dError as exc:
        node.report.error("backend", str(exc))
        if exc.__cause__ is not None:  # a backend's own exception: its traceback is the clue
            node.report.exception("goal failed", exc)
        result.error = f"backend: {exc}"
    except Exception as exc:  # noqa: BLE001 - a bug: logged with its traceback, goal aborted
        node.report.error("internal", describe(exc))
        node.report.exception("goal failed", exc)
        result.error = f"internal: {describe(exc)}"
    return result


def goal_request(goal: Any, seed: int) -> Dict[str, Any]:
    """The hosted request of a goal given by ``image_uri`` (+ pointmap, masks, intrinsics)."""
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
        k = intrinsics_from_camera_info(info, "camera_info")
        request["intrinsics"] = {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy}
    return request
