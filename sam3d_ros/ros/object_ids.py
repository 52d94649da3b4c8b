"""Stable object ids across frames and goals: a prompt's ids kept, the others tracked."""

from __future__ import annotations

import dataclasses
import threading
from typing import List, Mapping, Optional, Sequence

import numpy as np

from sam3d_ros.core.tracking import ObjectTracker
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
        centres = [np.asarray(o.translation, dtype=np.float64) for o in objects]
        given = [explicit.get(int(o.object_id)) for o in objects]
        with self._lock:
            if self._tracker is None:
                ids = [int(o.object_id) for o in objects]
                self._tracked = list(ids)
            else:
                ids = self._tracker.assign(centres, given)
                self._tracked = [t.object_id for t in self._tracker.tracks]
        return [dataclasses.replace(o, object_id=int(i), object_index=k)
                for k, (o, i) in enumerate(zip(objects, ids, strict=True))]
