"""Stable object ids across frames and goals: a prompt's ids kept, the others tracked."""

from __future__ import annotations

import threading
from typing import List, Mapping, Optional, Sequence

from sam3d_ros.core.tracking import ObjectTracker, relabel
from sam3d_ros.core.types import ObjectReconstruction


class ObjectIds:
    """A thread-safe :class:`~sam3d_ros.core.tracking.ObjectTracker` (made at configure)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracker: Optional[ObjectTracker] = None
        self._tracked: List[int] = []

    def configure(self, gate_m: float, max_age: int) -> None:
        """Start tracking with a fresh tracker."""
        with self._lock:
            self._tracker = ObjectTracker(gate_m, max_age)

    def drop(self) -> None:
        """Stop tracking (cleanup)."""
        with self._lock:
            self._tracker = None

    def reset(self) -> None:
        """Forget the tracks (a new prompt)."""
        with self._lock:
            if self._tracker is not None:
                self._tracker.reset()

    @property
    def tracked(self) -> List[int]:
        """The ids the tracker holds."""
        with self._lock:
            return list(self._tracked)

    def assign(self, objects: Sequence[ObjectReconstruction],
               explicit: Mapping[int, int]) -> List[ObjectReconstruction]:
        """The objects with their ids (``explicit``: segmenter id → prompt id) and indices."""
        with self._lock:
            relabelled = relabel(self._tracker, objects, explicit)
            self._tracked = ([o.object_id for o in relabelled] if self._tracker is None
                             else [t.object_id for t in self._tracker.tracks])
        return relabelled
