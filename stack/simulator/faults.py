"""Per-recorder fault settings and counters, changed at run time through `/_sim/faults`."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass, fields


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


_TYPES = {f.name: f.type for f in fields(Faults)}


class FaultState:
    """Thread-safe fault settings plus the counters tests read back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faults = Faults()
        self._error_counter = 0
        self.requests_by_path: Counter[str] = Counter()
        self.active_downloads = 0
        self.max_active_downloads = 0
        self.downloads_completed = 0
        self.downloads_failed = 0
        self.bytes_sent = 0
        self.errors_injected = 0

    def update(self, changes: dict) -> dict:
        unknown = set(changes) - set(_TYPES)
        if unknown:
            raise ValueError(f"unknown faults: {sorted(unknown)}")
        with self._lock:
            for key, value in changes.items():
                kind = _TYPES[key]
                if kind == "bool":
                    value = bool(value)
                elif kind == "float":
                    value = float(value)
                    if not 0.0 <= value <= 1.0:
                        raise ValueError("error_rate must be within 0..1")
                else:
                    value = int(value)
                    if value < 0:
                        raise ValueError(f"{key} must not be negative")
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

    def count_request(self, path: str) -> None:
        with self._lock:
            self.requests_by_path[path] += 1

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
                "active_downloads": self.active_downloads,
                "max_active_downloads": self.max_active_downloads,
                "downloads_completed": self.downloads_completed,
                "downloads_failed": self.downloads_failed,
                "bytes_sent": self.bytes_sent,
                "errors_injected": self.errors_injected,
            }

    def reset_stats(self) -> None:
        with self._lock:
            self.requests_by_path.clear()
            self.max_active_downloads = self.active_downloads
            self.downloads_completed = self.downloads_failed = 0
            self.bytes_sent = self.errors_injected = 0
