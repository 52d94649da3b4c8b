"""Sam3dObjectsReconstructor: conversion chain, plumbing and depth alignment, without the model.

SAM 3D Objects needs a GPU and gated checkpoints, so it cannot run here. What is proven:

(a) the conversion chain on synthetic data: an asymmetric object with a known pose is turned into
    EXACTLY what the reference returns (its conventions, from its source: ``w x y z`` rotation,
    row-vector ``Transform3d`` pose, PyTorch3D camera axes, Z-up Gaussians in the normalised
    box, Y-up GLB), and the adapter's output must project onto the ray-cast mask and lie on the
    ray-cast depth points;
(b) plumbing through a CONTRACT FAKE of the reference ``Inference`` class (injected with
    ``inference_factory``): one call per mask, seed and pointmap passed as the reference
    expects, failures → BackendError with memory released, usable afterwards;
(c) the depth alignment corrects a deliberately mis-scaled / shifted reference output.
"""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sam3d_ros.backends import make_reconstructor
from sam3d_ros.backends.sam3d_objects import reconstruction as mod
from sam3d_ros.backends.sam3d_objects.reconstruction import (
    Sam3dObjectsReconstructor,
    align_to_depth,
    posed_vertices,
    reference_output_to_object,
)
from sam3d_ros.core.errors import BackendError, BackendUnavailableError, InputError
from sam3d_ros.core.types import CameraIntrinsics, Frame, ObjectMask

torch = pytest.importorskip("torch")
trimesh = pytest.importorskip("trimesh")

K = CameraIntrinsics(fx=160.0, fy=160.0, cx=79.5, cy=59.5, width=160, height=120)
F = np.diag([-1.0, -1.0, 1.0])


# ---------------------------------------------------------------------------------------------
# synthetic scene: an asymmetric object (body + handle), ray-cast exactly
# ---------------------------------------------------------------------------------------------


