"""The benchmarks' measures (:mod:`sam3d_bench.evaluation`): the silhouette rasteriser that the
real-frame IoU figures and floors rest on."""

from __future__ import annotations

import numpy as np
import trimesh

from sam3d_bench.evaluation import silhouette
from sam3d_ros.core.types import CameraIntrinsics

W, H = 64, 48
K = CameraIntrinsics(fx=100.0, fy=100.0, cx=31.5, cy=23.5, width=W, height=H)


def _camera_points(cols_rows: np.ndarray, z: float = 1.0) -> np.ndarray:
    """Camera-frame points at depth ``z`` that project onto the given (column, row) pixels."""
    cr = np.asarray(cols_rows, dtype=np.float64)
    return np.c_[(cr[:, 0] - K.cx) / K.fx * z, (cr[:, 1] - K.cy) / K.fy * z, np.full(len(cr), z)]


def _centres_inside(corners: np.ndarray) -> np.ndarray:
    """Brute force: every pixel centre tested against the triangle's three edges."""
    rows, cols = np.mgrid[0:H, 0:W]
    sides = []
    for i in range(3):
        a, b = corners[i], corners[(i + 1) % 3]
        sides.append((b[0] - a[0]) * (rows - a[1]) - (b[1] - a[1]) * (cols - a[0]))
    d = np.stack(sides)
    return (d >= 0).all(axis=0) | (d <= 0).all(axis=0)


def test_a_square_over_ten_by_ten_pixel_centres_covers_exactly_those_pixels():
    # Corners half a pixel outside the centres 10..19: the outline of those pixels' areas
    # (cv2.fillConvexPoly, used before, filled 11 × 11 here).
    for lo, hi in ((9.5, 19.5), (9.51, 19.49), (9.1, 19.9)):
        corners = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]])
        sil = silhouette(_camera_points(corners), np.array([[0, 1, 2], [0, 2, 3]]), K, (H, W))
        expected = np.zeros((H, W), bool)
        expected[10:20, 10:20] = True
        assert np.array_equal(sil, expected), (lo, hi, np.argwhere(sil ^ expected)[:5])


def test_random_triangles_cover_the_pixel_centres_inside_them():
    rng = np.random.default_rng(7)
    for _ in range(100):
        corners = rng.uniform(-5.0, [W + 5.0, H + 5.0], size=(3, 2))  # some leave the image
        sil = silhouette(_camera_points(corners), np.array([[0, 1, 2]]), K, (H, W))
        assert np.array_equal(sil, _centres_inside(corners))


def test_a_mesh_is_the_union_of_its_triangles_and_skips_those_behind_the_camera():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    verts = sphere.vertices + [0.02, -0.01, 1.0]
    sil = silhouette(verts, sphere.faces, K, (H, W))
    union = np.zeros((H, W), bool)
    for face in sphere.faces:
        v = verts[face]
        union |= _centres_inside(np.c_[v[:, 0] / v[:, 2] * K.fx + K.cx,
                                       v[:, 1] / v[:, 2] * K.fy + K.cy])
    assert union.any() and np.array_equal(sil, union)
    behind = verts * [1.0, 1.0, -1.0]
    assert not silhouette(behind, sphere.faces, K, (H, W)).any()


def test_large_triangles_are_covered_in_bands_as_brute_force_says():
    """At 1280×720: a triangle larger than the image (tested in bands of rows) and mid-sized
    ones of up to 120 px (several groups), against the brute-force rule."""
    w, h = 1280, 720
    k = CameraIntrinsics(fx=900.0, fy=900.0, cx=639.5, cy=359.5, width=w, height=h)
    rng = np.random.default_rng(3)
    big = np.array([[-300.0, -200.0], [1700.0, 100.0], [200.0, 1100.0]])
    mids = [rng.uniform([0, 0], [w, h]) + rng.uniform(-60, 60, size=(3, 2)) for _ in range(40)]
    corners = np.concatenate([big] + mids)
    pts = np.c_[(corners[:, 0] - k.cx) / k.fx, (corners[:, 1] - k.cy) / k.fy,
                np.ones(len(corners))]
    faces = np.arange(len(corners)).reshape(-1, 3)
    sil = silhouette(pts, faces, k, (h, w))
    rows, cols = np.mgrid[0:h, 0:w]
    expected = np.zeros((h, w), bool)
    for tri in corners.reshape(-1, 3, 2):
        d = np.stack([(tri[(i + 1) % 3, 0] - tri[i, 0]) * (rows - tri[i, 1])
                      - (tri[(i + 1) % 3, 1] - tri[i, 1]) * (cols - tri[i, 0]) for i in range(3)])
        expected |= (d >= 0).all(axis=0) | (d <= 0).all(axis=0)
    assert np.array_equal(sil, expected), np.count_nonzero(sil ^ expected)
