"""The node as its own process on a real ROS graph: outputs, accuracy, latest-frame scheduling,
bad input. One node process is shared by the tests of this module (they run in order)."""

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
    scene,
)
from sam3d_ros.msg import Prompt
from visualization_msgs.msg import Marker

from sam3d_ros.core.conventions import metres_to_depth16
from sam3d_ros.core.point_clouds import pointcloud2_to_arrays
from sam3d_ros.ros.conversions import numpy_to_image

PREFIX = "obj_"
ERROR = DiagnosticStatus.ERROR
THROTTLE = 0.5
# Reliable camera QoS here: best-effort delivery of single 300 kB frames on a loaded 2-core host
# loses some, and these tests publish one frame per check (test_node_lifecycle covers the
# default best_effort QoS and the QoS-mismatch warning).
# A 1 s diagnostics window: a case's failure is judged without the previous case's frames.
PARAMS = {"tf_prefix": PREFIX, "sync_slop_s": 0.01, "warn_throttle_s": THROTTLE,
          "camera_qos_reliability": "reliable", "diagnostics_window_s": 1.0}


@pytest.fixture(scope="module")
def env():
    sc = scene(seed=1)
    with ros_context(), running_node(PARAMS) as node:
        rec = Recorder()
        try:
            assert rec.wait_subscribed(), node.log()
            apply_prompt(rec, node, box_prompt(sc))
            yield sc, node, rec
        finally:
            rec.close()


def tf_for(rec, header, timeout=20.0):
    """The /tf message the node published for the frame with this header."""
    found = []

    def check():
        for msg in rec.get("tf"):
            if msg.transforms and msg.transforms[0].header.stamp == header.stamp:
                found.append(msg)
                return True
        return False

    assert rec.wait(check, timeout), "no /tf for the frame"
    return found[0]


def by_stamp(rec, key, header, timeout=10.0):
    found = []

    def check():
        for msg in rec.get(key):
            if msg.header.stamp == header.stamp:
                found.append(msg)
                return True
        return False

    assert rec.wait(check, timeout), f"no {key} for the frame"
    return found[0]


def publish_good(sc, rec):
    return rec.publish_frame(sc.frame.rgb, sc.depth_m, camera_info(sc.intrinsics))


def test_tf_one_frame_per_object_matches_the_core(env):
    from sam3d_ros.core.camera_frame import build_camera_frame
    from sam3d_ros.core.engine import Engine
    from sam3d_ros.core.prompt_messages import query_from_prompt

    sc, node, rec = env
    header = publish_good(sc, rec)
    tf = tf_for(rec, header)
    got = {t.child_frame_id: t for t in tf.transforms}
    assert sorted(got) == [f"{PREFIX}{o.object_id}" for o in sc.objects]
    assert all(t.header.frame_id == FRAME_ID for t in tf.transforms)

    # The node adds no error of its own: the same messages through the core in-process.
    depth_msg = numpy_to_image(metres_to_depth16(sc.depth_m), "16UC1", header)
    img_msg = numpy_to_image(sc.frame.rgb, "rgb8", header)
    cam = build_camera_frame(img_msg, depth_msg, camera_info(sc.intrinsics))
    query, _ = query_from_prompt(box_prompt(sc), cam.frame.width, cam.frame.height)
    ref = Engine().process(cam.frame, query, 42)
    for obj in ref.objects:
        t = got[f"{PREFIX}{obj.object_id}"].transform
        xyz = np.array([t.translation.x, t.translation.y, t.translation.z])
        q = np.array([t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w])
        assert np.allclose(xyz, obj.translation, atol=1e-4)
        assert abs(abs(float(q @ obj.rotation)) - 1.0) < 1e-6


