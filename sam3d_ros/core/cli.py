r"""``sam3d-reconstruct``: run the reconstruction pipeline on a hosted request, without ROS.

Usage::

    sam3d-reconstruct --request request.json --output DIR
    sam3d-reconstruct --image rgb.png --depth depth.png --intrinsics 525,525,319.5,239.5 \\
        --box 100,80,220,200 --point 150,120 --output DIR
    sam3d-reconstruct --bag IN --box 100,80,220,200 --output OUT   # a recording, offline

``--request`` reads a hosted "SAM 3D Objects" JSON request (relative paths in it are taken from
the file's directory); the convenience flags build or override its fields (their paths are taken
from the current directory). ``DIR`` must not exist or be empty (a symlink to an empty directory
is that directory), and is checked before any work; it is written atomically (a hidden
temporary sibling renamed at the end) and ``DIR/result.json`` (the hosted result) is also printed
on stdout. Progress goes to stderr. Objects the segmentation or the reconstruction refuses
while others succeed (a click on the table, a mask without valid depth) are listed in
``failed_objects`` of the result, with the stage that refused them.

``--bag IN`` (a rosbag2 folder, sqlite3 or MCAP, or a bare ``.mcap``) processes every selected
synchronised frame of a recording as the node would and writes ``OUT``, an MCAP rosbag2 folder
with the inputs and the node's outputs (:mod:`sam3d_ros.core.recording.offline`); the prompt
comes from a ``sam3d_ros/Prompt`` topic of the recording or from the request fields. A summary
goes to stdout.

Exit status: 0 success; 2 bad input (``error: <field>: <reason>``, nothing written); 1 internal
or backend error; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): the temporary directory is
removed. A temporary directory left by a killed run (SIGKILL) is removed by the next run writing
into the same parent directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO

from sam3d_ros import __version__
from sam3d_ros.core.errors import (
    BackendUnavailableError,
    Cancelled,
    InputError,
    Sam3dError,
    Terminated,
)
from sam3d_ros.core.inputs import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_OBJECTS,
    DEFAULT_SEED,
    MAX_NESTING,
    InputOptions,
)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``sam3d-reconstruct``."""
    parser = argparse.ArgumentParser(
        prog="sam3d-reconstruct",
        description="Reconstruct 3D objects from one RGB(-D) image; hosted SAM 3D Objects "
        "request in, hosted result (GLB, splat PLY, metadata) out.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--request", metavar="JSON", help="hosted request file ('-' = stdin)")
    parser.add_argument("--output", "-o", metavar="DIR", required=True,
                        help="fresh run directory (with --bag: the output recording to create)")
    bag = parser.add_argument_group("recordings (--bag)")
    bag.add_argument("--bag", metavar="IN", help="rosbag2 folder (sqlite3 / MCAP) or .mcap file")
    bag.add_argument("--image-topic", metavar="TOPIC", help="colour Image or CompressedImage")
    bag.add_argument("--depth-topic", metavar="TOPIC",
                     help="depth Image or CompressedImage (compressedDepth)")
    bag.add_argument("--camera-info-topic", metavar="TOPIC", help="CameraInfo")
    bag.add_argument("--prompt-topic", metavar="TOPIC", help="sam3d_ros/Prompt topic")
    bag.add_argument("--every", type=int, default=1, metavar="N",
                     help="every Nth synchronised frame (default %(default)s)")
    bag.add_argument("--start", type=float, metavar="S", help="from S seconds into the recording")
    bag.add_argument("--end", type=float, metavar="S", help="until S seconds into the recording")
    bag.add_argument("--max-rate", type=float, default=0.0, metavar="HZ",
                     help="at most HZ frames per second of image stamps (0 = all)")
    bag.add_argument("--max-frames", type=int, default=0, metavar="N", help="stop after N frames")
    bag.add_argument("--sync-slop", type=float, default=0.02, metavar="S",
                     help="largest stamp difference of a synchronised set (node's sync_slop_s)")
    bag.add_argument("--artifacts", metavar="DIR",
                     help="also write the hosted artifacts of every processed frame under DIR")
    bag.add_argument("--distro", default="jazzy", choices=("humble", "jazzy", "kilted"),
                     help="standard message definitions of the recording (default %(default)s)")
    bag.add_argument("--no-inputs", action="store_true",
                     help="do not copy the processed frames' inputs into the output")
    group = parser.add_argument_group("request fields (override --request)")
    group.add_argument("--image", metavar="PATH|URI", help="image_url")
    depth = group.add_mutually_exclusive_group()
    depth.add_argument(
        "--pointmap", metavar="PATH|URI", help="pointmap_url: NPY/NPZ (points or depth)"
    )
    depth.add_argument(
        "--depth",
        metavar="PATH|URI",
        help="depth image: 16-bit PNG or uint16 NPY in millimetres, float NPY in metres "
        "(needs --intrinsics)",
    )
    group.add_argument("--intrinsics", metavar="FX,FY,CX,CY", help="pinhole intrinsics, pixels")
    group.add_argument(
        "--mask", metavar="PATH|URI", action="append", help="mask_urls entry (repeatable)"
    )
    group.add_argument(
        "--box",
        metavar="X_MIN,Y_MIN,X_MAX,Y_MAX[,OBJECT_ID]",
        action="append",
        help="box_prompts entry (repeatable)",
    )
    group.add_argument(
        "--point",
        metavar="X,Y[,LABEL[,OBJECT_ID]]",
        action="append",
        help="point_prompts entry, label 1 (default) or 0 (repeatable)",
    )
    group.add_argument("--prompt", help="text prompt (used without masks and point/box prompts)")
    group.add_argument("--seed", type=int, help=f"random seed (default {DEFAULT_SEED})")
    backends = parser.add_argument_group("backends and input policy")
    backends.add_argument("--segmentation-backend", default="embedded", metavar="NAME")
    backends.add_argument("--reconstruction-backend", default="embedded", metavar="NAME")
    backends.add_argument("--allow-http", action="store_true", help="allow http(s) URLs")
    backends.add_argument(
        "--http-allow-host",
        action="append",
        metavar="HOST|CIDR",
        help="let http(s) reach this host name or network although it is loopback, private or "
        "link-local (repeatable; all such addresses are refused otherwise)",
    )
    backends.add_argument(
        "--allowed-root",
        action="append",
        metavar="DIR",
        help="only read local files under DIR (repeatable)",
    )
    backends.add_argument(
        "--max-input-mb",
        type=float,
        default=DEFAULT_MAX_BYTES / 2**20,
        help="size limit of one input in MiB (default %(default)g)",
    )
    backends.add_argument(
        "--http-timeout",
        type=float,
        default=30.0,
        help="total deadline of one download, seconds (default %(default)g)",
    )
    backends.add_argument(
        "--max-objects",
        type=int,
        default=DEFAULT_MAX_OBJECTS,
        help="most objects per request (default %(default)d)",
    )
    backends.add_argument(
        "--workers",
        default="auto",
        metavar="N|auto",
        help="threads working on a frame's objects at once (embedded backends, grasp planner): "
        "auto = the cores this process may use, at most 4; 1 = one object at a time; the "
        "results are the same whatever the count (default %(default)s)",
    )
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="file URLs in the result become URL/<file> (default: absolute file:// URIs)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    parser.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    return parser


