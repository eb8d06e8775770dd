"""Server-side batching: concurrent Predict calls for one servable signature share one model call.

Each (version, signature) has a lane: a queue and one thread that runs the model. The thread
takes the oldest request, then gathers more compatible requests (same input aliases, dtypes
and per-row shapes) until the batch holds `max_batch` rows or `timeout_s` has passed since the
oldest one arrived, runs the signature once on the concatenated inputs and hands each request
its own rows back. It stops waiting early when no other Predict call is being received:
nothing could join, and a lone client should not pay the timeout on every call.

A merged call that fails, or whose outputs do not have one row per input row, is repeated
request by request, so every request gets exactly the answer or the error it would get alone.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("model_server")

Arrays = dict[str, np.ndarray]
RunModel = Callable[[Arrays], Arrays]
LaneKey = tuple[str, int, str]  # (model, version, signature name)
DEFAULT_BATCH_TIMEOUT_MS = 2.0  # how long the oldest request waits for others to join
WAIT_LIMIT_S = 600.0  # a request without a deadline still stops waiting at some point


@dataclass(eq=False)  # identity: jobs are found in queues by who they are, not what they hold
class Job:
    inputs: Arrays
    rows: int
    shape_key: tuple | None  # None: cannot be merged with anything (scalar or ragged inputs)
    is_active: Callable[[], bool]
    enqueued: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    outputs: Arrays | None = None
    error: BaseException | None = None

    def finish(self, outputs: Arrays | None = None, error: BaseException | None = None) -> None:
        self.outputs, self.error = outputs, error
        self.done.set()


def _shape_key(inputs: Arrays) -> tuple[tuple | None, int]:
    """What requests must share to be concatenated, and the request's row count."""
    rows = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
    if len(rows) != 1 or -1 in rows:
        return None, 1
    key = tuple(sorted((alias, a.dtype.str, a.shape[1:]) for alias, a in inputs.items()))
    return key, rows.pop()