def _cuboid(lo, hi):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    v = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                  for z in (lo[2], hi[2])])
    f = np.array([
        [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
        [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],
    ])
    return v, f


def canonical_object():
    """Centred, largest extent exactly 1, no symmetry: a body and an off-centre handle."""
    v1, f1 = _cuboid([-0.5, -0.3, -0.25], [0.5, 0.1, 0.25])
    v2, f2 = _cuboid([0.1, 0.1, -0.1], [0.4, 0.3, 0.25])
    return np.vstack([v1, v2]), np.vstack([f1, f2 + len(v1)])


def raycast(vertices, faces, intr=K):
    """Per-pixel nearest hit of pixel-centre rays (Möller–Trumbore): (mask, pointmap)."""
    v, u = np.mgrid[0:intr.height, 0:intr.width]
    d = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones(u.shape)], -1)
    d = d.reshape(-1, 3)
    tri = vertices[faces]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(d[:, None, :], e2[None])
    det = np.einsum("tk,rtk->rt", e1, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        s = -tri[None, :, 0]
        a = np.einsum("rtk,rtk->rt", np.broadcast_to(s, p.shape), p) * inv
        q = np.cross(np.broadcast_to(s, p.shape), e1[None])
        b = np.einsum("rk,rtk->rt", d, q) * inv
        t = np.einsum("tk,rtk->rt", e2, q) * inv
    hit = (np.abs(det) > 1e-12) & (a >= 0) & (b >= 0) & (a + b <= 1) & (t > 0)
    t = np.where(hit, t, np.inf).min(axis=1)
    mask = np.isfinite(t)
    pts = np.where(mask[:, None], d * t[:, None], np.nan)
    return mask.reshape(intr.height, intr.width), pts.reshape(intr.height, intr.width, 3)


# GT pose in OUR contract: p_optical = R(q) (scale · p_canonical) + t
Q_GT = Rotation.from_euler("xyz", [35.0, -50.0, 120.0], degrees=True).as_quat()  # x y z w
T_GT = np.array([0.04, -0.03, 0.62])
S_GT = 0.137
# where the object sits inside the reference's normalised box (off-centre, smaller than 1)
C0 = np.array([0.03, -0.05, 0.02])
E0 = 0.81


def gt_scene():
    p, faces = canonical_object()
    v_opt = (S_GT * p) @ Rotation.from_quat(Q_GT).as_matrix().T + T_GT
    mask, pts = raycast(v_opt, faces)
    rgb = np.full((K.height, K.width, 3), 90, np.uint8)
    rgb[mask] = (200, 30, 40)
    return p, faces, v_opt, Frame(rgb=rgb, points=pts.astype(np.float32), intrinsics=K), mask


# ---------------------------------------------------------------------------------------------
# what the reference code returns (its conventions, from its source)
# ---------------------------------------------------------------------------------------------


def quaternion_to_matrix_wxyz(q):
    """pytorch3d.transforms.quaternion_to_matrix for one [w, x, y, z] quaternion."""
    return Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()


def reference_transform(points_local, rotation_wxyz, translation, scale):
    """compose_transform(scale, rotation, translation).transform_points: ROW vectors."""
    return (points_local * scale) @ quaternion_to_matrix_wxyz(rotation_wxyz) + translation


class ReferenceGaussian:
    """Stand-in for sam3d_objects' ``Gaussian``: the properties the adapter reads."""

    def __init__(self, xyz, scaling, rotation_wxyz, opacity, features_dc):
        self.get_xyz = torch.tensor(xyz, dtype=torch.float32)
        self.get_scaling = torch.tensor(scaling, dtype=torch.float32)
        self.get_rotation = torch.tensor(rotation_wxyz, dtype=torch.float32)
        self.get_opacity = torch.tensor(opacity, dtype=torch.float32)[:, None]
        self._features_dc = torch.tensor(features_dc, dtype=torch.float32)[:, None, :]


def gaussian_setup():
    """Gaussians on the object in canonical terms: means, anisotropic sigmas, orientations."""
    p, faces = canonical_object()
    means = mod.sample_surface(p, faces, 50, seed=3)
    rng = np.random.default_rng(4)
    sig = rng.uniform(0.005, 0.03, (50, 3))
    rots = Rotation.random(50, random_state=5)
    return means, sig, rots


def reference_output(scale_error=1.0, shift=(0.0, 0.0, 0.0)):
    """The dict ``Inference.__call__`` returns for the GT object, built from the reference's
    conventions; ``scale_error`` / ``shift`` spoil its pose about the object centre."""
    p, faces = canonical_object()
    local = C0 + E0 * p  # Z-up normalised box coordinates
    # pose in the reference convention: F((s L) @ R_ref + t_ref) must equal R_gt S p + t_gt
    r_gt = Rotation.from_quat(Q_GT).as_matrix()
    r_ref = r_gt.T @ F  # because F R_refᵀ = R_gt
    q = Rotation.from_matrix(r_ref).as_quat()
    q_wxyz = np.array([q[3], q[0], q[1], q[2]])
    s_ref = S_GT / E0 * scale_error
    centre_cam = F @ T_GT  # object centre in the PyTorch3D camera frame
    t_ref = centre_cam - (s_ref * C0) @ r_ref + np.asarray(shift)
    # scale_error about the object centre: centre stays (plus shift), size changes
    v_check = F @ reference_transform(local, q_wxyz, t_ref, s_ref).T
    if scale_error == 1.0 and not any(shift):
        v_opt = (S_GT * p) @ r_gt.T + T_GT
        np.testing.assert_allclose(v_check.T, v_opt, atol=1e-12)  # the fabrication is right
    glb_vertices = local @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])  # their to_glb: Y-up
    colors = np.tile(np.array([[200, 30, 40, 255]], np.uint8), (len(local), 1))
    glb = trimesh.Trimesh(vertices=glb_vertices, faces=faces, vertex_colors=colors, process=False)
    means, sig, rots = gaussian_setup()
    gq = rots.as_quat()  # x y z w, in canonical = local axes
    gs = ReferenceGaussian(
        xyz=C0 + E0 * means,
        scaling=E0 * sig,
        rotation_wxyz=np.concatenate([gq[:, 3:], gq[:, :3]], axis=1),
        opacity=np.full(len(means), 0.8),
        features_dc=np.tile((np.array([0.8, 0.1, 0.2]) - 0.5) / mod.SH_C0, (len(means), 1)),
    )
    return {
        "rotation": torch.tensor(q_wxyz[None], dtype=torch.float32),
        "translation": torch.tensor(t_ref[None], dtype=torch.float32),
        "scale": torch.tensor(np.full((1, 3), s_ref), dtype=torch.float32),
        "gs": gs,
        "glb": glb,
        "pointmap": torch.zeros(4, 4, 3),
    }


