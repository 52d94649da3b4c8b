"""Recordings made for tests and benchmarks: the example scene, written with rosbags.

The frames are the example tabletop scene (``examples/tabletop``) taken every ``step``-th pixel
(4: 160×120 for tests; 1: 640×480 for benchmarks), with its intrinsics scaled to match, its box
prompts divided by ``step``, and new sensor noise per frame (0.5 mm, seeded) so consecutive
frames are not byte-identical. A long recording can be made cheaply from a few distinct frames
repeated in turn with advancing stamps (``distinct``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from sam3d_ros.core.conventions import metres_to_depth16
from sam3d_ros.core.recording.typestore import RosbagsKit, make_typestore

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tabletop"
FRAME_ID = "camera_color_optical_frame"
TOPICS = {"image": "/camera/color/image_raw", "depth": "/camera/depth/image_raw",
          "camera_info": "/camera/color/camera_info", "prompt": "/sam3d/prompt"}
COMPRESSED_TOPICS = {**TOPICS, "image": "/camera/color/image_raw/compressed",
                     "depth": "/camera/depth/image_raw/compressedDepth"}


def example_frame(step: int = 4,
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[Dict[str, int]]]:
    """``(rgb uint8, depth metres float32, K 3×3, box prompts)``, every ``step``-th pixel."""
    rgb = cv2.cvtColor(cv2.imread(str(EXAMPLE / "rgb.png")), cv2.COLOR_BGR2RGB)
    data = np.load(EXAMPLE / "pointmap.npz", allow_pickle=False)
    depth = data["depth"].astype(np.float32) / 1000.0
    depth[data["depth"] == 0] = np.nan
    k = data["K"].astype(np.float64).copy()
    # Pixel centres at integer coordinates: pixel j of the subsampled image is pixel step*j.
    k[:2, :] /= step
    request = json.loads((EXAMPLE / "request.json").read_text())
    boxes = [{"x_min": b["x_min"] // step, "y_min": b["y_min"] // step,
              "x_max": b["x_max"] // step, "y_max": b["y_max"] // step,
              "object_id": b["object_id"]} for b in request["box_prompts"]]
    return (np.ascontiguousarray(rgb[::step, ::step]),
            np.ascontiguousarray(depth[::step, ::step]), k, boxes)


def _header(kit: RosbagsKit, stamp_ns: int) -> Any:
    header = kit.Header(frame_id=FRAME_ID)
    header.stamp.sec, header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return header


def image_msgs(kit: RosbagsKit, store: Any, rgb: np.ndarray, depth_m: np.ndarray,
               k: np.ndarray, stamp_ns: int, compressed: bool) -> Dict[str, Tuple[str, Any]]:
    """Image / depth / camera_info messages (rosbags) of one frame: topic key → (type, msg)."""
    h, w = depth_m.shape
    image_cls = store.types["sensor_msgs/msg/Image"]
    compressed_cls = store.types["sensor_msgs/msg/CompressedImage"]
    if compressed:
        ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        image = ("sensor_msgs/msg/CompressedImage",
                 compressed_cls(_header(kit, stamp_ns), "rgb8; jpeg compressed bgr8",
                                np.frombuffer(jpeg.tobytes(), np.uint8)))
        ok, png = cv2.imencode(".png", metres_to_depth16(depth_m))
        assert ok
        payload = np.frombuffer(np.array([0, 0, 0], dtype="<i4").tobytes() + png.tobytes(),
                                np.uint8)
        depth = ("sensor_msgs/msg/CompressedImage",
                 compressed_cls(_header(kit, stamp_ns), "16UC1; compressedDepth png", payload))
    else:
        image = ("sensor_msgs/msg/Image",
                 image_cls(_header(kit, stamp_ns), h, w, "rgb8", 0, w * 3,
                           np.frombuffer(rgb.tobytes(), np.uint8)))
        depth = ("sensor_msgs/msg/Image",
                 image_cls(_header(kit, stamp_ns), h, w, "16UC1", 0, w * 2,
                           np.frombuffer(metres_to_depth16(depth_m).tobytes(), np.uint8)))
    info = kit.message_class("sensor_msgs/msg/CameraInfo")(
        header=_header(kit, stamp_ns), height=h, width=w, distortion_model="plumb_bob",
        d=np.zeros(5), k=k.reshape(9),
        r=np.eye(3).reshape(9),
        p=np.hstack([k, np.zeros((3, 1))]).reshape(12))
    return {"image": image, "depth": depth,
            "camera_info": ("sensor_msgs/msg/CameraInfo", info)}


def make_recording(path: Path, frames: int = 3, period_ns: int = 100_000_000,
                   storage: str = "mcap", compressed: bool = False,
                   depth_offset_ns: Sequence[int] = (), skip: Sequence[str] = (),
                   boxes_topic: bool = False, start_ns: int = 1_700_000_000_000_000_000,
                   step: int = 4, distinct: int = 0,
                   blank_frame_ids: Sequence[int] = ()) -> Path:
    """Write a rosbag2 folder of ``frames`` example frames; returns its path.

    Args:
        storage: ``"mcap"`` or ``"sqlite3"``.
        compressed: JPEG colour and compressedDepth PNG depth instead of raw images.
        depth_offset_ns: per frame, how far the depth stamp is from the image stamp.
        skip: topic keys (``"depth"``, ...) not written at all.
        boxes_topic: also record a ``sam3d_ros/Prompt`` with the example boxes before frame 0.
        step: pixel step (4: 160×120, 1: 640×480).
        distinct: when > 0, only this many distinct frames (noise draws, encodings) are made;
            frame ``i`` is frame ``i % distinct`` again with its own stamps.
        blank_frame_ids: frames whose colour image has an empty ``header.frame_id``.
    """
    store = make_typestore("jazzy")
    kit = RosbagsKit(store)
    rgb, depth, k, boxes = example_frame(step)
    rng = np.random.default_rng(0)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns: Dict[str, Any] = {}
        names = COMPRESSED_TOPICS if compressed else TOPICS

        def write(key: str, msgtype: str, t: int, msg: Any) -> None:
            if key not in conns:
                conns[key] = writer.add_connection(names[key], msgtype, typestore=store)
            writer.write(conns[key], t, store.serialize_cdr(msg, msgtype))

        if boxes_topic:
            prompt = kit.message_class("sam3d_ros/msg/Prompt")(header=_header(kit, start_ns))
            box_cls = kit.message_class("sam3d_ros/msg/BoxPrompt")
            prompt.boxes = [box_cls(label=1, **b) for b in boxes]
            prompt.seed = -1
            write("prompt", "sam3d_ros/msg/Prompt", start_ns - 1, prompt)
        made: List[Dict[str, Tuple[str, Any]]] = []
        for i in range(frames):
            t = start_ns + i * period_ns
            if distinct <= 0 or len(made) < distinct:
                noisy = depth + rng.normal(0.0, 0.0005, depth.shape).astype(np.float32)
                msgs = image_msgs(kit, store, rgb, noisy, k, t, compressed)
                if distinct > 0:
                    made.append(msgs)
            else:  # an earlier frame again (serialised below with this frame's stamps)
                msgs = made[i % distinct]
                for _, msg in msgs.values():
                    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t, 1_000_000_000)
            if i < len(depth_offset_ns):
                stamp = msgs["depth"][1].header.stamp
                stamp.sec, stamp.nanosec = divmod(t + int(depth_offset_ns[i]), 1_000_000_000)
            msgs["image"][1].header.frame_id = "" if i in blank_frame_ids else FRAME_ID
            for key in ("image", "depth", "camera_info"):
                if key not in skip:
                    write(key, msgs[key][0], t + {"image": 0, "depth": 1, "camera_info": 2}[key],
                          msgs[key][1])
    return path


def example_request(path: Path, step: int = 4) -> Path:
    """A request file with the example's box prompts (no image: for ``--bag``)."""
    _, _, _, boxes = example_frame(step)
    path.write_text(json.dumps({"box_prompts": boxes, "seed": 42}))
    return path


def read_back(path: Path, distro: str = "jazzy",
              topics: Optional[Sequence[str]] = None) -> Dict[str, List[Tuple[int, Any]]]:
    """Every message of a recording (rosbags), per topic: ``[(log time ns, message)]``."""
    from rosbags.rosbag2 import Reader

    store = make_typestore(distro)
    out: Dict[str, List[Tuple[int, Any]]] = {}
    with Reader(path) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, t, raw in reader.messages(conns):
            out.setdefault(conn.topic, []).append((t, store.deserialize_cdr(raw, conn.msgtype)))
    return out
