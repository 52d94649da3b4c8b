"""Grasp synthesis (sam3d_ros.backends.grasp.analytic) and the grasp contract."""

import json

import numpy as np
import pytest
from PIL import Image

from sam3d_ros.backends import make_grasp_planner
from sam3d_ros.backends.grasp.analytic import AnalyticGraspPlanner, GripperModel
from sam3d_ros.core import conventions as conv
from sam3d_ros.core.engine import Engine
from sam3d_ros.core.support_plane import Plane
from sam3d_ros.core.types import (
    CameraIntrinsics,
    Frame,
    Gaussians,
    GraspPlanner,
    Mesh,
    ObjectMask,
    ObjectReconstruction,
)

# Camera looking straight down at a table 0.6 m away: optical +z = down, the table normal (toward
# the camera) is -z and the table is the plane z = 0.6.
TABLE_Z = 0.6
PLANE = Plane(normal=np.array([0.0, 0.0, -1.0]), offset=TABLE_Z, inliers=np.zeros(0, bool))
K = CameraIntrinsics(fx=300.0, fy=300.0, cx=79.5, cy=59.5, width=160, height=120)
GRIPPER = GripperModel()


def box_mesh(lo, hi):
    """Closed box, faces counter-clockwise seen from outside."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    v = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                  for z in (lo[2], hi[2])])
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return v, f


def cylinder_mesh(centre, radius, z_lo, z_hi, segments=64):
    """Closed cylinder with its axis along optical z, outward faces."""
    a = 2 * np.pi * np.arange(segments) / segments
    ring = np.stack([centre[0] + radius * np.cos(a), centre[1] + radius * np.sin(a)], 1)
    v = np.concatenate([np.c_[ring, np.full(segments, z_lo)], np.c_[ring, np.full(segments, z_hi)],
                        [[centre[0], centre[1], z_lo], [centre[0], centre[1], z_hi]]])
    faces = []
    c_lo, c_hi = 2 * segments, 2 * segments + 1
    for i in range(segments):
        j = (i + 1) % segments
        faces += [[i, j, segments + j], [i, segments + j, segments + i],
                  [c_lo, j, i], [c_hi, segments + i, segments + j]]
    v_, f_ = v, np.array(faces)
    # orient outward whatever the winding above: flip if the signed volume is negative
    a0, b0, c0 = v_[f_[:, 0]], v_[f_[:, 1]], v_[f_[:, 2]]
    if np.einsum("ij,ij->i", a0, np.cross(b0, c0)).sum() < 0:
        f_ = f_[:, ::-1]
    return v_, f_


def make_object(object_id, vertices, faces, mask=None):
    """An ObjectReconstruction whose canonical frame is the camera frame shifted to the centre."""
    centre = 0.5 * (vertices.min(0) + vertices.max(0))
    n = 4
    return ObjectReconstruction(
        object_id=object_id, object_index=object_id,
        mesh=Mesh((vertices - centre).astype(np.float32), faces.astype(np.int32),
                  np.full((len(vertices), 3), 128, np.uint8)),
        gaussians=Gaussians(np.zeros((n, 3), np.float32), np.full((n, 3), 0.01, np.float32),
                            np.tile(np.float32([0, 0, 0, 1]), (n, 1)),
                            np.full((n, 3), 0.5, np.float32), np.full(n, 0.9, np.float32)),
        rotation=np.array([0.0, 0.0, 0.0, 1.0]), translation=centre, scale=np.ones(3),
        region=np.zeros((K.height, K.width), bool) if mask is None else mask,
    )


def blank_frame():
    return Frame(rgb=np.zeros((K.height, K.width, 3), np.uint8), intrinsics=K)


# the box of the issue: 5 x 8 x 15 cm standing on the table (15 cm tall, along -z)
BOX_LO, BOX_HI = np.array([-0.025, -0.04, TABLE_Z - 0.15]), np.array([0.025, 0.04, TABLE_Z])


def in_box(points, lo, hi, tol=0.0):
    return np.all((points >= lo - tol) & (points <= hi + tol), axis=-1)


def gripper_points(grasp, opening, step=0.002):
    """Dense points filling the finger and palm boxes of a grasp, camera frame."""
    r = conv.quat_to_matrix(grasp.orientation)
    out = []
    for lo, hi in GRIPPER.boxes(opening):
        axes = [np.arange(lo[i], hi[i] + 1e-9, step) for i in range(3)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        out.append(grid @ r.T + grasp.position)
    return np.concatenate(out)


def check_contract(grasp):
    q = np.asarray(grasp.orientation)
    assert q.shape == (4,) and np.linalg.norm(q) == pytest.approx(1.0, abs=1e-9)
    r = conv.quat_to_matrix(q)
    x, y, z = r[:, 0], r[:, 1], r[:, 2]
    np.testing.assert_allclose(np.cross(y, z), x, atol=1e-9)  # right-handed, x = y × z
    assert 0.0 <= grasp.score <= 1.0
    assert 0.0 < grasp.width <= GRIPPER.max_opening
    contacts = np.asarray(grasp.contacts)
    np.testing.assert_allclose(contacts.mean(0), grasp.position, atol=1e-9)  # origin between
    np.testing.assert_allclose(np.linalg.norm(contacts[1] - contacts[0]), grasp.width, atol=1e-9)
    np.testing.assert_allclose(np.abs((contacts[1] - contacts[0]) @ y), grasp.width, atol=1e-9)
    return x, y, z


# ---------------------------------------------------------------- conventions


def test_gripper_defaults_are_a_franka_hand():
    g = GripperModel()
    assert g.max_opening == 0.08 and g.tcp_offset == pytest.approx(0.1034)
    boxes = g.boxes(0.05)
    assert boxes[0, 0, 1] == pytest.approx(0.025) and boxes[1, 1, 1] == pytest.approx(-0.025)
    assert boxes[0, 1, 2] == pytest.approx(g.contact_depth)  # fingertips beyond the contacts


# ---------------------------------------------------------------- planner on known shapes


def test_registry_and_protocol():
    planner = make_grasp_planner("analytic", top_k=3)
    assert isinstance(planner, GraspPlanner) and planner.top_k == 3


def test_box_grasps_contract():
    v, f = box_mesh(BOX_LO, BOX_HI)
    planner = AnalyticGraspPlanner()
    grasps = planner.plan(blank_frame(), [make_object(1, v, f)], seed=0, support_plane=PLANE)[0]
    assert 3 <= len(grasps) <= planner.top_k
    scores = [g.score for g in grasps]
    assert scores == sorted(scores, reverse=True)
    fits = [e for e in BOX_HI - BOX_LO if e <= GRIPPER.max_opening]  # only the 5 cm side
    for g in grasps:
        x, y, z = check_contract(g)
        assert min(abs(g.width - e) for e in fits) < 0.002
        # closing axis perpendicular to the contacted faces (the x = ±2.5 cm faces)
        assert abs(y[0]) > 0.999
        np.testing.assert_allclose(np.abs(g.contacts[:, 0]), 0.025, atol=0.002)
        assert np.all(in_box(g.contacts, BOX_LO, BOX_HI, tol=0.002))
        # approach into the object: never from below the table, and the pre-grasp is outside
        assert z @ PLANE.normal <= 1e-9
        pre = g.position - 0.1 * z
        assert not in_box(pre, BOX_LO, BOX_HI)
        # no gripper box below the table, in the grasp pose and the pre-grasp pose
        for pts in (gripper_points(g, g.width), gripper_points(g, g.width) - 0.05 * z):
            assert (PLANE.signed_distance(pts) > 0).all()
        # the fingers do not cut through the box: only the contact faces touch
        inner = gripper_points(g, g.width + 0.002)
        assert not in_box(inner, BOX_LO + 0.001, BOX_HI - 0.001).any()
    # the best grasp comes from above (the preferred approach with a support plane)
    assert grasps[0].orientation is not None
    assert conv.grasp_axes(grasps[0].orientation)[2] @ -PLANE.normal > 0.9


def test_the_centre_of_mass_term_tells_a_centre_grasp_from_an_end_grasp_high_up():
    """Lifted by the pads, an object turns about the closing line under its weight: the lever
    is the centre of mass's offset across that line and across gravity; below the line it
    hangs. Scored by the distance from the line (before; still so without a support plane),
    two top grasps 10 cm over a tall box's centre of mass, one over it and one 4 cm to one
    side, both scored next to nothing, so the other terms chose, and in the simulation the
    best grasp sat at a long box's end and turned out of the fingers. A closing line turned
    vertical does not escape the term: there the horizontal offset counts."""
    lo = np.array([-0.025, -0.06, TABLE_Z - 0.25])
    hi = np.array([0.025, 0.06, TABLE_Z])
    v, f = box_mesh(lo, hi)
    planner = AnalyticGraspPlanner()
    obj = make_object(1, v, f)
    target = planner._target(obj, seed=0)
    com = target.centre_of_mass
    up = PLANE.normal
    # both close along x and approach from above (optical +z is down, towards the table)
    rot = np.repeat(np.stack([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], 1)[None],
                    2, axis=0)
    mid = np.stack([com + 0.10 * up, com + 0.10 * up + [0.0, 0.04, 0.0]])
    args = (blank_frame(), obj, target, rot, mid, np.full(2, 0.05), np.ones(2), np.ones(2))
    with_gravity = planner._score(*args, PLANE)[0]
    assert with_gravity[0] > with_gravity[1] + 0.1, with_gravity
    # the same two grasps closing vertically (along optical z): the 4 cm offset still counts
    vertical = np.repeat(np.stack([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], 1)[None],
                         2, axis=0)
    args = (blank_frame(), obj, target, vertical, mid, np.full(2, 0.05), np.ones(2), np.ones(2))
    closing_up = planner._score(*args, PLANE)[0]
    assert closing_up[0] > closing_up[1] + 0.1, closing_up


def test_cylinder_grasps_contract():
    radius = 0.03
    v, f = cylinder_mesh([0.01, -0.02], radius, TABLE_Z - 0.12, TABLE_Z)
    grasps = AnalyticGraspPlanner().plan(
        blank_frame(), [make_object(2, v, f)], seed=1, support_plane=PLANE)[0]
    assert len(grasps) >= 3
    for g in grasps:
        x, y, z = check_contract(g)
        assert 2 * radius * np.cos(np.pi / 64) - 0.002 <= g.width <= 2 * radius + 1e-6
        assert abs(y[2]) < 0.05  # closing across the axis, never along it (12 cm)
        # the closing line passes through the axis: contacts on opposite sides of it
        off = g.position[:2] - [0.01, -0.02]
        assert np.linalg.norm(off) < 0.003
        assert TABLE_Z - 0.12 - 1e-6 <= g.position[2] <= TABLE_Z - GRIPPER.contact_depth


def test_grasps_avoid_a_neighbour_and_the_table():
    v, f = box_mesh(BOX_LO, BOX_HI)
    # a 12 cm tall box 1.5 cm beside the +x face: closing along x only works above it
    n_lo = np.array([0.04, -0.025, TABLE_Z - 0.12])
    n_hi = np.array([0.09, 0.025, TABLE_Z])
    nv, nf = box_mesh(n_lo, n_hi)
    target, neighbour = make_object(1, v, f), make_object(2, nv, nf)
    planner = AnalyticGraspPlanner()
    alone = planner.plan(blank_frame(), [target], seed=0, support_plane=PLANE)[0]
    both = planner.plan(blank_frame(), [target, neighbour], seed=0, support_plane=PLANE)[0]
    assert both, "the box stays graspable from above the neighbour"

    def hits_neighbour(g):
        opening = min(g.width + 2 * planner.opening_margin, GRIPPER.max_opening)
        r = conv.quat_to_matrix(g.orientation)
        for pts in (gripper_points(g, g.width), gripper_points(g, opening),
                    gripper_points(g, opening) - planner.approach_distance * r[:, 2]):
            if in_box(pts, n_lo, n_hi).any():
                return True
        return False

    # the check is discriminating: planning without the neighbour gives colliding grasps
    assert any(hits_neighbour(g) for g in alone)
    for g in both:
        check_contract(g)
        assert not hits_neighbour(g)
        assert (PLANE.signed_distance(gripper_points(g, g.width)) > 0).all()


def test_observed_scene_points_are_obstacles():
    """The same neighbour, known only as measured points (no mesh), also blocks grasps."""
    v, f = box_mesh(BOX_LO, BOX_HI)
    n_lo = np.array([0.04, -0.025, TABLE_Z - 0.12])
    n_hi = np.array([0.09, 0.025, TABLE_Z])
    frame, mask = render_pointmap([(BOX_LO, BOX_HI), (n_lo, n_hi)])
    target = make_object(1, v, f, mask=mask[0])
    grasps = AnalyticGraspPlanner().plan(frame, [target], seed=0, support_plane=PLANE)[0]
    assert grasps
    for g in grasps:
        pts = gripper_points(g, g.width)
        assert not in_box(pts, n_lo + [0.0, 0.0, 0.002], n_hi).any()


def test_determinism():
    v, f = box_mesh(BOX_LO, BOX_HI)
    cv_, cf = cylinder_mesh([0.12, 0.0], 0.025, TABLE_Z - 0.1, TABLE_Z)
    objs = [make_object(1, v, f), make_object(2, cv_, cf)]
    a = AnalyticGraspPlanner().plan(blank_frame(), objs, seed=7, support_plane=PLANE)
    b = AnalyticGraspPlanner().plan(blank_frame(), objs, seed=7, support_plane=PLANE)
    assert [[g.to_dict() for g in gs] for gs in a] == [[g.to_dict() for g in gs] for gs in b]
    assert all(len(gs) for gs in a)


def test_more_rounds_of_samples_find_a_small_graspable_part():
    """A 12 cm cube (wider than the gripper's 8 cm every way) with a thin fin on one side: only
    grasps that hold the fin, ~3 % of the surface, fit. One round of 16 first contacts finds fewer
    grasps than rounds that go on until ``top_k`` grasps pass; all of them are on the fin."""
    cube_lo, cube_hi = np.array([-0.06, -0.06, TABLE_Z - 0.12]), np.array([0.06, 0.06, TABLE_Z])
    fin_lo, fin_hi = np.array([0.059, -0.0025, TABLE_Z - 0.10]), np.array([0.10, 0.0025, TABLE_Z])
    cv_, cf = box_mesh(cube_lo, cube_hi)
    fv, ff = box_mesh(fin_lo, fin_hi)
    v, f = np.concatenate([cv_, fv]), np.concatenate([cf, ff + len(cv_)])
    obj = make_object(1, v, f)

    def plan(max_samples):
        planner = AnalyticGraspPlanner(num_samples=16, max_samples=max_samples)
        return planner.plan(blank_frame(), [obj], seed=3, support_plane=PLANE)[0]

    one_round, rounds = plan(16), plan(1024)
    assert len(rounds) > len(one_round)
    assert len(rounds) >= 3
    for g in rounds:
        check_contract(g)
        # the cube alone does not fit the gripper: every grasp holds the fin
        assert np.any(in_box(g.contacts, fin_lo, fin_hi, tol=0.002))


def test_more_rounds_leave_an_easy_objects_grasps_as_they_were():
    """A box yields ``top_k`` grasps in the first round: allowing more rounds changes nothing
    (the first round draws the same samples as a planner of one round)."""
    v, f = box_mesh(BOX_LO, BOX_HI)
    objs = [make_object(1, v, f)]
    one = AnalyticGraspPlanner(top_k=3, max_samples=64).plan(
        blank_frame(), objs, seed=0, support_plane=PLANE)[0]
    more = AnalyticGraspPlanner(top_k=3, max_samples=1024).plan(
        blank_frame(), objs, seed=0, support_plane=PLANE)[0]
    assert len(one) == 3
    assert [g.to_dict() for g in one] == [g.to_dict() for g in more]


@pytest.mark.parametrize("radius, subdivisions", [(0.03, 3), (0.04, 4)])
def test_the_ray_broad_phase_misses_no_face(radius, subdivisions):
    """The contacts of lines cast through a mesh of small and large faces (a sphere with one
    long sliver) are those of testing every face against every line; the larger sphere spreads
    its 5k faces over dozens of face clusters."""
    import trimesh

    from sam3d_ros.backends.grasp.analytic import _ray_triangles

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    v = np.concatenate([sphere.vertices, [[0.0, -0.04, 0.0], [0.0, 0.04, 0.0], [0.0, 0.0, 0.001]]])
    f = np.concatenate([sphere.faces, [[len(sphere.vertices) + i for i in range(3)]]])
    v = v + [0.0, 0.0, TABLE_Z - 0.05]
    planner = AnalyticGraspPlanner()
    target = planner._target(make_object(1, v, f), seed=0)
    assert len(target.clusters.centres) > (40 if subdivisions > 3 else 10)
    rng = np.random.default_rng(0)
    p, n = planner._surface_samples(target, 300, rng)
    c1, c2, _, _ = planner._antipodal(target, p, n)
    # every face against every line
    reach = planner.gripper.max_opening + 0.01
    origin, direction = p + reach * n, -n
    tri = target.vertices[target.faces]
    ray = np.repeat(np.arange(len(p)), len(tri))
    t, ok = _ray_triangles(origin[ray], direction[ray], np.tile(tri, (len(p), 1, 1)))
    t = np.where(ok & (t >= 0) & (t <= 2 * reach), t, np.nan).reshape(len(p), len(tri))
    two = np.sum(np.isfinite(t), axis=1) >= 2
    near, far = np.nanmin(t[two], axis=1), np.nanmax(t[two], axis=1)
    expected1 = origin[two] + near[:, None] * direction[two]
    expected2 = origin[two] + far[:, None] * direction[two]
    assert len(c1) == two.sum() > 250
    np.testing.assert_allclose(c1, expected1, atol=1e-9)
    np.testing.assert_allclose(c2, expected2, atol=1e-9)


def test_bad_planner_options_are_refused():
    with pytest.raises(ValueError, match="num_samples"):
        AnalyticGraspPlanner(num_samples=0)
    with pytest.raises(ValueError, match="top_k"):
        AnalyticGraspPlanner(top_k=0)


def test_degenerate_meshes_give_no_grasps():
    v = np.zeros((3, 3))
    f = np.array([[0, 1, 2]])
    assert AnalyticGraspPlanner().plan(blank_frame(), [make_object(1, v, f)], 0, PLANE) == [[]]
    big_v, big_f = box_mesh([-0.1, -0.1, 0.4], [0.1, 0.1, 0.6])  # 20 cm cube: too wide
    assert AnalyticGraspPlanner().plan(blank_frame(), [make_object(1, big_v, big_f)], 0,
                                       PLANE) == [[]]


# ---------------------------------------------------------------- engine + metadata.json


def render_pointmap(boxes):
    """Pointmap of axis-aligned boxes on the table seen from straight above (top faces only)."""
    u, v = np.meshgrid(np.arange(K.width), np.arange(K.height))
    dx, dy = (u - K.cx) / K.fx, (v - K.cy) / K.fy
    depth = np.full((K.height, K.width), TABLE_Z)
    masks = []
    for lo, hi in boxes:
        z = lo[2]
        hit = (dx * z >= lo[0]) & (dx * z <= hi[0]) & (dy * z >= lo[1]) & (dy * z <= hi[1])
        hit &= z < depth
        depth[hit] = z
        masks.append(hit)
    for i in range(len(masks)):  # visible = nearest surface
        masks[i] = masks[i] & (depth == boxes[i][0][2])
    points = np.stack([dx * depth, dy * depth, depth], -1).astype(np.float32)
    frame = Frame(rgb=np.full((K.height, K.width, 3), 90, np.uint8), points=points,
                  intrinsics=K)
    return frame, masks


class BoxSegmenter:
    name = "boxes"
    reads_text = False

    def __init__(self, masks):
        self.masks = masks

    def segment(self, frame, query):
        return [ObjectMask(i + 1, m) for i, m in enumerate(self.masks)]


class BoxReconstructor:
    name = "boxes"

    def __init__(self, boxes):
        self.boxes = boxes

    def reconstruct(self, frame, masks, seed):
        return [make_object(m.object_id, *box_mesh(lo, hi), mask=m.mask)
                for m, (lo, hi) in zip(masks, self.boxes, strict=True)]


def test_engine_and_metadata_carry_the_grasp_contract(tmp_path):
    boxes = [(BOX_LO + [-0.06, 0, 0], BOX_HI + [-0.06, 0, 0]),
             (np.array([0.04, -0.03, TABLE_Z - 0.06]), np.array([0.1, 0.0, TABLE_Z]))]
    frame, masks = render_pointmap(boxes)
    np.save(tmp_path / "points.npy", frame.points)
    Image.fromarray(frame.rgb).save(tmp_path / "rgb.png")
    request = {"image_url": str(tmp_path / "rgb.png"),
               "pointmap_url": str(tmp_path / "points.npy"),
               "intrinsics": {"fx": K.fx, "fy": K.fy, "cx": K.cx, "cy": K.cy}}
    engine = Engine(BoxSegmenter(masks), BoxReconstructor(boxes))
    out = tmp_path / "run"
    res = engine.run(request, out)
    assert list(res.timings) == ["load", "segment", "reconstruct", "grasp", "export"]
    assert res.grasps is not None and len(res.grasps) == 2 and all(res.grasps)
    doc = json.loads((out / "metadata.json").read_text())
    result = json.loads((out / "result.json").read_text())
    for obj, planned, meta in zip(doc["objects"], res.grasps, result["metadata"], strict=True):
        entries = obj["grasps"]
        assert entries == meta["grasps"]  # the printed hosted result carries the same list
        assert len(entries) == len(planned)
        assert [e["score"] for e in entries] == sorted((e["score"] for e in entries),
                                                       reverse=True)
        for e, g in zip(entries, planned, strict=True):
            assert {"position", "orientation", "width", "score"} <= set(e)
            assert len(e["position"]) == 3 and len(e["orientation"]) == 4
            np.testing.assert_allclose(e["position"], g.position)
            np.testing.assert_allclose(e["orientation"], g.orientation)
            assert e["width"] == pytest.approx(g.width) and 0 <= e["score"] <= 1
            assert isinstance(e["contacts_observed"], list) and len(e["contacts"]) == 2
    # the top faces are measured: grasps closing across them from above use observed contacts
    assert any(any(e["contacts_observed"]) for o in doc["objects"] for e in o["grasps"])
    # disabling the planner: no grasp stage, no grasps key
    res2 = Engine(BoxSegmenter(masks), BoxReconstructor(boxes), grasp_planner=None).run(
        request, tmp_path / "run2")
    assert "grasp" not in res2.timings and res2.grasps is None
    doc2 = json.loads((tmp_path / "run2" / "metadata.json").read_text())
    assert all("grasps" not in o for o in doc2["objects"])
