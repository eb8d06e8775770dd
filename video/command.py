"""Running the media tools (ffmpeg, ffprobe, HandBrakeCLI) from argument lists.

A `Runner` takes an argument list, a timeout and a description, and returns the
command's output lines or raises `CommandFailed`. `run_subprocess` is the plain one;
the transcode task passes prefect-shell's instead, so the encoder's output lands in
the task run's log. Neither ever hands a shell a string built from data.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

from core.errors import ServiceError

Runner = Callable[[Sequence[str], float, str], list[str]]
TAIL_LINES = 15
# `timeout` exits 124 when it stops the command, 137 when it had to kill it; a negative
# code is a signal (the machine's OOM killer, an operator).
_KILLED = {124, 137}


class CommandFailed(ServiceError):
    """The command exited non-zero or timed out; the message ends with its last output lines.

    A command that was stopped or killed may succeed on another try (memory freed, a
    quieter machine); one that exited with an error of its own on the same input will not.
    """

    def __init__(self, what: str, returncode: int | None, tail: list[str]):
        killed = returncode is not None and (returncode in _KILLED or returncode < 0)
        reason = "timed out or was killed" if killed else f"exited with {returncode}"
        joined = "\n".join(tail) if tail else "(no output)"
        super().__init__(f"{what} {reason}:\n{joined}")
        self.what, self.returncode, self.tail = what, returncode, tail
        self.retryable = killed

    def __reduce__(self):  # Prefect pickles a failed task's exception
        return (type(self), (self.what, self.returncode, self.tail))


def run_subprocess(argv: Sequence[str], timeout_s: float, what: str) -> list[str]:
    """Run `argv` with stdout and stderr merged; its output lines, or CommandFailed."""
    try:
        done = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=timeout_s, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        out = (exc.output or b"").decode(errors="replace").splitlines()
        raise CommandFailed(what, 124, out[-TAIL_LINES:]) from None
    lines = done.stdout.decode(errors="replace").splitlines()
    if done.returncode != 0:
        raise CommandFailed(what, done.returncode, lines[-TAIL_LINES:])
    return lines
