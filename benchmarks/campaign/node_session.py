"""The node side's harness: the installed node over DDS, driven through ``test/node_harness.py``.

Cases of one group share one node process (``raw``: raw camera topics, goals, prompts;
``compressed``: image_transport's compressed / compressedDepth topics); a load case gets a node
of its own. Each session first applies a box prompt and processes one good frame. Per case:

* topic / prompt cases publish the bad input, then wait for a ``/diagnostics`` message whose
  error names the field (``last_error`` or the status message ``<field>: <reason>``, with the
  ``failures`` counter grown, so an earlier error does not count) or whose new warning does
  (``last_warning``: a frame processed but suspect, a stamp out of order); an input that must be
  accepted (``field == ""``) must produce ``~/objects`` for its stamp instead;
* goal cases send the goal on ``~/reconstruct`` and expect it aborted with ``error``
  ``<field>: <reason>``;
* then the node must be alive (and, for size bombs, its peak RSS ``VmHWM`` must not grow by more
  than the case's bound), the next good frame (topic cases) or good goal (goal cases) must be
  processed, and the node's output directory (``write_artifacts`` on) must hold no temporary
  run directory and no run directory without ``result.json``.

Liveness bounds (seconds a reply may take on a loaded 2-core machine) are not speed targets.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from action_msgs.msg import GoalStatus
from node_harness import FRAME_ID, Recorder, box_prompt, camera_info, ros_context, running_node
from node_harness import scene as make_scene
from PIL import Image as PILImage
from rclpy.action import ActionClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sam3d_ros.action import Reconstruct
from sam3d_ros.msg import Prompt
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from campaign.outcome import Outcome, partial_runs, proc_status_mb, temp_dirs
from sam3d_ros.core.conventions import metres_to_depth16
from sam3d_ros.ros.conversions import numpy_to_image

GOOD_S = 60.0  # liveness bound for a good frame / goal to be answered
ERROR_S = 15.0  # liveness bound for an error to reach /diagnostics
GOAL_S = 60.0  # liveness bound for a bad goal's result
COLOUR, DEPTH = "/cam/color/image_raw", "/cam/depth/image_raw"
ABORTED, SUCCEEDED, CANCELED = (GoalStatus.STATUS_ABORTED, GoalStatus.STATUS_SUCCEEDED,
                                GoalStatus.STATUS_CANCELED)
Mutator = Callable[[Dict[str, Any], "NodeCampaign"], None]
"""``mutate(messages, campaign)`` changes or replaces a frame's ``image``, ``depth``, ``info``."""


# -------------------------------------------------------------------------------- sessions


def _base_params(runs: Path, inputs: Path) -> Dict[str, Any]:
    return {"camera_qos_reliability": "reliable", "sync_slop_s": 0.01,
            "diagnostics_period_s": 0.5, "warn_throttle_s": 0.0, "write_artifacts": True,
            "max_runs_kept": 3, "output_dir": str(runs),
            "allowed_input_roots": f"['{inputs}']"}


