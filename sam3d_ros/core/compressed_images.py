"""``sensor_msgs/CompressedImage`` → numpy: image_transport's compressed and compressedDepth.

A GPU node on another host cannot take raw RGB-D (640×480 at 30 Hz is ~45 MB/s); cameras and
recordings offer image_transport's compressed topics. This module decodes them (OpenCV
``cv2.imdecode``) into the arrays the raw path of :mod:`sam3d_ros.core.image_decoding` produces:

* colour, ``<image>/compressed`` (compressed_image_transport): ``format`` is
  ``"<encoding>; jpeg compressed bgr8"`` / ``"<encoding>; png compressed bgr8"`` (``mono8``,
  ``bgr16``, ``mono16`` for grey and 16-bit images), or just ``"jpeg"`` / ``"png"`` (older
  publishers). → H×W×3 ``uint8`` RGB.
* depth, ``<depth>/compressedDepth`` (compressed_depth_image_transport): ``format``
  ``"16UC1; compressedDepth png"`` or ``"32FC1; compressedDepth png"`` (``"...; compressedDepth"``
  from older publishers). ``data`` = a 12-byte ``ConfigHeader`` (little-endian ``int32`` format,
  0 = ``INV_DEPTH``; ``float32 depthParam[2]``) followed by a 16-bit grey PNG: for ``16UC1`` the
  millimetres themselves; for ``32FC1`` the inverse depth quantised by the publisher
  (``q = a / depth + b``, truncated; ``q = 0`` = invalid), decoded as ``depth = a / (q - b)``.
  → H×W ``float32`` metres, NaN = invalid (:func:`sam3d_ros.core.conventions.depth_to_metres`).
  The ``rvl`` variant is not supported (refused, naming the format).

Every bad payload raises :class:`~sam3d_ros.core.errors.InputError` naming ``<field>.format`` or
``<field>.data``: an unknown format, data that is not the declared codec, a truncated or corrupt
payload, a ``compressedDepth`` header that cannot be right, a PNG that is not 16-bit grey. The
size an image declares in its PNG/JPEG header is checked **before decoding** (a small payload
can declare gigapixels): it must have the aspect ratio of the reference size (the CameraInfo's
for colour, the colour image's for depth), be at most :data:`MAX_SCALE` times it per side and
at most :data:`MAX_PIXELS` pixels; the decoded array must have that size.

Limits: a bit flip inside JPEG entropy-coded data decodes to wrong pixels without an error
(libjpeg only warns), as it does for image_transport itself.
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple, Optional, Tuple

import cv2
import numpy as np

from sam3d_ros.core.conventions import DEPTH_16UC1, DEPTH_32FC1, depth_to_metres, same_aspect
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.image_decoding import message_buffer, rgb8_from_array

__all__ = [
    "COMPRESSED_DEPTH_HEADER_BYTES",
    "MAX_PIXELS",
    "MAX_SCALE",
    "ImageHeader",
    "depth_from_compressed",
    "image_header",
    "rgb_from_compressed",
]

MAX_PIXELS = 7680 * 4320
"""Largest image (8K UHD) decoded whatever the reference size says."""
MAX_SCALE = 2
"""A compressed image may be at most this many times its reference size per side (the raw path
rescales images of the same camera at another resolution; more than this is refused)."""
COMPRESSED_DEPTH_HEADER_BYTES = 12
"""``sizeof(ConfigHeader)``: int32 format + float32 depthParam[2]."""
_INV_DEPTH = 0  # compressionFormat::INV_DEPTH, the only format image_transport writes

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic):
# C0-CF except C4 (DHT), C8 (JPG extension) and CC (DAC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset(range(0xD0, 0xD9)) | {0x01}  # RSTn, SOI, EOI, TEM
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type → channels
_COLOUR_ENCODINGS = frozenset({
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1",
    "rgb16", "bgr16", "rgba16", "bgra16", "mono16",
})
_COLOUR_REST = re.compile(r"^(jpeg|png) compressed(?: +(\w+))?$")
_DEPTH_REST = re.compile(r"^compressedDepth(?: +(\w+))?$")


class ImageHeader(NamedTuple):
    """What a PNG / JPEG header declares (read without decoding)."""

    codec: str  # "png" or "jpeg"
    width: int
    height: int
    channels: int
    bit_depth: int


def image_header(data: bytes, field: str = "image.data") -> ImageHeader:
    """Read the size a PNG (IHDR) or JPEG (SOF segment) declares, without decoding.

    Raises:
        InputError: ``field`` is neither a PNG nor a JPEG, or its header is truncated or
            malformed.
    """
    if data[:8] == _PNG_SIGNATURE:
        return _png_header(data, field)
    if data[:2] == _JPEG_SOI:
        return _jpeg_header(data, field)
    raise InputError(field, f"neither PNG nor JPEG data (starts with {bytes(data[:8])!r})")


def _png_header(data: bytes, field: str) -> ImageHeader:
    # The first chunk must be IHDR: length 13, "IHDR", width, height, bit depth, colour type...
    if len(data) < 8 + 8 + 13 + 4:
        raise InputError(field, f"truncated PNG: {len(data)} bytes, no complete IHDR chunk")
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        raise InputError(field, f"malformed PNG: first chunk {kind!r} of {length} bytes, "
                                "expected IHDR of 13")
    width, height, bit_depth, colour_type = struct.unpack_from(">IIBB", data, 16)
    channels = _PNG_CHANNELS.get(colour_type)
    if channels is None or bit_depth not in (1, 2, 4, 8, 16):
        raise InputError(field, f"malformed PNG: colour type {colour_type}, bit depth "
                                f"{bit_depth}")
    return ImageHeader("png", int(width), int(height), channels, int(bit_depth))


def _jpeg_header(data: bytes, field: str) -> ImageHeader:
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise InputError(field, f"malformed JPEG: no marker at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in _JPEG_NO_LENGTH:
            continue
        if i + 2 > n:
            break
        (length,) = struct.unpack_from(">H", data, i)
        if length < 2:
            raise InputError(field, f"malformed JPEG: segment 0x{marker:02X} of length {length}")
        if marker in _JPEG_SOF:
            if i + 8 > n:
                break
            precision, height, width, channels = struct.unpack_from(">BHHB", data, i + 2)
            return ImageHeader("jpeg", int(width), int(height), int(channels), int(precision))
        if marker == 0xDA:  # start of scan before any frame header
            raise InputError(field, "malformed JPEG: scan data before the frame header (SOF)")
        i += length
    raise InputError(field, f"truncated JPEG: no frame header (SOF) in {n} bytes")


def _check_declared_size(header: ImageHeader, reference: Optional[Tuple[int, int]],
                         reference_name: str, field: str) -> None:
    """The decompression-bomb guard: refuse sizes that cannot be this camera's, undecoded."""
    w, h = header.width, header.height
    what = f"{header.codec.upper()} declares {w}x{h}"
    if w <= 0 or h <= 0:
        raise InputError(field, f"{what}: empty image")
    if w * h > MAX_PIXELS:
        raise InputError(field, f"{what} = {w * h} pixels, more than the {MAX_PIXELS} "
                                "decoded at most; refused before decoding")
    if reference is None:
        return
    rw, rh = reference
    if not same_aspect(w, h, rw, rh):
        raise InputError(field, f"{what} but {reference_name} is {rw}x{rh} (different aspect "
                                "ratio: not this camera's image); refused before decoding")
    if w > MAX_SCALE * rw or h > MAX_SCALE * rh:
        raise InputError(field, f"{what}, more than {MAX_SCALE}x the {rw}x{rh} of "
                                f"{reference_name}; refused before decoding")


