"""Hosted request parsing and validation (sam3d_ros.core.inputs)."""

import base64
import io
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from sam3d_ros.core.errors import InputError
from sam3d_ros.core.inputs import (
    DEFAULT_SEED,
    InputOptions,
    group_prompts,
    load_pointmap,
    parse_request,
    read_uri,
)
from sam3d_ros.core.types import BoxPrompt, CameraIntrinsics, PointPrompt

W, H = 32, 24
K = CameraIntrinsics(fx=30.0, fy=30.0, cx=15.5, cy=11.5, width=W, height=H)
K_LIST = [[K.fx, 0, K.cx], [0, K.fy, K.cy], [0, 0, 1]]
BOX = {"x_min": 1, "y_min": 1, "x_max": 5, "y_max": 5}


def png_bytes(array, mode=None):
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def rgb_image(w=W, h=H):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)


def box_mask(w=W, h=H, x0=4, y0=4, x1=12, y1=12):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0 : y1 + 1, x0 : x1 + 1] = 255
    return m


def depth_m(w=W, h=H):
    d = np.full((h, w), 1.5, dtype=np.float32)
    d[5:10, 5:10] = 1.0
    return d


def points_map(w=W, h=H, k=K):
    d = depth_m(w, h)
    us, vs = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.stack([(us - k.cx) * d / k.fx, (vs - k.cy) * d / k.fy, d], axis=-1)


def npy_bytes(array, allow_pickle=False):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def data_uri(data, mime="application/octet-stream"):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture
def scene(tmp_path):
    (tmp_path / "rgb.png").write_bytes(png_bytes(rgb_image()))
    (tmp_path / "mask.png").write_bytes(png_bytes(box_mask()))
    (tmp_path / "points.npy").write_bytes(npy_bytes(points_map()))
    return tmp_path


def field_of(excinfo):
    return excinfo.value.field


# ---------------------------------------------------------------------------------- URIs


def test_relative_path_uses_base_dir(scene):
    parsed = parse_request({"image_url": "rgb.png"}, base_dir=scene)
    assert parsed.frame.rgb.shape == (H, W, 3)
    assert parsed.frame.rgb.dtype == np.uint8
    np.testing.assert_array_equal(parsed.frame.rgb, rgb_image())
    assert parsed.seed == DEFAULT_SEED == 42
    assert parsed.frame.points is None
    np.testing.assert_array_equal(parsed.frame.camera_pose, np.eye(4))


def test_file_uri_and_data_uri_happy_paths(scene):
    by_file = parse_request({"image_url": (scene / "rgb.png").as_uri()})
    by_data = parse_request({"image_url": data_uri(png_bytes(rgb_image()), "image/png")})
    np.testing.assert_array_equal(by_file.frame.rgb, by_data.frame.rgb)
    mask = parse_request(
        {"image_url": "rgb.png", "mask_urls": [data_uri(png_bytes(box_mask()))]}, scene
    ).query.masks[0]
    assert mask.dtype == bool and mask.sum() == 81


def test_percent_encoded_data_uri():
    assert read_uri("data:,hello%20world", "f") == b"hello world"


@pytest.mark.parametrize("uri", ["ftp://host/rgb.png", "s3://bucket/rgb.png", "gopher:x"])
def test_unsupported_scheme(uri):
    with pytest.raises(InputError, match="unsupported URI scheme") as excinfo:
        parse_request({"image_url": uri})
    assert field_of(excinfo) == "image_url"


def test_http_needs_opt_in():
    with pytest.raises(InputError, match="disabled") as excinfo:
        parse_request({"image_url": "https://example.com/rgb.png"})
    assert field_of(excinfo) == "image_url"


def test_missing_file(scene):
    with pytest.raises(InputError, match="file not found") as excinfo:
        parse_request({"image_url": "nope.png"}, scene)
    assert field_of(excinfo) == "image_url"


def test_missing_image_url():
    with pytest.raises(InputError, match="required") as excinfo:
        parse_request({"prompt": "mug"})
    assert field_of(excinfo) == "image_url"


