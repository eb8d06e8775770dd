"""Prefect cache policy for the stage tasks: the key is the segment's stage key.

Each stage task names a function from its inputs to its stage key
(`core.segment.stage_key`: segment identity, stage version, the settings that shape the
output). Blocks passed as inputs are never hashed, so no secret reaches a key; the key
is hashed into a plain file name for the result store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext


@dataclass
class StageKey(CachePolicy):
    key_of: Callable[[dict[str, Any]], str] | None = None

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        if self.key_of is None:
            return None
        key = self.key_of(inputs)
        return f"{key.split('/', 1)[0]}-{hashlib.sha256(key.encode()).hexdigest()[:40]}"
