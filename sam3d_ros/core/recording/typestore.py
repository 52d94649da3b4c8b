"""The rosbags type store of a recording, and the rosbags message kit.

rosbags (pure Python) reads and writes rosbag2 and MCAP and serialises messages from their
``.msg`` text, so no ROS install is needed. Its stores ship the standard ROS 2 interfaces; this
project's messages (``msg/*.msg``) and the interfaces that are not on PyPI
(``pip_only_interfaces/``: ``vision_msgs``, ``tf2_msgs``, ``moveit_msgs``, ...) are registered
from their ``.msg`` files, found in the package (a pip install ships them as package data), the
source tree or a ROS install's ``share/`` directories.

:class:`RosbagsKit` gives rosbags' message classes the construction rclpy's have (keyword
arguments for any subset of the fields, defaults for the rest; numeric arrays stored as numpy
arrays), so the builders of :mod:`sam3d_ros.core.output_messages` write recordings too. Its
bulk helpers leave mesh-sized sequences (points, colours, triangles) as numpy arrays, which
:mod:`~sam3d_ros.core.recording.bulk_cdr` serialises in one copy: the kit is for writing.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from sam3d_ros.core.message_kit import MESSAGE_TYPES, MessageKit
from sam3d_ros.core.recording import bulk_cdr

__all__ = ["DISTROS", "RosbagsKit", "interface_files", "make_typestore"]

DISTROS = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY, "kilted": Stores.ROS2_KILTED}
"""ROS 2 distributions whose standard message definitions a recording may use."""

_PACKAGES = ("sam3d_ros", "tf2_msgs", "vision_msgs", "object_recognition_msgs", "moveit_msgs")
_SOURCE_ROOT = Path(__file__).resolve().parents[3]
_PACKAGED = Path(__file__).resolve().parent / "interfaces"


def _msg_dirs(package: str) -> Iterator[Path]:
    yield _PACKAGED / package / "msg"
    yield (_SOURCE_ROOT / "msg" if package == "sam3d_ros"
           else _SOURCE_ROOT / "pip_only_interfaces" / package / "msg")
    prefixes = os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) + [sys.prefix]
    for prefix in filter(None, prefixes):
        yield Path(prefix) / "share" / package / "msg"


def interface_files() -> Dict[str, Path]:
    """``<package>/msg/<Name>`` → its ``.msg`` file, for every package this project registers.

    Per package, the first directory that exists wins: package data, the source tree, then
    ``share/<package>/msg`` under ``AMENT_PREFIX_PATH`` and the interpreter's prefix.
    """
    found: Dict[str, Path] = {}
    for package in _PACKAGES:
        for directory in _msg_dirs(package):
            files = sorted(directory.glob("*.msg")) if directory.is_dir() else []
            if files:
                found.update({f"{package}/msg/{f.stem}": f for f in files})
                break
    return found


@lru_cache(maxsize=None)
def make_typestore(distro: str = "jazzy") -> Typestore:
    """The ``distro`` store plus this project's and the pip-only interfaces (cached).

    Raises:
        ValueError: unknown distro, or the ``sam3d_ros`` / ``vision_msgs`` definitions cannot be
            found (a broken install).
    """
    if distro not in DISTROS:
        raise ValueError(f"unknown ROS distro {distro!r}; choose one of {sorted(DISTROS)}")
    store = get_typestore(DISTROS[distro])
    files = interface_files()
    for needed in ("sam3d_ros/msg/ReconstructedObject", "vision_msgs/msg/Detection3DArray"):
        if needed not in files:
            raise ValueError(f"message definition {needed} not found (looked in the package, "
                             f"{_SOURCE_ROOT} and share/ of AMENT_PREFIX_PATH)")
    types: Dict[str, Any] = {}
    for name, path in files.items():
        if name not in store.types:
            types.update(get_types_from_msg(path.read_text(encoding="utf-8"), name))
    store.register(types)
    return store


_FLOATS = frozenset({"float32", "float64"})


def _scalar_default(base: str) -> Any:
    if base == "string":
        return ""
    if base == "bool":
        return False
    return 0.0 if base in _FLOATS else 0


def _dtype(base: str) -> np.dtype:
    return np.dtype({"bool": "bool", "char": "uint8", "byte": "uint8"}.get(base, base))


class RosbagsKit(MessageKit):
    """rosbags' message classes of a store, constructed the way rclpy's are (see module doc)."""

    def __init__(self, store: Typestore) -> None:
        self.store = store
        self._classes: Dict[str, type] = {}
        super().__init__({name: self.message_class(full) for name, full in MESSAGE_TYPES.items()})
        seen: set = set()
        for full in MESSAGE_TYPES.values():
            bulk_cdr.install(store, full, seen)

    def _default_maker(self, desc: Tuple[Any, Any]) -> Callable[[], Any]:
        kind, spec = desc
        if kind == Nodetype.BASE:
            value = _scalar_default(spec[0])
            return lambda: value
        if kind == Nodetype.NAME:
            return self.message_class(spec)
        sub, count = spec
        if sub[0] == Nodetype.BASE and sub[1][0] != "string":
            dtype = _dtype(sub[1][0])
            size = int(count) if kind == Nodetype.ARRAY else 0
            return lambda: np.zeros(size, dtype=dtype)
        element = self._default_maker(sub)
        size = int(count) if kind == Nodetype.ARRAY else 0
        return lambda: [element() for _ in range(size)]

    def message_class(self, typename: str) -> type:
        """The constructing subclass of the store's class of ``typename`` (cached)."""
        cls = self._classes.get(typename)
        if cls is not None:
            return cls
        base = self.store.types[typename]
        fields = self.store.fielddefs[typename][1]
        makers: List[Tuple[str, Callable[[], Any]]] = []
        arrays: Dict[str, np.dtype] = {}
        # Registered first: recursive field types find the class under construction.
        namespace: Dict[str, Any] = {"__doc__": base.__doc__}
        cls = type(base.__name__, (base,), namespace)
        self._classes[typename] = cls
        for name, desc in fields:
            makers.append((name, self._default_maker(desc)))
            kind, spec = desc
            if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
                sub = spec[0]
                if sub[0] == Nodetype.BASE and sub[1][0] != "string":
                    arrays[name] = _dtype(sub[1][0])

        def __init__(self: Any, **kwargs: Any) -> None:  # noqa: N807 - the class's constructor
            values = {name: kwargs.pop(name) if name in kwargs else make()
                      for name, make in makers}
            if kwargs:
                raise TypeError(f"{typename} has no field(s) {sorted(kwargs)}")
            base.__init__(self, **values)

        cls.__init__ = __init__
        if arrays:
            def __setattr__(self: Any, name: str, value: Any) -> None:  # noqa: N807
                dtype = arrays.get(name)
                if dtype is not None and not (isinstance(value, np.ndarray)
                                              and value.dtype == dtype):
                    value = np.asarray(value, dtype=dtype)
                object.__setattr__(self, name, value)

            cls.__setattr__ = __setattr__
        return cls

    def points(self, xyz: np.ndarray) -> np.ndarray:
        """The N×3 ``float64`` array itself (serialised in one copy, :mod:`.bulk_cdr`)."""
        return np.ascontiguousarray(xyz, dtype="<f8")

    def colors(self, rgb: np.ndarray, alpha: float) -> np.ndarray:
        """N×4 ``float32`` RGBA (serialised in one copy)."""
        out = np.empty((len(rgb), 4), dtype="<f4")
        out[:, :3] = rgb
        out[:, 3] = alpha
        return out

    def triangles(self, faces: np.ndarray) -> np.ndarray:
        """The F×3 ``uint32`` array itself (serialised in one copy)."""
        return np.ascontiguousarray(faces, dtype="<u4")
