"""ROS 2 message ↔ numpy conversions: the one place where message bytes become arrays.

The project does not use ``cv_bridge`` or ``sensor_msgs_py`` (neither is on PyPI for ROS 2, and
the PyPI ``cv-bridge`` is a ROS 1 port that breaks on numpy 2 and mangles ``16UC1``).

Units and conventions (see :mod:`sam3d_ros.core.conventions`, which owns them):

* colour images come out as H×W×3 ``uint8`` RGB;
* depth images come out as H×W ``float32`` metres with NaN = invalid (``16UC1`` = millimetres,
  ``32FC1`` = metres, converted by :func:`sam3d_ros.core.conventions.depth_to_metres`);
* masks come out as H×W ``bool`` (non-zero = object);
* point clouds hold ``float32`` metres in the message's frame.

Every function raises :class:`sam3d_ros.core.errors.InputError` naming the offending message field
(``image.encoding``, ``depth.step``, ``camera_info.k``, ``cloud.fields``, ...) for bad input; the
prefix is the ``field`` argument of each function.

Speed: decoding uses ``np.frombuffer`` / strided views of ``msg.data`` (no copy unless a byte
swap, a channel reorder or a unit conversion needs one); encoding copies the array's bytes once
into the ``array.array('B')`` that rclpy stores (assigning an ``array.array`` skips rclpy's
per-byte field checks).
"""

from __future__ import annotations

import array
import math
import re
import sys
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

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
    "CloudArrays",
    "IMAGE_ENCODINGS",
    "image_to_numpy",
    "rgb_from_image",
    "rgb8_from_array",
    "depth_from_image",
    "mask_from_image",
    "numpy_to_image",
    "intrinsics_from_camera_info",
    "pointcloud2_from_arrays",
    "pointcloud2_to_arrays",
    "pack_rgb",
    "unpack_rgb",
    "stamp_to_seconds",
    "ros_time_from_seconds",
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


def _encoding_info(encoding: str, field: str) -> Tuple[np.dtype, int]:
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


def _message_buffer(data, field: str) -> memoryview:
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


def image_to_numpy(msg: Image, field: str = "image") -> np.ndarray:
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
    dtype, channels = _encoding_info(msg.encoding, f"{field}.encoding")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise InputError(
            f"{field}.step",
            f"step {step} < width {width} × {channels * dtype.itemsize} bytes per pixel "
            f"({msg.encoding}) = {row_bytes}",
        )
    buf = _message_buffer(msg.data, f"{field}.data")
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


def rgb_from_image(msg: Image, field: str = "image") -> np.ndarray:
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
    return rgb8_from_array(image_to_numpy(msg, field), bgr=enc.startswith("bgr"))


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


def depth_from_image(msg: Image, field: str = "depth") -> np.ndarray:
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


def mask_from_image(msg: Image, field: str = "mask") -> np.ndarray:
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


def _bytes_array(arr: np.ndarray) -> array.array:
    """Copy a C-contiguous array's bytes into the ``array.array('B')`` rclpy stores."""
    out = array.array("B")
    if arr.size:
        out.frombytes(memoryview(arr).cast("B"))
    return out


def _set_data(msg, data: array.array) -> None:
    """Store ``data`` as ``msg.data`` without a second copy.

    The generated ``uint8[]`` setter keeps an ``array.array('B')`` as it is only when field
    checks are on (``ROS_PYTHON_CHECK_FIELDS=1``) and copies it otherwise; storing it in the
    field's slot is what the checked path does.
    """
    if hasattr(msg, "_data"):
        msg._data = data
    else:  # pragma: no cover - message classes without the rosidl_generator_py slot
        msg.data = data


