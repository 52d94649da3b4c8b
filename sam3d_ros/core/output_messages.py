"""Build the node's output messages from core results: pure functions, ROS-free.

Every function takes a message kit (:mod:`sam3d_ros.core.message_kit`: rclpy's classes for the
node, rosbags' for a recording written offline), plain core objects
(:class:`~sam3d_ros.core.types.ObjectReconstruction`, numpy arrays, the hosted result dict) and a
``std_msgs/Header`` of that kit, and returns a message, so each output can be tested by building
it directly. The node (:mod:`sam3d_ros.ros.publishers`) only decides *when* to publish.

Frames and units follow :mod:`sam3d_ros.core.conventions`: every output is in the frame of the
source
image's header (the camera optical frame), metres, quaternions ``[x, y, z, w]``. The object frame
of object *i* is its pose (``translation``, ``rotation``); the mesh of a
``ReconstructedObject`` and of a mesh marker is in that frame, in metres: canonical vertices
times ``scale`` (``p_object = scale ⊙ p_canonical``, ``p_camera = R(q) p_object + t``).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import hashlib
import json
import math
import threading
import time
from typing import (
    Any,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

import numpy as np

from sam3d_ros.core import conventions
from sam3d_ros.core.depth_hygiene import object_depth
from sam3d_ros.core.mesh_decimation import decimate, same_shape
from sam3d_ros.core.message_kit import MessageKit
from sam3d_ros.core.point_clouds import pointcloud2_from_arrays
from sam3d_ros.core.types import CameraIntrinsics, MaskCrop, ObjectReconstruction

MESH_NS = "sam3d_meshes"
"""Marker namespace of the per-object TRIANGLE_LIST meshes (marker id = object id)."""
LABEL_NS = "sam3d_labels"
"""Marker namespace of the per-object TEXT_VIEW_FACING labels (marker id = object id)."""
LABEL_GAP_M = 0.03
"""A label sits this far above the top of its object's box."""
OPTICAL_UP = np.array([0.0, -1.0, 0.0])
"""Camera −y: "up" for a level camera, the labels' direction when no support plane is known."""

_PALETTE = np.array(
    [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
        (0, 128, 128), (220, 190, 255), (170, 110, 40), (128, 0, 0), (170, 255, 195),
        (128, 128, 0),
    ],
    dtype=np.uint8,
)


def object_color(object_id: int) -> Tuple[int, int, int]:
    """A distinct RGB colour (0..255) per object id, the same in markers and the debug image."""
    return tuple(int(c) for c in _PALETTE[int(object_id) % len(_PALETTE)])


# --------------------------------------------------------------------------------------------
# Geometry helpers


def pose_msg(kit: MessageKit, rotation_xyzw: Sequence[float], translation: Sequence[float]) -> Any:
    """``geometry_msgs/Pose`` of an ``[x, y, z, w]`` rotation and a translation (metres)."""
    q = conventions.quat_canonical(np.asarray(rotation_xyzw, dtype=np.float64).reshape(4))
    t = np.asarray(translation, dtype=np.float64).reshape(3)
    pose = kit.Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in t)
    (pose.orientation.x, pose.orientation.y, pose.orientation.z,
     pose.orientation.w) = (float(v) for v in q)
    return pose


def object_pose(kit: MessageKit, obj: ObjectReconstruction) -> Any:
    """Pose of the object frame in the camera frame."""
    return pose_msg(kit, obj.rotation, obj.translation)


def object_size(obj: ObjectReconstruction) -> np.ndarray:
    """Oriented-box extents (metres) along the object axes.

    ``extents`` when the backend gave them, else the extent of the mesh in the object frame.
    """
    if obj.extents is not None:
        return np.asarray(obj.extents, dtype=np.float64).reshape(3)
    v = object_vertices_m(obj)
    return np.ptp(v, axis=0) if len(v) else np.zeros(3)


def object_vertices_m(obj: ObjectReconstruction) -> np.ndarray:
    """Mesh vertices in the object frame, metres (canonical vertices times ``scale``), V×3."""
    v = np.asarray(obj.mesh.vertices, dtype=np.float64).reshape(-1, 3)
    return v * conventions.scale_vector(obj.scale)[None, :]


