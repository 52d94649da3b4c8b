"""Parse and validate a hosted "SAM 3D Objects" request into a :class:`ParsedRequest`.

Hosted fields keep their names and meaning (see ``fal_schema.md``):

``image_url`` (required)
    The RGB image. Anything Pillow decodes; RGBA, grey and palette images are converted to RGB
    (alpha is dropped), 16-bit grey is scaled to 8 bits.
``mask_urls``
    One mask image per object, same size as the image. A pixel belongs to the object when any
    colour channel is non-zero (and, with an alpha channel, it is not fully transparent).
``prompt``
    Text prompt, used only when there are neither masks nor point/box prompts. Absent or blank
    means automatic segmentation (the hosted service defaults to ``"car"``; we do not).
``point_prompts``
    ``[{x, y, label?, object_id?}]``: integer pixels, ``label`` 1 (foreground, the default) or 0.
``box_prompts``
    ``[{x_min, y_min, x_max, y_max, object_id?}]``: integer pixels, corners inclusive. An optional
    ``label`` (1 = include, the default; 0 = exclude) is accepted as an extension.
``seed``
    Integer in ``[0, 2**32 - 1]``; :data:`DEFAULT_SEED` (42) when absent or null.
``pointmap_url``
    External pointmap or depth, NPY or NPZ (see below). A 16-bit PNG depth in millimetres is
    accepted as an extension.

Precedence (as hosted): masks, else point/box prompts, else the text prompt, else automatic
segmentation (an empty :class:`~sam3d_ros.core.types.SegmentationQuery`). Fields that lose are
still
validated, then dropped.

Extension fields (not in the hosted schema; ignored by the hosted service):

``intrinsics``
    ``{"fx", "fy", "cx", "cy"}`` (or a list ``[fx, fy, cx, cy]``), pixels.
``K``
    The same as a 3×3 camera matrix. ``intrinsics`` wins when both are given.
``camera_pose``
    4×4 camera-to-world transform (rigid; last row ``[0, 0, 0, 1]``). Identity when absent.

Other unknown top-level fields are ignored with a warning in :attr:`ParsedRequest.warnings`.

Grouping of geometric prompts into objects (:func:`group_prompts`):

* prompts (points and boxes) sharing an ``object_id`` refine one object;
* each box without ``object_id`` is its own object;
* points without ``object_id`` join the id-less box when there is exactly one such box;
  otherwise they form one object together;
* ``object_id`` lies in ``[0, 2**31 - 1]`` (int32 message fields);
* ids for id-less objects are allocated above the largest given id (from 0 when none is given;
  from the lowest unused id when that would pass ``2**31 - 1``): first the id-less boxes in
  list order, then the id-less point group. Objects are returned sorted by id, so the result
  depends only on the request;
* an object whose prompts are all background (label 0) is an error.

Pointmap files (``pointmap_url``), loaded with ``allow_pickle=False`` (a pickled array is refused):

* NPY, H×W×3 float: points in the camera optical frame (x right, y down, z forward), metres.
* NPY, H×W (or H×W×1): depth along z; float = metres, uint16 = millimetres. Needs intrinsics
  from the request (``intrinsics`` or ``K``).
* Float depth or points whose median depth looks like millimetres are refused
  (:func:`sam3d_ros.core.conventions.check_float_depth_is_metres`, the rule the node applies to
  ``32FC1``), and so is 16-bit depth whose median is nearer than 5 cm: metres or centimetres
  stored as integers (:func:`~sam3d_ros.core.conventions.check_integer_depth_is_millimetres`,
  the node's rule for ``16UC1``).
* NPZ with key ``points`` (H×W×3, as above), or ``depth`` (H×W, as above) plus intrinsics as
  ``K`` (3×3) or ``intrinsics`` (``[fx, fy, cx, cy]``) in the same file or in the request
  (the request's win). An NPZ holding a single array is read like an NPY.

H and W must equal the image's. Invalid samples are NaN/inf, zero depth, all-zero points, and
points at or behind the camera (z <= 0); they become NaN in :attr:`Frame.points`. A pointmap with
no valid sample is an error. Without intrinsics, a points pointmap gets intrinsics fitted to it (a
pointmap that fits no pinhole camera in the optical frame, e.g. PyTorch3D axes, is refused).

URIs (:func:`read_uri`): a plain path (relative to ``base_dir``, e.g. the request file's
directory), ``file://``, ``data:`` (base64 or percent-encoded) and, only with
``InputOptions.allow_http``, ``http(s)://``. Every source is limited to ``max_bytes``. With
``allowed_roots``, local paths must resolve (symlinks and ``..`` included) inside one of them.

http(s) downloads (:mod:`sam3d_ros.core.http_fetch`) have one total deadline (``timeout_s``),
ignore proxy variables, and reach only global addresses (loopback, private, link-local / cloud
metadata, ... are refused unless in ``http_allowed_hosts``), checked again on every redirect.

Limits against resource exhaustion, each checked before anything large is allocated: image and
mask sizes from their headers (``max_pixels``; a mask or PNG depth must match the image size);
NPY/NPZ arrays from their declared shape and dtype (never more than the image's H×W×3 is read,
never more than declared is inflated from an NPZ member); at most ``max_objects`` objects (masks
or prompted objects) and ``max_objects`` × :data:`MAX_PROMPTS_PER_OBJECT` point or box prompts;
JSON nested at most :data:`MAX_NESTING` levels.

Every problem raises :class:`~sam3d_ros.core.errors.InputError` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import math
import os
import re
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from sam3d_ros.core import conventions
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.http_fetch import fetch
from sam3d_ros.core.types import (
    MAX_OBJECT_ID,
    BoxPrompt,
    CameraIntrinsics,
    Frame,
    ObjectPrompt,
    PointPrompt,
    SegmentationQuery,
)

DEFAULT_SEED = 42
"""Seed used when the request has none (the hosted schema leaves it optional)."""

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
"""Default size limit of one input (image, mask or pointmap), after base64 decoding."""

DEFAULT_MAX_PIXELS = 40_000_000
"""Default size limit of one image (width × height, from its header): above 8K UHD."""

DEFAULT_MAX_OBJECTS = 32
"""Default limit of objects per request (masks, or objects the prompts define)."""

MAX_PROMPTS_PER_OBJECT = 16
"""Point and box prompt lists may each hold ``max_objects`` × this many entries."""

MAX_NESTING = 64
"""Deepest JSON nesting a request may have (deeper ones exhaust recursion when written)."""

MAX_SEED = 2**32 - 1

HOSTED_FIELDS = (
    "image_url",
    "mask_urls",
    "prompt",
    "point_prompts",
    "box_prompts",
    "seed",
    "pointmap_url",
)
EXTENSION_FIELDS = ("intrinsics", "K", "camera_pose")

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


@dataclass(frozen=True)
class InputOptions:
    """Where inputs may come from and how big they may be.

    Attributes:
        allow_http: fetch ``http://`` and ``https://`` URLs (off by default).
        max_bytes: size limit of one input in bytes (decoded), else InputError "oversized".
        timeout_s: total deadline of one http(s) download (resolution, connection, redirects,
            headers and body), seconds.
        allowed_roots: when set, local files must resolve inside one of these directories.
        http_allowed_hosts: host names, addresses or networks (``"10.0.0.0/8"``) that http(s)
            may reach although they are not global (loopback, private, link-local, ...).
        max_pixels: size limit of one image or mask (width × height, read from its header).
        max_objects: most objects one request may ask for.
    """

    allow_http: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = 30.0
    allowed_roots: Optional[Sequence[Union[str, Path]]] = None
    http_allowed_hosts: Sequence[str] = ()
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_objects: int = DEFAULT_MAX_OBJECTS


@dataclass
class ParsedRequest:
    """A validated request, ready for the engine.

    Attributes:
        frame: the decoded image, pointmap (optical frame, NaN = invalid), intrinsics, pose.
        query: what to segment, after the hosted precedence was applied.
        seed: the seed to use (``DEFAULT_SEED`` when the request has none).
        request: the request dict as given (for the exporter's metadata).
        warnings: non-fatal remarks (ignored fields, dropped prompts).
    """

    frame: Frame
    query: SegmentationQuery
    seed: int
    request: Dict[str, Any]
    warnings: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# URIs


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _read_local(path: Path, field_name: str, options: InputOptions) -> bytes:
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise InputError(field_name, f"cannot resolve path {str(path)!r}: {exc}") from None
    if options.allowed_roots is not None:
        roots = [Path(r).expanduser().resolve() for r in options.allowed_roots]
        if not any(_is_within(resolved, root) for root in roots):
            raise InputError(
                field_name,
                f"path {str(path)!r} is outside the allowed roots "
                f"({', '.join(str(r) for r in roots)})",
            )
    if not resolved.exists():
        raise InputError(field_name, f"file not found: {str(path)!r}")
    if not resolved.is_file():
        raise InputError(field_name, f"not a regular file: {str(path)!r}")
    try:
        size = resolved.stat().st_size
        if size > options.max_bytes:
            raise InputError(
                field_name, f"oversized: {size} bytes, the limit is {options.max_bytes}"
            )
        with open(resolved, "rb") as handle:
            data = handle.read(options.max_bytes + 1)
    except OSError as exc:
        raise InputError(field_name, f"cannot read {str(path)!r}: {exc.strerror}") from None
    if len(data) > options.max_bytes:
        raise InputError(field_name, f"oversized: more than {options.max_bytes} bytes")
    return data


def _read_data_uri(uri: str, field_name: str, options: InputOptions) -> bytes:
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise InputError(field_name, "malformed data URI (no comma)")
    if header.lower().endswith(";base64"):
        compact = re.sub(r"\s+", "", payload)
        if len(compact) // 4 * 3 > options.max_bytes + 3:
            raise InputError(
                field_name,
                f"oversized: data URI holds about {len(compact) // 4 * 3} bytes, "
                f"the limit is {options.max_bytes}",
            )
        if "-" in compact or "_" in compact:
            compact = compact.replace("-", "+").replace("_", "/")
        compact += "=" * (-len(compact) % 4)
        try:
            data = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(field_name, "invalid base64 in data URI") from None
    else:
        if len(payload) > 3 * options.max_bytes:
            raise InputError(field_name, f"oversized: the limit is {options.max_bytes} bytes")
        data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > options.max_bytes:
        raise InputError(
            field_name, f"oversized: {len(data)} bytes, the limit is {options.max_bytes}"
        )
    return data


def _read_http(uri: str, field_name: str, options: InputOptions) -> bytes:
    if not options.allow_http:
        raise InputError(
            field_name, "http(s) URLs are disabled; enable them explicitly (--allow-http)"
        )
    return fetch(uri, field_name, options.timeout_s, options.max_bytes,
                 options.http_allowed_hosts)


def read_uri(
    uri: Any,
    field_name: str,
    base_dir: Optional[Union[str, Path]] = None,
    options: Optional[InputOptions] = None,
) -> bytes:
    """Return the bytes behind ``uri`` (path, ``file://``, ``data:``, opt-in ``http(s)``).

    Relative paths are taken relative to ``base_dir`` (the current directory when ``None``).
    Raises InputError(field_name, ...) for anything unusable.
    """
    options = options or InputOptions()
    if not isinstance(uri, str):
        raise InputError(field_name, f"must be a string (URI or path), got {_type(uri)}")
    uri = uri.strip()
    if not uri:
        raise InputError(field_name, "is empty")
    match = _SCHEME_RE.match(uri)
    scheme = match.group(1).lower() if match else ""
    if len(scheme) == 1 and os.name == "nt":  # a Windows drive letter
        scheme = ""
    if scheme == "data":
        return _read_data_uri(uri, field_name, options)
    if scheme in ("http", "https"):
        return _read_http(uri, field_name, options)
    if scheme == "file":
        parsed = urllib.parse.urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise InputError(field_name, f"file:// URI on another host: {parsed.netloc!r}")
        path = Path(urllib.request.url2pathname(parsed.path))
        if not path.is_absolute():
            raise InputError(field_name, f"file:// URI must hold an absolute path: {uri!r}")
        return _read_local(path, field_name, options)
    if scheme:
        raise InputError(
            field_name,
            f"unsupported URI scheme {scheme!r} (use a path, file://, data: or http(s)://)",
        )
    path = Path(uri).expanduser()
    if not path.is_absolute():
        path = Path(base_dir if base_dir is not None else os.getcwd()) / path
    return _read_local(path, field_name, options)


# --------------------------------------------------------------------------------------------
# Images and masks


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _open_image(
    data: bytes,
    field_name: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    size: Optional[Tuple[int, int]] = None,
    what: str = "image",
):
    """Decode an image after checking the size its header declares.

    ``size`` (width, height), when given, is the size it must have; otherwise it may have at
    most ``max_pixels`` pixels. Either is checked before the pixels are decompressed.
    """
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as exc:
        raise InputError(field_name, f"image too large: {exc}") from None
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise InputError(field_name, f"cannot decode image ({exc.__class__.__name__})") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InputError(field_name, f"{what} is empty ({width}x{height} pixels)")
    if size is not None and (width, height) != tuple(size):
        raise InputError(
            field_name, f"{what} is {width}x{height} but the image is {size[0]}x{size[1]}"
        )
    if width * height > max_pixels:
        raise InputError(
            field_name,
            f"{what} too large: {width}x{height} = {width * height} pixels, the limit is "
            f"{max_pixels} (max_pixels)",
        )
    try:
        image.load()
    except Exception as exc:  # noqa: BLE001 -- Pillow raises many types for corrupt data
        raise InputError(field_name, f"cannot decode image ({exc.__class__.__name__})") from None
    return image


def decode_image(
    data: bytes, field_name: str = "image_url", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode image bytes to H×W×3 uint8 RGB (at most ``max_pixels`` pixels)."""
    image = _open_image(data, field_name, max_pixels)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        grey = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or grey.max(initial=0) > 255 else 255.0
        grey8 = np.clip(np.round(grey * (255.0 / top)), 0, 255).astype(np.uint8)
        rgb = np.repeat(grey8[:, :, None], 3, axis=2)
    else:
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError(field_name, "image is empty")
    return np.ascontiguousarray(rgb)


def decode_mask(
    data: bytes, field_name: str, shape: Optional[Tuple[int, int]] = None
) -> np.ndarray:
    """Decode a mask image to H×W bool (non-zero = object); check size and non-emptiness.

    ``shape`` (H, W), when given, is checked from the header, before decoding.
    """
    size = None if shape is None else (int(shape[1]), int(shape[0]))
    image = _open_image(data, field_name, size=size, what="mask")
    if image.mode in ("P", "PA", "LA", "RGBA", "La", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"))
        mask = rgba[:, :, :3].any(axis=2) & (rgba[:, :, 3] > 0)
    else:
        arr = np.asarray(image)
        mask = arr.any(axis=2) if arr.ndim == 3 else arr != 0
    mask = np.ascontiguousarray(mask, dtype=bool)
    if not mask.any():
        raise InputError(field_name, "mask is empty (no non-zero pixel)")
    return mask


# --------------------------------------------------------------------------------------------
# Intrinsics, pose, pointmaps


def _number(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(field_name, f"must be a number, got {_type(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise InputError(field_name, "must be finite")
    return number


def parse_intrinsics(value: Any, field_name: str, width: int, height: int) -> CameraIntrinsics:
    """Read intrinsics from ``{fx, fy, cx, cy}``, ``[fx, fy, cx, cy]`` or a 3×3 matrix."""
    if isinstance(value, Mapping):
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in value]
        if missing:
            raise InputError(field_name, f"missing {', '.join(missing)}")
        fx, fy, cx, cy = (_number(value[k], f"{field_name}.{k}") for k in ("fx", "fy", "cx", "cy"))
        matrix = [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
    else:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape not in ((4,), (3, 3)):
            raise InputError(
                field_name, "must be {fx, fy, cx, cy}, [fx, fy, cx, cy] or a 3x3 matrix"
            )
        if arr.shape == (4,):
            fx, fy, cx, cy = arr
            matrix = [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
        else:
            matrix = arr
    return conventions.intrinsics_from_matrix(matrix, width, height, field_name)


def parse_camera_pose(value: Any, field_name: str = "camera_pose") -> np.ndarray:
    """Read a rigid 4×4 camera-to-world transform."""
    try:
        pose = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(field_name, "must be a 4x4 matrix of numbers") from None
    if pose.shape != (4, 4):
        raise InputError(field_name, f"must be 4x4, got shape {pose.shape}")
    if not np.isfinite(pose).all():
        raise InputError(field_name, "must be finite")
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise InputError(field_name, "last row must be [0, 0, 0, 1]")
    rot = pose[:3, :3]
    if not np.allclose(rot @ rot.T, np.eye(3), atol=1e-4) or np.linalg.det(rot) < 0:
        raise InputError(field_name, "rotation part must be a proper rotation matrix")
    return pose


@dataclass
class _Array:
    """An NPY array known by its header; :meth:`read` loads its data (and only then)."""

    shape: Tuple[int, ...]
    dtype: np.dtype
    read: Callable[[], np.ndarray]


def _npy_header(handle: BinaryIO, field_name: str) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise InputError(field_name, f"unsupported NPY format version {version}")
    except (ValueError, EOFError) as exc:
        raise InputError(field_name, f"cannot read NPY/NPZ: {exc}") from None
    if dtype.hasobject:
        raise InputError(
            field_name, "pickled (object) arrays are refused; save plain numeric arrays"
        )
    if dtype.names is not None or dtype.subdtype is not None:
        raise InputError(field_name, f"must be a plain numeric array, got dtype {dtype}")
    return tuple(int(n) for n in shape), bool(fortran), dtype


def _npy_array(handle: BinaryIO, field_name: str, available: int) -> _Array:
    """Read an NPY header from ``handle``; the data (``available`` bytes at most) stays unread.

    The data is read only on :meth:`_Array.read`, after the caller checked the declared shape,
    and then exactly the declared number of bytes.
    """
    start = handle.tell()
    shape, fortran, dtype = _npy_header(handle, field_name)
    nbytes = math.prod(shape) * dtype.itemsize
    have = available - (handle.tell() - start)

    def read() -> np.ndarray:
        if nbytes > have:
            raise InputError(
                field_name, f"truncated: the NPY header declares {nbytes} bytes of data, "
                f"the file holds {max(have, 0)}"
            )
        raw = handle.read(nbytes)
        if len(raw) != nbytes:
            raise InputError(field_name, f"truncated: {len(raw)} of {nbytes} bytes of data")
        return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")

    return _Array(shape, dtype, read)


def _pointmap_arrays(data: bytes, field_name: str) -> Dict[str, _Array]:
    """The arrays of an NPY (key ``""``) or NPZ, by header; pickles and bombs are refused.

    An NPZ member is never inflated beyond what its NPY header declares (and the caller
    accepts), however large the member claims to be.
    """
    if data.startswith(_NPY_MAGIC):
        return {"": _npy_array(io.BytesIO(data), field_name, len(data))}
    if not data.startswith(_ZIP_MAGICS):
        raise InputError(field_name, "not an NPY or NPZ file (pickles are refused)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        arrays = {}
        for info in archive.infolist():
            if info.is_dir() or not info.filename.endswith(".npy"):
                continue  # np.savez writes only .npy members
            key = info.filename[: -len(".npy")]
            arrays[key] = _npy_array(archive.open(info), f"{field_name}[{key}]", info.file_size)
        return arrays
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 -- zipfile/zlib raise many types for corrupt data
        raise InputError(field_name, f"cannot read NPZ: {exc.__class__.__name__}: {exc}") from None


def _read_array(array: _Array, field_name: str) -> np.ndarray:
    try:
        return array.read()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a corrupt NPZ member fails while inflating
        raise InputError(field_name, f"cannot read NPY/NPZ: {exc.__class__.__name__}: {exc}"
                         ) from None


def _check_size(shape: Tuple[int, ...], height: int, width: int, field_name: str) -> None:
    if tuple(shape[:2]) != (height, width):
        raise InputError(
            field_name, f"pointmap is {shape[1]}x{shape[0]} but the image is {width}x{height}"
        )


def load_pointmap(
    data: bytes,
    height: int,
    width: int,
    intrinsics: Optional[CameraIntrinsics] = None,
    field_name: str = "pointmap_url",
) -> Tuple[np.ndarray, Optional[CameraIntrinsics]]:
    """Decode a pointmap / depth file to H×W×3 float32 optical-frame points (NaN = invalid).

    ``intrinsics`` (from the request) win over those stored in an NPZ. Returns the points and
    the intrinsics used; for points without known intrinsics they are fitted to the points.
    Declared sizes (PNG header, NPY shapes) are checked against the image before any data is
    decoded.
    """
    if data.startswith(_PNG_MAGIC):
        from PIL import Image

        try:
            mode = Image.open(io.BytesIO(data)).mode
        except Exception as exc:  # noqa: BLE001 -- Pillow raises many types for corrupt data
            raise InputError(field_name, f"cannot decode image ({exc.__class__.__name__})"
                             ) from None
        if mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise InputError(field_name, f"a PNG depth must be 16-bit grey, got mode {mode}")
        image = _open_image(data, field_name, size=(width, height), what="pointmap")
        depth = np.asarray(image).astype(np.uint16)
        arrays = {"depth": _Array(depth.shape, depth.dtype, lambda: depth)}
    else:
        arrays = _pointmap_arrays(data, field_name)
    if "" in arrays or (len(arrays) == 1 and not {"points", "depth"} & set(arrays)):
        array = next(iter(arrays.values()))
        is_points = len(array.shape) == 3 and array.shape[-1] == 3
        arrays = {"points" if is_points else "depth": array}

    if intrinsics is None and ("K" in arrays or "intrinsics" in arrays):
        key = "K" if "K" in arrays else "intrinsics"
        name = f"{field_name}[{key}]"
        if math.prod(arrays[key].shape) not in (4, 9):
            raise InputError(name, f"must be [fx, fy, cx, cy] or 3x3, got shape "
                                   f"{arrays[key].shape}")
        intrinsics = parse_intrinsics(_read_array(arrays[key], name).tolist(), name, width,
                                      height)

    float_depth = False
    if "points" in arrays:
        array = arrays["points"]
        if len(array.shape) != 3 or array.shape[2] != 3:
            raise InputError(field_name, f"points must be HxWx3, got shape {array.shape}")
        if array.dtype.kind != "f":
            raise InputError(field_name, f"points must be float metres, got dtype {array.dtype}")
        _check_size(array.shape, height, width, field_name)
        points = _read_array(array, field_name).astype(np.float32)
        float_depth = True
    elif "depth" in arrays:
        array = arrays["depth"]
        shape = array.shape[:2] if len(array.shape) == 3 and array.shape[2] == 1 else array.shape
        if len(shape) != 2:
            raise InputError(field_name, f"depth must be HxW, got shape {array.shape}")
        if array.dtype.kind != "f" and (array.dtype.kind, array.dtype.itemsize) != ("u", 2):
            raise InputError(
                field_name,
                f"depth must be float metres or uint16 millimetres, got dtype {array.dtype}",
            )
        _check_size(shape, height, width, field_name)
        if intrinsics is None:
            raise InputError(
                field_name,
                "a depth image needs intrinsics (K or intrinsics in the NPZ, "
                "or the request's intrinsics / --intrinsics)",
            )
        depth = _read_array(array, field_name).reshape(shape)
        float_depth = array.dtype.kind == "f"
        encoding = conventions.DEPTH_32FC1 if float_depth else conventions.DEPTH_16UC1
        points = conventions.backproject(
            conventions.depth_to_metres(depth, encoding, field_name), intrinsics
        )
    else:
        raise InputError(
            field_name, f"NPZ needs a 'points' or 'depth' array, has {sorted(arrays) or 'none'}"
        )

    with np.errstate(invalid="ignore"):
        valid = np.isfinite(points).all(axis=2) & (points[:, :, 2] > 0)
    points = np.where(valid[:, :, None], points, np.float32(np.nan)).astype(np.float32)
    if not valid.any():
        raise InputError(field_name, "pointmap has no valid point (all NaN, zero or z <= 0)")
    if float_depth:  # millimetres stored as float: the node refuses them too
        conventions.check_float_depth_is_metres(points[:, :, 2], field_name)
    else:  # metres stored as integers: so does the node
        conventions.check_integer_depth_is_millimetres(points[:, :, 2], field_name)
    if intrinsics is None:
        # Also rejects pointmaps in another axis convention (e.g. PyTorch3D's +x left, +y up).
        intrinsics = conventions.intrinsics_from_pointmap(points, field=field_name)
    return np.ascontiguousarray(points), intrinsics


# --------------------------------------------------------------------------------------------
# Prompts


def _integer(value: Any, field_name: str) -> int:
    if isinstance(value, bool):
        raise InputError(field_name, "must be an integer, got bool")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and value == int(value):
        return int(value)
    raise InputError(field_name, f"must be an integer, got {value!r}")


def _list_of(value: Any, field_name: str, item_type: type, item_desc: str) -> list:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise InputError(field_name, f"must be a list, got {_type(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, item_type):
            raise InputError(f"{field_name}[{index}]", f"must be {item_desc}, got {_type(item)}")
    return list(value)


def _object_id(value: Any, field_name: str) -> Optional[int]:
    if value is None:
        return None
    object_id = _integer(value, field_name)
    if not 0 <= object_id <= MAX_OBJECT_ID:
        raise InputError(field_name, f"must be in [0, {MAX_OBJECT_ID}], got {object_id}")
    return object_id


def _check_range(value: int, field_name: str, upper: int, axis: str) -> int:
    if not 0 <= value < upper:
        raise InputError(
            field_name, f"{value} is outside the image ({axis} must be in [0, {upper - 1}])"
        )
    return value


def parse_point_prompts(value: Any, width: int, height: int) -> List[PointPrompt]:
    """Validate hosted ``point_prompts`` against an image of ``width`` × ``height``."""
    points = []
    for index, item in enumerate(_list_of(value, "point_prompts", Mapping, "an object")):
        name = f"point_prompts[{index}]"
        for key in ("x", "y"):
            if key not in item:
                raise InputError(f"{name}.{key}", "is required")
        x = _check_range(_integer(item["x"], f"{name}.x"), f"{name}.x", width, "x")
        y = _check_range(_integer(item["y"], f"{name}.y"), f"{name}.y", height, "y")
        label = item.get("label", 1)
        label = 1 if label is None else _integer(label, f"{name}.label")
        if label not in (0, 1):
            raise InputError(
                f"{name}.label", f"must be 0 (background) or 1 (foreground), got {label}"
            )
        object_id = _object_id(item.get("object_id"), f"{name}.object_id")
        points.append(PointPrompt(x=x, y=y, label=label, object_id=object_id))
    return points


def parse_box_prompts(value: Any, width: int, height: int) -> List[BoxPrompt]:
    """Validate hosted ``box_prompts`` against an image of ``width`` × ``height``."""
    boxes = []
    for index, item in enumerate(_list_of(value, "box_prompts", Mapping, "an object")):
        name = f"box_prompts[{index}]"
        coords = {}
        for key in ("x_min", "y_min", "x_max", "y_max"):
            if key not in item:
                raise InputError(f"{name}.{key}", "is required")
            upper, axis = (width, "x") if key.startswith("x") else (height, "y")
            coords[key] = _check_range(
                _integer(item[key], f"{name}.{key}"), f"{name}.{key}", upper, axis
            )
        for axis in ("x", "y"):
            if coords[f"{axis}_max"] < coords[f"{axis}_min"]:
                raise InputError(
                    f"{name}.{axis}_max",
                    f"{coords[f'{axis}_max']} is less than {axis}_min {coords[f'{axis}_min']}",
                )
        label = item.get("label", 1)
        label = 1 if label is None else _integer(label, f"{name}.label")
        if label not in (0, 1):
            raise InputError(f"{name}.label", f"must be 0 (exclude) or 1 (include), got {label}")
        object_id = _object_id(item.get("object_id"), f"{name}.object_id")
        boxes.append(BoxPrompt(object_id=object_id, label=label, **coords))
    return boxes


def group_prompts(points: Sequence[PointPrompt], boxes: Sequence[BoxPrompt]) -> List[ObjectPrompt]:
    """Group prompts into objects by ``object_id`` (rules in the module docstring).

    Returned prompts carry their (possibly allocated) ``object_id``; objects are sorted by id.
    """
    given = [p.object_id for p in points if p.object_id is not None]
    given += [b.object_id for b in boxes if b.object_id is not None]
    used = set(given)

    def new_id() -> int:  # above the largest id so far; the lowest unused past MAX_OBJECT_ID
        candidate = max(used) + 1 if used else 0
        if candidate > MAX_OBJECT_ID:
            candidate = 0
            while candidate in used:
                candidate += 1
        used.add(candidate)
        return candidate

    objects: Dict[int, ObjectPrompt] = {}

    def obj(object_id: int) -> ObjectPrompt:
        return objects.setdefault(object_id, ObjectPrompt(object_id=object_id))

    for box in boxes:
        if box.object_id is not None:
            obj(box.object_id).boxes.append(box)
    idless_boxes = [b for b in boxes if b.object_id is None]
    box_ids = []
    for box in idless_boxes:
        box_ids.append(new_id())
        obj(box_ids[-1]).boxes.append(_with_id(box, box_ids[-1]))
    idless_points = any(p.object_id is None for p in points)
    points_id = box_ids[0] if len(box_ids) == 1 else new_id() if idless_points else None
    for point in points:
        object_id = point.object_id if point.object_id is not None else points_id
        obj(object_id).points.append(_with_id(point, object_id))
    result = [objects[k] for k in sorted(objects)]
    for item in result:
        if not any(p.label == 1 for p in list(item.points) + list(item.boxes)):
            field_name = "point_prompts" if item.points else "box_prompts"
            raise InputError(
                field_name,
                f"object {item.object_id} has only background (label 0) prompts",
            )
    return result


def _with_id(prompt, object_id: int):
    return dataclasses.replace(prompt, object_id=object_id)


def check_object_count(query: SegmentationQuery, max_objects: int) -> None:
    """Refuse a query asking for more than ``max_objects`` objects (masks or prompted objects).

    Raises:
        InputError: naming ``mask_urls``, ``box_prompts`` or ``point_prompts``.
    """
    _check_count(len(query.masks), max_objects, "mask_urls", "masks")
    field_name = "box_prompts" if any(obj.boxes for obj in query.objects) else "point_prompts"
    _check_count(len(query.objects), max_objects, field_name, "objects prompted")


def _check_count(count: int, max_objects: int, field_name: str, what: str) -> None:
    if count > max_objects:
        raise InputError(
            field_name, f"{count} {what}; at most {max_objects} objects per request (max_objects)"
        )


def _check_nesting(request: Mapping[str, Any]) -> None:
    """Refuse JSON nested deeper than MAX_NESTING (iteratively: no recursion to exhaust)."""
    stack = [(key, value, 1) for key, value in request.items()]
    while stack:
        key, value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise InputError(str(key), f"nested deeper than {MAX_NESTING} levels")
        if isinstance(value, Mapping):
            stack.extend((key, item, depth + 1) for item in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((key, item, depth + 1) for item in value)


# --------------------------------------------------------------------------------------------
# The request


def parse_seed(value: Any) -> int:
    """The request's ``seed``: :data:`DEFAULT_SEED` when absent, else in ``[0, MAX_SEED]``."""
    if value is None:
        return DEFAULT_SEED
    seed = _integer(value, "seed")
    if not 0 <= seed <= MAX_SEED:
        raise InputError("seed", f"must be in [0, {MAX_SEED}], got {seed}")
    return seed


def _parse_prompt(value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError("prompt", f"must be a string, got {_type(value)}")
    return value.strip() or None


def parse_query(
    request: Mapping[str, Any],
    width: int,
    height: int,
    base_dir: Optional[Union[str, Path]] = None,
    options: Optional[InputOptions] = None,
    warnings: Optional[List[str]] = None,
) -> SegmentationQuery:
    """The segmentation query of a request's prompt fields for a ``width`` × ``height`` image.

    ``mask_urls``, else ``point_prompts`` / ``box_prompts``, else ``prompt`` (text), else none
    (automatic segmentation); what is ignored by that precedence is added to ``warnings``.
    Also used on its own for every frame of a recording (``sam3d-reconstruct --bag``).

    Raises:
        InputError: naming the offending field, e.g. ``box_prompts[2].x_max``.
    """
    options = options or InputOptions()
    warnings = [] if warnings is None else warnings
    text = _parse_prompt(request.get("prompt"))
    mask_urls = _list_of(request.get("mask_urls"), "mask_urls", str, "a string (URI or path)")
    points_prompts = parse_point_prompts(request.get("point_prompts"), width, height)
    box_prompts = parse_box_prompts(request.get("box_prompts"), width, height)
    objects = group_prompts(points_prompts, box_prompts)
    check_object_count(SegmentationQuery(objects=objects), options.max_objects)
    _check_count(len(mask_urls), options.max_objects, "mask_urls", "masks")
    masks = []
    for index, uri in enumerate(mask_urls):
        name = f"mask_urls[{index}]"
        masks.append(decode_mask(read_uri(uri, name, base_dir, options), name, (height, width)))
    if masks:
        if objects or text:
            warnings.append("mask_urls given: point/box prompts and prompt are ignored")
        return SegmentationQuery(masks=masks)
    if objects:
        if text:
            warnings.append("point/box prompts given: the text prompt is ignored")
        return SegmentationQuery(objects=objects)
    return SegmentationQuery(text=text)


def parse_request(
    request: Mapping[str, Any],
    base_dir: Optional[Union[str, Path]] = None,
    options: Optional[InputOptions] = None,
) -> ParsedRequest:
    """Validate a hosted request and load everything it refers to.

    Args:
        request: the hosted JSON object (a dict).
        base_dir: directory that relative paths are taken from (the request file's directory);
            the current directory when ``None``.
        options: URI policy and limits.

    Raises:
        InputError: naming the offending field, e.g. ``box_prompts[2].x_max``.
    """
    options = options or InputOptions()
    if not isinstance(request, Mapping):
        raise InputError("request", f"must be a JSON object, got {_type(request)}")
    warnings: List[str] = []
    for key in request:
        if key not in HOSTED_FIELDS and key not in EXTENSION_FIELDS:
            warnings.append(f"ignoring unknown field {key!r}")

    # Cheap checks first, so a bad request fails before any file is read.
    _check_nesting(request)
    if request.get("image_url") is None:
        raise InputError("image_url", "is required")
    seed = parse_seed(request.get("seed"))
    _parse_prompt(request.get("prompt"))
    mask_urls = _list_of(request.get("mask_urls"), "mask_urls", str, "a string (URI or path)")
    _check_count(len(mask_urls), options.max_objects, "mask_urls", "masks")
    max_prompts = options.max_objects * MAX_PROMPTS_PER_OBJECT
    for key in ("point_prompts", "box_prompts"):
        prompts = _list_of(request.get(key), key, Mapping, "an object")
        if len(prompts) > max_prompts:
            raise InputError(
                key, f"{len(prompts)} prompts; at most {max_prompts} (max_objects × "
                f"{MAX_PROMPTS_PER_OBJECT})"
            )
    pose = np.eye(4)
    if request.get("camera_pose") is not None:
        pose = parse_camera_pose(request["camera_pose"])

    rgb = decode_image(
        read_uri(request["image_url"], "image_url", base_dir, options), "image_url",
        options.max_pixels,
    )
    height, width = rgb.shape[:2]

    query = parse_query(request, width, height, base_dir, options, warnings)

    intrinsics = None
    if request.get("intrinsics") is not None:
        intrinsics = parse_intrinsics(request["intrinsics"], "intrinsics", width, height)
    elif request.get("K") is not None:
        intrinsics = parse_intrinsics(request["K"], "K", width, height)

    points = None
    if request.get("pointmap_url") is not None:
        data = read_uri(request["pointmap_url"], "pointmap_url", base_dir, options)
        points, intrinsics = load_pointmap(data, height, width, intrinsics, "pointmap_url")

    frame = Frame(rgb=rgb, points=points, intrinsics=intrinsics, camera_pose=pose)
    return ParsedRequest(
        frame=frame, query=query, seed=seed, request=dict(request), warnings=warnings
    )
