"""Per-object work on several CPU cores (threads), with the serial loop's results and errors.

The embedded backends and the analytic grasp planner work object by object, and each object's
work reads shared per-frame arrays only. NumPy, SciPy and OpenCV release the GIL inside their
array loops, so threads run much of it in parallel: on the real 1280×720 frames, 6 objects
segment and reconstruct in 0.6–0.85× the serial time on 2 cores (``benchmarks/README.md``).

Results are the same as the serial loop's, to the bit, whatever the worker count: each object
is computed by the same code from the same inputs, and nothing random is shared (seeded
generators are created per object; OpenCV's RNG is per thread). Errors are too: when objects
fail, the first one's exception (in object order) is raised, as the loop would have, after the
other workers stop. The caller's context variables (the run's cancellation check,
:mod:`sam3d_ros.core.cancellation`) are current in every worker.
"""

from __future__ import annotations

import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Sequence, TypeVar

from sam3d_ros.core.cancellation import cancellable, current_check
from sam3d_ros.core.errors import Cancelled, InputError

T = TypeVar("T")
R = TypeVar("R")

# "auto" uses the cores this process may run on, at most this many: beyond four, the parts
# that hold the GIL dominate and more threads only take cores from the rest of the robot.
MAX_AUTO_WORKERS = 4


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers, field: str = "workers") -> int:
    """A worker count from ``workers``: a positive int, or 0 / ``"auto"`` for the cores.

    Raises:
        InputError: anything else, naming ``field``.
    """
    if isinstance(workers, str):
        text = workers.strip().lower()
        if text == "auto":
            return min(MAX_AUTO_WORKERS, available_cores())
        try:
            workers = int(text)
        except ValueError:
            raise InputError(
                field, f"expected a number of threads or 'auto', got {workers!r}") from None
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise InputError(field, f"expected a number of threads or 'auto', got {workers!r}")
    if workers < 0:
        raise InputError(field, f"must be 0 (auto) or more, got {workers}")
    if workers == 0:
        return min(MAX_AUTO_WORKERS, available_cores())
    return workers


def map_objects(fn: Callable[[T], R], items: Sequence[T], workers: int) -> List[R]:
    """``[fn(item) for item in items]`` on up to ``workers`` threads, in order.

    With one worker (or one item) it is exactly that loop, in the calling thread. When an
    object fails, or the calling thread is interrupted (Ctrl-C, SIGTERM), the objects not yet
    started are dropped and the running ones stop at their next
    :func:`~sam3d_ros.core.cancellation.check_cancelled`; after a failure they are waited for
    (no work of this call outlives it), after an interrupt not (it propagates at once).
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    stop = threading.Event()
    outer = current_check()

    def check() -> None:
        if stop.is_set():
            raise Cancelled("an earlier object failed, or the run was interrupted")
        if outer is not None:
            outer()

    def run(item: T) -> R:
        if stop.is_set():  # the serial loop would not have reached this object
            raise _Skipped()
        with cancellable(check):
            return fn(item)

    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)),
                              thread_name_prefix="sam3d-object")
    wait = True
    try:
        try:
            # Each task runs in a copy of the caller's context (its ContextVar changes stay its
            # own): the run's cancellation check and NumPy's error state are current there.
            futures = [pool.submit(contextvars.copy_context().run, run, item) for item in items]
        except RuntimeError:  # no new threads (the interpreter is shutting down): one by one
            return [fn(item) for item in items]
        results: List[R] = []
        try:
            for future in futures:
                results.append(future.result())
        except Exception:
            stop.set()
            raise
        except BaseException:  # KeyboardInterrupt, Terminated: do not wait for the objects
            stop.set()
            wait = False
            raise
        return results
    finally:
        pool.shutdown(wait=wait, cancel_futures=True)


class _Skipped(Exception):
    """A task not started because an earlier object failed (never reaches the caller)."""
