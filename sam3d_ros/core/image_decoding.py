"""Decoding ROS image messages into arrays, ROS-free: the node and the recording reader share it.

The project does not use ``cv_bridge`` or ``sensor_msgs_py`` (neither is on PyPI for ROS 2, and
the PyPI ``cv-bridge`` is a ROS 1 port that breaks on numpy 2 and mangles ``16UC1``).

Every function is duck-typed on the message's fields (``height``, ``width``, ``encoding``,
``is_bigendian``, ``step``, ``data`` for ``sensor_msgs/Image``; ``k``, ``p``, ``roi``,
``binning_*`` for ``CameraInfo``), so rclpy messages and the rosbags messages of a recording
decode alike.

Units and conventions (see :mod:`sam3d_ros.core.conventions`, which owns them):

* colour images come out as H×W×3 ``uint8`` RGB;
* depth images come out as H×W ``float32`` metres with NaN = invalid (``16UC1`` = millimetres,
  ``32FC1`` = metres, converted by :func:`sam3d_ros.core.conventions.depth_to_metres`);
* masks come out as H×W ``bool`` (non-zero = object).

Every function raises :class:`sam3d_ros.core.errors.InputError` naming the offending message field
(``image.encoding``, ``depth.step``, ``camera_info.k``, ...) for bad input; the prefix is the
``field`` argument of each function.

Speed: decoding uses ``np.frombuffer`` / strided views of ``msg.data`` (no copy unless a byte
swap, a channel reorder or a unit conversion needs one).
"""

from __future__ import annotations

import re
from typing import Dict, Tuple

import numpy as np

from sam3d_ros.core.conventions import (
    DEPTH_16UC1,
    DEPTH_32FC1,
    depth_to_metres,
    intrinsics_from_matrix,
    scale_intrinsics,
)
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.types import CameraIntrinsics

__all__ = [
    "IMAGE_ENCODINGS",
    "depth_from_image",
    "encoding_info",
    "image_to_numpy",
    "intrinsics_from_camera_info",
    "mask_from_image",
    "message_buffer",
    "rgb8_from_array",
    "rgb_from_image",
    "rgb_layout",
    "stamp_to_seconds",
]

# --------------------------------------------------------------------------------------------
# Image encodings
# --------------------------------------------------------------------------------------------

_NAMED_ENCODINGS: Dict[str, Tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "rgb16": ("u2", 3),
    "bgr16": ("u2", 3),
    "rgba16": ("u2", 4),
    "bgra16": ("u2", 4),
    "mono16": ("u2", 1),
    **{f"bayer_{p}8": ("u1", 1) for p in ("rggb", "bggr", "gbrg", "grbg")},
    **{f"bayer_{p}16": ("u2", 1) for p in ("rggb", "bggr", "gbrg", "grbg")},
}
_CV_DEPTHS = {
    "8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4", "32F": "f4", "64F": "f8"
}
_CV_TYPE = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C([1-4])$")

IMAGE_ENCODINGS: Dict[str, Tuple[str, int]] = dict(_NAMED_ENCODINGS)
"""Every supported ``sensor_msgs/Image`` encoding → (numpy type code, channels).

The named encodings of ``sensor_msgs/image_encodings.hpp`` (rgb/bgr/rgba/bgra 8 and 16 bit,
mono8, mono16, Bayer 8/16) and the OpenCV ``{8U,8S,16U,16S,32S,32F,64F}C{1..4}`` types. Bayer
images decode to their raw single-channel mosaic.
"""
IMAGE_ENCODINGS.update(
    {f"{d}C{c}": (code, c) for d, code in _CV_DEPTHS.items() for c in (1, 2, 3, 4)}
)


def encoding_info(encoding: str, field: str) -> Tuple[np.dtype, int]:
    """Return (little-endian dtype, channels) of an encoding, or raise ``InputError``."""
    info = IMAGE_ENCODINGS.get(encoding)
    if info is None:
        raise InputError(
            field,
            f"unsupported image encoding {encoding!r}; supported: rgb8, bgr8, rgba8, bgra8, "
            "mono8, mono16, rgb16, bgr16, rgba16, bgra16, bayer_*8/16 and OpenCV types such "
            "as 8UC1, 8UC3, 16UC1, 32FC1",
        )
    return np.dtype("<" + info[0]), info[1]


def message_buffer(data, field: str) -> memoryview:
    """A read-only byte view of a message's ``data`` (array.array, bytes, list ...)."""
    try:
        view = memoryview(data)
    except TypeError:
        try:
            view = memoryview(np.asarray(data, dtype=np.uint8).tobytes())
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError(field, f"data is not a byte sequence: {exc}") from None
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view.toreadonly()


