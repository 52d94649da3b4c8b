"""Cancellation inside a backend's long loops.

The engine polls its ``cancel`` callback between stages; a stage that loops over objects (or
iterations) can end sooner by calling :func:`check_cancelled` between them. During a stage the
engine makes the run's check current (per thread and context, so concurrent runs do not mix);
outside a run :func:`check_cancelled` does nothing, so a backend calls it unconditionally.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Callable, Iterator, Optional

_CHECK: ContextVar[Optional[Callable[[], None]]] = ContextVar("sam3d_cancel_check", default=None)


def check_cancelled() -> None:
    """Raise :class:`~sam3d_ros.core.errors.Cancelled` if the current run was cancelled."""
    check = _CHECK.get()
    if check is not None:
        check()


def current_check() -> Optional[Callable[[], None]]:
    """The check :func:`check_cancelled` calls now (``None`` outside a run)."""
    return _CHECK.get()


@contextlib.contextmanager
def cancellable(check: Callable[[], None]) -> Iterator[None]:
    """Make ``check`` (raises ``Cancelled`` when cancelled) current for :func:`check_cancelled`."""
    token = _CHECK.set(check)
    try:
        yield
    finally:
        _CHECK.reset(token)
