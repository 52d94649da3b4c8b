"""ObjectTracker: stable ids from frame to frame (no ROS graph)."""

import numpy as np
import pytest

from sam3d_ros.core.tracking import ObjectTracker


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
    t.reset()
    assert t.tracks == [] and t.assign([[0.0, 0.0, 1.0]]) == [2]
