"""Stable object ids from frame to frame (ROS-free, no graph needed).

Segmenters number their masks per call (0, 1, 2, ...), so the same mug may be object 0 in one
frame and object 2 in the next. :class:`ObjectTracker` turns per-frame detections into ids that
stay the same while the object stays in view, which is what TF frames (``<tf_prefix><id>``),
marker ids and ``Detection3D.id`` need.

Rules, applied per frame:

1. A detection with an *explicit* id (the prompt named its ``object_id``) keeps that id.
2. The others are matched to the remembered tracks (objects of the previous frames that were not
   claimed by rule 1) by centre distance, nearest pair first (greedy), when the distance is at
   most ``gate_m`` (5 cm by default). A matched detection takes the track's id.
3. Unmatched detections get new ids, larger than every id seen since the last :meth:`reset`
   (explicit ones included), so an id is not reused for a different object. Ids stay in
   ``[0, MAX_OBJECT_ID]`` (int32 message fields): past the top, allocation wraps to the lowest
   id not remembered and not used in the frame.

A track is remembered for ``max_age`` frames after it was last seen (1 = only the previous
frame), so an object missed in one frame keeps its id when it comes back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from sam3d_ros.core.types import MAX_OBJECT_ID, ObjectReconstruction


@dataclass
class Track:
    """A remembered object: its id, last centre (metres, camera frame) and frames unseen."""

    object_id: int
    centre: np.ndarray
    age: int = 0


class ObjectTracker:
    """Assign stable ids to the objects of consecutive frames.

    Args:
        gate_m: largest centre distance (metres) at which a detection continues a track.
        max_age: frames a track is remembered after it was last seen (>= 1).
    """

    def __init__(self, gate_m: float = 0.05, max_age: int = 1) -> None:
        if not gate_m >= 0.0:
            raise ValueError(f"gate_m must be >= 0, got {gate_m}")
        if int(max_age) < 1:
            raise ValueError(f"max_age must be >= 1, got {max_age}")
        self.gate_m = float(gate_m)
        self.max_age = int(max_age)
        self._tracks: Dict[int, Track] = {}
        self._next_id = 0

    @property
    def tracks(self) -> List[Track]:
        """The remembered tracks, by id."""
        return [self._tracks[k] for k in sorted(self._tracks)]

    def reset(self) -> None:
        """Forget every track and start numbering from 0 again."""
        self._tracks.clear()
        self._next_id = 0

    def _new_id(self, taken: set) -> int:
        """The next id at or above ``_next_id`` (wrapping past MAX_OBJECT_ID) not in ``taken``."""
        candidate = self._next_id
        while True:
            if candidate > MAX_OBJECT_ID:
                candidate = 0
            if candidate not in taken:
                self._next_id = candidate + 1
                return candidate
            candidate += 1

    def assign(
        self,
        centres: Sequence[Sequence[float]],
        explicit_ids: Optional[Sequence[Optional[int]]] = None,
    ) -> List[int]:
        """Return one id per detection and update the tracks.

        Args:
            centres: N centres (metres, one frame, e.g. the camera optical frame).
            explicit_ids: N entries, an id given by the prompt or ``None``; ``None`` = all None.

        Returns:
            N ids in ``[0, MAX_OBJECT_ID]``, unique within the frame.

        Raises:
            ValueError: an explicit id outside ``[0, MAX_OBJECT_ID]`` or repeated.
        """
        c = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
        n = c.shape[0]
        explicit = list(explicit_ids) if explicit_ids is not None else [None] * n
        if len(explicit) != n:
            raise ValueError(f"{len(explicit)} explicit ids for {n} centres")
        ids: List[Optional[int]] = [None if e is None else int(e) for e in explicit]
        given = [i for i in ids if i is not None]
        if len(set(given)) != len(given):
            raise ValueError(f"explicit ids repeat within one frame: {given}")
        if any(not 0 <= i <= MAX_OBJECT_ID for i in given):
            raise ValueError(f"explicit ids must lie in [0, {MAX_OBJECT_ID}], got {given}")
        if given:
            self._next_id = max(self._next_id, max(given) + 1)

        free = {k: t for k, t in self._tracks.items() if k not in set(given)}
        todo = [i for i in range(n) if ids[i] is None]
        if todo and free:
            keys = list(free)
            track_c = np.stack([free[k].centre for k in keys])
            dist = np.linalg.norm(c[todo][:, None, :] - track_c[None, :, :], axis=2)
            dist[~np.isfinite(dist)] = np.inf
            used_det, used_track = set(), set()
            for flat in np.argsort(dist, axis=None, kind="stable"):
                di, ti = divmod(int(flat), len(keys))
                if dist[di, ti] > self.gate_m:
                    break
                if di in used_det or ti in used_track:
                    continue
                used_det.add(di)
                used_track.add(ti)
                ids[todo[di]] = keys[ti]
        taken = set(self._tracks) | {i for i in ids if i is not None}
        for i in range(n):
            if ids[i] is None:
                ids[i] = self._new_id(taken)
                taken.add(ids[i])

        seen = set()
        for i in range(n):
            self._tracks[ids[i]] = Track(ids[i], c[i].copy(), 0)
            seen.add(ids[i])
        for key in list(self._tracks):
            if key not in seen:
                self._tracks[key].age += 1
                if self._tracks[key].age >= self.max_age:
                    del self._tracks[key]
        return [int(i) for i in ids]


def relabel(
    tracker: Optional[ObjectTracker],
    objects: Sequence[ObjectReconstruction],
    explicit: Mapping[int, int],
) -> List[ObjectReconstruction]:
    """The frame's objects with stable ids and ``object_index`` = position in the frame.

    ``explicit`` maps a segmenter object id to the id the prompt gave it; the others get tracked
    ids (``tracker``), or keep the segmenter's ids without a tracker. What the node and an
    offline run over a recording both do with each frame's result.
    """
    if tracker is None:
        ids = [int(o.object_id) for o in objects]
    else:
        centres = [np.asarray(o.translation, dtype=np.float64) for o in objects]
        ids = tracker.assign(centres, [explicit.get(int(o.object_id)) for o in objects])
    return [dataclasses.replace(o, object_id=int(i), object_index=k)
            for k, (o, i) in enumerate(zip(objects, ids, strict=True))]