def numpy_to_image(
    image: np.ndarray, encoding: str, header: Optional[Header] = None, field: str = "image"
) -> Image:
    """Encode an array as a ``sensor_msgs/Image`` (no row padding, host byte order).

    Args:
        image: H×W (single channel) or H×W×C array whose type matches ``encoding``
            (``uint8`` for rgb8/bgr8/mono8/8UC*, ``uint16`` for mono16/16UC1 millimetres,
            ``float32`` for 32FC1 metres, ...). The bytes are written as they are: no channel
            reorder, no unit conversion (see :mod:`sam3d_ros.core.conventions` for depth units).
        encoding: a key of :data:`IMAGE_ENCODINGS`.
        header: copied into the message when given.
        field: name used in errors.

    Returns:
        the message; ``step = width * bytes per pixel``, ``is_bigendian`` = host byte order.

    Raises:
        InputError: ``<field>.encoding`` unsupported, or the array's shape / dtype does not
            match it (``<field>``).
    """
    dtype, channels = _encoding_info(encoding, f"{field}.encoding")
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
    _set_data(msg, _bytes_array(image))
    return msg


# --------------------------------------------------------------------------------------------
# CameraInfo
# --------------------------------------------------------------------------------------------


def intrinsics_from_camera_info(msg: CameraInfo, field: str = "camera_info") -> CameraIntrinsics:
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
# PointCloud2
# --------------------------------------------------------------------------------------------

_POINTFIELD_DTYPES = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}


class CloudArrays(NamedTuple):
    """Arrays read from a PointCloud2 by :func:`pointcloud2_to_arrays`.

    The arrays may be read-only views of the message's data (see :func:`pointcloud2_to_arrays`).

    Attributes:
        xyz: N×3 ``float32`` (metres in the message's frame); NaN points are kept.
        rgb: N×3 ``uint8`` RGB, or ``None`` without an ``rgb``/``rgba`` field.
        object_index: N ``int32``, or ``None`` without an ``object_index`` field.
    """

    xyz: np.ndarray
    rgb: Optional[np.ndarray]
    object_index: Optional[np.ndarray]


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack N×3 ``uint8`` RGB into N ``uint32`` ``0x00RRGGBB`` (the PCL / rviz ``rgb`` layout)."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    out = rgb[:, 0].astype(np.uint32) << 16
    out |= rgb[:, 1].astype(np.uint32) << 8
    out |= rgb[:, 2]
    return out


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Unpack ``uint32`` ``0x00RRGGBB`` (or ``0xAARRGGBB``) values into N×3 ``uint8`` RGB."""
    packed = np.asarray(packed).astype(np.uint32, copy=False)
    out = np.empty(packed.shape + (3,), dtype=np.uint8)
    out[..., 0] = packed >> 16
    out[..., 1] = packed >> 8
    out[..., 2] = packed
    return out


def pointcloud2_from_arrays(
    header: Optional[Header],
    xyz: np.ndarray,
    rgb: Optional[np.ndarray] = None,
    object_index: Optional[np.ndarray] = None,
    field: str = "cloud",
) -> PointCloud2:
    """Pack points (and optional colours / object indices) into an unorganised PointCloud2.

    Layout (little-endian, no padding): ``x`` @0, ``y`` @4, ``z`` @8 (``FLOAT32`` metres), then
    ``rgb`` (``FLOAT32`` holding the bits of ``uint32`` ``0x00RRGGBB``, as PCL and rviz expect)
    when ``rgb`` is given, then ``object_index`` (``INT32``; ``-1`` may mark "no object") when
    ``object_index`` is given. ``point_step`` = 12, 16 or 20; ``height`` = 1, ``width`` = N;
    ``is_dense`` is True when every coordinate is finite.

    Args:
        header: copied into the message (frame id and stamp); ``None`` = empty header.
        xyz: N×3 points in metres (any float type; stored as float32).
        rgb: N×3 RGB, ``uint8`` or integers in [0, 255].
        object_index: N integers that fit in int32.
        field: name used in errors.

    Raises:
        InputError: ``<field>.xyz`` / ``<field>.rgb`` / ``<field>.object_index`` of the wrong
            shape or type.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise InputError(f"{field}.xyz", f"xyz must be N×3, got shape {xyz.shape}")
    if xyz.dtype.kind not in "fiu":
        raise InputError(f"{field}.xyz", f"xyz must be numeric, got {xyz.dtype}")
    n = int(xyz.shape[0])
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (n, 3):
            raise InputError(f"{field}.rgb", f"rgb must be {n}×3, got shape {rgb.shape}")
        if rgb.dtype != np.uint8:
            if rgb.dtype.kind not in "iu" or (n and (rgb.min() < 0 or rgb.max() > 255)):
                raise InputError(f"{field}.rgb", f"rgb must be uint8 (0-255), got {rgb.dtype}")
    if object_index is not None:
        object_index = np.asarray(object_index)
        if object_index.shape != (n,):
            raise InputError(
                f"{field}.object_index",
                f"object_index must have {n} values, got shape {object_index.shape}",
            )
        info = np.iinfo(np.int32)
        if object_index.dtype.kind not in "iu" or (
            n
            and object_index.dtype.itemsize >= 4
            and object_index.dtype != np.int32
            and (object_index.min() < info.min or object_index.max() > info.max)
        ):
            raise InputError(
                f"{field}.object_index",
                f"object_index must be integers that fit in int32, got {object_index.dtype}",
            )

    fields = [
        PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
    ]
    words = 3 + (rgb is not None) + (object_index is not None)
    # The message's own array.array, viewed as an (N, words) little-endian 32-bit buffer and
    # filled column by column (1-D strided copies are far faster than an (N, 3) block copy
    # with rows of 3); no intermediate buffer, no final copy.
    data = array.array("B", b"\0") * (4 * words * n)
    buf = np.frombuffer(data, dtype="<f4").reshape(n, words)
    for axis in range(3):
        buf[:, axis] = xyz[:, axis]
    col = 3
    as_bytes = buf.view(np.uint8)
    if rgb is not None:
        fields.append(PointField(name="rgb", offset=4 * col, datatype=PointField.FLOAT32, count=1))
        # Little-endian 0x00RRGGBB is the byte sequence B, G, R, 0 whatever the host.
        rgb8 = rgb.astype(np.uint8, copy=False)
        for byte, channel in ((0, 2), (1, 1), (2, 0)):
            as_bytes[:, 4 * col + byte] = rgb8[:, channel]  # byte 3 stays 0
        col += 1
    if object_index is not None:
        fields.append(
            PointField(name="object_index", offset=4 * col, datatype=PointField.INT32, count=1)
        )
        buf.view("<i4")[:, col] = object_index
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height = 1
    msg.width = n
    msg.fields = fields
    msg.is_bigendian = False
    msg.point_step = 4 * words
    msg.row_step = 4 * words * n
    msg.is_dense = bool(np.isfinite(xyz if xyz.dtype == np.float32 else buf[:, :3]).all())
    del buf, as_bytes  # release the buffer exports so the array.array stays resizable
    _set_data(msg, data)
    return msg


