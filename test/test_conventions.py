import numpy as np
import pytest

from sam3d_ros.core import conventions as conv
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.types import CameraIntrinsics, Gaussians

K = CameraIntrinsics(fx=525.0, fy=520.0, cx=319.5, cy=239.5, width=640, height=480)


def random_quats(rng, n):
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


# ---------------------------------------------------------------- depth units


def test_depth16_millimetres_zero_invalid():
    d = np.array([[0, 1, 1000], [65535, 2500, 0]], dtype=np.uint16)
    m = conv.depth_to_metres(d, "16UC1")
    assert m.dtype == np.float32
    assert np.isnan(m[0, 0]) and np.isnan(m[1, 2])
    np.testing.assert_allclose(m[0, 1:], [0.001, 1.0], rtol=1e-7)
    np.testing.assert_allclose(m[1, :2], [65.535, 2.5], rtol=1e-7)


def test_depth16_alias_and_channel_axis():
    d = np.full((2, 3, 1), 750, dtype=np.uint16)
    m = conv.depth_to_metres(d, "mono16")
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m, 0.75)


def test_depth32_invalid_values():
    d = np.array([[np.nan, 0.0, np.inf], [-np.inf, -1.0, 1.25]], dtype=np.float32)
    m = conv.depth_to_metres(d, "32FC1")
    assert m.dtype == np.float32
    assert np.isnan(m.ravel()[:5]).all()
    assert m[1, 2] == np.float32(1.25)
    # the input is not modified
    assert d[0, 1] == 0.0 and np.isinf(d[0, 2])


def test_depth_errors():
    with pytest.raises(InputError) as e:
        conv.depth_to_metres(np.zeros((2, 2), np.uint16), "32FC1")
    assert e.value.field == "depth"
    with pytest.raises(InputError):
        conv.depth_to_metres(np.zeros((2, 2), np.float32), "16UC1")
    with pytest.raises(InputError, match="unsupported"):
        conv.depth_to_metres(np.zeros((2, 2), np.float32), "8UC1")
    with pytest.raises(InputError):
        conv.depth_to_metres(np.zeros((2, 2, 3), np.float32), "32FC1")


def test_depth_unit_plausibility_rules():
    # Float depth is metres: a median beyond 50 is millimetres. 16-bit depth is millimetres: a
    # median nearer than 5 cm is metres (or centimetres) stored as integers.
    ok = np.full((4, 4), 0.75, np.float32)
    conv.check_float_depth_is_metres(ok)
    conv.check_integer_depth_is_millimetres(ok)
    conv.check_integer_depth_is_millimetres(np.full((4, 4), conv.MIN_MEDIAN_DEPTH_M))
    with pytest.raises(InputError, match="looks like millimetres") as e:
        conv.check_float_depth_is_metres(ok * 1000.0, "pointmap_url")
    assert e.value.field == "pointmap_url"
    metres_as_int = conv.depth_to_metres(np.full((4, 4), 1, np.uint16), "16UC1")
    with pytest.raises(InputError, match="16-bit depth must be millimetres; its median 1 mm") as e:
        conv.check_integer_depth_is_millimetres(metres_as_int, "depth.encoding")
    assert e.value.field == "depth.encoding"
    # Invalid pixels do not count; all invalid is left to the callers' own checks.
    mostly_invalid = np.full((4, 4), np.nan, np.float32)
    mostly_invalid[0, 0] = 0.8
    conv.check_integer_depth_is_millimetres(mostly_invalid)
    conv.check_integer_depth_is_millimetres(np.full((2, 2), np.nan, np.float32))


def test_metres_to_depth16_roundtrip_and_invalid():
    m = np.array([np.nan, 0.0, -2.0, np.inf, 0.0004, 0.0006, 1.2344, 70.0, 65.535])
    d = conv.metres_to_depth16(m)
    assert d.dtype == np.uint16
    assert d.tolist() == [0, 0, 0, 0, 0, 1, 1234, 0, 65535]
    back = conv.depth_to_metres(d.reshape(3, 3), "16UC1").ravel()
    assert np.isnan(back[:5]).all() and np.isnan(back[7])
    np.testing.assert_allclose(back[[5, 6, 8]], [0.001, 1.234, 65.535], rtol=1e-6)


def test_metres_to_depth32():
    out = conv.metres_to_depth32(np.array([1.5, 0.0, np.inf, -1.0]))
    assert out.dtype == np.float32
    assert out[0] == 1.5 and np.isnan(out[1:]).all()


