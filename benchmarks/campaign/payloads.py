"""Generated hostile payloads shared by the CLI and node cases (no ROS).

Size bombs are streamed through zlib, so building one costs no memory here.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

BOMB_MEMBER_BYTES = 512 * 2**20  # inflated size of the NPZ bomb's member (~0.5 MB compressed)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int = 8, colour_type: int = 0,
              row: bytes = b"") -> bytes:
    """A PNG whose every row is ``row`` (streamed through zlib: a bomb costs no memory here)."""
    comp = zlib.compressobj(9)
    line = b"\x00" + row
    body = [comp.compress(line) for _ in range(height)]
    body.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"".join(body)) + _png_chunk(b"IEND", b""))


def npy_header(shape: Sequence[int], descr: str) -> bytes:
    """The NPY header of an array of ``shape`` and ``descr`` (no data)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def npz_bomb(path: Path, member_bytes: int = BOMB_MEMBER_BYTES) -> Path:
    """An NPZ whose ``depth`` member inflates to ``member_bytes`` of zeros (compressed ~0.1 %)."""
    side = int((member_bytes // 2) ** 0.5)
    chunk = bytes(2**20)
    remaining = side * side * 2
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("depth.npy", "w", force_zip64=True) as member:
            member.write(npy_header((side, side), "<u2"))
            while remaining > 0:
                member.write(chunk[: min(remaining, len(chunk))])
                remaining -= len(chunk)
    return path


def npy_declaring(path: Path, shape: Sequence[int], zipped: bool = False) -> Path:
    """An NPY (or an NPZ holding it) that declares ``shape`` float32 but holds 64 bytes."""
    data = npy_header(shape, "<f4") + bytes(64)
    if zipped:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("depth.npy", data)
    else:
        path.write_bytes(data)
    return path


def nested_json(depth: int) -> str:
    """``{"image_url": "rgb.png", "box_prompts": [[[...]]]}``, ``depth`` lists deep."""
    return '{"image_url": "rgb.png", "box_prompts": ' + "[" * depth + "]" * depth + "}"