def _vec3(kit: MessageKit, values: Iterable[float]) -> Any:
    x, y, z = (float(v) for v in values)
    return kit.Vector3(x=x, y=y, z=z)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small message objects.

    Each allocation burst would otherwise trigger collections that walk the whole heap (the
    backends keep large object graphs), which costs more than building the objects.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _points(kit: MessageKit, array: np.ndarray) -> Any:
    xyz = np.ascontiguousarray(np.asarray(array, dtype=np.float64).reshape(-1, 3))
    with _no_gc():
        return kit.points(xyz)


def _colors(kit: MessageKit, rgb: np.ndarray, alpha: float = 1.0) -> Any:
    c = np.asarray(rgb, dtype=np.float64).reshape(-1, 3) / 255.0
    with _no_gc():
        return kit.colors(c, float(alpha))


def _triangles(kit: MessageKit, faces: np.ndarray) -> Any:
    f = np.ascontiguousarray(np.asarray(faces, dtype=np.int64).reshape(-1, 3), dtype=np.uint32)
    with _no_gc():
        return kit.triangles(f)


# --------------------------------------------------------------------------------------------
# ReconstructedObjectArray


def mesh_msg(kit: MessageKit, obj: ObjectReconstruction) -> Any:
    """``shape_msgs/Mesh`` of the object's surface in the object frame, metres."""
    msg = kit.MeshMsg()
    msg.vertices = _points(kit, object_vertices_m(obj))
    msg.triangles = _triangles(kit, obj.mesh.faces)
    return msg


def reconstructed_object_msg(
    kit: MessageKit, obj: ObjectReconstruction, mesh_uri: str = "", splat_uri: str = ""
) -> Any:
    """One ``ReconstructedObject``: id, index, label, score, pose, scale, size, mesh, colours."""
    msg = kit.ReconstructedObject()
    msg.id = int(obj.object_id)
    msg.object_index = int(obj.object_index)
    msg.label = str(obj.label)
    msg.score = float(obj.score)
    msg.pose = object_pose(kit, obj)
    msg.scale = _vec3(kit, conventions.scale_vector(obj.scale))
    msg.size = _vec3(kit, object_size(obj))
    msg.mesh = mesh_msg(kit, obj)
    msg.vertex_colors = _colors(kit, obj.mesh.colors)
    msg.mesh_uri = mesh_uri
    msg.splat_uri = splat_uri
    return msg


def _file_msg(kit: MessageKit, entry: Optional[Mapping[str, Any]]) -> Any:
    msg = kit.ArtifactFile()
    if entry:
        msg.url = str(entry.get("url", ""))
        msg.content_type = str(entry.get("content_type", ""))
        msg.file_name = str(entry.get("file_name", ""))
        msg.file_size = int(entry.get("file_size", 0))
    return msg


def artifacts_msg(kit: MessageKit, result: Optional[Mapping[str, Any]]) -> Any:
    """``Artifacts`` of a hosted result dict (as written by :func:`~.export.write_run`).

    ``None`` (nothing written) gives an empty message. ``result_json`` is the whole dict as JSON.
    """
    msg = kit.Artifacts()
    if not result:
        return msg
    msg.gaussian_splat = _file_msg(kit, result.get("gaussian_splat"))
    msg.model_glb = _file_msg(kit, result.get("model_glb"))
    msg.individual_splats = [_file_msg(kit, e) for e in result.get("individual_splats", [])]
    msg.individual_glbs = [_file_msg(kit, e) for e in result.get("individual_glbs", [])]
    msg.artifacts_zip = _file_msg(kit, result.get("artifacts_zip"))
    msg.result_json = json.dumps(result, sort_keys=True, default=_json_default)
    return msg


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def timings_msgs(kit: MessageKit, timings: Mapping[str, float],
                 total: Optional[float] = None) -> List[Any]:
    """``StageTiming`` per stage, in pipeline order, then ``total`` when given."""
    order = ["load", "segment", "reconstruct", "export"]
    keys = [k for k in order if k in timings] + sorted(k for k in timings if k not in order)
    out = [kit.StageTiming(stage=k, seconds=float(timings[k])) for k in keys if k != "total"]
    if total is None and "total" in timings:
        total = timings["total"]
    if total is not None:
        out.append(kit.StageTiming(stage="total", seconds=float(total)))
    return out


