"""The reconstruction pipeline: request → load → segment → reconstruct → grasp → export.

:class:`Engine` is what the CLI and the ROS node share. :meth:`Engine.run` takes a hosted request
(dict or :class:`~sam3d_ros.core.inputs.ParsedRequest`) and, with an ``output_dir``, writes the run
directory atomically through :func:`sam3d_ros.core.export.write_run` and returns the hosted result.
:meth:`Engine.process` is the file-free part (segment + reconstruct + grasp) the ROS node calls on
frames it built itself. The grasp stage (a :class:`~sam3d_ros.core.types.GraspPlanner`,
``"analytic"``
by default, ``grasp_planner=None`` disables it) plans grasps on the reconstructed meshes; they go
into :attr:`EngineResult.grasps` and each object's entry of the metadata.

Progress: ``progress(stage, fraction, message)`` is called at the start and end of every stage;
``fraction`` is the overall progress in ``[0, 1]`` (load 0–0.1, segment 0.1–0.3,
reconstruct 0.3–0.85, grasp 0.85–0.9, export 0.9–1). Cancellation: ``cancel()`` is polled
before every stage and after the last one, and inside a stage wherever the backend calls
:func:`~sam3d_ros.core.cancellation.check_cancelled` (between objects); when it returns true the
run stops with :class:`~sam3d_ros.core.errors.Cancelled` and nothing is written.

Partial failure: when the reconstructor refuses one object (an :class:`InputError` naming
``mask_urls[i]`` / ``masks[i]``, e.g. no valid depth inside its mask), or the segmenter finds
nothing to reconstruct for its prompt (:attr:`~sam3d_ros.core.types.ObjectMask.refused`, e.g. a
click on the table), and others remain, that object goes to
:attr:`EngineResult.failed_objects` (``{"object_id", "stage", "reason"}``, the stage
``"segment"`` or ``"reconstruct"``) and the others are
reconstructed without it; the run fails only when every object fails. Limits:
``max_objects`` (see :class:`Engine`) bounds the objects of one query and of automatic
segmentation.

Determinism: before segmentation, Python's ``random``, NumPy's global RNG and (when already
imported) torch are seeded from the request's seed, which is also handed to the backends. The seed
is :data:`sam3d_ros.core.inputs.DEFAULT_SEED` (42) when the request has none.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import numpy as np

from sam3d_ros.core.cancellation import cancellable
from sam3d_ros.core.errors import BackendError, Cancelled, InputError, NoObjectFound, Sam3dError
from sam3d_ros.core.inputs import (
    DEFAULT_SEED,
    InputOptions,
    ParsedRequest,
    check_object_count,
    parse_request,
)
from sam3d_ros.core.object_pool import resolve_workers
from sam3d_ros.core.types import (
    Frame,
    Grasp,
    ObjectMask,
    ObjectReconstruction,
    SegmentationQuery,
    StageTimings,
)

ProgressCallback = Callable[[str, float, str], None]
CancelCallback = Callable[[], bool]

STAGES = ("load", "segment", "reconstruct", "grasp", "export")
_SPANS = {
    "load": (0.0, 0.1),
    "segment": (0.1, 0.3),
    "reconstruct": (0.3, 0.85),
    "grasp": (0.85, 0.9),
    "export": (0.9, 1.0),
}

_LOG = logging.getLogger(__name__)
_OBJECT_FIELD = re.compile(r"^(?:mask_urls|masks)\[(\d+)\]")


@dataclass
class EngineResult:
    """What one run produced.

    Attributes:
        result: the hosted result dict (as in ``result.json``); ``None`` when nothing was written.
        objects: one reconstruction per reconstructed mask, in mask order.
        masks: the masks of ``objects`` (same order; failed objects' masks are not here).
        timings: seconds per stage that ran (``load``, ``segment``, ``reconstruct``, ``grasp``,
            ``export``).
        run_dir: the written run directory, or ``None``.
        seed: the seed used.
        warnings: non-fatal remarks from input parsing.
        grasps: per object (same order as ``objects``), its grasps best first, camera optical
            frame; ``None`` when the engine has no grasp planner.
        failed_objects: objects that could not be segmented or reconstructed while others
            were: ``{"object_id", "stage", "reason"}`` each (``stage``: ``"segment"`` for a refused
            prompt, ``"reconstruct"``), refused prompts first, then in mask order.
    """

    result: Optional[Dict[str, Any]]
    objects: List[ObjectReconstruction]
    masks: List[ObjectMask]
    timings: StageTimings
    run_dir: Optional[Path] = None
    seed: int = DEFAULT_SEED
    warnings: List[str] = field(default_factory=list)
    grasps: Optional[List[List[Grasp]]] = None
    failed_objects: List[Dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed Python's and NumPy's global RNGs, and torch's when torch is already imported."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:  # never import torch just for this
        torch.manual_seed(seed)


def check_fresh_dir(path: Union[str, Path], field_name: str = "output_dir") -> Path:
    """Check that a run directory can be created at ``path``, before any work is done.

    ``path`` must not exist or be an empty directory; a symlink to an empty directory counts as
    that directory (the run is written there, and the returned path is the resolved one). The
    nearest existing ancestor must be a writable directory.

    Raises:
        InputError: naming ``field_name``, with the reason.
    """
    path = Path(os.path.abspath(os.fspath(path)))
    if path.is_symlink():
        if not path.exists():
            raise InputError(field_name, f"{str(path)!r} is a symlink to nothing")
        path = path.resolve()
    if path.exists():
        if not path.is_dir():
            raise InputError(field_name, f"{str(path)!r} exists and is not a directory")
        if any(path.iterdir()):
            raise InputError(
                field_name, f"{str(path)!r} exists and is not empty; choose a fresh directory"
            )
    ancestor = path.parent
    while not ancestor.exists() and not ancestor.is_symlink():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(field_name, f"cannot create {str(path)!r}: {str(ancestor)!r} is not a "
                                     "directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(field_name, f"cannot create {str(path)!r}: {str(ancestor)!r} is not "
                                     "writable")
    return path


def _no_object_error(query: SegmentationQuery) -> NoObjectFound:
    if query.masks:
        return NoObjectFound("mask_urls", "the segmenter kept none of the given masks")
    if query.objects:
        only_boxes = not any(obj.points for obj in query.objects)
        field_name = "box_prompts" if only_boxes else "point_prompts"
        return NoObjectFound(field_name, "no object found for the point/box prompts")
    if query.text:
        return NoObjectFound("prompt", f"no object found for the prompt {query.text!r}")
    return NoObjectFound("image_url", "automatic segmentation found no object")


class _Stages:
    """Times stages, reports progress and polls cancellation."""

    def __init__(
        self,
        timings: StageTimings,
        progress: Optional[ProgressCallback],
        cancel: Optional[CancelCallback],
    ):
        self.timings = timings
        self.progress = progress
        self.cancel = cancel

    def check_cancel(self, before: str) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled(f"cancelled before {before}")

    def run(self, stage: str, message: str, func: Callable[[], Any]) -> Any:
        self.check_cancel(stage)
        start, end = _SPANS[stage]
        if self.progress is not None:
            self.progress(stage, start, message)
        began = time.perf_counter()
        try:
            with cancellable(lambda: self.check_cancel(f"the end of the {stage} stage")):
                value = func()
        except Sam3dError:
            raise
        except Exception as exc:  # a backend or writer bug: keep the stage in the message
            raise BackendError(f"{stage} failed: {exc.__class__.__name__}: {exc}") from exc
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - began
        if self.progress is not None:
            self.progress(stage, end, f"{stage} done in {self.timings[stage]:.2f} s")
        return value


class Engine:
    """Segment, reconstruct and plan grasps with the given backends (embedded CPU by default).

    A backend is given as an instance or as a registry name (see :mod:`sam3d_ros.backends`);
    names are checked at once but built on first use, so a bad request fails before a heavy
    backend loads.
    """

    def __init__(
        self,
        segmenter: Any = "embedded",
        reconstructor: Any = "embedded",
        input_options: Optional[InputOptions] = None,
        grasp_planner: Any = "analytic",
        max_objects: Optional[int] = None,
        workers: Optional[Union[int, str]] = None,
    ):
        """Build an engine; ``None`` backends mean ``"embedded"``, ``grasp_planner=None`` none.

        ``workers`` goes to the backends built here from a name that take it (the embedded
        ones and the analytic grasp planner): threads working on a frame's objects at once,
        0 or ``"auto"`` for the cores (:mod:`~sam3d_ros.core.object_pool`); ``None`` keeps
        their default (one). The results are the same whatever the count.

        ``max_objects`` (when given, else ``input_options.max_objects``, default
        :data:`~sam3d_ros.core.inputs.DEFAULT_MAX_OBJECTS`) bounds the objects of one request or
        frame: a query asking for more is refused (InputError naming ``mask_urls`` /
        ``box_prompts`` / ``point_prompts``); automatic or text segmentation keeps the
        ``max_objects`` highest-scoring masks (with a warning).
        """
        from sam3d_ros.backends import GRASP_PLANNERS, RECONSTRUCTORS, SEGMENTERS

        segmenter = "embedded" if segmenter is None else segmenter
        reconstructor = "embedded" if reconstructor is None else reconstructor
        for kind, value, table in (
            ("segmentation", segmenter, SEGMENTERS),
            ("reconstruction", reconstructor, RECONSTRUCTORS),
            ("grasp", grasp_planner, GRASP_PLANNERS),
        ):
            if isinstance(value, str) and value not in table:
                raise InputError(
                    f"{kind}_backend", f"unknown backend {value!r}; choose one of {sorted(table)}"
                )
        self._segmenter = segmenter
        self._reconstructor = reconstructor
        self._grasp_planner = grasp_planner
        self._workers = None if workers is None else resolve_workers(workers)
        options = input_options or InputOptions()
        if max_objects is not None:
            if isinstance(max_objects, bool) or int(max_objects) < 1:
                raise InputError("max_objects", f"must be at least 1, got {max_objects}")
            options = dataclasses.replace(options, max_objects=int(max_objects))
        self.input_options = options

    def _options_for(self, table, name: str) -> Dict[str, Any]:
        """Keyword options of the backend ``name`` built from the registry ``table``."""
        from sam3d_ros.backends import takes_option

        if self._workers is not None and takes_option(table, name, "workers"):
            return {"workers": self._workers}
        return {}

    @property
    def max_objects(self) -> int:
        """Most objects one request or frame may have."""
        return self.input_options.max_objects

    @property
    def segmenter(self) -> Any:
        """The segmentation backend (built from its name on first access)."""
        if isinstance(self._segmenter, str):
            from sam3d_ros.backends import SEGMENTERS, make_segmenter

            self._segmenter = make_segmenter(self._segmenter,
                                   **self._options_for(SEGMENTERS, self._segmenter))
        return self._segmenter

    @property
    def reconstructor(self) -> Any:
        """The reconstruction backend (built from its name on first access)."""
        if isinstance(self._reconstructor, str):
            from sam3d_ros.backends import RECONSTRUCTORS, make_reconstructor

            self._reconstructor = make_reconstructor(self._reconstructor,
                                   **self._options_for(RECONSTRUCTORS, self._reconstructor))
        return self._reconstructor

    @property
    def grasp_planner(self) -> Any:
        """The grasp planner (built from its name on first access), or ``None`` (disabled)."""
        if isinstance(self._grasp_planner, str):
            from sam3d_ros.backends import GRASP_PLANNERS, make_grasp_planner

            self._grasp_planner = make_grasp_planner(self._grasp_planner,
                                   **self._options_for(GRASP_PLANNERS, self._grasp_planner))
        return self._grasp_planner

    def run(
        self,
        request: Union[Mapping[str, Any], ParsedRequest],
        output_dir: Optional[Union[str, Path]] = None,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCallback] = None,
        base_dir: Optional[Union[str, Path]] = None,
        base_url: Optional[str] = None,
        timings: Optional[StageTimings] = None,
    ) -> EngineResult:
        """Run the whole pipeline on a hosted request.

        Args:
            request: the hosted request dict, or an already parsed request.
            output_dir: run directory to create (must not exist or be empty); ``None`` writes
                nothing and returns ``result=None``.
            progress: ``progress(stage, fraction, message)``.
            cancel: polled between stages; true → :class:`Cancelled`.
            base_dir: directory relative paths in ``request`` are taken from.
            base_url: file URLs in the result become ``base_url/<file>`` instead of absolute
                ``file://`` URIs.
            timings: dict to record stage seconds in (e.g. pre-filled with ``load`` by a caller
                that parsed the request itself).

        Raises:
            InputError: bad request (names the field), also for a non-fresh ``output_dir``.
            Cancelled: ``cancel()`` returned true.
            BackendError / BackendUnavailableError: a backend failed.
        """
        timings = {} if timings is None else timings
        stages = _Stages(timings, progress, cancel)
        if output_dir is not None:
            output_dir = check_fresh_dir(output_dir)
        if isinstance(request, ParsedRequest):
            parsed = request
            timings.setdefault("load", 0.0)
        else:
            parsed = stages.run(
                "load",
                "reading and validating inputs",
                lambda: parse_request(request, base_dir, self.input_options),
            )
        for warning in parsed.warnings:
            _LOG.warning("%s", warning)
        outcome = self.process(parsed.frame, parsed.query, parsed.seed, progress, cancel, timings)
        outcome.warnings = list(parsed.warnings) + outcome.warnings
        stages.check_cancel("export")
        if output_dir is None:
            return outcome

        def write() -> Dict[str, Any]:
            from sam3d_ros.core.export import write_run

            return write_run(
                output_dir, parsed.request, parsed.frame, outcome.objects, base_url=base_url,
                grasps=outcome.grasps, failed_objects=outcome.failed_objects,
            )

        outcome.result = stages.run("export", f"writing {output_dir}", write)
        outcome.run_dir = Path(output_dir)
        return outcome

    def process(
        self,
        frame: Frame,
        query: SegmentationQuery,
        seed: int = DEFAULT_SEED,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCallback] = None,
        timings: Optional[StageTimings] = None,
        allow_empty: bool = False,
    ) -> EngineResult:
        """Segment, reconstruct and plan grasps on one frame; writes nothing (no ``result``).

        When segmentation finds nothing this raises :class:`~sam3d_ros.core.errors.NoObjectFound`,
        or with ``allow_empty`` returns an empty result (no objects; ``grasps`` an empty list
        when a planner is configured, else ``None``). When the segmenter refuses every prompt
        (:attr:`~sam3d_ros.core.types.ObjectMask.refused`) it raises that refusal's
        :class:`~sam3d_ros.core.errors.InputError`, ``allow_empty`` or not: the prompts are wrong.
        """
        timings = {} if timings is None else timings
        stages = _Stages(timings, progress, cancel)
        check_object_count(query, self.max_objects)
        seed_everything(seed)
        warnings: List[str] = []

        def segment() -> List[ObjectMask]:
            masks = list(self.segmenter.segment(frame, query))
            shape = (frame.height, frame.width)
            for item in masks:
                if tuple(item.region.image_shape) != shape:
                    raise BackendError(
                        f"segmenter {self.segmenter.name!r} returned a mask of shape "
                        f"{tuple(item.region.image_shape)} for a {shape} image"
                    )
            return masks

        masks = stages.run("segment", _describe(query), segment)
        failed: List[Dict[str, Any]] = []
        positions = list(range(len(masks)))  # each mask's position in the query
        refused = [m for m in masks if m.refused is not None]
        if refused:
            # A prompt that selects nothing to reconstruct (a click on the table) fails that
            # object alone, as a refused reconstruction does; with nothing else left, the run.
            positions = [i for i, m in enumerate(masks) if m.refused is None]
            masks = [masks[i] for i in positions]
            if not masks:
                raise InputError(*refused[0].refused)
            for m in refused:
                failed.append({"object_id": int(m.object_id), "stage": "segment",
                               "reason": m.refused[1]})
                _LOG.warning("object %d not segmented: %s", m.object_id, m.refused[1])
        if len(masks) > self.max_objects:  # automatic or text segmentation found many
            best = np.argsort([-float(m.score) for m in masks], kind="stable")
            keep = sorted(best[: self.max_objects].tolist())
            warnings.append(f"segmentation found {len(masks)} objects; kept the "
                            f"{self.max_objects} highest-scoring (max_objects)")
            _LOG.warning("%s", warnings[-1])
            masks = [masks[i] for i in keep]
            positions = [positions[i] for i in keep]
        if not masks:
            if not allow_empty:
                raise _no_object_error(query)
            stages.check_cancel("the end of processing")
            return EngineResult(result=None, objects=[], masks=[], timings=timings, seed=seed,
                                grasps=[] if self.grasp_planner is not None else None,
                                warnings=warnings)

        def reconstruct() -> List[ObjectReconstruction]:
            nonlocal masks
            order = list(positions)  # positions in the query, for error fields
            while True:
                try:
                    objects = list(self.reconstructor.reconstruct(frame, masks, seed))
                except InputError as exc:
                    # One object refused (e.g. no valid depth in its mask): drop it, keep the
                    # others. The backend names it by its position in the masks it was given.
                    match = _OBJECT_FIELD.match(exc.field)
                    index = int(match.group(1)) if match else len(masks)
                    if index >= len(masks):
                        raise
                    if len(masks) == 1:  # every object failed: the run fails on this one
                        field_name = (exc.field[: match.start(1)] + str(order[index])
                                      + exc.field[match.end(1):])
                        if not query.masks:  # the object came from prompts, not a mask
                            field_name = _prompt_field(query, masks[index].object_id)
                        raise type(exc)(field_name, exc.reason) from exc
                    failed.append({"object_id": int(masks[index].object_id),
                                   "stage": "reconstruct", "reason": exc.reason})
                    _LOG.warning("object %d not reconstructed: %s", masks[index].object_id,
                                 exc.reason)
                    masks = masks[:index] + masks[index + 1:]
                    del order[index]
                    continue
                if len(objects) != len(masks):
                    raise BackendError(
                        f"reconstructor {self.reconstructor.name!r} returned {len(objects)} "
                        f"objects for {len(masks)} masks"
                    )
                return objects

        objects = stages.run("reconstruct", f"reconstructing {len(masks)} object(s)", reconstruct)
        grasps = None
        if self.grasp_planner is not None:

            def grasp() -> List[List[Grasp]]:
                planned = list(self.grasp_planner.plan(frame, objects, seed))
                if len(planned) != len(objects):
                    raise BackendError(
                        f"grasp planner {self.grasp_planner.name!r} returned {len(planned)} "
                        f"grasp lists for {len(objects)} objects"
                    )
                return [list(g) for g in planned]

            grasps = stages.run("grasp", f"planning grasps on {len(objects)} object(s)", grasp)
        stages.check_cancel("the end of processing")
        return EngineResult(result=None, objects=objects, masks=masks, timings=timings, seed=seed,
                            grasps=grasps, warnings=warnings, failed_objects=failed)


def _prompt_field(query: SegmentationQuery, object_id: int) -> str:
    """The request field that gave the object ``object_id`` of a query without masks."""
    for prompt in query.objects:
        if prompt.object_id == object_id:
            positive_box = any(int(getattr(b, "label", 1)) != 0 for b in prompt.boxes)
            return "box_prompts" if positive_box else "point_prompts"
    # Found by text or automatic segmentation: as when nothing is found (_no_object_error).
    return "prompt" if query.text else "image_url"


def _describe(query: SegmentationQuery) -> str:
    if query.masks:
        return f"using {len(query.masks)} given mask(s)"
    if query.objects:
        return f"segmenting {len(query.objects)} prompted object(s)"
    if query.text:
        return f"segmenting {query.text!r}"
    return "automatic segmentation"
