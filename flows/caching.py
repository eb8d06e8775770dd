"""Prefect cache policy for the stage tasks: the key is the segment's stage key.

Each stage task names a function from its inputs to its stage key
(`core.segment.stage_key`: segment identity, stage version, the settings that shape the
output). Blocks passed as inputs are never hashed, so no secret reaches a key; the key
is hashed into a plain file name for the result store, which every worker reaches.

A cached result that names a file (an export, an MP4) is trusted only where that file is:
such stages key by data folder too (`per_data_folder`, `core.settings.data_folder_id`),
and the flow runs them with `refresh_cache` when the file is not there or does not verify
(`trusting_files`), so the stage runs again and caches the new result under the same key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from prefect import Task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from core.settings import data_folder_id

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class StageKey(CachePolicy):
    key_of: Callable[[dict[str, Any]], str] | None = None
    per_data_folder: bool = False

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        if self.key_of is None:
            return None
        key = self.key_of(inputs)
        if self.per_data_folder:
            key += "@" + data_folder_id()
        return f"{key.split('/', 1)[0]}-{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def trusting_files(task: Task[P, R], file_verifies: bool) -> Task[P, R]:
    """`task`, told to run again (and cache anew) when the file its cached result would name is not here."""
    return task if file_verifies else task.with_options(refresh_cache=True)
