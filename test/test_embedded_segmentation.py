"""Tests of the embedded (CPU, depth-based) segmentation backend and the support-plane fit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sam3d_bench.sensor import SensorNoise, apply_depth_noise
from sam3d_ros.backends import make_segmenter
from sam3d_ros.backends.embedded.segmentation import EmbeddedSegmenter
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.support_plane import fit_support_plane
from sam3d_ros.core.types import BoxPrompt, Frame, ObjectPrompt, PointPrompt, SegmentationQuery

# ----------------------------------------------------------------------------------------------
# A small ray-cast tabletop: world z up, table = plane z = 0, axis-aligned boxes and upright
# cylinders standing on it, seen by a pinhole camera looking down at 45 degrees.
# ----------------------------------------------------------------------------------------------

W, H = 640, 480
FX = FY = 525.0
CX, CY = (W - 1) / 2.0, (H - 1) / 2.0
TABLE_RGB = (150, 110, 75)

# (kind, centre x, centre y, size params, colour); boxes: (sx, sy, sz), cylinders: (r, h),
# open cups: (outer radius, height, wall thickness, floor thickness).
DEFAULT_OBJECTS = (
    ("box", -0.15, 0.02, (0.07, 0.05, 0.09), (30, 90, 200)),
    ("cyl", 0.0, 0.05, (0.035, 0.12), (200, 40, 40)),
    ("box", 0.14, -0.02, (0.06, 0.08, 0.05), (40, 170, 60)),
)


def _camera(eye=(0.0, -0.5, 0.5), target=(0.0, 0.02, 0.0)):
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return eye, np.stack([right, down, forward], axis=1)  # columns: optical axes in world


def _cylinder_roots(eye, d, x, y, r):
    """Ray parameters where the rays meet an upright infinite cylinder (NaN where they miss)."""
    ox, oy = eye[0] - x, eye[1] - y
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = 2 * (ox * d[..., 0] + oy * d[..., 1])
    c = ox * ox + oy * oy - r * r
    root = np.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


def _cup_hit(eye, d, x, y, r_out, h, wall, floor):
    """Ray parameter and shade of an open cup (a bowl's or mug's stand-in): outer wall, rim,
    inner wall and a floor ``floor`` metres thick (inf where the rays miss it)."""
    t_out, _ = _cylinder_roots(eye, d, x, y, r_out)
    z_out = eye[2] + t_out * d[..., 2]
    side = (t_out > 0) & (z_out >= 0) & (z_out <= h)
    t_top = (h - eye[2]) / d[..., 2]
    rho = np.hypot(eye[0] + t_top * d[..., 0] - x, eye[1] + t_top * d[..., 1] - y)
    rim = ~side & (t_top > 0) & (rho <= r_out) & (rho >= r_out - wall)
    opening = ~side & (t_top > 0) & (rho < r_out - wall)
    _, t_in = _cylinder_roots(eye, d, x, y, r_out - wall)
    z_in = eye[2] + t_in * d[..., 2]
    t_floor = (floor - eye[2]) / d[..., 2]
    inner = opening & (z_in >= floor)
    bottom = opening & (z_in < floor)
    t = np.full(side.shape, np.inf)
    t[side], t[rim], t[inner], t[bottom] = t_out[side], t_top[rim], t_in[inner], t_floor[bottom]
    hx = eye[0] + t_out * d[..., 0] - x
    shade = np.where(side, 0.6 + 0.3 * np.clip(-hx / r_out, -1, 1), 0.85)
    shade = np.where(rim, 1.0, np.where(bottom, 0.75, shade))
    return t, shade


def render_scene(objects=DEFAULT_OBJECTS, noise=True, seed=0, eye=(0.0, -0.5, 0.5)):
    """Return (frame, gt_masks, boxes) for a ray-cast tabletop."""
    eye, rot = _camera(eye)
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays_cam = np.stack([(u - CX) / FX, (v - CY) / FY, np.ones_like(u)], axis=-1)
    d = rays_cam @ rot.T  # world directions (not unit: t is the optical depth)
    best_t = np.full((H, W), np.inf)
    ids = np.zeros((H, W), dtype=np.int32)
    shade = np.ones((H, W))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_table = -eye[2] / d[..., 2]
    hit = t_table > 0
    best_t[hit] = t_table[hit]
    for k, (kind, x, y, size, _) in enumerate(objects, start=1):
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "box":
                half = np.asarray(size) / 2.0
                lo = np.array([x, y, 0.0]) - [half[0], half[1], 0.0]
                hi = np.array([x, y, size[2]]) + [half[0], half[1], 0.0]
                t1 = (lo - eye) / d
                t2 = (hi - eye) / d
                tmin = np.minimum(t1, t2)
                t_near = tmin.max(axis=-1)
                t_far = np.maximum(t1, t2).min(axis=-1)
                ok = (t_near <= t_far) & (t_near > 0)
                face = tmin.argmax(axis=-1)
                s = np.choose(face, [0.8, 0.65, 1.0])
                t = np.where(ok, t_near, np.inf)
            elif kind == "cup":
                t, s = _cup_hit(eye, d, x, y, *size)
            else:
                r, h = size
                ox, oy = eye[0] - x, eye[1] - y
                a = d[..., 0] ** 2 + d[..., 1] ** 2
                b = 2 * (ox * d[..., 0] + oy * d[..., 1])
                c = ox * ox + oy * oy - r * r
                disc = b * b - 4 * a * c
                t_side = (-b - np.sqrt(disc)) / (2 * a)
                zs = eye[2] + t_side * d[..., 2]
                side_ok = (disc >= 0) & (t_side > 0) & (zs >= 0) & (zs <= h)
                t_cap = (h - eye[2]) / d[..., 2]
                px = eye[0] + t_cap * d[..., 0] - x
                py = eye[1] + t_cap * d[..., 1] - y
                cap_ok = (t_cap > 0) & (px * px + py * py <= r * r)
                t = np.where(side_ok, t_side, np.inf)
                t = np.where(cap_ok & (t_cap < t), t_cap, t)
                hx = eye[0] + t * d[..., 0] - x
                s = np.where(cap_ok & (t == t_cap), 1.0, 0.6 + 0.3 * np.clip(-hx / r, -1, 1))
        closer = t < best_t
        best_t[closer] = t[closer]
        ids[closer] = k
        shade[closer] = s[closer]
    rng = np.random.default_rng(seed)
    rgb = np.empty((H, W, 3), dtype=np.float64)
    rgb[:] = TABLE_RGB
    for k, obj in enumerate(objects, start=1):
        rgb[ids == k] = obj[4]
    rgb *= shade[..., None]
    rgb += rng.normal(0.0, 4.0, rgb.shape)
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    depth = np.where(np.isfinite(best_t), best_t, np.nan)
    if isinstance(noise, SensorNoise):  # a given sensor model, with its colour-driven dropouts
        depth = apply_depth_noise(depth, noise, seed=seed, rgb=rgb, fx=FX)
    else:
        depth = apply_depth_noise(depth, SensorNoise() if noise else None, seed=seed)
    points = (rays_cam * depth[..., None]).astype(np.float32)
    masks = [ids == k for k in range(1, len(objects) + 1)]
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))
    return Frame(rgb=rgb, points=points), masks, boxes


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, int((a | b).sum()))


def centre_pixel(mask: np.ndarray):
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(int(np.argmax(dist)), mask.shape)
    return int(x), int(y)


@pytest.fixture(scope="module")
def scene():
    return render_scene()


@pytest.fixture(scope="module")
def seg():
    return EmbeddedSegmenter()


def box_prompt(box, oid, pad=0, label=1):
    x0, y0, x1, y1 = box
    return BoxPrompt(x0 - pad, y0 - pad, x1 + pad, y1 + pad, object_id=oid, label=label)


# ----------------------------------------------------------------------------------------------
# support plane
# ----------------------------------------------------------------------------------------------


def test_plane_fit_recovers_table_and_orients_toward_camera(scene):
    frame, masks, _ = scene
    plane = fit_support_plane(frame.points, rng=3)
    eye, rot = _camera()
    # Table z = 0 in the world → in the camera frame: normal = R^T (0,0,1), offset = eye_z.
    n_true = rot.T @ np.array([0.0, 0.0, 1.0])
    assert np.dot(plane.normal, n_true) > 0.9995
    assert plane.offset == pytest.approx(eye[2], abs=0.003)
    assert plane.offset > 0  # the camera is on the positive side
    table = ~np.any(masks, axis=0) & np.isfinite(frame.points[..., 2])
    assert plane.inliers.shape == (H, W)
    assert plane.inliers[table].mean() > 0.95
    assert not plane.inliers[masks[1]].any() or plane.inliers[masks[1]].mean() < 0.1
    again = fit_support_plane(frame.points, rng=3)
    np.testing.assert_array_equal(plane.normal, again.normal)
    np.testing.assert_array_equal(plane.inliers, again.inliers)
    # N×3 input and the signed distance
    flat = fit_support_plane(frame.points.reshape(-1, 3), rng=3)
    assert flat.inliers.shape == (H * W,)
    assert plane.signed_distance(np.zeros(3)) == pytest.approx(plane.offset)


def test_plane_fit_too_few_points_returns_none():
    pts = np.full((10, 10, 3), np.nan, dtype=np.float32)
    pts[0, :4] = [[0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]]
    assert fit_support_plane(pts) is None


# ----------------------------------------------------------------------------------------------
# box prompts
# ----------------------------------------------------------------------------------------------


def test_registry_builds_embedded_segmenter():
    s = make_segmenter("embedded")
    assert s.name == "embedded" and s.reads_text is False


def test_box_prompts_match_ground_truth(scene, seg):
    frame, masks, boxes = scene
    query = SegmentationQuery(
        objects=[ObjectPrompt(i, boxes=[box_prompt(b, i, pad=4)]) for i, b in enumerate(boxes)]
    )
    result = seg.segment(frame, query)
    assert [r.object_id for r in result] == [0, 1, 2]
    for r, gt in zip(result, masks, strict=True):
        assert r.mask.shape == (H, W) and r.mask.dtype == bool
        assert iou(r.mask, gt) >= 0.9, iou(r.mask, gt)
        assert r.label == "" and 0.5 < r.score <= 1.0


def test_box_fills_depth_dropouts_inside_the_object(seg):
    frame, masks, boxes = render_scene()
    hole = np.zeros_like(masks[0])
    x, y = centre_pixel(masks[0])
    hole[y - 6 : y + 6, x - 6 : x + 6] = True
    assert (hole & ~masks[0]).sum() == 0
    pts = frame.points.copy()
    pts[hole] = np.nan
    frame = Frame(rgb=frame.rgb, points=pts)
    (r,) = seg.segment(
        frame, SegmentationQuery(objects=[ObjectPrompt(0, boxes=[box_prompt(boxes[0], 0)])])
    )
    assert r.mask[hole].all()
    assert iou(r.mask, masks[0]) >= 0.9


def test_two_boxes_with_one_id_refine_one_object(scene, seg):
    frame, masks, boxes = scene
    x0, y0, x1, y1 = boxes[1]
    loose = BoxPrompt(x0 - 15, y0 - 15, x1 + 15, y1 + 15, object_id=7)
    top_half = BoxPrompt(x0, y0, x1, (y0 + y1) // 2, object_id=7)
    result = seg.segment(
        frame, SegmentationQuery(objects=[ObjectPrompt(7, boxes=[loose, top_half])])
    )
    assert len(result) == 1 and result[0].object_id == 7
    assert iou(result[0].mask, masks[1]) >= 0.9


def test_negative_box_excludes_its_pixels(scene, seg):
    frame, masks, boxes = scene
    x0, y0, x1, y1 = boxes[0]
    ymid = (y0 + y1) // 2
    result = seg.segment(
        frame,
        SegmentationQuery(
            objects=[
                ObjectPrompt(
                    0,
                    boxes=[
                        box_prompt(boxes[0], 0),
                        BoxPrompt(x0 - 5, ymid, x1 + 5, y1 + 5, object_id=0, label=0),
                    ],
                )
            ]
        ),
    )
    m = result[0].mask
    assert not m[ymid:].any()
    assert iou(m, masks[0] & (np.arange(H)[:, None] < ymid)) >= 0.85


def test_box_around_two_objects_with_fg_and_bg_points(seg):
    # Two cylinders close together: a box around both, fg on the left, bg on the right.
    objects = (
        ("cyl", -0.03, 0.03, (0.03, 0.10), (200, 40, 40)),
        ("cyl", 0.045, 0.03, (0.03, 0.08), (40, 60, 200)),
    )
    frame, masks, boxes = render_scene(objects)
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[2] for b in boxes)
    y1 = max(b[3] for b in boxes)
    fx, fy = centre_pixel(masks[0])
    bx, by = centre_pixel(masks[1])
    prompt = ObjectPrompt(
        0,
        points=[PointPrompt(fx, fy, 1, 0), PointPrompt(bx, by, 0, 0)],
        boxes=[BoxPrompt(x0, y0, x1, y1, object_id=0)],
    )
    (r,) = seg.segment(frame, SegmentationQuery(objects=[prompt]))
    assert iou(r.mask, masks[0]) >= 0.9
    assert r.mask[masks[1]].mean() < 0.02
    # The opposite clicks pick the other cylinder.
    prompt = ObjectPrompt(
        0,
        points=[PointPrompt(bx, by, 1, 0), PointPrompt(fx, fy, 0, 0)],
        boxes=[BoxPrompt(x0, y0, x1, y1, object_id=0)],
    )
    (r,) = seg.segment(frame, SegmentationQuery(objects=[prompt]))
    assert iou(r.mask, masks[1]) >= 0.9


# ----------------------------------------------------------------------------------------------
# point prompts
# ----------------------------------------------------------------------------------------------


def test_single_foreground_point_grows_the_object(scene, seg):
    frame, masks, _ = scene
    objects = []
    for i, m in enumerate(masks):
        x, y = centre_pixel(m)
        objects.append(ObjectPrompt(i, points=[PointPrompt(x, y, 1, i)]))
    result = seg.segment(frame, SegmentationQuery(objects=objects))
    for r, gt in zip(result, masks, strict=True):
        assert iou(r.mask, gt) >= 0.9, iou(r.mask, gt)
        assert r.score == pytest.approx(1.0)


def test_background_point_splits_touching_objects(seg):
    # Two boxes touching side by side at the same depth: one depth region, split by the clicks.
    objects = (
        ("box", -0.04, 0.03, (0.08, 0.06, 0.08), (200, 40, 40)),
        ("box", 0.04, 0.03, (0.08, 0.06, 0.08), (210, 50, 45)),
    )
    frame, masks, _ = render_scene(objects)
    fx, fy = centre_pixel(masks[0])
    bx, by = centre_pixel(masks[1])
    prompt = ObjectPrompt(3, points=[PointPrompt(fx, fy, 1, 3), PointPrompt(bx, by, 0, 3)])
    (r,) = seg.segment(frame, SegmentationQuery(objects=[prompt]))
    assert r.object_id == 3
    assert r.mask[fy, fx] and not r.mask[by, bx]
    assert iou(r.mask, masks[0]) >= 0.9
    assert r.mask[masks[1]].mean() < 0.05
    # Without the background click the clicked box is whole (its twin, of almost the same
    # colour and depth, may come along: nothing in the image separates them).
    (alone,) = seg.segment(
        frame, SegmentationQuery(objects=[ObjectPrompt(3, points=[PointPrompt(fx, fy, 1, 3)])])
    )
    assert alone.mask[masks[0]].mean() >= 0.95


def test_a_click_on_the_table_is_refused_naming_the_click(scene, seg):
    # The support is no object to reconstruct or grasp (its region grown by colour took in
    # the objects of a wooden table's colour standing on it: 1.4 m of "table" on ucn_0). That
    # object's prompt is refused, naming the field and the click; the others are segmented.
    frame, masks, _ = scene
    table = ~np.any(masks, axis=0) & np.isfinite(frame.points[..., 2])
    ys, xs = np.nonzero(ndimage.binary_erosion(table, iterations=20))
    x, y = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
    bx, by = centre_pixel(masks[0])
    refused, ok = seg.segment(frame, SegmentationQuery(objects=[
        ObjectPrompt(4, points=[PointPrompt(x, y, 1, 4)]),
        ObjectPrompt(0, points=[PointPrompt(bx, by, 1, 0)])]))
    field, reason = refused.refused
    assert field == "point_prompts" and not refused.mask.any()
    assert "object 4" in reason and f"({x}, {y})" in reason and "support" in reason
    assert ok.refused is None and iou(ok.mask, masks[0]) >= 0.9


def test_a_click_on_the_table_seen_close_is_refused_too(seg):
    # A wrist camera 25 cm over the table sees less of it than the largest graspable object
    # (0.35 m): it is still the support (the frame's main patch of it), not an object.
    frame, masks, _ = render_scene((DEFAULT_OBJECTS[1],), eye=(0.0, -0.05, 0.25))
    table = ~np.any(masks, axis=0) & np.isfinite(frame.points[..., 2])
    ys, xs = np.nonzero(ndimage.binary_erosion(table, iterations=20))
    x, y = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
    (r,) = seg.segment(frame, SegmentationQuery(
        objects=[ObjectPrompt(1, points=[PointPrompt(x, y, 1, 1)])]))
    assert r.refused is not None and f"({x}, {y})" in r.refused[1]
    assert not r.mask.any()


def test_a_click_on_a_tiny_far_object_still_takes_it(seg):
    # A 1 cm cube 1.4 cm high, far back on the table: its depth region has fewer pixels than
    # the speck size a click would rather not snap to. With no larger region and no patch of
    # the support under the click, the click takes it.
    objects = (("box", 0.0, 0.5, (0.01, 0.01, 0.014), (200, 40, 40)),) + DEFAULT_OBJECTS[:1]
    frame, masks, _ = render_scene(objects, seed=1)
    x, y = centre_pixel(masks[0])
    (r,) = seg.segment(frame, SegmentationQuery(
        objects=[ObjectPrompt(1, points=[PointPrompt(x, y, 1, 1)])]))
    assert r.refused is None and iou(r.mask, masks[0]) >= 0.7, iou(r.mask, masks[0])


def test_a_click_on_a_small_flat_patch_takes_the_object_around_it(seg):
    # A tray seen from above: its floor, 2 mm thick, lies inside the support band, like the
    # inside bottom of a cup or a bowl. Walls cut that patch off the table; it is the size of
    # an object, so a click on it is no click on the table: the floor is taken (the walls, of
    # another colour, are left to their own click), not refused.
    green = (40, 170, 60)
    x0, y0, lx, ly, t, wall = 0.0, 0.03, 0.20, 0.18, 0.006, 0.03
    objects = (
        ("box", x0, y0, (lx, ly, 0.002), (230, 230, 225)),
        ("box", x0, y0 - ly / 2, (lx, t, wall), green),
        ("box", x0, y0 + ly / 2, (lx, t, wall), green),
        ("box", x0 - lx / 2, y0, (t, ly, wall), green),
        ("box", x0 + lx / 2, y0, (t, ly, wall), green),
    )
    frame, masks, _ = render_scene(objects)
    x, y = centre_pixel(masks[0])
    (r,) = seg.segment(frame, SegmentationQuery(
        objects=[ObjectPrompt(1, points=[PointPrompt(x, y, 1, 1)])]))
    assert r.refused is None
    assert r.mask[masks[0]].mean() >= 0.9
    tray = np.any(masks, axis=0)
    assert r.mask[~tray].sum() <= 0.05 * r.mask.sum()  # not the table


@pytest.mark.parametrize("cup", [(0.045, 0.10, 0.004, 0.008), (0.08, 0.06, 0.004, 0.008)],
                         ids=["mug", "bowl"])
def test_a_click_on_an_open_containers_wall_or_inside_takes_all_of_it(seg, cup):
    # Seen from above, the inside and the front wall are two depth regions (the rim is an
    # occluding edge; depth steps by about the width across it), either of them the larger:
    # a click on the smaller took it alone. A thin rim returns no depth (dof6_0's mug: the
    # 4 px between its wall and its inside hold 1 % valid pixels); rendered, it would join
    # the two at the sides.
    r_out, height, wall, _ = cup
    frame, (mask,), _ = render_scene((("cup", 0.0, 0.03, cup, (225, 225, 220)),))
    eye, rot = _camera()
    world = frame.points.astype(np.float64) @ rot.T + eye
    radial = np.hypot(world[..., 0], world[..., 1] - 0.03)
    rim = mask & (world[..., 2] > height - 0.003) & (radial > r_out - wall - 0.002)
    frame.points[rim] = np.nan
    ys, xs = np.nonzero(mask)
    x = int(np.median(xs))
    column = ys[xs == x]
    # Up the middle column: the front wall, then the inside seen over the rim.
    clicks = [(x, int(column.max()) - 8), (x, int(column.min()) + 8)]
    # The same view from a camera rolled a half turn about its axis (a wrist camera mounted
    # upside down): the inside is now below the wall in the image.
    rolled = Frame(rgb=np.ascontiguousarray(frame.rgb[::-1, ::-1]),
                   points=np.ascontiguousarray(frame.points[::-1, ::-1]
                                               * np.float32([-1.0, -1.0, 1.0])))
    for view, truth, turn in ((frame, mask, lambda u, v: (u, v)),
                              (rolled, mask[::-1, ::-1], lambda u, v: (W - 1 - u, H - 1 - v))):
        for u, v in clicks:
            cx, cy = turn(u, v)
            (r,) = seg.segment(view, SegmentationQuery(
                objects=[ObjectPrompt(1, points=[PointPrompt(cx, cy, 1, 1)])]))
            assert iou(r.mask, truth) >= 0.9, ((cx, cy), iou(r.mask, truth))


@pytest.mark.parametrize("kind,gap", [("box", 0.04), ("box", 0.06), ("box", 0.10),
                                      ("cyl", 0.06), ("cyl", 0.10)])
def test_a_click_does_not_take_a_neighbour_of_the_same_height_behind_or_before(seg, kind, gap):
    # Two objects of one height, one behind the other: seen over the front one's top edge like
    # a container's inside over its wall, across a step of over 4 cm (the review found a
    # mustard bottle joined to the can-on-a-box stack before it on ucn_2/3). The front one
    # shows its top face, its top edge an object-depth behind its base; a container's wall
    # does not. A click on either takes it alone (box 4 cm and cylinders 6 cm apart are the
    # cases that reach the wall test; closer, the smaller one's region joins the other's as a
    # part, as before: a gap of 2 cm, or 4 cm between cylinders).
    front, depth = -0.02, 0.05 if kind == "box" else 0.066
    size = (0.08, 0.05, 0.08) if kind == "box" else (0.033, 0.12)
    objects = ((kind, 0.0, front, size, (200, 40, 40)),
               (kind, 0.0, front + depth + gap, size, (40, 60, 200)))
    frame, masks, _ = render_scene(objects)
    for i in (0, 1):
        x, y = centre_pixel(masks[i])
        (r,) = seg.segment(frame, SegmentationQuery(
            objects=[ObjectPrompt(1, points=[PointPrompt(x, y, 1, 1)])]))
        assert iou(r.mask, masks[i]) >= 0.9, (i, iou(r.mask, masks[i]))
        assert r.mask[masks[1 - i]].mean() < 0.05


def test_a_click_whose_region_is_wider_than_a_graspable_object_is_refused(seg):
    # A plank 0.5 m long (a shelf board, a robot's base plate) is no graspable object: the
    # click fails its object, naming the click and the size; a 0.25 m box is taken, and so
    # is a 0.25 m cube seen across its diagonal (0.32 m by its camera-frame bounds).
    for size, eye, refused in (((0.5, 0.08, 0.06), (0.0, -0.5, 0.5), True),
                               ((0.25, 0.08, 0.06), (0.0, -0.5, 0.5), False),
                               ((0.25, 0.25, 0.25), (0.45, -0.45, 0.5), False)):
        frame, (mask,), _ = render_scene((("box", 0.0, 0.05, size, (200, 40, 40)),), eye=eye)
        x, y = centre_pixel(mask)
        (r,) = seg.segment(frame, SegmentationQuery(
            objects=[ObjectPrompt(1, points=[PointPrompt(x, y, 1, 1)])]))
        if refused:
            field, reason = r.refused
            assert field == "point_prompts" and f"({x}, {y})" in reason
            assert "max_object_size" in reason and not r.mask.any()
        else:
            assert r.refused is None and iou(r.mask, mask) >= 0.9, (size, iou(r.mask, mask))


def test_one_click_on_touching_objects_of_different_colours_returns_one(seg):
    # Touching at the same depth, one depth region: the colour boundary splits them.
    objects = (
        ("box", -0.04, 0.03, (0.08, 0.06, 0.08), (200, 40, 40)),
        ("box", 0.04, 0.03, (0.08, 0.06, 0.08), (40, 160, 60)),
    )
    frame, masks, _ = render_scene(objects)
    for i in (0, 1):
        x, y = centre_pixel(masks[i])
        (r,) = seg.segment(
            frame, SegmentationQuery(objects=[ObjectPrompt(i, points=[PointPrompt(x, y, 1, i)])])
        )
        assert iou(r.mask, masks[i]) >= 0.9
        assert r.mask[masks[1 - i]].mean() < 0.05


def test_one_click_keeps_a_multi_coloured_object_whole(seg):
    """The lower half of a box is printed in the table's colour: colour alone would give the
    table that half, but it is one surface with the clicked part (no depth step). Depth as
    smooth as the RealSense's on dof6_* (noise-free render)."""
    (obj,) = (("box", 0.0, 0.03, (0.10, 0.06, 0.14), (200, 40, 40)),)
    frame, (mask,), _ = render_scene((obj,), noise=False)
    ys, _ = np.nonzero(mask)
    lower = mask & (np.arange(H)[:, None] > np.percentile(ys, 55))
    rgb = frame.rgb.copy()
    noise = np.random.default_rng(1).normal(0.0, 4.0, (int(lower.sum()), 3))
    rgb[lower] = np.clip(np.array(TABLE_RGB) * 0.95 + noise, 0, 255).astype(np.uint8)
    frame.rgb = rgb
    x, y = centre_pixel(mask & ~lower)
    (r,) = seg.segment(
        frame, SegmentationQuery(objects=[ObjectPrompt(0, points=[PointPrompt(x, y, 1, 0)])])
    )
    assert r.mask[lower].mean() > 0.9
    assert iou(r.mask, mask) >= 0.9, iou(r.mask, mask)


