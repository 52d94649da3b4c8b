"""The node's engine: built from the node's parameters, its backends loaded and unloaded.

Backends are loaded at configure and unloaded at cleanup, shutdown and error (never at
deactivate: a pause must not reload minutes of model). One lock serialises the engine between
the frame worker and the goals.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Sequence, Tuple

from sam3d_ros.core.errors import Cancelled
from sam3d_ros.core.grasp_messages import parse_approach
from sam3d_ros.core.inputs import InputOptions
from sam3d_ros.core.work_gate import WorkGate
from sam3d_ros.ros import parameters
from sam3d_ros.ros.diagnostics import describe


class EngineHost:
    """Holds the :class:`~sam3d_ros.core.engine.Engine` and the load state of its backends.

    Args:
        param: ``param(name)`` reads a node parameter.
        logger: the node's logger.
    """

    def __init__(self, param: Callable[[str], Any], logger: Any) -> None:
        self._p = param
        self._logger = logger
        self.engine: Any = None
        self.lock = threading.Lock()
        # Whose turn it is: goals (claimed from acceptance) before frames; see core.work_gate.
        self.gate = WorkGate()
        self.state = "not loaded"

    def backend_options(self) -> Dict[str, Dict[str, Any]]:
        """Node parameters as keyword options of each backend, by registry name."""
        return {
            "embedded": {"workers": int(self._p("cpu_workers"))},
            "sam3": {
                "checkpoint": self._p("sam3_checkpoint") or None,
                "device": self._p("device"),
            },
            "sam3d_objects": {"pipeline_config": self._p("sam3d_pipeline_config") or None},
        }

    def build(self) -> Any:
        """Build the engine the parameters describe and load its backends.

        All or nothing: when a backend fails to build or load, the ones already loaded are
        unloaded again before the error is raised (no model is left in GPU memory).
        """
        from sam3d_ros.backends import make_reconstructor, make_segmenter
        from sam3d_ros.core.engine import Engine

        try:
            options = self.backend_options()
            segmentation = self._p("segmentation_backend")
            reconstruction = self._p("reconstruction_backend")
            segmenter = make_segmenter(segmentation, **options.get(segmentation, {}))
            reconstructor = make_reconstructor(reconstruction,
                                               **options.get(reconstruction, {}))
            roots = [r for r in self._p("allowed_input_roots") if r]
            input_options = InputOptions(allow_http=self._p("allow_http"),
                                         allowed_roots=roots or None)
            engine = Engine(segmenter, reconstructor, input_options=input_options,
                            grasp_planner=self._grasp_planner(),
                            max_objects=int(self._p("max_objects")))
            loaded: List[Any] = []
            try:
                for backend in _backends(engine):
                    load = getattr(backend, "load", None)
                    if callable(load):
                        load()
                        loaded.append(backend)
            except BaseException:
                self._unload(loaded)
                raise
        except BaseException:
            self.state = "failed to load"
            raise
        self.engine = engine
        self.state = "loaded"
        return engine

    def _grasp_planner(self) -> Any:
        from sam3d_ros.backends import make_grasp_planner

        if self._p("grasp_planner") == "none":
            return None
        return make_grasp_planner(self._p("grasp_planner"), gripper=parameters.gripper(self._p),
                                  top_k=int(self._p("grasp_top_k")),
                                  max_samples=int(self._p("grasp_max_samples")),
                                  preferred_approach=parse_approach(self._p("grasp_approach")),
                                  workers=int(self._p("cpu_workers")))

    def release(self) -> None:
        """Unload the backends and forget the engine (cleanup, shutdown, error).

        Waits for the engine lock: a stage running in another thread ends first.
        """
        with self.lock:
            engine, self.engine = self.engine, None
            if engine is not None:
                self._unload(_backends(engine))
                self.state = "unloaded"

    def _unload(self, backends: Sequence[Any]) -> None:
        for backend in reversed(list(backends)):
            unload = getattr(backend, "unload", None)
            if callable(unload):
                try:
                    unload()
                except Exception as exc:  # noqa: BLE001 - unload the others all the same
                    self._logger.error(
                        f"unload of {getattr(backend, 'name', backend)!r} failed: "
                        f"{describe(exc)}")

    def process(self, *args: Any, **kwargs: Any) -> Tuple[Any, Any]:
        """``(engine, engine.process(...))`` under the engine lock.

        Raises:
            Cancelled: the backends were released (cleanup or shutdown).
        """
        with self.lock:
            engine = self.engine
            if engine is None:
                raise Cancelled("the backends are unloaded")
            return engine, engine.process(*args, **kwargs)

    def gripper(self, engine: Any) -> Any:
        """The gripper of ``engine``'s planner, else the one the parameters describe."""
        planner = engine.grasp_planner if engine is not None else None
        return getattr(planner, "gripper", None) or parameters.gripper(self._p)


def _backends(engine: Any) -> List[Any]:
    """The engine's segmenter, reconstructor and grasp planner (when it has one)."""
    return [b for b in (engine.segmenter, engine.reconstructor, engine.grasp_planner)
            if b is not None]
