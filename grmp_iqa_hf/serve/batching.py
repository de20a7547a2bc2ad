"""Dynamic batching for the server: requests' images queue up and one worker thread scores them together.

A batch is cut when `max_batch_size` images are waiting or `max_wait_ms` after the first of them was queued,
whichever comes first. The queue is bounded in images: a request reserves room for all of its images before
anything is decoded (`try_reserve`), so a full server refuses work at once (503) instead of buffering it.
The worker is a plain thread: torch releases the GIL in its kernels, so the event loop keeps answering while
a batch runs. Results go back to the event loop with `call_soon_threadsafe`.

Imports only the standard library: the model call is a function given to the batcher (`run_batch`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["DynamicBatcher", "QueueFullError", "BatcherStoppedError"]


class QueueFullError(RuntimeError):
    """No room in the queue for a request's images (the server answers 503 with Retry-After)."""


class BatcherStoppedError(RuntimeError):
    """The batcher is not running (not started yet, or shutting down)."""


@dataclass
class _Item:
    payload: object
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.monotonic)
    abandoned: bool = False  # set by the request when it gave up (timeout, client gone): skipped, not scored


def _deliver(future: asyncio.Future, result, error) -> None:
    """Runs on the event loop: complete `future` unless the request was cancelled meanwhile."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class DynamicBatcher:
    """Queue of payloads scored in batches by one worker thread.

    `run_batch(payloads)` returns one result per payload, in order (it runs on the worker thread). If it
    raises, every payload of that batch gets the exception. `stats()` reports batches and images so far.
    """

    def __init__(self, run_batch: Callable[[Sequence], Sequence], max_batch_size: int = 32,
                 max_wait_ms: float = 10.0, max_queue: int = 256, name: str = "grmp-iqa-batcher"):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.run_batch = run_batch
        self.max_batch_size = int(max_batch_size)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self._name = name
        self._items: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._reserved = 0  # images admitted and not finished (queued, being decoded or being scored)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._batches = 0
        self._scored = 0
        self._largest_batch = 0
        self._busy = 0.0  # seconds spent in run_batch

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("the batcher was started already")
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Stop taking work, score what is queued, then end the worker. True when the worker has ended."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ admission
    @property
    def pending(self) -> int:
        """Images admitted and not finished."""
        return self._reserved

    def try_reserve(self, count: int) -> bool:
        """Room for `count` images: reserve it (True), or leave the queue as it is (False)."""
        with self._cond:
            if self._stopping or self._thread is None:
                raise BatcherStoppedError("the scoring worker is not running")
            if self._reserved + count > self.max_queue:
                return False
            self._reserved += count
            return True

    def release(self, count: int) -> None:
        """Give back room reserved for images that will not be submitted (unreadable, request gone)."""
        if count:
            with self._cond:
                self._reserved = max(0, self._reserved - count)

    def submit(self, payload) -> tuple[asyncio.Future, _Item]:
        """Queue one payload whose room was reserved; call on the event loop. Returns its future and a handle
        whose `abandoned` flag the caller sets when it stops waiting."""
        loop = asyncio.get_running_loop()
        item = _Item(payload, loop.create_future(), loop)
        with self._cond:
            if self._stopping:
                self._reserved = max(0, self._reserved - 1)
                raise BatcherStoppedError("the server is shutting down")
            self._items.append(item)
            self._cond.notify_all()
        return item.future, item

    def stats(self) -> dict:
        return {"batches": self._batches, "images": self._scored, "largest_batch": self._largest_batch,
                "busy_s": round(self._busy, 3), "pending": self._reserved, "max_batch_size": self.max_batch_size,
                "max_wait_ms": self.max_wait * 1000.0, "max_queue": self.max_queue}

    # ------------------------------------------------------------------ worker
    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._items:
                if self._stopping:
                    return None
                self._cond.wait()
            # wait for more only while the first one's max_wait has not run out (a backlog goes at once)
            deadline = self._items[0].queued_at + self.max_wait
            while len(self._items) < self.max_batch_size and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            count = min(self.max_batch_size, len(self._items))
            return [self._items.popleft() for _ in range(count)]

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            live = [item for item in batch if not item.abandoned]
            results, error = None, None
            began = time.perf_counter()
            if live:
                try:
                    results = list(self.run_batch([item.payload for item in live]))
                    if len(results) != len(live):
                        raise RuntimeError(f"run_batch gave {len(results)} results for {len(live)} images")
                except Exception as err:  # noqa: BLE001 - the batch's requests get the error; the server lives on
                    error = err
            for index, item in enumerate(live):
                result = None if error is not None else results[index]
                try:
                    item.loop.call_soon_threadsafe(_deliver, item.future, result, error)
                except RuntimeError:  # the event loop is closed: nobody is waiting any more
                    pass
            with self._cond:
                self._reserved = max(0, self._reserved - len(batch))
                if live:
                    self._batches += 1
                    self._scored += len(live)
                    self._largest_batch = max(self._largest_batch, len(live))
                    self._busy += time.perf_counter() - began