def image_to_numpy(msg, field: str = "image") -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` to a numpy array in the pixel type of its encoding.

    Honours ``step`` (row padding) and ``is_bigendian``. The result is a **read-only view** of
    ``msg.data`` when no byte swap is needed (copy it before writing); big-endian data of
    multi-byte types is byte-swapped into a new native-order array.

    Args:
        msg: the image; any object with ``height``, ``width``, ``encoding``, ``is_bigendian``,
            ``step`` and ``data`` works.
        field: message name used in errors (``"image"``, ``"depth"``, ``"mask"`` ...).

    Returns:
        H×W array for single-channel encodings, H×W×C otherwise, of the encoding's type
        (``uint8`` for rgb8/mono8/8UC*, ``uint16`` for mono16/16UC*, ``float32`` for 32FC*, ...).
        Channel order is the encoding's (no bgr → rgb swap here; see :func:`rgb_from_image`).

    Raises:
        InputError: ``<field>.encoding`` unsupported; ``<field>.step`` smaller than
            ``width * bytes per pixel``; ``<field>.data`` shorter than ``height * step``.
    """
    dtype, channels = encoding_info(msg.encoding, f"{field}.encoding")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise InputError(
            f"{field}.step",
            f"step {step} < width {width} × {channels * dtype.itemsize} bytes per pixel "
            f"({msg.encoding}) = {row_bytes}",
        )
    buf = message_buffer(msg.data, f"{field}.data")
    if len(buf) < height * step:
        raise InputError(
            f"{field}.data",
            f"data has {len(buf)} bytes, expected height × step = {height} × {step} = "
            f"{height * step}",
        )
    if msg.is_bigendian:
        dtype = dtype.newbyteorder(">")
    shape: Tuple[int, ...] = (height, width, channels)
    strides: Tuple[int, ...] = (step, channels * dtype.itemsize, dtype.itemsize)
    if channels == 1:
        shape, strides = shape[:2], strides[:2]
    if height == 0 or width == 0:
        return np.zeros(shape, dtype=dtype.newbyteorder("="))
    out = np.ndarray(shape=shape, dtype=dtype, buffer=buf, strides=strides)
    if not dtype.isnative:
        out = out.astype(dtype.newbyteorder("="))
    return out


def rgb_from_image(msg, field: str = "image") -> np.ndarray:
    """Decode a colour (or grey) image to H×W×3 ``uint8`` RGB.

    ``bgr8``/``bgra8`` (and their 16-bit forms) are reordered, alpha is dropped, ``mono8`` /
    ``8UC1`` / ``mono16`` are replicated to three channels, 16-bit values are scaled to 8 bits
    (``round(v / 257)``). ``8UC3``/``8UC4`` carry no channel order and are refused.

    Returns:
        a new, writable, C-contiguous H×W×3 ``uint8`` array in RGB order.

    Raises:
        InputError: ``<field>.encoding`` is not a colour or grey encoding, ``<field>.width`` /
            ``<field>.height`` is zero, or the image is malformed (see :func:`image_to_numpy`).
    """
    return rgb8_from_array(rgb_layout(msg, field), bgr=msg.encoding.startswith("bgr"))


def rgb_layout(msg, field: str = "image") -> np.ndarray:
    """The checks of :func:`rgb_from_image` without the conversion: a read-only view.

    Cheap (no copy): the node runs it on frames it drops unprocessed.
    """
    enc = msg.encoding
    if enc not in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1",
                   "rgb16", "bgr16", "rgba16", "bgra16", "mono16"):
        raise InputError(
            f"{field}.encoding",
            f"{enc!r} is not a colour image encoding; use rgb8, bgr8, rgba8, bgra8 or mono8"
            + (" (8UC3/8UC4 have no channel order)" if enc in ("8UC3", "8UC4") else ""),
        )
    if not msg.width or not msg.height:  # before any size comparison blames the CameraInfo
        raise InputError(f"{field}.{'height' if msg.width else 'width'}",
                         f"image is empty ({msg.width}x{msg.height})")
    return image_to_numpy(msg, field)


def rgb8_from_array(img: np.ndarray, bgr: bool) -> np.ndarray:
    """H×W×3 ``uint8`` RGB of a decoded grey / colour pixel array (raw or compressed images).

    ``img``: H×W (grey), H×W×2 (grey + alpha), H×W×3 or H×W×4 (colour + alpha; ``bgr`` says the
    channel order), ``uint8`` or ``uint16`` (scaled to 8 bits: ``round(v / 257)``). Alpha is
    dropped, grey is replicated.
    """
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    out = np.empty(img.shape[:2] + (3,), dtype=np.uint8)
    if img.ndim == 2 or img.shape[2] <= 2:
        grey = img if img.ndim == 2 else img[:, :, 0]
        sources = (grey, grey, grey)
    elif bgr:
        sources = (img[:, :, 2], img[:, :, 1], img[:, :, 0])
    else:
        sources = (img[:, :, 0], img[:, :, 1], img[:, :, 2])
    # Per-channel 2-D copies: much faster than copying a channel-reversed H×W×3 view.
    for channel, source in enumerate(sources):
        out[:, :, channel] = source
    return out


def depth_from_image(msg, field: str = "depth") -> np.ndarray:
    """Decode a depth image to H×W ``float32`` metres, NaN = invalid (REP 118).

    ``16UC1`` (and ``mono16``) hold millimetres, ``0`` = invalid; ``32FC1`` holds metres, NaN,
    ``±inf`` and ``<= 0`` are invalid. Converted by
    :func:`sam3d_ros.core.conventions.depth_to_metres`.

    Returns:
        a new H×W ``float32`` array in metres; every invalid pixel is NaN.

    Raises:
        InputError: ``<field>.encoding`` is not ``16UC1``/``mono16``/``32FC1``, or the image is
            malformed (see :func:`image_to_numpy`).
    """
    if msg.encoding not in (DEPTH_16UC1, "mono16", DEPTH_32FC1):
        raise InputError(
            f"{field}.encoding",
            f"unsupported depth encoding {msg.encoding!r}; use '16UC1' (millimetres) or "
            "'32FC1' (metres)",
        )
    return depth_to_metres(image_to_numpy(msg, field), msg.encoding, f"{field}.encoding")


def mask_from_image(msg, field: str = "mask") -> np.ndarray:
    """Decode a ``mono8``/``8UC1`` mask image to H×W ``bool`` (non-zero = object).

    Returns:
        a new H×W ``bool`` array.

    Raises:
        InputError: ``<field>.encoding`` is not ``mono8``/``8UC1``, or the image is malformed.
    """
    if msg.encoding not in ("mono8", "8UC1"):
        raise InputError(
            f"{field}.encoding", f"mask must be 'mono8' or '8UC1', got {msg.encoding!r}"
        )
    return image_to_numpy(msg, field) != 0


# --------------------------------------------------------------------------------------------
# CameraInfo
# --------------------------------------------------------------------------------------------


def intrinsics_from_camera_info(msg, field: str = "camera_info") -> CameraIntrinsics:
    """Pinhole intrinsics (pixels) of the image a ``sensor_msgs/CameraInfo`` describes.

    Like ``image_geometry.PinholeCameraModel``: the projection matrix ``P`` (the rectified
    image's camera) is used when ``P[0] != 0``, else ``K`` (an uncalibrated or not-yet-rectified
    camera). A region of interest shifts the principal point and sets the size; binning
    ``b > 1`` scales the intrinsics to the binned image with the pixel-centre convention of
    :func:`sam3d_ros.core.conventions.scale_intrinsics`. Distortion is ignored (use rectified
    images).

    Returns:
        intrinsics of the published image: ``fx, fy, cx, cy`` in pixels, ``width × height``.

    Raises:
        InputError: ``<field>.width`` / ``<field>.height`` zero; ``<field>.p`` or
            ``<field>.k`` (whichever is used) with non-positive/non-finite focal lengths, skew
            or a bad last row; ``<field>.roi`` outside the image.
    """
    width, height = int(msg.width), int(msg.height)
    if width <= 0:
        raise InputError(f"{field}.width", f"image width must be positive, got {width}")
    if height <= 0:
        raise InputError(f"{field}.height", f"image height must be positive, got {height}")
    p = np.asarray(msg.p, dtype=np.float64)
    if p.size == 12 and p[0] != 0:
        intr = intrinsics_from_matrix(p.reshape(3, 4)[:, :3], width, height, f"{field}.p")
    else:
        intr = intrinsics_from_matrix(np.asarray(msg.k, dtype=np.float64), width, height,
                                      f"{field}.k")
    roi = msg.roi
    rw, rh, rx, ry = int(roi.width), int(roi.height), int(roi.x_offset), int(roi.y_offset)
    if rw > 0 and rh > 0 and (rw, rh) != (width, height):
        if rx + rw > width or ry + rh > height:
            raise InputError(
                f"{field}.roi", f"roi {rw}×{rh}+{rx}+{ry} exceeds the {width}×{height} image"
            )
        intr = CameraIntrinsics(intr.fx, intr.fy, intr.cx - rx, intr.cy - ry, rw, rh)
    bx, by = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    if bx > 1 or by > 1:
        intr = scale_intrinsics(intr, intr.width // bx, intr.height // by)
    return intr


# --------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------


def stamp_to_seconds(stamp) -> float:
    """Seconds of a ``builtin_interfaces/Time`` (or ``Duration``): ``sec + nanosec * 1e-9``."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9