def objects_array_msg(
    kit: MessageKit,
    header: Any,
    objects: Sequence[ObjectReconstruction],
    timings: Optional[Mapping[str, float]] = None,
    segmentation_backend: str = "",
    reconstruction_backend: str = "",
    result: Optional[Mapping[str, Any]] = None,
    camera_pose: Optional[np.ndarray] = None,
    total_s: Optional[float] = None,
) -> Any:
    """``ReconstructedObjectArray`` of one frame's objects.

    Args:
        header: the source image's header (stamp and optical frame).
        objects: reconstructions whose ``object_id`` already is the stable (tracked) id.
        timings: seconds per stage.
        segmentation_backend, reconstruction_backend: backend names.
        result: hosted result dict when artifacts were written; per-object URIs and
            ``artifacts`` come from it.
        camera_pose: 4×4 camera-to-world (identity when ``None``).
        total_s: wall time of the whole frame, reported as stage ``total``.
    """
    msg = kit.ReconstructedObjectArray()
    msg.header = header
    glbs = list((result or {}).get("individual_glbs", []))
    splats = list((result or {}).get("individual_splats", []))
    for i, obj in enumerate(objects):
        msg.objects.append(
            reconstructed_object_msg(
                kit, obj,
                mesh_uri=str(glbs[i]["url"]) if i < len(glbs) else "",
                splat_uri=str(splats[i]["url"]) if i < len(splats) else "",
            )
        )
    pose = np.eye(4) if camera_pose is None else np.asarray(camera_pose, dtype=np.float64)
    msg.camera_pose = pose_msg(kit, conventions.matrix_to_quat(pose[:3, :3]), pose[:3, 3])
    msg.timings = timings_msgs(kit, timings or {}, total_s)
    msg.segmentation_backend = segmentation_backend
    msg.reconstruction_backend = reconstruction_backend
    msg.artifacts = artifacts_msg(kit, result)
    return msg


# --------------------------------------------------------------------------------------------
# Detections and TF


def detections_msg(kit: MessageKit, header: Any, objects: Sequence[ObjectReconstruction]) -> Any:
    """``vision_msgs/Detection3DArray``: id = str(object id), bbox = oriented box, pose."""
    msg = kit.Detection3DArray()
    msg.header = header
    for obj in objects:
        det = kit.Detection3D()
        det.header = header
        det.id = str(int(obj.object_id))
        pose = object_pose(kit, obj)
        det.bbox.center = pose
        det.bbox.size = _vec3(kit, object_size(obj))
        hyp = kit.ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = str(obj.label)
        hyp.hypothesis.score = float(obj.score)
        hyp.pose.pose = pose
        det.results.append(hyp)
        msg.detections.append(det)
    return msg


def tf_msg(
    kit: MessageKit, header: Any, objects: Sequence[ObjectReconstruction],
    prefix: str = "sam3d_object_",
) -> Any:
    """``tf2_msgs/TFMessage``: one transform per object, child frame ``<prefix><id>``."""
    msg = kit.TFMessage()
    for obj in objects:
        tr = kit.TransformStamped()
        tr.header = header
        tr.child_frame_id = f"{prefix}{int(obj.object_id)}"
        pose = object_pose(kit, obj)
        tr.transform.translation.x = pose.position.x
        tr.transform.translation.y = pose.position.y
        tr.transform.translation.z = pose.position.z
        tr.transform.rotation = pose.orientation
        msg.transforms.append(tr)
    return msg


# --------------------------------------------------------------------------------------------
# Markers