@dataclass
class BatchStats:
    requests: int = 0
    model_calls: int = 0
    merged_calls: int = 0  # model calls that carried more than one request
    rows: int = 0
    largest_call_requests: int = 0
    largest_call_rows: int = 0
    fallbacks: int = 0  # merged calls repeated request by request

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Batching:
    """The lanes of one server, the count of calls being received, and the statistics."""

    def __init__(self, max_batch: int, timeout_s: float, stats_file: Path | None = None) -> None:
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self.stats_file = stats_file
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._receiving = 0
        self._lanes: dict[LaneKey, _Lane] = {}
        self._closed = False
        self._write_stats()

    @contextmanager
    def receiving(self) -> Iterator[Intake]:
        """Wrap the reception of one Predict call (lookup, validation) up to its submission.

        While any call is inside, lanes keep gathering (up to the timeout): it may join them.
        """
        intake = Intake(self)
        with self._cond:
            self._receiving += 1
        try:
            yield intake
        finally:
            if not intake.submitted:
                with self._cond:
                    self._receiving -= 1
                    self._cond.notify_all()

    def _submit(self, key: LaneKey, run: RunModel, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the model server is stopping")
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane(self, key, run)
            lane.queue.append(job)
            self._receiving -= 1  # in the same lock: a lane never sees the call in neither place
            self._cond.notify_all()

    def close(self) -> None:
        """Finish what is queued, then stop the lane threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.thread.join(timeout=30)
        self._write_stats()

    def _record(self, calls: int, requests: int, rows: int, merged: bool, fallback: bool) -> None:
        with self._cond:
            s = self.stats
            s.requests += requests
            s.model_calls += calls
            s.merged_calls += int(merged)
            s.fallbacks += int(fallback)
            s.rows += rows
            if not fallback:
                s.largest_call_requests = max(s.largest_call_requests, requests)
                s.largest_call_rows = max(s.largest_call_rows, rows)
            self._write_stats()

    def _write_stats(self) -> None:
        if self.stats_file is None:
            return
        tmp = self.stats_file.with_name(f".{self.stats_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self.stats.as_dict()) + "\n")
        tmp.replace(self.stats_file)


class Intake:
    """One call being received; `submit` queues it on its lane and waits for its rows."""

    def __init__(self, batching: Batching) -> None:
        self.batching = batching
        self.submitted = False

    def submit(
        self,
        key: LaneKey,
        run: RunModel,
        inputs: Arrays,
        is_active: Callable[[], bool] = lambda: True,
        wait_s: float | None = None,
    ) -> Job:
        shape_key, rows = _shape_key(inputs)
        job = Job(inputs, rows, shape_key, is_active)
        self.batching._submit(key, run, job)
        self.submitted = True
        if not job.done.wait(wait_s if wait_s is not None else WAIT_LIMIT_S):
            raise TimeoutError("the request waited too long for the model")
        return job


class _Lane:
    def __init__(self, batching: Batching, key: LaneKey, run: RunModel) -> None:
        self.batching = batching
        self.key = key
        self.run = run
        self.queue: deque[Job] = deque()
        self.thread = threading.Thread(target=self._loop, name=f"batch-v{key[0]}-{key[1]}", daemon=True)
        self.thread.start()

    def _gather(self) -> tuple[list[Job], bool]:
        """The jobs of the next batch, and whether it is full; called holding the condition."""
        first = self.queue[0]
        if first.shape_key is None:
            return [first], True
        taken, rows = [first], first.rows
        for job in list(self.queue)[1:]:
            if job.shape_key != first.shape_key:
                continue
            if rows + job.rows > self.batching.max_batch:
                return taken, True  # it leads the next batch, keeping arrival order
            taken.append(job)
            rows += job.rows
        return taken, rows >= self.batching.max_batch

    def _next_batch(self) -> list[Job] | None:
        b = self.batching
        with b._cond:
            while not self.queue:
                if b._closed:
                    return None
                b._cond.wait()
            deadline = self.queue[0].enqueued + b.timeout_s
            while True:
                taken, full = self._gather()
                remaining = deadline - time.monotonic()
                if full or b._receiving == 0 or remaining <= 0:
                    break
                b._cond.wait(remaining)
            for job in taken:
                self.queue.remove(job)
            return taken

    def _loop(self) -> None:
        while True:
            try:
                jobs = self._next_batch()
            except BaseException:  # noqa: BLE001 - keep serving; the callers of a lost batch time out
                log.exception("lane %s could not gather a batch", self.key)
                continue
            if jobs is None:
                return
            live = [j for j in jobs if j.is_active()]
            for job in jobs:
                if job not in live:
                    job.finish(error=TimeoutError("the client gave up before the model ran"))
            if not live:
                continue
            try:
                results = self._run_batch(live)
            except BaseException as exc:  # noqa: BLE001 - a lane must never die with callers waiting
                log.exception("batch on %s failed", self.key)
                results = [(None, exc)] * len(live)
            for job, (outputs, error) in zip(live, results, strict=True):
                job.finish(outputs, error)

    def _run_batch(self, jobs: list[Job]) -> list[tuple[Arrays | None, BaseException | None]]:
        """(outputs, error) per job; statistics are recorded before anyone is answered."""
        rows = sum(j.rows for j in jobs)
        if len(jobs) == 1:
            result = self._run_alone(jobs[0])
            self.batching._record(calls=1, requests=1, rows=rows, merged=False, fallback=False)
            return [result]
        merged = {alias: np.concatenate([j.inputs[alias] for j in jobs]) for alias in jobs[0].inputs}
        try:
            outputs = self.run(merged)
        except Exception as exc:  # noqa: BLE001 - each request gets its own error below
            log.debug("merged call of %d requests failed (%s): running them one by one", len(jobs), exc)
            outputs = None
        if outputs is None or any(o.ndim == 0 or o.shape[0] != rows for o in outputs.values()):
            results = [self._run_alone(job) for job in jobs]
            self.batching._record(
                calls=len(jobs) + 1, requests=len(jobs), rows=rows, merged=False, fallback=True
            )
            return results
        results, start = [], 0
        for job in jobs:
            results.append(({alias: o[start : start + job.rows] for alias, o in outputs.items()}, None))
            start += job.rows
        log.debug("lane %s: %d requests, %d rows in one call", self.key, len(jobs), rows)
        self.batching._record(calls=1, requests=len(jobs), rows=rows, merged=True, fallback=False)
        return results

    def _run_alone(self, job: Job) -> tuple[Arrays | None, BaseException | None]:
        try:
            return self.run(job.inputs), None
        except Exception as exc:  # noqa: BLE001 - reported to that request's caller
            return None, exc