def test_oversized_data_uri():
    uri = data_uri(b"\0" * 2000)
    with pytest.raises(InputError, match="oversized") as excinfo:
        read_uri(uri, "image_url", options=InputOptions(max_bytes=1000))
    assert field_of(excinfo) == "image_url"


def test_oversized_file(scene):
    with pytest.raises(InputError, match="oversized"):
        parse_request({"image_url": "rgb.png"}, scene, InputOptions(max_bytes=100))


def test_invalid_base64():
    with pytest.raises(InputError, match="base64"):
        read_uri("data:image/png;base64,@@@@", "image_url")


def test_allowed_roots(scene, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    (other / "rgb.png").write_bytes(png_bytes(rgb_image()))
    options = InputOptions(allowed_roots=[scene])
    assert parse_request({"image_url": "rgb.png"}, scene, options).frame.width == W
    for uri in (
        str(other / "rgb.png"),
        (other / "rgb.png").as_uri(),
        "../" + other.name + "/rgb.png",
    ):
        with pytest.raises(InputError, match="outside the allowed roots") as excinfo:
            parse_request({"image_url": uri}, scene, options)
        assert field_of(excinfo) == "image_url"


def test_allowed_roots_resolve_symlinks(scene, tmp_path_factory):
    other = tmp_path_factory.mktemp("secret")
    (other / "rgb.png").write_bytes(png_bytes(rgb_image()))
    os.symlink(other / "rgb.png", scene / "link.png")
    with pytest.raises(InputError, match="outside the allowed roots"):
        parse_request({"image_url": "link.png"}, scene, InputOptions(allowed_roots=[scene]))


# ---------------------------------------------------------------------------------- images


def test_undecodable_image(scene):
    (scene / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match="cannot decode image") as excinfo:
        parse_request({"image_url": "bad.png"}, scene)
    assert field_of(excinfo) == "image_url"


def test_rgba_and_grey_are_converted():
    rgba = np.dstack([rgb_image(), np.full((H, W), 7, np.uint8)])
    rgb = parse_request({"image_url": data_uri(png_bytes(rgba))}).frame.rgb
    np.testing.assert_array_equal(rgb, rgb_image())
    grey = parse_request({"image_url": data_uri(png_bytes(box_mask()))}).frame.rgb
    assert grey.shape == (H, W, 3)
    assert (grey[..., 0] == grey[..., 2]).all() and grey.max() == 255


def test_mask_wrong_size(scene):
    (scene / "small.png").write_bytes(png_bytes(box_mask(w=W - 1)))
    with pytest.raises(InputError, match="mask is 31x24 but the image is 32x24") as excinfo:
        parse_request({"image_url": "rgb.png", "mask_urls": ["mask.png", "small.png"]}, scene)
    assert field_of(excinfo) == "mask_urls[1]"


def test_empty_mask(scene):
    (scene / "empty.png").write_bytes(png_bytes(np.zeros((H, W), np.uint8)))
    with pytest.raises(InputError, match="empty") as excinfo:
        parse_request({"image_url": "rgb.png", "mask_urls": ["empty.png"]}, scene)
    assert field_of(excinfo) == "mask_urls[0]"


def test_rgba_mask_uses_alpha():
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere but transparent outside the object
    rgba[2:5, 3:9, 3] = 255
    parsed = parse_request(
        {"image_url": data_uri(png_bytes(rgb_image())), "mask_urls": [data_uri(png_bytes(rgba))]}
    )
    assert parsed.query.masks[0].sum() == 18


# ---------------------------------------------------------------------------------- pointmaps


def test_points_npy(scene):
    parsed = parse_request({"image_url": "rgb.png", "pointmap_url": "points.npy"}, scene)
    points = parsed.frame.points
    assert points.shape == (H, W, 3) and points.dtype == np.float32
    np.testing.assert_allclose(points, points_map(), atol=1e-6)
    k = parsed.frame.intrinsics  # fitted from the points
    assert k.fx == pytest.approx(K.fx, rel=1e-4) and k.cx == pytest.approx(K.cx, abs=1e-3)


def test_depth_npz_with_k_matches_points():
    k_matrix = np.array([[K.fx, 0, K.cx], [0, K.fy, K.cy], [0, 0, 1]])
    points, intr = load_pointmap(npz_bytes(depth=depth_m(), K=k_matrix), H, W)
    np.testing.assert_allclose(points, points_map(), atol=1e-6)
    assert intr == K
    points2, _ = load_pointmap(
        npz_bytes(depth=depth_m(), intrinsics=np.array([K.fx, K.fy, K.cx, K.cy])), H, W
    )
    np.testing.assert_allclose(points2, points, atol=1e-6)


def test_uint16_depth_npy_with_request_intrinsics():
    depth_mm = np.round(depth_m() * 1000).astype(np.uint16)
    depth_mm[0, 0] = 0
    parsed = parse_request(
        {
            "image_url": data_uri(png_bytes(rgb_image())),
            "pointmap_url": data_uri(npy_bytes(depth_mm)),
            "intrinsics": {"fx": K.fx, "fy": K.fy, "cx": K.cx, "cy": K.cy},
        }
    )
    points = parsed.frame.points
    assert np.isnan(points[0, 0]).all()
    np.testing.assert_allclose(points[1:, 1:], points_map()[1:, 1:], atol=1e-6)


def test_depth_png_16bit():
    depth_mm = np.round(depth_m() * 1000).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(depth_mm).save(buf, format="PNG")
    points, _ = load_pointmap(buf.getvalue(), H, W, K)
    np.testing.assert_allclose(points, points_map(), atol=1e-6)


def test_depth_without_intrinsics():
    with pytest.raises(InputError, match="needs intrinsics") as excinfo:
        load_pointmap(npy_bytes(depth_m()), H, W)
    assert field_of(excinfo) == "pointmap_url"


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((H, W + 1, 3), np.float32), "pointmap is 33x24 but the image is 32x24"),
        (np.zeros((H, W, 4), np.float32), "HxW"),
        (np.zeros((2, H, W, 3), np.float32), "HxW"),
        (np.zeros((H, W), np.int64), "float metres or uint16"),
    ],
)
def test_pointmap_wrong_shape_or_size(scene, array, message):
    (scene / "pm.npy").write_bytes(npy_bytes(array))
    request = {"image_url": "rgb.png", "pointmap_url": "pm.npy", "K": K_LIST}
    with pytest.raises(InputError, match=message) as excinfo:
        parse_request(request, scene)
    assert field_of(excinfo) == "pointmap_url"


