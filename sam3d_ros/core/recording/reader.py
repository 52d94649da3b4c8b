"""Read the camera frames of a recording: topics, pairing as the node pairs, frame selection.

A recording is a rosbag2 folder (sqlite3 or MCAP storage) or a bare ``.mcap`` file, read with
rosbags. A truncated MCAP (a recorder killed before it wrote the summary) is read record by
record up to where it breaks; :attr:`Recording.skipped` says what was lost.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.serde import SerdeError
from rosbags.typesys import get_types_from_msg
from rosbags.typesys.store import Typestore

from sam3d_ros.core.camera_frame import stamp_seconds
from sam3d_ros.core.errors import InputError
from sam3d_ros.core.frame_pairing import ApproxTimeSync
from sam3d_ros.core.recording.typestore import make_typestore

__all__ = ["CameraTopics", "FrameSelection", "Recording", "SyncedFrame", "detect_topics",
           "synced_frames"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
PROMPT = "sam3d_ros/msg/Prompt"
_BROKEN = (ReaderError, SerdeError, struct.error, ValueError, TypeError, EOFError, OSError)


class _SalvagedMcap(McapReader):
    """rosbags' MCAP reader for a file without its footer: records read until one is cut off."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.broken_at: Optional[str] = None

    def open(self) -> None:
        self.bio = self.path.open("rb")
        if self.bio.read(8) != b"\x89MCAP0\r\n" or self.bio.read(1) != b"\x01":
            self.bio.close()
            raise ReaderError("not an MCAP file (bad magic or header)")
        (size,) = struct.unpack("<Q", self.bio.read(8))
        self.bio.seek(size, 1)
        self.data_start = self.bio.tell()
        self.data_end = self.path.stat().st_size
        try:
            self.meta_scan()  # schemas and channels (connections) up to the break
        except _BROKEN as exc:
            self.broken_at = f"{exc.__class__.__name__}: {exc}"

    def messages(self, connections: Any, start: Any = None,
                 stop: Any = None) -> Iterator[Tuple[Any, int, bytes]]:
        try:
            yield from self.messages_scan(connections, start, stop)
        except _BROKEN as exc:
            self.broken_at = self.broken_at or f"{exc.__class__.__name__}: {exc}"


class Recording:
    """An open recording: its topics and a type store that reads them.

    Raises (on construction) :class:`InputError` naming ``--bag`` for a path that is not a
    readable recording.
    """

    def __init__(self, path: Path, distro: str = "jazzy") -> None:
        self.path = Path(path)
        self.skipped: List[str] = []
        self._salvaged: Optional[_SalvagedMcap] = None
        if not self.path.exists():
            raise InputError("--bag", f"{str(self.path)!r} does not exist")
        try:
            self._reader: Any = Reader(self.path)
            self._reader.open()
            self._connections = list(self._reader.connections)
        except (ReaderError, FileNotFoundError) as exc:
            mcap = self._mcap_file()
            if mcap is None:
                raise InputError("--bag", f"cannot read {str(self.path)!r}: {exc}") from None
            self._salvaged = _SalvagedMcap(mcap)
            try:
                self._salvaged.open()
            except ReaderError as exc2:
                raise InputError("--bag", f"cannot read {str(mcap)!r}: {exc2}") from None
            self._reader = self._salvaged
            self._connections = list(self._salvaged.connections)
            self.skipped.append(f"{mcap.name} has no summary (truncated or still being "
                                f"written): read record by record ({exc})")
        self.store: Typestore = make_typestore(distro)
        self._register_bag_types()
        self.topics: Dict[str, str] = {c.topic: c.msgtype for c in self._connections}

    def _mcap_file(self) -> Optional[Path]:
        if self.path.suffix == ".mcap" and self.path.is_file():
            return self.path
        found = sorted(self.path.glob("*.mcap")) if self.path.is_dir() else []
        return found[0] if len(found) == 1 else None

    def _register_bag_types(self) -> None:
        """Types the bag defines that the store lacks (its own definitions, from the bag)."""
        for conn in self._connections:
            if conn.msgtype in self.store.types or not conn.msgdef.data:
                continue
            try:
                self.store.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
            except Exception as exc:  # noqa: BLE001 - a foreign definition we cannot parse
                self.skipped.append(f"type {conn.msgtype} of {conn.topic}: {exc}")

    def close(self) -> None:
        """Close the files."""
        if self._salvaged is not None:
            if self._salvaged.bio is not None:
                self._salvaged.bio.close()
        else:
            self._reader.close()

    def messages(self, topics: List[str], start_ns: Optional[int] = None,
                 stop_ns: Optional[int] = None) -> Iterator[Tuple[str, int, Any]]:
        """``(topic, log time ns, message)`` of ``topics`` in log-time order.

        A message that does not deserialise is skipped and counted in :attr:`skipped`.
        """
        conns = [c for c in self._connections if c.topic in topics]
        bad = 0
        for conn, timestamp, raw in self._reader.messages(conns, start_ns, stop_ns):
            try:
                msg = self.store.deserialize_cdr(raw, conn.msgtype)
            except _BROKEN:
                bad += 1
                continue
            yield conn.topic, timestamp, msg
        if bad:
            self.skipped.append(f"{bad} message(s) that do not deserialise")
        if self._salvaged is not None and self._salvaged.broken_at:
            self.skipped.append(f"the rest of the file after the break: "
                                f"{self._salvaged.broken_at}")
            self._salvaged.broken_at = None

    @property
    def start_ns(self) -> int:
        """Log time of the first message (0 when unknown)."""
        meta = getattr(self._reader, "metadata", None) or self._reader.storage.metadata
        return 0 if meta.start_time >= 2**63 - 1 else int(meta.start_time)

    @property
    def message_counts(self) -> Dict[str, int]:
        """Messages per topic as the recording's index says (0 when unknown)."""
        return {c.topic: int(c.msgcount) for c in self._connections}