# ---------------------------------------------------------------------------------------------
# (a) conversion chain
# ---------------------------------------------------------------------------------------------


def test_conversion_recovers_pose_and_canonical_object():
    p, _ = canonical_object()
    obj = reference_output_to_object(reference_output(), 5, 0, np.ones((2, 2), bool))
    # canonical frame: centred, largest extent 1, isotropic scale
    v = obj.mesh.vertices.astype(np.float64)
    np.testing.assert_allclose(0.5 * (v.min(0) + v.max(0)), 0, atol=1e-6)
    assert np.ptp(v, axis=0).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(v, p, atol=1e-6)
    np.testing.assert_allclose(obj.scale, [S_GT] * 3, rtol=1e-6)
    assert abs(np.dot(obj.rotation, Q_GT)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(obj.translation, T_GT, atol=1e-6)
    np.testing.assert_allclose(obj.extents, S_GT * np.ptp(p, axis=0), rtol=1e-5)
    assert obj.object_id == 5 and obj.mesh.faces.dtype == np.int32
    assert (obj.mesh.colors == [200, 30, 40]).all()


def test_posed_mesh_projects_onto_mask_and_lies_on_depth():
    _, faces, v_gt, frame, mask = gt_scene()
    obj = reference_output_to_object(reference_output(), 0, 0, mask)
    v = posed_vertices(obj)
    np.testing.assert_allclose(v, v_gt, atol=1e-6)  # vertex by vertex
    mask2, pts2 = raycast(v, faces)
    assert mask.sum() > 300
    np.testing.assert_array_equal(mask2, mask)  # same silhouette
    err = np.linalg.norm(pts2[mask] - frame.points[mask], axis=1)
    assert err.max() < 0.002  # on the depth points (metres)


def test_gaussians_in_canonical_frame_match_the_reference_scene():
    """Gaussians posed with OUR contract equal the reference's own make_scene placement."""
    out = reference_output()
    obj = reference_output_to_object(out, 0, 0, np.ones((2, 2), bool))
    g = obj.gaussians
    r = Rotation.from_quat(obj.rotation).as_matrix()
    s = obj.scale[0]
    means_opt = (g.means * s) @ r.T + obj.translation
    # reference: make_scene → PyTorch3D camera (row vectors), then optical
    ref_p3d = reference_transform(
        out["gs"].get_xyz.numpy().astype(float), out["rotation"][0].numpy().astype(float),
        out["translation"][0].numpy().astype(float), out["scale"][0].numpy().astype(float),
    )
    np.testing.assert_allclose(means_opt, ref_p3d @ F.T, atol=1e-5)
    # covariances: ours R diag((s σ)²) Rᵀ, the reference's A Σ_local Aᵀ with A = F s R_refᵀ
    r_ref = quaternion_to_matrix_wxyz(out["rotation"][0].numpy().astype(float))
    a = F @ (out["scale"][0, 0].item() * r_ref.T)
    g_loc = Rotation.from_quat(
        out["gs"].get_rotation.numpy()[:, [1, 2, 3, 0]].astype(float)).as_matrix()
    sig_loc = out["gs"].get_scaling.numpy().astype(float)
    g_ours = r @ Rotation.from_quat(g.rotations.astype(float)).as_matrix()
    for i in range(0, len(g), 7):
        cov_ref = a @ g_loc[i] @ np.diag(sig_loc[i] ** 2) @ g_loc[i].T @ a.T
        cov_ours = g_ours[i] @ np.diag((s * g.scales[i]) ** 2) @ g_ours[i].T
        np.testing.assert_allclose(cov_ours, cov_ref, atol=1e-9)
    np.testing.assert_allclose(g.colors, np.tile([0.8, 0.1, 0.2], (len(g), 1)), atol=1e-5)
    np.testing.assert_allclose(g.opacities, 0.8, atol=1e-6)
    assert g.rotations.shape == (len(g), 4) and (g.rotations[:, 3] >= 0).all()


def test_pointmap_conversion_and_glb_axes():
    pts = np.array([[[0.1, -0.2, 0.5], [np.nan, np.nan, np.nan]]], np.float32)
    out = mod.optical_to_pytorch3d_pointmap(pts)
    np.testing.assert_allclose(out[0, 0], [-0.1, 0.2, 0.5])
    assert np.isnan(out[0, 1]).all() and out.dtype == np.float32
    local = np.array([[0.1, 0.2, 0.3]])
    yup = local @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])  # the reference's to_glb
    np.testing.assert_allclose(yup, [[0.1, 0.3, -0.2]])
    np.testing.assert_allclose(mod.sam3d_glb_to_local(yup), local)