def test_markers_points_detections_objects_agree(env):
    sc, node, rec = env
    header = publish_good(sc, rec)
    tf = tf_for(rec, header)
    ids = sorted(int(t.child_frame_id[len(PREFIX):]) for t in tf.transforms)
    tf_xyz = {int(t.child_frame_id[len(PREFIX):]): (t.transform.translation.x,
                                                    t.transform.translation.y,
                                                    t.transform.translation.z)
              for t in tf.transforms}

    objects = by_stamp(rec, "objects", header)
    dets = by_stamp(rec, "detections", header)
    points = by_stamp(rec, "points", header)
    debug = by_stamp(rec, "debug_image", header)
    assert objects.header.frame_id == dets.header.frame_id == points.header.frame_id == FRAME_ID
    assert debug.header.frame_id == FRAME_ID
    assert sorted(o.id for o in objects.objects) == ids
    assert [o.object_index for o in objects.objects] == list(range(len(ids)))
    assert objects.segmentation_backend == "embedded"
    assert objects.reconstruction_backend == "embedded"
    assert {t.stage for t in objects.timings} >= {"segment", "reconstruct", "total"}
    for obj in objects.objects:
        v = np.array([[p.x, p.y, p.z] for p in obj.mesh.vertices])
        size = np.array([obj.size.x, obj.size.y, obj.size.z])
        # Object frame, metres: centred on the pose, within the oriented box.
        assert np.all(np.abs(v) <= 0.5 * size + 2e-3)
        assert len(obj.vertex_colors) == len(obj.mesh.vertices)
        assert np.allclose([obj.pose.position.x, obj.pose.position.y, obj.pose.position.z],
                           tf_xyz[obj.id], atol=1e-9)

    assert sorted(int(d.id) for d in dets.detections) == ids
    for det in dets.detections:
        c = det.bbox.center.position
        assert np.allclose([c.x, c.y, c.z], tf_xyz[int(det.id)], atol=1e-9)
        assert det.results[0].pose.pose == det.bbox.center
        assert det.bbox.size.x > 0 and det.bbox.size.y > 0 and det.bbox.size.z > 0

    cloud = pointcloud2_to_arrays(points)
    index = np.asarray(cloud.object_index)
    assert sorted(set(index.tolist())) == list(range(len(ids)))
    xyz = np.asarray(cloud.xyz)
    for obj in objects.objects:  # each object's points lie around its centre
        mine = xyz[index == obj.object_index]
        centre = np.array(tf_xyz[obj.id])
        assert np.median(np.linalg.norm(mine - centre, axis=1)) < 0.15

    markers = [m for arr in rec.get("markers") for m in arr.markers
               if m.header.stamp == header.stamp]
    meshes = [m for m in markers if m.type == Marker.TRIANGLE_LIST and m.action == Marker.ADD]
    labels = [m for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    assert sorted(m.id for m in meshes) == ids and sorted(m.id for m in labels) == ids
    assert all(m.header.frame_id == FRAME_ID for m in markers)
    for m in meshes:
        assert len(m.points) % 3 == 0 and len(m.colors) == len(m.points) > 0
    # Labels sit above their objects along the table's normal (the camera looks down 35-55°,
    # so camera -y is far from "up").
    up = np.asarray(sc.table_plane.normal)
    for m in labels:
        offset = np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z]) - tf_xyz[m.id]
        angle = np.degrees(np.arccos(offset @ up / np.linalg.norm(offset)))
        assert angle < 5.0, f"label {m.id} is {angle:.1f}° off the table normal"
    assert (debug.width, debug.height, debug.encoding) == (sc.frame.width, sc.frame.height,
                                                           "rgb8")

    # An object that leaves the prompt has its markers deleted.
    apply_prompt(rec, node, box_prompt(sc).__class__(boxes=box_prompt(sc).boxes[:2]))
    header2 = publish_good(sc, rec)
    tf2 = tf_for(rec, header2)
    assert len(tf2.transforms) == 2
    gone = ids[2]
    assert rec.wait(lambda: any(
        m.action == Marker.DELETE and m.id == gone
        for arr in rec.get("markers") for m in arr.markers if m.header.stamp == header2.stamp))
    apply_prompt(rec, node, box_prompt(sc))


def test_ids_stable_without_prompt_ids(env):
    sc, node, rec = env
    apply_prompt(rec, node, box_prompt(sc, object_ids=False))
    seen = []
    for _ in range(3):
        tf = tf_for(rec, publish_good(sc, rec))
        seen.append(sorted(t.child_frame_id for t in tf.transforms))
    assert len(seen[0]) == 3
    assert seen[1] == seen[0] and seen[2] == seen[0]
    apply_prompt(rec, node, box_prompt(sc))