# ---------------------------------------------------------------- pinhole


def test_backproject_project_identity():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 4.0, size=(K.height, K.width)).astype(np.float32)
    depth[10, 20] = np.nan
    pts = conv.backproject(depth, K)
    assert pts.shape == (480, 640, 3) and pts.dtype == np.float32
    assert np.isnan(pts[10, 20]).all()
    np.testing.assert_array_equal(pts[..., 2][~np.isnan(depth)], depth[~np.isnan(depth)])
    u, v = conv.project(pts, K)
    uu, vv = np.meshgrid(np.arange(640), np.arange(480))
    ok = ~np.isnan(depth)
    assert np.isnan(u[10, 20]) and np.isnan(v[10, 20])
    np.testing.assert_allclose(u[ok], uu[ok], atol=2e-3)
    np.testing.assert_allclose(v[ok], vv[ok], atol=2e-3)


def test_backproject_principal_point_and_known_pixel():
    depth = np.full((480, 640), 2.0, np.float32)
    pts = conv.backproject(depth, CameraIntrinsics(500.0, 400.0, 320.0, 240.0, 640, 480))
    np.testing.assert_allclose(pts[240, 320], [0, 0, 2.0])
    # pixel (u=420, v=40): x = 100 * 2 / 500, y = -200 * 2 / 400
    np.testing.assert_allclose(pts[40, 420], [0.4, -1.0, 2.0], rtol=1e-6)


def test_backproject_size_mismatch():
    with pytest.raises(InputError, match="scale_intrinsics"):
        conv.backproject(np.ones((240, 320), np.float32), K)


def test_project_behind_camera_is_nan():
    u, v = conv.project(np.array([[0.0, 0.0, -1.0], [0.1, 0.2, 0.0], [0.0, 0.0, 1.0]]), K)
    assert np.isnan(u[:2]).all() and np.isnan(v[:2]).all()
    assert (u[2], v[2]) == (K.cx, K.cy)


def test_scale_intrinsics_pixel_centres():
    half = conv.scale_intrinsics(K, 320, 240)
    assert (half.width, half.height) == (320, 240)
    assert half.fx == K.fx / 2 and half.fy == K.fy / 2
    # The optical centre at pixel 319.5 (between pixels 319/320) maps to 159.5 in the half image.
    assert half.cx == pytest.approx(159.5) and half.cy == pytest.approx(119.5)
    # same 3D point projects to the same normalised image position
    p = np.array([0.3, -0.2, 1.7])
    u, v = conv.project(p, K)
    uh, vh = conv.project(p, half)
    assert (uh + 0.5) * 2 == pytest.approx(u + 0.5)
    assert (vh + 0.5) * 2 == pytest.approx(v + 0.5)
    back = conv.scale_intrinsics(half, 640, 480)
    np.testing.assert_allclose([back.fx, back.fy, back.cx, back.cy], [K.fx, K.fy, K.cx, K.cy])
    with pytest.raises(InputError):
        conv.scale_intrinsics(K, 0, 10)


def test_intrinsics_matrix_roundtrip_and_errors():
    m = conv.intrinsics_to_matrix(K)
    assert m.shape == (3, 3) and m[0, 0] == K.fx and m[1, 2] == K.cy and m[2, 2] == 1
    assert conv.intrinsics_from_matrix(m, 640, 480) == K
    assert conv.intrinsics_from_matrix(m.ravel().tolist(), 640, 480) == K
    bad = m.copy()
    bad[0, 1] = 3.0
    with pytest.raises(InputError, match="skew"):
        conv.intrinsics_from_matrix(bad, 640, 480)
    with pytest.raises(InputError, match="positive"):
        conv.intrinsics_from_matrix(np.zeros((3, 3)), 640, 480)
    with pytest.raises(InputError, match="9 values"):
        conv.intrinsics_from_matrix(np.eye(2), 640, 480)


def test_intrinsics_from_pointmap_recovers_K():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 3.0, size=(120, 160)).astype(np.float32)
    k = CameraIntrinsics(131.0, 127.5, 81.2, 58.7, 160, 120)
    pts = conv.backproject(depth, k)
    pts[:10] = np.nan  # invalid rows are ignored
    pts[50, 50] = [5.0, 5.0, 1.0]  # an outlier (flying pixel)
    fit = conv.intrinsics_from_pointmap(pts)
    assert (fit.width, fit.height) == (160, 120)
    np.testing.assert_allclose([fit.fx, fit.fy, fit.cx, fit.cy], [131.0, 127.5, 81.2, 58.7],
                               rtol=1e-4, atol=1e-3)


