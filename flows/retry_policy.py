"""The one retry policy: named presets for task retries, keyed on `ServiceError.retryable`.

Task retries are the only retry layer: no client underneath loops on its own. A fault
whose error says it can heal (timeouts, dropped connections, 5xx, a server restarting,
a killed encoder) is retried with exponential backoff and jitter; any other (wrong
password, missing rights, a model that does not match its block, corrupt input, a
programming error) fails at the first attempt, with the error's own message.

Worst cases, per segment (delays before jitter, which adds up to half again):
- RECORDER (search, download): 5 attempts, waits 2 + 4 + 8 + 16 = 30 s; each attempt is
  bounded by the block's connect/read timeouts (a stalled body: read_timeout).
- MEDIA (transcode, classify): 3 attempts, waits 2 + 4 = 6 s; each bounded by the
  encoder timeout / the model server deadline per Predict call.
- MODEL_CHECK (metadata once per run): 3 attempts, waits 2 + 4 = 6 s.
- CLICKHOUSE (persist): 3 attempts, waits 1 + 2 = 3 s; the last attempt that cannot
  reach the server keeps the rows in the outbox instead of failing (see flows/persist.py).
"""

from __future__ import annotations

from typing import Any

from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from core.errors import is_retryable


def retry_when_retryable(task: object, task_run: object, state: Any) -> bool:
    """A `retry_condition_fn`: retry only when the failed state's exception says it can heal."""
    try:
        state.result()
    except Exception as exc:  # the state's own exception, re-raised by result()
        return is_retryable(exc)
    return False


def _preset(retries: int, first_delay_s: float) -> dict[str, Any]:
    return dict(
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=first_delay_s),
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_when_retryable,
    )


RECORDER = _preset(4, 2)
MEDIA = _preset(2, 2)
MODEL_CHECK = _preset(2, 2)
CLICKHOUSE = _preset(2, 1)


def is_last_attempt() -> bool:
    """True in a task's last allowed attempt, and outside any task run (a plain `.fn` call)."""
    ctx = TaskRunContext.get()
    if ctx is None:
        return True
    return ctx.task_run.run_count > ctx.task.retries