class MarkerPreview(NamedTuple):
    """A mesh marker's geometry in the object frame.

    ``vertices`` V×3 metres, ``faces`` F×3, ``colors`` V×3 ``uint8`` RGB (each an input vertex's
    colour).
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray


def marker_preview(obj: ObjectReconstruction, max_triangles: int) -> MarkerPreview:
    """The object's mesh reduced to at most ``max_triangles`` (0 = all) for a marker.

    Quadric edge collapse (:func:`sam3d_ros.core.mesh_decimation.decimate`): a closed mesh stays
    closed (an evenly spaced subset of the triangles left ~2,600 boundary edges per object), an
    open one keeps its boundary; every vertex keeps the colour of the input vertex it stands
    for. Where the collapse stops above the budget (no edge can go without tearing the surface:
    budgets of a few triangles), an evenly spaced subset of its triangles is kept.
    """
    v = object_vertices_m(obj)
    f = np.asarray(obj.mesh.faces, dtype=np.int64).reshape(-1, 3)
    colors = np.asarray(obj.mesh.colors, dtype=np.uint8).reshape(-1, 3)
    max_triangles = int(max_triangles)
    if max_triangles <= 0 or len(f) <= max_triangles:
        return MarkerPreview(v, f, colors)
    out = decimate(v, f, max_triangles)
    faces = out.faces
    if len(faces) > max_triangles:
        faces = faces[np.linspace(0, len(faces) - 1, max_triangles).round().astype(np.int64)]
    return MarkerPreview(out.vertices, faces, colors[out.source])


def _mesh_digest(obj: ObjectReconstruction) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for array in (obj.mesh.vertices, obj.mesh.faces, obj.mesh.colors,
                  conventions.scale_vector(obj.scale)):
        a = np.ascontiguousarray(array)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.digest()


class MarkerPreviewCache:
    """Marker previews per object id, decimated again only when the object's mesh changed.

    Decimation costs 0.1–0.5 s per object in Python (``benchmarks/bench_markers.py``), markers
    go out every frame while someone subscribes, and a still object is reconstructed anew each
    frame with a few millimetres of noise. A cached preview is reused when the object's mesh is
    the same (hash of vertices, faces, colours and scale), or the same shape as the mesh it was
    built from within :data:`~sam3d_ros.core.mesh_decimation.SHAPE_TOLERANCE_M` /
    ``SHAPE_TOLERANCE_REL`` (the rule by which MoveIt's collision mesh is kept); the marker's
    pose is always the current one. Thread-safe.
    """

    def __init__(self) -> None:
        self._entries: Dict[int, Tuple[bytes, int, np.ndarray, MarkerPreview]] = {}
        self._lock = threading.Lock()
        self.built = 0
        self.reused = 0

    def preview(self, obj: ObjectReconstruction, max_triangles: int) -> MarkerPreview:
        """The cached preview of ``obj`` or a new one (see the class docstring)."""
        key, budget = int(obj.object_id), int(max_triangles)
        if budget <= 0 or len(obj.mesh.faces) <= budget:
            return marker_preview(obj, budget)  # nothing to decimate: the current mesh
        digest = _mesh_digest(obj)
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[1] == budget:
            if entry[0] == digest or same_shape(entry[2], object_vertices_m(obj),
                                                float(np.max(object_size(obj)))):
                with self._lock:
                    self.reused += 1
                return entry[3]
        preview = marker_preview(obj, budget)
        with self._lock:
            self._entries[key] = (digest, budget, object_vertices_m(obj), preview)
            self.built += 1
        return preview

    def retain(self, object_ids: Iterable[int]) -> None:
        """Forget the previews of every other object."""
        keep = {int(i) for i in object_ids}
        with self._lock:
            for key in [k for k in self._entries if k not in keep]:
                del self._entries[key]

    def clear(self) -> None:
        """Forget every preview."""
        with self._lock:
            self._entries.clear()


def mesh_marker(
    kit: MessageKit,
    header: Any,
    obj: ObjectReconstruction,
    max_triangles: int = 0,
    lifetime_s: float = 0.0,
    cache: Optional[MarkerPreviewCache] = None,
) -> Any:
    """TRIANGLE_LIST marker of the object's mesh with per-vertex colours, in the object frame.

    ``max_triangles`` > 0 reduces the mesh to at most that many triangles (a preview for RViz,
    :func:`marker_preview`; the full mesh is in ``~/objects``), through ``cache`` when given.
    """
    marker = _marker(kit, header, MESH_NS, obj.object_id, kit.Marker.ADD,
                     kit.Marker.TRIANGLE_LIST, lifetime_s)
    marker.pose = object_pose(kit, obj)
    marker.scale = kit.Vector3(x=1.0, y=1.0, z=1.0)
    marker.color = kit.ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
    preview = (cache.preview(obj, max_triangles) if cache is not None
               else marker_preview(obj, max_triangles))
    corners = preview.faces.reshape(-1)
    marker.points = _points(kit, preview.vertices[corners])
    marker.colors = _colors(kit, preview.colors[corners])
    return marker


def label_marker(
    kit: MessageKit, header: Any, obj: ObjectReconstruction, lifetime_s: float = 0.0,
    up: Optional[Sequence[float]] = None,
) -> Any:
    """TEXT_VIEW_FACING marker ``"<id> <label>"`` just above the object's box.

    ``up`` (header frame) is the support plane's normal when it is known (it points from the
    table toward the camera); without it, camera −y, which is "up" only for a level camera.
    The label sits :data:`LABEL_GAP_M` above the top of the object's oriented box along ``up``.
    """
    marker = _marker(kit, header, LABEL_NS, obj.object_id, kit.Marker.ADD,
                     kit.Marker.TEXT_VIEW_FACING, lifetime_s)
    direction = OPTICAL_UP if up is None else conventions._unit(
        np.asarray(up, dtype=np.float64).reshape(3), "up")
    axes = conventions.quat_to_matrix(obj.rotation)
    # Half-height of the oriented box along `direction`: its extents projected on that axis.
    half = 0.5 * float(np.abs(axes.T @ direction) @ object_size(obj))
    t = np.asarray(obj.translation, dtype=np.float64).reshape(3)
    marker.pose = pose_msg(kit, [0.0, 0.0, 0.0, 1.0], t + (half + LABEL_GAP_M) * direction)
    marker.scale = kit.Vector3(x=0.0, y=0.0, z=0.03)
    r, g, b = object_color(obj.object_id)
    marker.color = kit.ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=1.0)
    marker.text = object_text(obj)
    return marker


def _marker(
    kit: MessageKit, header: Any, ns: str, marker_id: int, action: int, marker_type: int = 0,
    lifetime_s: float = 0.0,
) -> Any:
    """A marker addressed by (ns, id) = (namespace, object id)."""
    return kit.Marker(header=header, ns=ns, id=int(marker_id), type=marker_type, action=action,
                      lifetime=_duration(kit, lifetime_s))


def object_text(obj: ObjectReconstruction) -> str:
    """Label text of an object: ``"<id>"`` or ``"<id> <label>"``."""
    return f"{int(obj.object_id)} {obj.label}".strip()


def _duration(kit: MessageKit, seconds: float) -> Any:
    seconds = max(0.0, float(seconds))
    sec = int(math.floor(seconds))
    return kit.Duration(sec=sec, nanosec=int(round((seconds - sec) * 1e9)) % 1_000_000_000)


def markers_msg(
    kit: MessageKit,
    header: Any,
    objects: Sequence[ObjectReconstruction],
    previous_ids: Iterable[int] = (),
    max_triangles: int = 0,
    lifetime_s: float = 0.0,
    cache: Optional[MarkerPreviewCache] = None,
    up: Optional[Sequence[float]] = None,
) -> Any:
    """Mesh + label markers per object; DELETE markers for ``previous_ids`` not seen now.

    ``cache`` (kept by the caller across frames) holds the objects' decimated meshes; the
    previews of objects not in ``objects`` are dropped from it. ``up``: the support plane's
    normal, where the labels go (:func:`label_marker`).
    """
    msg = kit.MarkerArray()
    current = {int(o.object_id) for o in objects}
    if cache is not None:
        cache.retain(current)
    for obj in objects:
        msg.markers.append(mesh_marker(kit, header, obj, max_triangles, lifetime_s, cache))
        msg.markers.append(label_marker(kit, header, obj, lifetime_s, up))
    for gone in sorted(set(int(i) for i in previous_ids) - current):
        for ns in (MESH_NS, LABEL_NS):
            msg.markers.append(_marker(kit, header, ns, gone, kit.Marker.DELETE))
    return msg


def delete_all_markers(kit: MessageKit, header: Any) -> Any:
    """A MarkerArray that clears every marker of this publisher (DELETEALL)."""
    marker = kit.Marker()
    marker.header = header
    marker.action = kit.Marker.DELETEALL
    return kit.MarkerArray(markers=[marker])


# --------------------------------------------------------------------------------------------
# Point cloud


def object_points(
    points: Optional[np.ndarray],
    rgb: np.ndarray,
    objects: Sequence[ObjectReconstruction],
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The object's own depth points of every mask: (N×3 float32, N×3 uint8, N int32 index).

    "Own" as :func:`~sam3d_ros.core.depth_hygiene.object_depth` decides: a mask's edge pixels that
    carry background depth, flying pixels and smears are not published as the object. A
    backend that ran the hygiene says so in ``depth_pixels`` (read as is: ~13 ms an object at
    1280×720 not spent again). The index is the object's position in ``objects`` (its
    ``object_index`` in the array). A pixel in two masks is given to the first object.
    """
    if points is None or not objects:
        return (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8),
                np.zeros((0,), np.int32))
    image = points.shape[:2]
    taken = np.zeros(image, dtype=bool)
    xyz, col, idx = [], [], []
    for i, obj in enumerate(objects):
        own = obj.depth_pixels
        if own is None or tuple(own.image_shape) != tuple(image):
            own = MaskCrop.of(object_depth(points, obj.region, fill=False).reliable)
        r0, r1, c0, c1 = own.bbox
        window = (slice(r0, r1), slice(c0, c1))
        sel = own.pixels & np.isfinite(points[window]).all(axis=2) & ~taken[window]
        taken[window] |= sel
        xyz.append(points[window][sel].astype(np.float32))
        col.append(np.asarray(rgb)[window][sel].astype(np.uint8))
        idx.append(np.full(int(sel.sum()), i, dtype=np.int32))
    return np.concatenate(xyz), np.concatenate(col), np.concatenate(idx)


