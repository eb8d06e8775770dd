"""`bench/RESULTS.md`: every bench's latest table, with the machine and the date it was measured on.

`python -m bench.results_page` rewrites the page from `bench/results/*.json`; each bench's own
command does it too after writing its rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.common import RESULTS_DIR, format_table

PAGE = Path(__file__).resolve().parent / "RESULTS.md"
COMMANDS = {
    "e2e": "make bench",
    "e2e-targets": "python -m bench.e2e --no-seeds",
    "export": "make bench-export",
    "transcode": "make bench-transcode",
    "classify": "make bench-classify",
    "detect": "make bench-detect",
    "review": "make bench-review",
    "load": "make bench-load",
}


def render(results_dir: Path = RESULTS_DIR) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Written by the benches from `bench/results/`; each table is the latest run of its bench.",
        "`ratio` is nvrflow / baseline; the metric says whether higher or lower is better.",
        "",
    ]
    for path in sorted(results_dir.glob("*.json")):
        if "." in path.stem:  # <name>.run.json, <name>.passes.json: not tables
            continue
        name = path.stem
        run_file = path.with_name(f"{name}.run.json")
        run = json.loads(run_file.read_text()) if run_file.exists() else {}
        rows = json.loads(path.read_text())
        lines += [
            f"## {name} (`{COMMANDS.get(name, f'python -m bench.{name}')}`)",
            "",
            f"Measured {run.get('date', 'at an unrecorded date')} on {run.get('machine', 'an unrecorded machine')}, "
            f"at commit {run.get('commit', 'not recorded')}.",
            "",
            "```",
            format_table(rows),
            "```",
            "",
        ]
    return "\n".join(lines)


def write_page(results_dir: Path = RESULTS_DIR, page: Path = PAGE) -> Path:
    page.write_text(render(results_dir))
    return page


if __name__ == "__main__":
    print(write_page())
    sys.exit(0)
