"""Node cases: bad camera frames, prompts, goals and compressed payloads, and the load cases.

How a case is run and judged: :mod:`campaign.node_session`; load cases: :mod:`campaign.node_load`.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from builtin_interfaces.msg import Time
from node_harness import box_prompt
from PIL import Image as PILImage
from sam3d_ros.action import Reconstruct
from sam3d_ros.msg import BoxPrompt, PointPrompt, Prompt
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from campaign.node_load import lifecycle_cycles, soak, storm
from campaign.node_session import (
    Mutator,
    NodeCampaign,
    NodeSession,
    goal_case,
    set_fields,
    topic_case,
)
from campaign.outcome import Case, Outcome
from campaign.payloads import npy_declaring, npz_bomb, png_bytes
from sam3d_ros.core.conventions import metres_to_depth16
from sam3d_ros.ros.conversions import numpy_to_image

BOMB_HWM_MB = 300.0  # peak-RSS growth allowed to a node fed a size bomb


def _replace(key: str, make: Callable[[NodeCampaign], Any]) -> Mutator:
    def mutate(msgs: Dict[str, Any], camp: NodeCampaign) -> None:
        header = msgs[key].header
        msgs[key] = make(camp)
        msgs[key].header = Header(stamp=header.stamp, frame_id=header.frame_id)
    return mutate


def _depth_image(depth: np.ndarray, encoding: str) -> Image:
    return numpy_to_image(np.ascontiguousarray(depth), encoding)


def _all_headers(**fields: Any) -> Mutator:
    def mutate(msgs: Dict[str, Any], camp: NodeCampaign) -> None:
        for msg in msgs.values():
            for name, value in fields.items():
                setattr(msg.header, name, value)
    return mutate


def _stamp(session: NodeSession, offset_s: Optional[float]) -> Time:
    """Now + ``offset_s`` on the peer's clock; ``None``: the zero stamp."""
    if offset_s is None:
        return Time(sec=0, nanosec=0)
    total = session.rec.node.get_clock().now().nanoseconds + int(offset_s * 1e9)
    return Time(sec=total // 10**9, nanosec=total % 10**9)


def _big_endian_depth(camp: NodeCampaign) -> Image:
    msg = numpy_to_image(metres_to_depth16(camp.sc.depth_m), "16UC1")
    msg.data = metres_to_depth16(camp.sc.depth_m).astype(">u2").tobytes()
    msg.is_bigendian = 1
    return msg


# -------------------------------------------------------------------------------- the cases


def _frame_cases() -> List[Case]:
    def w3(msg: Any) -> int:  # row bytes of rgb8
        return msg.width * 3

    def depth_of(values: Callable[[Any], np.ndarray], encoding: str):
        return _replace("depth", lambda camp: _depth_image(values(camp), encoding))

    specs: List[Tuple[str, str, str, Any, bool, str]] = [
        ("image-encoding-yuv422", "image declared yuv422 (2 bytes/pixel)", "image.encoding",
         set_fields("image", encoding="yuv422", step=lambda m: m.width * 2,
              data=lambda m: bytes(m.width * m.height * 2)), True, ""),
        ("image-encoding-bayer", "image declared bayer_rggb8", "image.encoding",
         set_fields("image", encoding="bayer_rggb8", step=lambda m: m.width,
              data=lambda m: bytes(m.width * m.height)), False, ""),
        ("image-8uc3-as-colour", "colour image declared 8UC3 (no channel order) instead of bgr8",
         "image.encoding", set_fields("image", encoding="8UC3"), True, ""),
        ("image-encoding-unknown", "image encoding 'foo'", "image.encoding",
         set_fields("image", encoding="foo"), False, ""),
        ("image-step-too-small", "image step one byte short of width × 3", "image.step",
         set_fields("image", step=lambda m: w3(m) - 1), True, ""),
        ("image-data-short", "image data half of height × step", "image.data",
         set_fields("image", data=lambda m: bytes(m.data)[: len(m.data) // 2]), True, ""),
        ("image-zero-size", "image 0×0 with empty data (not to be blamed on the intrinsics)",
         "image", set_fields("image", width=0, height=0, step=0, data=b""), True, ""),
        ("depth-big-endian-16uc1", "16UC1 depth sent big-endian (is_bigendian = 1): must be "
         "decoded, not refused", "", _replace("depth", _big_endian_depth), True, ""),
        ("depth-encoding-8uc1", "depth declared 8UC1", "depth.encoding",
         depth_of(lambda c: (metres_to_depth16(c.sc.depth_m) // 256).astype(np.uint8), "8UC1"),
         False, ""),
        ("depth-step-too-small", "depth step one byte short", "depth.step",
         set_fields("depth", step=lambda m: m.width * 2 - 1), False, ""),
        ("depth-data-short", "depth data 100 bytes", "depth.data",
         set_fields("depth", data=bytes(100)), True, ""),
        ("depth-size-mismatch-aspect", "depth 100×100 for a 320×240 image", "depth",
         depth_of(lambda c: np.full((100, 100), 800, np.uint16), "16UC1"), True, ""),
        ("depth-32fc1-millimetres", "32FC1 depth in millimetres (median ~700)", "depth",
         depth_of(lambda c: np.nan_to_num(c.sc.depth_m * 1000.0).astype(np.float32), "32FC1"),
         True, ""),
        ("depth-all-zero", "16UC1 depth, every pixel 0", "depth",
         depth_of(lambda c: np.zeros(c.sc.depth_m.shape, np.uint16), "16UC1"), False, ""),
        ("depth-all-nan", "32FC1 depth, every pixel NaN", "depth",
         depth_of(lambda c: np.full(c.sc.depth_m.shape, np.nan, np.float32), "32FC1"), True, ""),
        ("depth-all-inf", "32FC1 depth, every pixel +inf", "depth",
         depth_of(lambda c: np.full(c.sc.depth_m.shape, np.inf, np.float32), "32FC1"), False,
         ""),
        ("camera-info-zero-focal", "CameraInfo with K and P all zero", "camera_info",
         set_fields("info", k=[0.0] * 9, p=[0.0] * 12), True, ""),
        ("camera-info-negative-focal", "CameraInfo P with fx < 0", "camera_info",
         set_fields("info", p=lambda m: [-m.p[0]] + list(m.p[1:])), False, ""),
        ("camera-info-nan-focal", "CameraInfo P with fx = NaN", "camera_info",
         set_fields("info", p=lambda m: [float("nan")] + list(m.p[1:])), False, ""),
        ("camera-info-other-aspect", "CameraInfo for a 100×100 image (image 320×240)",
         "camera_info", set_fields("info", width=100, height=100), True, ""),
        ("camera-info-zero-size", "CameraInfo width = height = 0", "camera_info",
         set_fields("info", width=0, height=0), False, ""),
        ("frame-id-empty", "header.frame_id '' on image, depth and camera_info (TF and "
         "markers cannot use it)", "image.header.frame_id", _all_headers(frame_id=""), True,
         ""),
    ]
    cases = [Case("node", name, text, field,
                  partial(topic_case, group="raw", field=field, mutate=mutate), quick=quick,
                  known=known, group="raw")
             for name, text, field, mutate, quick, known in specs]

    def stamped(seconds: Optional[float]):
        def run(camp: NodeCampaign) -> Outcome:
            # Zero: refused. Backwards or ahead: processed with a warning (clocks differ).
            return topic_case(camp, "raw", "image.header.stamp",
                              stamp=_stamp(camp.session("raw"), seconds),
                              processed=seconds is not None)
        return run

    for name, text, seconds in (
            ("stamp-zero", "all three stamped 0 (tf2: 'latest'): refused", None),
            ("stamp-backwards", "a frame stamped 5 s before the previous one: processed, "
             "with a warning", -5.0),
            ("stamp-far-future", "a frame stamped one day ahead: processed, with a warning",
             86400.0)):
        cases.append(Case("node", name, text, "image.header.stamp", stamped(seconds),
                          quick=True, group="raw"))
    return cases


def _prompt_cases() -> List[Case]:
    def boxes(**change):
        def make(camp: NodeCampaign) -> Prompt:
            msg = box_prompt(camp.sc)
            for key, value in change.items():
                setattr(msg.boxes[0], key, value(camp) if callable(value) else value)
            return msg
        return make

    def point(**fields):
        return lambda camp: Prompt(points=[PointPrompt(**fields)])

    def mask(shape_of, encoding="mono8", fill=255):
        def make(camp: NodeCampaign) -> Prompt:
            h, w = shape_of(camp)
            m = np.zeros((h, w), np.uint8)
            m[h // 4: h // 2, w // 4: w // 2] = fill
            if encoding == "rgb8":
                img = numpy_to_image(np.repeat(m[:, :, None], 3, axis=2), "rgb8")
            else:
                img = numpy_to_image(m, encoding)
            return Prompt(masks=[img])
        return make

    def ids_mismatch(camp: NodeCampaign) -> Prompt:
        msg = mask(lambda c: (c.height, c.width))(camp)
        msg.mask_object_ids = [1, 2]
        return msg

    full = lambda c: (c.height, c.width)  # noqa: E731
    specs = [
        ("prompt-box-out-of-range", "box x_max = width + 10", "prompt.boxes[0].x_max",
         boxes(x_max=lambda c: c.width + 10), True),
        ("prompt-box-inverted", "box y_max < y_min", "prompt.boxes[0].y_max",
         boxes(y_min=100, y_max=10), False),
        ("prompt-point-out-of-range", "point x = -1", "prompt.points[0].x",
         point(x=-1, y=5, label=1, object_id=-1), True),
        ("prompt-point-label-5", "point label 5", "prompt.points[0].label",
         point(x=5, y=5, label=5, object_id=-1), False),
        ("prompt-mask-wrong-size", "mask 100×100 for a 320×240 image", "prompt.masks[0]",
         mask(lambda c: (100, 100)), True),
        ("prompt-mask-wrong-encoding", "mask as rgb8", "prompt.masks[0].encoding",
         mask(full, "rgb8"), False),
        ("prompt-mask-empty", "mask with no non-zero pixel", "prompt.masks[0]",
         mask(full, fill=0), False),
        ("prompt-mask-ids-mismatch", "one mask, two mask_object_ids", "prompt.mask_object_ids",
         ids_mismatch, False),
    ]
    return [Case("node", name, text, field, partial(_prompt_case, make=make, field=field),
                 quick=quick, group="raw")
            for name, text, field, make, quick in specs]


def _prompt_case(camp: NodeCampaign, make: Callable[[NodeCampaign], Prompt],
                 field: str) -> Outcome:
    return topic_case(camp, "raw", field, prompt=make(camp))


def _goal_cases() -> List[Case]:
    def explicit(**change):
        def build(camp: NodeCampaign) -> Any:
            goal = camp.explicit_goal()
            for path, value in change.items():
                obj = goal
                *parents, leaf = path.split("__")
                for name in parents:
                    obj = getattr(obj, name)
                setattr(obj, leaf, value(camp) if callable(value) else value)
            return goal
        return build

    def uri(**fields):
        def build(camp: NodeCampaign) -> Any:
            return camp.uri_goal(**{k: v(camp) if callable(v) else v for k, v in fields.items()})
        return build

    def file_in(name: str, make: Callable[[Path], Any]) -> Callable[[NodeCampaign], str]:
        def path(camp: NodeCampaign) -> str:
            p = camp.inp / name
            if not os.path.lexists(p):
                make(p)
            return str(p)
        return path

    def symlink_out(p: Path) -> None:
        p.symlink_to(p.parent.parent / "other" / "rgb.png")

    def pickled(p: Path) -> None:
        evil = np.empty(1, dtype=object)
        evil[0] = {"x": 1}
        np.save(p, evil, allow_pickle=True)

    def small_mask(p: Path) -> None:
        PILImage.fromarray(np.full((100, 100), 255, np.uint8)).save(p)

    oversized = "data:image/png;base64," + "A" * (4 * (50 * 2**20 // 3 + 64))
    specs = [
        ("goal-empty-depth", "explicit goal, depth image 0×0 (no depth)", "goal.depth",
         explicit(depth=Image()), True, {}),
        ("goal-image-frame-id-empty", "explicit goal, image header.frame_id ''",
         "goal.image.header.frame_id", explicit(image__header__frame_id=""), True, {}),
        ("goal-no-image", "use_latest_frame false, no image and no image_uri", "goal.image",
         lambda camp: Reconstruct.Goal(prompt=box_prompt(camp.sc), use_latest_frame=False),
         False, {}),
        ("goal-camera-info-zero-focal", "explicit goal, CameraInfo K and P all zero",
         "goal.camera_info", explicit(camera_info__k=[0.0] * 9, camera_info__p=[0.0] * 12),
         False, {}),
        ("goal-prompt-box-out-of-range", "explicit goal, box y_max = height",
         "goal.prompt.boxes[0].y_max",
         lambda camp: _box_goal(camp, y_max=camp.height), False, {}),
        ("goal-image-uri-outside-roots", "image_uri outside allowed_input_roots", "image_uri",
         uri(image_uri=lambda c: str(c.other / "rgb.png")), True, {}),
        ("goal-image-uri-symlink-escape", "image_uri: a symlink inside the allowed root to a "
         "file outside it", "image_uri", uri(image_uri=file_in("escape.png", symlink_out)),
         True, {}),
        ("goal-image-uri-data-malformed", "image_uri data: without a comma", "image_uri",
         uri(image_uri="data:image/png;base64"), False, {}),
        ("goal-image-uri-data-oversized", "image_uri data: URI of 50 MiB + 64 bytes",
         "image_uri", uri(image_uri=oversized), False, {}),
        ("goal-image-uri-decompression-bomb", "image_uri PNG declaring 30000×30000",
         "image_uri", uri(image_uri=file_in("bomb.png", lambda p: p.write_bytes(
             png_bytes(30000, 30000, 1, 0, bytes(30000 // 8))))), True,
         {"hwm": BOMB_HWM_MB}),
        ("goal-pointmap-npz-zip-bomb", "pointmap_uri NPZ whose member inflates to 512 MiB",
         "pointmap_uri", uri(pointmap_uri=file_in("bomb.npz", npz_bomb)), True,
         {"hwm": BOMB_HWM_MB}),
        ("goal-pointmap-pickled-npy", "pointmap_uri NPY of a pickled object array",
         "pointmap_uri", uri(pointmap_uri=file_in("evil.npy", pickled)), False, {}),
        ("goal-pointmap-declares-112gib", "pointmap_uri NPY declaring 100000×100000×3 float32",
         "pointmap_uri", uri(pointmap_uri=file_in("huge.npy", lambda p: npy_declaring(
             p, (100000, 100000, 3)))), True,
         {}),
        ("goal-mask-uri-wrong-size", "mask_uris[0] 100×100 for a 320×240 image",
         "mask_uris[0]", uri(mask_uris=lambda c: [file_in("mask100.png", small_mask)(c)]),
         False, {}),
    ]
    return [Case("node", name, text, field,
                 partial(goal_case, group="raw", field=field, build=build,
                         hwm_bound_mb=extra.get("hwm")),
                 quick=quick, known=extra.get("known", ""), group="raw")
            for name, text, field, build, quick, extra in specs]


def _box_goal(camp: NodeCampaign, **change: Any) -> Any:
    goal = camp.explicit_goal()
    for key, value in change.items():
        setattr(goal.prompt.boxes[0], key, value)
    return goal


def _many_boxes(camp: NodeCampaign, n: int = 10000) -> Prompt:
    rng = np.random.default_rng(0)
    xy = rng.integers(0, [camp.width - 8, camp.height - 8], size=(n, 2))
    return Prompt(boxes=[BoxPrompt(x_min=int(x), y_min=int(y), x_max=int(x) + 6,
                                   y_max=int(y) + 6, label=1, object_id=-1) for x, y in xy])


def _compressed_cases() -> List[Case]:
    def image_data(make: Callable[[bytes], bytes], fmt: Optional[str] = None) -> Mutator:
        def mutate(msgs: Dict[str, Any], camp: NodeCampaign) -> None:
            good = bytes(msgs["image"].data)
            msgs["image"].data = make(good)
            if fmt is not None:
                msgs["image"].format = fmt
        return mutate

    def depth_data(make: Callable[[bytes], bytes]) -> Mutator:
        def mutate(msgs: Dict[str, Any], camp: NodeCampaign) -> None:
            msgs["depth"].data = make(bytes(msgs["depth"].data))
        return mutate

    def garbage(good: bytes) -> bytes:
        return good[:2] + np.random.default_rng(0).bytes(len(good) - 2)

    def depth_bomb(good: bytes) -> bytes:
        from test_compressed import png_with_size

        return good[:12] + png_with_size(good[12:], 30000, 22500)

    specs = [
        ("compressed-jpeg-garbage", "JPEG payload: SOI then random bytes", "image",
         image_data(garbage), True),
        ("compressed-jpeg-truncated", "JPEG payload cut at two thirds", "image",
         image_data(lambda g: g[: len(g) * 2 // 3]), False),
        ("compressed-format-unknown", "format 'rgb8; webp compressed'", "image",
         image_data(lambda g: g, "rgb8; webp compressed"), False),
        ("compressed-depth-header-only", "compressedDepth payload of 12 bytes (header only)",
         "depth", depth_data(lambda g: g[:12]), True),
        ("compressed-depth-corrupt-png", "compressedDepth: header, then random bytes",
         "depth", depth_data(lambda g: g[:12] + garbage(g[12:])), False),
        ("compressed-depth-png-bomb", "compressedDepth PNG declaring 30000×22500",
         "depth", depth_data(depth_bomb), True),
    ]
    return [Case("node", name, text, field,
                 partial(topic_case, group="compressed", field=field, mutate=mutate),
                 quick=quick, group="compressed")
            for name, text, field, mutate, quick in specs]


# -------------------------------------------------------------------------------- load


def _boxes_prompt_case(camp: NodeCampaign) -> Outcome:
    """10,000 boxes on the prompt topic: refused naming the field, or processed in time."""
    return topic_case(camp, "boxes-prompt", "prompt.boxes", prompt=_many_boxes(camp))


def _boxes_goal_case(camp: NodeCampaign) -> Outcome:
    return goal_case(camp, "boxes-goal", "goal.prompt.boxes",
                     lambda c: c.explicit_goal(_many_boxes(c)), timeout=120.0)


def node_cases(soak_s: float = 600.0, bad_every_s: float = 30.0) -> List[Case]:
    """Every node case, grouped by node session, in table order."""
    cases = _frame_cases() + _prompt_cases() + _goal_cases() + _compressed_cases()
    cases += [
        Case("node", "prompt-10000-boxes", "a prompt of 10,000 boxes, then a good frame "
             "(liveness bound 60 s)", "prompt.boxes", _boxes_prompt_case, group="boxes-prompt"),
        Case("node", "goal-10000-boxes", "an explicit goal with 10,000 boxes (liveness bound "
             "120 s)", "goal.prompt.boxes", _boxes_goal_case, group="boxes-goal"),
        Case("node", "goal-storm-50", "50 goals sent at once, each cancelled once accepted: "
             "every goal and cancel answered", "", storm(50), quick=True, group="storm50"),
        Case("node", "goal-storm-120", "120 goals sent at once, each cancelled once accepted",
             "", storm(120), group="storm120"),
        Case("node", "lifecycle-20-cycles-30hz", "20 deactivate/activate cycles while frames "
             "arrive at 30 Hz", "", lifecycle_cycles(20), quick=True, group="lifecycle"),
    ]
    if soak_s > 0:
        cases.append(Case("node", "soak", f"{soak_s:g} s of 30 Hz frames with a bad frame "
                          f"every {bad_every_s:g} s (four kinds in turn): every bad frame in "
                          "diagnostics, RSS flat within 10 %", "", soak(soak_s, bad_every_s),
                          group="soak"))
    return cases