@pytest.mark.parametrize(
    "array",
    [
        np.full((H, W, 3), np.nan, np.float32),
        np.zeros((H, W, 3), np.float32),
        np.zeros((H, W), np.uint16),
        np.full((H, W), -1.0, np.float32),
    ],
)
def test_all_invalid_pointmap(array):
    with pytest.raises(InputError, match="no valid point") as excinfo:
        load_pointmap(npy_bytes(array), H, W, K)
    assert field_of(excinfo) == "pointmap_url"


def test_pickled_npy_refused(scene):
    obj = np.empty(1, dtype=object)
    obj[0] = {"points": 1}
    (scene / "evil.npy").write_bytes(npy_bytes(obj, allow_pickle=True))
    (scene / "evil.pkl").write_bytes(pickle.dumps(points_map()))
    for name in ("evil.npy", "evil.pkl"):
        with pytest.raises(InputError, match="pickle") as excinfo:
            parse_request({"image_url": "rgb.png", "pointmap_url": name}, scene)
        assert field_of(excinfo) == "pointmap_url"


# ------------------------------------------------------------------- declared sizes, bombs


def npy_declaring(shape, descr="<f4", data=b"\0" * 1024):
    """A real NPY header declaring ``shape`` followed by a little data (what a bomb looks like)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + data


def npz_member_declaring(shape, zeros=8 * 2**20, descr="<f4", **others):
    """An NPZ whose ``points.npy`` declares ``shape`` and inflates ``zeros`` zero bytes."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("points.npy", npy_declaring(shape, descr, b"\0" * zeros))
        for key, array in others.items():
            archive.writestr(f"{key}.npy", npy_bytes(array))
    return buf.getvalue()


