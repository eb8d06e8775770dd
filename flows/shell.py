"""Run one external command through prefect-shell, from an argument list.

ShellOperation runs a bash script. The script here is a constant: the arguments reach
it only through environment variables and are expanded as quoted words, so no file
name (spaces, quotes, `;`, `$(...)`, non-ASCII) is ever parsed by the shell.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect_shell import ShellOperation

_EXEC_ARGV = r"""set -euo pipefail
argv=()
i=0
while name="NVRFLOW_ARG_$i" && [ -n "${!name+set}" ]; do
  argv+=("${!name}")
  i=$((i + 1))
done
exec 2>&1
exec timeout --kill-after=10 "$NVRFLOW_TIMEOUT" "${argv[@]}"
"""


class CommandFailed(RuntimeError):
    """The command exited non-zero or timed out; the message ends with its last output lines."""

    def __init__(self, what: str, returncode: int | None, tail: list[str]):
        reason = "timed out" if returncode in (124, 137) else f"exited with {returncode}"
        joined = "\n".join(tail) if tail else "(no output)"
        super().__init__(f"{what} {reason}:\n{joined}")
        self.returncode = returncode


def run_command(argv: Sequence[str], timeout_s: float, what: str, tail_lines: int = 15) -> list[str]:
    """Run `argv`, return its output lines (stdout and stderr), raise CommandFailed on failure."""
    env = {f"NVRFLOW_ARG_{i}": str(arg) for i, arg in enumerate(argv)}
    env["NVRFLOW_TIMEOUT"] = f"{max(1, int(timeout_s))}s"
    with ShellOperation(commands=[_EXEC_ARGV], env=env, stream_output=False) as op:
        proc = op.trigger()
        try:
            proc.wait_for_completion()
        except RuntimeError:
            raise CommandFailed(what, proc.return_code, proc.fetch_result()[-tail_lines:]) from None
        return proc.fetch_result()
