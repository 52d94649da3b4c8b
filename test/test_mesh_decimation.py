"""sam3d_ros.core.mesh_decimation beyond closed meshes (test_moveit_scene covers those): the input
vertex each output vertex stands for, open meshes keep their boundary."""

import numpy as np
import trimesh

from sam3d_ros.core import mesh_decimation as md


def mean_edge(v, f):
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return float(np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1).mean())


def test_decimate_sources_follow_positions():
    mesh = trimesh.creation.icosphere(4)
    res = md.decimate(mesh.vertices, mesh.faces, 300)
    assert len(res.faces) <= 300 and md.is_closed_manifold(res.faces)
    assert len(res.source) == len(res.vertices) and len(np.unique(res.source)) == len(res.source)
    # Each output vertex sits near its source vertex (an end or a midpoint of collapsed edges).
    d = np.linalg.norm(res.vertices - mesh.vertices[res.source], axis=1)
    edge = mean_edge(res.vertices, res.faces)
    assert np.median(d) < 0.5 * edge and d.max() < 1.0 * edge, (np.median(d), d.max(), edge)
    v, f = md.decimate_closed(mesh.vertices, mesh.faces, 300)
    assert np.array_equal(v, res.vertices) and np.array_equal(f, res.faces)


def test_open_mesh_boundary_is_kept_in_place():
    mesh = trimesh.creation.icosphere(4)
    keep = mesh.triangles_center[:, 2] < 0.3  # a bowl, open at the top
    bowl = trimesh.Trimesh(mesh.vertices, mesh.faces[keep])
    bowl.remove_unreferenced_vertices()
    before = md.boundary_edge_count(bowl.faces)
    res = md.decimate(bowl.vertices, bowl.faces, 400)
    assert len(res.faces) <= 400
    assert md.boundary_edge_count(res.faces) == before  # boundary edges never collapse
    # Every boundary vertex is an input boundary vertex at its input position.
    edges = np.sort(np.concatenate([res.faces[:, [0, 1]], res.faces[:, [1, 2]],
                                    res.faces[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    rim = np.unique(uniq[counts == 1])
    assert np.allclose(res.vertices[rim], bowl.vertices[res.source[rim]])
    # No vertex is shared by two separate rims (a pinch): each rim vertex has two rim edges.
    assert np.all(np.bincount(uniq[counts == 1].ravel())[rim] == 2)


def test_boundary_edge_count():
    faces = trimesh.creation.icosphere(1).faces
    assert md.boundary_edge_count(faces) == 0
    assert md.boundary_edge_count(faces[1:]) == 3
    assert md.boundary_edge_count(faces[:1]) == 3
