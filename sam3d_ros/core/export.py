"""Writers for the hosted result: GLB meshes, Gaussian-splat PLY files, JSON and zip, atomically.

Frames (see :mod:`sam3d_ros.core.conventions`): the combined ``model_glb`` / ``gaussian_splat``
are in
the camera optical frame (metres, x right, y down, z forward); per-object files are in each
object's canonical frame (``p_camera = R(q) @ (scale ⊙ p_canonical) + translation``). Note that
the optical frame is y-down, so a generic glTF viewer (which assumes +Y up) shows the combined
scene upside down; that is intended: its coordinates are the robot's camera coordinates.

Layout of a run directory written by :func:`write_run`::

    scene.glb  scene.ply                      combined scene, camera optical frame
    objects/object_<id>.glb  .ply             one per object, canonical frame
    metadata.json  request.json               poses, intrinsics, counts; the request as given
    artifacts.zip                             everything above (not result.json)
    result.json                               the hosted result dict returned by write_run

Everything is deterministic: the same inputs give byte-identical files (sorted JSON keys, zip
entries with fixed timestamps and permissions, no wall-clock data).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

import numpy as np

from sam3d_ros import __version__
from sam3d_ros.core import conventions
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.run_dirs import remove_stale_temps, temp_dir_path
from sam3d_ros.core.types import Frame, Gaussians, Grasp, ObjectReconstruction

CONTENT_TYPE_GLB = "model/gltf-binary"
CONTENT_TYPE_PLY = "application/octet-stream"
CONTENT_TYPE_ZIP = "application/zip"
CONTENT_TYPE_JSON = "application/json"

SH_C0 = 0.28209479177387814
"""Zeroth-order real spherical harmonic; splat colour = 0.5 + SH_C0 · f_dc."""

SCENE_GLB = "scene.glb"
SCENE_PLY = "scene.ply"
OBJECTS_DIR = "objects"
METADATA_JSON = "metadata.json"
REQUEST_JSON = "request.json"
RESULT_JSON = "result.json"
ARTIFACTS_ZIP = "artifacts.zip"

SPLAT_PROPERTIES = (
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)
"""Vertex properties of a splat PLY (all float32, in this order)."""

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_OPACITY_EPS = 1e-7
_MIN_SCALE = 1e-12

PathLike = Union[str, "os.PathLike[str]"]
Buffer = Union[bytes, memoryview]
"""A chunk of an encoded file (files are lists of chunks written in order)."""


def _nbytes(chunk: Buffer) -> int:
    return memoryview(chunk).nbytes


def _raw(array: np.ndarray) -> memoryview:
    """Zero-copy byte view of an array (C order; copies only if not contiguous)."""
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


# --------------------------------------------------------------------------------------------
# GLB (glTF 2.0 binary)
# --------------------------------------------------------------------------------------------

_GLB_MAGIC = 0x46546C67  # b"glTF"
_CHUNK_JSON = 0x4E4F534A  # b"JSON"
_CHUNK_BIN = 0x004E4942  # b"BIN\0"
_FLOAT, _UNSIGNED_BYTE, _UNSIGNED_INT = 5126, 5121, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


@dataclass
class GlbMesh:
    """One node + mesh of a GLB file.

    Attributes:
        name: node and mesh name (``object_<id>`` in run directories).
        vertices: V×3 positions (written as float32).
        faces: F×3 vertex indices, counter-clockwise seen from outside (written as uint32).
        colors: optional V×3 / V×4 colours: uint8 (written as normalised unsigned bytes) or
            float in [0, 1] (written as float32, clipped). Values are written as given; glTF
            reads them as linear RGB(A).
        normals: optional V×3 normals (normalised on write; zero vectors become +z).
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    colors: Optional[np.ndarray] = None
    normals: Optional[np.ndarray] = None


class _BinBuilder:
    """Collects bufferViews + accessors into one 4-byte-aligned binary buffer."""

    def __init__(self) -> None:
        self.parts: List[Buffer] = []
        self.length = 0
        self.views: List[Dict[str, Any]] = []
        self.accessors: List[Dict[str, Any]] = []

    def add(self, array: np.ndarray, target: int, accessor: Dict[str, Any], stride: int = 0
            ) -> int:
        data = _raw(array)
        view: Dict[str, Any] = {
            "buffer": 0, "byteOffset": self.length, "byteLength": len(data), "target": target,
        }
        if stride:
            view["byteStride"] = stride
        self.parts.append(data)
        self.length += len(data)
        pad = (-self.length) % 4
        if pad:
            self.parts.append(b"\0" * pad)
            self.length += pad
        self.views.append(view)
        self.accessors.append(dict(accessor, bufferView=len(self.views) - 1))
        return len(self.accessors) - 1


