"""Compressed camera inputs (sam3d_ros.core.compressed_images): image_transport's ``compressed``
colour and ``compressedDepth`` depth decoded to the raw path's arrays; bad payloads named (no ROS
graph).

The messages are built here as the image_transport publishers build them (OpenCV ``imencode``;
for compressedDepth the 12-byte ``ConfigHeader`` and, for 32FC1, the publisher's inverse-depth
quantisation), independently of the decoder under test.
"""

import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CameraInfo, CompressedImage

from sam3d_ros.core import compressed_images as cmp
from sam3d_ros.core import conventions as conv
from sam3d_ros.core.camera_frame import build_camera_frame
from sam3d_ros.core.errors import InputError
from sam3d_ros.ros.conversions import numpy_to_image

W, H = 160, 120


# --------------------------------------------------------------------------------------------
# Messages as image_transport's publishers write them


def colour_image(w=W, h=H):
    """A smooth RGB test image with edges (JPEG-friendly, every channel different)."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([255 * x / (w - 1), 255 * y / (h - 1), 128 + 60 * np.sin(x / 9.0)], axis=2)
    img[h // 4:h // 2, w // 4:w // 2] = (200, 30, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def depth_image_m(w=W, h=H):
    y, x = np.mgrid[0:h, 0:w]
    d = (0.5 + 2.5 * x / (w - 1) + 0.2 * y / (h - 1)).astype(np.float32)
    d[:5, :5] = np.nan  # invalid pixels
    return d


def msg(fmt, data):
    return CompressedImage(format=fmt, data=bytes(data))


def jpeg_msg(rgb, fmt="rgb8; jpeg compressed bgr8", quality=95):
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return msg(fmt, buf.tobytes())


def png_msg(pixels_bgr, fmt="bgr8; png compressed bgr8"):
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(pixels_bgr))
    assert ok
    return msg(fmt, buf.tobytes())


def config_header(fmt=0, a=0.0, b=0.0):
    return struct.pack("<iff", fmt, a, b)  # ConfigHeader: compressionFormat, depthParam[2]


def depth16_msg(mm, fmt="16UC1; compressedDepth png", header=None):
    ok, buf = cv2.imencode(".png", mm.astype(np.uint16))
    assert ok
    # The 16UC1 publisher leaves depthParam uninitialised: garbage the decoder must ignore.
    head = config_header(0, float("nan"), 1e30) if header is None else header
    return msg(fmt, head + buf.tobytes())


def quantise32(depth_m, depth_max=10.0, depth_quantization=100.0):
    """compressed_depth_image_transport's 32FC1 encoding: (q, a, b)."""
    a = np.float32(depth_quantization * (depth_quantization + 1.0))
    b = np.float32(1.0 - a / np.float32(depth_max))
    with np.errstate(invalid="ignore", divide="ignore"):
        keep = depth_m < depth_max  # NaN compares false: 0
        q = np.where(keep, a / np.where(keep, depth_m, 1) + b, 0)
    return np.trunc(q).astype(np.uint16), float(a), float(b)  # float → ushort truncates


def depth32_msg(depth_m, fmt="32FC1; compressedDepth png", **kw):
    q, a, b = quantise32(depth_m, **kw)
    ok, buf = cv2.imencode(".png", q)
    assert ok
    return msg(fmt, config_header(0, a, b) + buf.tobytes())


def png_with_size(data, width, height):
    """A PNG whose IHDR is rewritten to declare another size (CRC fixed: a header that lies)."""
    b = bytearray(data)
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    return bytes(b)


# --------------------------------------------------------------------------------------------
# Colour


@pytest.mark.parametrize("fmt", ["bgr8; png compressed bgr8", "rgb8; png compressed bgr8",
                                 "png", "rgba8; png compressed bgr8"])
def test_png_colour_round_trips_exactly(fmt):
    rgb = colour_image()
    out = cmp.rgb_from_compressed(png_msg(rgb[:, :, ::-1], fmt), expected_size=(W, H))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    assert np.array_equal(out, rgb)


def test_png_16_bit_and_grey_and_alpha():
    rgb = colour_image()
    # 16-bit values that are not exact multiples of 257
    rgb16 = np.minimum(rgb.astype(np.uint32) * 257 + 100, 65535).astype(np.uint16)
    out = cmp.rgb_from_compressed(png_msg(rgb16[:, :, ::-1], "rgb16; png compressed bgr16"))
    assert np.array_equal(out, ((rgb16.astype(np.uint32) * 255 + 32767) // 65535))
    grey = rgb[:, :, 0]
    out = cmp.rgb_from_compressed(png_msg(grey, "mono8; png compressed mono8"))
    assert np.array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))
    bgra = np.dstack([rgb[:, :, ::-1], np.full((H, W), 7, np.uint8)])
    assert np.array_equal(cmp.rgb_from_compressed(png_msg(bgra, "bgra8; png compressed bgr8")),
                          rgb)