@dataclass(frozen=True)
class CameraTopics:
    """The topics a run reads."""

    image: str
    depth: str
    camera_info: str
    prompt: Optional[str] = None


def _pick(topics: Dict[str, str], kinds: Tuple[str, ...], flag: str, what: str,
          want: Any) -> str:
    candidates = sorted(t for t, k in topics.items() if k in kinds and want(t))
    if len(candidates) == 1:
        return candidates[0]
    listing = ", ".join(f"{t} ({topics[t]})" for t in sorted(topics)) or "none"
    if not candidates:
        raise InputError(flag, f"no {what} topic in the recording (its topics: {listing})")
    raise InputError(flag, f"several {what} topics: {', '.join(candidates)}; choose one")


def detect_topics(recording: Recording, image: Optional[str] = None,
                  depth: Optional[str] = None, camera_info: Optional[str] = None,
                  prompt: Optional[str] = None) -> CameraTopics:
    """The colour, depth, CameraInfo (and Prompt) topics: as given, or found by type and name.

    Colour: the one ``Image`` topic without "depth" in its name, or ``CompressedImage`` topic
    not ending in ``compressedDepth``; depth: the one ``Image`` topic with "depth" in its name,
    or ``.../compressedDepth``; CameraInfo: the only one, else the one beside the colour image;
    Prompt: the only ``sam3d_ros/Prompt`` topic, if any.

    Raises:
        InputError: naming ``--image-topic`` / ``--depth-topic`` / ``--camera-info-topic`` /
            ``--prompt-topic`` when a topic is missing, ambiguous or of the wrong type.
    """
    topics = recording.topics
    given = {"--image-topic": (image, (IMAGE, COMPRESSED)), "--depth-topic": (depth, (IMAGE,
             COMPRESSED)), "--camera-info-topic": (camera_info, (CAMERA_INFO,)),
             "--prompt-topic": (prompt, (PROMPT,))}
    for flag, (topic, kinds) in given.items():
        if topic is not None and topic not in topics:
            raise InputError(flag, f"topic {topic!r} is not in the recording (its topics: "
                                   f"{', '.join(sorted(topics)) or 'none'})")
        if topic is not None and topics[topic] not in kinds:
            raise InputError(flag, f"topic {topic!r} is {topics[topic]}, expected "
                                   f"{' or '.join(kinds)}")

    def is_depth(t: str) -> bool:
        return (topics[t] == COMPRESSED and t.endswith("/compressedDepth")) or (
            topics[t] == IMAGE and "depth" in t.lower())

    image = image or _pick(topics, (IMAGE, COMPRESSED), "--image-topic", "colour image",
                           lambda t: not is_depth(t))
    depth = depth or _pick(topics, (IMAGE, COMPRESSED), "--depth-topic", "depth image", is_depth)
    if camera_info is None:
        infos = sorted(t for t, k in topics.items() if k == CAMERA_INFO)
        base = image.rsplit("/compressed", 1)[0].rsplit("/", 1)[0]
        beside = [t for t in infos if t.rsplit("/", 1)[0] == base]
        camera_info = infos[0] if len(infos) == 1 else (
            beside[0] if len(beside) == 1 else _pick(topics, (CAMERA_INFO,),
                                                     "--camera-info-topic", "CameraInfo",
                                                     lambda t: True))
    if prompt is None:
        prompts = sorted(t for t, k in topics.items() if k == PROMPT)
        if len(prompts) > 1:
            raise InputError("--prompt-topic", f"several Prompt topics: {', '.join(prompts)}; "
                                               "choose one")
        prompt = prompts[0] if prompts else None
    return CameraTopics(image, depth, camera_info, prompt)


