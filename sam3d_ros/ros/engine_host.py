"""The node's engine: built from the node's parameters, its backends loaded and unloaded.

One lock serialises the engine between the frame worker and the goals.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict

from sam3d_ros.core.grasp_messages import parse_approach
from sam3d_ros.core.inputs import InputOptions
from sam3d_ros.core.work_gate import WorkGate
from sam3d_ros.ros import parameters


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
            "embedded": {},
            "sam3": {
                "checkpoint": self._p("sam3_checkpoint") or None,
                "device": self._p("device"),
            },
            "sam3d_objects": {"pipeline_config": self._p("sam3d_pipeline_config") or None},
        }

    def build(self) -> Any:
        """Build the engine the parameters describe and load its backends."""
        from sam3d_ros.backends import make_reconstructor, make_segmenter
        from sam3d_ros.core.engine import Engine

        options = self.backend_options()
        segmentation = self._p("segmentation_backend")
        reconstruction = self._p("reconstruction_backend")
        segmenter = make_segmenter(segmentation, **options.get(segmentation, {}))
        reconstructor = make_reconstructor(reconstruction, **options.get(reconstruction, {}))
        roots = [r for r in self._p("allowed_input_roots") if r]
        input_options = InputOptions(allow_http=self._p("allow_http"),
                                     allowed_roots=roots or None)
        self.engine = Engine(segmenter, reconstructor, input_options=input_options,
                             grasp_planner=self._grasp_planner())
        self.load()
        return self.engine

    def _grasp_planner(self) -> Any:
        from sam3d_ros.backends import make_grasp_planner

        if self._p("grasp_planner") == "none":
            return None
        return make_grasp_planner(self._p("grasp_planner"), gripper=parameters.gripper(self._p),
                                  top_k=int(self._p("grasp_top_k")),
                                  preferred_approach=parse_approach(self._p("grasp_approach")))

    def load(self) -> None:
        """Load the backends (``load()`` where they have one)."""
        if self.engine is None:
            return
        for backend in (self.engine.segmenter, self.engine.reconstructor):
            load = getattr(backend, "load", None)
            if callable(load):
                load()
        self.state = "loaded"

    def unload(self) -> None:
        """Unload the backends (``unload()`` where they have one); failures are logged."""
        if self.engine is None:
            return
        with self.lock:
            for backend in (self.engine.segmenter, self.engine.reconstructor):
                unload = getattr(backend, "unload", None)
                if callable(unload):
                    try:
                        unload()
                    except Exception as exc:  # noqa: BLE001
                        self._logger.warning(f"unload of {backend.name} failed: {exc}")
        self.state = "unloaded"

    def drop(self) -> None:
        """Forget the engine (cleanup)."""
        self.engine = None
        self.state = "not loaded"

    def gripper(self) -> Any:
        """The engine's gripper, else the one the parameters describe."""
        planner = self.engine.grasp_planner if self.engine is not None else None
        return getattr(planner, "gripper", None) or parameters.gripper(self._p)
