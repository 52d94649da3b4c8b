"""The output recording: a rosbag2 folder with MCAP storage, complete or absent.

It is written inside a hidden temporary folder beside the target and moved to the target name
only by :meth:`OutputRecording.close`, after rosbags has written the MCAP summary and
``metadata.yaml``. An interrupted run closes it the same way (what was done is readable); a
crash or kill leaves only the hidden folder, which the next run to that target removes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from sam3d_ros.core.errors import InputError

__all__ = ["OutputRecording"]


class OutputRecording:
    """Write messages of a type store to ``path`` (a rosbag2 folder, MCAP storage).

    Raises:
        InputError: naming ``--output`` when ``path`` exists or its parent is not a directory.
    """

    def __init__(self, path: Path, store: Typestore) -> None:
        self.path = Path(path)
        if self.path.exists() or self.path.is_symlink():
            raise InputError("--output", f"{str(self.path)!r} exists; choose a new name for "
                                         "the output recording")
        if not self.path.parent.is_dir():
            raise InputError("--output", f"{str(self.path.parent)!r} is not a directory")
        self.store = store
        self._tmp = self.path.parent / f".{self.path.name}.partial"
        shutil.rmtree(self._tmp, ignore_errors=True)  # left by a killed run
        self._tmp.mkdir()
        self._writer: Optional[Writer] = Writer(self._tmp / self.path.name, version=9,
                                                storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: Dict[Tuple[str, str], Any] = {}
        self.counts: Dict[str, int] = {}

    def write(self, topic: str, msgtype: str, log_ns: int, msg: Any) -> None:
        """Serialise ``msg`` (a message of the store) and write it at ``log_ns``."""
        assert self._writer is not None, "recording already closed"
        key = (topic, msgtype)
        conn = self._connections.get(key)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.store)
            self._connections[key] = conn
        self._writer.write(conn, int(log_ns), self.store.serialize_cdr(msg, msgtype))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> Path:
        """Finish the file (summary, metadata) and move it to its name; returns the path."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(self._tmp / self.path.name, self.path)
            self._tmp.rmdir()
        return self.path

    def discard(self) -> None:
        """Drop everything written (nothing is left on disk)."""
        if self._writer is not None:
            try:
                self._writer.abort()
            finally:
                self._writer = None
                shutil.rmtree(self._tmp, ignore_errors=True)
