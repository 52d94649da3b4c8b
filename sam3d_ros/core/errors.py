"""Errors raised by the core. The CLI maps InputError to exit 2, everything else to exit 1."""

from __future__ import annotations


class Sam3dError(Exception):
    """Base class of every error the core raises on purpose."""


class InputError(Sam3dError, ValueError):
    """Bad input: names the offending field and the reason.

    Attributes:
        field: dotted name of the request field, e.g. ``box_prompts[2].x_max``.
        reason: human-readable reason, without the field name.
    """

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NoObjectFound(InputError):
    """Segmentation found no object (an empty table, or prompts over nothing).

    An :class:`InputError` for one-shot requests (CLI exit 2, a failed goal); the node's
    continuous mode publishes it as an empty result instead.
    """


class BackendUnavailableError(Sam3dError, RuntimeError):
    """A backend cannot be used here (missing package, checkpoint or GPU); says what to do."""


class BackendError(Sam3dError, RuntimeError):
    """A backend failed while processing a valid request (e.g. GPU out of memory)."""


class Cancelled(Sam3dError):
    """The caller cancelled the run (cancel callback, ROS action cancel, Ctrl-C)."""


class Terminated(BaseException):
    """SIGTERM arrived.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way (a backend
    wrapping its errors) mistakes it for a failure, and cleanup still runs.
    """
