"""Per-recorder fault settings and counters, changed at run time through `/_sim/faults`.

Besides transport faults, a recorder can refuse requests the way real Hikvision firmware
does, with a ResponseStatus body: `low_privilege` answers 403 lowPrivilege (an account
without the playback/download right), `refuse_download_forms` turns down chosen forms of
the download request (firmware that takes only some of the documented forms), and
`download_body` accepts only one shape of the request's XML body (firmware that checks it
against its own schema), refusing the others with 400 badXmlContent.

`hostile` makes the recorder an attacker's: its search answers an XML bomb, an external
entity or never ends, its downloads never end, or its segment names carry shell
metacharacters and a path out of the data folder.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass, fields

from stack.simulator.isapi_xml import DOWNLOAD_BODY_SHAPES, SUB_STATUSES


@dataclass
class Faults:
    latency_ms: int = 0
    bandwidth_bps: int = 0
    error_rate: float = 0.0
    error_status: int = 503
    drop_after_bytes: int = 0
    wrong_size: bool = False
    offline: bool = False
    wrong_password: bool = False
    fail_next: int = 0
    # Which requests answer 403 lowPrivilege: "" (none), "download", "search", or
    # "all_but_device_info" (the account can log in and read deviceInfo, nothing else).
    low_privilege: str = ""
    # Comma-separated download forms to refuse: post_xml, get_xml, get_query.
    refuse_download_forms: str = ""
    # How a refused download form is answered: HTTP status and ResponseStatus subStatusCode.
    download_refusal_status: int = 403
    download_refusal_sub_status: str = "methodNotAllowed"
    # The one downloadRequest body shape accepted: "" (any), "isapi", "hikvision" or "bare".
    download_body: str = ""
    # How far the device's clock (/ISAPI/System/time) is from the true time, in seconds (±).
    clock_offset_s: int = 0
    # One of HOSTILE_MODES: what a malicious device answers instead of the truth ("" for none).
    hostile: str = ""


_TYPES = {f.name: f.type for f in fields(Faults)}
LOW_PRIVILEGE_SCOPES = ("", "download", "search", "all_but_device_info")
DOWNLOAD_FORMS = ("post_xml", "get_xml", "get_query")
DOWNLOAD_BODIES = ("", *DOWNLOAD_BODY_SHAPES.values())
HOSTILE_MODES = ("", "xml_bomb", "external_entity", "endless_search", "endless_download", "hostile_names")


def _text_fault(key: str, value: object) -> str:
    """Validate a text fault, so a typo fails the PUT instead of silently injecting nothing."""
    text = str(value).strip()
    if key == "low_privilege" and text not in LOW_PRIVILEGE_SCOPES:
        raise ValueError(f"low_privilege must be one of {LOW_PRIVILEGE_SCOPES}")
    if key == "refuse_download_forms":
        forms = [form.strip() for form in text.split(",") if form.strip()]
        unknown = sorted(set(forms) - set(DOWNLOAD_FORMS))
        if unknown:
            raise ValueError(f"unknown download forms {unknown}; known: {DOWNLOAD_FORMS}")
        text = ",".join(forms)
    if key == "download_body" and text not in DOWNLOAD_BODIES:
        raise ValueError(f"download_body must be one of {DOWNLOAD_BODIES}")
    if key == "hostile" and text not in HOSTILE_MODES:
        raise ValueError(f"hostile must be one of {HOSTILE_MODES}")
    if key == "download_refusal_sub_status" and text not in SUB_STATUSES:
        raise ValueError(f"download_refusal_sub_status must be one of {sorted(SUB_STATUSES)}")
    return text


class FaultState:
    """Thread-safe fault settings plus the counters tests read back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faults = Faults()
        self._error_counter = 0
        # Requests the recorder answered (or began to), and the ones it dropped unanswered while
        # offline: a refused connection is no served request.
        self.requests_by_path: Counter[str] = Counter()
        self.offline_by_path: Counter[str] = Counter()
        self.active_downloads = 0
        self.max_active_downloads = 0
        self.downloads_completed = 0
        self.downloads_failed = 0
        self.bytes_sent = 0
        self.errors_injected = 0
        # Refusals answered with a ResponseStatus, by subStatusCode; download requests by form,
        # and those with a body by its shape.
        self.refusals: Counter[str] = Counter()
        self.downloads_by_form: Counter[str] = Counter()
        self.downloads_by_body: Counter[str] = Counter()

    def update(self, changes: dict) -> dict:
        unknown = set(changes) - set(_TYPES)
        if unknown:
            raise ValueError(f"unknown faults: {sorted(unknown)}")
        with self._lock:
            for key, value in changes.items():
                kind = _TYPES[key]
                if kind == "bool":
                    value = bool(value)
                elif kind == "str":
                    value = _text_fault(key, value)
                elif kind == "float":
                    value = float(value)
                    if not 0.0 <= value <= 1.0:
                        raise ValueError("error_rate must be within 0..1")
                else:
                    value = int(value)
                    if value < 0 and key != "clock_offset_s":
                        raise ValueError(f"{key} must not be negative")
                    if key == "download_refusal_status" and not 400 <= value <= 599:
                        raise ValueError("download_refusal_status must be an HTTP error status (400..599)")
                setattr(self.faults, key, value)
            self._error_counter = 0
            return asdict(self.faults)

    def reset(self) -> dict:
        with self._lock:
            self.faults = Faults()
            self._error_counter = 0
            return asdict(self.faults)

    def snapshot(self) -> dict:
        with self._lock:
            return asdict(self.faults)

    def should_fail(self) -> int | None:
        """The status to answer an authenticated ISAPI request with, or None to serve it.

        error_rate fails every k-th request (k = round(1/rate)) so tests are deterministic.
        """
        with self._lock:
            f = self.faults
            if f.fail_next > 0:
                f.fail_next -= 1
                self.errors_injected += 1
                return f.error_status
            if f.error_rate > 0:
                self._error_counter += 1
                every = max(1, round(1 / f.error_rate))
                if self._error_counter % every == 0:
                    self.errors_injected += 1
                    return f.error_status
            return None

    def low_privilege_for(self, path: str) -> bool:
        """Whether the current faults make this account too weak for `path`."""
        with self._lock:
            scope = self.faults.low_privilege
        if scope == "all_but_device_info":
            return path != "/ISAPI/System/deviceInfo"
        return bool(scope) and path == f"/ISAPI/ContentMgmt/{scope}"

    def download_refusal(self, form: str) -> tuple[int, str] | None:
        """(HTTP status, subStatusCode) to refuse this download form with, or None to serve it."""
        with self._lock:
            f = self.faults
            if form in f.refuse_download_forms.split(","):
                return f.download_refusal_status, f.download_refusal_sub_status
            return None

    def body_refused(self, shape: str) -> bool:
        """Whether the current faults make this firmware refuse a download body of this shape."""
        with self._lock:
            wanted = self.faults.download_body
        return bool(wanted) and shape != wanted

    def count_refusal(self, sub_status: str) -> None:
        with self._lock:
            self.refusals[sub_status] += 1

    def count_download_form(self, form: str, body_shape: str | None) -> None:
        with self._lock:
            self.downloads_by_form[form] += 1
            if body_shape is not None:
                self.downloads_by_body[body_shape] += 1

    def count_request(self, path: str) -> None:
        with self._lock:
            self.requests_by_path[path] += 1

    def count_offline(self, path: str) -> None:
        with self._lock:
            self.offline_by_path[path] += 1

    def download_started(self) -> None:
        with self._lock:
            self.active_downloads += 1
            self.max_active_downloads = max(self.max_active_downloads, self.active_downloads)

    def download_finished(self, sent: int, complete: bool) -> None:
        with self._lock:
            self.active_downloads -= 1
            self.bytes_sent += sent
            if complete:
                self.downloads_completed += 1
            else:
                self.downloads_failed += 1

    def stats(self) -> dict:
        with self._lock:
            return {
                "requests_by_path": dict(self.requests_by_path),
                "offline_by_path": dict(self.offline_by_path),
                "active_downloads": self.active_downloads,
                "max_active_downloads": self.max_active_downloads,
                "downloads_completed": self.downloads_completed,
                "downloads_failed": self.downloads_failed,
                "bytes_sent": self.bytes_sent,
                "errors_injected": self.errors_injected,
                "refusals": dict(self.refusals),
                "downloads_by_form": dict(self.downloads_by_form),
                "downloads_by_body": dict(self.downloads_by_body),
            }

    def reset_stats(self) -> None:
        with self._lock:
            self.requests_by_path.clear()
            self.offline_by_path.clear()
            self.refusals.clear()
            self.downloads_by_form.clear()
            self.downloads_by_body.clear()
            self.max_active_downloads = self.active_downloads
            self.downloads_completed = self.downloads_failed = 0
            self.bytes_sent = self.errors_injected = 0
