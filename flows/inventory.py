"""Recorder inventory from an Excel workbook, and the `sync-inventory` flow.

Workbook format (first sheet, or the sheet named `recorders`), one header row, then one
row per recorder; column order is free, header names are case-insensitive:

| column                   | required | meaning                                                  |
|--------------------------|----------|----------------------------------------------------------|
| name                     | yes      | block name: lowercase letters, digits, `-` (e.g. nvr-01)  |
| host                     | yes      | IP address or DNS name                                   |
| port                     | no (80)  | 1-65535                                                  |
| username                 | no       | default `admin`                                          |
| password                 | no       | empty keeps the one stored in the block; a disabled recorder needs none |
| channels                 | yes      | `1,2,5` or `1-4` or `1-4,9`                              |
| max_concurrent_downloads | no (2)   | 1-16: slots of the limit `recorder:<name>`               |
| site                     | no       | free text                                                |
| enabled                  | no (yes) | yes/no, true/false, 1/0; no: the recorder's schedule paused |
| schedule                 | no       | cron (UTC) of the recorder's runs; default `5 * * * *`   |
| classify_from            | no (main)| `main`, or `sub`: classify from the recorder's sub-stream |

The defaults and bounds are the recorder block's own (`blocks/recorder.py`): each row is
validated by building its block. Every row is checked before anything changes: one error
lists every bad row and column, and then nothing is created or updated. Passwords never
appear in logs, errors or artifacts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.schemas.schedules import CronSchedule
from pydantic import SecretStr, ValidationError

from blocks.loading import load_block
from blocks.recorder import HikvisionRecorder
from flows.recorders import upsert_recorder
from flows.run_form import shape_run_forms
from flows.schedules import DEFAULT_CRON, ensure_recorder_schedule

REQUIRED = ("name", "host", "channels")
# The block's own settings: their defaults and bounds are the block's (blocks/recorder.py).
BLOCK_COLUMNS = (
    "host", "port", "username", "password", "channels", "max_concurrent_downloads", "site", "enabled",
    "classify_from",
)  # fmt: skip
KNOWN = ("name", *BLOCK_COLUMNS, "schedule")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_TRUE = {"yes", "y", "true", "1", "on"}
_FALSE = {"no", "n", "false", "0", "off"}


class InventoryError(ValueError):
    """The workbook cannot be used as it is; the message lists every problem."""


@dataclass(frozen=True)
class InventoryRow:
    row: int
    name: str
    block: HikvisionRecorder  # its password empty where the workbook's cell is
    password_given: bool
    schedule: str = DEFAULT_CRON

    def __repr__(self) -> str:  # never show the password
        return f"InventoryRow(row={self.row}, name={self.name!r}, host={self.block.host!r})"


def parse_channels(value: Any) -> list[int]:
    """`1,2,5`, `1-4`, `1-4,9` (or a number) as channel numbers; their bounds are the block's."""
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
    return sorted(channels)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not yes/no")


def _cron(value: Any) -> str:
    if value in (None, ""):
        return DEFAULT_CRON
    text = " ".join(str(value).split())
    try:
        CronSchedule(cron=text, timezone="UTC")
    except ValueError:
        raise ValueError("not a cron expression (minute hour day month weekday, e.g. '5 * * * *')") from None
    return text


# How a workbook cell is written, for the columns whose cells are not the block's value as they are.
_CELL_FORMATS = {
    "channels": parse_channels,
    "enabled": _bool,
    "classify_from": lambda v: str(v).strip().lower(),
    "password": lambda v: SecretStr(str(v)),
}


def _shown(column: str, value: Any) -> str:
    return "" if column == "password" else f" ({value!r})"


def _block_of(cell: dict[str, Any], row: int, errors: list[str]) -> HikvisionRecorder | None:
    """The row's block, validated by the block itself; each problem named by row and column (a cell
    that cannot be read is left to the block's default, so the other columns are still checked)."""
    values: dict[str, Any] = {"password": SecretStr("")}
    unread = len(errors)
    for column in BLOCK_COLUMNS:
        raw = cell.get(column)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue  # the block's default
        try:
            values[column] = _CELL_FORMATS.get(column, lambda v: str(v).strip() if isinstance(v, str) else v)(
                raw
            )
        except ValueError as exc:
            errors.append(f"row {row}, column {column}{_shown(column, raw)}: {exc}")
    try:
        block = HikvisionRecorder(**values)
    except ValidationError as exc:
        for problem in exc.errors():
            column = str(problem["loc"][0]) if problem["loc"] else "?"
            reason = str(problem["msg"]).removeprefix("Value error, ")
            errors.append(f"row {row}, column {column}{_shown(column, cell.get(column))}: {reason}")
        return None
    return block if len(errors) == unread else None


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
        name = str(cell.get("name") or "").strip()
        if not _NAME.match(name):
            errors.append(f"row {number}, column name ({name!r}): use lowercase letters, digits and '-'")
        elif name in seen:
            errors.append(f"row {number}, column name ({name!r}): duplicate of row {seen[name]}")
        else:
            seen[name] = number
        schedule = DEFAULT_CRON
        try:
            schedule = _cron(cell.get("schedule"))
        except ValueError as exc:
            errors.append(f"row {number}, column schedule ({cell.get('schedule')!r}): {exc}")
        for column in REQUIRED[1:]:
            if cell.get(column) in (None, ""):
                errors.append(f"row {number}, column {column}: empty")
        block = _block_of(cell, number, errors)
        problems.extend(errors)
        if block is not None and not errors:
            given = cell.get("password") not in (None, "")
            parsed.append(InventoryRow(number, name, block, given, schedule))
    if problems:
        raise InventoryError(f"{path}: {len(problems)} problem(s), nothing changed:\n" + "\n".join(problems))
    if not parsed:
        raise InventoryError(f"{path}: no recorder rows")
    return parsed


def _block_for(row: InventoryRow) -> HikvisionRecorder:
    """The row's block with its password: the workbook's, else the one stored. A disabled recorder
    needs none (it is never called until it is enabled, with a password)."""
    if row.password_given:
        return row.block
    try:
        stored = load_block(HikvisionRecorder, row.name).password
    except ValueError:
        if not row.block.enabled:
            return row.block
        raise InventoryError(
            f"row {row.row}, column password: empty, and recorder {row.name} has no stored password yet"
        ) from None
    return row.block.model_copy(update={"password": stored})


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
    changes += shape_run_forms()
    for row in rows:
        changes += ensure_recorder_schedule(row.name, row.schedule, row.block.enabled, row.block.site)
    for line in changes:
        logger.info(line)
    logger.info(f"{len(rows)} recorders in {Path(workbook).name}: {len(changes)} change(s)")
    create_table_artifact(
        [
            {
                "recorder": r.name,
                "host": f"{r.block.host}:{r.block.port}",
                "channels": ",".join(map(str, r.block.channels)),
                "limit": r.block.max_concurrent_downloads,
                "site": r.block.site,
                "enabled": r.block.enabled,
                "schedule": r.schedule,
            }  # fmt: skip
            for r in rows
        ],
        key="inventory",
        description=f"recorders from {Path(workbook).name}",
    )
    return changes