def test_jpeg_colour_within_jpeg_error():
    rgb = colour_image()
    out = cmp.rgb_from_compressed(jpeg_msg(rgb), expected_size=(W, H))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    err = np.abs(out.astype(int) - rgb)
    assert err.mean() < 2.0 and np.percentile(err, 99) < 16, (err.mean(), err.max())
    # The channel order is right: swapping it would be off by ~100 levels.
    assert np.abs(out[:, :, ::-1].astype(int) - rgb).mean() > 30
    # An independent decoder of the same bytes agrees.
    pil = np.asarray(PILImage.open(io.BytesIO(bytes(jpeg_msg(rgb).data))).convert("RGB"))
    assert np.abs(out.astype(int) - pil).max() <= 2


def test_jpeg_legacy_formats():
    rgb = colour_image()
    assert np.abs(cmp.rgb_from_compressed(jpeg_msg(rgb, "jpeg")).astype(int) - rgb).mean() < 2
    # A publisher that compressed rgb8 bytes as they were (format says so): no swap.
    ok, buf = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = cmp.rgb_from_compressed(msg("rgb8; jpeg compressed rgb8", buf.tobytes()))
    assert np.abs(out.astype(int) - rgb).mean() < 2
    grey = cmp.rgb_from_compressed(jpeg_msg(np.repeat(rgb[:, :, :1], 3, 2),
                                            "mono8; jpeg compressed mono8"))
    assert np.abs(grey[:, :, 1].astype(int) - rgb[:, :, 0]).mean() < 2


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_colour_agrees_with_rosbags_image(codec):
    """An independent peer (rosbags-image, a test dependency) decodes the same message."""
    rosbags_image = pytest.importorskip("rosbags.image")
    rgb = colour_image()
    m = png_msg(rgb[:, :, ::-1]) if codec == "png" else jpeg_msg(rgb)
    theirs = rosbags_image.compressed_image_to_cvimage(m, "rgb8")
    assert np.array_equal(cmp.rgb_from_compressed(m), theirs)


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_header_size_matches_an_independent_reader(codec):
    rgb = colour_image(200, 90)
    data = bytes((png_msg(rgb) if codec == "png" else jpeg_msg(rgb)).data)
    head = cmp.image_header(data)
    assert (head.codec, head.width, head.height) == (codec, 200, 90)
    assert PILImage.open(io.BytesIO(data)).size == (head.width, head.height)


# --------------------------------------------------------------------------------------------
# Depth


def test_compressed_depth_16uc1_round_trips_exactly():
    d = depth_image_m()
    mm = conv.metres_to_depth16(d)
    out, encoding = cmp.depth_from_compressed(depth16_msg(mm), expected_size=(W, H))
    assert encoding == "16UC1" and out.dtype == np.float32 and out.shape == (H, W)
    ref = conv.depth_to_metres(mm, "16UC1")
    assert np.array_equal(np.isnan(out), np.isnan(ref)) and np.isnan(out[0, 0])
    assert np.array_equal(out[~np.isnan(ref)], ref[~np.isnan(ref)])
    # Older publishers: no codec after compressedDepth, or no suffix at all.
    for fmt in ("16UC1; compressedDepth", "16UC1"):
        again, _ = cmp.depth_from_compressed(depth16_msg(mm, fmt))
        assert np.array_equal(again, out, equal_nan=True)


def test_compressed_depth_32fc1_within_the_quantisation():
    d = depth_image_m()
    d[10, 10] = 12.0  # beyond the publisher's depth_max (10 m): sent as invalid
    out, encoding = cmp.depth_from_compressed(depth32_msg(d), expected_size=(W, H))
    assert encoding == "32FC1" and out.dtype == np.float32
    assert np.isnan(out[0, 0]) and np.isnan(out[10, 10])
    valid = np.isfinite(d) & (d < 10.0)
    assert np.isfinite(out[valid]).all()
    _, a, _ = quantise32(d)
    # q = floor(a / d + b) ≥ a / d + b - 1, so a / (q - b) ≤ a / (a / d - 1): the floor makes
    # the depth larger by at most d² / (a - d) (one step of q).
    step = d[valid] ** 2 / (a - d[valid])
    err = out[valid] - d[valid]
    assert np.all(err >= -1e-6 * d[valid]) and np.all(err <= step * 1.001 + 1e-6), err.max()
    assert err.max() > 0  # it is quantised (the test would not see a decoder returning d)