def test_30hz_input_keeps_only_the_latest_frame(env):
    sc, node, rec = env
    rec.clear()
    before = rec.idle_diag_values()  # not while the previous test's last frame is counted
    info = camera_info(sc.intrinsics)
    period, n = 1.0 / 30.0, 90
    t0 = time.monotonic()
    published = []
    burst_diag = rec.count("diagnostics")
    for i in range(n):
        published.append(rec.publish_frame(sc.frame.rgb, sc.depth_m, info))
        time.sleep(max(0.0, t0 + (i + 1) * period - time.monotonic()))
    # The input rate while the frames arrive (1 Hz diagnostics: two or three in the 3 s); read
    # later it has decayed, as it should once the input stops (CI under load: 8.4 Hz).
    during = [rec.diag_values(m) for m in rec.get("diagnostics")[burst_diag:] if m.status]
    last_header = published[-1]
    # Generous: the worker may still be on an earlier frame, and a loaded CI machine (two
    # cores, the DDS threads and this process publishing at 30 Hz) stretches every step.
    assert rec.wait(lambda: any(m.header.stamp == last_header.stamp for m in rec.get("objects")),
                    30.0), ("the newest frame was not processed",
                            rec.diag_values(rec.get("diagnostics")[-1])
                            if rec.get("diagnostics") else None)
    clock = rec.node.get_clock()
    processed = rec.get("objects")
    arrivals = list(rec.arrival["objects"])
    stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in processed]
    assert stamps == sorted(stamps)
    assert 2 <= len(processed) < n / 2, len(processed)
    # Processed frames are recent: no backlog builds up (age at output << 3 s of input).
    now_ros = clock.now().nanoseconds * 1e-9
    ages = [now_ros - (time.monotonic() - a) - s for a, s in zip(arrivals, stamps, strict=True)]
    diag = rec.wait_diag(lambda m: True, start=rec.count("diagnostics"))
    assert diag is not None
    values = rec.diag_values(diag)
    received = int(values["frames_received"]) - int(before["frames_received"])
    processed = int(values["frames_processed"]) - int(before["frames_processed"])
    dropped = int(values["frames_dropped"]) - int(before["frames_dropped"])
    # (received < n: the subscription's keep-last history overflows while the worker holds
    # the GIL; those frames were stale anyway)
    assert received >= n / 2 and dropped > 0 and processed < received / 2, values
    assert processed + dropped <= received
    # A FIFO falls further behind with every frame (age ≈ frames × processing time − 3 s); the
    # latest-frame slot keeps the age within about two processing times (the frame waited at
    # most one while the previous one was processed) plus transport. Relative to the node's own
    # processing time so that a loaded machine (slower everywhere) doesn't change the verdict.
    # The node measures stamp → /tf itself; the ages seen here add this process's own delays
    # (it deserialises every output while publishing at 30 Hz), so they get the FIFO bound only.
    processing_s = float(values["latency_receive_to_publish_ms_p95"]) / 1000.0
    node_age_s = float(values["latency_frame_to_tf_ms_p95"]) / 1000.0
    assert node_age_s < 2.0 * processing_s + 0.5, (node_age_s, processing_s, values)
    fifo_age_s = n * (processing_s - period)
    if fifo_age_s > 1.0:  # only meaningful when processing is much slower than the input
        assert max(ages) < 0.5 * fifo_age_s, (ages, fifo_age_s)
    # The input keeps being read while the worker is busy: above the processing rate (fewer
    # than half the frames are processed, asserted above), though under the 30 Hz sent (frames
    # wait in the keep-last queues while the worker holds the GIL; a loaded run read 9.2 Hz).
    rates = [float(v["input_rate_hz"]) for v in (during or [values])]
    assert max(rates) > 5.0, rates


