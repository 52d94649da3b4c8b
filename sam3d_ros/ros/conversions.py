"""numpy → rclpy messages: the node's ``sensor_msgs/Image`` and ``builtin_interfaces/Time``.

Decoding (Image, CompressedImage, CameraInfo → arrays) is ROS-free and lives in
:mod:`sam3d_ros.core.image_decoding` and :mod:`sam3d_ros.core.compressed_images`; point clouds in
:mod:`sam3d_ros.core.point_clouds`. Encoding copies the array's bytes once into the
``array.array('B')`` that rclpy stores (assigning an ``array.array`` skips rclpy's per-byte field
checks).
"""

from __future__ import annotations

import math
import sys
from typing import Optional

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from sam3d_ros.core.errors import InputError
from sam3d_ros.core.image_decoding import encoding_info
from sam3d_ros.ros.message_kit import bytes_array, set_data

__all__ = ["numpy_to_image", "ros_time_from_seconds"]


def numpy_to_image(
    image: np.ndarray, encoding: str, header: Optional[Header] = None, field: str = "image"
) -> Image:
    """Encode an array as a ``sensor_msgs/Image`` (no row padding, host byte order).

    Args:
        image: H×W (single channel) or H×W×C array whose type matches ``encoding``
            (``uint8`` for rgb8/bgr8/mono8/8UC*, ``uint16`` for mono16/16UC1 millimetres,
            ``float32`` for 32FC1 metres, ...). The bytes are written as they are: no channel
            reorder, no unit conversion (see :mod:`sam3d_ros.core.conventions` for depth units).
        encoding: a key of :data:`sam3d_ros.core.image_decoding.IMAGE_ENCODINGS`.
        header: copied into the message when given.
        field: name used in errors.

    Returns:
        the message; ``step = width * bytes per pixel``, ``is_bigendian`` = host byte order.

    Raises:
        InputError: ``<field>.encoding`` unsupported, or the array's shape / dtype does not
            match it (``<field>``).
    """
    dtype, channels = encoding_info(encoding, f"{field}.encoding")
    image = np.asarray(image)
    if image.ndim == 3 and channels == 1 and image.shape[2] == 1:
        image = image[:, :, 0]
    want_ndim = 2 if channels == 1 else 3
    if image.ndim != want_ndim or (channels > 1 and image.shape[2] != channels):
        want = "H×W" if channels == 1 else f"H×W×{channels}"
        raise InputError(field, f"{encoding} needs an {want} array, got shape {image.shape}")
    if image.dtype.kind != dtype.kind or image.dtype.itemsize != dtype.itemsize:
        raise InputError(
            field, f"{encoding} needs {dtype.newbyteorder('=').name} data, got {image.dtype}"
        )
    image = np.ascontiguousarray(image, dtype=dtype.newbyteorder("="))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = sys.byteorder == "big"
    msg.step = int(image.shape[1]) * channels * dtype.itemsize
    set_data(msg, bytes_array(image))
    return msg


def ros_time_from_seconds(seconds: float, field: str = "stamp") -> Time:
    """``builtin_interfaces/Time`` of ``seconds`` (rounded to the nearest nanosecond).

    Negative times are floored: -1.25 s → ``sec=-2, nanosec=750000000``.

    Raises:
        InputError: ``seconds`` not finite or outside the int32 range of ``sec``.
    """
    seconds = float(seconds)
    if not math.isfinite(seconds) or not (-(2**31) <= seconds < 2**31):
        raise InputError(field, f"time must be finite and fit in int32 seconds, got {seconds}")
    sec = math.floor(seconds)
    nanosec = int(round((seconds - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=int(sec), nanosec=nanosec)
