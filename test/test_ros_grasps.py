"""Grasp output messages built directly from core grasps (no ROS graph)."""

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sam3d_ros.msg import GraspArray
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from sam3d_ros.backends.grasp.analytic import GripperModel
from sam3d_ros.core import conventions as conv
from sam3d_ros.core import grasp_messages as rg
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.types import Grasp
from sam3d_ros.ros.message_kit import RCLPY

HEADER = Header(frame_id="cam_optical")
GRIPPER = GripperModel()


class _Obj:
    """The two fields the grasp outputs read of an object (its tracked id and nothing else)."""

    def __init__(self, object_id):
        self.object_id = object_id


def make_grasp(position, approach, closing, width=0.04, score=0.5, object_id=0, contacts=True,
               observed=(True, False)):
    q = conv.grasp_quaternion(approach, closing)
    p = np.asarray(position, dtype=np.float64)
    y = conv.grasp_rotation(approach, closing)[:, 1]
    c = np.stack([p - 0.5 * width * y, p + 0.5 * width * y]) if contacts else None
    return Grasp(position=p, orientation=q, width=width, score=score, object_id=object_id,
                 contacts=c, contacts_observed=None if observed is None else np.array(observed))


def xyz(p):
    return np.array([p.x, p.y, p.z])


def xyzw(q):
    return np.array([q.x, q.y, q.z, q.w])


@pytest.mark.parametrize("value,expected", [
    ("from_above", None), ("camera", [0.0, 0.0, 1.0]), ("0, 2, 0", [0.0, 1.0, 0.0]),
    ("[1, 1, 0]", [2 ** -0.5, 2 ** -0.5, 0.0]), ("0 0 -3", [0.0, 0.0, -1.0])])
def test_parse_approach(value, expected):
    got = rg.parse_approach(value)
    assert (got is None) if expected is None else np.allclose(got, expected)


@pytest.mark.parametrize("value", ["up", "1,2", "0,0,0", "nan,0,1", "", "1,2,3,4"])
def test_parse_approach_rejects_with_the_field_named(value):
    with pytest.raises(InputError) as err:
        rg.parse_approach(value)
    assert err.value.field == "grasp_approach" and repr(value) in err.value.reason


def test_grasp_message_grasp_frame_and_tcp_offset():
    g = make_grasp([0.1, 0.2, 0.7], approach=[0, 0.6, 0.8], closing=[1, 0, 0], width=0.05,
                   score=0.9)
    plain = rg.grasp_msg(RCLPY, g, object_id=7, rank=2)
    assert (plain.object_id, plain.rank, plain.tcp_offset) == (7, 2, 0.0)
    assert np.allclose(xyz(plain.pose.position), g.position)
    assert abs(abs(xyzw(plain.pose.orientation) @ g.orientation) - 1) < 1e-9
    assert plain.width == pytest.approx(0.05) and plain.score == pytest.approx(0.9)
    assert np.allclose([xyz(c) for c in plain.contacts], g.contacts)
    assert list(plain.contacts_observed) == [True, False]

    ee = rg.grasp_msg(RCLPY, g, 7, 2, tcp_offset=0.1034)
    # The end-effector link sits 0.1034 m back along the approach (+z of the grasp frame).
    approach = np.array([0, 0.6, 0.8])
    assert np.allclose(xyz(ee.pose.position), g.position - 0.1034 * approach)
    assert abs(abs(xyzw(ee.pose.orientation) @ g.orientation) - 1) < 1e-9
    assert ee.tcp_offset == pytest.approx(0.1034)
    assert np.allclose([xyz(c) for c in ee.contacts], g.contacts)  # contacts do not move
    back = deserialize_message(serialize_message(ee), type(ee))
    assert back.object_id == 7 and back.pose == ee.pose


def test_contacts_from_the_contract_when_the_planner_gave_none():
    g = make_grasp([0.0, 0.0, 0.5], [0, 0, 1], [0, 1, 0], width=0.03, contacts=False,
                   observed=None)
    msg = rg.grasp_msg(RCLPY, g, 1, 0)
    assert np.allclose([xyz(c) for c in msg.contacts], [[0, -0.015, 0.5], [0, 0.015, 0.5]])
    assert list(msg.contacts_observed) == [False, False]


def test_array_and_pose_array_use_tracked_ids_in_object_order():
    objects = [_Obj(11), _Obj(4)]
    grasps = [[make_grasp([0, 0, 0.5], [0, 0, 1], [1, 0, 0], score=0.9, object_id=0),
               make_grasp([0, 0.01, 0.5], [0, 0, 1], [0, 1, 0], score=0.4, object_id=0)],
              [make_grasp([0.2, 0, 0.6], [0, 1, 0], [1, 0, 0], score=0.7, object_id=1)]]
    array = rg.grasp_array_msg(RCLPY, HEADER, objects, grasps, tcp_offset=0.05)
    assert [(g.object_id, g.rank) for g in array.grasps] == [(11, 0), (11, 1), (4, 0)]
    assert array.header.frame_id == "cam_optical"
    poses = rg.grasp_pose_array_msg(RCLPY, HEADER, objects, grasps, tcp_offset=0.05)
    assert [p for p in poses.poses] == [g.pose for g in array.grasps]
    assert np.allclose(xyz(poses.poses[2].position), [0.2, -0.05, 0.6])
    back = deserialize_message(serialize_message(array), GraspArray)
    assert [g.object_id for g in back.grasps] == [11, 11, 4]
    with pytest.raises(ValueError):
        rg.grasp_array_msg(RCLPY, HEADER, objects, grasps[:1])


