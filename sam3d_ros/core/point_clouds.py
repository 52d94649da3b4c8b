"""PointCloud2 ↔ numpy, ROS-free: packing for the node and the offline writer, reading back.

:func:`pointcloud2_from_arrays` builds the message with a message kit
(:mod:`sam3d_ros.core.message_kit`); :func:`pointcloud2_to_arrays` reads any PointCloud2,
duck-typed on its fields. Point clouds hold ``float32`` metres in the message's frame.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np

from sam3d_ros.core.errors import InputError
from sam3d_ros.core.image_decoding import message_buffer
from sam3d_ros.core.message_kit import MessageKit

__all__ = [
    "CloudArrays",
    "pack_rgb",
    "pointcloud2_from_arrays",
    "pointcloud2_to_arrays",
    "unpack_rgb",
]

# sensor_msgs/PointField datatype constants.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)

_POINTFIELD_DTYPES = {
    INT8: "i1",
    UINT8: "u1",
    INT16: "i2",
    UINT16: "u2",
    INT32: "i4",
    UINT32: "u4",
    FLOAT32: "f4",
    FLOAT64: "f8",
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
    kit: MessageKit,
    header: Optional[Any],
    xyz: np.ndarray,
    rgb: Optional[np.ndarray] = None,
    object_index: Optional[np.ndarray] = None,
    field: str = "cloud",
) -> Any:
    """Pack points (and optional colours / object indices) into an unorganised PointCloud2.

    Layout (little-endian, no padding): ``x`` @0, ``y`` @4, ``z`` @8 (``FLOAT32`` metres), then
    ``rgb`` (``FLOAT32`` holding the bits of ``uint32`` ``0x00RRGGBB``, as PCL and rviz expect)
    when ``rgb`` is given, then ``object_index`` (``INT32``; ``-1`` may mark "no object") when
    ``object_index`` is given. ``point_step`` = 12, 16 or 20; ``height`` = 1, ``width`` = N;
    ``is_dense`` is True when every coordinate is finite.

    Args:
        kit: the message kit to build with.
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
        kit.PointField(name="x", offset=0, datatype=FLOAT32, count=1),
        kit.PointField(name="y", offset=4, datatype=FLOAT32, count=1),
        kit.PointField(name="z", offset=8, datatype=FLOAT32, count=1),
    ]
    words = 3 + (rgb is not None) + (object_index is not None)
    # An (N, words) little-endian 32-bit buffer filled column by column (1-D strided copies
    # are far faster than an (N, 3) block copy with rows of 3); the kit stores its bytes.
    data = np.zeros(4 * words * n, dtype=np.uint8)
    buf = data.view("<f4").reshape(n, words)
    for axis in range(3):
        buf[:, axis] = xyz[:, axis]
    col = 3
    as_bytes = buf.view(np.uint8)
    if rgb is not None:
        fields.append(kit.PointField(name="rgb", offset=4 * col, datatype=FLOAT32, count=1))
        # Little-endian 0x00RRGGBB is the byte sequence B, G, R, 0 whatever the host.
        rgb8 = rgb.astype(np.uint8, copy=False)
        for byte, channel in ((0, 2), (1, 1), (2, 0)):
            as_bytes[:, 4 * col + byte] = rgb8[:, channel]  # byte 3 stays 0
        col += 1
    if object_index is not None:
        fields.append(
            kit.PointField(name="object_index", offset=4 * col, datatype=INT32, count=1)
        )
        buf.view("<i4")[:, col] = object_index
    msg = kit.PointCloud2()
    if header is not None:
        msg.header = header
    msg.height = 1
    msg.width = n
    msg.fields = fields
    msg.is_bigendian = False
    msg.point_step = 4 * words
    msg.row_step = 4 * words * n
    msg.is_dense = bool(np.isfinite(xyz if xyz.dtype == np.float32 else buf[:, :3]).all())
    kit.set_bytes(msg, data)
    return msg


def pointcloud2_to_arrays(msg: Any, field: str = "cloud") -> CloudArrays:
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
    buf = message_buffer(msg.data, f"{field}.data")
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
