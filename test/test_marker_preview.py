"""Mesh marker previews: quadric decimation to the triangle budget, closed meshes stay closed,
colours from the original vertices, the per-object cache (no ROS graph)."""

import numpy as np
import pytest
import trimesh
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from sam3d_ros.core import mesh_decimation as md
from sam3d_ros.core import output_messages as out
from sam3d_ros.core.types import Gaussians, Mesh, ObjectReconstruction
from sam3d_ros.ros.message_kit import RCLPY

HEADER = Header(frame_id="cam_optical")


def index_colours(n):
    """A distinct RGB colour per vertex (the vertex index in 24 bits): colour → vertex."""
    i = np.arange(n)
    return np.stack([(i >> 16) & 255, (i >> 8) & 255, i & 255], axis=1).astype(np.uint8)


def colour_index(rgb):
    rgb = np.asarray(rgb, dtype=np.int64)
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


def make_object(vertices, faces, object_id=4, scale=0.1, t=(0.0, 0.0, 0.7), colors=None):
    v = np.asarray(vertices, np.float32)
    g = Gaussians(np.zeros((1, 3), np.float32), np.full((1, 3), 0.01, np.float32),
                  np.array([[0, 0, 0, 1]], np.float32), np.full((1, 3), 0.5, np.float32),
                  np.ones(1, np.float32))
    return ObjectReconstruction(
        object_id=object_id, object_index=0,
        mesh=Mesh(v, np.asarray(faces, np.int32),
                  index_colours(len(v)) if colors is None else colors),
        gaussians=g, rotation=np.array([0.0, 0.0, 0.0, 1.0]), translation=np.array(t),
        scale=np.full(3, scale), region=np.zeros((4, 4), bool), label="thing", score=1.0)


def mean_edge(v, f):
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return float(np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1).mean())


def marker_mesh(marker):
    """Vertices, faces and per-vertex colours of a TRIANGLE_LIST marker (corners merged)."""
    pts = np.array([[p.x, p.y, p.z] for p in marker.points])
    rgb = np.rint(np.array([[c.r, c.g, c.b] for c in marker.colors]) * 255).astype(np.uint8)
    uniq, inverse = np.unique(pts, axis=0, return_inverse=True)
    colours = np.zeros((len(uniq), 3), np.uint8)
    colours[inverse.ravel()] = rgb
    return uniq, inverse.reshape(-1, 3), colours, rgb


def sphere_object(subdivisions=5, **kw):
    mesh = trimesh.creation.icosphere(subdivisions, radius=0.5)
    return make_object(mesh.vertices, mesh.faces, **kw)


def test_preview_of_a_closed_mesh_is_closed_within_budget_with_original_colours():
    obj = sphere_object()  # 20480 triangles
    budget = 1000
    marker = out.mesh_marker(RCLPY, HEADER, obj, max_triangles=budget)
    v, f, colours, corner_rgb = marker_mesh(marker)
    assert len(f) <= budget and len(f) > 0.9 * budget
    assert md.boundary_edge_count(f) == 0 and md.is_closed_manifold(f)
    assert trimesh.Trimesh(v, f, process=False).is_watertight
    # Every corner's colour is an original vertex's, and that vertex lies next to the corner
    # (a collapse places the survivor at an end or the midpoint of an edge): the colours
    # travel with their vertices. Shuffled colours would be ~5 cm off on this 10 cm sphere.
    source = colour_index(colours)
    assert source.max() < len(obj.mesh.vertices)
    drift = np.linalg.norm(v - out.object_vertices_m(obj)[source], axis=1)
    edge = mean_edge(v, f)  # ~8 mm
    assert np.median(drift) < 0.5 * edge and drift.max() < 1.0 * edge, (drift.max(), edge)
    assert len(np.unique(colour_index(corner_rgb))) == len(v)


def test_evenly_spaced_triangles_left_fragments():
    """The old preview (a spaced subset) on the same mesh: the check above can fail."""
    obj = sphere_object()
    faces = np.asarray(obj.mesh.faces)
    subset = faces[np.linspace(0, len(faces) - 1, 1000).round().astype(int)]
    assert md.boundary_edge_count(subset) > 1000


