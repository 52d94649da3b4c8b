"""Synthetic scenes, sensor noise model and shape metrics (one small 320×240 scene)."""

import numpy as np
import pytest

pytest.importorskip("pybullet")
pytest.importorskip("trimesh")

from PIL import Image, ImageDraw  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from sam3d_bench import metrics  # noqa: E402
from sam3d_bench.scenes import (  # noqa: E402
    MAX_URDF_ID,
    depth_to_points,
    make_tabletop_scene,
    project_points,
    random_urdf_path,
)
from sam3d_bench.sensor import SensorNoise, apply_depth_noise  # noqa: E402

SEED = 3


@pytest.fixture(scope="module")
def scene():
    return make_tabletop_scene(SEED, n_objects=3, width=320, height=240)


def _rasterize(obj, k):
    uv = project_points(obj.mesh_vertices, k)
    img = Image.new("L", (k.width, k.height), 0)
    draw = ImageDraw.Draw(img)
    for face in obj.mesh_faces:
        draw.polygon([tuple(uv[i]) for i in face], fill=1)
    return np.asarray(img, dtype=bool)


def test_scene_contents(scene):
    f = scene.frame
    assert f.rgb.shape == (240, 320, 3) and f.rgb.dtype == np.uint8
    assert f.points.shape == (240, 320, 3) and f.points.dtype == np.float32
    assert scene.depth_m.dtype == np.float32 and scene.depth_clean.shape == (240, 320)
    assert f.intrinsics.width == 320 and f.intrinsics.fx == pytest.approx(300.0)
    assert len(scene.objects) == 3
    for obj in scene.objects:
        assert 0 <= obj.urdf_id < MAX_URDF_ID
        assert obj.visible_mask.shape == (240, 320) and obj.visible_mask.any()
        rows, cols = np.nonzero(obj.visible_mask)
        assert obj.box == (cols.min(), rows.min(), cols.max(), rows.max())
        assert np.all(scene.instance_mask[obj.visible_mask] == obj.object_id)
    # Camera looks down at the table from 0.5-0.9 m with pitch 30-60 degrees.
    pose = f.camera_pose
    assert np.allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3), atol=1e-9)
    forward = pose[:3, 2]
    pitch = np.degrees(np.arcsin(-forward[2]))
    assert 30.0 <= pitch <= 60.0
    assert 0.3 < pose[2, 3] < 0.9
    # Table plane: the camera is above it, table pixels lie on it.
    n, d = scene.table_plane
    assert np.linalg.norm(n) == pytest.approx(1.0)
    assert d > 0.3  # camera height above the table
    table = (scene.instance_mask == 0) & np.isfinite(scene.depth_clean)
    pts = depth_to_points(scene.depth_clean, f.intrinsics)[table]
    heights = np.abs(scene.table_plane.signed_distance(pts))
    assert np.median(heights) < 1e-3


def test_reserved_ids_rejected():
    random_urdf_path(MAX_URDF_ID - 1)
    with pytest.raises(AssertionError):
        random_urdf_path(MAX_URDF_ID)
    with pytest.raises(AssertionError):
        make_tabletop_scene(0, n_objects=1, width=64, height=48, urdf_ids=[950])


def test_gt_mesh_projects_onto_mask(scene):
    k = scene.intrinsics
    ious = []
    for obj in scene.objects:
        proj = _rasterize(obj, k)
        vis = obj.visible_mask
        # Every visible pixel is covered by the projected mesh (up to rasterisation at the rim).
        assert (proj & vis).sum() / vis.sum() > 0.95
        # Projected pixels not visible must be hidden behind another object (PIL fills the
        # polygon outlines too, so skip the one-pixel rim).
        inner = proj.copy()
        inner[1:] &= proj[:-1]
        inner[:-1] &= proj[1:]
        inner[:, 1:] &= proj[:, :-1]
        inner[:, :-1] &= proj[:, 1:]
        hidden = inner & ~vis
        others = (scene.instance_mask > 0) & (scene.instance_mask != obj.object_id)
        ious.append((proj & vis).sum() / (proj | vis).sum())
        assert (hidden & ~others).sum() / inner.sum() < 0.03
    assert max(ious) > 0.85