class NodeSession:
    """One node process with the campaign's peer (publishers, recorder, action client)."""

    count = 0

    def __init__(self, camp: "NodeCampaign", name: str, compressed: bool = False):
        self.camp = camp
        self.compressed = compressed
        self.runs = camp.root / "runs" / name
        self.runs.mkdir(parents=True, exist_ok=True)
        params = _base_params(self.runs, camp.inp)
        extra: List[str] = []
        if compressed:
            params.update(image_transport="compressed", depth_transport="compressedDepth")
            extra = ["-r", f"image:={COLOUR}", "-r", f"depth:={DEPTH}"]
        self._stack = contextlib.ExitStack()
        try:
            self.node = self._stack.enter_context(running_node(params, extra))
            NodeSession.count += 1  # one peer name per session: rosout keys loggers by name
            self.rec = Recorder(f"sam3d_campaign_peer_{NodeSession.count}")
            self._stack.callback(self.rec.close)
            self.pid = self.node.proc.pid
            pubs = (self.rec.pub_image, self.rec.pub_depth, self.rec.pub_info)
            if compressed:
                reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
                self.pub_cimage = self.rec.node.create_publisher(
                    CompressedImage, f"{COLOUR}/compressed", reliable)
                self.pub_cdepth = self.rec.node.create_publisher(
                    CompressedImage, f"{DEPTH}/compressedDepth", reliable)
                pubs = (self.pub_cimage, self.pub_cdepth, self.rec.pub_info)
            if not self.rec.wait(lambda: all(p.get_subscription_count() > 0 for p in pubs),
                                 30.0):
                raise RuntimeError(f"the node never subscribed:\n{self.node.log()[-2000:]}")
            self._client: Optional[ActionClient] = None
            self.last_good: Any = None
            self.set_prompt(box_prompt(camp.sc))
            ok, note = self.good_frame()
            if not ok:
                raise RuntimeError(f"the first good frame was not processed: {note}")
        except BaseException:
            self._stack.close()
            raise

    def close(self) -> None:
        """Stop the node (SIGINT, then SIGKILL after 15 s) and the peer."""
        self._stack.close()

    # ------------------------------------------------------------------ publishing

    def messages(self, header: Header) -> Dict[str, Any]:
        """A good image / depth / camera_info set for ``header`` (compressed in that session)."""
        sc = self.camp.sc
        if self.compressed:
            from test_compressed import depth16_msg, jpeg_msg

            msgs = {"image": jpeg_msg(sc.frame.rgb), "depth": depth16_msg(
                metres_to_depth16(sc.depth_m))}
        else:
            msgs = {"image": numpy_to_image(sc.frame.rgb, "rgb8"),
                    "depth": numpy_to_image(metres_to_depth16(sc.depth_m), "16UC1")}
        msgs["info"] = camera_info(sc.intrinsics)
        for msg in msgs.values():
            msg.header = Header(stamp=header.stamp, frame_id=header.frame_id)
        return msgs

    def publish(self, mutate: Optional[Mutator] = None, stamp: Any = None) -> Header:
        """Publish one frame (``mutate(msgs, campaign)`` may change or replace its messages)."""
        header = Header(stamp=stamp or self.rec.stamp(), frame_id=FRAME_ID)
        msgs = self.messages(header)
        if mutate is not None:
            mutate(msgs, self.camp)
        pub_image = self.pub_cimage if self.compressed else self.rec.pub_image
        pub_depth = self.pub_cdepth if self.compressed else self.rec.pub_depth
        pub_image.publish(msgs["image"])
        pub_depth.publish(msgs["depth"])
        self.rec.pub_info.publish(msgs["info"])
        return msgs["image"].header

    def set_prompt(self, prompt: Prompt, wait: bool = True) -> None:
        """Publish a prompt; wait until the node logs it applied."""
        start = self.node.line_count()
        self.rec.pub_prompt.publish(prompt)
        if wait and not self.node.wait_for_line("prompt:", 15.0, start=start):
            raise RuntimeError("the node did not apply the prompt")

    # ------------------------------------------------------------------ observing

    def objects_for(self, header: Header, timeout: float) -> Optional[Any]:
        """The ``~/objects`` message of ``header``'s stamp, or ``None`` within ``timeout``."""
        found: List[Any] = []

        def check() -> bool:
            found[:] = [m for m in self.rec.get("objects") if m.header.stamp == header.stamp]
            return bool(found)

        self.rec.wait(check, timeout)
        return found[0] if found else None

    def death_note(self) -> str:
        """How a dead node ended: its exit status and the last of its log."""
        return (f"node dead (exit status {self.node.proc.poll()}); its log ends:\n"
                f"{self.node.log()[-3000:]}")

    def good_frame(self) -> Tuple[bool, str]:
        """Publish a good frame; (processed with objects, note)."""
        header = self.publish()
        msg = self.objects_for(header, GOOD_S)
        if msg is None:
            return False, f"next good frame: no ~/objects within {GOOD_S:.0f} s"
        if not msg.objects:
            return False, "next good frame: ~/objects empty"
        self.last_good = msg
        return True, ""

    def diag_values(self) -> Dict[str, str]:
        """The latest diagnostics values (``{}`` before any)."""
        msgs = self.rec.get("diagnostics")
        return self.rec.diag_values(msgs[-1]) if msgs and msgs[-1].status else {}

    def failures(self) -> int:
        """The latest diagnostics ``failures`` counter (-1 when absent)."""
        value = self.diag_values().get("failures")
        return int(value) if value not in (None, "") else -1

    def reported(self, field: str, mark: int, failures_before: int,
                 timeout: float = ERROR_S) -> Tuple[bool, str]:
        """Whether a diagnostics error after ``mark`` names ``field``; (named, text)."""
        seen: List[str] = []
        earlier = set()  # every error text shown before: a sticky one is not new
        for msg in self.rec.get("diagnostics")[:mark]:
            if msg.status:
                values = self.rec.diag_values(msg)
                earlier |= {values.get("last_error", ""), values.get("last_warning", ""),
                            msg.status[0].message}

        def check() -> bool:
            for msg in self.rec.get("diagnostics")[mark:]:
                if not msg.status:
                    continue
                values = self.rec.diag_values(msg)
                grown = failures_before < 0 or int(values.get("failures", 0)) > failures_before
                for text in (values.get("last_error", ""), values.get("last_warning", ""),
                             msg.status[0].message):
                    # New: a failure counted, or a message not shown before (a warning).
                    if (grown or text not in earlier) and ": " in text:
                        if text not in seen:
                            seen.append(text)
                        if field in text.split(": ", 1)[0]:
                            seen.insert(0, text)
                            return True
            return False

        named = self.rec.wait(check, timeout)
        if named:
            return True, f"diagnostics: {seen[0]}"
        if seen:
            return False, f"diagnostics: {seen[-1]} (does not name {field})"
        return False, f"no new error in diagnostics within {timeout:.0f} s"

    def disk_clean(self) -> Tuple[bool, str]:
        """No temporary or partial run directory in the node's output directory."""
        left, partial = temp_dirs(self.runs), partial_runs(self.runs)
        if left or partial:
            return False, f"runs dir: temp {left}, without result.json {partial}"
        return True, ""

    def hwm_mb(self) -> float:
        """Peak RSS of the node process so far (MiB)."""
        return proc_status_mb(self.pid, "VmHWM")

    def rss_mb(self) -> float:
        """RSS of the node process (MiB)."""
        return proc_status_mb(self.pid, "VmRSS")

    # ------------------------------------------------------------------ goals

    def spin_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` run in the peer's executor thread; its return value.

        rclpy's ``ActionClient`` registers a goal / result / cancel request only after sending
        it: called from another thread while the executor spins, a fast reply can be handled
        in between and dropped ("Ignoring unexpected goal response"), a lost answer that would
        be blamed on the node. Sending from the spinning thread closes that window.
        """
        done = threading.Event()
        box: List[Tuple[bool, Any]] = []

        def task() -> None:
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller
                box.append((False, exc))
            finally:
                done.set()

        self.rec.executor.create_task(task)
        if not done.wait(30.0):
            raise RuntimeError("the peer's executor did not run the call")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def client(self) -> ActionClient:
        """The ``~/reconstruct`` client, once the server answers a goal, result and cancel."""
        if self._client is None:
            # As docs/node.md tells clients that send bursts: service and feedback readers as
            # deep as the burst. With rclpy's default (10), answers that arrive together
            # overwrite each other in this client's own reader (the "3 of 98 results
            # missing" of the 120-goal storm).
            deep = QoSProfile(depth=256, reliability=ReliabilityPolicy.RELIABLE)
            client = ActionClient(self.rec.node, Reconstruct, "/sam3d/reconstruct",
                                  goal_service_qos_profile=deep,
                                  result_service_qos_profile=deep,
                                  cancel_service_qos_profile=deep,
                                  feedback_sub_qos_profile=deep)
            if not client.wait_for_server(timeout_sec=30.0):
                raise RuntimeError("no action server")
            # DDS discovery is not symmetric: a reply sent before the server matched this
            # client's readers is lost. A goal without an image fails at once.
            deadline = time.monotonic() + 90.0
            while time.monotonic() < deadline:
                sent = self.spin_call(client.send_goal_async,
                                      Reconstruct.Goal(use_latest_frame=False))
                if not self.rec.wait(sent.done, 10.0):
                    continue
                handle = sent.result()
                if not self.rec.wait(self.spin_call(handle.get_result_async).done, 10.0):
                    continue
                if self.rec.wait(self.spin_call(handle.cancel_goal_async).done, 10.0):
                    break
            else:
                raise RuntimeError("the action server never answered a goal, result and cancel")
            self._client = client
        return self._client

    def run_goal(self, goal: Any, timeout: float) -> Tuple[Optional[int], str]:
        """(status, error) of one goal; status ``None`` when it was not answered in time."""
        client = self.client()
        sent = self.spin_call(client.send_goal_async, goal)
        if not self.rec.wait(sent.done, timeout):
            return None, f"goal not accepted within {timeout:.0f} s"
        handle = sent.result()
        if not handle.accepted:
            return None, "goal rejected"
        future = self.spin_call(handle.get_result_async)
        if not self.rec.wait(future.done, timeout):
            return None, f"no result within {timeout:.0f} s"
        res = future.result()
        return res.status, res.result.error

    def good_goal(self) -> Tuple[bool, str]:
        """An explicit good goal succeeds."""
        status, error = self.run_goal(self.camp.explicit_goal(), GOOD_S)
        if status == SUCCEEDED:
            return True, ""
        return False, f"next good goal: status {status}, {error or 'no error'}"


class NodeCampaign:
    """The node side's inputs (a synthetic 320×240 scene, files for URI goals) and sessions."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.inp = self.root / "in"
        self.other = self.root / "other"
        for d in (self.inp, self.other):
            d.mkdir(parents=True, exist_ok=True)
        self.sc = make_scene(seed=1)
        sc = self.sc
        self.width, self.height = sc.frame.width, sc.frame.height
        PILImage.fromarray(sc.frame.rgb).save(self.inp / "rgb.png")
        PILImage.fromarray(sc.frame.rgb).save(self.other / "rgb.png")
        intr = sc.intrinsics
        k = np.array([[intr.fx, 0, intr.cx], [0, intr.fy, intr.cy], [0, 0, 1]], np.float64)
        np.savez(self.inp / "depth.npz", depth=metres_to_depth16(sc.depth_m), K=k)
        self._session: Optional[NodeSession] = None
        self._group = ""

    def session(self, group: str) -> NodeSession:
        """The node of ``group`` (a new process when the group changes)."""
        if self._group != group or self._session is None or not self._session.node.alive():
            self.close()
            self._session = NodeSession(self, group, compressed=group == "compressed")
            self._group = group
        return self._session

    def close(self) -> None:
        """Stop the current node."""
        if self._session is not None:
            session, self._session = self._session, None
            session.close()
        self._group = ""

    def explicit_goal(self, prompt: Optional[Prompt] = None) -> Any:
        """A good goal with explicit image / depth / camera_info (artifacts written)."""
        sc = self.sc
        goal = Reconstruct.Goal(prompt=prompt or box_prompt(sc), use_latest_frame=False)
        goal.image = numpy_to_image(sc.frame.rgb, "rgb8")
        goal.depth = numpy_to_image(metres_to_depth16(sc.depth_m), "16UC1")
        goal.camera_info = camera_info(sc.intrinsics)
        for msg in (goal.image, goal.depth, goal.camera_info):
            msg.header.frame_id = FRAME_ID
        return goal

    def uri_goal(self, **uris: Any) -> Any:
        """A goal on ``in/rgb.png`` + ``in/depth.npz`` with fields replaced."""
        goal = Reconstruct.Goal(prompt=box_prompt(self.sc), use_latest_frame=False,
                                image_uri=str(self.inp / "rgb.png"),
                                pointmap_uri=str(self.inp / "depth.npz"))
        for key, value in uris.items():
            setattr(goal, key, value)
        return goal


@contextlib.contextmanager
def node_campaign(root: Path):
    """rclpy for the node side, and its sessions (stopped at the end)."""
    with ros_context():
        camp = NodeCampaign(root)
        try:
            yield camp
        finally:
            camp.close()


# -------------------------------------------------------------------------------- judging


def topic_case(camp: NodeCampaign, group: str, field: str, mutate: Optional[Mutator] = None,
                stamp: Any = None, prompt: Optional[Prompt] = None,
                processed: bool = False) -> Outcome:
    """One bad frame or prompt; ``processed``: a warning case, the frame must be processed too."""
    s = camp.session(group)
    mark, before = len(s.rec.get("diagnostics")), s.failures()
    if prompt is not None:
        s.set_prompt(prompt, wait=False)
        header = None
    else:
        header = s.publish(mutate, stamp)
    notes = []
    if field:
        named, result = s.reported(field, mark, before)
        if header is not None and processed:
            msg = s.objects_for(header, GOOD_S)
            named = named and msg is not None
            result += ("; processed" if msg is not None
                       else f"; not processed within {GOOD_S:.0f} s")
        elif header is not None and not named:
            msg = s.objects_for(header, 1.0)
            if msg is not None:
                result += f"; the frame was processed ({len(msg.objects)} objects published)"
    else:  # must be accepted and processed like the good frame
        msg = s.objects_for(header, GOOD_S)
        named = msg is not None and len(msg.objects) > 0
        if msg is None:
            result = (f"not processed within {GOOD_S:.0f} s; "
                      + s.reported("", mark, before, 1.0)[1])
        else:
            shift = _depth_shift(msg, s.last_good)
            named = named and shift < 0.05
            result = (f"processed: {len(msg.objects)} objects, median depth "
                      f"{shift * 100:.1f} cm from the good frame's")
    alive = s.node.alive()
    next_ok, note = s.good_frame() if alive else (False, s.death_note())
    clean, disk_note = s.disk_clean()
    if prompt is not None and alive:  # the baseline prompt again, whatever happened
        try:
            s.set_prompt(box_prompt(camp.sc))
        except RuntimeError:
            notes.append("the baseline prompt was not applied within 15 s (node busy)")
            camp.close()  # a node stuck on this input must not hold up the next case
    notes += [n for n in (note, disk_note) if n]
    return Outcome(result, named, alive, next_ok, clean, "; ".join(notes))


def goal_case(camp: NodeCampaign, group: str, field: str, build: Callable[[NodeCampaign], Any],
               hwm_bound_mb: Optional[float] = None, timeout: float = GOAL_S) -> Outcome:
    s = camp.session(group)
    s.client()
    hwm0 = s.hwm_mb()
    status, error = s.run_goal(build(camp), timeout)
    reported = error.split(": ", 1)[0] if ": " in error else ""
    named = status == ABORTED and field in reported
    names = {ABORTED: "aborted", SUCCEEDED: "succeeded", CANCELED: "canceled"}
    result = f"goal {names.get(status, status)}: {error}" if status is not None else error
    alive = s.node.alive()
    notes = []
    growth = s.hwm_mb() - hwm0
    if hwm_bound_mb is not None:
        notes.append(f"node peak RSS grew {growth:.0f} MB (bound {hwm_bound_mb:.0f})")
        if growth > hwm_bound_mb:
            alive = False
    next_ok, note = s.good_goal() if s.node.alive() else (False, s.death_note())
    clean, disk_note = s.disk_clean()
    notes += [n for n in (note, disk_note) if n]
    return Outcome(result, named, alive, next_ok, clean, "; ".join(notes))


def _depth_shift(msg: Any, reference: Any) -> float:
    """|median object depth - the reference frame's| in metres (inf without objects)."""
    if reference is None or not msg.objects or not reference.objects:
        return float("inf")
    z = [o.pose.position.z for o in msg.objects]
    z_ref = [o.pose.position.z for o in reference.objects]
    return abs(float(np.median(z)) - float(np.median(z_ref)))


def set_fields(key: str, **fields: Any) -> Mutator:
    """A mutator setting fields of message ``key`` (a callable value gets the message)."""
    def mutate(msgs: Dict[str, Any], camp: NodeCampaign) -> None:
        for name, value in fields.items():
            setattr(msgs[key], name, value(msgs[key]) if callable(value) else value)
    return mutate