def pointcloud2_to_arrays(msg: PointCloud2, field: str = "cloud") -> CloudArrays:
    """Read ``x y z`` (and ``rgb``/``rgba``, ``object_index`` when present) from a PointCloud2.

    Any layout is accepted: field offsets and types from ``fields`` (``x y z`` FLOAT32 or
    FLOAT64; ``rgb`` FLOAT32 or UINT32 holding ``0x00RRGGBB``; ``object_index`` any integer
    type), ``point_step``/``row_step`` padding, organised clouds (``height > 1``, flattened row
    by row) and big-endian data.

    Returns:
        :class:`CloudArrays` of ``height * width`` points (``xyz`` float32 metres, ``rgb``
        uint8, ``object_index`` int32; NaN points kept). Like :func:`image_to_numpy`, each
        array is a **read-only strided view** of ``msg.data`` when the layout allows (xyz:
        consecutive host-order FLOAT32; rgb: always, unless organised with padded rows;
        object_index: host-order INT32); otherwise a new array. ``np.array(a)`` for a
        writable contiguous copy.

    Raises:
        InputError: ``<field>.fields`` lacks x/y/z or has an unsupported type or a field that
            does not fit in ``point_step``; ``<field>.row_step`` < ``width * point_step``;
            ``<field>.data`` shorter than ``height * row_step``.
    """
    order = ">" if msg.is_bigendian else "<"
    by_name = {f.name: f for f in msg.fields}
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    height, width = int(msg.height), int(msg.width)
    offset: Dict[str, int] = {}
    fmt: Dict[str, np.dtype] = {}
    wanted = [("x", "fx"), ("y", "fx"), ("z", "fx")]
    rgb_name = "rgb" if "rgb" in by_name else ("rgba" if "rgba" in by_name else None)
    if rgb_name:
        wanted.append((rgb_name, "rgb"))
    if "object_index" in by_name:
        wanted.append(("object_index", "int"))
    for name, kind in wanted:
        pf = by_name.get(name)
        if pf is None:
            raise InputError(f"{field}.fields", f"no {name!r} field (has {sorted(by_name)})")
        code = _POINTFIELD_DTYPES.get(pf.datatype)
        ok = code is not None and (
            (kind == "fx" and code in ("f4", "f8"))
            or (kind == "rgb" and code in ("f4", "u4", "i4"))
            or (kind == "int" and code[0] in "iu")
        )
        if not ok:
            raise InputError(
                f"{field}.fields", f"field {name!r} has unsupported datatype {pf.datatype}"
            )
        dt = np.dtype(order + code)
        if pf.offset + dt.itemsize > point_step:
            raise InputError(
                f"{field}.fields",
                f"field {name!r} at offset {pf.offset} does not fit in point_step {point_step}",
            )
        # rgb is read as raw uint32 bits whatever its declared type.
        fmt[name] = np.dtype(order + "u4") if kind == "rgb" else dt
        offset[name] = int(pf.offset)
    if row_step < width * point_step:
        raise InputError(
            f"{field}.row_step",
            f"row_step {row_step} < width {width} × point_step {point_step}",
        )
    buf = _message_buffer(msg.data, f"{field}.data")
    if len(buf) < height * row_step:
        raise InputError(
            f"{field}.data",
            f"data has {len(buf)} bytes, expected height × row_step = {height * row_step}",
        )
    n = height * width
    if n == 0:
        return CloudArrays(
            np.zeros((0, 3), np.float32),
            np.zeros((0, 3), np.uint8) if rgb_name else None,
            np.zeros(0, np.int32) if "object_index" in by_name else None,
        )
    if height == 1 or row_step == width * point_step:
        point_strides: Tuple[int, ...] = (point_step,)
    else:
        point_strides = (row_step, point_step)
    shape = (n,) if len(point_strides) == 1 else (height, width)

    def column(name: str) -> np.ndarray:
        """A strided read-only view of one field (a copy only for organised, padded rows)."""
        return np.ndarray(shape, fmt[name], buf, offset[name], point_strides).reshape(n)

    float32 = np.dtype(np.float32)  # native byte order
    if (
        len(point_strides) == 1
        and all(fmt[a] == float32 for a in "xyz")
        and (offset["y"], offset["z"]) == (offset["x"] + 4, offset["x"] + 8)
    ):
        xyz = np.ndarray((n, 3), float32, buf, offset["x"], (point_step, 4))
    else:
        xyz = np.empty((n, 3), dtype=np.float32)
        for axis, name in enumerate("xyz"):
            xyz[:, axis] = column(name)
    rgb = None
    if rgb_name:
        # 0x00RRGGBB as 4 bytes: R G B sit at bytes 2 1 0 (little-endian) or 1 2 3 (big).
        if len(point_strides) == 1:
            first, step = (offset[rgb_name] + 2, -1) if order == "<" else (
                offset[rgb_name] + 1, 1)
            rgb = np.ndarray((n, 3), np.uint8, buf, first, (point_step, step))
        else:
            rgb = unpack_rgb(column(rgb_name))
    index = None
    if "object_index" in by_name:
        index = column("object_index")
        if index.dtype != np.dtype(np.int32):
            index = index.astype(np.int32)
    return CloudArrays(xyz, rgb, index)


# --------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------


def stamp_to_seconds(stamp: Time) -> float:
    """Seconds of a ``builtin_interfaces/Time`` (or ``Duration``): ``sec + nanosec * 1e-9``."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


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