def test_compressed_depth_32fc1_other_quantisation_parameters():
    d = depth_image_m()
    out, _ = cmp.depth_from_compressed(depth32_msg(d, depth_max=4.0, depth_quantization=40.0))
    valid = np.isfinite(d) & (d < 4.0)
    a = 40 * 41
    assert np.all(np.abs(out[valid] - d[valid]) <= d[valid] ** 2 / (a - d[valid]) * 1.001 + 1e-6)
    assert np.isnan(out[np.isfinite(d) & (d >= 4.0)]).all()


# --------------------------------------------------------------------------------------------
# Bad payloads: named errors, nothing decoded that should not be


def err(fn, *args, **kw):
    with pytest.raises(InputError) as e:
        fn(*args, **kw)
    return e.value


@pytest.mark.parametrize("fmt", ["", "tiff", "rgb8; tiff compressed bgr8",
                                 "16UC1; compressedDepth png", "8UC3; jpeg compressed bgr8",
                                 "yuv422; png compressed bgr8"])
def test_unknown_colour_format_names_the_format(fmt):
    e = err(cmp.rgb_from_compressed, png_msg(colour_image(), fmt))
    assert e.field == "image.format", e


@pytest.mark.parametrize("fmt", ["16UC1; compressedDepth rvl", "8UC3; compressedDepth png",
                                 "16UC1; jpeg compressed bgr8", "32FC1; compressedDepth zstd"])
def test_unknown_depth_format_names_the_format(fmt):
    e = err(cmp.depth_from_compressed, depth16_msg(np.ones((H, W), np.uint16), fmt))
    assert e.field == "depth.format", e


def test_codec_that_is_not_the_declared_one():
    e = err(cmp.rgb_from_compressed, png_msg(colour_image(), "rgb8; jpeg compressed bgr8"))
    assert e.field == "image.data" and "PNG" in e.reason
    e = err(cmp.rgb_from_compressed, msg("png", b"GIF89a" + bytes(100)))
    assert e.field == "image.data" and "neither PNG nor JPEG" in e.reason


