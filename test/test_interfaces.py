"""Generated interfaces import beside the hand-written modules and serialise."""

import os

import pytest
from rclpy.serialization import deserialize_message, serialize_message

from sam3d_ros import action as generated_actions
from sam3d_ros import msg as generated_msgs


def test_generated_and_handwritten_modules_share_the_installed_package():
    import sam3d_ros.action_queue  # noqa: F401
    import sam3d_ros.types  # noqa: F401 - hand-written module

    package_dir = os.path.dirname(sam3d_ros.__file__)
    assert os.path.dirname(generated_msgs.__file__).startswith(package_dir)
    assert os.path.isfile(os.path.join(package_dir, "types.py"))
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


def test_action_goal_result_feedback():
    goal = generated_actions.Reconstruct.Goal()
    assert goal.use_latest_frame is True and goal.write_artifacts is True and goal.seed == -1
    result = generated_actions.Reconstruct.Result(error="box_prompts[0].x_max: less than x_min")
    back = deserialize_message(serialize_message(result), generated_actions.Reconstruct.Result)
    assert back.error.startswith("box_prompts[0]")
    feedback = generated_actions.Reconstruct.Feedback(stage="queued", queue_position=2)
    assert feedback.progress == 0.0


# Upstream definitions (ros2/geometry2 tf2_msgs, ros-perception/vision_msgs 4.1.1): the pip-only
# builds must match them field for field so messages interoperate with real robots.
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
}


@pytest.mark.parametrize("package,name", sorted(UPSTREAM_FIELDS))
def test_third_party_interfaces_match_upstream(package, name):
    import importlib

    cls = getattr(importlib.import_module(f"{package}.msg"), name)
    fields = cls.get_fields_and_field_types()
    assert list(fields.items()) == list(UPSTREAM_FIELDS[(package, name)].items())
    assert deserialize_message(serialize_message(cls()), cls) == cls()
