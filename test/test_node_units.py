"""The node's ROS-free helpers: approximate-time sync, latest-frame slot, prompt validation,
camera frame building, parameter documentation (no ROS graph)."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from sam3d_ros.msg import BoxPrompt, PointPrompt, Prompt
from sensor_msgs.msg import CameraInfo

from sam3d_ros.core import conventions as conv
from sam3d_ros.core.camera_frame import build_camera_frame
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.frame_pairing import ApproxTimeSync, LatestSlot
from sam3d_ros.core.prompt_messages import query_from_prompt
from sam3d_ros.core.types import CameraIntrinsics
from sam3d_ros.ros.conversions import numpy_to_image
from sam3d_ros.ros.parameters import PARAMS

ROOT = Path(__file__).resolve().parent.parent
K = CameraIntrinsics(200.0, 200.0, 79.5, 59.5, 160, 120)


def info(k=K, width=None, height=None, frame="cam"):
    msg = CameraInfo(width=width or k.width, height=height or k.height)
    msg.k = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    msg.header.frame_id = frame
    return msg


def images(h=120, w=160, depth_m=1.0, frame="cam", depth_size=None, encoding="16UC1"):
    rgb = numpy_to_image(np.zeros((h, w, 3), np.uint8), "rgb8")
    dh, dw = depth_size or (h, w)
    d = np.full((dh, dw), depth_m, np.float32)
    depth = (numpy_to_image(conv.metres_to_depth16(d), "16UC1") if encoding == "16UC1"
             else numpy_to_image(d, "32FC1"))
    rgb.header.frame_id = frame
    depth.header.frame_id = frame
    return rgb, depth


class TestSync:
    def make(self, slop=0.01):
        out, bad = [], []
        sync = ApproxTimeSync(3, slop, out.append, lambda k, r: bad.append((k, r)),
                              expire_s=0.5, names=("image", "depth", "camera_info"),
                              consume=(True, True, False))
        return sync, out, bad

    def test_pairs_within_slop_in_any_arrival_order(self):
        sync, out, bad = self.make()
        sync.add(1, 1.000, "d1")
        sync.add(0, 1.005, "i1")
        assert out == []
        sync.add(2, 0.998, "c1")
        assert out == [["i1", "d1", "c1"]]
        sync.add(0, 2.0, "i2")
        sync.add(2, 2.0, "c2")
        sync.add(1, 2.02, "d2")  # 20 ms off: not paired
        assert len(out) == 1 and bad == []

    def test_newest_wins_and_older_pivots_are_consumed(self):
        sync, out, _ = self.make()
        for t in (1.0, 1.1, 1.2):
            sync.add(0, t, f"i{t}")
        for t in (1.0, 1.1, 1.2):
            sync.add(1, t, f"d{t}")
        sync.add(2, 1.2, "c")
        assert out == [["i1.2", "d1.2", "c"]]
        sync.add(2, 1.1, "c_old")
        assert len(out) == 1  # i1.0/i1.1 were consumed with the newer match

    def test_missing_topic_is_reported_when_images_expire(self):
        sync, out, bad = self.make()
        for i in range(8):
            sync.add(0, 0.1 * i, f"i{i}")
            sync.add(1, 0.1 * i, f"d{i}")
        assert out == [] and bad
        assert all(k == 2 and "no camera_info message received" in r for k, r in bad)
        sync.add(2, 5.0, "late")  # far off: reported with the nearest distance
        for i in range(8):
            sync.add(0, 1.0 + 0.1 * i, "x")
        assert "nearest is" in bad[-1][1] and sync.unmatched == len(bad)

    def test_thread_safe(self):
        sync, out, _ = self.make(slop=0.0)

        def feed(k):
            for i in range(300):
                sync.add(k, float(i), i)

        threads = [threading.Thread(target=feed, args=(k,)) for k in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert out and all(len(set(m)) == 1 for m in out)


def test_latest_slot_counts_replaced_frames():
    slot = LatestSlot()
    assert slot.take(timeout=0.01) is None
    assert slot.put(1) is False and slot.put(2) is True and slot.put(3) is True
    assert slot.drops == 2 and slot.take() == 3 and slot.take(timeout=0.01) is None
    got = []
    th = threading.Thread(target=lambda: got.append(slot.take(timeout=5.0)))
    th.start()
    time.sleep(0.05)
    slot.put(4)
    th.join()
    assert got == [4]


class TestPrompt:
    def test_boxes_points_grouping_and_explicit_ids(self):
        msg = Prompt(boxes=[BoxPrompt(x_min=1, y_min=2, x_max=30, y_max=40, object_id=4),
                            BoxPrompt(x_min=50, y_min=2, x_max=60, y_max=40)],
                     points=[PointPrompt(x=10, y=10, object_id=4)])
        query, explicit = query_from_prompt(msg, 160, 120)
        assert [o.object_id for o in query.objects] == [4, 5]
        assert query.objects[0].points[0].x == 10
        assert explicit == {4: 4}

    @pytest.mark.parametrize("mutate,field", [
        (lambda m: setattr(m.boxes[0], "x_max", 500), "prompt.boxes[0].x_max"),
        (lambda m: setattr(m.boxes[0], "label", 2), "prompt.boxes[0].label"),
        (lambda m: setattr(m.boxes[0], "y_max", 0), "prompt.boxes[0].y_max"),
        (lambda m: m.points.append(PointPrompt(x=-1, y=3)), "prompt.points[0].x"),
        (lambda m: setattr(m, "seed", 2**33), "prompt.seed"),
    ])
    def test_malformed_prompt_names_the_field(self, mutate, field):
        msg = Prompt(boxes=[BoxPrompt(x_min=1, y_min=2, x_max=30, y_max=40)])
        mutate(msg)
        with pytest.raises(InputError) as err:
            query_from_prompt(msg, 160, 120)
        assert err.value.field == field

    def test_size_checks_only_with_a_size(self):
        msg = Prompt(boxes=[BoxPrompt(x_min=1, y_min=2, x_max=3000, y_max=40)])
        query_from_prompt(msg)  # structure is fine; the size is unknown yet
        with pytest.raises(InputError):
            query_from_prompt(msg, 160, 120)

    def test_masks_precedence_ids_and_errors(self):
        m = np.zeros((120, 160), np.uint8)
        m[10:20, 10:20] = 255
        msg = Prompt(masks=[numpy_to_image(m, "mono8")], mask_object_ids=[12], text="mug",
                     boxes=[BoxPrompt(x_min=1, y_min=2, x_max=30, y_max=40)])
        query, explicit = query_from_prompt(msg, 160, 120)
        assert len(query.masks) == 1 and not query.objects and explicit == {0: 12}
        with pytest.raises(InputError, match="is 160x120 but the image is 80x60"):
            query_from_prompt(msg, 80, 60)
        empty = Prompt(masks=[numpy_to_image(np.zeros((120, 160), np.uint8), "mono8")])
        with pytest.raises(InputError) as err:
            query_from_prompt(empty, 160, 120)
        assert err.value.field == "prompt.masks[0]" and "empty" in err.value.reason
        msg.mask_object_ids = [1, 2]
        with pytest.raises(InputError) as err:
            query_from_prompt(msg, 160, 120)
        assert err.value.field == "prompt.mask_object_ids"

    def test_text_and_automatic(self):
        assert query_from_prompt(Prompt(text=" mug "), 160, 120)[0].text == "mug"
        q, explicit = query_from_prompt(None, 160, 120)
        assert not q.masks and not q.objects and q.text is None and explicit == {}


class TestCameraFrame:
    def test_16uc1_millimetres_and_32fc1_metres_agree(self):
        rgb, d16 = images(depth_m=0.8)
        _, d32 = images(depth_m=0.8, encoding="32FC1")
        a = build_camera_frame(rgb, d16, info()).frame.points
        b = build_camera_frame(rgb, d32, info()).frame.points
        assert np.allclose(a[..., 2], 0.8) and np.allclose(a, b, atol=1e-6)
        assert np.allclose(a[59, 79, :2], [-0.002, -0.002], atol=1e-6)  # (u - cx) z / fx

    def test_depth_at_half_resolution_is_rescaled(self):
        rgb, depth = images(depth_size=(60, 80))
        frame = build_camera_frame(rgb, depth, info()).frame
        assert frame.points.shape == (120, 160, 3)
        full = conv.backproject(np.ones((120, 160), np.float32), K)
        assert np.allclose(frame.points, full, atol=0.01)  # nearest depth pixel: within 1 px

    def test_camera_info_at_another_resolution_is_rescaled(self):
        rgb, depth = images()
        big = conv.scale_intrinsics(K, 320, 240)
        frame = build_camera_frame(rgb, depth, info(big)).frame
        assert frame.intrinsics.fx == pytest.approx(200.0)
        assert frame.intrinsics.cx == pytest.approx(79.5)

    @pytest.mark.parametrize("case,field", [
        ("aspect", "depth"), ("zero", "depth"), ("mm_in_32fc1", "depth.encoding"),
        ("m_in_16uc1", "depth.encoding"),
        ("info_aspect", "camera_info"), ("encoding", "image.encoding"), ("k", "camera_info.k"),
        ("empty_image", "image.width"),  # a 0x0 image, not blamed on the camera_info
    ])
    def test_bad_frames_name_the_field(self, case, field):
        rgb, depth = images()
        cam = info()
        if case == "aspect":
            rgb, depth = images(depth_size=(120, 100))
        elif case == "zero":
            rgb, depth = images(depth_m=0.0)
        elif case == "mm_in_32fc1":
            rgb, depth = images(depth_m=800.0, encoding="32FC1")
        elif case == "m_in_16uc1":  # metres rounded into 16UC1: 1 "mm" everywhere
            rgb, depth = images(depth_m=0.001)
        elif case == "info_aspect":
            cam = info(width=200, height=120)
        elif case == "encoding":
            rgb.encoding = "yuv422"
        elif case == "k":
            cam.k = [0.0] * 9
        elif case == "empty_image":
            rgb = numpy_to_image(np.zeros((0, 0, 3), np.uint8), "rgb8")
        with pytest.raises(InputError) as err:
            build_camera_frame(rgb, depth, cam)
        assert err.value.field == field

    def test_frame_id_mismatch_warns_once_per_call(self):
        rgb, depth = images()
        depth.header.frame_id = "depth_optical"
        warnings = []
        build_camera_frame(rgb, depth, info(), warn=lambda k, m: warnings.append(k))
        assert warnings == ["depth_frame_id"]


def test_every_parameter_is_in_the_yaml_and_the_docs():
    data = yaml.safe_load((ROOT / "config" / "sam3d.yaml").read_text())
    params = data["/**/sam3d"]["ros__parameters"]
    assert list(params) == [p.name for p in PARAMS]
    for p in PARAMS:
        assert params[p.name] == p.default, p.name
    docs = (ROOT / "README.md").read_text()
    for p in PARAMS:
        assert f"`{p.name}`" in docs, p.name
    for topic in ("~/objects", "~/detections", "~/markers", "~/points", "~/debug_image", "/tf",
                  "/diagnostics", "~/reconstruct", "`image`", "`depth`", "`camera_info`",
                  "`prompt`", "~/grasps", "~/grasp_poses", "~/grasp_markers",
                  "/collision_object"):
        assert topic in docs, topic
        assert topic in (ROOT / "docs" / "node.md").read_text(), topic


def test_the_grasp_planner_is_built_from_the_parameters():
    """grasp_top_k, grasp_max_samples and the gripper reach the planner the node builds."""
    from sam3d_ros.ros.engine_host import EngineHost

    values = {p.name: p.default for p in PARAMS}
    values.update(grasp_top_k=4, grasp_max_samples=512, gripper_max_opening=0.1, cpu_workers=3)
    planner = EngineHost(values.__getitem__, None)._grasp_planner()
    assert (planner.top_k, planner.max_samples, planner.gripper.max_opening) == (4, 512, 0.1)
    assert planner.workers == 3
    engine = EngineHost(values.__getitem__, None).build()
    assert engine.segmenter.workers == engine.reconstructor.workers == 3
    values["grasp_planner"] = "none"
    assert EngineHost(values.__getitem__, None)._grasp_planner() is None


class TestDroppedFrames:
    """A frame replaced in the latest-frame slot is never decoded; its headers are checked."""

    @staticmethod
    def node():
        from types import SimpleNamespace

        import rclpy.logging

        from sam3d_ros.ros.diagnostics import Reporter
        from sam3d_ros.ros.stats import PipelineStats

        stats = PipelineStats()
        report = Reporter(rclpy.logging.get_logger("test_dropped"), stats, lambda: 0.0)
        return SimpleNamespace(report=report), stats

    @staticmethod
    def frame(mutate=None):
        from sam3d_ros.ros.camera_input import CameraMessages

        rgb, depth = images()
        rgb.header.stamp.sec = 5
        msgs = CameraMessages(rgb, depth, info())
        if mutate is not None:
            mutate(msgs)
        return msgs

    @pytest.mark.parametrize("mutate,field", [
        (lambda m: setattr(m.image, "encoding", "yuv422"), "image.encoding"),
        (lambda m: setattr(m.image, "data", bytes(m.image.data)[:100]), "image.data"),
        (lambda m: setattr(m.depth, "data", bytes(100)), "depth.data"),
        (lambda m: setattr(m.camera_info, "k", [0.0] * 9), "camera_info.k"),
        (lambda m: setattr(m.image.header, "frame_id", ""), "image.header.frame_id"),
        (lambda m: setattr(m.image.header.stamp, "sec", 0), "image.header.stamp"),
    ])
    def test_a_bad_frame_replaced_unprocessed_is_reported(self, mutate, field):
        from sam3d_ros.ros.frame_worker import FrameWorker
        from sam3d_ros.ros.frames import check_dropped

        node, stats = self.node()
        dropped = []

        def on_dropped(msgs):
            dropped.append(msgs)
            check_dropped(node, msgs)

        # Not started: nothing takes the slot, so each submit replaces the frame waiting.
        worker = FrameWorker(lambda msgs, cancelled: None, lambda where, exc: None,
                             lambda: 0.0, lambda: True, on_dropped)
        bad = self.frame(mutate)
        worker.submit(bad)
        worker.submit(self.frame())
        assert dropped == [bad] and worker.drops == 1
        snap = stats.snapshot(10.0)
        assert snap.counts["failed"] == 1 and snap.last_error_field == field

    def test_a_good_frame_replaced_is_not_a_failure(self):
        from sam3d_ros.ros.frames import check_dropped

        node, stats = self.node()
        check_dropped(node, self.frame())
        assert stats.snapshot(10.0).counts["failed"] == 0
