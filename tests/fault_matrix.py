"""The fault matrix, read from the tests' `faults` markers: `python -m tests.fault_matrix` prints
the README's table (and `--write` puts it there, between its two marker lines).

A row is a test marked `@pytest.mark.faults(fault=..., state=..., message=..., data=...)`, or
one case of a parametrized test carrying that mark in its `pytest.param(..., marks=...)`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

from _pytest.mark.structures import Mark, ParameterSet

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- fault matrix: python -m tests.fault_matrix --write -->", "<!-- end of fault matrix -->"
# The modules that hold rows, in the order the table lists them.
MODULES = (
    "tests.flows.test_fault_matrix",
    "tests.flows.test_persist",
    "tests.flows.test_crash_recovery",
    "tests.cluster.test_dead_worker",
    "tests.flows.test_windows",
)
COLUMNS = ("fault", "state", "message", "data")


def _marks(obj: object) -> list[Mark]:
    marks = getattr(obj, "pytestmark", [])
    return marks if isinstance(marks, list) else [marks]


def rows() -> Iterator[tuple[str, dict[str, str]]]:
    """(test id, the faults mark's fields) for every row, module by module."""
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        path = module_name.replace(".", "/") + ".py"
        for name, test in vars(module).items():
            if not name.startswith("test_") or not callable(test):
                continue
            for mark in _marks(test):
                if mark.name == "faults":
                    yield f"{path}::{name}", dict(mark.kwargs)
                elif mark.name == "parametrize":
                    for case in mark.args[1]:
                        if isinstance(case, ParameterSet):
                            for inner in case.marks:
                                if inner.name == "faults":
                                    yield f"{path}::{name}[{case.id or case.values[0]}]", dict(inner.kwargs)


def render() -> str:
    lines = [
        "| fault | final state | what the operator is told | data afterwards | test |",
        "|---|---|---|---|---|",
    ]
    for test, fields in rows():
        missing = [c for c in COLUMNS if not fields.get(c)]
        if missing:
            raise ValueError(f"{test}: its faults mark lacks {missing}")
        cells = [fields[c].replace("|", "\\|") for c in COLUMNS] + [f"`{test.split('::')[0]}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(readme: Path = README) -> None:
    text = readme.read_text()
    head, rest = text.split(BEGIN + "\n", 1)
    _old, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{render()}{END}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write()
    else:
        print(render(), end="")
