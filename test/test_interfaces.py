"""Generated interfaces import beside the hand-written modules and serialise."""

import os

import pytest
from rclpy.serialization import deserialize_message, serialize_message

from sam3d_ros import action as generated_actions
from sam3d_ros import msg as generated_msgs


def test_generated_and_handwritten_modules_share_the_installed_package():
    import sam3d_ros.core.types  # noqa: F401 - hand-written module
    import sam3d_ros.ros.action_queue  # noqa: F401

    package_dir = os.path.dirname(sam3d_ros.__file__)
    assert os.path.dirname(generated_msgs.__file__).startswith(package_dir)
    assert os.path.isfile(os.path.join(package_dir, "core", "types.py"))
    assert "site-packages" in package_dir, "tests must run against the installed package"


@pytest.mark.parametrize(
    "name",
    [
        "PointPrompt",
        "BoxPrompt",
        "Prompt",
        "StageTiming",
        "ArtifactFile",
        "Artifacts",
        "ReconstructedObject",
        "ReconstructedObjectArray",
        "Grasp",
        "GraspArray",
    ],
)
def test_message_round_trip(name):
    cls = getattr(generated_msgs, name)
    message = cls()
    assert deserialize_message(serialize_message(message), cls) == message


def test_filled_prompt_round_trip_and_defaults():
    from sam3d_ros.msg import BoxPrompt, PointPrompt, Prompt
    from sensor_msgs.msg import Image

    assert PointPrompt().label == PointPrompt.LABEL_FOREGROUND == 1
    assert PointPrompt().object_id == -1 and Prompt().seed == -1
    prompt = Prompt(text="mug", seed=3)
    prompt.points = [PointPrompt(x=10, y=20, label=0, object_id=2)]
    prompt.boxes = [BoxPrompt(x_min=1, y_min=2, x_max=30, y_max=40, object_id=2)]
    prompt.masks = [Image(height=2, width=3, encoding="mono8", step=3, data=bytes(6))]
    prompt.mask_object_ids = [2]
    back = deserialize_message(serialize_message(prompt), Prompt)
    assert back == prompt
    assert back.boxes[0].x_max == 30 and back.points[0].label == 0


def test_filled_grasp_array_round_trip():
    from geometry_msgs.msg import Point
    from sam3d_ros.msg import Grasp, GraspArray

    # float32 fields: values exact in float32, so the round trip compares equal
    grasp = Grasp(object_id=4, rank=1, tcp_offset=0.125, width=0.0625, score=0.75)
    grasp.pose.position.z = 0.7
    grasp.contacts = [Point(x=-0.025), Point(x=0.025)]
    grasp.contacts_observed = [True, False]
    array = GraspArray(grasps=[grasp, Grasp()])
    array.header.frame_id = "cam"
    back = deserialize_message(serialize_message(array), GraspArray)
    assert back == array
    assert back.grasps[0].contacts[1].x == 0.025 and list(back.grasps[0].contacts_observed) == [
        True, False]
    assert len(Grasp().contacts) == 2  # fixed-size: always two contacts


def test_action_goal_result_feedback():
    goal = generated_actions.Reconstruct.Goal()
    assert goal.use_latest_frame is True and goal.write_artifacts is True and goal.seed == -1
    result = generated_actions.Reconstruct.Result(error="box_prompts[0].x_max: less than x_min")
    result.grasps.grasps = [generated_msgs.Grasp(object_id=2, width=0.03)]
    back = deserialize_message(serialize_message(result), generated_actions.Reconstruct.Result)
    assert back.error.startswith("box_prompts[0]")
    assert back.grasps.grasps[0].object_id == 2
    feedback = generated_actions.Reconstruct.Feedback(stage="queued", queue_position=2)
    assert feedback.progress == 0.0


# Upstream definitions (ros2/geometry2 tf2_msgs, ros-perception/vision_msgs 4.1.1,
# moveit/moveit_msgs 2.6.0 = commit 55f802fe3ac455123efcdba1037d3abf2c8e4dcb on the ros2 branch,
# wg-perception/object_recognition_msgs 2.0.0 = commit 811fb385ec4c1919dce2b30334fe9f49639073fd
# on the ros2 branch): the pip-only builds must match them field for field so messages
# interoperate with real robots (and MoveIt).
UPSTREAM_FIELDS = {
    ("tf2_msgs", "TFMessage"): {"transforms": "sequence<geometry_msgs/TransformStamped>"},
    ("vision_msgs", "Detection3DArray"): {
        "header": "std_msgs/Header",
        "detections": "sequence<vision_msgs/Detection3D>",
    },
    ("vision_msgs", "Detection3D"): {
        "header": "std_msgs/Header",
        "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
        "bbox": "vision_msgs/BoundingBox3D",
        "id": "string",
    },
    ("vision_msgs", "ObjectHypothesisWithPose"): {
        "hypothesis": "vision_msgs/ObjectHypothesis",
        "pose": "geometry_msgs/PoseWithCovariance",
    },
    ("vision_msgs", "ObjectHypothesis"): {"class_id": "string", "score": "double"},
    ("vision_msgs", "BoundingBox3D"): {
        "center": "geometry_msgs/Pose",
        "size": "geometry_msgs/Vector3",
    },
    ("object_recognition_msgs", "ObjectType"): {"key": "string", "db": "string"},
    ("moveit_msgs", "CollisionObject"): {
        "header": "std_msgs/Header",
        "pose": "geometry_msgs/Pose",
        "id": "string",
        "type": "object_recognition_msgs/ObjectType",
        "primitives": "sequence<shape_msgs/SolidPrimitive>",
        "primitive_poses": "sequence<geometry_msgs/Pose>",
        "meshes": "sequence<shape_msgs/Mesh>",
        "mesh_poses": "sequence<geometry_msgs/Pose>",
        "planes": "sequence<shape_msgs/Plane>",
        "plane_poses": "sequence<geometry_msgs/Pose>",
        "subframe_names": "sequence<string>",
        "subframe_poses": "sequence<geometry_msgs/Pose>",
        "operation": "octet",
    },
}
# Constants are part of the interface too (MoveIt switches on CollisionObject.operation).
UPSTREAM_CONSTANTS = {
    ("moveit_msgs", "CollisionObject"): {"ADD": 0, "REMOVE": 1, "APPEND": 2, "MOVE": 3},
}


@pytest.mark.parametrize("package,name", sorted(UPSTREAM_FIELDS))
def test_third_party_interfaces_match_upstream(package, name):
    import importlib

    cls = getattr(importlib.import_module(f"{package}.msg"), name)
    fields = cls.get_fields_and_field_types()
    assert list(fields.items()) == list(UPSTREAM_FIELDS[(package, name)].items())
    assert deserialize_message(serialize_message(cls()), cls) == cls()


@pytest.mark.parametrize("package,name", sorted(UPSTREAM_CONSTANTS))
def test_third_party_constants_match_upstream(package, name):
    import importlib

    cls = getattr(importlib.import_module(f"{package}.msg"), name)
    for constant, value in UPSTREAM_CONSTANTS[(package, name)].items():
        got = getattr(cls, constant)
        number = int.from_bytes(got, "little") if isinstance(got, bytes) else got  # byte fields
        assert number == value, (constant, got)
