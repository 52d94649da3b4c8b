"""Approximate-time pairing of camera topics and the latest-frame slot (ROS-free).

The node pairs colour, depth and CameraInfo messages by stamp with :class:`ApproxTimeSync`
(message_filters is not on PyPI) and hands each pair to its worker through a :class:`LatestSlot`,
so a busy worker always takes the newest frame and never works through a backlog.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple


class ApproxTimeSync:
    """Pair messages of N topics by approximate time stamp (message_filters is not on PyPI).

    Topic 0 is the pivot (the colour image). Each call to :meth:`add` looks for the newest
    pivot message for which every other topic has a message within ``slop_s``; when found,
    ``callback(messages)`` is called with one message per topic and the pivot messages up to
    it, and the other topics' messages older than the matched ones, are consumed. Pivot messages
    that find no partner within ``expire_s`` of the newest pivot are dropped and reported with
    ``on_unmatched(topic_index, reason)`` (the topic that was missing and why).

    Thread-safe; callbacks run outside the lock.
    """

    def __init__(
        self,
        n_topics: int,
        slop_s: float,
        callback: Callable[[List[Any]], None],
        on_unmatched: Optional[Callable[[int, str], None]] = None,
        queue_size: int = 10,
        expire_s: float = 0.5,
        names: Optional[Sequence[str]] = None,
        consume: Optional[Sequence[bool]] = None,
    ) -> None:
        self.n = int(n_topics)
        self.slop_s = float(slop_s)
        self.callback = callback
        self.on_unmatched = on_unmatched
        self.queue_size = int(queue_size)
        self.expire_s = float(expire_s)
        self.names = list(names) if names else [f"topic{i}" for i in range(self.n)]
        self.consume = list(consume) if consume else [True] * self.n
        self._queues: List[Deque[Tuple[float, Any]]] = [deque() for _ in range(self.n)]
        self._received = [0] * self.n
        self._lock = threading.Lock()
        self.matched = 0
        self.unmatched = 0

    def add(self, index: int, stamp_s: float, msg: Any) -> None:
        """Add one message of topic ``index`` with stamp ``stamp_s`` (seconds)."""
        emit = None
        dropped: List[Tuple[int, str]] = []
        with self._lock:
            q = self._queues[index]
            q.append((float(stamp_s), msg))
            self._received[index] += 1
            while len(q) > self.queue_size:
                old = q.popleft()
                if index == 0:
                    dropped.append(self._reason(old[0]))
            emit = self._match()
            if emit is None:
                dropped.extend(self._expire())
            self.unmatched += len(dropped)
        if self.on_unmatched is not None:
            for topic, reason in dropped:
                self.on_unmatched(topic, reason)
        if emit is not None:
            self.callback(emit)

    def forget_after(self, stamp_s: float) -> int:
        """Drop queued messages stamped after ``stamp_s`` (stamps went back: a looped bag).

        They belong to the old timeline; left queued, they would never be consumed and would
        hold matched pivots in the queue. Returns how many were dropped.
        """
        with self._lock:
            dropped = 0
            for k, q in enumerate(self._queues):
                kept = deque(item for item in q if item[0] <= stamp_s)
                dropped += len(q) - len(kept)
                self._queues[k] = kept
            return dropped

    def _nearest(self, index: int, stamp: float) -> Optional[Tuple[float, Any]]:
        best = None
        for item in self._queues[index]:
            if best is None or abs(item[0] - stamp) < abs(best[0] - stamp):
                best = item
        return best

    def _match(self) -> Optional[List[Any]]:
        pivots = self._queues[0]
        for p_stamp, p_msg in reversed(pivots):
            picks = []
            for k in range(1, self.n):
                item = self._nearest(k, p_stamp)
                if item is None or abs(item[0] - p_stamp) > self.slop_s:
                    break
                picks.append(item)
            else:
                while pivots and pivots[0][0] <= p_stamp:
                    pivots.popleft()
                for k, item in enumerate(picks, start=1):
                    if self.consume[k]:
                        q = self._queues[k]
                        while q and q[0][0] <= item[0]:
                            q.popleft()
                self.matched += 1
                return [p_msg] + [item[1] for item in picks]
        return None

    def _expire(self) -> List[Tuple[int, str]]:
        pivots = self._queues[0]
        if not pivots:
            return []
        newest = pivots[-1][0]
        dropped = []
        while pivots and newest - pivots[0][0] > self.expire_s:
            dropped.append(self._reason(pivots.popleft()[0]))
        return dropped

    def _reason(self, stamp: float) -> Tuple[int, str]:
        for k in range(1, self.n):
            if self._received[k] == 0:
                return k, f"no {self.names[k]} message received"
            item = self._nearest(k, stamp)
            if item is None or abs(item[0] - stamp) > self.slop_s:
                gap = "none queued" if item is None else f"nearest is {abs(item[0] - stamp):.3f} s"
                return k, (
                    f"no {self.names[k]} message within sync_slop_s={self.slop_s:g} s of the "
                    f"{self.names[0]} stamp ({gap})"
                )
        return 0, "dropped from the synchroniser queue"


class LatestSlot:
    """A one-item mailbox: :meth:`put` replaces an unconsumed item (a drop), :meth:`take` waits."""

    def __init__(self) -> None:
        self._item: Any = None
        self._cond = threading.Condition()
        self.drops = 0
        self.puts = 0

    def put(self, item: Any) -> bool:
        """Store ``item``; returns True when it replaced an unprocessed one (counted as a drop)."""
        return self.swap(item) is not None

    def swap(self, item: Any) -> Any:
        """Store ``item``; returns the unprocessed one it replaced (a drop), or ``None``."""
        with self._cond:
            replaced, self._item = self._item, item
            if replaced is not None:
                self.drops += 1
            self.puts += 1
            self._cond.notify_all()
            return replaced

    def take(self, timeout: Optional[float] = None) -> Any:
        """Remove and return the item, waiting up to ``timeout`` seconds; ``None`` if empty."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> None:
        """Drop the stored item without counting it."""
        with self._cond:
            self._item = None
            self._cond.notify_all()
