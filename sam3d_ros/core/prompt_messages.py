"""The one translation between ``sam3d_ros/Prompt`` and the core's request, and back; ROS-free.

The Prompt of the node's topic, of its goals and of a recording becomes a core query here, and
the core's field names map back to the ROS fields here and nowhere else. Only the message's
fields are read (rclpy or rosbags messages).

:func:`query_from_prompt` validates a Prompt with the hosted request's rules
(:mod:`sam3d_ros.core.inputs`); :func:`prompt_request` is its hosted-request view (for
``request.json``); :func:`ros_field` names the ROS field behind a core error.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

from sam3d_ros.core.errors import InputError
from sam3d_ros.core.image_decoding import mask_from_image
from sam3d_ros.core.inputs import MAX_SEED, group_prompts, parse_box_prompts, parse_point_prompts
from sam3d_ros.core.types import SegmentationQuery

__all__ = ["prompt_request", "query_from_prompt", "query_kind", "rename_field", "ros_field"]

_BIG = 2**31 - 1


def rename_field(name: str, prefix: str = "prompt") -> str:
    """Map a hosted request field name to the ROS message field (``box_prompts[0]`` → ...)."""
    name = re.sub(r"^box_prompts", f"{prefix}.boxes", name)
    name = re.sub(r"^point_prompts", f"{prefix}.points", name)
    return name


def query_from_prompt(
    msg: Optional[Any],
    width: Optional[int] = None,
    height: Optional[int] = None,
    prefix: str = "prompt",
) -> Tuple[SegmentationQuery, Dict[int, int]]:
    """Validate a ``sam3d_ros/Prompt`` and turn it into a query (hosted precedence).

    Reuses the hosted request validation and grouping of :mod:`sam3d_ros.core.inputs`. Without an
    image size only the size-independent checks run (labels, mask encodings, emptiness).

    Returns:
        ``(query, explicit)``: ``explicit`` maps the segmenter's object id to the id the prompt
        gave explicitly (prompt ``object_id >= 0`` or ``mask_object_ids``); objects not in it
        get tracked ids.

    Raises:
        InputError: naming the Prompt field, e.g. ``prompt.boxes[0].x_max``.
    """
    if msg is None:
        return SegmentationQuery(), {}
    w = int(width) if width else _BIG
    h = int(height) if height else _BIG
    masks = []
    for i, image in enumerate(msg.masks):
        mask = mask_from_image(image, f"{prefix}.masks[{i}]")
        if width and height and mask.shape != (h, w):
            raise InputError(
                f"{prefix}.masks[{i}]",
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}",
            )
        if not mask.any():
            raise InputError(f"{prefix}.masks[{i}]", "mask is empty (no non-zero pixel)")
        masks.append(mask)
    ids = [int(v) for v in msg.mask_object_ids]
    if ids and len(ids) != len(masks):
        raise InputError(
            f"{prefix}.mask_object_ids",
            f"has {len(ids)} ids for {len(masks)} masks; give one per mask or none",
        )
    if len(set(ids)) != len(ids):
        raise InputError(f"{prefix}.mask_object_ids", f"ids repeat: {ids}")
    if any(v < 0 for v in ids):
        raise InputError(f"{prefix}.mask_object_ids", f"ids must be >= 0, got {ids}")
    points = [
        {"x": p.x, "y": p.y, "label": int(p.label),
         "object_id": None if p.object_id < 0 else int(p.object_id)}
        for p in msg.points
    ]
    boxes = [
        {"x_min": b.x_min, "y_min": b.y_min, "x_max": b.x_max, "y_max": b.y_max,
         "label": int(b.label), "object_id": None if b.object_id < 0 else int(b.object_id)}
        for b in msg.boxes
    ]
    try:
        point_prompts = parse_point_prompts(points, w, h)
        box_prompts = parse_box_prompts(boxes, w, h)
        objects = group_prompts(point_prompts, box_prompts)
    except InputError as exc:
        raise InputError(rename_field(exc.field, prefix), exc.reason) from None
    if msg.seed > MAX_SEED:
        raise InputError(f"{prefix}.seed", f"must be in [0, {MAX_SEED}] or -1, got {msg.seed}")
    if masks:
        explicit = {i: v for i, v in enumerate(ids)}
        return SegmentationQuery(masks=masks), explicit
    if objects:
        given = {p["object_id"] for p in points + boxes if p["object_id"] is not None}
        return SegmentationQuery(objects=objects), {i: i for i in given}
    return SegmentationQuery(text=msg.text.strip() or None), {}


def prompt_request(msg: Optional[Any]) -> Dict[str, Any]:
    """The hosted-request view of a Prompt (for ``request.json`` of written runs)."""
    if msg is None:
        return {}
    req: Dict[str, Any] = {}
    if msg.text.strip():
        req["prompt"] = msg.text.strip()
    if msg.points:
        req["point_prompts"] = [
            {"x": p.x, "y": p.y, "label": int(p.label),
             **({"object_id": p.object_id} if p.object_id >= 0 else {})}
            for p in msg.points
        ]
    if msg.boxes:
        req["box_prompts"] = [
            {"x_min": b.x_min, "y_min": b.y_min, "x_max": b.x_max, "y_max": b.y_max,
             "label": int(b.label), **({"object_id": b.object_id} if b.object_id >= 0 else {})}
            for b in msg.boxes
        ]
    if msg.masks:
        req["mask_count"] = len(msg.masks)
    return req


def query_kind(query: Optional[SegmentationQuery]) -> str:
    """How a query asks for objects: ``masks``, ``prompts``, ``text``, ``auto`` (none: ``""``)."""
    if query is None:
        return ""
    if query.masks:
        return "masks"
    if query.objects:
        return "prompts"
    return "text" if query.text else "auto"


def ros_field(exc: InputError, kind: str = "", prefix: str = "", uris: bool = False) -> InputError:
    """Name the ROS field (topic or goal field) behind a core error's hosted field name.

    ``kind`` is the query's :func:`query_kind`, ``prefix`` the goal's ``"goal."`` (topics:
    ``""``), ``uris`` true for a goal given by ``image_uri`` / ``pointmap_uri`` / ``mask_uris``.
    """
    name = exc.field
    if uris:
        for hosted, ros in (("image_url", "image_uri"), ("pointmap_url", "pointmap_uri"),
                            ("mask_urls", "mask_uris")):
            if name.startswith(hosted):
                return InputError(ros + name[len(hosted):], exc.reason)
    if name.startswith("mask_urls"):
        name = name.replace("mask_urls", f"{prefix}prompt.masks" if kind == "masks"
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