def test_markers_draw_the_gripper_at_the_contacts():
    g = make_grasp([0.05, -0.02, 0.6], approach=[0, 0.6, 0.8], closing=[1, 0, 0], width=0.05)
    markers, count = rg.grasp_markers_msg(RCLPY, HEADER, [_Obj(3)], [[g]], GRIPPER)
    assert count == 1 and len(markers.markers) == 1
    m = markers.markers[0]
    assert (m.ns, m.id, m.type, m.action) == (rg.GRASP_NS, 0, Marker.LINE_LIST, Marker.ADD)
    assert m.header.frame_id == "cam_optical" and len(m.points) % 2 == 0
    # Marker points are in the grasp frame: map them to the camera frame with the marker pose.
    local = np.array([xyz(p) for p in m.points])
    cam = conv.quat_rotate(xyzw(m.pose.orientation), local) + xyz(m.pose.position)
    y = conv.grasp_rotation([0, 0.6, 0.8], [1, 0, 0])[:, 1]
    z = conv.grasp_rotation([0, 0.6, 0.8], [1, 0, 0])[:, 2]
    for contact in g.contacts:
        # The finger through each contact reaches contact_depth past it, towards +z.
        tip = contact + GRIPPER.contact_depth * z
        assert np.min(np.linalg.norm(cam - tip, axis=1)) < 1e-9
    # The stem ends at the end-effector link: tcp_offset behind the grasp origin.
    ee = g.position - GRIPPER.tcp_offset * z
    assert np.min(np.linalg.norm(cam - ee, axis=1)) < 1e-9
    assert abs(np.ptp(local[:, 1]) - 0.05) < 1e-12  # fingers exactly width apart (along y)
    assert np.allclose(y, conv.grasp_axes(g.orientation)[1])


def test_markers_best_first_highlighted_capped_and_deleted():
    objects = [_Obj(1), _Obj(2)]
    grasps = [[make_grasp([0, 0, 0.5 + 0.01 * k], [0, 0, 1], [1, 0, 0]) for k in range(3)],
              [make_grasp([0.2, 0, 0.5 + 0.01 * k], [0, 0, 1], [1, 0, 0]) for k in range(2)]]
    markers, count = rg.grasp_markers_msg(RCLPY, HEADER, objects, grasps, GRIPPER, max_markers=3)
    assert count == 3
    drawn = [(m.pose.position.x, round(m.pose.position.z, 3)) for m in markers.markers]
    # Each object's best grasp first, then the second best of the first object.
    assert drawn == [(0.0, 0.5), (0.2, 0.5), (0.0, 0.51)]
    alphas = [m.color.a for m in markers.markers]
    widths = [m.scale.x for m in markers.markers]
    assert alphas[0] == alphas[1] == 1.0 and alphas[2] < 0.5
    assert widths[0] == widths[1] > widths[2]
    assert markers.markers[0].color != markers.markers[1].color  # per-object colours

    # Next frame: one object left with one grasp: ids 1 and 2 are deleted.
    again, count2 = rg.grasp_markers_msg(RCLPY, HEADER, objects[:1], [grasps[0][:1]],
                                         GRIPPER, previous_count=count, max_markers=3)
    assert count2 == 1
    assert [(m.id, m.action) for m in again.markers] == [
        (0, Marker.ADD), (1, Marker.DELETE), (2, Marker.DELETE)]


def test_grasp_outputs_publish_only_to_subscribed_topics_and_keep_the_marker_count():
    class FakePublisher:
        """Contract fake of an rclpy publisher: records messages, settable subscriber count."""

        def __init__(self, subscribers):
            self.subscribers = subscribers
            self.sent = []

        def get_subscription_count(self):
            return self.subscribers

        def publish(self, msg):
            self.sent.append(msg)

    grasps_pub, poses_pub, markers_pub = FakePublisher(1), FakePublisher(0), FakePublisher(0)
    outputs = rg.GraspOutputs(RCLPY, grasps_pub, poses_pub, markers_pub)
    grasps = [[make_grasp([0, 0, 0.5], [0, 0, 1], [1, 0, 0])] * 2]
    outputs.publish(HEADER, [_Obj(1)], grasps, GRIPPER)
    assert len(grasps_pub.sent) == 1 and poses_pub.sent == [] and markers_pub.sent == []
    markers_pub.subscribers = 1
    outputs.publish(HEADER, [_Obj(1)], [[]], GRIPPER)
    # RViz joined late: the two markers of the previous frame are still deleted.
    assert [(m.id, m.action) for m in markers_pub.sent[0].markers] == [
        (0, Marker.DELETE), (1, Marker.DELETE)]
    outputs.publish(HEADER, [_Obj(1)], grasps, GRIPPER)
    outputs.clear_markers(HEADER)
    assert markers_pub.sent[-1].markers[0].action == Marker.DELETEALL
