"""The rclpy message kit (:class:`~sam3d_ros.core.message_kit.MessageKit`) the node publishes with.

Its bulk helpers skip rclpy's per-field checks: meshes have thousands of vertices and the
generated constructors validate every field of every element (~10 µs per colour), which costs
more than reconstructing a small object. Where the generated classes have the usual slot layout,
elements are built by filling the slots with values that already have the exact field types
(Python floats, numpy uint32 rows); ``uint8[]`` data goes in as the ``array.array`` rclpy
stores, without its per-byte checks.
"""

from __future__ import annotations

import array
import importlib
from typing import Any, Dict, List, Sequence

import numpy as np

from sam3d_ros.core.message_kit import MESSAGE_TYPES, MessageKit

__all__ = ["RCLPY", "RclpyKit", "bytes_array", "set_data"]


def bytes_array(arr: np.ndarray) -> array.array:
    """Copy a C-contiguous array's bytes into the ``array.array('B')`` rclpy stores."""
    out = array.array("B")
    if arr.size:
        out.frombytes(memoryview(arr).cast("B"))
    return out


def set_data(msg: Any, data: array.array) -> None:
    """Store ``data`` as ``msg.data`` without a second copy.

    The generated ``uint8[]`` setter keeps an ``array.array('B')`` as it is only when field
    checks are on (``ROS_PYTHON_CHECK_FIELDS=1``) and copies it otherwise; storing it in the
    field's slot is what the checked path does.
    """
    if hasattr(msg, "_data"):
        msg._data = data
    else:  # pragma: no cover - message classes without the rosidl_generator_py slot
        msg.data = data


def _has_slots(cls: Any, fields: Sequence[str]) -> bool:
    slots = getattr(cls, "__slots__", ())
    return all(f"_{f}" in slots for f in fields) and "_check_fields" in slots


def _classes() -> Dict[str, Any]:
    classes = {}
    for name, full in MESSAGE_TYPES.items():
        package, _, cls = full.split("/")
        classes[name] = getattr(importlib.import_module(f"{package}.msg"), cls)
    return classes


class RclpyKit(MessageKit):
    """rclpy's generated message classes, with slot-filling bulk helpers where possible."""

    def __init__(self) -> None:
        super().__init__(_classes())
        self._fast = (_has_slots(self.Point, ("x", "y", "z"))
                      and _has_slots(self.ColorRGBA, ("r", "g", "b", "a"))
                      and _has_slots(self.MeshTriangle, ("vertex_indices",)))

    def points(self, xyz: np.ndarray) -> List[Any]:
        """``Point`` per row, slots filled directly (see the module docstring)."""
        if not self._fast:
            return super().points(xyz)
        cls = self.Point
        new = cls.__new__
        out = []
        for x, y, z in xyz.tolist():
            p = new(cls)
            p._x = x
            p._y = y
            p._z = z
            p._check_fields = False
            out.append(p)
        return out

    def colors(self, rgb: np.ndarray, alpha: float) -> List[Any]:
        """``ColorRGBA`` per row, slots filled directly."""
        if not self._fast:
            return super().colors(rgb, alpha)
        cls = self.ColorRGBA
        new = cls.__new__
        out = []
        for r, g, b in rgb.tolist():
            c = new(cls)
            c._r = r
            c._g = g
            c._b = b
            c._a = alpha
            c._check_fields = False
            out.append(c)
        return out

    def triangles(self, faces: np.ndarray) -> List[Any]:
        """``MeshTriangle`` per ``uint32`` row, slots filled directly."""
        if not self._fast:
            return super().triangles(faces)
        cls = self.MeshTriangle
        new = cls.__new__
        out = []
        for row in faces:
            t = new(cls)
            t._vertex_indices = row
            t._check_fields = False
            out.append(t)
        return out

    def set_bytes(self, msg: Any, data: np.ndarray) -> None:
        """Store the bytes as the ``array.array('B')`` rclpy keeps (one copy)."""
        set_data(msg, bytes_array(np.ascontiguousarray(data)))


RCLPY = RclpyKit()
"""The kit of the node's messages."""
