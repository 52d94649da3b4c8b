"""One synchronised image / depth / CameraInfo set → a core :class:`~sam3d_ros.core.types.Frame`.

Shared by the node (rclpy messages) and the offline reader of recordings (rosbags messages):
both decode camera messages here, so a frame of a recording and the same frame received live
become the same :class:`Frame`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from sam3d_ros.core import conventions
from sam3d_ros.core.compressed_images import depth_from_compressed, rgb_from_compressed
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.image_decoding import (
    depth_from_image,
    image_to_numpy,
    intrinsics_from_camera_info,
    rgb_from_image,
    rgb_layout,
    stamp_to_seconds,
)
from sam3d_ros.core.types import Frame

__all__ = ["CameraFrame", "build_camera_frame", "check_frame_id", "check_headers",
           "check_stamp", "is_compressed", "stamp_seconds"]


@dataclass
class CameraFrame:
    """A decoded camera frame: the core :class:`Frame` and the image header it came with."""

    header: Any
    frame: Frame
    received: float


def stamp_seconds(header: Any) -> float:
    """Header stamp in seconds."""
    return stamp_to_seconds(header.stamp)


def is_compressed(msg: Any) -> bool:
    """True for a ``sensor_msgs/CompressedImage`` (``format``; an ``Image`` has ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def check_frame_id(image: Any, prefix: str = "") -> None:
    """Refuse an image without ``header.frame_id``: outputs and TF cannot be published in ''."""
    if not image.header.frame_id:
        raise InputError(f"{prefix}image.header.frame_id",
                         "is empty: results, markers and TF need the camera's optical frame")


def check_headers(image: Any, depth: Optional[Any], camera_info: Any) -> None:
    """The cheap checks of a camera set, without decoding (for a frame the node drops).

    The image's frame_id and stamp (zero: unset), the raw images' encoding, step and data
    length (a view, no copy) and the CameraInfo; compressed payloads are not opened.

    Raises:
        InputError: naming the field, as :func:`build_camera_frame` would.
    """
    check_frame_id(image)
    check_stamp(image)
    if not is_compressed(image):
        rgb_layout(image, "image")
    if depth is not None and not is_compressed(depth):
        image_to_numpy(depth, "depth")
    intrinsics_from_camera_info(camera_info, "camera_info")


def check_stamp(image: Any) -> None:
    """Refuse a camera image stamped zero (unset: tf2 would read it as 'the latest')."""
    if image.header.stamp.sec == 0 and image.header.stamp.nanosec == 0:
        raise InputError("image.header.stamp", "is zero (unset); stamp frames with the "
                         "capture time")


def build_camera_frame(
    image: Any,
    depth: Optional[Any],
    camera_info: Any,
    prefix: str = "",
    warn: Optional[Callable[[str, str], None]] = None,
) -> CameraFrame:
    """Decode one synchronised image / depth / CameraInfo set into a :class:`CameraFrame`.

    * CameraInfo for another resolution of the same camera is rescaled to the image
      (:func:`~sam3d_ros.core.conventions.scale_intrinsics`);
    * a depth image of another size with the same aspect ratio is back-projected with its own
      (rescaled) intrinsics and resampled (nearest) onto the colour pixels;
    * ``32FC1`` depth whose median looks like millimetres is refused (a common unit bug);
    * ``CompressedImage`` colour (JPEG/PNG) and ``compressedDepth`` depth (told from ``Image`` by
      their ``format`` field) are decoded by :mod:`sam3d_ros.core.compressed_images`, their
      declared sizes checked against the CameraInfo and the colour image before decoding.

    The messages are rclpy's (the node) or rosbags' (a recording): only their fields are read.

    ``warn(key, message)`` receives non-fatal remarks (frame ids that differ).

    Raises:
        InputError: naming ``image``, ``depth`` or ``camera_info`` fields.
    """
    if is_compressed(image):
        # The CameraInfo first: it bounds the size the payload may declare.
        intr = intrinsics_from_camera_info(camera_info, f"{prefix}camera_info")
        rgb = rgb_from_compressed(image, f"{prefix}image", (intr.width, intr.height),
                                  f"{prefix}camera_info")
    else:
        rgb = rgb_from_image(image, f"{prefix}image")
        intr = intrinsics_from_camera_info(camera_info, f"{prefix}camera_info")
    h, w = rgb.shape[:2]
    if (intr.width, intr.height) != (w, h):
        if not conventions.same_aspect(intr.width, intr.height, w, h):
            raise InputError(
                f"{prefix}camera_info",
                f"is for a {intr.width}x{intr.height} image but the image is {w}x{h} "
                "(different aspect ratio: not the same camera)",
            )
        intr = conventions.scale_intrinsics(intr, w, h)
    points = None
    if depth is not None:
        if warn is not None and depth.header.frame_id != image.header.frame_id:
            warn(
                "depth_frame_id",
                f"depth frame_id {depth.header.frame_id!r} differs from image frame_id "
                f"{image.header.frame_id!r}; depth must be registered to the colour image "
                "(outputs use the image's frame)",
            )
        if is_compressed(depth):
            depth_m, depth_encoding = depth_from_compressed(depth, f"{prefix}depth", (w, h),
                                                            f"the {w}x{h} {prefix}image")
        else:
            depth_m, depth_encoding = depth_from_image(depth, f"{prefix}depth"), depth.encoding
        dh, dw = depth_m.shape
        if (dw, dh) != (w, h):
            if not conventions.same_aspect(dw, dh, w, h):
                raise InputError(
                    f"{prefix}depth",
                    f"depth is {dw}x{dh} but the image is {w}x{h} and the aspect ratios "
                    "differ; publish depth registered to the colour image",
                )
            d_points = conventions.backproject(depth_m, conventions.scale_intrinsics(intr, dw, dh))
            cols = np.minimum(((np.arange(w) + 0.5) * dw / w).astype(np.int64), dw - 1)
            rows = np.minimum(((np.arange(h) + 0.5) * dh / h).astype(np.int64), dh - 1)
            points = np.ascontiguousarray(d_points[rows[:, None], cols[None, :]])
        else:
            points = conventions.backproject(depth_m, intr)
        z = points[:, :, 2]
        valid = np.isfinite(z)
        if not valid.any():
            raise InputError(
                f"{prefix}depth", "no valid depth pixel (all zero, NaN or infinite)"
            )
        if depth_encoding == conventions.DEPTH_32FC1:
            conventions.check_float_depth_is_metres(z, f"{prefix}depth.encoding")
        else:
            conventions.check_integer_depth_is_millimetres(z, f"{prefix}depth.encoding")
    frame = Frame(rgb=rgb, points=points, intrinsics=intr)
    return CameraFrame(header=image.header, frame=frame, received=time.monotonic())