def points_msg(
    kit: MessageKit,
    header: Any,
    points: Optional[np.ndarray],
    rgb: np.ndarray,
    objects: Sequence[ObjectReconstruction],
):
    """``sensor_msgs/PointCloud2`` (x y z rgb object_index) of the segmented object pixels."""
    xyz, col, idx = object_points(points, rgb, objects)
    return pointcloud2_from_arrays(kit, header, xyz, col, idx)


# --------------------------------------------------------------------------------------------
# Debug image (numpy drawing; labels rendered with Pillow's built-in bitmap font)


def _blend(img: np.ndarray, mask: np.ndarray, color: Sequence[int], alpha: float) -> None:
    c = np.asarray(color, dtype=np.float32)
    img[mask] = (img[mask].astype(np.float32) * (1.0 - alpha) + c * alpha).astype(np.uint8)


def draw_rectangle(
    img: np.ndarray, box: Tuple[int, int, int, int], color: Sequence[int], thickness: int = 2
) -> None:
    """Draw the outline of an inclusive pixel box ``(x0, y0, x1, y1)`` in place."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, x1 = max(0, min(x0, w - 1)), max(0, min(x1, w - 1))
    y0, y1 = max(0, min(y0, h - 1)), max(0, min(y1, h - 1))
    t = max(1, int(thickness))
    img[y0:min(y0 + t, y1 + 1), x0:x1 + 1] = color
    img[max(y1 - t + 1, y0):y1 + 1, x0:x1 + 1] = color
    img[y0:y1 + 1, x0:min(x0 + t, x1 + 1)] = color
    img[y0:y1 + 1, max(x1 - t + 1, x0):x1 + 1] = color


def draw_line(
    img: np.ndarray,
    p0: Tuple[float, float],
    p1: Tuple[float, float],
    color: Sequence[int],
    thickness: int = 2,
) -> None:
    """Draw a segment between pixel positions ``(u, v)`` in place (clipped to the image)."""
    h, w = img.shape[:2]
    (u0, v0), (u1, v1) = p0, p1
    if not all(math.isfinite(x) for x in (u0, v0, u1, v1)):
        return
    n = int(min(4 * (h + w), max(abs(u1 - u0), abs(v1 - v0)) + 1)) + 1
    s = np.linspace(0.0, 1.0, n)
    us = np.rint(u0 + (u1 - u0) * s).astype(np.int64)
    vs = np.rint(v0 + (v1 - v0) * s).astype(np.int64)
    r = max(0, int(thickness) // 2)
    for du in range(-r, r + 1):
        for dv in range(-r, r + 1):
            uu, vv = us + du, vs + dv
            ok = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
            img[vv[ok], uu[ok]] = color


def draw_text(img: np.ndarray, xy: Tuple[int, int], text: str, color: Sequence[int]) -> None:
    """Draw ``text`` with its top-left corner at pixel ``xy`` on a dark backing box, in place."""
    from PIL import ImageFont

    if not text:
        return
    font = ImageFont.load_default()
    glyphs = font.getmask(text)
    gw, gh = glyphs.size
    if gw == 0 or gh == 0:
        return
    alpha = np.asarray(glyphs, dtype=np.uint8).reshape(gh, gw) > 0
    h, w = img.shape[:2]
    x, y = int(xy[0]), int(xy[1])
    x = max(0, min(x, w - gw - 2))
    y = max(0, min(y, h - gh - 2))
    y1, x1 = min(h, y + gh + 2), min(w, x + gw + 2)
    img[y:y1, x:x1] = (img[y:y1, x:x1].astype(np.float32) * 0.35).astype(np.uint8)
    sub = alpha[: max(0, y1 - y - 1), : max(0, x1 - x - 1)]
    region = img[y + 1:y + 1 + sub.shape[0], x + 1:x + 1 + sub.shape[1]]
    region[sub] = color


def debug_image(
    rgb: np.ndarray,
    objects: Sequence[ObjectReconstruction],
    intrinsics: Optional[CameraIntrinsics],
    mask_alpha: float = 0.45,
) -> np.ndarray:
    """The image with each object's mask, box, projected axes and ``"<id> <label>"``.

    Axes: x red, y green, z blue, from the object's centre, half its largest extent long.
    Returns a new H×W×3 uint8 RGB image.
    """
    img = np.array(rgb, dtype=np.uint8, copy=True)
    for obj in objects:
        region = obj.region
        if tuple(region.image_shape) != img.shape[:2]:
            continue
        r0, r1, c0, c1 = region.bbox
        _blend(img[r0:r1, c0:c1], region.pixels, object_color(obj.object_id), mask_alpha)
    for obj in objects:
        region = obj.region
        if tuple(region.image_shape) != img.shape[:2] or not region.any():
            continue
        color = object_color(obj.object_id)
        r0, r1, c0, c1 = region.bbox
        box = (c0, r0, c1 - 1, r1 - 1)
        draw_rectangle(img, box, color)
        if intrinsics is not None:
            t = np.asarray(obj.translation, dtype=np.float64).reshape(3)
            r = conventions.quat_to_matrix(np.asarray(obj.rotation, dtype=np.float64).reshape(4))
            length = 0.5 * float(np.max(object_size(obj)))
            ends = np.vstack([t, t + length * r.T])  # rows: centre, centre + length * axis_k
            u, v = conventions.project(ends, intrinsics)
            for k, axis_color in enumerate(((255, 0, 0), (0, 255, 0), (0, 0, 255))):
                draw_line(img, (u[0], v[0]), (u[k + 1], v[k + 1]), axis_color)
        draw_text(img, (box[0], box[1] - 13), object_text(obj), color)
    return img


# --------------------------------------------------------------------------------------------
# Diagnostics


class RateMeter:
    """Events per second over a sliding window (``window_s``) of event times."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = float(window_s)
        self._times: Deque[float] = collections.deque()
        self.count = 0

    def tick(self, now: Optional[float] = None) -> None:
        """Record one event at ``now`` (monotonic seconds)."""
        now = time.monotonic() if now is None else now
        self._times.append(now)
        self.count += 1
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def rate(self, now: Optional[float] = None) -> float:
        """Events per second in the window ending at ``now``."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], self._times[-1] - self._times[0])
        return (len(self._times) - 1) / span if span > 0 else 0.0


class LatencyStats:
    """Last, p50 and p95 of the most recent ``size`` samples of named latencies (seconds)."""

    def __init__(self, size: int = 200) -> None:
        self._samples: Dict[str, Deque[float]] = {}
        self._size = int(size)

    def add(self, name: str, seconds: float) -> None:
        """Record one sample."""
        self._samples.setdefault(name, collections.deque(maxlen=self._size)).append(
            float(seconds))

    def summary(self) -> Dict[str, Tuple[float, float, float]]:
        """``{name: (last, p50, p95)}`` in seconds."""
        out = {}
        for name, values in self._samples.items():
            if values:
                arr = np.asarray(values)
                out[name] = (float(arr[-1]), float(np.percentile(arr, 50)),
                             float(np.percentile(arr, 95)))
        return out


LEVELS = {"OK": 0, "WARN": 1, "ERROR": 2, "STALE": 3}
"""``diagnostic_msgs/DiagnosticStatus`` levels."""


def _level_byte(level: Any) -> bytes:
    if isinstance(level, bytes):
        return level
    if isinstance(level, str):
        level = LEVELS[level.upper()]
    return bytes([int.from_bytes(level, "little") if isinstance(level, bytes) else int(level)])


def diagnostics_msg(
    kit: MessageKit,
    stamp: Any,
    name: str,
    hardware_id: str,
    level: Any,
    message: str,
    values: Mapping[str, Any],
) -> Any:
    """A ``DiagnosticArray`` with one status; values are formatted as strings in given order.

    ``level``: a name of :data:`LEVELS`, an int or rclpy's ``bytes`` (the node's diagnostics).
    """
    status = kit.DiagnosticStatus()
    status.level = _level_byte(level)
    status.name = name
    status.hardware_id = hardware_id
    status.message = message
    status.values = [kit.KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()]
    array = kit.DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