def test_identity_reference_pose_is_a_half_turn_about_z():
    q, t, s = mod.sam3d_pose_to_optical([1, 0, 0, 0], [[0.1, 0.2, 0.3]], [[2, 2, 2]])
    np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), F, atol=1e-12)
    np.testing.assert_allclose(t, [-0.1, -0.2, 0.3])
    np.testing.assert_allclose(s, [2, 2, 2])


# ---------------------------------------------------------------------------------------------
# (b) plumbing, through a CONTRACT FAKE of the reference Inference class
# ---------------------------------------------------------------------------------------------


class ContractFakeInference:
    """CONTRACT FAKE of ``notebook/inference.py:Inference`` (the real one needs a GPU).

    Same call signature, validates its inputs the way the reference uses them (uint8 RGB,
    bool mask of the same size, pointmap a float H×W×3 torch tensor), records the calls and
    returns the reference-convention output of :func:`reference_output`. ``fail_on`` makes
    the N-th call raise (e.g. a CUDA out-of-memory error).
    """

    def __init__(self, config_file, compile=False, fail_on=None, error=None, output=None):
        self.config_file, self.compile = config_file, compile
        self.calls = []
        self.fail_on, self.error = fail_on, error
        self.output = output or reference_output

    def __call__(self, image, mask, seed=None, pointmap=None):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert mask.dtype == bool and mask.shape == image.shape[:2]
        if pointmap is not None:
            assert isinstance(pointmap, torch.Tensor) and pointmap.dtype == torch.float32
            assert tuple(pointmap.shape) == image.shape[:2] + (3,)
        self.calls.append({"mask": mask.copy(), "seed": seed, "pointmap": pointmap})
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise self.error
        return self.output()


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "checkpoints" / "hf" / "pipeline.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("# stand-in\n")
    return str(path)


def _backend(config, **fake_kwargs):
    fakes = []

    def factory(cfg, compile):
        fakes.append(ContractFakeInference(cfg, compile, **fake_kwargs))
        return fakes[-1]

    return Sam3dObjectsReconstructor(pipeline_config=config, inference_factory=factory), fakes


