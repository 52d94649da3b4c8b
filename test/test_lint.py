"""Lint the way ament packages do (flake8 + pep257), with ruff; config in ruff.toml."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_clean():
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    roots = ("sam3d_ros", "sam3d_bench", "test", "benchmarks", "tools", "scripts")
    paths = [p for p in roots if os.path.exists(os.path.join(ROOT, p))]
    proc = subprocess.run(
        [ruff, "check", "--no-cache", *paths], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