def test_a_hole_through_which_the_table_is_seen_stays_open(seg):
    """A box with a window through it (a mug's handle, a coiled cable): the table seen through
    the window is not the object, while pinholes are closed."""
    (obj,) = (("box", 0.0, 0.03, (0.12, 0.06, 0.12), (200, 40, 40)),)
    frame, (mask,), boxes = render_scene((obj,))
    table, _, _ = render_scene(())
    ys, xs = np.nonzero(mask)
    window = np.zeros_like(mask)
    window[int(np.percentile(ys, 35)):int(np.percentile(ys, 65)),
           int(np.percentile(xs, 35)):int(np.percentile(xs, 65))] = True
    window &= mask
    rgb, points = frame.rgb.copy(), frame.points.copy()
    rgb[window], points[window] = table.rgb[window], table.points[window]
    # A pinhole: a small spot without depth whose colour GrabCut gives to the table.
    pinhole = (int(np.percentile(ys, 20)), int(np.percentile(xs, 20)))
    spot = (slice(pinhole[0] - 2, pinhole[0] + 3), slice(pinhole[1] - 2, pinhole[1] + 3))
    points[spot] = np.nan
    rgb[spot] = TABLE_RGB
    query = SegmentationQuery(objects=[ObjectPrompt(0, boxes=[box_prompt(boxes[0], 0)])])
    (r,) = seg.segment(Frame(rgb=rgb, points=points), query)
    assert r.mask[window].mean() < 0.1
    assert r.mask[pinhole]
    assert iou(r.mask, mask & ~window) >= 0.9, iou(r.mask, mask & ~window)