def _decode(data: memoryview, header: ImageHeader, field: str) -> np.ndarray:
    if header.codec == "jpeg" and b"\xff\xd9" not in bytes(data[-32:]):
        # OpenCV 4 returns a grey-filled image for a truncated JPEG (a warning only). FF D9
        # cannot occur inside entropy-coded data (FF is stuffed); some writers pad after it.
        raise InputError(field, f"truncated JPEG: {len(data)} bytes without the end-of-image "
                                "marker")
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InputError(field, f"corrupt {header.codec.upper()}: {exc}") from None
    if img is None:
        raise InputError(field, f"corrupt or truncated {header.codec.upper()} "
                                f"({len(data)} bytes); OpenCV could not decode it")
    if img.shape[:2] != (header.height, header.width):
        raise InputError(field, f"decoded {img.shape[1]}x{img.shape[0]} but the "
                                f"{header.codec.upper()} header declares "
                                f"{header.width}x{header.height}")
    return img


# --------------------------------------------------------------------------------------------
# Colour


def _colour_format(fmt: str, field: str) -> Tuple[str, bool]:
    """``(codec, bgr)`` of a compressed_image_transport format string."""
    text = fmt.strip()
    if ";" not in text:  # older publishers: "jpeg" / "png", BGR data as OpenCV writes it
        codec = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}.get(text.lower())
        if codec is None:
            raise InputError(field, f"unsupported format {fmt!r}; expected e.g. "
                                    "'rgb8; jpeg compressed bgr8', 'bgr8; png compressed bgr8', "
                                    "'jpeg' or 'png'")
        return codec, True
    encoding, rest = (part.strip() for part in text.split(";", 1))
    match = _COLOUR_REST.match(rest)
    if match is None:
        hint = (" (a compressedDepth image on the colour topic?)" if "compressedDepth" in rest
                else "")
        raise InputError(field, f"unsupported format {fmt!r}{hint}; expected "
                                "'<encoding>; jpeg compressed <target>' or "
                                "'<encoding>; png compressed <target>'")
    if encoding not in _COLOUR_ENCODINGS:
        raise InputError(field, f"{encoding!r} in {fmt!r} is not a colour image encoding; use "
                                "rgb8, bgr8, rgba8, bgra8 or mono8 (or their 16-bit forms)")
    # The decoded buffer is BGR unless the publisher says it compressed RGB (old publishers
    # that handed rgb8 to the encoder unchanged), as compressed_image_transport reads it.
    target = match.group(2) or "bgr8"
    return match.group(1), not target.startswith("rgb")


