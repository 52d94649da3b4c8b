"""CDR serialisation of mesh-sized sequences in one copy, for the rosbags message kit.

rosbags serialises a ``sequence<geometry_msgs/Point>`` one element at a time, through one Python
call per point, after the builders made one message object per point: for the marker previews
and the meshes of ``~/objects`` (thousands of vertices per object) that cost more per frame than
everything else an offline run writes. Here a sequence whose element type is *flat* (fixed-size
numeric fields of one type, such as ``Point``, ``ColorRGBA`` and ``MeshTriangle``) may instead
hold an N×k numpy array (:class:`~sam3d_ros.core.recording.typestore.RosbagsKit` builds them so)
that is copied into the CDR buffer at once; a list of element messages is still serialised
element by element. The bytes are the same either way.

:func:`install` replaces the size and serialisation functions of the store's message
definitions that have such a sequence; everything else (deserialisation, the other types) stays
rosbags' own. The fields around a bulk sequence are serialised by functions rosbags generates for
those stretches of fields, so CDR's alignment rules come from rosbags.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.serde.cdr import generate_getsize_cdr, generate_serialize_cdr
from rosbags.serde.utils import SIZEMAP, align
from rosbags.typesys.store import Typestore

__all__ = ["flat_dtype", "install"]

_NUMERIC = frozenset(SIZEMAP) - {"bool", "byte", "char", "float128"}


def flat_dtype(store: Typestore, typename: str) -> Optional[Tuple[np.dtype, int]]:
    """``(little-endian dtype, values per element)`` of a flat message type, else ``None``.

    Flat: every field is numeric and of one type (scalars or fixed arrays).
    """
    base, count = None, 0
    for _, (kind, spec) in store.get_msgdef(typename).fields:
        if kind == Nodetype.ARRAY and spec[0][0] == Nodetype.BASE:
            name, n = spec[0][1][0], int(spec[1])
        elif kind == Nodetype.BASE:
            name, n = spec[0], 1
        else:
            return None
        if name not in _NUMERIC or base not in (None, name):
            return None
        base, count = name, count + n
    if base is None:
        return None
    return np.dtype(base).newbyteorder("<"), count


def _align_to(pos: int, n: int) -> int:
    return (pos + n - 1) & -n


class _Bulk:
    """One bulk-capable sequence field: its element's dtype, size, alignment and rosbags code."""

    def __init__(self, name: str, element: str, dtype: np.dtype, count: int) -> None:
        self.name = name
        self.element = element
        self.dtype, self.count = dtype, count
        self.size = dtype.itemsize * count
        self.align = dtype.itemsize

    def array(self, value: Any) -> Optional[np.ndarray]:
        """``value`` as a C-contiguous N×count array of the element's dtype, or ``None``."""
        if not isinstance(value, np.ndarray):
            return None
        if value.ndim != 2 or value.shape[1] != self.count or value.dtype != self.dtype:
            raise ValueError(f"{self.name}: expected an N×{self.count} {self.dtype} array, got "
                             f"{value.shape} {value.dtype}")
        return np.ascontiguousarray(value)

    def getsize(self, pos: int, value: Any) -> int:
        pos = _align_to(pos, 4) + 4
        n = len(value)
        return _align_to(pos, self.align) + n * self.size if n else pos

    def serialize(self, rawdata: memoryview, pos: int, value: Any, store: Typestore,
                  little: bool) -> int:
        pos = _align_to(pos, 4)
        rawdata[pos:pos + 4] = len(value).to_bytes(4, "little" if little else "big")
        pos += 4
        arr = self.array(value)
        if arr is None:  # a list of element messages: rosbags' own element code
            msgdef = store.get_msgdef(self.element)
            func = msgdef.serialize_cdr_le if little else msgdef.serialize_cdr_be
            for item in value:
                pos = func(rawdata, _align_to(pos, self.align), item, store)
            return pos
        if not len(arr):
            return pos
        pos = _align_to(pos, self.align)
        if little != (sys.byteorder == "little"):
            arr = arr.byteswap()
        size = arr.size * self.dtype.itemsize
        rawdata[pos:pos + size] = arr.reshape(-1).view(np.uint8)
        return pos + size


Part = Tuple[Optional[_Bulk], int, Any, Any, Any]
"""A bulk field (others ``None``), or a stretch of fields: alignment, getsize, serialise le/be."""


def _parts(store: Typestore, fields: List[Tuple[str, Any]],
           bulk: Dict[str, _Bulk]) -> List[Part]:
    parts: List[Part] = []
    stretch: List[Tuple[str, Any]] = []

    def close() -> None:
        if stretch:
            getsize, _ = generate_getsize_cdr(list(stretch), store)
            parts.append((None, align(stretch[0][1], store), getsize,
                          generate_serialize_cdr(list(stretch), store, "le"),
                          generate_serialize_cdr(list(stretch), store, "be")))
            stretch.clear()

    for name, desc in fields:
        if name in bulk:
            close()
            parts.append((bulk[name], 4, None, None, None))
        else:
            stretch.append((name, desc))
    close()
    return parts


def _functions(parts: List[Part]) -> Tuple[Callable, Callable, Callable]:
    def getsize(pos: int, message: Any, store: Typestore) -> int:
        for field, alignment, size, _, _ in parts:
            if field is not None:
                pos = field.getsize(pos, getattr(message, field.name))
            else:
                pos = size(_align_to(pos, alignment), message, store)
        return pos

    def serializer(little: bool) -> Callable:
        def serialize(rawdata: memoryview, pos: int, message: Any, store: Typestore) -> int:
            for field, alignment, _, le, be in parts:
                if field is not None:
                    pos = field.serialize(rawdata, pos, getattr(message, field.name), store,
                                          little)
                else:
                    pos = (le if little else be)(rawdata, _align_to(pos, alignment), message,
                                                 store)
            return pos
        return serialize

    return getsize, serializer(True), serializer(False)


def install(store: Typestore, typename: str, seen: Optional[set] = None) -> None:
    """Give ``typename`` and the types in it bulk serialisation of their flat sequences.

    Idempotent; see the module docstring.
    """
    seen = set() if seen is None else seen
    if typename in seen:
        return
    seen.add(typename)
    msgdef = store.get_msgdef(typename)
    if getattr(msgdef.getsize_cdr, "bulk", False):
        return
    bulk: Dict[str, _Bulk] = {}
    for name, (kind, spec) in msgdef.fields:
        inner = spec[0] if kind in (Nodetype.SEQUENCE, Nodetype.ARRAY) else (kind, spec)
        if inner[0] == Nodetype.NAME:
            install(store, inner[1], seen)
        if kind == Nodetype.SEQUENCE and spec[0][0] == Nodetype.NAME:
            flat = flat_dtype(store, spec[0][1])
            if flat is not None:
                bulk[name] = _Bulk(name, spec[0][1], *flat)
    if not bulk:
        return
    getsize, le, be = _functions(_parts(store, list(msgdef.fields), bulk))
    getsize.bulk = True  # type: ignore[attr-defined]
    store.cache[typename] = dataclasses.replace(msgdef, getsize_cdr=getsize,
                                                serialize_cdr_le=le, serialize_cdr_be=be)