def test_box_around_two_objects_returns_the_dominant_one(seg):
    # A tall box fills most of the prompt box; a small cube stands beside it, partly inside.
    objects = (
        ("box", -0.02, 0.03, (0.08, 0.06, 0.12), (40, 60, 200)),
        ("box", 0.07, 0.0, (0.04, 0.04, 0.04), (210, 180, 40)),
    )
    frame, masks, _ = render_scene(objects)
    ys, xs = np.nonzero(masks[0])
    ys2, xs2 = np.nonzero(masks[1])
    box = BoxPrompt(
        int(xs.min()) - 3, int(ys.min()) - 3, int(xs2.min() + 0.6 * np.ptp(xs2)),
        int(ys.max()) + 3, 5,
    )
    assert masks[1][box.y_min : box.y_max + 1, box.x_min : box.x_max + 1].sum() > 100
    (r,) = seg.segment(frame, SegmentationQuery(objects=[ObjectPrompt(5, boxes=[box])]))
    assert iou(r.mask, masks[0]) >= 0.9
    assert r.mask[masks[1]].mean() < 0.1


def test_a_box_around_a_can_behind_a_box_of_its_colour_takes_the_can(seg):
    """A red can stands behind a red box; its prompt box, drawn tight around what is seen of
    it, holds twice as many of the box's pixels (the box's top and front continue far beyond
    the prompt). The can is the object in the box: the box's pixels counted only in the crop
    outscored it (IoU 0)."""
    red = (190, 40, 35)
    objects = (("box", 0.03, 0.0, (0.16, 0.072, 0.15), red),
               ("cyl", -0.045, 0.11, (0.033, 0.10), red))
    frame, masks, boxes = render_scene(objects)
    x0, y0, x1, y1 = boxes[1]
    assert masks[0][y0:y1 + 1, x0:x1 + 1].sum() > 2 * masks[1].sum()
    (r,) = seg.segment(frame, SegmentationQuery(
        objects=[ObjectPrompt(1, boxes=[BoxPrompt(x0, y0, x1, y1, object_id=1)])]))
    assert iou(r.mask, masks[1]) >= 0.8
    assert r.mask[masks[0]].sum() < 0.05 * r.mask.sum()