def peak_bytes(func):
    """Peak Python + numpy heap allocation while ``func`` runs (numpy reports to tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        func()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("data, field, message", [
    # 112 GiB declared in a 1 KiB NPY (was "internal error", exit 1)
    (npy_declaring((100000, 100000, 3)), "pointmap_url", "pointmap is 100000x100000"),
    # an NPZ member of 1.2 GB (8 MiB of it present, deflated to a few KiB)
    (npz_member_declaring((10000, 10000, 3)), "pointmap_url", "pointmap is 10000x10000"),
    (npy_declaring((H, W, 3), data=b"\0" * 100), "pointmap_url", "truncated"),
])
def test_declared_array_sizes_checked_before_allocating(data, field, message):
    def load():
        with pytest.raises(InputError, match=message) as excinfo:
            load_pointmap(data, H, W, K)
        assert field_of(excinfo) == field

    assert peak_bytes(load) < 4 * 2**20


def test_npz_huge_intrinsics_member_not_read():
    data = npz_member_declaring((H, W, 3), zeros=H * W * 12)
    import zipfile

    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("K.npy", npy_declaring((30000, 30000), "<f8", b"\0" * 2**20))

    def load():
        with pytest.raises(InputError, match=r"must be \[fx, fy, cx, cy\] or 3x3") as excinfo:
            load_pointmap(buf.getvalue(), H, W)
        assert field_of(excinfo) == "pointmap_url[K]"

    assert peak_bytes(load) < 4 * 2**20


def png_declaring(width, height, mode=2):
    """A PNG whose header declares width × height (colour type ``mode``) with a cut IDAT."""
    import struct
    import zlib

    def chunk(kind, payload):
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    idat = zlib.compress(b"\0" * 65536)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)


def test_image_and_mask_sizes_checked_from_their_headers(scene):
    (scene / "huge.png").write_bytes(png_declaring(8000, 8000))
    with pytest.raises(InputError, match="image too large: 8000x8000 = 64000000 pixels, "
                                         "the limit is 40000000") as excinfo:
        parse_request({"image_url": "huge.png"}, scene)
    assert field_of(excinfo) == "image_url"
    (scene / "huge_mask.png").write_bytes(png_declaring(8000, 8000, mode=0))
    with pytest.raises(InputError, match="mask is 8000x8000 but the image is 32x24") as excinfo:
        parse_request({"image_url": "rgb.png", "mask_urls": ["huge_mask.png"]}, scene)
    assert field_of(excinfo) == "mask_urls[0]"
    with pytest.raises(InputError, match="image too large") as excinfo:
        parse_request({"image_url": "rgb.png"}, scene, InputOptions(max_pixels=W * H - 1))


def test_object_and_prompt_counts_capped_before_reading_files(scene):
    boxes = [dict(BOX)] * 33
    with pytest.raises(InputError, match="33 objects prompted; at most 32 objects") as excinfo:
        parse_request({"image_url": "rgb.png", "box_prompts": boxes}, scene)
    assert field_of(excinfo) == "box_prompts"
    with pytest.raises(InputError, match="10000 prompts; at most 512") as excinfo:
        parse_request({"image_url": "missing.png", "box_prompts": [dict(BOX)] * 10000}, scene)
    assert field_of(excinfo) == "box_prompts"
    with pytest.raises(InputError, match="3 masks; at most 2") as excinfo:  # no file is read
        parse_request({"image_url": "missing.png", "mask_urls": ["a.png"] * 3}, scene,
                      InputOptions(max_objects=2))
    assert field_of(excinfo) == "mask_urls"
    # many prompts refining few objects are fine
    points = [{"x": 1, "y": 1, "object_id": 0}] * 40
    assert len(parse_request({"image_url": "rgb.png", "point_prompts": points}, scene)
               .query.objects) == 1


def test_pointmap_in_pytorch3d_axes_is_refused():
    flipped = points_map() * np.array([-1, -1, 1], np.float32)
    with pytest.raises(InputError, match="optical frame"):
        load_pointmap(npy_bytes(flipped), H, W)


# ---------------------------------------------------------------------------------- prompts


def base_request(**fields):
    return {"image_url": data_uri(png_bytes(rgb_image())), **fields}


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({"point_prompts": [{"x": W, "y": 0}]}, "point_prompts[0].x", "outside the image"),
        ({"point_prompts": [{"x": 0, "y": -1}]}, "point_prompts[0].y", "outside the image"),
        ({"point_prompts": [{"x": 1, "y": 1, "label": 2}]}, "point_prompts[0].label", "0"),
        ({"point_prompts": [{"x": 1.5, "y": 1}]}, "point_prompts[0].x", "integer"),
        ({"point_prompts": [{"x": True, "y": 1}]}, "point_prompts[0].x", "integer"),
        ({"point_prompts": [{"y": 1}]}, "point_prompts[0].x", "required"),
        ({"point_prompts": {"x": 1}}, "point_prompts", "list"),
        ({"point_prompts": [3]}, "point_prompts[0]", "object"),
        (
            {"box_prompts": [BOX, {"x_min": 9, "y_min": 1, "x_max": 3, "y_max": 5}]},
            "box_prompts[1].x_max",
            "less than x_min",
        ),
        (
            {"box_prompts": [{"x_min": 1, "y_min": 6, "x_max": 3, "y_max": 5}]},
            "box_prompts[0].y_max",
            "less than y_min",
        ),
        (
            {"box_prompts": [BOX, BOX, {"x_min": 1, "y_min": 1, "x_max": W, "y_max": 5}]},
            "box_prompts[2].x_max",
            "outside the image",
        ),
        ({"box_prompts": [dict(BOX, object_id="a")]}, "box_prompts[0].object_id", "integer"),
        ({"point_prompts": [{"x": 1, "y": 1, "label": 0}]}, "point_prompts", "background"),
        ({"seed": -1}, "seed", "must be in"),
        ({"seed": "7"}, "seed", "integer"),
        ({"prompt": 3}, "prompt", "string"),
        ({"mask_urls": "mask.png"}, "mask_urls", "list"),
        ({"intrinsics": {"fx": 1}}, "intrinsics", "missing"),
        ({"intrinsics": [0, 1, 2, 3]}, "intrinsics", "positive"),
        ({"camera_pose": np.eye(3).tolist()}, "camera_pose", "4x4"),
        ({"camera_pose": (2 * np.eye(4)).tolist()}, "camera_pose", "last row"),
    ],
)
def test_bad_fields(fields, field, message):
    with pytest.raises(InputError, match=message) as excinfo:
        parse_request(base_request(**fields))
    assert field_of(excinfo) == field


def test_not_an_object():
    with pytest.raises(InputError) as excinfo:
        parse_request(["image_url"])
    assert field_of(excinfo) == "request"


def test_integral_float_coordinates_accepted():
    parsed = parse_request(base_request(point_prompts=[{"x": 3.0, "y": 4}]))
    assert parsed.query.objects[0].points[0] == PointPrompt(3, 4, 1, 0)


def test_unknown_fields_warned_not_fatal():
    parsed = parse_request(base_request(webhook="x", sync_mode=True, seed=7))
    assert parsed.seed == 7
    assert any("webhook" in w for w in parsed.warnings)


# ---------------------------------------------------------------------------------- grouping


def test_grouping_by_object_id():
    points = [
        PointPrompt(1, 1, 1, object_id=5),
        PointPrompt(2, 2, 0, object_id=5),
        PointPrompt(3, 3, 1, object_id=2),
    ]
    boxes = [BoxPrompt(0, 0, 4, 4, object_id=5), BoxPrompt(5, 5, 9, 9, object_id=2)]
    objects = group_prompts(points, boxes)
    assert [o.object_id for o in objects] == [2, 5]
    assert len(objects[1].points) == 2 and len(objects[1].boxes) == 1
    assert objects[0].points[0].x == 3 and objects[0].boxes[0].x_min == 5


def test_idless_boxes_each_own_object_above_largest_id():
    boxes = [BoxPrompt(0, 0, 4, 4), BoxPrompt(5, 5, 9, 9, object_id=7), BoxPrompt(1, 1, 2, 2)]
    objects = group_prompts([], boxes)
    assert [o.object_id for o in objects] == [7, 8, 9]
    assert objects[1].boxes[0].x_min == 0 and objects[2].boxes[0].x_min == 1
    assert objects[1].boxes[0].object_id == 8


def test_idless_points_join_single_idless_box():
    objects = group_prompts(
        [PointPrompt(1, 1), PointPrompt(2, 2, 0)],
        [BoxPrompt(0, 0, 4, 4), BoxPrompt(5, 5, 9, 9, object_id=3)],
    )
    assert [o.object_id for o in objects] == [3, 4]
    assert len(objects[1].points) == 2 and len(objects[1].boxes) == 1


def test_idless_points_form_one_object_otherwise():
    objects = group_prompts([PointPrompt(1, 1), PointPrompt(2, 2)], [])
    assert [o.object_id for o in objects] == [0]
    assert len(objects[0].points) == 2
    objects = group_prompts([PointPrompt(1, 1)], [BoxPrompt(0, 0, 4, 4), BoxPrompt(5, 5, 9, 9)])
    assert [(o.object_id, len(o.boxes), len(o.points)) for o in objects] == [
        (0, 1, 0),
        (1, 1, 0),
        (2, 0, 1),
    ]


def test_object_ids_stay_in_int32_range(scene):
    top = 2**31 - 1
    # An id-less box next to an id at the top of int32 gets the lowest free id, not 2**31.
    objects = group_prompts([], [BoxPrompt(0, 0, 4, 4, object_id=top), BoxPrompt(5, 5, 9, 9)])
    assert [o.object_id for o in objects] == [0, top]
    for bad in (top + 1, -1):
        with pytest.raises(InputError, match=r"must be in \[0, 2147483647\]") as err:
            parse_request({"image_url": "rgb.png", "box_prompts": [dict(BOX, object_id=bad)]},
                          scene)
        assert err.value.field == "box_prompts[0].object_id"


def test_grouping_is_deterministic():
    points = [PointPrompt(i, i, 1, object_id=i % 3 if i % 2 else None) for i in range(8)]
    boxes = [BoxPrompt(i, i, i + 2, i + 2, object_id=None if i % 2 else 9) for i in range(4)]
    assert group_prompts(points, boxes) == group_prompts(list(points), list(boxes))


# ---------------------------------------------------------------------------------- precedence


def test_precedence_masks_win(scene):
    parsed = parse_request(
        {
            "image_url": "rgb.png",
            "mask_urls": ["mask.png"],
            "box_prompts": [BOX],
            "prompt": "mug",
        },
        scene,
    )
    assert len(parsed.query.masks) == 1
    assert parsed.query.objects == [] and parsed.query.text is None
    assert any("ignored" in w for w in parsed.warnings)


def test_precedence_prompts_over_text():
    parsed = parse_request(base_request(box_prompts=[BOX], prompt="mug"))
    assert parsed.query.masks == [] and parsed.query.text is None
    assert parsed.query.objects[0].boxes[0] == BoxPrompt(1, 1, 5, 5, object_id=0)


def test_precedence_text_then_automatic():
    assert parse_request(base_request(prompt=" mug ")).query.text == "mug"
    query = parse_request(base_request(prompt="  ")).query
    assert query.masks == [] and query.objects == [] and query.text is None


def test_losing_fields_still_validated(scene):
    with pytest.raises(InputError) as excinfo:
        parse_request(
            {"image_url": "rgb.png", "mask_urls": ["mask.png"], "box_prompts": [{"x_min": 1}]},
            scene,
        )
    assert field_of(excinfo) == "box_prompts[0].y_min"


def test_extension_fields(scene):
    pose = np.eye(4)
    pose[:3, 3] = [1, 2, 3]
    parsed = parse_request(
        {"image_url": "rgb.png", "K": K_LIST, "camera_pose": pose.tolist()}, scene
    )
    assert parsed.frame.intrinsics == K
    np.testing.assert_array_equal(parsed.frame.camera_pose, pose)
    assert parsed.warnings == []


# ---------------------------------------------------------------------------------- http


LOOPBACK = InputOptions(allow_http=True, timeout_s=5, http_allowed_hosts=("127.0.0.1",))


@pytest.fixture
def serve(scene):
    """Start http servers (handler class, bind address) in threads; stop them afterwards."""
    import functools
    import http.server
    import threading

    servers = []

    def start(handler=http.server.SimpleHTTPRequestHandler, host="127.0.0.1"):
        class Quiet(handler):
            def log_message(self, *args):
                pass

        if issubclass(handler, http.server.SimpleHTTPRequestHandler):  # serves the scene
            Quiet = functools.partial(Quiet, directory=str(scene))  # noqa: N806
        server = http.server.ThreadingHTTPServer((host, 0), Quiet)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://{host}:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def redirecting(target):
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", target())
                self.end_headers()
                return
            super().do_GET()

    return Handler


def test_http_opt_in(serve, scene):
    url = serve(redirecting(lambda: (scene / "rgb.png").as_uri()))
    parsed = parse_request({"image_url": f"{url}/rgb.png"}, options=LOOPBACK)
    np.testing.assert_array_equal(parsed.frame.rgb, rgb_image())
    small = InputOptions(allow_http=True, timeout_s=5, max_bytes=100,
                         http_allowed_hosts=("127.0.0.1",))
    with pytest.raises(InputError, match="oversized"):
        read_uri(f"{url}/rgb.png", "image_url", options=small)
    with pytest.raises(InputError, match="download failed: HTTP 404"):
        read_uri(f"{url}/missing.png", "image_url", options=LOOPBACK)
    with pytest.raises(InputError, match="download failed.*non-http.* refused"):
        read_uri(f"{url}/redirect", "image_url", options=LOOPBACK)


@pytest.mark.parametrize("host, kind", [
    ("127.0.0.1", "loopback"), ("[::1]", "loopback"), ("[::ffff:127.0.0.1]", "loopback"),
    ("169.254.169.254", "link-local"), ("10.1.2.3", "private"), ("192.168.0.1", "private"),
    ("100.64.0.1", "non-global"), ("0.0.0.0", "private"),
])
def test_http_refuses_non_global_addresses(host, kind):
    # Refused before any connection: nothing listens on most of these here.
    options = InputOptions(allow_http=True, timeout_s=5)
    with pytest.raises(InputError, match=f"download refused: .*a {kind}") as err:
        read_uri(f"http://{host}:9/latest/meta-data", "image_url", options=options)
    assert err.value.field == "image_url" and "--http-allow-host" in err.value.reason


def test_http_redirect_is_checked_again(serve):
    import http.server

    hits = []

    class Secret(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            super().do_GET()

    inner = serve(Secret, host="127.0.0.2")  # an "internal" host the user did not allow
    outer = serve(redirecting(lambda: f"{inner}/rgb.png"))
    with pytest.raises(InputError, match="download refused: 127.0.0.2 is a loopback"):
        read_uri(f"{outer}/redirect", "image_url", options=LOOPBACK)
    assert hits == []
    # Allowed as a network, the same redirect is followed.
    both = InputOptions(allow_http=True, timeout_s=5, http_allowed_hosts=("127.0.0.0/8",))
    assert read_uri(f"{outer}/redirect", "image_url", options=both) == png_bytes(rgb_image())
    assert hits == ["/rgb.png"]


def test_http_total_deadline_against_a_trickling_server(serve):
    import http.server
    import threading

    stop = threading.Event()

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            # Status line, headers and body one byte at a time: every single read is quick.
            body = b"x" * 200
            response = (b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
            for i in range(len(response)):
                if stop.wait(0.05):
                    return
                self.wfile.write(response[i:i + 1])
                self.wfile.flush()

    url = serve(Trickle)
    options = InputOptions(allow_http=True, timeout_s=1.0, http_allowed_hosts=("127.0.0.1",))
    try:
        with pytest.raises(InputError, match="did not finish within the 1 s deadline"):
            read_uri(f"{url}/slow", "image_url", options=options)
    finally:
        stop.set()


def test_http_ignores_proxy_variables(serve, monkeypatch):
    import http.server

    proxied = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            proxied.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "7")
            self.end_headers()
            self.wfile.write(b"proxied")

    proxy = serve(Proxy)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.setenv(name, proxy)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    url = serve()
    assert read_uri(f"{url}/rgb.png", "image_url", options=LOOPBACK) == png_bytes(rgb_image())
    assert proxied == []


def test_relative_file_uri_refused():
    with pytest.raises(InputError, match="absolute"):
        read_uri("file:rgb.png", "image_url")
