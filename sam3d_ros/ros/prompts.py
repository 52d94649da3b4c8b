"""The node's ``prompt`` subscriptions (:class:`PromptInput`) and the prompt in force.

The one translation between ``sam3d_ros/Prompt`` and the core's request, and the one map of core
field names back to ROS fields, are ROS-free (:mod:`sam3d_ros.core.prompt_messages`, shared with
recordings); a prompt is validated there before it is accepted.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Deque, List, Mapping, Optional, Tuple

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from sam3d_ros.core.errors import InputError
from sam3d_ros.core.inputs import check_object_count
from sam3d_ros.core.prompt_messages import query_from_prompt, query_kind, ros_field
from sam3d_ros.msg import Prompt

try:  # Jazzy and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # pragma: no cover - Humble
    from rclpy.qos_event import SubscriptionEventCallbacks  # type: ignore


class FirstDelivery:
    """Tells a message's first delivery from a repeat on another subscription of the same topic.

    A message is keyed by what the middleware reports about its publication (``MessageInfo``'s
    source timestamp and the writer's sequence number), the same on every subscription that
    receives it; the last ``size`` keys are remembered. Thread-safe.
    """

    def __init__(self, size: int = 32) -> None:
        self._keys: Deque[Tuple[int, int]] = deque(maxlen=int(size))
        self._lock = threading.Lock()

    def first(self, info: Optional[Mapping[str, Any]]) -> bool:
        """True the first time a publication is offered (always True without a source stamp)."""
        if not info or not info.get("source_timestamp"):
            return True
        key = (int(info["source_timestamp"]), int(info.get("publication_sequence_number", 0)))
        with self._lock:
            if key in self._keys:
                return False
            self._keys.append(key)
            return True


class PromptInput:
    """The node's reliable ``prompt`` subscriptions, transient-local and volatile, and the prompt.

    A transient-local subscription gets a latched prompt published before the node started but
    is incompatible with a volatile (default QoS) publisher; the volatile one hears those. A
    transient-local publisher reaches both: :class:`FirstDelivery` applies its prompt once. Only
    a best-effort publisher is left out, and is warned about.

    A prompt is checked when it arrives (with the last frame's size, and against
    ``max_objects``); a bad one is reported and the previous prompt stays.

    Args:
        node: the node that subscribes.
        size: returns the ``(width, height)`` of the last frame, or ``None``.
        max_objects: returns the most objects a prompt may ask for.
        on_prompt: ``on_prompt(msg)`` after a prompt was accepted.
        report: reports a rejected prompt (``input_error``), warns (``warn_throttled``) and
            guards the callbacks (``guarded``).
        callback_group: of the subscriptions.
    """

    def __init__(self, node: Any, size: Callable[[], Optional[Tuple[int, int]]],
                 max_objects: Callable[[], int], on_prompt: Callable[[Prompt], None],
                 report: Any, callback_group: Any) -> None:
        self._node = node
        self._size = size
        self._max_objects = max_objects
        self._on_prompt = on_prompt
        self._report = report
        self._group = callback_group
        self._subs: List[Any] = []
        self._seen = FirstDelivery()
        self._lock = threading.Lock()
        self._prompt: Optional[Prompt] = None

    @property
    def prompt(self) -> Optional[Prompt]:
        """The prompt in force (``None``: automatic segmentation)."""
        with self._lock:
            return self._prompt

    def subscribe(self) -> None:
        """Create the two subscriptions."""
        for durability in (DurabilityPolicy.TRANSIENT_LOCAL, DurabilityPolicy.VOLATILE):
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=durability)
            events = None
            if durability == DurabilityPolicy.VOLATILE:
                events = SubscriptionEventCallbacks(
                    incompatible_qos=self._report.guarded("prompt QoS event", self._on_qos))
            self._subs.append(self._node.create_subscription(
                Prompt, "prompt", self._report.guarded("prompt callback", self._on_message),
                qos, callback_group=self._group, event_callbacks=events))

    def destroy(self) -> None:
        """Destroy the subscriptions (the prompt in force stays)."""
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs = []

    def _on_qos(self, info: Any) -> None:
        topic = self._subs[0].topic_name if self._subs else "prompt"
        publishers = [f"{i.node_namespace.rstrip('/')}/{i.node_name}"
                      for i in self._node.get_publishers_info_by_topic(topic)
                      if i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT]
        self._report.warn_throttled(
            f"qos:{topic}", f"QoS mismatch on {topic}: publisher {', '.join(publishers) or '?'} "
            "is best_effort; prompts are subscribed reliable and its prompts will not arrive. "
            "Publish prompts reliable")

    def _on_message(self, msg: Prompt, info: Any) -> None:
        if not self._seen.first(info):
            return  # the same publication through the other prompt subscription
        try:
            query, _ = query_from_prompt(msg, *(self._size() or (None, None)))
            try:
                check_object_count(query, int(self._max_objects()))
            except InputError as exc:
                raise ros_field(exc, query_kind(query)) from None
        except InputError as exc:
            kept = "keeping the previous prompt" if self.prompt is not None else "no prompt set"
            self._report.input_error(
                InputError(exc.field, f"{exc.reason}; prompt rejected, {kept}"))
            return
        with self._lock:
            self._prompt = msg
        self._on_prompt(msg)