def test_intrinsics_from_pointmap_errors():
    with pytest.raises(InputError, match="valid points"):
        conv.intrinsics_from_pointmap(np.full((10, 10, 3), np.nan, np.float32))
    pts = conv.backproject(np.ones((20, 30), np.float32), CameraIntrinsics(30, 30, 15, 10, 30, 20))
    with pytest.raises(InputError, match="optical frame"):
        conv.intrinsics_from_pointmap(conv.optical_to_pytorch3d(pts))
    with pytest.raises(InputError, match="H×W×3"):
        conv.intrinsics_from_pointmap(np.ones((5, 5)))


# ---------------------------------------------------------------- quaternions


def test_quat_order_conversion():
    q = np.array([0.1, 0.2, 0.3, 0.9])
    np.testing.assert_array_equal(conv.xyzw_to_wxyz(q), [0.9, 0.1, 0.2, 0.3])
    np.testing.assert_array_equal(conv.wxyz_to_xyzw(conv.xyzw_to_wxyz(q)), q)
    batch = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(conv.wxyz_to_xyzw(conv.xyzw_to_wxyz(batch)), batch)


def test_quat_90_about_z():
    s = np.sqrt(0.5)
    q = np.array([0.0, 0.0, s, s])
    r = conv.quat_to_matrix(q)
    np.testing.assert_allclose(r, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(conv.quat_rotate(q, [1.0, 0, 0]), [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(conv.matrix_to_quat(r), q, atol=1e-12)


def test_quat_known_rotations():
    # 180° about x: w = 0, canonical sign keeps x > 0
    np.testing.assert_allclose(conv.matrix_to_quat(np.diag([1.0, -1, -1])), [1, 0, 0, 0],
                               atol=1e-12)
    np.testing.assert_allclose(conv.matrix_to_quat(np.diag([-1.0, 1, -1])), [0, 1, 0, 0],
                               atol=1e-12)
    np.testing.assert_allclose(conv.matrix_to_quat(np.eye(3)), [0, 0, 0, 1], atol=1e-12)
    # 90° about x maps y to z
    s = np.sqrt(0.5)
    np.testing.assert_allclose(conv.quat_rotate([s, 0, 0, s], [0, 1.0, 0]), [0, 0, 1], atol=1e-12)


def test_quat_matrix_roundtrip_random_and_canonical_sign():
    rng = np.random.default_rng(2)
    q = random_quats(rng, 500)
    r = conv.quat_to_matrix(q)
    assert r.shape == (500, 3, 3)
    np.testing.assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), r.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    back = conv.matrix_to_quat(r)
    assert (back[:, 3] >= 0).all()
    np.testing.assert_allclose(back, conv.quat_canonical(q), atol=1e-10)
    # -q is the same rotation
    np.testing.assert_allclose(conv.quat_to_matrix(-q), r, atol=1e-12)


def test_matrix_to_quat_near_180_degrees_is_accurate():
    rng = np.random.default_rng(3)
    axes = rng.normal(size=(100, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angle = np.pi - 1e-9
    q = np.concatenate([axes * np.sin(angle / 2), np.full((100, 1), np.cos(angle / 2))], axis=1)
    np.testing.assert_allclose(conv.matrix_to_quat(conv.quat_to_matrix(q)), q, atol=1e-9)


def test_matrix_to_quat_rejects_reflection():
    with pytest.raises(ValueError, match="rotation"):
        conv.matrix_to_quat(np.diag([1.0, 1.0, -1.0]))


def test_quat_multiply_composes_matrices():
    rng = np.random.default_rng(4)
    a, b = random_quats(rng, 50), random_quats(rng, 50)
    np.testing.assert_allclose(
        conv.quat_to_matrix(conv.quat_multiply(a, b)),
        conv.quat_to_matrix(a) @ conv.quat_to_matrix(b),
        atol=1e-12,
    )
    ident = conv.quat_multiply(a, conv.quat_conjugate(a))
    np.testing.assert_allclose(ident, np.tile([0, 0, 0, 1.0], (50, 1)), atol=1e-12)
    np.testing.assert_allclose(conv.quat_to_matrix(conv.quat_conjugate(a)),
                               np.swapaxes(conv.quat_to_matrix(a), 1, 2), atol=1e-12)


def test_quat_normalize():
    np.testing.assert_allclose(conv.quat_normalize([0, 0, 0, 2.0]), [0, 0, 0, 1])
    np.testing.assert_allclose(conv.quat_normalize([0, 0, 0, -2.0]), [0, 0, 0, -1])
    np.testing.assert_allclose(conv.quat_canonical([0, 0, 0, -2.0]), [0, 0, 0, 1])
    with pytest.raises(ValueError):
        conv.quat_normalize([0, 0, 0, 0])
    with pytest.raises(ValueError):
        conv.quat_normalize([np.nan, 0, 0, 1])
    with pytest.raises(ValueError):
        conv.quat_normalize([0, 0, 1])


# ---------------------------------------------------------------- frame contract


def test_canonical_camera_roundtrip_and_definition():
    rng = np.random.default_rng(5)
    pts = rng.uniform(-0.5, 0.5, size=(200, 3)).astype(np.float32)
    q = random_quats(rng, 1)[0]
    t = np.array([0.1, -0.2, 1.5])
    s = 0.3
    cam = conv.canonical_to_camera(pts, q, t, s)
    assert cam.dtype == np.float32
    expected = (conv.quat_to_matrix(q) @ (s * pts.astype(np.float64)).T).T + t
    np.testing.assert_allclose(cam, expected, atol=1e-6)
    np.testing.assert_allclose(conv.camera_to_canonical(cam, q, t, s), pts, atol=1e-5)
    # hosted-schema nesting [[...]] is accepted
    cam2 = conv.canonical_to_camera(pts, [q.tolist()], [t.tolist()], [[s, s, s]])
    np.testing.assert_array_equal(cam2, cam)


def test_anisotropic_scale_and_pose_matrix():
    q = np.array([0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)])  # 90° about z
    m = conv.pose_matrix(q, [1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    # canonical x axis scaled by 2 then rotated onto +y
    np.testing.assert_allclose(conv.transform_points(m, [1.0, 0, 0]), [1, 4, 3], atol=1e-12)
    np.testing.assert_allclose(conv.canonical_to_camera(np.array([0, 1.0, 0]), q, [1, 2, 3],
                                                      [2, 3, 4]), [-2, 2, 3], atol=1e-12)
    np.testing.assert_allclose(conv.pose_matrix(q, [0, 0, 0])[:3, :3], conv.quat_to_matrix(q))
    assert m[3].tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError):
        conv.scale_vector([1.0, 2.0])
    with pytest.raises(ValueError):
        conv.scale_vector(0.0)


def test_transform_gaussians_matches_covariance_transform():
    rng = np.random.default_rng(6)
    n = 64
    g = Gaussians(
        means=rng.uniform(-0.5, 0.5, (n, 3)).astype(np.float32),
        scales=rng.uniform(0.001, 0.05, (n, 3)).astype(np.float32),
        rotations=random_quats(rng, n).astype(np.float32),
        colors=rng.uniform(0, 1, (n, 3)).astype(np.float32),
        opacities=rng.uniform(0.1, 0.9, n).astype(np.float32),
    )
    q = random_quats(rng, 1)[0]
    t = np.array([0.3, 0.1, 0.9])
    s = 0.25
    out = conv.transform_gaussians(g, q, t, s)
    assert out.means.dtype == np.float32 and out.rotations.shape == (n, 4)
    # covariance transformed explicitly: Σ' = A Σ Aᵀ with A = s·R
    a = s * conv.quat_to_matrix(q)
    m_in = conv.quat_to_matrix(g.rotations)
    cov_in = m_in @ (np.asarray(g.scales, np.float64)[:, :, None] ** 2 * np.swapaxes(m_in, 1, 2))
    cov_expected = a @ cov_in @ a.T
    m_out = conv.quat_to_matrix(out.rotations)
    cov_out = m_out @ (np.asarray(out.scales, np.float64)[:, :, None] ** 2
                       * np.swapaxes(m_out, 1, 2))
    np.testing.assert_allclose(cov_out, cov_expected, rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(out.means, conv.canonical_to_camera(g.means, q, t, s), atol=1e-6)
    np.testing.assert_array_equal(out.colors, g.colors)
    np.testing.assert_array_equal(out.opacities, g.opacities)
    np.testing.assert_allclose(np.linalg.norm(out.rotations, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="isotropic"):
        conv.transform_gaussians(g, q, t, [1.0, 2.0, 1.0])


def test_transform_gaussians_empty():
    e = Gaussians(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32),
                  np.zeros((0, 4), np.float32), np.zeros((0, 3), np.float32),
                  np.zeros(0, np.float32))
    out = conv.transform_gaussians(e, [0, 0, 0, 1], [0, 0, 0], 1.0)
    assert len(out) == 0 and out.rotations.shape == (0, 4)


# ---------------------------------------------------------------- axes


def test_optical_pytorch3d():
    p = np.array([[1.0, 2.0, 3.0], [np.nan, 0, 1]], dtype=np.float32)
    out = conv.optical_to_pytorch3d(p)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], [-1, -2, 3])
    assert np.isnan(out[1, 0])
    np.testing.assert_array_equal(conv.pytorch3d_to_optical(out[0]), p[0])


def test_zup_yup():
    p = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(conv.zup_to_yup(p), [1, 3, -2])
    np.testing.assert_array_equal(conv.yup_to_zup(conv.zup_to_yup(p)), p)
    np.testing.assert_array_equal(conv.yup_to_zup(p), [1, -3, 2])
    # a proper rotation (no mirroring): +z (up) becomes +Y (up)
    assert np.linalg.det(conv.ZUP_TO_YUP) == pytest.approx(1.0)
    np.testing.assert_array_equal(conv.zup_to_yup([0, 0, 1.0]), [0, 1, 0])


def test_optical_body_rep103():
    # forward (optical +z) is body +x, right (optical +x) is body -y, down (optical +y) is -z
    np.testing.assert_array_equal(conv.optical_to_body([0, 0, 1.0]), [1, 0, 0])
    np.testing.assert_array_equal(conv.optical_to_body([1.0, 0, 0]), [0, -1, 0])
    np.testing.assert_array_equal(conv.optical_to_body([0, 1.0, 0]), [0, 0, -1])
    p = np.array([0.3, -0.4, 2.0])
    np.testing.assert_allclose(conv.body_to_optical(conv.optical_to_body(p)), p)
    np.testing.assert_allclose(conv.quat_to_matrix(conv.OPTICAL_IN_BODY_XYZW),
                               conv.OPTICAL_TO_BODY,
                               atol=1e-12)


def test_quat_left_matrix_equals_multiply():
    rng = np.random.default_rng(7)
    a = random_quats(rng, 1)[0]
    b = random_quats(rng, 20)
    np.testing.assert_allclose(b @ conv.quat_left_matrix(a).T, conv.quat_multiply(a, b),
                               atol=1e-12)


# ---------------------------------------------------------------- grasp frame


def test_grasp_rotation_axes():
    r = conv.grasp_rotation([0, 0, 2.0], [0, 3.0, 0.5])  # closing made orthogonal to approach
    np.testing.assert_allclose(r, np.eye(3), atol=1e-12)
    rng = np.random.default_rng(0)
    a, c = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    r = conv.grasp_rotation(a, c)
    np.testing.assert_allclose(r[..., 2], a / np.linalg.norm(a, axis=1, keepdims=True),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.cross(r[..., 1], r[..., 2]), r[..., 0], atol=1e-12)
    q = conv.grasp_quaternion(a, c)
    np.testing.assert_allclose(conv.quat_to_matrix(q), r, atol=1e-9)
    with pytest.raises(ValueError):
        conv.grasp_rotation([0, 0, 1.0], [0, 0, 2.0])


def test_end_effector_pose_round_trip():
    q = conv.grasp_quaternion([0, 0, 1.0], [1.0, 0, 0])  # approach down the optical axis
    p_ee, q_ee = conv.grasp_to_end_effector([0.1, 0.2, 0.5], q, 0.1034)
    np.testing.assert_allclose(p_ee, [0.1, 0.2, 0.5 - 0.1034], atol=1e-12)  # behind, along -z
    np.testing.assert_allclose(conv.quat_to_matrix(q_ee), conv.quat_to_matrix(q), atol=1e-12)
    # a link that closes along its own x: 90° about z; its x axis is then the grasp's y axis
    turn = [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]
    p2, q2 = conv.grasp_to_end_effector([0.1, 0.2, 0.5], q, 0.05, turn)
    np.testing.assert_allclose(conv.quat_to_matrix(q2)[:, 0], conv.quat_to_matrix(q)[:, 1],
                               atol=1e-12)
    back_p, back_q = conv.end_effector_to_grasp(p2, q2, 0.05, turn)
    np.testing.assert_allclose(back_p, [0.1, 0.2, 0.5], atol=1e-12)
    np.testing.assert_allclose(conv.quat_to_matrix(back_q), conv.quat_to_matrix(q), atol=1e-12)
