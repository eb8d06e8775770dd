"""The Hikvision recorder block: connection settings for one NVR/DVR and its ISAPI client.

A flow run loads the block of its recorder once, passes it to its tasks and each task
calls `connect()`; everything ISAPI (XML, digest auth, device time, streamed downloads)
stays behind `ISAPIClient`. The block's name is the recorder's name everywhere in
nvrflow: in messages, in the limit `recorder:<name>`, in the rows.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks.isapi.client import ISAPIClient
from blocks.isapi.clock import DeviceClock
from blocks.isapi.download import DownloadResult
from blocks.isapi.errors import (
    CorruptDownload,
    DownloadRefused,
    InsufficientPermissions,
    RecorderError,
    RecorderProtocolError,
    RecorderUnavailable,
    WrongCredentials,
)
from blocks.isapi.parsing import MAIN_STREAM, SUB_STREAM, Recording

# Which stream of a recorder the classify stage decodes.
ClassifyFrom = Literal["main", "sub"]
MAX_CHANNEL = 256
MAX_SLOTS = 16  # a recorder serves a few downloads at once; more only slows each one
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

__all__ = [
    "ClassifyFrom",
    "CorruptDownload",
    "DeviceClock",
    "DownloadRefused",
    "DownloadResult",
    "HikvisionRecorder",
    "ISAPIClient",
    "InsufficientPermissions",
    "MAIN_STREAM",
    "Recording",
    "RecorderError",
    "RecorderProtocolError",
    "RecorderUnavailable",
    "SUB_STREAM",
    "WrongCredentials",
]


class HikvisionRecorder(Block):
    """A Hikvision NVR/DVR reachable over ISAPI (HTTP digest auth)."""

    _block_type_name = "Hikvision Recorder"
    _description = "Connection settings for one Hikvision NVR/DVR spoken to over ISAPI."

    host: str = Field(description="Address of the recorder, without scheme or port.")
    port: int = Field(default=80, ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"
    username: str = "admin"
    password: SecretStr
    channels: list[int] = Field(
        default_factory=lambda: [1],
        min_length=1,
        description=f"Channels (cameras) to export, 1..{MAX_CHANNEL}.",
    )
    max_concurrent_downloads: int = Field(
        default=2, ge=1, le=MAX_SLOTS, description="Size of the recorder's concurrency limit."
    )
    site: str = ""
    enabled: bool = True
    classify_from: ClassifyFrom = Field(
        default="main",
        description=(
            "Stream the classify stage decodes: 'sub' takes the recorder's sub-stream (track x02) where "
            "it records one, several times cheaper to decode; the MP4s are the main stream's either way."
        ),
    )
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(
        default=30.0, gt=0, description="Longest silence tolerated mid-answer, seconds."
    )
    verify_tls: bool = Field(
        default=True, description="Check the HTTPS certificate (off for self-signed devices)."
    )

    @field_validator("host")
    @classmethod
    def _an_address(cls, value: str) -> str:
        text = value.strip()
        try:
            return str(ipaddress.ip_address(text.strip("[]")))
        except ValueError:
            pass
        if not _HOSTNAME.match(text) or text.replace(".", "").isdigit():
            raise ValueError(f"{text!r} is not an IP address or host name")
        return text

    @field_validator("channels")
    @classmethod
    def _channel_numbers(cls, value: list[int]) -> list[int]:
        if any(not 1 <= c <= MAX_CHANNEL for c in value):
            raise ValueError(f"channels must be 1..{MAX_CHANNEL}")
        return sorted(set(value))

    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def name(self) -> str:
        """The block's name, which is the recorder's name; `host:port` for a block never saved."""
        return self._block_document_name or f"{self.host}:{self.port}"

    def named(self, name: str) -> HikvisionRecorder:
        """This block under the recorder name `name`, as `load(name)` would give it (for unsaved blocks)."""
        self._block_document_name = name
        return self

    def connect(self) -> ISAPIClient:
        """A client for this recorder; use it as a context manager."""
        return ISAPIClient(
            name=self.name,
            base_url=self.base_url(),
            username=self.username,
            password=self.password.get_secret_value(),
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            verify_tls=self.verify_tls,
        )
