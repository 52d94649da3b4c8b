"""Depth hygiene (:mod:`sam3d_ros.core.depth_hygiene`) on constructed edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sam3d_ros.core.conventions import backproject
from sam3d_ros.core.depth_hygiene import (
    continuous_regions,
    depth_edges,
    depth_steps,
    grazing_pixels,
    misregistration_px,
    object_depth,
)
from sam3d_ros.core.types import CameraIntrinsics

W, H = 160, 120
K = CameraIntrinsics(fx=150.0, fy=150.0, cx=79.5, cy=59.5, width=W, height=H)


def _object_on_background(z_obj=0.8, z_bg=1.3):
    """A frontal square object at ``z_obj`` in front of a wall at ``z_bg``."""
    depth = np.full((H, W), z_bg, dtype=np.float32)
    obj = np.zeros((H, W), dtype=bool)
    obj[40:80, 60:100] = True
    depth[obj] = z_obj
    return depth, obj


def test_depth_steps_find_an_occlusion_step_smaller_than_a_jump_but_not_a_slope():
    rows = np.arange(H, dtype=np.float32)[:, None]
    cols = np.arange(W, dtype=np.float32)[None, :]
    # A surface receding 1.5 cm per pixel down the image (far steeper than any step), with a
    # second surface 1 cm behind it right of column 80 (less than a 2 cm jump at 1 m).
    z = 0.8 + 0.015 * rows + 0.0 * cols
    behind = np.broadcast_to(cols >= 80, z.shape)
    z = np.where(behind, z + 0.01, z).astype(np.float32)
    z += np.random.default_rng(0).normal(0.0, 0.0005, z.shape).astype(np.float32)
    assert not depth_edges(z, 0.02, 0.0)[:, 70:90].any()  # no jump there
    steps = depth_steps(z, 0.006, 0.0, baseline=2)
    line = steps[10:-10, 78:83]
    assert line.any(axis=1).all()  # every row crosses the step
    assert not steps[:, :74].any() and not steps[:, 86:].any()  # the slope has none
    # The step splits the surface into its two sides.
    _, n = ndimage.label(~steps)
    assert n == 2
    # No depth (NaN or 0) is no step; a hole does not mark its rim.
    holed = z.copy()
    holed[50:60, 20:30] = np.nan
    holed[50:60, 120:130] = 0.0
    assert not depth_steps(holed, 0.006, 0.0)[:, :74].any()


def test_depth_edges_mark_both_sides_of_a_jump_and_only_there():
    depth, obj = _object_on_background()
    edges = depth_edges(depth)
    ring = obj ^ ndimage.binary_erosion(obj)
    outer = ndimage.binary_dilation(obj) ^ obj
    assert edges[ring].all() and edges[outer].all()
    assert not edges[ndimage.binary_erosion(obj, iterations=2)].any()
    # Noise below the threshold and a hole are not edges.
    noisy = depth + np.random.default_rng(0).normal(0, 0.002, depth.shape).astype(np.float32)
    noisy[10, 10] = np.nan
    assert not depth_edges(noisy)[~ndimage.binary_dilation(ring | outer)].any()


def test_grazing_pixels_flag_slopes_beyond_the_angle_only():
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    frontal = np.full((H, W), 1.0, dtype=np.float32)
    # A plane turned 70 degrees away from the optical axis: z = 1 + tan(70°) · x.
    with np.errstate(divide="ignore"):
        turned = 1.0 / (1.0 - np.tan(np.radians(70)) * (u - K.cx) / K.fx)
    turned[:, 120:] = np.nan
    inner = (slice(10, -10), slice(10, -10))
    for angle in (60.0, 80.0):
        assert not grazing_pixels(backproject(frontal, K), angle)[inner].any()
    pts = backproject(turned.astype(np.float32), K)
    centre = (slice(10, -10), slice(76, 84))  # rays along the optical axis: 70 degrees there
    assert grazing_pixels(pts, 60.0)[centre].all()
    assert not grazing_pixels(pts, 80.0)[centre].any()


def test_continuous_regions_split_at_jumps():
    depth, obj = _object_on_background()
    labels, n = continuous_regions(depth, np.ones((H, W), bool))
    assert n == 2
    assert len(np.unique(labels[obj])) == 1 and len(np.unique(labels[~obj])) == 1


def test_a_mask_dilated_onto_the_background_keeps_only_the_objects_depth():
    depth, obj = _object_on_background()
    points = backproject(depth, K)
    mask = ndimage.binary_dilation(obj, iterations=4)  # 4 px of wall inside the mask
    od = object_depth(points, mask, fill_px=4)  # a camera misregistered by 4 px
    band = mask & ~obj
    assert not od.reliable[band].any()
    assert od.reliable[ndimage.binary_erosion(obj, iterations=2)].all()
    # The wall pixels between the object's edge ring and the mask's own outermost ring are
    # filled at the object's depth: silhouette, never a fin (both rings are mixed pixels:
    # neither depth nor fill).
    beyond = band & ~ndimage.binary_dilation(obj) & ndimage.binary_erosion(mask)
    assert od.filled[beyond].all()
    assert np.allclose(od.depth[beyond], 0.8, atol=1e-6)


def test_foreign_depth_is_filled_only_within_the_misregistration_band():
    """A mask that took in a neighbour standing behind the object (a click leaking into a cup
    of the same colour): the neighbour's pixels deep inside the mask keep out, rather than
    being lifted to the object's depth as a wall in front of the neighbour, and so does a
    patch without depth inside the neighbour; foreign depth within the band and the object's
    own pixels without depth, however far from its edge, are filled."""
    depth, obj = _object_on_background()
    neighbour = np.zeros((H, W), bool)
    neighbour[10:40, 65:95] = True  # above the object in the image, 30 cm behind it
    depth[neighbour] = 1.1
    dark = np.zeros((H, W), bool)
    dark[55:65, 75:85] = True  # a dark patch in the middle of the object: no depth
    depth[dark] = np.nan
    shiny = np.zeros((H, W), bool)
    shiny[18:26, 75:85] = True  # a patch without depth inside the neighbour
    depth[shiny] = np.nan
    points = backproject(depth, K)
    mask = obj | neighbour
    band = misregistration_px(W)
    od = object_depth(points, mask, fill_px=band)
    assert od.reliable[ndimage.binary_erosion(obj, iterations=2) & ~dark].all()
    kept = od.reliable
    dist = ndimage.distance_transform_edt(~kept)
    far = neighbour & (dist > band)
    assert far.sum() > 500 and not od.filled[far].any() and not od.reliable[far].any()
    assert od.filled[dark].all() and np.allclose(od.depth[dark], 0.8, atol=1e-6)
    # Without depth but reached only across the neighbour: part of the neighbour, not filled.
    assert not od.filled[shiny].any()
    # Unbounded, as before: the whole neighbour became the object at 0.8 m.
    wide = object_depth(points, mask, fill_px=float(W))
    assert wide.filled[far].mean() > 0.8
    assert 1.0 <= misregistration_px(160) < misregistration_px(1280) == 10.0


def test_foreground_band_of_an_occluder_is_dropped():
    depth, obj = _object_on_background()
    occluder = np.zeros((H, W), bool)
    occluder[40:80, 56:63] = True  # a pole in front, overlapping the mask's left edge
    depth[occluder] = 0.5
    od = object_depth(backproject(depth, K), obj)
    assert not od.reliable[occluder & obj].any()
    clear = ndimage.binary_erosion(obj, iterations=2)
    clear &= ~ndimage.binary_dilation(occluder, iterations=3)
    assert od.reliable[clear].all()


def test_a_thick_front_part_within_the_objects_extent_joins():
    # A bowl seen from above: its front wall is nearer than the inner surface, separated from it
    # by a depth jump at the rim, and thick: both are the object.
    depth = np.full((H, W), 1.3, dtype=np.float32)
    mask = np.zeros((H, W), bool)
    mask[40:90, 50:110] = True
    depth[40:70, 50:110] = 0.95  # inner surface
    depth[70:90, 50:110] = 0.85  # front wall, 10 cm nearer
    od = object_depth(backproject(depth, K), mask)
    assert od.reliable[42:68, 52:108].all() and od.reliable[72:88, 52:108].all()


def test_support_pixels_are_not_the_object():
    class Plane:  # the wall plays the support: z = 1.3 → n·p + d with n toward the camera
        normal = np.array([0.0, 0.0, -1.0])
        offset = 1.3

    # A thin object 1.5 cm proud of its support: no depth jump separates the two, only the
    # support test does.
    depth, obj = _object_on_background(z_obj=1.285, z_bg=1.3)
    mask = ndimage.binary_dilation(obj, iterations=4)
    band = mask & ~ndimage.binary_dilation(obj, iterations=2) & ndimage.binary_erosion(mask)
    points = backproject(depth, K)
    assert object_depth(points, mask).reliable[band].all()  # continuous: one surface
    od = object_depth(points, mask, Plane())
    assert not od.reliable[band].any()
    assert od.reliable[ndimage.binary_erosion(obj, iterations=2)].all()


def test_a_mask_whose_pixels_all_sit_on_jumps_has_no_reliable_depth():
    # A dark object: no depth but two neighbouring pixels 10 cm apart.
    depth = np.full((H, W), np.nan, dtype=np.float32)
    depth[60, 80], depth[60, 81] = 0.8, 0.9
    mask = np.zeros((H, W), bool)
    mask[40:80, 60:100] = True
    od = object_depth(backproject(depth, K), mask)
    assert od.count == 0 and not od.filled.any()

    from sam3d_ros.backends.embedded.reconstruction import EmbeddedReconstructor
    from sam3d_ros.core.errors import InputError
    from sam3d_ros.core.types import Frame, ObjectMask

    rgb = np.zeros((H, W, 3), np.uint8)
    frame = Frame(rgb=rgb, points=backproject(depth, K), intrinsics=K)
    with pytest.raises(InputError, match="usable depth points"):
        EmbeddedReconstructor().reconstruct(frame, [ObjectMask(1, mask)], 0)