def test_box_around_a_flat_dark_object_without_depth(seg):
    """A coiled cable or a cloth: about 1 cm proud of the table and dark. Depth finds a sliver
    (the far part has none, the middle reads at the table's height); the box and colour find
    the object."""
    objects = (("box", 0.0, 0.05, (0.14, 0.10, 0.01), (25, 25, 30)),)
    frame, masks, boxes = render_scene(objects)
    table, _, _ = render_scene(())
    pts = frame.points.copy()
    ys, _ = np.nonzero(masks[0])
    rows = np.arange(masks[0].shape[0])[:, None]
    far = masks[0] & (rows < ys.min() + 0.4 * np.ptp(ys))
    middle = masks[0] & ~far & (rows < ys.min() + 0.8 * np.ptp(ys))
    pts[far] = np.nan
    pts[middle] = table.points[middle]
    frame = Frame(rgb=frame.rgb, points=pts)
    (r,) = seg.segment(
        frame, SegmentationQuery(objects=[ObjectPrompt(0, boxes=[box_prompt(boxes[0], 0, 3)])]))
    assert iou(r.mask, masks[0]) >= 0.8, iou(r.mask, masks[0])


def test_a_loose_box_around_an_object_of_the_tables_colour_keeps_out_the_table(seg):
    """Depth finds the object but it covers little of a generous box: the table inside the box
    stays background (colour alone could not tell them apart)."""
    objects = (("cyl", 0.0, 0.05, (0.035, 0.12), (170, 120, 90)),)
    frame, masks, boxes = render_scene(objects)
    (r,) = seg.segment(
        frame, SegmentationQuery(objects=[ObjectPrompt(0, boxes=[box_prompt(boxes[0], 0, 60)])]))
    assert iou(r.mask, masks[0]) >= 0.9, iou(r.mask, masks[0])


