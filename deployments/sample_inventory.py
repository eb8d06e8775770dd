"""Write `deployments/inventory.sample.xlsx`: the workbook format with two example recorders.

`python -m deployments.sample_inventory [path]`
"""

from __future__ import annotations

import sys
from pathlib import Path

from openpyxl import Workbook

HEADER = [
    "name",
    "host",
    "port",
    "username",
    "password",
    "channels",
    "max_concurrent_downloads",
    "site",
    "enabled",
    "schedule",
    "classify_from",
]
ROWS = [
    ["nvr-warehouse-1", "192.0.2.10", 80, "operator", "change-me", "1-8", 2, "warehouse", "yes", "5 * * * *", "sub"],
    ["dvr-gate", "dvr-gate.example.net", 8080, "admin", "", "1,2", 1, "gate", "no", "20 */2 * * *", "main"],
]  # fmt: skip


def write(path: Path) -> Path:
    book = Workbook()
    sheet = book.worksheets[0]  # a new workbook's only sheet, the active one
    sheet.title = "recorders"
    sheet.append(HEADER)
    for row in ROWS:
        sheet.append(row)
    book.save(path)
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("inventory.sample.xlsx")
    print(write(target))
