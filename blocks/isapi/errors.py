"""Recorder errors: each names the recorder (and channel/segment where known), never the password.

Every recorder error is a `core.errors.ServiceError`, so the one retry policy
(`core.errors.is_retryable`) reads its `retryable` flag: a wrong password, missing rights
or an answer we cannot understand will not heal by waiting, a timeout, a 5xx or a
truncated body usually will. Messages keep the device's own words (the ResponseStatus
`subStatusCode`/`statusString`) so an operator can tell "wrong password" from "this
account may not download" without a packet capture.
"""

from __future__ import annotations

from core.errors import ServiceError


class RecorderError(ServiceError):
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
    """The device refused the username/password itself.

    Raised for a 401 that follows a digest challenge httpx already answered, and for a
    refusal whose subStatusCode speaks of authorization (e.g. 403 badAuthorization).
    """

    def __init__(
        self,
        *,
        recorder: str,
        username: str | None = None,
        status_code: int | None = None,
        device_words: str | None = None,
        device_status: str | None = None,
        channel: int | None = None,
        segment: str | None = None,
    ) -> None:
        self.username = username
        message = f"wrong credentials for recorder {recorder}"
        if username:
            message += f" (user {username!r})"
        if device_words:
            message += f": {device_words}"
        super().__init__(
            message,
            recorder=recorder,
            status_code=status_code,
            device_status=device_status,
            channel=channel,
            segment=segment,
        )


class InsufficientPermissions(RecorderError):
    """403 lowPrivilege: the account logged in, but its user rights forbid this request.

    Not retryable: only an administrator granting the right (e.g. playback/download for
    the channel) changes the answer.
    """

    def __init__(
        self,
        *,
        recorder: str,
        username: str,
        action: str,
        device_words: str,
        status_code: int | None = 403,
        device_status: str | None = None,
        channel: int | None = None,
        segment: str | None = None,
    ) -> None:
        self.username = username
        self.action = action
        super().__init__(
            f"user {username!r} lacks the rights for {action} on recorder {recorder}: {device_words}",
            recorder=recorder,
            status_code=status_code,
            device_status=device_status,
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


class DownloadRefused(RecorderProtocolError):
    """The device refused every documented form of the download request.

    `refusals` holds one line per form tried, with the device's own words, in the order tried.
    """

    def __init__(
        self,
        *,
        recorder: str,
        refusals: list[str],
        status_code: int | None = None,
        device_status: str | None = None,
        channel: int | None = None,
        segment: str | None = None,
    ) -> None:
        self.refusals = list(refusals)
        super().__init__(
            f"recorder {recorder} refused every download form tried: {'; '.join(refusals)}",
            recorder=recorder,
            status_code=status_code,
            device_status=device_status,
            channel=channel,
            segment=segment,
        )
