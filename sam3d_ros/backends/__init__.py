"""Backend registry: names → factories, imported lazily so heavy packages load only when used.

Three small protocols (see :mod:`sam3d_ros.core.types`): ``SegmentationBackend``,
``ReconstructionBackend`` and ``GraspPlanner``. ``embedded`` backends are CPU-only, need no weights
and are the default; the default grasp planner is ``analytic`` (numpy/scipy only).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Dict, Tuple

from sam3d_ros.core.errors import InputError

# name -> (module, class); modules are imported on first use.
SEGMENTERS: Dict[str, Tuple[str, str]] = {
    "embedded": ("sam3d_ros.backends.embedded.segmentation", "EmbeddedSegmenter"),
    "sam3": ("sam3d_ros.backends.sam3.segmentation", "Sam3Segmenter"),
}
RECONSTRUCTORS: Dict[str, Tuple[str, str]] = {
    "embedded": ("sam3d_ros.backends.embedded.reconstruction", "EmbeddedReconstructor"),
    "sam3d_objects": (
        "sam3d_ros.backends.sam3d_objects.reconstruction",
        "Sam3dObjectsReconstructor",
    ),
}

GRASP_PLANNERS: Dict[str, Tuple[str, str]] = {
    "analytic": ("sam3d_ros.backends.grasp.analytic", "AnalyticGraspPlanner"),
}


def _make(table: Dict[str, Tuple[str, str]], kind: str, name: str, options: Dict[str, Any]):
    if name not in table:
        raise InputError(
            f"{kind}_backend", f"unknown backend {name!r}; choose one of {sorted(table)}"
        )
    module_name, class_name = table[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**options)


def takes_option(table: Dict[str, Tuple[str, str]], name: str, option: str) -> bool:
    """Whether the backend ``name`` of ``table`` has the keyword option ``option``."""
    if name not in table:
        return False
    module_name, class_name = table[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    return option in inspect.signature(cls).parameters


def make_segmenter(name: str = "embedded", **options: Any):
    """Build the segmentation backend called ``name`` with its keyword options."""
    return _make(SEGMENTERS, "segmentation", name, options)


def make_reconstructor(name: str = "embedded", **options: Any):
    """Build the reconstruction backend called ``name`` with its keyword options."""
    return _make(RECONSTRUCTORS, "reconstruction", name, options)


def make_grasp_planner(name: str = "analytic", **options: Any):
    """Build the grasp planner called ``name`` with its keyword options."""
    return _make(GRASP_PLANNERS, "grasp", name, options)