@pytest.mark.parametrize("codec", ["png", "jpeg"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "header_only"])
def test_corrupt_colour_payload_is_a_named_error(codec, damage):
    good = bytes((png_msg(colour_image()) if codec == "png" else jpeg_msg(colour_image())).data)
    data = {"truncated": good[: len(good) * 2 // 3], "empty": b"",
            "garbage": good[:2] + np.random.default_rng(0).bytes(len(good) - 2),
            "header_only": good[:40]}[damage]
    fmt = "bgr8; png compressed bgr8" if codec == "png" else "rgb8; jpeg compressed bgr8"
    e = err(cmp.rgb_from_compressed, msg(fmt, data), expected_size=(W, H))
    assert e.field == "image.data", e


def test_png_with_a_damaged_idat_is_refused():
    good = bytearray(png_msg(colour_image()).data)
    good[len(good) // 2] ^= 0xFF  # the IDAT CRC no longer matches
    e = err(cmp.rgb_from_compressed, msg("png", bytes(good)))
    assert e.field == "image.data" and "corrupt" in e.reason


def test_header_that_lies_about_the_size():
    data = bytes(png_msg(colour_image()).data)
    # Declares twice the size (allowed by the size guard): the pixel data is not there.
    e = err(cmp.rgb_from_compressed, msg("png", png_with_size(data, 2 * W, 2 * H)),
            expected_size=(W, H))
    assert e.field == "image.data" and "corrupt" in e.reason


def test_decompression_bomb_is_refused_before_decoding():
    data = png_with_size(bytes(png_msg(colour_image()).data), 100_000, 75_000)
    t0 = time.perf_counter()
    e = err(cmp.rgb_from_compressed, msg("png", data), expected_size=(W, H))
    assert time.perf_counter() - t0 < 0.05  # nothing was inflated
    assert e.field == "image.data" and "refused before decoding" in e.reason
    # Without a reference size the absolute cap still holds.
    e = err(cmp.rgb_from_compressed, msg("png", data))
    assert "refused before decoding" in e.reason and str(cmp.MAX_PIXELS) in e.reason


def test_oversized_or_other_aspect_against_camera_info():
    big = png_msg(colour_image(4 * W, 4 * H))  # a real 640x480 PNG for a 160x120 camera
    e = err(cmp.rgb_from_compressed, big, expected_size=(W, H))
    assert e.field == "image.data" and "refused before decoding" in e.reason
    wide = png_msg(colour_image(W, 90))
    e = err(cmp.rgb_from_compressed, wide, expected_size=(W, H), reference_name="camera_info")
    assert "aspect" in e.reason and "camera_info" in e.reason
    # Same camera at twice / half the resolution is fine (the raw path rescales it).
    assert cmp.rgb_from_compressed(png_msg(colour_image(2 * W, 2 * H)),
                                   expected_size=(W, H)).shape == (2 * H, 2 * W, 3)
    assert cmp.rgb_from_compressed(png_msg(colour_image(W // 2, H // 2)),
                                   expected_size=(W, H)).shape == (H // 2, W // 2, 3)


def test_bad_compressed_depth_payloads_name_the_field():
    mm = conv.metres_to_depth16(depth_image_m())
    good = bytes(depth16_msg(mm).data)
    cases = {
        "short": msg("16UC1; compressedDepth png", good[:12]),
        "format_enum": depth16_msg(mm, header=config_header(3)),
        "no_header": msg("16UC1; compressedDepth png", good[12:]),
        "truncated": msg("16UC1; compressedDepth png", good[: len(good) // 2]),
        "eight_bit": msg("16UC1; compressedDepth png",
                         config_header() + cv2.imencode(".png", (mm // 256).astype(np.uint8))[1]
                         .tobytes()),
        "colour_png": msg("16UC1; compressedDepth png",
                          config_header() + bytes(png_msg(colour_image()).data)),
        "quant_nan": msg("32FC1; compressedDepth png",
                         config_header(0, float("nan"), 0.5) + good[12:]),
        "quant_negative": msg("32FC1; compressedDepth png",
                              config_header(0, -10100.0, -1009.0) + good[12:]),
        "bomb": msg("16UC1; compressedDepth png",
                    good[:12] + png_with_size(good[12:], 100 * W, 100 * H)),
        "aspect": depth16_msg(mm[:, : W // 2]),
    }
    for name, m in cases.items():
        e = err(cmp.depth_from_compressed, m, expected_size=(W, H))
        assert e.field == "depth.data", (name, e)
    assert "refused before decoding" in err(cmp.depth_from_compressed, cases["bomb"],
                                            expected_size=(W, H)).reason


# --------------------------------------------------------------------------------------------
# The node's frame builder takes compressed messages like raw ones


def camera_info():
    m = CameraInfo(width=W, height=H)
    m.k = [200.0, 0.0, 79.5, 0.0, 200.0, 59.5, 0.0, 0.0, 1.0]
    return m


def test_camera_frame_from_compressed_equals_the_raw_path():
    rgb, d = colour_image(), depth_image_m()
    raw = build_camera_frame(numpy_to_image(rgb, "rgb8"),
                             numpy_to_image(conv.metres_to_depth16(d), "16UC1"), camera_info())
    comp = build_camera_frame(png_msg(rgb[:, :, ::-1]), depth16_msg(conv.metres_to_depth16(d)),
                              camera_info())
    assert np.array_equal(comp.frame.rgb, raw.frame.rgb)
    assert np.array_equal(comp.frame.points, raw.frame.points, equal_nan=True)
    # Mixed: compressed colour with raw depth, raw colour with compressedDepth 32FC1.
    mixed = build_camera_frame(png_msg(rgb[:, :, ::-1]), numpy_to_image(d, "32FC1"),
                               camera_info())
    assert np.array_equal(mixed.frame.rgb, raw.frame.rgb)
    mixed = build_camera_frame(numpy_to_image(rgb, "rgb8"), depth32_msg(d), camera_info())
    ok = np.isfinite(raw.frame.points[..., 2])
    assert np.allclose(mixed.frame.points[ok], raw.frame.points[ok], atol=0.002)


def test_camera_frame_compressed_errors_name_fields():
    rgb, d = colour_image(), depth_image_m()
    with pytest.raises(InputError) as e:  # colour checked against the CameraInfo
        build_camera_frame(png_msg(colour_image(W, 90)), depth16_msg(conv.metres_to_depth16(d)),
                           camera_info())
    assert e.value.field == "image.data" and "camera_info" in e.value.reason
    with pytest.raises(InputError) as e:  # depth checked against the colour image
        build_camera_frame(png_msg(rgb[:, :, ::-1]),
                           depth16_msg(conv.metres_to_depth16(d)[:, : W // 2]), camera_info())
    assert e.value.field == "depth.data" and "image" in e.value.reason
    with pytest.raises(InputError) as e:  # millimetres in a 32FC1 stream: refused as for raw
        build_camera_frame(png_msg(rgb[:, :, ::-1]), depth32_msg(d * 1000, depth_max=1e5),
                           camera_info())
    assert e.value.field == "depth.encoding"