def test_depth_agrees_with_gt_mesh(scene):
    pts_clean = depth_to_points(scene.depth_clean, scene.intrinsics)
    for obj in scene.objects:
        surface = metrics.sample_surface(obj.mesh_vertices, obj.mesh_faces, 100000, seed=1)
        tree = cKDTree(surface)
        d_clean, _ = tree.query(pts_clean[obj.visible_mask])
        assert np.median(d_clean) < 1e-3 and np.percentile(d_clean, 90) < 2e-3
        noisy = scene.frame.points[obj.visible_mask]
        noisy = noisy[np.isfinite(noisy).all(axis=1)]
        assert len(noisy) > 0.7 * obj.visible_pixels
        d_noisy, _ = tree.query(noisy)
        assert np.median(d_noisy) < 3e-3
        # GT centre is inside the mesh's bounds.
        assert np.all(obj.centre >= obj.mesh_vertices.min(0) - 1e-9)
        assert np.all(obj.centre <= obj.mesh_vertices.max(0) + 1e-9)


def test_deterministic():
    a = make_tabletop_scene(11, n_objects=2, width=160, height=120)
    b = make_tabletop_scene(11, n_objects=2, width=160, height=120)
    assert np.array_equal(a.frame.rgb, b.frame.rgb)
    assert np.array_equal(a.depth_m, b.depth_m, equal_nan=True)
    assert [o.urdf_id for o in a.objects] == [o.urdf_id for o in b.objects]


@pytest.mark.parametrize("z", [0.6, 1.5])
def test_noise_statistics(z):
    model = SensorNoise()
    clean = np.full((200, 200), z, dtype=np.float32)
    noisy = apply_depth_noise(clean, model, seed=0).astype(np.float64)
    valid = np.isfinite(noisy)
    # Flat, edge-free image: only the random dropout rate applies.
    assert 1 - valid.mean() == pytest.approx(model.random_dropout, abs=0.002)
    expected = np.sqrt(model.sigma(z) ** 2 + model.quantisation**2 / 12)
    assert np.std(noisy[valid] - z) == pytest.approx(expected, rel=0.1)
    assert abs(np.mean(noisy[valid] - z)) < 2e-4
    # 1 mm quantisation.
    assert np.allclose(noisy[valid] * 1000, np.round(noisy[valid] * 1000), atol=1e-3)
    again = apply_depth_noise(clean, model, seed=0)
    assert np.array_equal(noisy, again, equal_nan=True)


def test_rgb_noise():
    from sam3d_bench.sensor import apply_rgb_noise

    img = np.full((100, 100, 3), 128, dtype=np.uint8)
    noisy = apply_rgb_noise(img, SensorNoise(), seed=0)
    assert noisy.dtype == np.uint8
    assert np.std(noisy.astype(float)) == pytest.approx(SensorNoise().rgb_sigma, rel=0.1)
    assert np.array_equal(apply_rgb_noise(img, None), img)


def test_noise_drops_depth_edges():
    clean = np.full((100, 100), 1.0, dtype=np.float32)
    clean[:, 50:] = 0.6
    model = SensorNoise(random_dropout=0.0, sigma_lateral_px=0.0, flying_pixel=0.0)
    noisy = apply_depth_noise(clean, model, seed=1)
    edge_band = np.isnan(noisy[:, 49:51]).mean()
    assert edge_band == pytest.approx(model.edge_dropout, abs=0.1)
    assert not np.isnan(noisy[:, :45]).any() and not np.isnan(noisy[:, 55:]).any()
    assert np.array_equal(apply_depth_noise(clean, None), clean)


def test_metrics_identity_and_shift(scene):
    obj = scene.objects[0]
    same = metrics.score_mesh(obj.mesh_vertices, obj.mesh_faces, obj, scene.camera_pose)
    assert same.f_5mm > 0.99 and same.f_1cm == pytest.approx(1.0)
    assert same.chamfer_cm < 0.1 and same.centre_error_cm < 1e-6
    up = scene.camera_pose[:3, :3].T @ np.array([0.0, 0.0, 1.0])  # world up, camera frame
    shifted = metrics.score_mesh(obj.mesh_vertices + 0.02 * up, obj.mesh_faces, obj,
                                 scene.camera_pose)
    assert shifted.centre_error_cm == pytest.approx(2.0, abs=1e-6)
    assert shifted.f_1cm < 0.7 and shifted.f_5mm < same.f_5mm - 0.4
    assert shifted.chamfer_cm > 0.5
    # Sideways shifts are also exact for the gravity-aligned box centre.
    side = scene.camera_pose[:3, :3].T @ np.array([0.6, 0.8, 0.0])
    moved = metrics.score_mesh(obj.mesh_vertices + 0.02 * side, obj.mesh_faces, obj,
                               scene.camera_pose)
    assert moved.centre_error_cm == pytest.approx(2.0, abs=1e-6)


