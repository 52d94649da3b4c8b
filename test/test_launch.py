"""launch/sam3d.launch.xml, without launch_ros (not on PyPI): read the XML, resolve its
arguments and substitutions, start the INSTALLED node executable with exactly its parameter file
and remappings, and check the resulting ROS graph."""

from __future__ import annotations

import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

import pytest
import rclpy
from ament_index_python.packages import get_package_share_directory
from node_harness import NodeProcess, ros_context
from rcl_interfaces.srv import GetParameters
from rclpy.node import Node

# A venv prefix is an ament prefix too (tools/test.sh sets this; a bare pytest run may not).
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
SHARE = Path(get_package_share_directory("sam3d_ros"))
LAUNCH = SHARE / "launch" / "sam3d.launch.xml"
SUBST = re.compile(r"\$\((var|find-pkg-share) ([^)]+)\)")


def resolve(text: str, args: Dict[str, str]) -> str:
    def one(match):
        kind, value = match.group(1), match.group(2).strip()
        if kind == "var":
            return args[value]
        return get_package_share_directory(value)

    while SUBST.search(text):
        text = SUBST.sub(one, text)
    return text


def launch_plan(overrides: Dict[str, str]) -> Dict[str, object]:
    """What `ros2 launch sam3d_ros sam3d.launch.xml k:=v ...` would start (the sam3d node)."""
    root = ET.parse(LAUNCH).getroot()
    args: Dict[str, str] = {}
    for arg in root.findall("arg"):
        name = arg.get("name")
        args[name] = overrides.get(name, resolve(arg.get("default", ""), args))
    nodes = [n for n in root.findall("node") if n.get("exec") == "sam3d_node"]
    assert len(nodes) == 1
    node = nodes[0]
    assert node.get("pkg") == "sam3d_ros"
    params = [resolve(p.get("from"), args) for p in node.findall("param")]
    remaps = [(resolve(r.get("from"), args), resolve(r.get("to"), args))
              for r in node.findall("remap")]
    rviz = [n for n in root.findall("node") if n.get("exec") == "rviz2"]
    return {
        "args": args,
        "name": resolve(node.get("name"), args),
        "namespace": resolve(node.get("namespace", ""), args),
        "params": params,
        "remaps": remaps,
        "rviz_if": resolve(rviz[0].get("if"), args) if rviz else None,
        "rviz_args": resolve(rviz[0].get("args"), args) if rviz else None,
    }


def ros_args(plan) -> List[str]:
    out = ["-r", f"__node:={plan['name']}"]
    if plan["namespace"]:
        ns = plan["namespace"]
        out += ["-r", f"__ns:={ns if ns.startswith('/') else '/' + ns}"]
    for path in plan["params"]:
        out += ["--params-file", path]
    for src, dst in plan["remaps"]:
        out += ["-r", f"{src}:={dst}"]
    return out


def test_launch_file_defaults_and_rviz():
    plan = launch_plan({})
    assert plan["name"] == "sam3d" and plan["namespace"] == ""
    assert plan["params"] == [str(SHARE / "config" / "sam3d.yaml")]
    assert Path(plan["params"][0]).is_file()
    assert dict(plan["remaps"]) == {
        "image": "/camera/color/image_rect",
        "depth": "/camera/depth_registered/image_rect",
        "camera_info": "/camera/color/camera_info",
        "prompt": "prompt",
    }
    assert plan["rviz_if"] == "false"
    rviz_file = Path(plan["rviz_args"].split("-d", 1)[1].strip())
    assert rviz_file == SHARE / "config" / "sam3d.rviz" and rviz_file.is_file()
    text = rviz_file.read_text()
    for needle in ("/sam3d/markers", "/sam3d/points", "/sam3d/debug_image",
                   "rviz_default_plugins/TF", "rviz_default_plugins/Image"):
        assert needle in text


def graph(node: Node, name: str, ns: str):
    subs = dict(node.get_subscriber_names_and_types_by_node(name, ns))
    pubs = dict(node.get_publisher_names_and_types_by_node(name, ns))
    return subs, pubs


@pytest.mark.parametrize("case", ["defaults", "namespaced"])
def test_launched_node_graph(case, tmp_path):
    overrides: Dict[str, str] = {}
    tf_prefix = "sam3d_object_"
    if case == "namespaced":
        # Another parameter file (a copy with one value changed) proves the file is applied to
        # the node inside a namespace.
        tf_prefix = "robot1_object_"
        params = tmp_path / "params.yaml"
        params.write_text((SHARE / "config" / "sam3d.yaml").read_text().replace(
            'tf_prefix: "sam3d_object_"', f'tf_prefix: "{tf_prefix}"'))
        overrides = {"namespace": "robot1", "image": "/cam/rgb", "prompt": "/operator/prompt",
                     "params_file": str(params)}
    plan = launch_plan(overrides)
    ns = "/" + plan["namespace"] if plan["namespace"] else "/"
    private = f"{ns.rstrip('/')}/{plan['name']}"
    with ros_context():
        node_proc = NodeProcess(ros_args(plan))
        try:
            assert node_proc.wait_for_line("active: processing", 60.0), node_proc.log()
            peer = Node("sam3d_launch_check")
            try:
                deadline = time.monotonic() + 20.0
                expected_subs = {
                    dict(plan["remaps"])["image"]: "sensor_msgs/msg/Image",
                    dict(plan["remaps"])["depth"]: "sensor_msgs/msg/Image",
                    dict(plan["remaps"])["camera_info"]: "sensor_msgs/msg/CameraInfo",
                }
                prompt = dict(plan["remaps"])["prompt"]
                prompt = prompt if prompt.startswith("/") else f"{ns.rstrip('/')}/{prompt}"
                expected_subs[prompt] = "sam3d_ros/msg/Prompt"
                expected_pubs = {
                    f"{private}/objects": "sam3d_ros/msg/ReconstructedObjectArray",
                    f"{private}/detections": "vision_msgs/msg/Detection3DArray",
                    f"{private}/markers": "visualization_msgs/msg/MarkerArray",
                    f"{private}/points": "sensor_msgs/msg/PointCloud2",
                    f"{private}/debug_image": "sensor_msgs/msg/Image",
                    "/tf": "tf2_msgs/msg/TFMessage",
                    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
                }
                while True:
                    rclpy.spin_once(peer, timeout_sec=0.1)
                    names = peer.get_node_names_and_namespaces()
                    if (plan["name"], ns) in names:
                        subs, pubs = graph(peer, plan["name"], ns)
                        if all(subs.get(t) == [ty] for t, ty in expected_subs.items()) and all(
                                pubs.get(t) == [ty] for t, ty in expected_pubs.items()):
                            break
                    assert time.monotonic() < deadline, (names, node_proc.log())
                # The action server is there too.
                actions = [n for n, _ in peer.get_service_names_and_types_by_node(
                    plan["name"], ns) if n.startswith(f"{private}/reconstruct/_action/")]
                assert actions

                # The parameter file applied (its key matches the node in any namespace).
                client = peer.create_client(GetParameters, f"{private}/get_parameters")
                assert client.wait_for_service(timeout_sec=10.0)
                future = client.call_async(GetParameters.Request(
                    names=["tf_prefix", "marker_max_triangles", "camera_qos_reliability"]))
                rclpy.spin_until_future_complete(peer, future, timeout_sec=10.0)
                values = future.result().values
                assert values[0].string_value == tf_prefix
                assert values[1].integer_value == 1000
                assert values[2].string_value == "best_effort"
            finally:
                peer.destroy_node()
        finally:
            node_proc.stop()
