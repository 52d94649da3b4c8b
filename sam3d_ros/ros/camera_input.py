"""Camera input of the node: subscriptions, pairing, decoding into a core frame.

:class:`CameraInput` owns the camera subscriptions (raw or compressed transports, QoS checks) and
their approximate-time pairing; :func:`build_camera_frame` decodes one synchronised set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from sam3d_ros.core import conventions
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.frame_pairing import ApproxTimeSync
from sam3d_ros.core.types import Frame
from sam3d_ros.ros.compressed import depth_from_compressed, rgb_from_compressed
from sam3d_ros.ros.conversions import depth_from_image, intrinsics_from_camera_info, rgb_from_image
from sam3d_ros.ros.stats import PipelineStats

try:  # Jazzy and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # pragma: no cover - Humble
    from rclpy.qos_event import SubscriptionEventCallbacks  # type: ignore

NAMES = ("image", "depth", "camera_info")


@dataclass
class CameraMessages:
    """One synchronised set of camera messages, undecoded until processed.

    Each image is raw or compressed, as ``image_transport`` / ``depth_transport`` chose.
    """

    image: Union[Image, CompressedImage]
    depth: Union[Image, CompressedImage]
    camera_info: CameraInfo
    received: float = field(default_factory=time.monotonic)


@dataclass
class CameraFrame:
    """A decoded camera frame: the core :class:`Frame` and the image header it came with."""

    header: Header
    frame: Frame
    received: float


def stamp_seconds(header: Header) -> float:
    """Header stamp in seconds."""
    return header.stamp.sec + 1e-9 * header.stamp.nanosec


def build_camera_frame(
    image: Union[Image, CompressedImage],
    depth: Optional[Union[Image, CompressedImage]],
    camera_info: CameraInfo,
    prefix: str = "",
    warn: Optional[Callable[[str, str], None]] = None,
) -> CameraFrame:
    """Decode one synchronised image / depth / CameraInfo set into a :class:`CameraFrame`.

    * CameraInfo for another resolution of the same camera is rescaled to the image
      (:func:`~sam3d_ros.core.conventions.scale_intrinsics`);
    * a depth image of another size with the same aspect ratio is back-projected with its own
      (rescaled) intrinsics and resampled (nearest) onto the colour pixels;
    * ``32FC1`` depth whose median looks like millimetres is refused (a common unit bug);
    * ``CompressedImage`` colour (JPEG/PNG) and ``compressedDepth`` depth are decoded by
      :mod:`sam3d_ros.ros.compressed`, their declared sizes checked against the CameraInfo and the
      colour image before decoding.

    ``warn(key, message)`` receives non-fatal remarks (frame ids that differ).

    Raises:
        InputError: naming ``image``, ``depth`` or ``camera_info`` fields.
    """
    if isinstance(image, CompressedImage):
        # The CameraInfo first: it bounds the size the payload may declare.
        intr = intrinsics_from_camera_info(camera_info, f"{prefix}camera_info")
        rgb = rgb_from_compressed(image, f"{prefix}image", (intr.width, intr.height),
                                  f"{prefix}camera_info")
    else:
        rgb = rgb_from_image(image, f"{prefix}image")
        intr = intrinsics_from_camera_info(camera_info, f"{prefix}camera_info")
    h, w = rgb.shape[:2]
    if (intr.width, intr.height) != (w, h):
        if not conventions.same_aspect(intr.width, intr.height, w, h):
            raise InputError(
                f"{prefix}camera_info",
                f"is for a {intr.width}x{intr.height} image but the image is {w}x{h} "
                "(different aspect ratio: not the same camera)",
            )
        intr = conventions.scale_intrinsics(intr, w, h)
    points = None
    if depth is not None:
        if warn is not None and depth.header.frame_id != image.header.frame_id:
            warn(
                "depth_frame_id",
                f"depth frame_id {depth.header.frame_id!r} differs from image frame_id "
                f"{image.header.frame_id!r}; depth must be registered to the colour image "
                "(outputs use the image's frame)",
            )
        if isinstance(depth, CompressedImage):
            depth_m, depth_encoding = depth_from_compressed(depth, f"{prefix}depth", (w, h),
                                                            f"the {w}x{h} {prefix}image")
        else:
            depth_m, depth_encoding = depth_from_image(depth, f"{prefix}depth"), depth.encoding
        dh, dw = depth_m.shape
        if (dw, dh) != (w, h):
            if not conventions.same_aspect(dw, dh, w, h):
                raise InputError(
                    f"{prefix}depth",
                    f"depth is {dw}x{dh} but the image is {w}x{h} and the aspect ratios "
                    "differ; publish depth registered to the colour image",
                )
            d_points = conventions.backproject(depth_m, conventions.scale_intrinsics(intr, dw, dh))
            cols = np.minimum(((np.arange(w) + 0.5) * dw / w).astype(np.int64), dw - 1)
            rows = np.minimum(((np.arange(h) + 0.5) * dh / h).astype(np.int64), dh - 1)
            points = np.ascontiguousarray(d_points[rows[:, None], cols[None, :]])
        else:
            points = conventions.backproject(depth_m, intr)
        z = points[:, :, 2]
        valid = np.isfinite(z)
        if not valid.any():
            raise InputError(
                f"{prefix}depth", "no valid depth pixel (all zero, NaN or infinite)"
            )
        if depth_encoding == conventions.DEPTH_32FC1:
            conventions.check_float_depth_is_metres(z, f"{prefix}depth.encoding")
    frame = Frame(rgb=rgb, points=points, intrinsics=intr)
    return CameraFrame(header=image.header, frame=frame, received=time.monotonic())


class CameraInput:
    """The camera subscriptions of an active node and their synchroniser.

    Args:
        node: the node that subscribes.
        param: ``param(name)`` reads a node parameter.
        stats: counts images, synchronised sets and lost messages, and QoS problems.
        on_frame: ``on_frame(CameraMessages)`` for every synchronised set.
        on_error: ``on_error(InputError)`` for an image that found no partner.
        warn: ``warn(key, message)``, throttled per key.
        callback_group: of the subscriptions.
    """

    def __init__(self, node: Any, param: Callable[[str], Any], stats: PipelineStats,
                 on_frame: Callable[[CameraMessages], None],
                 on_error: Callable[[InputError], None], warn: Callable[[str, str], None],
                 callback_group: Any) -> None:
        self._node = node
        self._p = param
        self._stats = stats
        self._on_frame = on_frame
        self._on_error = on_error
        self._warn = warn
        self._group = callback_group
        self._subs: List[Any] = []
        self._sync: Optional[ApproxTimeSync] = None
        self._latest: Optional[CameraMessages] = None

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
        qos = self.qos()
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
            events = SubscriptionEventCallbacks(
                incompatible_qos=lambda info, t=resolved: self._on_incompatible_qos(t, info),
                message_lost=self._on_message_lost)
            self._subs.append(self._node.create_subscription(
                msg_type, topic, lambda msg, i=index: self._on_camera(i, msg, active), qos,
                callback_group=self._group, event_callbacks=events))
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
        want_reliable = self._p("camera_qos_reliability") == "reliable"
        for sub in self._subs:
            try:
                infos = self._node.get_publishers_info_by_topic(sub.topic_name)
            except Exception:  # noqa: BLE001
                continue
            for info in infos:
                if want_reliable and info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT:
                    self._on_incompatible_qos(sub.topic_name, None, info.node_name)

    def _on_incompatible_qos(self, topic: str, info: Any, publisher: str = "") -> None:
        text = (f"QoS mismatch on {topic}: a publisher{' ' + publisher if publisher else ''} "
                f"offers best_effort but camera_qos_reliability="
                f"{self._p('camera_qos_reliability')}; no messages will arrive. Set "
                "camera_qos_reliability:=best_effort")
        if info is not None:
            policy = str(getattr(info, "last_policy_kind", "")).rsplit("POLICY_", 1)[-1].lower()
            text = (f"QoS mismatch on {topic}: incompatible publisher ({policy}); we "
                    f"subscribe with reliability={self._p('camera_qos_reliability')}, "
                    f"depth={self._p('camera_qos_depth')}. Set camera_qos_reliability to "
                    "match the publisher")
        self._stats.qos_problem(text)
        self._warn(f"qos:{topic}", text)

    def _on_message_lost(self, info: Any) -> None:
        self._stats.messages_lost(int(getattr(info, "total_count_change", 0)))

    def _on_camera(self, index: int, msg: Any, active: Callable[[], bool]) -> None:
        sync = self._sync
        if sync is None or not active():
            return
        if index == 0:
            self._stats.image_received()
        sync.add(index, stamp_seconds(msg.header), msg)

    def _on_synced(self, msgs: List[Any]) -> None:
        cam = CameraMessages(msgs[0], msgs[1], msgs[2])
        self._latest = cam
        self._stats.frame_synced()
        self._on_frame(cam)

    def _on_unmatched(self, topic: int, reason: str) -> None:
        field_name = NAMES[topic] if 0 <= topic < 3 else "sync"
        sub = self._subs[topic] if topic < len(self._subs) else None
        where = f" (topic {sub.topic_name})" if sub is not None else ""
        self._on_error(InputError(field_name, reason + where))