def test_point_outside_image_and_background_only_are_input_errors(scene, seg):
    frame, _, _ = scene
    with pytest.raises(InputError) as err:
        seg.segment(frame, SegmentationQuery(objects=[ObjectPrompt(0, [PointPrompt(W, 5)])]))
    assert err.value.field == "point_prompts"
    with pytest.raises(InputError) as err:
        seg.segment(frame, SegmentationQuery(objects=[ObjectPrompt(0, [PointPrompt(5, 5, 0)])]))
    assert err.value.field == "point_prompts"
    with pytest.raises(InputError) as err:
        seg.segment(
            frame,
            SegmentationQuery(objects=[ObjectPrompt(0, boxes=[BoxPrompt(W + 5, 0, W + 9, 9)])]),
        )
    assert err.value.field == "box_prompts"


# ----------------------------------------------------------------------------------------------
# masks, text, no depth
# ----------------------------------------------------------------------------------------------


def test_masks_pass_through_without_depth(scene, seg):
    frame, masks, _ = scene
    no_depth = Frame(rgb=frame.rgb)
    given = [masks[0], masks[1].astype(np.uint8) * 255]
    result = seg.segment(no_depth, SegmentationQuery(masks=given, text="ignored"))
    assert [r.object_id for r in result] == [0, 1]
    np.testing.assert_array_equal(result[0].mask, masks[0])
    np.testing.assert_array_equal(result[1].mask, masks[1])
    assert result[1].mask.dtype == bool


