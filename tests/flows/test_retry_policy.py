"""The one retry policy: every service's errors, read through the task retry condition."""

from __future__ import annotations

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed

from blocks.clickhouse import ClickHouseRefused, ClickHouseUnavailable
from blocks.model_server import ModelMismatch, ModelServerError
from blocks.recorder import InsufficientPermissions, RecorderUnavailable, WrongCredentials
from flows import retry_policy
from video.probe import CorruptMedia


def test_the_condition_follows_each_services_flag():
    heal = retry_policy.retry_when_retryable
    assert heal(None, None, Failed(data=RecorderUnavailable("down", recorder="r")))
    assert heal(None, None, Failed(data=ClickHouseUnavailable("down")))
    assert heal(None, None, Failed(data=ModelServerError("m: Predict failed", "UNAVAILABLE")))
    assert not heal(None, None, Failed(data=ModelServerError("m: Predict failed", "INVALID_ARGUMENT")))
    assert not heal(None, None, Failed(data=ModelMismatch("input_size")))
    assert not heal(None, None, Failed(data=WrongCredentials(recorder="r")))
    assert not heal(None, None, Failed(data=ClickHouseRefused("auth")))
    assert not heal(None, None, Failed(data=CorruptMedia("x.ps: no video stream")))
    assert not heal(None, None, Failed(data=ValueError("a bug")))
    assert not heal(None, None, Completed(data=1))
    permissions = InsufficientPermissions(
        recorder="r",
        username="viewer",
        action="POST /x",
        device_words="lowPrivilege",
        device_status="lowPrivilege",
    )
    assert not heal(None, None, Failed(data=permissions))


def test_a_recorder_slot_the_server_could_not_hand_out_is_retried_a_missing_limit_is_not():
    import httpx
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

    from flows.export import SlotUnavailable, _server_trouble

    request = httpx.Request("POST", "http://prefect/api/v2/concurrency_limits/increment")

    def refused(cause: BaseException | None) -> ConcurrencySlotAcquisitionError:
        exc = ConcurrencySlotAcquisitionError("Unable to acquire concurrency slots on ['recorder:r']")
        exc.__cause__ = cause
        return exc

    busy = httpx.HTTPStatusError("503", request=request, response=httpx.Response(503, request=request))
    unknown = httpx.HTTPStatusError("404", request=request, response=httpx.Response(404, request=request))
    assert _server_trouble(refused(busy))
    assert _server_trouble(refused(httpx.ConnectError("refused", request=request)))
    assert not _server_trouble(refused(unknown))
    assert not _server_trouble(refused(None))  # strict: the limit does not exist
    heal = retry_policy.retry_when_retryable
    assert heal(None, None, Failed(data=SlotUnavailable("r: no slot of recorder:r")))
    assert not heal(None, None, Failed(data=refused(None)))


def test_the_last_attempt_is_known_inside_the_task(stack):
    """A flow run in this process (on the stack's Prefect server: a test file's first test may be this one)."""
    seen: list[bool] = []

    @task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=0,
          retry_condition_fn=retry_policy.retry_when_retryable)  # fmt: skip
    def flaky() -> int:
        seen.append(retry_policy.is_last_attempt())
        if len(seen) < 3:
            raise ClickHouseUnavailable("down")
        return len(seen)

    @flow
    def run() -> int:
        return flaky()

    assert run() == 3
    assert seen == [False, False, True]
    assert retry_policy.is_last_attempt()  # outside a task run: a direct call is its own last attempt


@pytest.mark.parametrize(
    ("module", "task_name", "attempts", "waits"),
    [
        ("flows.export", "search_recordings", 5, [2, 4, 8, 16]),  # RECORDER
        ("flows.export", "download_recording", 5, [2, 4, 8, 16]),
        ("flows.transcode", "transcode_segment", 3, [2, 4]),  # MEDIA
        ("flows.classify", "classify_segment", 3, [2, 4]),
        ("flows.classify", "check_model", 3, [2, 4]),  # MODEL_CHECK
        ("flows.persist", "persist_segment", 3, [1, 2]),  # CLICKHOUSE
        ("flows.persist", "record_windows", 3, [1, 2]),
    ],
)
def test_each_task_carries_its_preset(module, task_name, attempts, waits):
    """The presets as the task objects hold them (what Prefect runs), not as the policy module spells them."""
    import importlib

    stage = getattr(importlib.import_module(module), task_name)
    assert stage.retries + 1 == attempts
    assert stage.retry_delay_seconds == waits
    assert stage.retry_jitter_factor == 0.5
    assert stage.retry_condition_fn is retry_policy.retry_when_retryable