def test_metrics_small_cube_far_shift():
    import trimesh

    from sam3d_bench.scenes import GroundTruthObject

    cube = trimesh.creation.box(extents=(0.01, 0.01, 0.01))
    gt = GroundTruthObject(1, 0, np.asarray(cube.vertices) + [0, 0, 0.7],
                           np.asarray(cube.faces), np.zeros((2, 2), bool), (0, 0, 0, 0),
                           np.array([0, 0, 0.7]))
    s = metrics.score_mesh(gt.mesh_vertices + [0.03, 0, 0], gt.mesh_faces, gt)
    assert s.f_1cm == 0.0 and s.f_5mm == 0.0
    assert s.centre_error_cm == pytest.approx(3.0)
    pts = metrics.sample_surface(gt.mesh_vertices, gt.mesh_faces, 5000, seed=7)
    p = metrics.score_points(pts, gt)
    assert p.f_5mm > 0.99 and p.chamfer_cm < 0.05 and p.centre_error_cm < 0.05
    assert metrics.score_points(np.full((4, 3), np.nan), gt).f_1cm == 0.0


def test_visible_only_baseline(scene):
    scores = [metrics.visible_only_baseline(scene, o) for o in scene.objects]
    mean = metrics.mean_scores(scores)
    # Lifting only the visible pixels: precise but incomplete.
    assert mean["precision_1cm"] > 0.9
    assert 0.3 < mean["recall_1cm"] < 0.98
    assert 0.0 < mean["chamfer_cm"] < 2.0


def test_household_scene_holds_catalogue_objects_standing_at_their_size():
    import os

    import pybullet
    import trimesh

    from sam3d_bench import household

    scene = make_tabletop_scene(2, n_objects=3, width=320, height=240, object_set="household")
    assert len({o.urdf_id for o in scene.objects}) == 3
    for obj in scene.objects:
        entry = household.entry(obj.urdf_id)
        assert obj.visible_mask.any()
        # The true mesh is the catalogue solid, standing upright on the table.
        height = scene.table_plane.signed_distance(obj.mesh_vertices)
        tall = entry.size[2] if entry.shape == "box" else entry.size[1]
        assert height.min() == pytest.approx(0.0, abs=3e-3)
        assert height.max() == pytest.approx(tall, abs=3e-3)
        if entry.shape == "box":
            volume = float(np.prod(entry.size))
        else:
            volume = np.pi * (entry.size[0] / 2) ** 2 * entry.size[1]
        solid = trimesh.Trimesh(obj.mesh_vertices, obj.mesh_faces, process=False)
        assert solid.is_watertight and solid.volume == pytest.approx(volume, rel=0.01)
        # The URDF the grasp simulation loads exists, beside its mesh, and pybullet reads it.
        path = household.urdf_path(obj.urdf_id)
        assert path.endswith(f"{entry.name}.urdf")
        assert os.path.exists(path) and os.path.exists(path[: -len(".urdf")] + ".obj")
        assert household.urdf_path(obj.urdf_id) == path  # written once, then reused
        client = pybullet.connect(pybullet.DIRECT)
        try:
            body = pybullet.loadURDF(path, physicsClientId=client)
            low, high = pybullet.getAABB(body, physicsClientId=client)
        finally:
            pybullet.disconnect(client)
        # The collision hull is the catalogue solid (pybullet's bounds add a few mm of margin).
        largest = tall if entry.shape == "cylinder" else max(entry.size)
        assert 0.0 <= np.max(np.subtract(high, low)) - largest < 0.008
    with pytest.raises(ValueError, match="object_set"):
        make_tabletop_scene(0, n_objects=1, width=64, height=48, object_set="ycb")
    with pytest.raises(ValueError, match="household"):
        household.entry(household.HOUSEHOLD_BASE + len(household.CATALOGUE))
    with pytest.raises(ValueError, match="at most"):  # one must stay free to replace another
        make_tabletop_scene(0, n_objects=len(household.CATALOGUE), width=64, height=48,
                            object_set="household")