def test_mask_validation_errors(scene, seg):
    frame, masks, _ = scene
    with pytest.raises(InputError) as err:
        seg.segment(frame, SegmentationQuery(masks=[masks[0], masks[1][:-1]]))
    assert err.value.field == "mask_urls[1]"
    with pytest.raises(InputError) as err:
        seg.segment(frame, SegmentationQuery(masks=[np.zeros((H, W), dtype=bool)]))
    assert err.value.field == "mask_urls[0]" and "empty" in err.value.reason
    with pytest.raises(InputError) as err:
        seg.segment(frame, SegmentationQuery(masks=[np.ones((H, W, 3), dtype=bool)]))
    assert err.value.field == "mask_urls[0]"


def test_text_prompt_is_refused_with_guidance(scene, seg):
    frame, _, _ = scene
    with pytest.raises(InputError) as err:
        seg.segment(frame, SegmentationQuery(text="mug"))
    assert err.value.field == "prompt"
    assert "sam3" in err.value.reason and "box_prompts" in err.value.reason


def test_no_depth_is_an_input_error(scene, seg):
    frame, _, boxes = scene
    no_depth = Frame(rgb=frame.rgb)
    for query in (
        SegmentationQuery(objects=[ObjectPrompt(0, boxes=[box_prompt(boxes[0], 0)])]),
        SegmentationQuery(),
    ):
        with pytest.raises(InputError) as err:
            seg.segment(no_depth, query)
        assert err.value.field == "pointmap_url"


