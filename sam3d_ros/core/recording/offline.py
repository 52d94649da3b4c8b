"""``sam3d-reconstruct --bag``: a recording through the engine, the node's outputs written.

Every selected synchronised frame goes through what the node does with a frame:
:func:`~sam3d_ros.core.camera_frame.build_camera_frame`, the prompt (a ``sam3d_ros/Prompt`` topic
of the recording, or the request's prompt fields), :meth:`Engine.process` (an empty scene is an
empty result), tracked ids (:func:`~sam3d_ros.core.tracking.relabel`), and the node's messages
built by the same builders with the rosbags kit. The output recording holds, at each frame's
log time, the frame's inputs (image, depth, CameraInfo as recorded) and ``/tf``,
``/sam3d/objects``, ``/sam3d/detections``, ``/sam3d/markers``, ``/sam3d/points``,
``/sam3d/grasps``, ``/sam3d/grasp_poses`` and ``/sam3d/grasp_markers``, so ``ros2 bag play``,
rviz and Foxglove show it; optionally the hosted artifacts of every processed frame.

A frame that cannot be used (bad encoding, no valid depth, a prompt outside the image) is
skipped with its reason; the run goes on.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, TextIO, Tuple

from sam3d_ros.core import grasp_messages as grasp_out
from sam3d_ros.core import output_messages as out
from sam3d_ros.core.camera_frame import build_camera_frame, check_frame_id, stamp_seconds
from sam3d_ros.core.errors import InputError, Terminated
from sam3d_ros.core.inputs import InputOptions, parse_query, parse_seed
from sam3d_ros.core.prompt_messages import prompt_request, query_from_prompt
from sam3d_ros.core.recording.reader import (
    CameraTopics,
    FrameSelection,
    Recording,
    SyncedFrame,
    detect_topics,
    synced_frames,
)
from sam3d_ros.core.recording.typestore import RosbagsKit
from sam3d_ros.core.recording.writer import OutputRecording
from sam3d_ros.core.tracking import ObjectTracker, relabel
from sam3d_ros.core.types import SegmentationQuery

__all__ = ["NODE_NS", "OfflineOptions", "RunSummary", "process_recording"]

NODE_NS = "/sam3d"
"""Namespace of the output topics (the node's default name)."""


@dataclass
class OfflineOptions:
    """The node parameters an offline run honours (node defaults)."""

    sync_slop_s: float = 0.02
    tf_prefix: str = "sam3d_object_"
    track_gate_m: float = 0.05
    track_max_age: int = 3
    marker_max_triangles: int = 1000
    grasp_marker_max: int = 50
    tcp_offset_m: float = 0.0
    distro: str = "jazzy"
    copy_inputs: bool = True


@dataclass
class RunSummary:
    """What a run did."""

    output: Optional[Path] = None
    topics: Optional[CameraTopics] = None
    processed: int = 0
    objects: int = 0
    skipped_frames: List[str] = field(default_factory=list)
    unmatched: List[str] = field(default_factory=list)
    recording_problems: List[str] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)
    interrupted: str = ""  # "interrupted" (SIGINT) or "terminated" (SIGTERM): stopped early
    # decode_s (read, pair, decode), engine_s, build_s (the node's output messages), write_s
    # (serialise and write, artifacts), total_s (the whole run, opening and closing included)
    seconds: Dict[str, float] = field(default_factory=dict)


class _Progress:
    """One status line on a terminal: frames, rate, ETA."""

    def __init__(self, stream: Optional[TextIO], total: int) -> None:
        self.stream, self.total = stream, max(0, total)
        self.began = time.monotonic()
        self._last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.5:
            return
        self._last = now
        rate = done / max(now - self.began, 1e-9)
        if self.total and done <= self.total:
            eta = (self.total - done) / rate if rate > 0 else 0.0
            text = (f"[{done}/~{self.total}] {100.0 * done / self.total:3.0f}%  "
                    f"{rate:.2f} frames/s  ETA {int(eta // 60)}m{int(eta % 60):02d}s")
        else:
            text = f"[{done}] {rate:.2f} frames/s"
        self.stream.write("\r" + text.ljust(60))
        if force:
            self.stream.write("\n")
        self.stream.flush()


