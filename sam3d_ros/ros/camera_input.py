"""Camera input of the node: subscriptions and pairing of the camera topics.

:class:`CameraInput` owns the camera subscriptions (raw or compressed transports, QoS checks) and
their approximate-time pairing; one synchronised set is decoded into a core frame by the ROS-free
:func:`~sam3d_ros.core.camera_frame.build_camera_frame` (shared with recordings).
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple, Union

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSCompatibility,
    QoSProfile,
    ReliabilityPolicy,
    qos_check_compatible,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from sam3d_ros.core.camera_frame import stamp_seconds
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.frame_pairing import ApproxTimeSync
from sam3d_ros.ros.stats import PipelineStats

try:  # Jazzy and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # pragma: no cover - Humble
    from rclpy.qos_event import SubscriptionEventCallbacks  # type: ignore

NAMES = ("image", "depth", "camera_info")
FUTURE_WARN_S = 60.0  # a stamp this far ahead of our clock is reported (hosts' clocks differ)


@dataclass
class CameraMessages:
    """One synchronised set of camera messages, undecoded until processed.

    Each image is raw or compressed, as ``image_transport`` / ``depth_transport`` chose.
    """

    image: Union[Image, CompressedImage]
    depth: Union[Image, CompressedImage]
    camera_info: CameraInfo
    received: float = field(default_factory=time.monotonic)


class CameraInput:
    """The camera subscriptions of an active node and their synchroniser.

    Args:
        node: the node that subscribes.
        param: ``param(name)`` reads a node parameter.
        stats: counts images, synchronised sets and lost messages.
        on_frame: ``on_frame(CameraMessages)`` for every synchronised set.
        on_unmatched: ``on_unmatched(InputError)`` for an image that found no partner.
        report: warnings (``warn_throttled``, ``warn_once``) and ``guarded`` callbacks.
        callback_group: of the subscriptions.
    """

    def __init__(self, node: Any, param: Callable[[str], Any], stats: PipelineStats,
                 on_frame: Callable[[CameraMessages], None],
                 on_unmatched: Callable[[InputError], None], report: Any,
                 callback_group: Any) -> None:
        self._node = node
        self._p = param
        self._stats = stats
        self._on_frame = on_frame
        self._on_unmatched_error = on_unmatched
        self._report = report
        self._group = callback_group
        self._subs: List[Any] = []
        self._qos: Optional[QoSProfile] = None
        self._sync: Optional[ApproxTimeSync] = None
        self._latest: Optional[CameraMessages] = None
        self._stamp_lock = threading.Lock()
        self._last_stamp: Optional[float] = None

    @property
    def latest(self) -> Optional[CameraMessages]:
        """The newest synchronised set (kept across deactivation), or ``None``."""
        return self._latest

    @property
    def unmatched(self) -> int:
        """Colour images dropped without a partner since the last :meth:`subscribe`."""
        return self._sync.unmatched if self._sync is not None else 0

    def qos(self) -> QoSProfile:
        """The QoS of the camera subscriptions (``camera_qos_reliability``, ``_depth``)."""
        reliability = (ReliabilityPolicy.RELIABLE
                       if self._p("camera_qos_reliability") == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        return QoSProfile(depth=int(self._p("camera_qos_depth")), reliability=reliability,
                          history=HistoryPolicy.KEEP_LAST,
                          durability=DurabilityPolicy.VOLATILE)

    def subscribe(self, active: Callable[[], bool]) -> None:
        """Subscribe to the three topics; messages count only while ``active()``."""
        qos = self._qos = self.qos()
        self._last_stamp = None
        slop = float(self._p("sync_slop_s"))
        self._sync = ApproxTimeSync(
            3, slop, self._on_synced, self._on_unmatched, expire_s=max(0.5, 5.0 * slop),
            names=NAMES, consume=(True, True, False))
        self._subs = []
        for index, (topic, msg_type) in enumerate((
            self._transport_topic("image", self._p("image_transport")),
            self._transport_topic("depth", self._p("depth_transport")),
            ("camera_info", CameraInfo),
        )):
            resolved = self._node.resolve_topic_name(topic)
            guard = self._report.guarded
            events = SubscriptionEventCallbacks(
                incompatible_qos=guard("camera QoS event",
                                       functools.partial(self._on_incompatible_qos, resolved)),
                message_lost=guard("camera message-lost event", self._on_message_lost))
            self._subs.append(self._node.create_subscription(
                msg_type, topic,
                guard("camera callback", lambda msg, i=index: self._on_camera(i, msg, active)),
                qos, callback_group=self._group, event_callbacks=events))
        names = ", ".join(s.topic_name for s in self._subs)
        self._node.get_logger().info(
            f"camera subscriptions {names} (image_transport={self._p('image_transport')}, "
            f"depth_transport={self._p('depth_transport')}): "
            f"reliability={self._p('camera_qos_reliability')} "
            f"depth={qos.depth} (parameter camera_qos_reliability); sync_slop_s={slop:g}")
        self._check_publisher_qos()

    def destroy(self) -> None:
        """Unsubscribe."""
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs = []
        self._sync = None

    def _transport_topic(self, base: str, transport: str) -> Tuple[str, Any]:
        """Topic and type of one camera stream: ``base`` (raw) or ``<base>/<transport>``.

        Like image_transport, the base name is resolved (namespace, remappings such as
        ``image:=/camera/color/image_raw``) before the transport's suffix is appended, so one
        remap serves every transport.
        """
        if transport == "raw":
            return base, Image
        return f"{self._node.resolve_topic_name(base)}/{transport}", CompressedImage

    def _check_publisher_qos(self) -> None:
        """Warn when a publisher on a camera topic cannot reach our subscription."""
        problem = self.qos_problem()
        if problem:
            self._report.warn_throttled("qos:camera", problem)

    def qos_problem(self) -> str:
        """A camera publisher whose QoS cannot reach our subscription now, or ``""``.

        Asked of the graph each time (not remembered from an event), so the problem clears when
        the publisher goes or changes.
        """
        subs, qos = list(self._subs), self._qos
        for sub in subs:
            for info in self._node.get_publishers_info_by_topic(sub.topic_name):
                compatible, reason = qos_check_compatible(info.qos_profile, qos)
                if compatible == QoSCompatibility.ERROR:
                    name = f"{info.node_namespace.rstrip('/')}/{info.node_name}"
                    return (f"QoS mismatch on {sub.topic_name}: publisher {name} cannot reach "
                            f"the subscription ({reason.strip()}); we subscribe with "
                            f"reliability={self._p('camera_qos_reliability')}, depth="
                            f"{self._p('camera_qos_depth')}. Set camera_qos_reliability to match "
                            "the publisher")
        return ""

    def _on_incompatible_qos(self, topic: str, info: Any) -> None:
        """Log at once (throttled); ``/diagnostics`` asks :meth:`qos_problem` of the graph."""
        policy = str(getattr(info, "last_policy_kind", "")).rsplit("POLICY_", 1)[-1].lower()
        self._report.warn_throttled(
            f"qos:{topic}",
            f"QoS mismatch on {topic}: incompatible publisher ({policy}); we subscribe with "
            f"reliability={self._p('camera_qos_reliability')}, "
            f"depth={self._p('camera_qos_depth')}. Set camera_qos_reliability to match the "
            "publisher")

    def _on_message_lost(self, info: Any) -> None:
        self._stats.messages_lost(int(getattr(info, "total_count_change", 0)))

    def _on_camera(self, index: int, msg: Any, active: Callable[[], bool]) -> None:
        sync = self._sync
        if sync is None or not active():
            return
        stamp = stamp_seconds(msg.header)
        if index == 0:
            self._stats.image_received()
            self._check_stamp(sync, stamp)
        sync.add(index, stamp, msg)

    def _check_stamp(self, sync: ApproxTimeSync, stamp: float) -> None:
        """Warn about a colour stamp that went back or is far ahead; the frame is processed.

        Stamps going back (a looped bag, a restarted driver) restart the pairing; a zero stamp
        is left to the frame's checks (refused there).
        """
        if stamp == 0.0:
            return
        now = self._node.get_clock().now().nanoseconds * 1e-9
        ahead = stamp - now
        if now > 0.0 and ahead > FUTURE_WARN_S:  # 0: simulated time before the first /clock
            self._report.input_warning(
                "image.header.stamp", f"{ahead:.0f} s ahead of this node's clock (are the "
                "hosts' clocks synchronised?); results carry this stamp")
        with self._stamp_lock:
            last, self._last_stamp = self._last_stamp, stamp
        if last is not None and stamp < last:
            sync.forget_after(stamp)
            self._report.input_warning(
                "image.header.stamp", f"went back {last - stamp:.3f} s (a looped bag or a "
                "restarted driver?); pairing restarted")

    def _on_synced(self, msgs: List[Any]) -> None:
        cam = CameraMessages(msgs[0], msgs[1], msgs[2])
        self._latest = cam
        self._stats.frame_synced()
        if any(cam.camera_info.d):
            topics = [s.topic_name for s in self._subs] or list(NAMES)
            self._report.warn_once(
                "distortion",
                f"{topics[2]} has non-zero distortion coefficients d={list(cam.camera_info.d)}: "
                f"the node projects with P, so {topics[0]} must be the rectified image (e.g. "
                "image_proc's image_rect); if it is the raw image, 3D results are distorted")
        self._on_frame(cam)

    def _on_unmatched(self, topic: int, reason: str) -> None:
        field_name = NAMES[topic] if 0 <= topic < 3 else "sync"
        sub = self._subs[topic] if topic < len(self._subs) else None
        where = f" (topic {sub.topic_name})" if sub is not None else ""
        self._on_unmatched_error(InputError(field_name, reason + where))
