"""One synchronised camera frame through the node: decode, prompt, engine, ids, write, publish.

A bad frame is reported (log and ``/diagnostics``) and never takes the node down; nothing found
is an empty result (an empty table), not a failure. A cancelled frame (deactivate, shutdown)
stops at the next stage boundary and publishes nothing.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

from sam3d_ros.core.camera_frame import (
    build_camera_frame,
    check_frame_id,
    check_headers,
    check_stamp,
    stamp_seconds,
)
from sam3d_ros.core.errors import Cancelled, InputError, Sam3dError
from sam3d_ros.core.prompt_messages import prompt_request, query_from_prompt, query_kind, ros_field
from sam3d_ros.core.types import SegmentationQuery
from sam3d_ros.ros.camera_input import CameraMessages
from sam3d_ros.ros.diagnostics import describe


def process_camera(node: Any, msgs: CameraMessages, cancelled: Callable[[], bool]) -> None:
    """Process one synchronised set with the node's engine and publish the result."""
    t0 = time.monotonic()
    timings: Dict[str, float] = {}
    query: Optional[SegmentationQuery] = None
    report = node.report
    try:
        check_frame_id(msgs.image)  # outputs and TF are published in the image's frame
        check_stamp(msgs.image)
        cam = build_camera_frame(msgs.image, msgs.depth, msgs.camera_info,
                                 warn=report.warn_once)
        node.last_size = (cam.frame.width, cam.frame.height)
        timings["load"] = time.monotonic() - t0
        prompt = node.prompts.prompt
        query, explicit = query_from_prompt(prompt, cam.frame.width, cam.frame.height)
        seed = node.seed(prompt.seed if prompt is not None else None)
        # Nothing found is an empty result (an empty table), not a failed frame.
        engine, res = node.engine_host.process(cam.frame, query, seed, cancel=cancelled,
                                               timings=timings, allow_empty=True)
        if cancelled():
            raise Cancelled("cancelled after processing")
        for warning in res.warnings:  # e.g. automatic segmentation kept max_objects
            report.warn_throttled(f"engine:{warning[:40]}", warning)
        for failure in res.failed_objects:  # the others are published
            report.warn_throttled("object", "object {object_id} skipped: {reason}".format(
                **failure))
        objects = node.ids.assign(res.objects, explicit)
        result = None
        if node.param("write_artifacts") and objects:
            request = {"source": "ros", "frame_id": cam.header.frame_id,
                       "stamp": stamp_seconds(cam.header), "seed": seed,
                       **prompt_request(prompt)}
            t_export = time.monotonic()
            result = node.write_run("frame", request, cam.frame, objects, res.grasps,
                                    res.failed_objects)
            timings["export"] = time.monotonic() - t_export
        if cancelled():
            raise Cancelled("cancelled before publishing")
        node.publish(cam, objects, timings, result, time.monotonic() - msgs.received,
                     res.grasps, engine)
        node.stats.frame_processed(len(objects))
    except Cancelled:
        return  # deactivate or shutdown: not a failure, nothing to publish
    except InputError as exc:
        report.input_error(ros_field(exc, query_kind(query)))
    except Sam3dError as exc:
        report.error("backend", str(exc))
        if exc.__cause__ is not None:  # a backend's own exception: its traceback is the clue
            report.exception("processing failed", exc)
        else:
            report.warn_throttled("backend", f"processing failed: {exc}")
    except Exception as exc:  # noqa: BLE001 - a bad frame must never take the node down
        report.error("internal", describe(exc))
        report.exception("processing failed", exc)


def check_dropped(node: Any, msgs: CameraMessages) -> None:
    """Report a frame replaced before it was processed if its headers are bad (no decoding)."""
    try:
        check_headers(msgs.image, msgs.depth, msgs.camera_info)
    except InputError as exc:
        node.report.input_error(exc)


def process_in_turn(node: Any, msgs: CameraMessages, cancelled: Callable[[], bool]) -> None:
    """:func:`process_camera`, unless goals are queued or running: they go first.

    The frame is skipped then (:class:`~sam3d_ros.core.work_gate.WorkGate`); the worker takes a
    newer one once the goals are done.
    """
    with node.engine_host.gate.frame(timeout=0.0) as entered:
        if entered:
            process_camera(node, msgs, cancelled)