def _check_mesh(m: GlbMesh) -> Tuple[np.ndarray, np.ndarray]:
    v = np.ascontiguousarray(m.vertices, dtype=np.float32)
    f = np.asarray(m.faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{m.name}: vertices must be V×3, got {v.shape}")
    if f.size == 0:
        f = np.zeros((0, 3), dtype=np.uint32)
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "ui":
        raise ValueError(f"{m.name}: faces must be F×3 integers, got {f.shape} {f.dtype}")
    if not np.isfinite(v).all():
        raise ValueError(f"{m.name}: vertices contain non-finite values")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"{m.name}: face index out of range [0, {len(v)})")
    return v, np.ascontiguousarray(f, dtype=np.uint32)


def _color_accessor(
    binb: _BinBuilder, colors: np.ndarray, n: int, name: str
) -> int:
    c = np.asarray(colors)
    if c.shape not in ((n, 3), (n, 4)):
        raise ValueError(f"{name}: colors must be V×3 or V×4 with V={n}, got {c.shape}")
    kind = "VEC3" if c.shape[1] == 3 else "VEC4"
    if c.dtype == np.uint8:
        if c.shape[1] == 3:
            # Vertex attribute elements must start on 4-byte boundaries: pad RGB to stride 4.
            padded = np.zeros((n, 4), dtype=np.uint8)
            padded[:, :3] = c
            return binb.add(padded, _ARRAY_BUFFER, {
                "componentType": _UNSIGNED_BYTE, "normalized": True, "count": n, "type": kind,
            }, stride=4)
        return binb.add(c, _ARRAY_BUFFER, {
            "componentType": _UNSIGNED_BYTE, "normalized": True, "count": n, "type": kind,
        })
    if c.dtype.kind != "f":
        raise ValueError(f"{name}: colors must be uint8 or float, got {c.dtype}")
    cf = np.clip(np.nan_to_num(c.astype(np.float32)), 0.0, 1.0)
    return binb.add(cf, _ARRAY_BUFFER, {
        "componentType": _FLOAT, "count": n, "type": kind,
    })


def glb_bytes(meshes: Sequence[GlbMesh]) -> bytes:
    """Encode meshes as a glTF 2.0 binary (GLB); see :func:`glb_chunks`."""
    return b"".join(glb_chunks(meshes))