# ----------------------------------------------------------------------------------------------
# automatic tabletop segmentation, determinism
# ----------------------------------------------------------------------------------------------


def test_automatic_segmentation_finds_the_objects_left_to_right(scene, seg):
    frame, masks, _ = scene
    result = seg.segment(frame, SegmentationQuery())
    assert len(result) == len(masks)
    assert [r.object_id for r in result] == list(range(len(masks)))
    # DEFAULT_OBJECTS are ordered left to right in the image.
    for r, gt in zip(result, masks, strict=True):
        assert iou(r.mask, gt) >= 0.85, iou(r.mask, gt)


def test_automatic_segmentation_of_an_empty_table(seg):
    frame, _, _ = render_scene(objects=())
    assert seg.segment(frame, SegmentationQuery()) == []


def test_deterministic(scene):
    frame, _, boxes = scene
    query = SegmentationQuery(
        objects=[ObjectPrompt(i, boxes=[box_prompt(b, i)]) for i, b in enumerate(boxes)]
    )
    a = EmbeddedSegmenter().segment(frame, query)
    b = EmbeddedSegmenter().segment(frame, query)
    auto_a = EmbeddedSegmenter().segment(frame, SegmentationQuery())
    auto_b = EmbeddedSegmenter().segment(frame, SegmentationQuery())
    for x, y in zip(a + auto_a, b + auto_b, strict=True):
        np.testing.assert_array_equal(x.mask, y.mask)
        assert x.score == y.score


# ----------------------------------------------------------------------------------------------
# pybullet tabletop with ground truth (the benchmark's generator)
# ----------------------------------------------------------------------------------------------


def test_box_prompts_on_pybullet_tabletop(seg):
    pytest.importorskip("pybullet")
    from sam3d_bench.scenes import make_tabletop_scene

    scene = make_tabletop_scene(1, n_objects=3)
    result = seg.segment(scene.frame, scene.box_query())
    ious = [iou(r.mask, o.visible_mask) for r, o in zip(result, scene.objects, strict=True)]
    assert len(result) == len(scene.objects)
    assert np.mean(ious) >= 0.9 and min(ious) >= 0.8, ious


def test_clicks_far_from_the_object_and_background_clicks_with_a_box(seg):
    frame, masks, _ = render_scene()
    # Two foreground clicks on two different objects (one object id): no crash, the first
    # object is in the mask.
    x0, y0 = centre_pixel(masks[0])
    x1, y1 = centre_pixel(masks[2])
    (r,) = seg.segment(frame, SegmentationQuery(objects=[ObjectPrompt(
        1, points=[PointPrompt(x0, y0, 1, 1), PointPrompt(x1, y1, 1, 1)])]))
    assert r.mask[masks[0]].mean() > 0.9
    # A box with a foreground click outside it.
    ys, xs = np.nonzero(masks[1])
    box = BoxPrompt(int(xs.min()) - 3, int(ys.min()) - 3, int(xs.max()) + 3, int(ys.max()) + 3, 2)
    (r,) = seg.segment(frame, SegmentationQuery(objects=[ObjectPrompt(
        2, boxes=[box], points=[PointPrompt(x0, y0, 1, 2)])]))
    assert r.mask[masks[1]].mean() > 0.9


