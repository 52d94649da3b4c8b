"""The node process on compressed camera topics (image_transport's compressed / compressedDepth)
over real DDS: the same TF as the raw path, remapped base topics, a corrupt frame survived."""

from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import (
    FRAME_ID,
    Recorder,
    apply_prompt,
    box_prompt,
    camera_info,
    ros_context,
    running_node,
)
from node_harness import scene as make_scene
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from test_compressed import depth16_msg, depth32_msg, jpeg_msg, png_msg

from sam3d_ros.core.conventions import metres_to_depth16
from sam3d_ros.ros.conversions import numpy_to_image

PREFIX = "obj_"
THROTTLE = 0.5
# The launch file remaps the base topics; the node appends the transport's suffix after
# resolving them, as image_transport does.
COLOUR, DEPTH = "/cam/color/image_raw", "/cam/depth/image_raw"
PARAMS = {"tf_prefix": PREFIX, "sync_slop_s": 0.01, "warn_throttle_s": THROTTLE,
          "camera_qos_reliability": "reliable", "image_transport": "compressed",
          "depth_transport": "compressedDepth"}


@pytest.fixture(scope="module")
def env():
    sc = make_scene(seed=1)
    with ros_context(), running_node(PARAMS, extra=["-r", f"image:={COLOUR}",
                                                    "-r", f"depth:={DEPTH}"]) as node:
        rec = Recorder()
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub_image = rec.node.create_publisher(CompressedImage, f"{COLOUR}/compressed", reliable)
        pub_depth = rec.node.create_publisher(CompressedImage, f"{DEPTH}/compressedDepth",
                                              reliable)
        try:
            assert rec.wait(lambda: all(p.get_subscription_count() > 0 for p in
                                        (pub_image, pub_depth, rec.pub_info)), 20.0), node.log()
            assert f"{COLOUR}/compressed" in node.log() and "compressedDepth" in node.log()
            apply_prompt(rec, node, box_prompt(sc))
            yield sc, node, rec, pub_image, pub_depth
        finally:
            rec.close()


def publish(env, image_msg, depth_msg):
    sc, _, rec, pub_image, pub_depth = env
    header = Header(stamp=rec.stamp(), frame_id=FRAME_ID)
    image_msg.header = header
    depth_msg.header = header
    info = camera_info(sc.intrinsics)
    info.header = header
    pub_image.publish(image_msg)
    pub_depth.publish(depth_msg)
    rec.pub_info.publish(info)
    return header


def tf_for(rec, header, timeout=30.0):
    found = []

    def check():
        for msg in rec.get("tf"):
            if msg.transforms and msg.transforms[0].header.stamp == header.stamp:
                found.append(msg)
                return True
        return False

    assert rec.wait(check, timeout), "no /tf for the frame"
    return {t.child_frame_id: np.array([t.transform.translation.x, t.transform.translation.y,
                                        t.transform.translation.z]) for t in found[0].transforms}


def raw_path_translations(sc):
    """What the raw path computes for the same frame (the core on the raw messages)."""
    from sam3d_ros.core.camera_frame import build_camera_frame
    from sam3d_ros.core.engine import Engine
    from sam3d_ros.core.prompt_messages import query_from_prompt

    cam = build_camera_frame(numpy_to_image(sc.frame.rgb, "rgb8"),
                             numpy_to_image(metres_to_depth16(sc.depth_m), "16UC1"),
                             camera_info(sc.intrinsics))
    query, _ = query_from_prompt(box_prompt(sc), cam.frame.width, cam.frame.height)
    return {f"{PREFIX}{o.object_id}": np.asarray(o.translation)
            for o in Engine().process(cam.frame, query, 42).objects}


def test_png_and_compressed_depth_give_the_raw_path_tf(env):
    sc = env[0]
    header = publish(env, png_msg(sc.frame.rgb[:, :, ::-1]),
                     depth16_msg(metres_to_depth16(sc.depth_m)))
    got = tf_for(env[2], header)
    raw = raw_path_translations(sc)
    assert sorted(got) == sorted(raw) and len(got) == 3
    for key, t in raw.items():  # PNG and 16UC1 compressedDepth are lossless
        assert np.linalg.norm(got[key] - t) < 0.001, (key, got[key], t)


def test_jpeg_and_32fc1_compressed_depth_are_processed(env):
    sc = env[0]
    header = publish(env, jpeg_msg(sc.frame.rgb, quality=90), depth32_msg(sc.depth_m))
    got = tf_for(env[2], header)
    raw = raw_path_translations(sc)
    assert sorted(got) == sorted(raw)
    # Lossy colour and quantised depth move the segmentation a little: measured ≤ 8 mm on this
    # scene (JPEG quality 80-90); a channel swap or a wrong depth scale would be far off.
    for key, t in raw.items():
        assert np.linalg.norm(got[key] - t) < 0.02, (key, got[key], t)


@pytest.mark.parametrize("stream,field", [("image", "image.data"), ("depth", "depth.data"),
                                          ("format", "image.format")])
def test_corrupt_frame_is_reported_and_the_next_good_one_processed(env, stream, field):
    sc, node, rec, _, _ = env
    time.sleep(THROTTLE + 0.1)
    start_diag, start_log = rec.count("diagnostics"), node.line_count()
    image = png_msg(sc.frame.rgb[:, :, ::-1])
    depth = depth16_msg(metres_to_depth16(sc.depth_m))
    if stream == "image":
        image.data = bytes(image.data)[: len(image.data) // 2]  # truncated in transit
    elif stream == "depth":
        depth.data = bytes(depth.data)[:12] + bytes(200)  # header, then no PNG
    else:
        image.format = "rgb8; tiff compressed bgr8"
    publish(env, image, depth)
    diag = rec.wait_diag(
        lambda m: m.status[0].level == DiagnosticStatus.ERROR
        and rec.diag_values(m)["last_error_field"] == field, start=start_diag)
    assert diag is not None, node.log()[-3000:]
    assert rec.diag_values(diag)["image_transport"] == "compressed"
    assert node.wait_for_line(f"bad input: {field}", 5.0, start=start_log), node.log()[-2000:]
    assert node.alive()
    header = publish(env, png_msg(sc.frame.rgb[:, :, ::-1]),
                     depth16_msg(metres_to_depth16(sc.depth_m)))
    assert len(tf_for(rec, header)) == 3
    assert rec.wait_diag(lambda m: m.status[0].level != DiagnosticStatus.ERROR,
                         start=rec.count("diagnostics"))
    assert node.alive()


def test_raw_publishers_are_not_heard(env):
    """With compressed transports the raw topics are not subscribed (no silent mix-up)."""
    _, _, rec, _, _ = env
    raw_image = rec.node.create_publisher(Image, COLOUR, 10)
    try:
        time.sleep(1.0)
        assert raw_image.get_subscription_count() == 0
    finally:
        rec.node.destroy_publisher(raw_image)
