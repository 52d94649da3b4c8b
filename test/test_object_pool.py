"""Per-object work on threads (sam3d_ros.core.object_pool) and the backends that use it.

The claim is that the worker count changes the time only: masks, meshes, Gaussians, poses and
grasps are the same to the bit, errors are those of the serial loop, and a run's cancellation
reaches the workers.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sam3d_ros.core.cancellation import cancellable, check_cancelled
from sam3d_ros.core.engine import Engine
from sam3d_ros.core.errors import Cancelled, InputError, Terminated
from sam3d_ros.core.object_pool import MAX_AUTO_WORKERS, map_objects, resolve_workers
from sam3d_ros.core.types import BoxPrompt, ObjectPrompt, PointPrompt, SegmentationQuery

# ------------------------------------------------------------------ map_objects


def test_results_keep_the_order_of_the_objects_and_use_several_threads():
    threads = set()
    barrier = threading.Barrier(3, timeout=10)

    def work(i):
        threads.add(threading.get_ident())
        if i < 3:
            barrier.wait()  # three objects in flight at once, or this times out
        time.sleep(0.01 * (5 - i))  # later objects finish first
        return i * i

    assert map_objects(work, range(6), workers=3) == [0, 1, 4, 9, 16, 25]
    assert len(threads) == 3


def test_one_worker_is_the_plain_loop_in_the_calling_thread():
    seen = []
    assert map_objects(lambda i: seen.append(threading.get_ident()) or i, [1, 2], 1) == [1, 2]
    assert seen == [threading.get_ident()] * 2


def test_the_first_failing_object_in_order_raises_as_the_loop_would():
    done = []

    def work(i):
        if i == 1:
            time.sleep(0.05)  # fails after object 3 has failed
            raise InputError("mask_urls[1]", "one")
        if i == 3:
            raise InputError("mask_urls[3]", "three")
        done.append(i)
        return i

    with pytest.raises(InputError) as excinfo:
        map_objects(work, range(5), workers=2)
    assert excinfo.value.field == "mask_urls[1]"
    assert 0 in done


def test_the_runs_cancellation_check_reaches_every_worker():
    calls = []

    def check():
        calls.append(threading.current_thread().name)
        if len(calls) >= 2:
            raise Cancelled("cancelled in the test")

    def work(i):
        time.sleep(0.01 * i)
        check_cancelled()
        return i

    with cancellable(check), pytest.raises(Cancelled):
        map_objects(work, range(4), workers=4)
    assert all(name.startswith("sam3d-object") for name in calls)


def _long_object(ended: threading.Event):
    """An object that works for up to 5 s, checking for cancellation every 10 ms."""
    def work():
        try:
            for _ in range(500):
                check_cancelled()
                time.sleep(0.01)
        finally:
            ended.set()
    return work


def test_after_a_failure_the_running_objects_stop_and_are_waited_for():
    ended = threading.Event()
    long_one = _long_object(ended)

    def work(i):
        if i == 0:
            time.sleep(0.05)
            raise InputError("mask_urls[0]", "no depth")
        return long_one()

    began = time.monotonic()
    with pytest.raises(InputError):
        map_objects(work, range(2), workers=2)
    assert ended.is_set()  # stopped at its next check, and waited for: nothing outlives the call
    assert time.monotonic() - began < 2.0


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Terminated])
def test_an_interrupt_propagates_at_once_and_the_running_objects_stop(interrupt):
    ended = threading.Event()
    long_one = _long_object(ended)

    def work(i):
        if i == 0:
            time.sleep(0.05)
            raise interrupt()
        return long_one()

    began = time.monotonic()
    with pytest.raises(interrupt):
        map_objects(work, range(2), workers=2)
    assert time.monotonic() - began < 1.0
    assert ended.wait(1.0)  # the other object stopped at its next check


@pytest.mark.parametrize("given, expected", [(1, 1), (3, 3), ("2", 2), (" auto ", None),
                                             (0, None)])
def test_worker_counts(given, expected):
    n = resolve_workers(given)
    if expected is None:
        assert 1 <= n <= MAX_AUTO_WORKERS
    else:
        assert n == expected


@pytest.mark.parametrize("bad", [-1, "many", 2.5, True, None])
def test_bad_worker_counts_name_the_field(bad):
    with pytest.raises(InputError) as excinfo:
        resolve_workers(bad, "--workers")
    assert excinfo.value.field == "--workers"


def test_the_engine_passes_workers_to_backends_that_take_it():
    eng = Engine(workers=3)
    assert (eng.segmenter.workers, eng.reconstructor.workers, eng.grasp_planner.workers) == \
        (3, 3, 3)
    assert Engine().segmenter.workers == 1
    with pytest.raises(InputError):
        Engine(workers="lots")


# ------------------------------------------------------------------ the same results


def _outputs(result):
    """Every array a result hands on, by name."""
    out = {}
    for i, obj in enumerate(result.objects):
        out[f"{i}.mask"] = obj.mask
        out[f"{i}.vertices"] = obj.mesh.vertices
        out[f"{i}.faces"] = obj.mesh.faces
        out[f"{i}.colors"] = obj.mesh.colors
        out[f"{i}.gaussians"] = obj.gaussians.means
        out[f"{i}.pose"] = np.r_[obj.rotation, obj.translation, obj.scale, obj.extents]
        out[f"{i}.depth_pixels"] = obj.depth_pixels.full()
    for i, grasps in enumerate(result.grasps or []):
        out[f"{i}.grasps"] = np.array([[*g.position, *g.orientation, g.width, g.score]
                                       for g in grasps]).reshape(-1, 9)
    return out


def _same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape and np.array_equal(a[key], b[key]), key


def test_threads_give_the_serial_results_on_a_rendered_scene():
    from sam3d_bench.scenes import make_tabletop_scene

    scene = make_tabletop_scene(3, n_objects=4, width=320, height=240)
    boxes = []
    for k, obj in enumerate(scene.objects):
        ys, xs = np.nonzero(obj.visible_mask)
        boxes.append(ObjectPrompt(k, boxes=[BoxPrompt(int(xs.min()), int(ys.min()),
                                                      int(xs.max()), int(ys.max()))]))
    # One object prompted by a click instead: the click path shares a per-frame cache.
    ys, xs = np.nonzero(scene.objects[0].visible_mask)
    boxes[0] = ObjectPrompt(0, points=[PointPrompt(int(np.median(xs)), int(np.median(ys)))])
    query = SegmentationQuery(objects=boxes)
    serial = Engine(workers=1).process(scene.frame, query, seed=5)
    threaded = Engine(workers=3).process(scene.frame, query, seed=5)
    assert len(serial.objects) == 4 and serial.grasps is not None
    _same(_outputs(serial), _outputs(threaded))


def test_threads_give_the_serial_results_on_real_frames():
    from real_data import require_real_rgbd

    from sam3d_bench.evaluation import load_real_frame
    from sam3d_ros.core.inputs import parse_request

    root = require_real_rgbd()
    for name, kind in (("m2t2_1", "boxes"), ("m2t2_0", "points"), ("dof6_4", "masks")):
        rf = load_real_frame(root / name)
        results = []
        for workers in (1, 2):
            eng = Engine(workers=workers)
            parsed = parse_request(rf.request(kind), root / name, eng.input_options)
            results.append(eng.process(parsed.frame, parsed.query, parsed.seed))
        assert results[0].objects, (name, kind)
        _same(_outputs(results[0]), _outputs(results[1]))
        assert results[0].failed_objects == results[1].failed_objects
