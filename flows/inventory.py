"""Recorder inventory from an Excel workbook, and the `sync-inventory` flow.

Workbook format (first sheet, or the sheet named `recorders`), one header row, then one
row per recorder; column order is free, header names are case-insensitive:

| column                   | required | meaning                                                  |
|--------------------------|----------|----------------------------------------------------------|
| name                     | yes      | block name: lowercase letters, digits, `-` (e.g. nvr-01)  |
| host                     | yes      | IP address or DNS name                                   |
| port                     | no (80)  | 1-65535                                                  |
| username                 | no       | default `admin`                                          |
| password                 | no       | empty keeps the password already stored in the block     |
| channels                 | yes      | `1,2,5` or `1-4` or `1-4,9`                              |
| max_concurrent_downloads | no (2)   | 1-16: slots of the limit `recorder:<name>`               |
| site                     | no       | free text                                                |
| enabled                  | no (yes) | yes/no, true/false, 1/0; no: the recorder's schedule paused |
| schedule                 | no       | cron (UTC) of the recorder's runs; default `5 * * * *`   |
| classify_from            | no (main)| `main`, or `sub`: classify from the recorder's sub-stream |

Every row is checked before anything changes: one error lists every bad row and
column, and then nothing is created or updated. Passwords never appear in logs,
errors or artifacts.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.schemas.schedules import CronSchedule
from pydantic import SecretStr

from blocks.loading import load_block
from blocks.recorder import ClassifyFrom, HikvisionRecorder
from flows.recorders import offer_recorders_in_run_form, upsert_recorder
from flows.schedules import DEFAULT_CRON, ensure_recorder_schedule

REQUIRED = ("name", "host", "channels")
KNOWN = (
    *REQUIRED, "port", "username", "password", "max_concurrent_downloads", "site", "enabled", "schedule",
    "classify_from",
)  # fmt: skip
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_TRUE = {"yes", "y", "true", "1", "on"}
_FALSE = {"no", "n", "false", "0", "off"}
MAX_CHANNEL = 256


class InventoryError(ValueError):
    """The workbook cannot be used as it is; the message lists every problem."""


@dataclass(frozen=True)
class InventoryRow:
    row: int
    name: str
    host: str
    port: int
    username: str
    password: str | None
    channels: list[int]
    max_concurrent_downloads: int
    site: str
    enabled: bool
    schedule: str = DEFAULT_CRON
    classify_from: ClassifyFrom = "main"

    def __repr__(self) -> str:  # never show the password
        return f"InventoryRow(row={self.row}, name={self.name!r}, host={self.host!r}, port={self.port})"


def parse_channels(value: Any) -> list[int]:
    text = str(value).strip()
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    channels: set[int] = set()
    for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        if re.fullmatch(r"\d+", part):
            channels.add(int(part))
        elif m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", part):
            low, high = int(m[1]), int(m[2])
            if low > high:
                raise ValueError(f"range {part!r} runs backwards")
            channels.update(range(low, high + 1))
        else:
            raise ValueError(f"{part!r} is not a channel number or range")
    if not channels:
        raise ValueError("no channel given")
    if min(channels) < 1 or max(channels) > MAX_CHANNEL:
        raise ValueError(f"channels must be 1..{MAX_CHANNEL}")
    return sorted(channels)


def _int(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or value in (None, ""):
        raise ValueError("missing")
    number = float(str(value).strip())
    if not number.is_integer() or not low <= number <= high:
        raise ValueError(f"must be a whole number {low}..{high}")
    return int(number)


def _host(value: Any) -> str:
    text = str(value or "").strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _HOSTNAME.match(text) or text.replace(".", "").isdigit():
        raise ValueError(f"{text!r} is not an IP address or host name")
    return text


def _bool(value: Any) -> bool:
    if value in (None, ""):
        return True
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not yes/no")


def _stream(value: Any) -> ClassifyFrom:
    text = str(value or "main").strip().lower()
    if text == "main":
        return "main"
    if text == "sub":
        return "sub"
    raise ValueError("use main or sub (the recorder's sub-stream, where it records one)")


def _cron(value: Any) -> str:
    if value in (None, ""):
        return DEFAULT_CRON
    text = " ".join(str(value).split())
    try:
        CronSchedule(cron=text, timezone="UTC")
    except ValueError:
        raise ValueError("not a cron expression (minute hour day month weekday, e.g. '5 * * * *')") from None
    return text


def _parse_cell(cell: dict[str, Any], errors: list[str], row: int, column: str, parse) -> Any:
    """`parse` the cell; a problem is added to `errors` (never showing a password) and gives None."""
    try:
        return parse(cell.get(column))
    except (ValueError, TypeError) as exc:
        shown = "" if column == "password" else f" ({cell.get(column)!r})"
        errors.append(f"row {row}, column {column}{shown}: {exc}")
        return None


def read_workbook(path: Path) -> list[InventoryRow]:
    """Read and validate every row; raise InventoryError listing all problems at once."""
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:
        raise InventoryError(f"{path}: not a readable .xlsx workbook ({type(exc).__name__})") from None
    try:
        sheet = book["recorders"] if "recorders" in book.sheetnames else book.worksheets[0]
        rows = list(sheet.iter_rows(values_only=True))
    finally:
        book.close()
    if not rows:
        raise InventoryError(f"{path}: the sheet is empty")
    header = [str(h).strip().lower() if h is not None else "" for h in rows[0]]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InventoryError(
            f"{path}: missing column(s) {', '.join(missing)}; columns are {', '.join(KNOWN)}"
        )
    index = {name: header.index(name) for name in KNOWN if name in header}
    problems: list[str] = []
    parsed: list[InventoryRow] = []
    seen: dict[str, int] = {}
    for number, values in enumerate(rows[1:], start=2):
        if all(v in (None, "") for v in values):
            continue
        cell = {name: (values[i] if i < len(values) else None) for name, i in index.items()}
        errors: list[str] = []

        check = partial(_parse_cell, cell, errors, number)
        name = str(cell.get("name") or "").strip()
        if not _NAME.match(name):
            errors.append(f"row {number}, column name ({name!r}): use lowercase letters, digits and '-'")
        elif name in seen:
            errors.append(f"row {number}, column name ({name!r}): duplicate of row {seen[name]}")
        else:
            seen[name] = number
        host = check("host", _host)
        port = check("port", lambda v: 80 if v in (None, "") else _int(v, 1, 65535))
        channels = check("channels", parse_channels)
        slots = check("max_concurrent_downloads", lambda v: 2 if v in (None, "") else _int(v, 1, 16))
        enabled = check("enabled", _bool)
        schedule = check("schedule", _cron)
        classify_from = check("classify_from", _stream)
        problems.extend(errors)
        if not errors:
            password = cell.get("password")
            parsed.append(
                InventoryRow(
                    row=number,
                    name=name,
                    host=host,
                    port=port,
                    username=str(cell.get("username") or "admin").strip(),
                    password=None if password in (None, "") else str(password),
                    channels=channels,
                    max_concurrent_downloads=slots,
                    site=str(cell.get("site") or "").strip(),
                    enabled=enabled,
                    schedule=schedule,
                    classify_from=classify_from,
                )  # fmt: skip
            )
    if problems:
        raise InventoryError(f"{path}: {len(problems)} problem(s), nothing changed:\n" + "\n".join(problems))
    if not parsed:
        raise InventoryError(f"{path}: no recorder rows")
    return parsed


def _block_for(row: InventoryRow) -> HikvisionRecorder:
    password = row.password
    if password is None:
        try:
            password = load_block(HikvisionRecorder, row.name).password.get_secret_value()
        except ValueError:
            raise InventoryError(
                f"row {row.row}, column password: empty, and recorder {row.name} has no stored password yet"
            ) from None
    return HikvisionRecorder(
        host=row.host, port=row.port, username=row.username, password=SecretStr(password),
        channels=row.channels, max_concurrent_downloads=row.max_concurrent_downloads,
        site=row.site, enabled=row.enabled, classify_from=row.classify_from,
    )  # fmt: skip


@flow(name="sync-inventory")
def sync_inventory(workbook: str) -> list[str]:
    """Create or update one recorder block and one concurrency limit per workbook row, and offer
    every known recorder in the run form of `recorder-pipeline/recorder`."""
    logger = get_run_logger()
    rows = read_workbook(Path(workbook))
    blocks = {row.name: _block_for(row) for row in rows}  # every password resolved before any change
    changes: list[str] = []
    for name, block in blocks.items():
        changes += upsert_recorder(name, block, offer_in_run_form=False)
    changes += offer_recorders_in_run_form()
    for row in rows:
        changes += ensure_recorder_schedule(row.name, row.schedule, row.enabled, row.site)
    for line in changes:
        logger.info(line)
    logger.info(f"{len(rows)} recorders in {Path(workbook).name}: {len(changes)} change(s)")
    create_table_artifact(
        [
            {
                "recorder": r.name,
                "host": f"{r.host}:{r.port}",
                "channels": ",".join(map(str, r.channels)),
                "limit": r.max_concurrent_downloads,
                "site": r.site,
                "enabled": r.enabled,
                "schedule": r.schedule,
            }  # fmt: skip
            for r in rows
        ],
        key="inventory",
        description=f"recorders from {Path(workbook).name}",
    )
    return changes