BAD_CASES = ["encoding", "size_mismatch", "no_camera_info", "zero_depth", "nan_depth",
             "box_outside", "label_2", "empty_mask", "tiny_mask"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_warns_errors_and_recovers(env, case):
    sc, node, rec = env
    info = camera_info(sc.intrinsics)
    time.sleep(THROTTLE + 0.1)  # the previous case's warning is not throttling this one
    start_diag = rec.count("diagnostics")
    start_log = node.line_count()
    restore_prompt = False
    if case == "encoding":
        field = "image.encoding"
        header = rec.publish_frame(sc.frame.rgb, sc.depth_m, info, skip=("image",))
        bad = numpy_to_image(sc.frame.rgb, "8UC3", header)
        rec.pub_image.publish(bad)
    elif case == "size_mismatch":
        field = "depth"
        header = rec.publish_frame(sc.frame.rgb, None, info)
        rec.pub_depth.publish(numpy_to_image(metres_to_depth16(sc.depth_m[:, :300]), "16UC1",
                                             header))
    elif case == "no_camera_info":
        field = "camera_info"
        for _ in range(12):
            rec.publish_frame(sc.frame.rgb, sc.depth_m, info, skip=("camera_info",))
            time.sleep(0.1)
    elif case == "zero_depth":
        field = "depth"
        rec.publish_frame(sc.frame.rgb, np.zeros_like(sc.depth_m), info)
    elif case == "nan_depth":
        field = "depth"
        rec.publish_frame(sc.frame.rgb, np.full_like(sc.depth_m, np.nan), info,
                          depth_encoding="32FC1")
    elif case in ("box_outside", "label_2"):
        prompt = box_prompt(sc)
        if case == "box_outside":
            field = "prompt.boxes[0].x_max"
            prompt.boxes[0].x_max = sc.frame.width + 50
        else:
            field = "prompt.boxes[0].label"
            prompt.boxes[0].label = 2
        rec.pub_prompt.publish(prompt)
        restore_prompt = True
    elif case == "empty_mask":
        field = "prompt.masks[0]"
        empty = numpy_to_image(np.zeros((sc.frame.height, sc.frame.width), np.uint8), "mono8")
        rec.pub_prompt.publish(Prompt(masks=[empty]))
        restore_prompt = True
    elif case == "tiny_mask":
        # A non-empty mask with too few pixels to reconstruct: the reconstructor refuses it.
        field = "prompt.masks[0]"
        ys, xs = np.nonzero(sc.objects[0].visible_mask)
        mask = np.zeros((sc.frame.height, sc.frame.width), np.uint8)
        mask[int(np.median(ys)), int(np.median(xs))] = 255
        apply_prompt(rec, node, Prompt(masks=[numpy_to_image(mask, "mono8")]))
        rec.publish_frame(sc.frame.rgb, sc.depth_m, info)
        restore_prompt = True

    diag = rec.wait_diag(
        lambda m: m.status[0].level == ERROR
        and rec.diag_values(m)["last_error_field"].startswith(field), start=start_diag)
    assert diag is not None, f"no diagnostics error for {field}:\n{node.log()[-3000:]}"
    assert field in diag.status[0].message
    assert node.wait_for_line(f"bad input: {field}", 5.0, start=start_log), node.log()[-2000:]
    assert node.alive()

    if restore_prompt:
        apply_prompt(rec, node, box_prompt(sc))
    header = publish_good(sc, rec)
    assert len(tf_for(rec, header).transforms) == 3
    assert rec.wait_diag(lambda m: m.status[0].level != ERROR, start=rec.count("diagnostics"))
    assert node.alive()


def test_repeated_bad_frames_warn_throttled(env):
    sc, node, rec = env
    info = camera_info(sc.intrinsics)
    time.sleep(THROTTLE + 0.1)
    start_log = node.line_count()
    first = rec.wait_diag(lambda m: True, start=rec.count("diagnostics"))
    failures_before = int(rec.diag_values(first)["failures"])
    t0 = time.monotonic()
    for _ in range(20):
        rec.publish_frame(sc.frame.rgb, np.zeros_like(sc.depth_m), info)
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    diag = rec.wait_diag(lambda m: int(rec.diag_values(m)["failures"]) >= failures_before + 4,
                         start=rec.count("diagnostics") - 1)
    assert diag is not None
    failures = int(rec.diag_values(diag)["failures"]) - failures_before
    time.sleep(0.5)
    warnings = [ln for ln in node.lines[start_log:] if "bad input: depth" in ln]
    assert 1 <= len(warnings) <= elapsed / THROTTLE + 2 < failures + 2, (len(warnings), failures)
    header = publish_good(sc, rec)
    assert len(tf_for(rec, header).transforms) == 3
