"""One base for the errors of every outside service nvrflow talks to.

Recorders (ISAPI), ClickHouse, the model server (TF Serving) and the media tools
(ffmpeg, ffprobe, HandBrakeCLI) each raise a subclass of `ServiceError`. Its
`retryable` flag is the one thing the retry policy (`flows/retry_policy.py`) reads: a
fault that can heal by waiting (timeouts, dropped connections, 5xx, a server
restarting) is retried by the task; one that cannot (wrong password, missing rights,
a model that does not match its block, corrupt input) fails at once.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A failure of an outside service; `retryable` says whether trying again can help."""

    retryable: bool = False


def is_retryable(exc: BaseException) -> bool:
    """True only for service errors flagged as able to heal by themselves."""
    return isinstance(exc, ServiceError) and exc.retryable