def test_a_background_click_far_away_does_not_cut_what_depth_missed(seg):
    # The right third of an object has no depth (dark, shiny): a box prompt recovers it by
    # colour, and a background click far outside the box must not change that.
    frame, masks, _ = render_scene()
    ys, xs = np.nonzero(masks[0])
    dark = masks[0] & (np.arange(W)[None, :] > xs.min() + 2 * np.ptp(xs) / 3)
    pts = frame.points.copy()
    pts[dark] = np.nan
    frame = Frame(rgb=frame.rgb, points=pts, intrinsics=frame.intrinsics)
    box = BoxPrompt(int(xs.min()) - 3, int(ys.min()) - 3, int(xs.max()) + 3, int(ys.max()) + 3, 4)
    (alone,) = seg.segment(frame, SegmentationQuery(objects=[ObjectPrompt(4, boxes=[box])]))
    far = PointPrompt(W - 5, H - 5, 0, 4)
    (with_bg,) = seg.segment(frame, SegmentationQuery(objects=[ObjectPrompt(
        4, boxes=[box], points=[far])]))
    assert alone.mask[dark].mean() > 0.8
    assert with_bg.mask[dark].mean() > 0.8


def test_a_large_crop_is_cut_at_half_resolution_near_the_full_cut_and_keeps_certain_labels():
    """GrabCut's final cut of a crop over ``cut_side`` pixels runs at half resolution: its
    boundary stays within two pixels of the full-resolution cut, and the certain labels
    (a click's disk, the certain background) come back exactly as given."""
    import cv2
    from scipy import ndimage

    from sam3d_ros.backends.embedded.colour_depth_refine import _grabcut

    rng = np.random.default_rng(3)
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w]
    obj = (xx - 210) ** 2 / 120.0**2 + (yy - 150) ** 2 / 90.0**2 <= 1.0
    img = (rng.normal(0, 12, (h, w, 3)) + np.where(obj[..., None], (40, 60, 200),
                                                    (120, 110, 90))).clip(0, 255)
    img = np.ascontiguousarray(img.astype(np.uint8))
    gc = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    gc[ndimage.binary_dilation(obj, iterations=6)] = cv2.GC_PR_FGD  # a loose depth mask
    gc[:, :20] = cv2.GC_BGD
    gc[147:152, 207:212] = cv2.GC_FGD  # a click's disk, off the half-resolution grid
    gc[41, 301] = cv2.GC_FGD  # one certain pixel between the half-resolution grid's samples
    full = _grabcut(img, gc.copy(), 4, 96, cut_side=max(h, w))
    half = _grabcut(img, gc.copy(), 4, 96, cut_side=192)
    fg_full = np.isin(full, (cv2.GC_FGD, cv2.GC_PR_FGD))
    fg_half = np.isin(half, (cv2.GC_FGD, cv2.GC_PR_FGD))
    assert (fg_full & obj).sum() / (fg_full | obj).sum() > 0.97
    assert (fg_half & obj).sum() / (fg_half | obj).sum() > 0.97
    # Where the two differ, it is within two pixels of the full-resolution boundary.
    boundary = fg_full ^ ndimage.binary_erosion(fg_full)
    off = ndimage.distance_transform_edt(~boundary)[fg_full ^ fg_half]
    assert off.size and off.max() <= 2.3, off.max()
    certain = np.isin(gc, (cv2.GC_FGD, cv2.GC_BGD))
    assert np.array_equal(half[certain], gc[certain])


def test_a_box_on_the_bare_table_fails_its_object_with_the_reason(seg):
    frame, masks, _ = render_scene()
    union = np.logical_or.reduce(masks)
    box = BoxPrompt(20, 400, 120, 470, 4)  # table only
    assert not union[400:471, 20:121].any()
    ok = BoxPrompt(*[int(v) for v in _bbox(masks[1])], 5)
    result = seg.segment(frame, SegmentationQuery(
        objects=[ObjectPrompt(4, boxes=[box]), ObjectPrompt(5, boxes=[ok])]))
    assert result[0].refused is not None and not result[0].region.any()
    field, reason = result[0].refused
    assert field == "box_prompts"
    assert reason.startswith("object 4: nothing but the support (the table) or pixels without "
                             "depth inside the box (20, 400, 120, 470)")
    assert result[1].refused is None and iou(result[1].mask, masks[1]) >= 0.9


def test_a_box_whose_object_is_wider_than_graspable_is_refused(seg):
    # A box over the whole scene takes its objects together (or, with depth in the wrong unit,
    # every object comes out ten times too large): no blob for a grasp planner.
    frame, masks, _ = render_scene()
    box = BoxPrompt(0, 0, W - 1, H - 1, 2)
    (r,) = seg.segment(frame, SegmentationQuery(objects=[ObjectPrompt(2, boxes=[box])]))
    assert r.refused is not None and not r.region.any()
    field, reason = r.refused
    assert field == "box_prompts" and reason.startswith(
        f"object 2: the box (0, 0, {W - 1}, {H - 1}) selected a region ")
    assert "more than a graspable object (max_object_size 0.35 m)" in reason
    assert "check the depth's unit" in reason
    # The same objects, each in its own box, are taken.
    objects = [ObjectPrompt(i, boxes=[BoxPrompt(*[int(v) for v in _bbox(m)], i)])
               for i, m in enumerate(masks)]
    assert all(m.refused is None for m in seg.segment(frame, SegmentationQuery(objects=objects)))


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max(), ys.max()