@dataclass(frozen=True)
class FrameSelection:
    """Which synchronised frames to process.

    Attributes:
        every: every Nth synchronised frame (1 = all).
        start_s, end_s: seconds from the start of the recording (log time); ``None`` = open.
        max_rate_hz: at most this many frames per second of image stamps (0 = no cap).
        limit: at most this many frames (0 = no limit).
    """

    every: int = 1
    start_s: Optional[float] = None
    end_s: Optional[float] = None
    max_rate_hz: float = 0.0
    limit: int = 0


@dataclass
class SyncedFrame:
    """One synchronised set, as the node's pairing would hand it to its worker."""

    index: int
    log_ns: int
    image: Any
    depth: Any
    camera_info: Any
    prompt: Any = None
    inputs: List[Tuple[str, int, Any]] = field(default_factory=list)


def synced_frames(recording: Recording, topics: CameraTopics, selection: FrameSelection,
                  slop_s: float, unmatched: List[str]) -> Iterator[SyncedFrame]:
    """Pair the camera topics as the node does and yield the selected frames in order.

    The node's :class:`ApproxTimeSync` with the node's settings (``sync_slop_s``, the colour
    image as pivot, CameraInfo not consumed); images it drops are described in ``unmatched``.
    The latest Prompt (when ``topics.prompt``) logged before a frame's image applies to it.
    """
    names = ("image", "depth", "camera_info")
    matched: List[List[Any]] = []
    sync = ApproxTimeSync(
        3, slop_s, matched.append,
        lambda topic, reason: unmatched.append(f"{names[topic]}: {reason}"),
        expire_s=max(0.5, 5.0 * slop_s), names=names, consume=(True, True, False))
    order = {topics.image: 0, topics.depth: 1, topics.camera_info: 2}
    wanted = list(order) + ([topics.prompt] if topics.prompt else [])
    start = recording.start_ns
    start_ns = None if selection.start_s is None else start + int(selection.start_s * 1e9)
    stop_ns = None if selection.end_s is None else start + int(selection.end_s * 1e9)
    prompt = None
    synced = kept = 0
    last_stamp: Optional[float] = None
    pending: List[float] = []  # image stamps not yet paired
    for topic, log_ns, msg in recording.messages(wanted, start_ns, stop_ns):
        if topic == topics.prompt:
            prompt = msg
            continue
        stamp = stamp_seconds(msg.header)
        if topic == topics.image:
            pending.append(stamp)
        sync.add(order[topic], stamp, (topic, log_ns, msg))
        while matched:
            sets = matched.pop(0)
            paired = stamp_seconds(sets[0][2].header)
            # The pairing drops older images silently when a newer one pairs (as in the node).
            for old in (s for s in pending if s < paired):
                unmatched.append(f"image: stamp {old:.6f} not paired: no depth and CameraInfo "
                                 f"within sync_slop_s={slop_s:g} s of it before a newer image "
                                 "paired")
            pending = [s for s in pending if s > paired]
            synced += 1
            if (synced - 1) % max(1, selection.every):
                continue
            stamp = stamp_seconds(sets[0][2].header)
            if (selection.max_rate_hz > 0 and last_stamp is not None
                    and stamp - last_stamp < 1.0 / selection.max_rate_hz):
                continue
            last_stamp = stamp
            yield SyncedFrame(kept, sets[0][1], sets[0][2], sets[1][2], sets[2][2], prompt,
                              list(sets))
            kept += 1
            if selection.limit and kept >= selection.limit:
                return
