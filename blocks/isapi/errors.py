"""Recorder errors: each names the recorder (and channel/segment where known), never the password.

The split between retryable and final faults is what Prefect task retries key on
(`is_retryable`): a wrong password or an answer we cannot understand will not heal by
waiting, a timeout, a 5xx or a truncated body usually will.
"""

from __future__ import annotations


class RecorderError(Exception):
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        recorder: str,
        channel: int | None = None,
        segment: str | None = None,
        status_code: int | None = None,
        device_status: str | None = None,
    ) -> None:
        self.recorder = recorder
        # The device's ResponseStatus subStatusCode (e.g. badXmlContent), when it sent one.
        self.device_status = device_status
        self.channel = channel
        self.segment = segment
        self.status_code = status_code
        # Messages that already start with the recorder's name do not repeat it.
        where = [] if f"recorder {recorder}" in message else [f"recorder {recorder}"]
        if channel is not None:
            where.append(f"channel {channel}")
        if segment:
            where.append(f"segment {segment}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)

    def __reduce__(self) -> tuple[object, ...]:
        # Prefect pickles a failed task's exception; the keyword-only __init__ cannot be
        # replayed from self.args, so rebuild from the finished message and attributes.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[RecorderError], args: tuple[object, ...], state: dict[str, object]) -> RecorderError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class WrongCredentials(RecorderError):
    """401/403: the block's username or password is wrong or lacks rights."""

    def __init__(
        self,
        *,
        recorder: str,
        status_code: int | None = None,
        channel: int | None = None,
        segment: str | None = None,
    ) -> None:
        super().__init__(
            f"wrong credentials for recorder {recorder}",
            recorder=recorder,
            status_code=status_code,
            channel=channel,
            segment=segment,
        )


class RecorderUnavailable(RecorderError):
    """Timeouts, refused or dropped connections, 5xx answers."""

    retryable = True


class CorruptDownload(RecorderError):
    """A downloaded segment has the wrong size, a bad magic number or was cut short."""

    retryable = True


class RecorderProtocolError(RecorderError):
    """An answer we cannot parse or did not expect; retrying sends the same request again."""


def is_retryable(exc: BaseException) -> bool:
    """True for faults that can heal by themselves; used as the Prefect task retry condition."""
    if isinstance(exc, RecorderError):
        return exc.retryable
    return False
