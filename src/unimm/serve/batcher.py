"""A dynamic batcher: requests that share a key wait up to ``max_wait_ms`` for company, then run through one model
call (at most ``max_batch`` requests) on a worker thread, so the event loop keeps serving meanwhile."""

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

RunBatch = Callable[[Hashable, list[Any]], list[Any]]  # (key, items) -> one result per item


class Batcher:
    def __init__(self, run: RunBatch, max_batch: int, max_wait_ms: float) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.pending: dict[Hashable, list[tuple[Any, asyncio.Future, float]]] = {}
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="unimm-model")  # one model call at a time
        self.task: asyncio.Task | None = None
        self.wake: asyncio.Event | None = None

    async def submit(self, key: Hashable, item: Any) -> Any:
        """Queue ``item`` under ``key`` and wait for its result (a model error is raised here)."""
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.wake = asyncio.Event()
            self.task = loop.create_task(self._serve())
        future = loop.create_future()
        self.pending.setdefault(key, []).append((item, future, loop.time()))
        self.wake.set()
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                self.wake.clear()
                await self.wake.wait()
                continue
            key = min(self.pending, key=lambda k: self.pending[k][0][2])  # the longest-waiting request first
            deadline = self.pending[key][0][2] + self.max_wait
            while len(self.pending[key]) < self.max_batch and (left := deadline - loop.time()) > 0:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), left)
                except asyncio.TimeoutError:
                    break
            queue = self.pending.pop(key)
            batch, rest = queue[: self.max_batch], queue[self.max_batch :]
            if rest:
                self.pending[key] = rest
            batch = [b for b in batch if not b[1].done()]  # a request that timed out is not run
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self.run, key, [b[0] for b in batch])
            except Exception as err:  # the model's error reaches every request of the batch
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future, _), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
