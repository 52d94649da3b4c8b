"""Masks are kept as crops of their bounding box (core.types.MaskCrop), in every result."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sam3d_ros.backends.grasp.analytic import _own_pixels
from sam3d_ros.core.conventions import backproject_pixels
from sam3d_ros.core.engine import Engine
from sam3d_ros.core.types import (
    BoxPrompt,
    CameraIntrinsics,
    Frame,
    MaskCrop,
    ObjectMask,
    ObjectPrompt,
    SegmentationQuery,
)


def _random_masks(rng, shape=(37, 53), n=40):
    out = [np.zeros(shape, bool), np.ones(shape, bool)]
    for _ in range(n):
        m = np.zeros(shape, bool)
        r0, c0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r1, c1 = rng.integers(r0, shape[0] + 1), rng.integers(c0, shape[1] + 1)
        m[r0:r1, c0:c1] = rng.uniform(size=(r1 - r0, c1 - c0)) > 0.4
        out.append(m)
    return out


def test_a_crop_holds_exactly_its_mask_and_its_tight_box():
    rng = np.random.default_rng(0)
    for full in _random_masks(rng):
        crop = MaskCrop.of(full)
        np.testing.assert_array_equal(crop.full(), full)
        assert crop.shape == full.shape and crop.area == int(full.sum())
        assert crop.any() == bool(full.any())
        if full.any():
            rows, cols = np.nonzero(full)
            assert crop.bbox == (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
            assert crop.pixels.shape == (np.ptp(rows) + 1, np.ptp(cols) + 1)
        else:
            assert crop.pixels.size == 0
        assert MaskCrop.of(crop) is crop


def test_windows_and_lookups_agree_with_the_full_mask():
    rng = np.random.default_rng(1)
    for full in _random_masks(rng):
        crop = MaskCrop.of(full)
        h, w = full.shape
        padded = np.pad(full, 40)
        for _ in range(5):
            a0, b0 = rng.integers(-10, h), rng.integers(-10, w)
            a1, b1 = a0 + rng.integers(0, 30), b0 + rng.integers(0, 30)
            expected = padded[a0 + 40:a1 + 40, b0 + 40:b1 + 40]
            np.testing.assert_array_equal(crop.over((a0, a1, b0, b1)), expected)
        if full.any():
            win, (a0, a1, b0, b1) = crop.window(3)
            np.testing.assert_array_equal(win, full[a0:a1, b0:b1])
            assert win.sum() == full.sum()
        rows, cols = rng.integers(-5, h + 5, 200), rng.integers(-5, w + 5, 200)
        on = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        expected = np.zeros(200, bool)
        expected[on] = full[rows[on], cols[on]]
        np.testing.assert_array_equal(crop.contains(rows, cols), expected)


def test_objects_take_an_image_mask_and_give_it_back():
    full = np.zeros((6, 8), bool)
    full[2:4, 3:6] = True
    obj = ObjectMask(4, full, "cup", 0.5)
    assert isinstance(obj.region, MaskCrop) and obj.region.pixels.shape == (2, 3)
    np.testing.assert_array_equal(obj.mask, full)
    with pytest.raises(ValueError, match="read-only"):
        obj.mask[0, 0] = True  # a changed copy would be lost: the mask is changed by its region
    with pytest.raises(ValueError, match="H×W"):
        ObjectMask(0, np.zeros((2, 3, 3), bool))
    with pytest.raises(ValueError, match="read-only"):
        obj.region.pixels[0, 0] = False  # results share it
    obj.region = full[::-1]  # an assigned image mask is cropped too
    assert isinstance(obj.region, MaskCrop)
    np.testing.assert_array_equal(obj.mask, full[::-1])


@pytest.mark.parametrize("step", [1, 2, 3, 4])
def test_the_grasp_planners_own_pixels_match_the_whole_image_computation(step):
    """The planner's "not an obstacle" pixels, judged on the crop, are those it judged on the
    whole subsampled image (grown by 3 px for mixed edge pixels)."""
    rng = np.random.default_rng(step)
    for full in _random_masks(rng, shape=(61, 83), n=15):
        rows, cols = np.mgrid[0:61:step, 0:83:step]
        rows, cols = rows.ravel(), cols.ravel()
        iterations = max(1, int(np.ceil(3 / step)))
        whole = ndimage.binary_dilation(full[::step, ::step], iterations=iterations)
        expected = whole[rows // step, cols // step]
        np.testing.assert_array_equal(_own_pixels(MaskCrop.of(full), rows, cols, step, 3),
                                      expected)


def _blocks_on_a_table(width=640, height=480, n=12):
    """A table 0.8 m away with ``n`` small blocks (4 cm tall) on it, and a box around each."""
    k = CameraIntrinsics(fx=600.0, fy=600.0, cx=width / 2 - 0.5, cy=height / 2 - 0.5,
                         width=width, height=height)
    depth = np.full((height, width), 0.8, np.float32)
    rng = np.random.default_rng(3)
    rgb = np.full((height, width, 3), (150, 140, 120), np.uint8)
    boxes = []
    for i in range(n):
        r, c = 60 + (i // 4) * 130, 80 + (i % 4) * 140
        depth[r:r + 40, c:c + 50] = 0.76
        rgb[r:r + 40, c:c + 50] = rng.integers(0, 255, 3)
        boxes.append(BoxPrompt(c - 8, r - 8, c + 58, r + 48, object_id=i))
    rr, cc = np.mgrid[0:height, 0:width]
    points = backproject_pixels(rr.ravel(), cc.ravel(), depth.ravel(), k)
    frame = Frame(rgb=rgb, points=points.reshape(height, width, 3).astype(np.float32),
                  intrinsics=k)
    query = SegmentationQuery(objects=[ObjectPrompt(i, boxes=[b]) for i, b in enumerate(boxes)])
    return frame, query


def test_a_result_holds_masks_the_size_of_their_objects_not_of_the_image():
    """12 small objects: the result's masks (segmentation and reconstruction) take less than
    one image-sized mask together; image-sized masks would take 24."""
    frame, query = _blocks_on_a_table()
    result = Engine("embedded", "embedded").process(frame, query, seed=0)
    assert len(result.objects) == 12
    held = [m.region for m in result.masks] + [o.region for o in result.objects]
    assert sum(r.pixels.nbytes for r in held) < frame.height * frame.width
    for m, o in zip(result.masks, result.objects, strict=True):
        assert m.region.image_shape == (frame.height, frame.width)
        assert 0.8 * 40 * 50 <= m.region.area <= 1.2 * 40 * 50
        np.testing.assert_array_equal(o.mask, m.mask)