def _query(frame: SyncedFrame, request: Mapping[str, Any], width: int, height: int,
           base_dir: Optional[Path], options: InputOptions,
           cache: Dict[Tuple[int, int], Tuple[SegmentationQuery, Dict[int, int]]],
           ) -> Tuple[SegmentationQuery, Dict[int, int], int, Dict[str, Any]]:
    """The frame's query, explicit ids, seed and request record: a Prompt of the recording wins.

    Raises:
        InputError: naming ``prompt.<field>`` (the recording's Prompt) or the request field.
    """
    if frame.prompt is not None:
        query, explicit = query_from_prompt(frame.prompt, width, height)
        seed = int(frame.prompt.seed) if frame.prompt.seed >= 0 else parse_seed(
            request.get("seed"))
        return query, explicit, seed, {**prompt_request(frame.prompt), "seed": seed}
    if (width, height) not in cache:
        query = parse_query(request, width, height, base_dir, options)
        ids = [o.object_id for o in query.objects]
        cache[(width, height)] = (query, {i: i for i in ids if i is not None})
    query, explicit = cache[(width, height)]
    seed = parse_seed(request.get("seed"))
    record = {k: v for k, v in request.items() if k in ("prompt", "point_prompts",
                                                         "box_prompts", "mask_urls")}
    return query, explicit, seed, {**record, "seed": seed}


Output = Tuple[str, str, Any]
"""``(topic, message type, message)`` of the output recording."""


def _output_messages(kit: RosbagsKit, options: OfflineOptions, header: Any,
                     objects: List[Any], grasps: Any, timings: Dict[str, float],
                     result: Optional[Dict[str, Any]], state: Dict, engine: Any, cam: Any,
                     total_s: float) -> List[Output]:
    """The node's output messages of one frame, in publishing order (see the module docstring).

    Built, not written: the node's own publishing work, timed apart from serialising and
    writing (``benchmarks/bench_recording.py``).
    """
    ns = NODE_NS
    msgs: List[Output] = []
    if objects:  # as the node: TF has no delete, gone objects are simply not published
        msgs.append(("/tf", "tf2_msgs/msg/TFMessage",
                     out.tf_msg(kit, header, objects, options.tf_prefix)))
    msgs.append((f"{ns}/detections", "vision_msgs/msg/Detection3DArray",
                 out.detections_msg(kit, header, objects)))
    msgs.append((f"{ns}/objects", "sam3d_ros/msg/ReconstructedObjectArray",
                 out.objects_array_msg(kit, header, objects, timings, engine.segmenter.name,
                                       engine.reconstructor.name, result,
                                       cam.frame.camera_pose, total_s)))
    msgs.append((f"{ns}/markers", "visualization_msgs/msg/MarkerArray",
                 out.markers_msg(kit, header, objects, state["marker_ids"],
                                 options.marker_max_triangles, cache=state["marker_cache"])))
    state["marker_ids"] = [o.object_id for o in objects]
    msgs.append((f"{ns}/points", "sensor_msgs/msg/PointCloud2",
                 out.points_msg(kit, header, cam.frame.points, cam.frame.rgb, objects)))
    if grasps is None:
        return msgs
    tcp = options.tcp_offset_m
    msgs.append((f"{ns}/grasps", "sam3d_ros/msg/GraspArray",
                 grasp_out.grasp_array_msg(kit, header, objects, grasps, tcp)))
    msgs.append((f"{ns}/grasp_poses", "geometry_msgs/msg/PoseArray",
                 grasp_out.grasp_pose_array_msg(kit, header, objects, grasps, tcp)))
    gripper = getattr(engine.grasp_planner, "gripper", None)
    if gripper is not None:
        markers, state["grasp_markers"] = grasp_out.grasp_markers_msg(
            kit, header, objects, grasps, gripper, state["grasp_markers"],
            options.grasp_marker_max)
        msgs.append((f"{ns}/grasp_markers", "visualization_msgs/msg/MarkerArray", markers))
    return msgs