def _is_uri(value: str) -> bool:
    head, sep, _ = value.partition(":")
    return bool(sep) and len(head) > 1 and head.replace("+", "").replace(".", "").isalnum()


def _flag_path(value: str) -> str:
    """Make a flag's relative path absolute (flags are relative to the current directory)."""
    if _is_uri(value):
        return value
    return str(Path(value).expanduser().absolute())


def _ints(value: str, flag: str, index: int, lengths: Sequence[int], shape: str) -> List[int]:
    parts = [p.strip() for p in value.split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = None
    if numbers is None or len(numbers) not in lengths:
        raise InputError(f"{flag}[{index}]", f"expected {shape}, got {value!r}")
    return numbers


def _parse_intrinsics_flag(value: str) -> Dict[str, float]:
    try:
        numbers = [float(p) for p in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 4:
        raise InputError("--intrinsics", f"expected fx,fy,cx,cy, got {value!r}")
    return dict(zip(("fx", "fy", "cx", "cy"), numbers, strict=False))


def _read_request_file(path: str, max_chars: int) -> Dict[str, Any]:
    try:
        if path == "-":
            text = sys.stdin.read(max_chars + 1)
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read(max_chars + 1)
    except FileNotFoundError:
        raise InputError("--request", f"file not found: {path!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError("--request", f"cannot read {path!r}: {exc}") from None
    if len(text) > max_chars:
        raise InputError("--request", f"oversized: more than {max_chars} characters")
    try:
        request = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError("--request", f"invalid JSON: {exc}") from None
    except RecursionError:
        raise InputError("--request", f"JSON nested too deeply (at most {MAX_NESTING} levels)"
                         ) from None
    if not isinstance(request, dict):
        raise InputError("--request", "must hold a JSON object")
    return request


def build_request(args: argparse.Namespace) -> Dict[str, Any]:
    """Merge ``--request`` and the convenience flags into one hosted request dict."""
    # Room for every input (image, pointmap, one mask per object) inline as base64 data URIs.
    max_chars = (max(args.max_objects, 1) + 2) * int(args.max_input_mb * 2**20) * 4 // 3 + 2**20
    request = _read_request_file(args.request, max_chars) if args.request else {}
    if args.image is not None:
        request["image_url"] = _flag_path(args.image)
    if args.pointmap is not None:
        request["pointmap_url"] = _flag_path(args.pointmap)
    if args.depth is not None:
        request["pointmap_url"] = _flag_path(args.depth)
    if args.intrinsics is not None:
        request["intrinsics"] = _parse_intrinsics_flag(args.intrinsics)
        request.pop("K", None)
    if args.mask:
        request["mask_urls"] = [_flag_path(m) for m in args.mask]
    if args.box:
        boxes = []
        for index, value in enumerate(args.box):
            numbers = _ints(value, "--box", index, (4, 5), "x_min,y_min,x_max,y_max[,object_id]")
            box = dict(
                zip(("x_min", "y_min", "x_max", "y_max", "object_id"), numbers, strict=False)
            )
            boxes.append(box)
        request["box_prompts"] = boxes
    if args.point:
        points = []
        for index, value in enumerate(args.point):
            numbers = _ints(value, "--point", index, (2, 3, 4), "x,y[,label[,object_id]]")
            points.append(dict(zip(("x", "y", "label", "object_id"), numbers, strict=False)))
        request["point_prompts"] = points
    if args.prompt is not None:
        request["prompt"] = args.prompt
    if args.seed is not None:
        request["seed"] = args.seed
    if request.get("image_url") is None and not args.bag:
        raise InputError("image_url", "is required (give --image or --request)")
    return request


class _Progress:
    def __init__(self, stream: TextIO):
        self.stream = stream

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        self.stream.write(f"[{fraction * 100:3.0f}%] {stage}: {message}\n")
        self.stream.flush()


class _WarningHandler(logging.Handler):
    def __init__(self, stream: TextIO):
        super().__init__(logging.WARNING)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(f"warning: {record.getMessage()}\n")
        self.stream.flush()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``sam3d-reconstruct``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (argparse exits 2)
        return int(exc.code or 0)
    stderr = sys.stderr
    handler = _WarningHandler(stderr)
    logger = logging.getLogger("sam3d_ros")
    logger.addHandler(handler)
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM cleans up like Ctrl-C
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    state: Dict[str, Path] = {}
    try:
        return _run(args, stderr, state)
    except InputError as exc:
        stderr.write(f"error: {exc.field}: {exc.reason}\n")
        return EXIT_INPUT
    except (Cancelled, KeyboardInterrupt, Terminated) as exc:
        what = "terminated" if isinstance(exc, Terminated) else "cancelled"
        output = state.get("output")
        if output is not None and (output / "result.json").is_file():
            stderr.write(f"{what} after the run was written to {output}\n")
        else:
            stderr.write(f"{what}; nothing written\n")
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except BackendUnavailableError as exc:
        stderr.write(f"error: backend unavailable: {exc}\n")
        return EXIT_INTERNAL
    except Exception as exc:  # noqa: BLE001 -- the CLI's last resort
        if args.verbose:
            traceback.print_exc(file=stderr)
        kind = "error" if isinstance(exc, Sam3dError) else "internal error"
        stderr.write(f"{kind}: {exc.__class__.__name__}: {exc}\n")
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        logger.removeHandler(handler)


def _run(args: argparse.Namespace, stderr: TextIO, state: Dict[str, Path]) -> int:
    from sam3d_ros.core.engine import Engine, check_fresh_dir

    if args.bag:
        return _run_bag(args, stderr)
    # The output and the limits first: nothing is computed for a run that cannot be written.
    output = check_fresh_dir(args.output, "--output")
    state["output"] = output
    if args.max_input_mb <= 0:
        raise InputError("--max-input-mb", "must be positive")
    if args.http_timeout <= 0:
        raise InputError("--http-timeout", "must be positive")
    workers = _workers(args)
    request = build_request(args)
    options = InputOptions(
        allow_http=args.allow_http,
        max_bytes=int(args.max_input_mb * 2**20),
        timeout_s=args.http_timeout,
        allowed_roots=args.allowed_root,
        http_allowed_hosts=tuple(args.http_allow_host or ()),
    )
    base_dir = Path(args.request).parent if args.request and args.request != "-" else None
    # Backends are built after the request was validated (bad input fails fast).
    engine = Engine(args.segmentation_backend, args.reconstruction_backend, options,
                    max_objects=args.max_objects, workers=workers)
    outcome = engine.run(
        request,
        output,
        progress=None if args.quiet else _Progress(stderr),
        base_dir=base_dir,
        base_url=args.base_url,
    )
    if not args.quiet:
        timings = ", ".join(f"{k} {v:.2f} s" for k, v in outcome.timings.items())
        failed = f", {len(outcome.failed_objects)} failed" if outcome.failed_objects else ""
        stderr.write(f"done: {len(outcome.objects)} object(s){failed} in {output} ({timings})\n")
    result_file = Path(outcome.run_dir) / "result.json"
    text = result_file.read_text(encoding="utf-8") if result_file.is_file() else None
    sys.stdout.write(text if text else json.dumps(outcome.result, indent=2) + "\n")
    sys.stdout.flush()
    return EXIT_OK


def _workers(args: argparse.Namespace) -> int:
    from sam3d_ros.core.object_pool import resolve_workers

    return resolve_workers(args.workers, "--workers")


def _run_bag(args: argparse.Namespace, stderr: TextIO) -> int:
    from sam3d_ros.core.engine import Engine, check_fresh_dir
    from sam3d_ros.core.recording.offline import OfflineOptions, process_recording
    from sam3d_ros.core.recording.reader import FrameSelection

    for flag, value in (("--every", args.every), ("--max-frames", args.max_frames + 1)):
        if value < 1:
            raise InputError(flag, f"must be positive, got {value}")
    if args.max_rate < 0 or args.sync_slop < 0:
        raise InputError("--max-rate" if args.max_rate < 0 else "--sync-slop", "must be >= 0")
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise InputError("--end", f"must be after --start ({args.start:g} s)")
    workers = _workers(args)
    request = build_request(args)
    artifacts = Path(args.artifacts) if args.artifacts else None
    if artifacts is not None:
        check_fresh_dir(artifacts, "--artifacts")
    options = InputOptions(allowed_roots=args.allowed_root,
                           max_bytes=int(args.max_input_mb * 2**20))
    engine = Engine(args.segmentation_backend, args.reconstruction_backend, options,
                    workers=workers)
    topics = {"image": args.image_topic, "depth": args.depth_topic,
              "camera_info": args.camera_info_topic, "prompt": args.prompt_topic}
    selection = FrameSelection(args.every, args.start, args.end, args.max_rate, args.max_frames)
    summary = process_recording(
        Path(args.bag), Path(args.output), engine, request, topics, selection,
        OfflineOptions(sync_slop_s=args.sync_slop, distro=args.distro,
                       copy_inputs=not args.no_inputs),
        artifacts_dir=artifacts,
        base_dir=Path(args.request).parent if args.request and args.request != "-" else None,
        input_options=options, progress=None if args.quiet else stderr)
    t = summary.topics
    lines = [f"topics: image {t.image}, depth {t.depth}, camera_info {t.camera_info}"
             + (f", prompt {t.prompt}" if t.prompt else ""),
             f"processed {summary.processed} frame(s), {summary.objects} object(s) in total"]
    for what, items in (("skipped frame", summary.skipped_frames),
                        ("unpaired image", summary.unmatched),
                        ("recording problem", summary.recording_problems)):
        if items:
            lines.append(f"{len(items)} {what}(s):")
            lines += [f"  {item}" for item in items[:20]]
            if len(items) > 20:
                lines.append(f"  ... and {len(items) - 20} more")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
    lines.append(f"wrote {summary.output} ({counts or 'no messages'})")
    if summary.interrupted:
        lines.append(f"{summary.interrupted}: the output holds the frames processed so far")
    lines.append(f"view it: ros2 bag play {summary.output} (rviz), or open "
                 f"{summary.output} in Foxglove")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    if summary.interrupted:
        return EXIT_TERMINATED if summary.interrupted == "terminated" else EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
