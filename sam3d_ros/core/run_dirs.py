"""Run directories on disk: temporary names while writing, stale-temp cleanup, pruning.

A run directory is written under a hidden temporary name in its parent,
``.<name>.tmp-<pid>-<random>`` (:func:`temp_dir_path`), and renamed when complete. A process
killed while writing (SIGKILL, power loss) leaves that temporary directory behind;
:func:`remove_stale_temps`, called before every new run is written, deletes the ones whose
writer is gone (its pid is not running here) or that are older than ``max_age_s`` (a pid may
have been reused, or the writer ran in another pid namespace).

:func:`prune_runs` keeps the node's ``max_runs_kept`` newest runs.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import List

STALE_TEMP_AGE_S = 3600.0
"""A temporary run directory this old is stale whoever owns it (no export takes an hour)."""

_TEMP_RE = re.compile(r"^\..+\.tmp-(\d+)-[A-Za-z0-9_]+$")
_RUN_DIR_RE = re.compile(r"^(frame|goal)_\d{8}T\d{6}_\d{6}_\d+$")


def temp_dir_path(run_dir: Path) -> Path:
    """A fresh name ``.<name>.tmp-<pid>-<random>`` for the sibling ``run_dir`` is built in.

    Not created here: the caller creates it inside the ``try`` whose handler removes it, so a
    signal arriving between the creation and the ``try`` (a SIGTERM sent the moment the
    directory appears) cannot leave it behind.
    """
    return run_dir.parent / f".{run_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}"


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OverflowError:  # not a pid at all
        return False
    return True


def remove_stale_temps(parent: Path, max_age_s: float = STALE_TEMP_AGE_S) -> List[Path]:
    """Delete temporary run directories in ``parent`` left by writers that are gone.

    Only directories (not symlinks) named like :func:`temp_dir_path`'s are considered; one is
    stale when its pid is not running or it is older than ``max_age_s``. Returns the deleted
    paths.
    """
    try:
        entries = list(os.scandir(parent))
    except OSError:  # no parent yet, or unreadable: nothing of ours there
        return []
    now = time.time()
    deleted = []
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:  # removed meanwhile
            continue
        if age > max_age_s or not _pid_running(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)
            deleted.append(Path(entry.path))
    return deleted


def prune_runs(output_dir: Path, keep: int) -> List[Path]:
    """Delete the oldest run directories written by the node beyond ``keep`` (0 = keep all).

    Only directories named like the node's runs (``frame_...`` / ``goal_...``) are considered.
    Returns the deleted paths.
    """
    if keep <= 0 or not output_dir.is_dir():
        return []
    runs = sorted(
        (p for p in output_dir.iterdir() if p.is_dir() and _RUN_DIR_RE.match(p.name)),
        key=lambda p: (p.stat().st_mtime, p.name),
    )
    deleted = []
    for path in runs[: max(0, len(runs) - keep)]:
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path)
    return deleted
