"""WorkGate: one engine user at a time, claimed goals before frames (issue 10, item 5)."""

import threading
import time

import pytest

from sam3d_ros.core.errors import Cancelled
from sam3d_ros.core.work_gate import WorkGate

WAIT_S = 30.0  # liveness bound on a loaded machine, not a speed target


class FrameWorker:
    """A frame worker as the node's: tries to enter, runs a frame, and again, until stopped.

    Its first frame stays in the engine until :attr:`hold` is set, so a test can accept a goal
    while a frame is running.
    """

    def __init__(self, gate, log):
        self.gate, self.log = gate, log
        self.first_in = threading.Event()
        self.hold = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            with self.gate.frame(timeout=0.01) as entered:
                if not entered:
                    continue
                self.log.append("frame start")
                if not self.first_in.is_set():
                    self.first_in.set()
                    self.hold.wait(WAIT_S)
                self.log.append("frame end")

    def close(self):
        self.hold.set()
        self.stop.set()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()


def test_an_accepted_goal_runs_after_at_most_the_frame_in_the_engine():
    gate, log = WorkGate(poll_s=0.01), []
    worker = FrameWorker(gate, log)
    try:
        assert worker.first_in.wait(WAIT_S)
        gate.claim()  # the goal is accepted while frame 1 is in the engine
        log.append("accepted")
        goal_done = threading.Event()

        def run_goal():
            with gate.goal():
                log.append("goal")
            gate.release_claim()
            goal_done.set()

        goal = threading.Thread(target=run_goal, daemon=True)
        goal.start()
        worker.hold.set()  # frame 1 ends; the worker at once tries the next frame
        assert goal_done.wait(WAIT_S)
        goal.join(WAIT_S)
        # Frames resume once no goal is queued.
        n = len(log)
        assert worker.first_in.wait(0) and _wait(lambda: "frame start" in log[n:])
    finally:
        worker.close()
    after = log[log.index("accepted"):]
    assert after[:3] == ["accepted", "frame end", "goal"]


def test_no_frame_enters_while_a_goal_is_queued():
    gate = WorkGate()
    gate.claim()
    gate.claim()
    for _ in range(2):
        with gate.frame(timeout=0.05) as entered:
            assert not entered
        assert gate.holder is None
        gate.release_claim()
    with gate.frame(timeout=WAIT_S) as entered:
        assert entered and gate.holder == "frame"
    assert gate.holder is None and gate.claims == 0 and gate.turned_away == 2


def test_a_goal_goes_first_even_without_a_claim_and_goals_take_turns():
    gate, log = WorkGate(poll_s=0.01), []
    worker = FrameWorker(gate, log)
    try:
        assert worker.first_in.wait(WAIT_S)
        entered_first = threading.Event()
        release_first = threading.Event()

        def first_goal():
            with gate.goal():
                log.append("goal 1 start")
                entered_first.set()
                release_first.wait(WAIT_S)
                log.append("goal 1 end")

        def second_goal():
            assert entered_first.wait(WAIT_S)
            with gate.goal():
                log.append("goal 2")

        threads = [threading.Thread(target=f, daemon=True) for f in (first_goal, second_goal)]
        threads[0].start()
        assert _wait(lambda: gate.claims == 1)  # goal 1 waits for frame 1, holding off others
        worker.hold.set()
        assert entered_first.wait(WAIT_S)
        threads[1].start()
        with gate.frame(timeout=0.05) as entered:
            assert not entered  # goal 1 holds the gate
        release_first.set()
        for t in threads:
            t.join(WAIT_S)
            assert not t.is_alive()
    finally:
        worker.close()
    assert log.index("goal 1 start") == log.index("frame end") + 1
    assert log[log.index("goal 1 start"):][:3] == ["goal 1 start", "goal 1 end", "goal 2"]


def test_a_goal_waiting_for_the_engine_can_be_cancelled():
    gate = WorkGate(poll_s=0.01)
    cancel = threading.Event()
    outcome = []
    with gate.frame(timeout=WAIT_S) as entered:
        assert entered

        def goal():
            try:
                with gate.goal(cancelled=cancel.is_set):
                    outcome.append("ran")
            except Cancelled as exc:
                outcome.append(str(exc))

        t = threading.Thread(target=goal, daemon=True)
        t.start()
        assert _wait(lambda: gate.claims == 1)
        cancel.set()
        t.join(WAIT_S)
        assert outcome == ["cancelled while waiting for the engine"]
        assert gate.holder == "frame" and gate.claims == 0
    assert gate.holder is None


def test_the_gate_is_released_when_the_work_raises():
    gate = WorkGate()
    with pytest.raises(ValueError):
        with gate.goal():
            raise ValueError("backend failed")
    with pytest.raises(ValueError):
        with gate.frame(timeout=WAIT_S) as entered:
            assert entered
            raise ValueError("bad frame")
    assert gate.holder is None
    with gate.frame(timeout=WAIT_S) as entered:
        assert entered


def test_release_claim_without_a_claim_is_an_error():
    with pytest.raises(RuntimeError, match="without a claim"):
        WorkGate().release_claim()


def _wait(predicate, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
