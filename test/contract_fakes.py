"""Contract fakes of the segmentation and reconstruction backends (no tests here).

The model backends (SAM 3, SAM 3D Objects) cannot run on this machine, and the node's failure
paths need what the embedded backends never do: a ``load()`` / ``unload()`` to count (GPU
memory), a load that fails, a stage that runs until the test lets it go, a long per-object loop,
exceptions of any kind. These fakes keep the backend protocols (``sam3d_ros.core.types``) and
return the embedded backends' real results; what they do besides is set by environment
variables, so a node process can use them too (``fake_node.py``):

* ``SAM3D_FAKE_FAIL_LOAD``: ``segmenter`` or ``reconstructor``: its ``load()`` raises;
* ``SAM3D_FAKE_SEGMENT_GATE``: a path; ``segment()`` waits until the file exists;
* ``SAM3D_FAKE_RECONSTRUCT_S``: seconds each object's reconstruction takes (a loop that calls
  ``check_cancelled()`` every 20 ms, as a real backend does between objects);
* ``SAM3D_FAKE_RAISE``: a path; while the file exists, ``segment()`` raises what it names:
  ``zero_division`` (a bug deep in a backend), ``unprintable`` (an exception whose ``str()``
  raises too), ``system_exit`` (``SystemExit``, as a library calling ``sys.exit()``).

Every call is reported as a ``FAKE <event>`` line on stdout (the node tests read the node's
output) and appended to :data:`EVENTS` (tests in this process).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import List

from sam3d_ros.backends.embedded.reconstruction import EmbeddedReconstructor
from sam3d_ros.backends.embedded.segmentation import EmbeddedSegmenter
from sam3d_ros.core.cancellation import check_cancelled

EVENTS: List[str] = []


def event(text: str) -> None:
    """Record one event: ``FAKE <text> t=<monotonic seconds>`` on stdout.

    ``time.monotonic()`` is the system's CLOCK_MONOTONIC on Linux, the same in every process:
    a test compares the node's event times with its own.
    """
    EVENTS.append(text)
    print(f"FAKE {text} t={time.monotonic():.3f}", flush=True)


class Unprintable(Exception):
    """An exception whose message cannot be formatted (every formatting raises another)."""

    def __str__(self) -> str:
        raise Unprintable()


def _deep_bug() -> float:
    return 1 / 0


def _raise_if_asked() -> None:
    path = os.environ.get("SAM3D_FAKE_RAISE")
    if not path or not Path(path).exists():
        return
    kind = Path(path).read_text().strip()
    event(f"raise {kind}")
    if kind == "zero_division":
        _deep_bug()
    if kind == "unprintable":
        raise Unprintable()
    if kind == "system_exit":
        raise SystemExit(3)
    raise AssertionError(f"unknown SAM3D_FAKE_RAISE kind {kind!r}")


class _Loads:
    role = ""

    def load(self) -> None:
        event(f"load {self.role}")
        if os.environ.get("SAM3D_FAKE_FAIL_LOAD") == self.role:
            raise RuntimeError(f"contract fake: {self.role} does not fit in GPU memory")

    def unload(self) -> None:
        event(f"unload {self.role}")


class FakeSegmenter(_Loads):
    """Contract fake: the embedded segmenter, with load/unload, a gate and injected raises."""

    name = "fake_segmenter"
    reads_text = False
    role = "segmenter"

    def __init__(self, **options: object) -> None:
        self._inner = EmbeddedSegmenter()

    def segment(self, frame, query):
        event(f"segment start thread={threading.get_ident()}")
        _raise_if_asked()
        gate = os.environ.get("SAM3D_FAKE_SEGMENT_GATE")
        while gate and not Path(gate).exists():
            time.sleep(0.02)
        masks = self._inner.segment(frame, query)
        event("segment end")
        return masks


class FakeReconstructor(_Loads):
    """Contract fake: the embedded reconstructor, with load/unload and a slow object loop."""

    name = "fake_reconstructor"
    role = "reconstructor"

    def __init__(self, **options: object) -> None:
        self._inner = EmbeddedReconstructor()

    def reconstruct(self, frame, masks, seed=0):
        seconds = float(os.environ.get("SAM3D_FAKE_RECONSTRUCT_S", "0"))
        for index in range(len(masks)):
            event(f"reconstruct object {index}")
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                check_cancelled()
                time.sleep(0.02)
        objects = self._inner.reconstruct(frame, masks, seed)
        event("reconstruct end")
        return objects


def install() -> None:
    """Make the fakes the backends the registry builds as ``embedded``."""
    from sam3d_ros import backends

    backends.SEGMENTERS["embedded"] = (__name__, "FakeSegmenter")
    backends.RECONSTRUCTORS["embedded"] = (__name__, "FakeReconstructor")
