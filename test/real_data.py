"""Locate the real RGB-D frames (``../shared/real_rgbd``) for tests that use them.

``real_rgbd_dir()`` looks at ``$SAM3D_REAL_RGBD`` first, then ``<repo>/../shared/real_rgbd``.
``require_real_rgbd()`` returns that folder, or skips the calling test with the reason when it is
missing, unless ``SAM3D_REQUIRE_REAL_RGBD=1``: then a missing folder fails the test.
"""

import os
from pathlib import Path

import pytest

from sam3d_bench.evaluation import real_rgbd_dir


def require_real_rgbd() -> Path:
    """The real-frame folder; skip (or fail with ``SAM3D_REQUIRE_REAL_RGBD=1``) when absent."""
    path = real_rgbd_dir()
    if path.is_dir():
        return path
    reason = f"real RGB-D frames not found at {path} (set SAM3D_REAL_RGBD)"
    if os.environ.get("SAM3D_REQUIRE_REAL_RGBD") == "1":
        pytest.fail(reason + " and SAM3D_REQUIRE_REAL_RGBD=1", pytrace=False)
    pytest.skip(reason)
