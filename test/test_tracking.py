"""ObjectTracker: stable ids from frame to frame (no ROS graph)."""

import numpy as np
import pytest

from sam3d_ros.core.tracking import ObjectTracker
from sam3d_ros.core.types import MAX_OBJECT_ID


def test_new_ids_then_nearest_match_within_gate():
    t = ObjectTracker(gate_m=0.05)
    a = [[0.0, 0.0, 1.0], [0.2, 0.0, 1.0], [0.4, 0.0, 1.0]]
    assert t.assign(a) == [0, 1, 2]
    # Same objects, shuffled order and moved 2 cm: same ids follow the objects.
    b = [[0.42, 0.0, 1.0], [0.0, 0.02, 1.0], [0.2, 0.0, 1.01]]
    assert t.assign(b) == [2, 0, 1]


def test_outside_gate_gets_a_new_never_reused_id():
    t = ObjectTracker(gate_m=0.05)
    assert t.assign([[0.0, 0.0, 1.0]]) == [0]
    assert t.assign([[0.1, 0.0, 1.0]]) == [1]  # 10 cm away: another object
    assert t.assign([[0.3, 0.0, 1.0]]) == [2]


def test_explicit_ids_win_and_are_not_stolen():
    t = ObjectTracker(gate_m=0.05)
    assert t.assign([[0.0, 0.0, 1.0], [0.2, 0.0, 1.0]], [7, None]) == [7, 8]
    # The prompt id 7 now names the object at 0.2; the other detection at 0.0 may not take 7.
    assert t.assign([[0.2, 0.0, 1.0], [0.0, 0.0, 1.0]], [7, None]) == [7, 9]


def test_greedy_nearest_pair_first():
    t = ObjectTracker(gate_m=0.1)
    t.assign([[0.0, 0.0, 1.0], [0.06, 0.0, 1.0]])
    # 0.05 is nearest to track 1 (0.01 away); the other detection takes track 0.
    assert t.assign([[0.01, 0.0, 1.0], [0.05, 0.0, 1.0]]) == [0, 1]


def test_max_age_remembers_missed_objects():
    t = ObjectTracker(gate_m=0.05, max_age=2)
    t.assign([[0.0, 0.0, 1.0], [0.3, 0.0, 1.0]])
    assert t.assign([[0.0, 0.0, 1.0]]) == [0]  # object 1 missed once
    assert t.assign([[0.0, 0.0, 1.0], [0.3, 0.0, 1.0]]) == [0, 1]
    t1 = ObjectTracker(gate_m=0.05, max_age=1)
    t1.assign([[0.0, 0.0, 1.0], [0.3, 0.0, 1.0]])
    t1.assign([[0.0, 0.0, 1.0]])
    assert t1.assign([[0.0, 0.0, 1.0], [0.3, 0.0, 1.0]]) == [0, 2]


def test_nan_centre_and_validation():
    t = ObjectTracker()
    t.assign([[0.0, 0.0, 1.0]])
    assert t.assign([[np.nan, 0.0, 1.0]]) == [1]
    with pytest.raises(ValueError):
        t.assign([[0, 0, 1], [1, 0, 1]], [3, 3])
    with pytest.raises(ValueError):
        t.assign([[0, 0, 1]], [None, None])
    with pytest.raises(ValueError):
        ObjectTracker(max_age=0)
    with pytest.raises(ValueError, match="must lie in"):
        t.assign([[0, 0, 1]], [MAX_OBJECT_ID + 1])


def test_reset_restarts_ids():
    t = ObjectTracker()
    assert t.assign([[0.0, 0.0, 1.0], [0.5, 0.0, 1.0]], [9, None]) == [9, 10]
    t.reset()
    assert t.tracks == [] and t.assign([[0.0, 0.0, 1.0]]) == [0]


def test_ids_stay_in_int32_range():
    # An explicit id at the top of int32 must not push new ids past it (TF said 2147483648,
    # the int32 message fields -2147483648): new ids wrap to the lowest free one.
    t = ObjectTracker(max_age=3)
    assert t.assign([[0.0, 0.0, 1.0], [0.5, 0.0, 1.0]], [MAX_OBJECT_ID, None]) == [
        MAX_OBJECT_ID, 0]
    ids = t.assign([[0.0, 0.0, 1.0], [0.5, 0.0, 1.0], [1.0, 0.0, 1.0], [1.5, 0.0, 1.0]])
    assert ids == [MAX_OBJECT_ID, 0, 1, 2]  # remembered ids are skipped, none overflows
    assert all(0 <= i <= MAX_OBJECT_ID for i in ids)