def rgb_from_compressed(msg, field: str = "image",
                        expected_size: Optional[Tuple[int, int]] = None,
                        reference_name: str = "camera_info") -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG / PNG) to H×W×3 ``uint8`` RGB.

    Args:
        msg: the message (anything with ``format`` and ``data``).
        field: message name used in errors (``<field>.format``, ``<field>.data``).
        expected_size: ``(width, height)`` the image should have (the CameraInfo's): the
            declared size must have its aspect ratio and be at most :data:`MAX_SCALE` times it.
        reference_name: what ``expected_size`` is, for the error message.

    Returns:
        a new H×W×3 ``uint8`` RGB array (grey replicated, alpha dropped, 16 bit scaled to 8).

    Raises:
        InputError: see the module docstring.
    """
    codec, bgr = _colour_format(str(msg.format), f"{field}.format")
    data = message_buffer(msg.data, f"{field}.data")
    header = image_header(data, f"{field}.data")
    if header.codec != codec:
        raise InputError(f"{field}.data", f"format {msg.format!r} says {codec.upper()} but "
                                          f"the data is a {header.codec.upper()}")
    _check_declared_size(header, expected_size, reference_name, f"{field}.data")
    return rgb8_from_array(_decode(data, header, f"{field}.data"), bgr)


# --------------------------------------------------------------------------------------------
# Depth


def _depth_format(fmt: str, field: str) -> str:
    """Depth encoding (``16UC1`` / ``32FC1``) of a compressed_depth_image_transport format."""
    encoding, _, rest = (part.strip() for part in str(fmt).partition(";"))
    match = _DEPTH_REST.match(rest) if rest else None
    codec = (match.group(1) or "png") if match else ("png" if not rest else None)
    if codec is None:
        raise InputError(field, f"unsupported format {fmt!r}; expected '16UC1; compressedDepth "
                                "png' or '32FC1; compressedDepth png'")
    if codec != "png":
        raise InputError(field, f"compressedDepth codec {codec!r} in {fmt!r} is not supported; "
                                "publish with the png codec (the default)")
    if encoding in (DEPTH_16UC1, "mono16"):
        return DEPTH_16UC1
    if encoding == DEPTH_32FC1:
        return DEPTH_32FC1
    raise InputError(field, f"depth encoding {encoding!r} in {fmt!r} is not supported; use "
                            "'16UC1' (millimetres) or '32FC1' (metres)")


def depth_from_compressed(msg, field: str = "depth",
                          expected_size: Optional[Tuple[int, int]] = None,
                          reference_name: str = "the colour image",
                          ) -> Tuple[np.ndarray, str]:
    """Decode a ``compressedDepth`` ``sensor_msgs/CompressedImage`` to metres.

    Args:
        msg: the message (anything with ``format`` and ``data``).
        field: message name used in errors.
        expected_size: ``(width, height)`` of the colour image the depth is registered to
            (checked as in :func:`rgb_from_compressed`, before decoding).
        reference_name: what ``expected_size`` is, for the error message.

    Returns:
        ``(depth, encoding)``: a new H×W ``float32`` array in metres with NaN = invalid, and
        the encoding the publisher compressed (``"16UC1"`` or ``"32FC1"``).

    Raises:
        InputError: see the module docstring.
    """
    encoding = _depth_format(str(msg.format), f"{field}.format")
    data = message_buffer(msg.data, f"{field}.data")
    if len(data) <= COMPRESSED_DEPTH_HEADER_BYTES:
        raise InputError(f"{field}.data", f"{len(data)} bytes: no room for the "
                                          f"{COMPRESSED_DEPTH_HEADER_BYTES}-byte compressedDepth "
                                          "header and a PNG")
    kind, quant_a, quant_b = struct.unpack_from("<iff", data, 0)
    if kind != _INV_DEPTH:
        raise InputError(f"{field}.data", f"compressedDepth header format {kind}, expected "
                                          f"{_INV_DEPTH} (INV_DEPTH): not a compressedDepth "
                                          "payload")
    png = data[COMPRESSED_DEPTH_HEADER_BYTES:]
    header = image_header(png, f"{field}.data")
    if header.codec != "png" or header.channels != 1 or header.bit_depth != 16:
        raise InputError(f"{field}.data", f"compressedDepth needs a 16-bit grey PNG, got a "
                                          f"{header.bit_depth}-bit {header.channels}-channel "
                                          f"{header.codec.upper()}")
    if encoding == DEPTH_32FC1 and not (
        np.isfinite(quant_a) and np.isfinite(quant_b) and quant_a > 0 and quant_b < 1
    ):
        # The publisher writes a = z0 (z0 + 1) > 0 and b = 1 - a / depth_max < 1.
        raise InputError(f"{field}.data", f"compressedDepth header quantisation a={quant_a:g}, "
                                          f"b={quant_b:g} cannot be right (a > 0, b < 1)")
    _check_declared_size(header, expected_size, reference_name, f"{field}.data")
    raw = _decode(png, header, f"{field}.data")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise InputError(f"{field}.data", f"compressedDepth PNG decoded to {raw.dtype} "
                                          f"{raw.shape}, expected 16-bit grey")
    if encoding == DEPTH_16UC1:
        return depth_to_metres(raw, DEPTH_16UC1, f"{field}.format"), encoding
    q = raw.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(quant_a) / (q - np.float32(quant_b))
    depth[raw == 0] = np.nan
    return depth_to_metres(depth, DEPTH_32FC1, f"{field}.format"), encoding
