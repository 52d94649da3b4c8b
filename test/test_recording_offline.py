"""``sam3d-reconstruct --bag``: small recordings made here (rosbags), processed, read back.

The expected TF of a frame is what the engine gives for that frame decoded the way the node
decodes it (``build_camera_frame`` of the recording's messages) with the same prompt and seed;
the output recording must carry it, with the inputs' stamps and frame ids.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sam3d_bench.recordings import (
    COMPRESSED_TOPICS,
    TOPICS,
    example_request,
    make_recording,
    read_back,
)
from sam3d_ros.core.camera_frame import build_camera_frame
from sam3d_ros.core.cli import main
from sam3d_ros.core.engine import Engine
from sam3d_ros.core.inputs import parse_query
from sam3d_ros.core.recording.typestore import make_typestore

OUTPUTS = ["/tf", "/sam3d/objects", "/sam3d/detections", "/sam3d/markers", "/sam3d/points",
           "/sam3d/grasps", "/sam3d/grasp_poses", "/sam3d/grasp_markers"]


def _run(tmp_path, bag, *extra, request=True):
    args = ["--bag", str(bag), "--output", str(tmp_path / "out"), "-q", *extra]
    if request:
        args += ["--request", str(example_request(tmp_path / "request.json"))]
    return main(args)


def _expected_tf(bag: Path, frame: int, topics=TOPICS):
    """TF (child → translation, rotation) of one frame: decoded as the node does, engine run."""
    msgs = read_back(bag, topics=[topics["image"], topics["depth"], topics["camera_info"]])
    image, depth, info = (msgs[topics[k]][frame][1] for k in ("image", "depth", "camera_info"))
    cam = build_camera_frame(image, depth, info)
    request = {"box_prompts": json.loads((bag.parent / "request.json").read_text())[
        "box_prompts"]}
    query = parse_query(request, cam.frame.width, cam.frame.height)
    res = Engine().process(cam.frame, query, 42, allow_empty=True)
    return {f"sam3d_object_{o.object_id}": (o.translation, o.rotation) for o in res.objects}


@pytest.mark.parametrize("storage,compressed", [("mcap", False), ("sqlite3", True)])
def test_recording_end_to_end(tmp_path, storage, compressed, capsys):
    bag = make_recording(tmp_path / "in", frames=3, storage=storage, compressed=compressed)
    assert _run(tmp_path, bag) == 0
    topics = COMPRESSED_TOPICS if compressed else TOPICS
    out = read_back(tmp_path / "out")
    assert (tmp_path / "out" / "metadata.yaml").is_file()
    assert list((tmp_path / "out").glob("*.mcap"))
    for topic in OUTPUTS + [topics["image"], topics["depth"], topics["camera_info"]]:
        assert len(out[topic]) == 3, topic
    # The inputs' stamps and frames carry through to every output of the frame.
    in_stamps = [m.header.stamp for _, m in read_back(bag, topics=[topics["image"]])[
        topics["image"]]]
    for k, (log_ns, tf) in enumerate(out["/tf"]):
        stamp = tf.transforms[0].header.stamp
        assert (stamp.sec, stamp.nanosec) == (in_stamps[k].sec, in_stamps[k].nanosec)
        assert tf.transforms[0].header.frame_id == "camera_color_optical_frame"
        assert out["/sam3d/objects"][k][0] == log_ns
    assert len(out["/sam3d/objects"][0][1].objects) == 3
    assert len(out["/sam3d/detections"][0][1].detections) == 3
    # TF values of frame 1 equal the engine's result for that frame decoded as the node does.
    expected = _expected_tf(bag, 1, topics)
    got = {t.child_frame_id: t for t in out["/tf"][1][1].transforms}
    assert sorted(got) == sorted(expected) == ["sam3d_object_1", "sam3d_object_2",
                                               "sam3d_object_3"]
    for child, (translation, rotation) in expected.items():
        t = got[child].transform
        np.testing.assert_allclose([t.translation.x, t.translation.y, t.translation.z],
                                   translation, atol=1e-9)
        q = np.array([t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w])
        r = np.asarray(rotation, dtype=np.float64)
        assert min(np.abs(q - r).max(), np.abs(q + r).max()) < 1e-9
    assert "processed 3 frame(s), 9 object(s)" in capsys.readouterr().out


def test_prompt_topic_in_the_recording(tmp_path):
    bag = make_recording(tmp_path / "in", frames=2, boxes_topic=True)
    assert _run(tmp_path, bag, request=False) == 0
    out = read_back(tmp_path / "out")
    children = sorted(t.child_frame_id for t in out["/tf"][0][1].transforms)
    assert children == ["sam3d_object_1", "sam3d_object_2", "sam3d_object_3"]


def test_frame_selection(tmp_path):
    bag = make_recording(tmp_path / "in", frames=6)
    assert _run(tmp_path, bag, "--every", "2", "--no-inputs") == 0
    out = read_back(tmp_path / "out")
    in_stamps = [m.header.stamp.nanosec for _, m in read_back(bag)[TOPICS["image"]]]
    assert [m.header.stamp.nanosec for _, m in out["/sam3d/objects"]] == in_stamps[0::2]
    assert TOPICS["image"] not in out
    (tmp_path / "request.json").unlink()
    os.rename(tmp_path / "out", tmp_path / "first")
    # 0.25 s into the recording onwards, at most 4 Hz of stamps (frames are 0.1 s apart).
    assert _run(tmp_path, bag, "--start", "0.25", "--max-rate", "4") == 0
    out = read_back(tmp_path / "out")
    assert [m.header.stamp.nanosec for _, m in out["/sam3d/objects"]] == [in_stamps[3]]


def test_truncated_mcap_processes_what_it_can(tmp_path, capsys):
    bag = make_recording(tmp_path / "in", frames=30)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert _run(tmp_path, cut, "--no-inputs") == 0
    out = read_back(tmp_path / "out")
    done = len(out["/sam3d/objects"])
    assert 0 < done < 30
    text = capsys.readouterr().out
    assert f"processed {done} frame(s)" in text
    assert "no summary (truncated" in text and "the rest of the file after the break" in text


def test_missing_topic_is_named(tmp_path, capsys):
    bag = make_recording(tmp_path / "in", frames=2, skip=("depth",))
    assert _run(tmp_path, bag) == 2
    err = capsys.readouterr().err
    assert "error: --depth-topic: no depth image topic in the recording" in err
    assert not (tmp_path / "out").exists()
    assert _run(tmp_path, bag, "--camera-info-topic", "/nope") == 2
    assert "--camera-info-topic: topic '/nope' is not in the recording" in capsys.readouterr().err
    assert not list(tmp_path.glob(".out*"))


def test_stamps_that_do_not_pair(tmp_path, capsys):
    # Frame 1's depth is 50 ms off its image: beyond the default sync_slop_s of 20 ms.
    bag = make_recording(tmp_path / "in", frames=3, depth_offset_ns=(0, 50_000_000, 0))
    assert _run(tmp_path, bag) == 0
    out = read_back(tmp_path / "out")
    in_stamps = [m.header.stamp.nanosec for _, m in read_back(bag)[TOPICS["image"]]]
    assert [m.header.stamp.nanosec for _, m in out["/sam3d/objects"]] == [in_stamps[0],
                                                                           in_stamps[2]]
    text = capsys.readouterr().out
    assert "1 unpaired image(s)" in text
    assert f"stamp 1700000000.{in_stamps[1]:09d}"[:-3] in text
    assert "not paired: no depth and CameraInfo within sync_slop_s=0.02 s" in text
    # A larger slop pairs it.
    (tmp_path / "request.json").unlink()
    os.rename(tmp_path / "out", tmp_path / "first")
    assert _run(tmp_path, bag, "--sync-slop", "0.06") == 0
    assert len(read_back(tmp_path / "out")["/sam3d/objects"]) == 3


def test_a_frame_without_frame_id_is_skipped_and_named(tmp_path, capsys):
    # As the node refuses it: outputs and TF cannot be published in the frame "".
    bag = make_recording(tmp_path / "in", frames=3, blank_frame_ids=(1,))
    assert _run(tmp_path, bag) == 0
    out = read_back(tmp_path / "out")
    in_stamps = [m.header.stamp.nanosec for _, m in read_back(bag)[TOPICS["image"]]]
    assert [m.header.stamp.nanosec for _, m in out["/sam3d/objects"]] == [in_stamps[0],
                                                                           in_stamps[2]]
    assert all(t.header.frame_id for _, m in out["/tf"] for t in m.transforms)
    text = capsys.readouterr().out
    assert "frame 1 (stamp" in text and "image.header.frame_id: is empty" in text


def test_interrupted_run_leaves_a_readable_recording(tmp_path):
    bag = make_recording(tmp_path / "in", frames=40)
    request = example_request(tmp_path / "request.json")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-P", "-c", "import sys; from sam3d_ros.core.cli import main; "
         "sys.exit(main(sys.argv[1:]))", "--bag", str(bag), "--request", str(request),
         "--output", str(out), "--no-inputs"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait for the first processed frame (the progress line), then stop it like Ctrl-C would.
    seen = ""
    while "[1/" not in seen:
        ch = proc.stderr.read(1)
        assert ch, f"run ended early: {seen}{proc.stdout.read()}"
        seen += ch
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stdout + stderr  # SIGTERM, as for a single request
    assert "terminated: the output holds the frames processed so far" in stdout
    done = len(read_back(out)["/sam3d/objects"])
    assert 1 <= done < 40
    assert not list(tmp_path.glob(".out*"))


def test_offline_path_never_imports_rclpy(tmp_path):
    bag = make_recording(tmp_path / "in", frames=1)
    request = example_request(tmp_path / "request.json")
    script = textwrap.dedent(f"""
        import sys

        class NoRos:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("rclpy", "rosidl_runtime_py", "sensor_msgs"):
                    raise ImportError("ROS is not allowed here: " + name)

        sys.meta_path.insert(0, NoRos())
        from sam3d_ros.core.cli import main
        sys.exit(main(["--bag", {str(bag)!r}, "--request", {str(request)!r},
                       "--output", {str(tmp_path / 'out')!r}, "-q"]))
    """)
    proc = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(read_back(tmp_path / "out")["/tf"]) == 1


def test_typestore_has_the_project_messages():
    store = make_typestore("jazzy")
    for name in ("sam3d_ros/msg/ReconstructedObjectArray", "sam3d_ros/msg/GraspArray",
                 "sam3d_ros/msg/Prompt", "vision_msgs/msg/Detection3DArray",
                 "tf2_msgs/msg/TFMessage"):
        assert name in store.types


def test_long_recording_repeats_distinct_frames_with_advancing_stamps(tmp_path):
    """``make_recording(distinct=N)`` (the long benchmark recording): frame i is frame i % N."""
    bag = make_recording(tmp_path / "in", frames=5, period_ns=50_000_000, distinct=2)
    msgs = read_back(bag)
    images, depths = msgs[TOPICS["image"]], msgs[TOPICS["depth"]]
    assert len(images) == len(depths) == len(msgs[TOPICS["camera_info"]]) == 5
    for key in ("image", "depth", "camera_info"):
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
                  for _, m in msgs[TOPICS[key]]]
        assert np.diff(stamps).tolist() == [50_000_000] * 4
    data = [bytes(m.data) for _, m in depths]
    assert data[0] != data[1]  # two noise draws
    assert data[2:] == [data[0], data[1], data[0]]