def glb_chunks(meshes: Sequence[GlbMesh]) -> List[Buffer]:
    """Encode meshes as a glTF 2.0 binary: one node + one mesh (one primitive) per entry.

    Returns the file as a list of buffers to write in order (avoids copying large arrays).

    Meshes without vertices or faces become nodes without a mesh. Accessors: ``POSITION``
    (float32 VEC3 with min/max), optional ``NORMAL`` (float32 VEC3), optional ``COLOR_0``, and
    uint32 indices (triangles). No materials: viewers use the default material modulated by
    ``COLOR_0``.

    Raises:
        ValueError: malformed arrays (shapes, non-finite vertices, out-of-range face indices).
    """
    binb = _BinBuilder()
    gltf: Dict[str, Any] = {
        "asset": {"version": "2.0", "generator": f"sam3d_ros {__version__}"},
        "scene": 0,
    }
    nodes: List[Dict[str, Any]] = []
    gl_meshes: List[Dict[str, Any]] = []
    for m in meshes:
        v, f = _check_mesh(m)
        node: Dict[str, Any] = {"name": m.name}
        nodes.append(node)
        if len(v) == 0 or len(f) == 0:
            continue
        n = len(v)
        attrs = {
            "POSITION": binb.add(v, _ARRAY_BUFFER, {
                "componentType": _FLOAT, "count": n, "type": "VEC3",
                "min": [float(x) for x in v.min(axis=0)],
                "max": [float(x) for x in v.max(axis=0)],
            })
        }
        if m.normals is not None:
            nrm = np.asarray(m.normals, dtype=np.float64)
            if nrm.shape != (n, 3):
                raise ValueError(f"{m.name}: normals must be V×3, got {nrm.shape}")
            length = np.linalg.norm(nrm, axis=1, keepdims=True)
            bad = ~(np.isfinite(length) & (length > 1e-12))[:, 0]
            nrm = np.where(bad[:, None], (0.0, 0.0, 1.0), nrm / np.where(bad[:, None], 1, length))
            attrs["NORMAL"] = binb.add(nrm.astype(np.float32), _ARRAY_BUFFER, {
                "componentType": _FLOAT, "count": n, "type": "VEC3",
            })
        if m.colors is not None:
            attrs["COLOR_0"] = _color_accessor(binb, m.colors, n, m.name)
        indices = binb.add(f, _ELEMENT_ARRAY_BUFFER, {
            "componentType": _UNSIGNED_INT, "count": int(f.size), "type": "SCALAR",
        })
        node["mesh"] = len(gl_meshes)
        gl_meshes.append({
            "name": m.name,
            "primitives": [{"attributes": attrs, "indices": indices, "mode": 4}],
        })
    if nodes:
        gltf["nodes"] = nodes
        gltf["scenes"] = [{"nodes": list(range(len(nodes)))}]
    else:
        gltf["scenes"] = [{}]
    if gl_meshes:
        gltf["meshes"] = gl_meshes
        gltf["accessors"] = binb.accessors
        gltf["bufferViews"] = binb.views
        gltf["buffers"] = [{"byteLength": binb.length}]
    js = json.dumps(gltf, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    js += b" " * ((-len(js)) % 4)
    chunks = [struct.pack("<II", len(js), _CHUNK_JSON), js]
    if binb.length:
        chunks += [struct.pack("<II", binb.length, _CHUNK_BIN)] + binb.parts
    total = 12 + sum(_nbytes(c) for c in chunks)
    return [struct.pack("<III", _GLB_MAGIC, 2, total)] + chunks


# --------------------------------------------------------------------------------------------
# Gaussian splat PLY
# --------------------------------------------------------------------------------------------


def splat_ply_bytes(g: Gaussians) -> bytes:
    """Encode Gaussians as a binary little-endian splat PLY (SH degree 0).

    Vertex properties (float32, see :data:`SPLAT_PROPERTIES`): position ``x y z``; normals
    ``nx ny nz`` = 0; ``f_dc_i = (rgb_i - 0.5) / SH_C0``; ``opacity = logit(alpha)`` (alpha
    clipped to ``[1e-7, 1 - 1e-7]`` in float32); ``scale_i = log(sigma_i)`` (sigma >= 1e-12);
    ``rot_0..3`` = the unit quaternion in **w x y z** order.

    Raises:
        ValueError: wrong shapes, non-finite means, or a zero-norm rotation.
    """
    return b"".join(_ply_chunks(encode_splat(g)))


def encode_splat(g: Gaussians) -> np.ndarray:
    """N×17 float32 rows of a splat PLY (columns as :data:`SPLAT_PROPERTIES`).

    Raises:
        ValueError: wrong shapes, non-finite means, or a zero-norm / non-finite rotation.
    """
    n = len(g)
    f32 = np.float32
    means = np.asarray(g.means, dtype=f32).reshape(n, 3)
    if not np.isfinite(means).all():
        raise ValueError("Gaussian means contain non-finite values")
    data = np.empty((n, len(SPLAT_PROPERTIES)), dtype=f32)
    data[:, 0:3] = means
    data[:, 3:6] = 0.0
    cols = data[:, 6:9]
    np.subtract(np.asarray(g.colors, dtype=f32).reshape(n, 3), f32(0.5), out=cols)
    cols *= f32(1.0 / SH_C0)
    alpha = np.clip(np.asarray(g.opacities, dtype=f32).reshape(n), f32(_OPACITY_EPS),
                    f32(1.0 - _OPACITY_EPS))
    np.subtract(np.log(alpha), np.log1p(-alpha), out=data[:, 9])
    np.log(np.maximum(np.asarray(g.scales, dtype=f32).reshape(n, 3), f32(_MIN_SCALE)),
           out=data[:, 10:13])
    rot = np.asarray(g.rotations, dtype=f32).reshape(n, 4)
    norm = np.sqrt(np.einsum("ij,ij->i", rot, rot))
    if not (np.isfinite(norm).all() and (norm > 1e-12).all()):
        raise ValueError("Gaussian rotations must be finite with non-zero norm")
    inv = (1.0 / norm)[:, None]
    np.multiply(rot[:, 3:4], inv, out=data[:, 13:14])
    np.multiply(rot[:, 0:3], inv, out=data[:, 14:17])
    return data


def _pose_splat(data: np.ndarray, q: np.ndarray, t: np.ndarray, s: np.ndarray) -> None:
    """Apply ``x ↦ s·R(q)·x + t`` (isotropic ``s``) to encoded splat rows, in place.

    Same maths as :func:`conventions.transform_gaussians`, on the encoded (log-scale, w x y z)
    representation, so the camera-frame scene is derived without re-encoding colours.
    """
    if not np.allclose(s, s[0], rtol=1e-6, atol=0):
        raise ValueError(f"Gaussians need an isotropic scale, got {s.tolist()}")
    m = conventions.pose_matrix(q, t, s).astype(np.float32)
    data[:, 0:3] = np.einsum("ij,nj->ni", m[:3, :3], data[:, 0:3]) + m[:3, 3]
    data[:, 10:13] += np.float32(np.log(s[0]))
    # new = q ⊗ old as one 4×4 product; rows hold w x y z, so permute the x y z w matrix
    perm = [3, 0, 1, 2]
    left = conventions.quat_left_matrix(q)[np.ix_(perm, perm)].astype(np.float32)
    rot = data[:, 13:17]
    rot[...] = np.einsum("ij,nj->ni", left, rot)
    np.negative(rot, out=rot, where=rot[:, 0:1] < 0)  # canonical sign w >= 0


def _ply_chunks(data: np.ndarray) -> List[Buffer]:
    header = "".join(
        ["ply\nformat binary_little_endian 1.0\n", f"element vertex {len(data)}\n"]
        + [f"property float {p}\n" for p in SPLAT_PROPERTIES]
        + ["end_header\n"]
    ).encode("ascii")
    body = np.ascontiguousarray(data, dtype="<f4")
    return [header, _raw(body)]


def read_splat_ply(path: PathLike) -> Gaussians:
    """Read a splat PLY written by :func:`splat_ply_bytes` (inverse conversions applied).

    Raises:
        ValueError: not a binary little-endian PLY with exactly the float properties of
            :data:`SPLAT_PROPERTIES`.
    """
    raw = Path(path).read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    lines = raw[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: not binary little endian")
    count = next(int(x.split()[2]) for x in lines if x.startswith("element vertex"))
    props = tuple(x.split()[2] for x in lines if x.startswith("property"))
    if props != SPLAT_PROPERTIES or any(
        x.split()[1] != "float" for x in lines if x.startswith("property")
    ):
        raise ValueError(f"{path}: unexpected properties {props}")
    body = raw[end + len(b"end_header\n"):]
    data = np.frombuffer(body, dtype="<f4", count=count * len(props)).reshape(count, len(props))
    d = data.astype(np.float64)
    rot = conventions.wxyz_to_xyzw(d[:, 13:17])
    if count:
        rot = conventions.quat_normalize(rot)
    return Gaussians(
        means=data[:, 0:3].astype(np.float32),
        scales=np.exp(d[:, 10:13]).astype(np.float32),
        rotations=rot.astype(np.float32),
        colors=(d[:, 6:9] * SH_C0 + 0.5).astype(np.float32),
        opacities=(1.0 / (1.0 + np.exp(-d[:, 9]))).astype(np.float32),
    )


# --------------------------------------------------------------------------------------------
# Scene assembly
# --------------------------------------------------------------------------------------------


def object_name(obj: ObjectReconstruction) -> str:
    """Node and file stem of an object: ``object_<object_id>``."""
    return f"object_{int(obj.object_id)}"


def _pose(obj: ObjectReconstruction) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = conventions.quat_normalize(np.asarray(obj.rotation, dtype=np.float64).reshape(4))
    t = np.asarray(obj.translation, dtype=np.float64).reshape(3)
    if not np.isfinite(t).all():
        raise ValueError(f"{object_name(obj)}: non-finite translation")
    return q, t, conventions.scale_vector(obj.scale)


def object_glb_mesh(obj: ObjectReconstruction, frame: str = "canonical") -> GlbMesh:
    """The object's mesh as a :class:`GlbMesh` in its ``"canonical"`` or ``"camera"`` frame."""
    v = np.asarray(obj.mesh.vertices, dtype=np.float32)
    if frame == "camera":
        q, t, s = _pose(obj)
        v = conventions.canonical_to_camera(v.reshape(-1, 3), q, t, s)
    elif frame != "canonical":
        raise ValueError(f"frame must be 'canonical' or 'camera', got {frame!r}")
    return GlbMesh(object_name(obj), v, obj.mesh.faces, obj.mesh.colors)


def camera_gaussians(objects: Sequence[ObjectReconstruction]) -> Gaussians:
    """All objects' Gaussians mapped to the camera optical frame and concatenated in order."""
    parts = []
    for obj in objects:
        q, t, s = _pose(obj)
        parts.append(conventions.transform_gaussians(obj.gaussians, q, t, s))
    if not parts:
        return Gaussians(*(np.zeros(shape, np.float32) for shape in
                           ((0, 3), (0, 3), (0, 4), (0, 3), (0,))))
    return Gaussians(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                       ("means", "scales", "rotations", "colors", "opacities")))


def _floats(a: Any) -> List[float]:
    return [float(x) for x in np.asarray(a, dtype=np.float64).reshape(-1)]


def _camera_pose(frame: Optional[Frame]) -> np.ndarray:
    pose = np.eye(4) if frame is None else np.asarray(frame.camera_pose, dtype=np.float64)
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise ValueError(f"camera_pose must be a finite 4×4 matrix, got shape {pose.shape}")
    return pose


def grasp_entries(grasps: Sequence[Grasp]) -> List[Dict[str, Any]]:
    """The grasp contract: ``[{"position", "orientation", "width", "score", ...}]``, best first.

    Camera optical frame; see :class:`sam3d_ros.core.types.Grasp` for the grasp frame. Extra keys:
    ``contacts`` and ``contacts_observed``.
    """
    return [g.to_dict() for g in grasps]


def object_metadata(
    obj: ObjectReconstruction, camera_pose: np.ndarray, grasps: Optional[Sequence[Grasp]] = None
) -> Dict[str, Any]:
    """Hosted ``ObjectMetadata`` of one object (lists of lists, as the hosted schema types them).

    Keys: ``object_index``, ``scale`` ``[[sx, sy, sz]]``, ``rotation`` ``[[x, y, z, w]]`` (unit),
    ``translation`` ``[[tx, ty, tz]]`` (metres, optical frame), ``camera_pose`` (4×4
    camera-to-world), plus ``object_id``, ``label`` and ``score``, and ``grasps``
    (:func:`grasp_entries`) when grasps were planned.
    """
    q, t, s = _pose(obj)
    extra = {} if grasps is None else {"grasps": grasp_entries(grasps)}
    return {
        **extra,
        "object_index": int(obj.object_index),
        "object_id": int(obj.object_id),
        "label": str(obj.label),
        "score": float(obj.score),
        "scale": [_floats(s)],
        "rotation": [_floats(q)],
        "translation": [_floats(t)],
        "camera_pose": [_floats(row) for row in camera_pose],
    }


# --------------------------------------------------------------------------------------------
# Run directory
# --------------------------------------------------------------------------------------------


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def json_bytes(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys, 2-space indent, UTF-8, trailing newline, no NaN)."""
    text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False,
                      default=_json_default)
    return (text + "\n").encode("utf-8")


def write_zip(file: Union[PathLike, BinaryIO], entries: Sequence[Tuple[str, Sequence[Buffer]]]
              ) -> None:
    """Write a deterministic, uncompressed zip: entries sorted by name, 1980-01-01 timestamps.

    Each entry is ``(name, chunks)``; the chunks are written in order (no joining copies).
    Geometry (float32 arrays) barely compresses, so entries are stored to keep export fast.
    """
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, chunks in sorted(entries, key=lambda e: e[0]):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = sum(_nbytes(c) for c in chunks)
            with zf.open(info, "w") as dst:
                for chunk in chunks:
                    dst.write(chunk)


def _ensure_free(run_dir: Path) -> None:
    if os.path.lexists(run_dir):
        if run_dir.is_symlink() or not run_dir.is_dir() or any(run_dir.iterdir()):
            raise InputError("output", f"{run_dir} already exists (and is not an empty directory)")


def write_run(
    run_dir: PathLike,
    request: Mapping[str, Any],
    frame: Optional[Frame],
    objects: Sequence[ObjectReconstruction],
    *,
    base_url: Optional[str] = None,
    grasps: Optional[Sequence[Sequence[Grasp]]] = None,
    failed_objects: Sequence[Mapping[str, Any]] = (),
) -> Dict[str, Any]:
    """Write a complete run directory atomically and return the hosted result dict.

    The files (see the module docstring) are built in a sibling directory
    ``.<name>.tmp-<pid>-<random>`` and renamed to ``run_dir`` at the end, so ``run_dir`` either
    does not exist or is complete. On any error the temporary directory is removed and the error
    is re-raised; an existing ``run_dir`` is never modified. Temporary directories of earlier
    writers that were killed are removed first
    (:func:`sam3d_ros.core.run_dirs.remove_stale_temps`).

    Args:
        run_dir: directory to create; must not exist (or be an empty directory). Its parent is
            created if missing.
        request: the request as received (written to ``request.json``; must be JSON-able,
            numpy values allowed).
        frame: the observation (``camera_pose``, image size and intrinsics go to the metadata);
            ``None`` = identity pose, no intrinsics.
        objects: reconstructions in the frame contract, with distinct ``object_id`` values.
        base_url: when given, file URLs are ``base_url + "/" + relative path``; otherwise
            absolute ``file://`` URIs of the final location.
        grasps: per object (same order), its grasps; written as ``"grasps"`` in each object's
            metadata (``result["metadata"]`` and ``metadata.json["objects"]``). ``None`` = no key.
        failed_objects: objects that could not be segmented or reconstructed (the engine's
            ``{"object_id", "stage", "reason"}``); written as ``"failed_objects"`` in the
            result and ``metadata.json`` when there are any (the hosted fields are unchanged).

    Returns:
        ``{"gaussian_splat", "model_glb", "metadata", "individual_splats", "individual_glbs",
        "artifacts_zip"}`` (and ``"failed_objects"``, see above); each file is
        ``{"url", "content_type", "file_name", "file_size"}``.
        The same dict is written to ``result.json``.

    Raises:
        InputError: ``("output", ...)`` when ``run_dir`` already exists and is not empty.
        ValueError: malformed reconstructions (duplicate ids, bad shapes, non-finite values).
        OSError: file-system errors.
    """
    run_dir = Path(os.path.abspath(os.fspath(run_dir)))
    _ensure_free(run_dir)
    names = [object_name(o) for o in objects]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate object_id among objects: {names}")
    pose = _camera_pose(frame)

    # Encode everything first (pure, in memory, no file I/O), then write.
    files: Dict[str, List[Buffer]] = {}
    files[SCENE_GLB] = glb_chunks([object_glb_mesh(o, "camera") for o in objects])
    encoded = [encode_splat(o.gaussians) for o in objects]
    scene = np.concatenate(encoded) if encoded else encode_splat(camera_gaussians([]))
    start = 0
    for obj, rows in zip(objects, encoded, strict=True):
        _pose_splat(scene[start:start + len(rows)], *_pose(obj))
        start += len(rows)
    files[SCENE_PLY] = _ply_chunks(scene)
    per_object = []
    for obj, name, rows in zip(objects, names, encoded, strict=True):
        glb_rel, ply_rel = f"{OBJECTS_DIR}/{name}.glb", f"{OBJECTS_DIR}/{name}.ply"
        files[glb_rel] = glb_chunks([object_glb_mesh(obj, "canonical")])
        files[ply_rel] = _ply_chunks(rows)
        per_object.append((glb_rel, ply_rel))
    if grasps is not None and len(grasps) != len(objects):
        raise ValueError(f"{len(grasps)} grasp lists for {len(objects)} objects")
    meta_list = [object_metadata(o, pose, None if grasps is None else grasps[i])
                 for i, o in enumerate(objects)]
    document = _metadata_document(frame, pose, objects, meta_list, per_object)
    failed = [dict(item) for item in failed_objects]
    if failed:
        document["failed_objects"] = failed
    files[METADATA_JSON] = [json_bytes(document)]
    files[REQUEST_JSON] = [json_bytes(dict(request))]
    sizes = {rel: sum(_nbytes(c) for c in chunks) for rel, chunks in files.items()}

    def file_entry(rel: str, content_type: str) -> Dict[str, Any]:
        if base_url is not None:
            url = f"{base_url.rstrip('/')}/{quote(rel)}"
        else:
            url = (run_dir / rel).as_uri()
        return {"url": url, "content_type": content_type, "file_name": rel.rsplit("/", 1)[-1],
                "file_size": sizes[rel]}

    run_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(run_dir.parent)  # of earlier runs killed while writing
    tmp = temp_dir_path(run_dir)
    try:
        os.mkdir(tmp, 0o700)  # inside the try: a SIGTERM right after mkdir still removes it
        os.chmod(tmp, 0o755)
        if objects:
            (tmp / OBJECTS_DIR).mkdir()
        for rel, chunks in files.items():
            _write_file(tmp / rel, chunks)
        write_zip(tmp / ARTIFACTS_ZIP, list(files.items()))
        sizes[ARTIFACTS_ZIP] = (tmp / ARTIFACTS_ZIP).stat().st_size
        result = {
            "gaussian_splat": file_entry(SCENE_PLY, CONTENT_TYPE_PLY),
            "model_glb": file_entry(SCENE_GLB, CONTENT_TYPE_GLB),
            "metadata": meta_list,
            "individual_splats": [file_entry(p, CONTENT_TYPE_PLY) for _, p in per_object],
            "individual_glbs": [file_entry(g, CONTENT_TYPE_GLB) for g, _ in per_object],
            "artifacts_zip": file_entry(ARTIFACTS_ZIP, CONTENT_TYPE_ZIP),
        }
        if failed:
            result["failed_objects"] = failed
        _write_file(tmp / RESULT_JSON, [json_bytes(result)])
        _ensure_free(run_dir)
        try:
            os.rename(tmp, run_dir)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise InputError("output", f"{run_dir} already exists") from exc
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _write_file(path: Path, chunks: Sequence[Buffer]) -> None:
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def _metadata_document(
    frame: Optional[Frame],
    pose: np.ndarray,
    objects: Sequence[ObjectReconstruction],
    meta_list: List[Dict[str, Any]],
    per_object: List[Tuple[str, str]],
) -> Dict[str, Any]:
    camera: Dict[str, Any] = {"camera_pose": [_floats(r) for r in pose], "intrinsics": None}
    if frame is not None:
        camera["width"], camera["height"] = frame.width, frame.height
        k = frame.intrinsics
        if k is not None:
            camera["intrinsics"] = {"fx": float(k.fx), "fy": float(k.fy), "cx": float(k.cx),
                                    "cy": float(k.cy), "width": int(k.width),
                                    "height": int(k.height)}
    docs = []
    for obj, meta, (glb_rel, ply_rel) in zip(objects, meta_list, per_object, strict=True):
        r0, r1, c0, c1 = obj.region.bbox
        bbox = [c0, r0, c1 - 1, r1 - 1] if obj.region.any() else None
        docs.append(dict(
            meta,
            extents=None if obj.extents is None else _floats(obj.extents),
            pose_matrix=[_floats(r) for r in conventions.pose_matrix(meta["rotation"][0],
                                                            meta["translation"][0],
                                                            meta["scale"][0])],
            num_vertices=int(np.shape(obj.mesh.vertices)[0]),
            num_faces=int(np.shape(obj.mesh.faces)[0]) if np.size(obj.mesh.faces) else 0,
            num_gaussians=len(obj.gaussians),
            mask_pixels=obj.region.area,
            mask_bbox_xyxy=bbox,
            glb=glb_rel,
            splat=ply_rel,
        ))
    return {
        "format": "sam3d_ros.metadata/1",
        "frames": {
            "camera": "optical frame: x right, y down, z forward; metres",
            "quaternion_order": "xyzw",
            "contract": "p_camera = R(rotation) @ (scale * p_canonical) + translation",
            "combined_files": "camera optical frame",
            "individual_files": "canonical object frame",
            "camera_pose": "4x4 camera-to-world",
            "grasps": "camera optical frame; origin = midpoint of the fingertip contacts, "
                      "+z = approach, +y = closing, +x = y x z; width = opening at contact",
        },
        "camera": camera,
        "objects": docs,
    }
