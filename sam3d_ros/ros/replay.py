"""``sam3d_replay``: a frame source for the node, from a recording or a folder of RGB-D frames.

Usage::

    sam3d_replay SOURCE [--rate HZ] [--loop] [--request JSON] [--keep-stamps] [--ros-args ...]

``SOURCE`` is a recording (rosbag2 folder or ``.mcap``: its colour, depth and CameraInfo topics,
paired as the node pairs them, see :mod:`sam3d_ros.core.recording.reader`) or a frame folder:
``rgb.png`` with ``depth.npz`` (``depth`` float32 metres) or ``pointmap.npz`` (``depth`` uint16
millimetres) holding ``K`` (the layout of ``examples/tabletop`` and the real-frame sets), or a
folder of such folders, replayed in name order.

Published (reliable, remappable): ``image`` (``sensor_msgs/Image``; ``image/compressed`` for
compressed recordings), ``depth`` (``depth/compressedDepth``), ``camera_info``, all three with
one stamp (now, or the recording's with ``--keep-stamps``) and the frame id (the recording's,
or ``--frame-id``). ``--request`` publishes the request's prompt fields once as a latched
``sam3d_ros/Prompt`` on ``prompt`` before the first frame. Each published frame is logged as
``frame <n> stamp <sec>.<nanosec>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from sam3d_ros.core.conventions import metres_to_depth16
from sam3d_ros.core.errors import InputError
from sam3d_ros.msg import BoxPrompt, PointPrompt, Prompt
from sam3d_ros.ros.conversions import numpy_to_image

__all__ = ["folder_frames", "main", "recording_frames"]

Frame = Tuple[Any, Any, Any]  # image, depth, camera_info (rclpy messages)


def _frame_dirs(source: Path) -> List[Path]:
    if (source / "rgb.png").is_file():
        return [source]
    dirs = sorted(d for d in source.iterdir() if (d / "rgb.png").is_file())
    if not dirs:
        raise InputError("SOURCE", f"{str(source)!r} holds no rgb.png and no frame folders")
    return dirs


def folder_frames(source: Path, frame_id: str) -> List[Frame]:
    """The frames of a frame folder (or folder of them) as rclpy messages (stamps unset)."""
    frames = []
    for d in _frame_dirs(source):
        bgr = cv2.imread(str(d / "rgb.png"), cv2.IMREAD_COLOR)
        npz = d / "depth.npz" if (d / "depth.npz").is_file() else d / "pointmap.npz"
        if bgr is None or not npz.is_file():
            raise InputError("SOURCE", f"{d}: needs rgb.png and depth.npz or pointmap.npz")
        with np.load(npz, allow_pickle=False) as data:
            depth, k = data["depth"], np.asarray(data["K"], dtype=np.float64).reshape(3, 3)
        if depth.dtype != np.uint16:  # float metres, 0 = no return
            depth = metres_to_depth16(np.where(depth > 0, depth, np.nan))
        header = Header(frame_id=frame_id)
        info = CameraInfo(header=header, height=bgr.shape[0], width=bgr.shape[1],
                          distortion_model="plumb_bob", d=[0.0] * 5, k=k.reshape(9).tolist(),
                          r=np.eye(3).reshape(9).tolist(),
                          p=np.hstack([k, np.zeros((3, 1))]).reshape(12).tolist())
        frames.append((numpy_to_image(np.ascontiguousarray(bgr[:, :, ::-1]), "rgb8", header),
                       numpy_to_image(depth, "16UC1", header), info))
    return frames


def recording_frames(source: Path, slop_s: float) -> Iterator[Frame]:
    """The synchronised frames of a recording, as rclpy messages."""
    from sam3d_ros.core.recording.reader import (
        FrameSelection,
        Recording,
        detect_topics,
        synced_frames,
    )

    classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage,
               "sensor_msgs/msg/CameraInfo": CameraInfo}
    recording = Recording(source)
    try:
        topics = detect_topics(recording)
        for frame in synced_frames(recording, topics, FrameSelection(), slop_s, []):
            msgs = []
            for topic, _, msg in frame.inputs:
                msgtype = recording.topics[topic]
                raw = bytes(recording.store.serialize_cdr(msg, msgtype))
                msgs.append(deserialize_message(raw, classes[msgtype]))
            yield msgs[0], msgs[1], msgs[2]
    finally:
        recording.close()


def prompt_from_request(request: dict) -> Prompt:
    """A ``sam3d_ros/Prompt`` of a hosted request's prompt fields (text, points, boxes, seed)."""
    msg = Prompt()
    msg.text = str(request.get("prompt") or "")
    msg.points = [PointPrompt(x=int(p["x"]), y=int(p["y"]), label=int(p.get("label", 1)),
                              object_id=int(p.get("object_id", -1)))
                  for p in request.get("point_prompts") or []]
    msg.boxes = [BoxPrompt(x_min=int(b["x_min"]), y_min=int(b["y_min"]),
                           x_max=int(b["x_max"]), y_max=int(b["y_max"]),
                           label=int(b.get("label", 1)), object_id=int(b.get("object_id", -1)))
                 for b in request.get("box_prompts") or []]
    msg.seed = int(request.get("seed", -1))
    return msg


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``sam3d_replay``."""
    p = argparse.ArgumentParser(prog="sam3d_replay", description=__doc__.split("\n")[0])
    p.add_argument("source", metavar="SOURCE", help="recording, frame folder or folder of them")
    p.add_argument("--rate", type=float, default=2.0, help="frames per second (%(default)s)")
    p.add_argument("--loop", action="store_true", help="start again after the last frame")
    p.add_argument("--count", type=int, default=0, help="stop after N frames (0 = no limit)")
    p.add_argument("--request", metavar="JSON", help="publish its prompt fields as a Prompt")
    p.add_argument("--keep-stamps", action="store_true", help="a recording's own stamps")
    p.add_argument("--frame-id", default="camera_color_optical_frame",
                   help="frame id of folder frames (%(default)s)")
    p.add_argument("--sync-slop", type=float, default=0.02, help="pairing of a recording")
    p.add_argument("--wait", type=float, default=30.0,
                   help="seconds to wait for a subscriber before the first frame")
    return p


def _frames(args: argparse.Namespace) -> Iterator[Frame]:
    source = Path(args.source)
    recording = source.suffix == ".mcap" or (source / "metadata.yaml").is_file()
    while True:
        yield from (recording_frames(source, args.sync_slop) if recording
                    else folder_frames(source, args.frame_id))
        if not args.loop:
            return


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``sam3d_replay``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rclpy.init(args=argv)
    args = build_parser().parse_args(rclpy.utilities.remove_ros_args(argv))
    node = Node("sam3d_replay")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {}
    log = node.get_logger()
    try:
        if args.request:
            prompt_pub = node.create_publisher(Prompt, "prompt", QoSProfile(
                depth=1, reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL))
            prompt_pub.publish(prompt_from_request(json.loads(Path(args.request).read_text())))
        period = 1.0 / args.rate if args.rate > 0 else 0.0
        sent, next_t = 0, time.monotonic()
        for image, depth, info in _frames(args):
            if not pubs:
                compressed = isinstance(image, CompressedImage)
                pubs = {
                    "image": node.create_publisher(type(image), "image/compressed"
                                                   if compressed else "image", qos),
                    "depth": node.create_publisher(type(depth), "depth/compressedDepth"
                                                   if isinstance(depth, CompressedImage)
                                                   else "depth", qos),
                    "camera_info": node.create_publisher(CameraInfo, "camera_info", qos)}
                deadline = time.monotonic() + args.wait
                # All three camera topics (and the prompt) matched, or the first frames are
                # published to nobody and cannot pair.
                waiting = list(pubs.values()) + ([prompt_pub] if args.request else [])
                while (any(pub.get_subscription_count() == 0 for pub in waiting)
                       and time.monotonic() < deadline):
                    rclpy.spin_once(node, timeout_sec=0.1)
                next_t = time.monotonic()  # the rate counts from the first frame
            if not args.keep_stamps:
                stamp = node.get_clock().now().to_msg()
                for msg in (image, depth, info):
                    msg.header.stamp = stamp
            for key, msg in (("image", image), ("depth", depth), ("camera_info", info)):
                pubs[key].publish(msg)
            s = image.header.stamp
            log.info(f"frame {sent} stamp {s.sec}.{s.nanosec:09d}")
            sent += 1
            if args.count and sent >= args.count:
                break
            next_t += period
            while time.monotonic() < next_t:
                rclpy.spin_once(node, timeout_sec=max(0.0, next_t - time.monotonic()))
        log.info(f"done: {sent} frame(s)")
        return 0
    except InputError as exc:
        log.error(f"{exc.field}: {exc.reason}")
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
