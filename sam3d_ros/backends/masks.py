"""Given masks, validated once for every segmentation backend (hosted ``mask_urls``)."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from sam3d_ros.core.errors import InputError
from sam3d_ros.core.types import Frame, ObjectMask


def pass_through_masks(frame: Frame, masks: Sequence[np.ndarray]) -> List[ObjectMask]:
    """Validate user masks and return one :class:`ObjectMask` per mask (object_id = index).

    A mask is H×W (or H×W×1) of the image's size: bool, integer (nonzero = object) or float
    (> 0.5 = object; NaN = background).

    Raises:
        InputError: ``mask_urls[i]`` with the reason (shape, size, dtype, empty).
    """
    out = []
    for i, raw in enumerate(masks):
        field_name = f"mask_urls[{i}]"
        m = np.asarray(raw)
        if m.ndim == 3 and m.shape[2] == 1:
            m = m[:, :, 0]
        if m.ndim != 2:
            raise InputError(field_name, f"a mask must be an H×W image, got shape {m.shape}")
        if m.shape != (frame.height, frame.width):
            raise InputError(
                field_name,
                f"mask is {m.shape[1]}×{m.shape[0]} but the image is "
                f"{frame.width}×{frame.height}",
            )
        if m.dtype == bool:
            b = m.copy()
        elif m.dtype.kind == "f":
            b = np.nan_to_num(m, nan=0.0) > 0.5
        elif m.dtype.kind in "ui":
            b = m > 0
        else:
            raise InputError(field_name, f"unsupported mask dtype {m.dtype}")
        if not b.any():
            raise InputError(field_name, "mask is empty (no foreground pixel)")
        out.append(ObjectMask(object_id=i, region=b, label="", score=1.0))
    return out