def test_one_call_per_mask_seed_and_pytorch3d_pointmap(config):
    _, _, _, frame, mask = gt_scene()
    rec, fakes = _backend(config)
    half = mask.copy()
    half[:, : K.width // 2] = False
    masks = [ObjectMask(3, mask, "mug", 0.9), ObjectMask(8, half)]
    objs = rec.reconstruct(frame, masks, seed=1234)
    (fake,) = fakes
    assert fake.config_file == config and fake.compile is False
    assert len(fake.calls) == 2 and [c["seed"] for c in fake.calls] == [1234, 1234]
    np.testing.assert_array_equal(fake.calls[0]["mask"], mask)
    np.testing.assert_array_equal(fake.calls[1]["mask"], half)
    pm = fake.calls[0]["pointmap"].numpy()
    ok = np.isfinite(frame.points).all(-1)
    np.testing.assert_array_equal(pm[ok], frame.points[ok] * np.float32([-1, -1, 1]))
    assert np.isnan(pm[~ok]).all()
    assert [o.object_id for o in objs] == [3, 8] and [o.object_index for o in objs] == [0, 1]
    assert objs[0].label == "mug" and objs[0].score == pytest.approx(0.9)
    assert all(o.mask.shape == mask.shape for o in objs)


def test_without_pointmap_passes_none(config):
    _, _, _, frame, mask = gt_scene()
    rec, fakes = _backend(config)
    frame.points = None
    (obj,) = rec.reconstruct(frame, [ObjectMask(0, mask)], seed=0)
    assert fakes[0].calls[0]["pointmap"] is None and rec.last_alignments == []
    np.testing.assert_allclose(obj.translation, T_GT, atol=1e-6)


@pytest.mark.parametrize("error, words", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
     "out of GPU memory"),
    (RuntimeError("spconv kernel failed"), "RuntimeError: spconv kernel failed"),
])
def test_failure_mid_run_is_backend_error_then_usable(config, monkeypatch, error, words):
    _, _, _, frame, mask = gt_scene()
    released = []
    monkeypatch.setattr(mod, "release_gpu_memory", lambda: released.append(1))
    rec, fakes = _backend(config, fail_on=2, error=error)
    masks = [ObjectMask(0, mask), ObjectMask(1, mask)]
    with pytest.raises(BackendError, match=words) as err:
        rec.reconstruct(frame, masks, seed=0)
    assert "object 1" in str(err.value) and released
    assert len(rec.reconstruct(frame, masks, seed=0)) == 2  # next request works
    assert len(fakes) == 1 and len(fakes[0].calls) == 4  # no reload needed


def test_invalid_reference_output_is_backend_error(config):
    _, _, _, frame, mask = gt_scene()

    def no_mesh():
        out = reference_output()
        out["glb"] = None
        return out

    rec, _ = _backend(config, output=no_mesh)
    with pytest.raises(BackendError, match="no 'glb'"):
        rec.reconstruct(frame, [ObjectMask(0, mask)], seed=0)


def test_bad_masks_are_input_errors(config):
    _, _, _, frame, mask = gt_scene()
    rec, fakes = _backend(config)
    with pytest.raises(InputError):
        rec.reconstruct(frame, [ObjectMask(0, np.zeros_like(mask))], seed=0)
    with pytest.raises(InputError):
        rec.reconstruct(frame, [ObjectMask(0, mask[:-1])], seed=0)
    assert not fakes  # refused before loading the model


def test_missing_package_or_config_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("SAM3D_OBJECTS_CONFIG", raising=False)
    frame, mask = gt_scene()[3:]
    for rec in (Sam3dObjectsReconstructor(),
                Sam3dObjectsReconstructor(pipeline_config=str(tmp_path / "none.yaml"))):
        with pytest.raises(BackendUnavailableError, match="doc/setup.md"):
            rec.reconstruct(frame, [ObjectMask(0, mask)], seed=0)
    cfg = tmp_path / "pipeline.yaml"  # exists, but no sam-3d-objects checkout around it
    cfg.write_text("")
    with pytest.raises(BackendUnavailableError, match="notebook/inference.py"):
        Sam3dObjectsReconstructor(pipeline_config=str(cfg)).load()


