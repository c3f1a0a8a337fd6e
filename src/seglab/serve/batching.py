"""Requests to batches, and a bound on how many requests the server holds.

- `Admission`: at most `limit` requests inside the service at once (waiting for their batch or being
  predicted); one more is refused at once with 503 and a Retry-After estimated from the recent time per
  image, rather than queued without end (a slow model under load answers "come back later" instead of
  letting every client time out).
- `BatchQueue` (one per model): requests wait until a worker is free; then the ones waiting (up to
  `max_batch`) go to the model together. When a worker is free but fewer than `max_batch` are waiting,
  it waits at most `max_wait_s` after the oldest request arrived for more to come (the short wait of
  TorchServe's `max_batch_delay` and Triton's dynamic batcher), so a lone request is delayed by at most
  that. The model runs in a thread pool of `workers` threads: the event loop only moves requests.

Both live on the event loop's thread, so they need no locks.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass


class Busy(Exception):
    """The server is full: answer 503 with Retry-After `retry_after` seconds."""

    def __init__(self, retry_after: int, active: int, limit: int):
        super().__init__(f"server busy: {active} requests in progress, the limit is {limit} "
                         f"(seglab serve --queue-limit); retry in {retry_after} s")
        self.retry_after = retry_after


class Admission:
    def __init__(self, limit: int, workers: int):
        if limit < 1 or workers < 1:
            raise ValueError(f"queue limit and workers must be positive, got {limit} and {workers}")
        self.limit, self.workers, self.active = limit, workers, 0
        self.seconds_per_image = 0.5  # a first guess, replaced by measurements (an exponential average)

    def enter(self) -> None:
        if self.active >= self.limit:
            raise Busy(self.retry_after(), self.active, self.limit)
        self.active += 1

    def leave(self) -> None:
        self.active -= 1

    def record(self, seconds: float, images: int) -> None:
        self.seconds_per_image = 0.8 * self.seconds_per_image + 0.2 * seconds / max(1, images)

    def retry_after(self) -> int:
        """Seconds until the requests held now are likely done (1 .. 60)."""
        return int(min(60, max(1, math.ceil(self.active * self.seconds_per_image / self.workers))))


@dataclass
class Waiting:
    item: object
    future: asyncio.Future
    arrived: float


class BatchQueue:
    """`submit(item)` resolves to what `run(items)` (called in `executor`, up to `max_batch` items at a
    time) returned for that item; `run` returns one outcome per item, an Exception instance for an item
    that failed. `slots` (shared by every model's queue) holds one permit per worker thread."""

    def __init__(self, run: Callable[[list], list], *, executor: Executor, slots: asyncio.Semaphore,
                 max_batch: int = 4, max_wait_s: float = 0.01, on_batch: Callable[[float, int], None] | None = None):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, got {max_batch} and {max_wait_s}")
        self.run, self.executor, self.slots = run, executor, slots
        self.max_batch, self.max_wait_s, self.on_batch = max_batch, max_wait_s, on_batch
        self.waiting: list[Waiting] = []
        self.arrival = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.dispatch_forever())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for w in self.waiting:
            if not w.future.done():
                w.future.set_exception(RuntimeError("the server is shutting down"))

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        waiting = Waiting(item, loop.create_future(), loop.time())
        self.waiting.append(waiting)
        self.arrival.set()
        return await waiting.future

    async def dispatch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.arrival.wait()
            self.arrival.clear()
            while self.waiting:
                await self.slots.acquire()  # a worker is free
                try:
                    await self.gather_more(loop)
                    batch = self.take()
                except BaseException:
                    self.slots.release()
                    raise
                if not batch:
                    self.slots.release()
                    continue
                started = loop.time()
                done = loop.run_in_executor(self.executor, self.run, [w.item for w in batch])
                done.add_done_callback(lambda f, b=batch, t=started: self.finish(f, b, loop.time() - t))

    async def gather_more(self, loop) -> None:
        """Wait (at most until the oldest request has waited `max_wait_s`) for a full batch."""
        while len(self.waiting) < self.max_batch:
            remaining = self.waiting[0].arrived + self.max_wait_s - loop.time()
            if remaining <= 0:
                return
            self.arrival.clear()
            try:
                await asyncio.wait_for(self.arrival.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def take(self) -> list[Waiting]:
        """Up to `max_batch` waiting requests, oldest first; ones whose client went away are dropped."""
        self.waiting = [w for w in self.waiting if not w.future.done()]
        batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch:]
        return batch

    def finish(self, done: asyncio.Future, batch: list[Waiting], seconds: float) -> None:
        self.slots.release()
        if self.on_batch is not None:
            self.on_batch(seconds, len(batch))
        error = RuntimeError("the server is shutting down") if done.cancelled() else done.exception()
        outcomes = [error] * len(batch) if error is not None else done.result()
        for w, outcome in zip(batch, outcomes):
            if w.future.done():
                continue
            if isinstance(outcome, BaseException):
                w.future.set_exception(outcome)
            else:
                w.future.set_result(outcome)
