"""Prefect retry conditions: retry a failed task only when its exception can heal."""

from __future__ import annotations

from collections.abc import Callable


def retry_when(can_heal: Callable[[BaseException], bool]) -> Callable[[object, object, object], bool]:
    """A `retry_condition_fn` that asks `can_heal` about the exception the failed state holds."""

    def condition(task: object, task_run: object, state) -> bool:
        try:
            state.result()
        except Exception as exc:  # the state's own exception, re-raised by result()
            return can_heal(exc)
        return False

    return condition