def process_recording(
    bag: Path,
    output: Path,
    engine: Any,
    request: Mapping[str, Any],
    topics: Mapping[str, Optional[str]],
    selection: FrameSelection,
    options: Optional[OfflineOptions] = None,
    artifacts_dir: Optional[Path] = None,
    base_dir: Optional[Path] = None,
    input_options: Optional[InputOptions] = None,
    progress: Optional[TextIO] = None,
    on_frame: Optional[Callable[[int, int], None]] = None,
) -> RunSummary:
    """Process a recording into the output recording ``output`` (see the module docstring).

    Args:
        bag: rosbag2 folder or ``.mcap`` file.
        output: the output rosbag2 folder to create.
        engine: the :class:`~sam3d_ros.core.engine.Engine`.
        request: hosted request prompt fields (``prompt``, ``point_prompts``, ``box_prompts``,
            ``mask_urls``, ``seed``) used when the recording has no Prompt topic.
        topics: ``image``, ``depth``, ``camera_info``, ``prompt`` topic names or ``None``
            (auto-detected).
        selection: which synchronised frames.
        options: node parameters (node defaults when ``None``).
        artifacts_dir: write the hosted run directory of every processed frame under it.
        base_dir: relative paths in ``request`` are taken from here.
        input_options: URI policy for ``mask_urls``.
        progress: stream for the progress line (``None`` = quiet).
        on_frame: ``on_frame(index, objects)`` after each processed frame (benchmarks).

    Raises:
        InputError: the recording, a topic or an option cannot be used (nothing is written).
    """
    from sam3d_ros.core.export import write_run

    options = options or OfflineOptions()
    input_options = input_options or InputOptions()
    began = time.monotonic()
    recording = Recording(bag, options.distro)
    summary = RunSummary(recording_problems=recording.skipped)
    try:
        chosen = detect_topics(recording, topics.get("image"), topics.get("depth"),
                               topics.get("camera_info"), topics.get("prompt"))
        summary.topics = chosen
        kit = RosbagsKit(recording.store)
        writer = OutputRecording(output, recording.store)
    except BaseException:
        recording.close()
        raise
    tracker = ObjectTracker(options.track_gate_m, options.track_max_age)
    state: Dict[str, Any] = {"marker_ids": [], "grasp_markers": 0,
                             "marker_cache": out.MarkerPreviewCache()}
    total = recording.message_counts.get(chosen.image, 0) // max(1, selection.every)
    if selection.limit:
        total = min(total, selection.limit) if total else selection.limit
    bar = _Progress(progress, total)
    cache: Dict[Tuple[int, int], Tuple[SegmentationQuery, Dict[int, int]]] = {}
    timing = {"decode_s": 0.0, "engine_s": 0.0, "build_s": 0.0, "write_s": 0.0}
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise Terminated()

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    last_prompt = None
    try:
        t_read = time.monotonic()
        for frame in synced_frames(recording, chosen, selection, options.sync_slop_s,
                                   summary.unmatched):
            t0 = time.monotonic()
            timing["decode_s"] += t0 - t_read
            if frame.prompt is not last_prompt:
                last_prompt = frame.prompt
                tracker.reset()  # as the node does for a new prompt
            stamp = stamp_seconds(frame.image.header)
            try:
                # As the node: outputs, markers and TF are published in the image's frame.
                check_frame_id(frame.image)
                cam = build_camera_frame(frame.image, frame.depth, frame.camera_info)
                width, height = cam.frame.width, cam.frame.height
                query, explicit, seed, record = _query(frame, request, width, height, base_dir,
                                                       input_options, cache)
                t1 = time.monotonic()
                timing["decode_s"] += t1 - t0
                timings = {"load": t1 - t0}
                res = engine.process(cam.frame, query, seed, timings=timings, allow_empty=True)
            except InputError as exc:
                summary.skipped_frames.append(f"frame {frame.index} (stamp {stamp:.6f}): "
                                              f"{exc.field}: {exc.reason}")
                t_read = time.monotonic()
                continue
            t2 = time.monotonic()
            timing["engine_s"] += t2 - t1
            objects = relabel(tracker, res.objects, explicit)
            t_ids = time.monotonic()
            result = None
            if artifacts_dir is not None and objects:
                run = artifacts_dir / f"frame_{frame.index:06d}_{stamp:.6f}".replace(".", "_")
                req = {"source": "recording", "frame_id": cam.header.frame_id,
                       "stamp": stamp, **record}
                result = write_run(run, req, cam.frame, objects, grasps=res.grasps)
            t3 = time.monotonic()
            outputs = _output_messages(kit, options, cam.header, objects, res.grasps, timings,
                                       result, state, engine, cam, t3 - t0)
            t4 = time.monotonic()
            timing["build_s"] += (t_ids - t2) + (t4 - t3)
            if options.copy_inputs:
                for topic, log_ns, msg in frame.inputs:
                    writer.write(topic, recording.topics[topic], log_ns, msg)
            for topic, msgtype, msg in outputs:
                writer.write(topic, msgtype, frame.log_ns, msg)
            timing["write_s"] += (t3 - t_ids) + (time.monotonic() - t4)
            summary.processed += 1
            summary.objects += len(objects)
            if on_frame is not None:
                on_frame(frame.index, len(objects))
            bar.update(summary.processed)
            t_read = time.monotonic()
    except KeyboardInterrupt:
        summary.interrupted = "interrupted"
    except Terminated:
        summary.interrupted = "terminated"
    except BaseException:
        writer.discard()
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        recording.close()
    bar.update(summary.processed, force=True)
    summary.output = writer.close()
    summary.counts = dict(writer.counts)
    summary.seconds = {**timing, "total_s": time.monotonic() - began}
    return summary