def test_open_mesh_keeps_its_boundary():
    mesh = trimesh.creation.icosphere(4, radius=0.5)
    keep = mesh.triangles_center[:, 2] < 0.2  # a bowl: open at the top
    bowl = trimesh.Trimesh(mesh.vertices, mesh.faces[keep])
    bowl.remove_unreferenced_vertices()
    obj = make_object(bowl.vertices, bowl.faces)
    full = md.boundary_edge_count(bowl.faces)
    assert full > 0
    v, f, _, _ = marker_mesh(out.mesh_marker(RCLPY, HEADER, obj, max_triangles=800))
    assert len(f) <= 800
    assert md.boundary_edge_count(f) <= full
    # The rim stays where it was: its vertices are original rim vertices, unmoved.
    rim_z = bowl.vertices[:, 2].max()
    assert np.isclose(v[:, 2].max() / 0.1, rim_z, atol=1e-6)


def test_budget_zero_or_above_the_mesh_keeps_everything_and_tiny_budgets_are_kept():
    obj = sphere_object(2)  # 320 triangles
    for budget in (0, 320, 5000):
        m = out.mesh_marker(RCLPY, HEADER, obj, max_triangles=budget)
        assert len(m.points) == 3 * 320
    for budget in (4, 7, 30):  # the collapse may stop above a tiny budget; the budget holds
        m = out.mesh_marker(RCLPY, HEADER, obj, max_triangles=budget)
        assert 0 < len(m.points) <= 3 * budget


def test_real_reconstruction_preview_is_closed():
    """An embedded reconstruction of a synthetic scene object (the ~2,600 boundary edges case)."""
    from node_harness import scene

    from sam3d_ros.core.engine import Engine

    sc = scene(seed=1)
    objects = Engine().process(sc.frame, sc.box_query(4), 42).objects
    for obj in objects:
        assert md.is_closed_manifold(obj.mesh.faces)
        n_faces = len(obj.mesh.faces)
        v, f, colours, _ = marker_mesh(out.mesh_marker(RCLPY, HEADER, obj, max_triangles=1000))
        assert len(f) <= min(1000, n_faces) and md.boundary_edge_count(f) == 0, obj.object_id
        # Colours are the object's own vertex colours.
        palette = {tuple(c) for c in np.asarray(obj.mesh.colors).tolist()}
        assert {tuple(c) for c in colours.tolist()} <= palette


# --------------------------------------------------------------------------------------------
# Cache


def test_cache_reuses_the_same_mesh_and_the_same_shape_and_rebuilds_a_new_shape():
    cache = out.MarkerPreviewCache()
    obj = sphere_object(4)
    first = out.mesh_marker(RCLPY, HEADER, obj, 500, cache=cache)
    assert (cache.built, cache.reused) == (1, 0)
    moved = sphere_object(4, t=(0.3, 0.1, 0.9))  # the same mesh at another pose
    again = out.mesh_marker(RCLPY, HEADER, moved, 500, cache=cache)
    assert (cache.built, cache.reused) == (1, 1)
    assert again.points == first.points and again.pose.position.x == pytest.approx(0.3)
    noisy = sphere_object(4)  # a reconstruction with 1 mm of noise: the same shape
    noisy.mesh.vertices = noisy.mesh.vertices + np.random.default_rng(0).normal(
        0, 0.01, noisy.mesh.vertices.shape).astype(np.float32)
    out.mesh_marker(RCLPY, HEADER, noisy, 500, cache=cache)
    assert (cache.built, cache.reused) == (1, 2)
    bigger = sphere_object(4, scale=0.15)  # 5 cm larger: rebuilt
    big = out.mesh_marker(RCLPY, HEADER, bigger, 500, cache=cache)
    assert cache.built == 2
    assert np.ptp([p.x for p in big.points]) > 1.4 * np.ptp([p.x for p in first.points])
    out.mesh_marker(RCLPY, HEADER, bigger, 300, cache=cache)  # another budget: rebuilt
    assert cache.built == 3


def test_markers_msg_drops_previews_of_vanished_objects():
    cache = out.MarkerPreviewCache()
    a, b = sphere_object(3, object_id=1), sphere_object(3, object_id=2)
    out.markers_msg(RCLPY, HEADER, [a, b], (), 200, cache=cache)
    assert cache.built == 2
    arr = out.markers_msg(RCLPY, HEADER, [a], [1, 2], 200, cache=cache)
    assert cache.reused == 1
    assert [(m.ns, m.id) for m in arr.markers if m.action == Marker.DELETE] == [
        (out.MESH_NS, 2), (out.LABEL_NS, 2)]
    out.markers_msg(RCLPY, HEADER, [b], [1], 200, cache=cache)  # 2 was forgotten: built again
    assert cache.built == 3