def test_import_failure_of_the_reference_is_unavailable(tmp_path, monkeypatch):
    (tmp_path / "notebook").mkdir()
    (tmp_path / "notebook" / "inference.py").write_text("raise ImportError('no CUDA here')\n")
    cfg = tmp_path / "checkpoints" / "hf" / "pipeline.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("")
    monkeypatch.setenv("CONDA_PREFIX", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))  # restores sys.path afterwards
    monkeypatch.delitem(__import__("sys").modules, "inference", raising=False)
    rec = Sam3dObjectsReconstructor(pipeline_config=str(cfg))
    with pytest.raises(BackendUnavailableError, match="no CUDA here"):
        rec.load()
    monkeypatch.delenv("CONDA_PREFIX")
    with pytest.raises(BackendUnavailableError, match="CONDA_PREFIX"):
        rec.load()


def test_load_unload_and_registry(config):
    rec = make_reconstructor("sam3d_objects", pipeline_config=config,
                             inference_factory=ContractFakeInference)
    assert isinstance(rec, Sam3dObjectsReconstructor) and not rec.loaded
    rec.load()
    assert rec.loaded
    rec.unload()
    assert not rec.loaded


# ---------------------------------------------------------------------------------------------
# (c) depth alignment
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale_error, shift", [
    (1.25, (0.0, 0.0, 0.0)),
    (0.8, (0.01, -0.015, 0.03)),
    (1.0, (-0.02, 0.0, 0.04)),
])
def test_alignment_corrects_a_misscaled_reference_output(config, scale_error, shift):
    _, faces, v_gt, frame, mask = gt_scene()
    rec, _ = _backend(config, output=lambda: reference_output(scale_error, shift))
    spoiled = reference_output_to_object(reference_output(scale_error, shift), 0, 0, mask)
    before = np.abs(posed_vertices(spoiled) - v_gt).max()
    assert before > 0.01  # really wrong (centimetres)
    (obj,) = rec.reconstruct(frame, [ObjectMask(0, mask)], seed=0)
    (alignment,) = rec.last_alignments
    assert alignment.applied and alignment.median_after < 0.5 * alignment.median_before
    v = posed_vertices(obj)
    assert np.abs(v - v_gt).max() < 0.002  # within 2 mm everywhere
    mask2, pts2 = raycast(v, faces)
    both = mask & mask2
    assert both.sum() > 0.97 * mask.sum()
    # per pixel; a one-pixel silhouette shift at a depth edge is not a metric error: 95 %
    assert np.percentile(np.linalg.norm(pts2[both] - frame.points[both], axis=1), 95) < 0.002
    np.testing.assert_allclose(obj.scale, S_GT, rtol=0.01)


def test_alignment_leaves_a_correct_output_alone(config):
    _, _, v_gt, frame, mask = gt_scene()
    rec, _ = _backend(config)
    (obj,) = rec.reconstruct(frame, [ObjectMask(0, mask)], seed=0)
    assert np.abs(posed_vertices(obj) - v_gt).max() < 1e-4


def test_alignment_is_robust_to_outlier_depth():
    _, faces, v_gt, frame, mask = gt_scene()
    spoiled = reference_output_to_object(reference_output(1.2, (0.01, 0, 0)), 0, 0, mask)
    pts = frame.points.copy()
    ys, xs = np.nonzero(mask)
    bad = np.random.default_rng(0).choice(len(ys), len(ys) // 10, replace=False)
    pts[ys[bad], xs[bad], 2] += 0.3  # 10 % flying pixels, 30 cm behind
    a = align_to_depth(posed_vertices(spoiled), spoiled.mesh.faces, mask, pts, intrinsics=None)
    assert a.applied
    v = a.scale * posed_vertices(spoiled) + a.translation
    assert np.abs(v - v_gt).max() < 0.003


def test_alignment_needs_enough_depth():
    _, _, _, frame, mask = gt_scene()
    obj = reference_output_to_object(reference_output(1.2), 0, 0, mask)
    pts = np.full_like(frame.points, np.nan)
    a = align_to_depth(posed_vertices(obj), obj.mesh.faces, mask, pts, K)
    assert not a.applied and a.scale == 1.0
