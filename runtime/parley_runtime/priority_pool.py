"""A thread pool that runs the most urgent waiting call first.

The ASR worker serves every session on the pod: a session's final transcript (the turn it
answers) must not wait behind other sessions' partial transcripts (display only). Calls of
equal priority run in the order they came. A call cancelled while it waits never runs.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

#: Lower runs first.
URGENT = 0
BACKGROUND = 1


@dataclass(order=True)
class _Call:
    priority: int
    sequence: int
    future: Future[Any] = field(compare=False)
    function: Callable[[], Any] = field(compare=False)


class PriorityThreadPool:
    def __init__(self, workers: int, name: str) -> None:
        self._calls: queue.PriorityQueue[_Call] = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, priority: int, function: Callable[[], T]) -> Future[T]:
        if self._closed:
            raise RuntimeError("the pool is closed")
        future: Future[T] = Future()
        self._calls.put(_Call(priority, next(self._sequence), future, function))
        return future

    async def run(self, priority: int, function: Callable[[], T]) -> T:
        """`function()` on a worker; cancelling the awaiting task drops a call still waiting."""
        return await asyncio.wrap_future(self.submit(priority, function))

    def waiting(self) -> int:
        return self._calls.qsize()

    def close(self) -> None:
        """Drop the waiting calls; a running one finishes on its own."""
        self._closed = True
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            call.future.cancel()
        for _ in self._threads:
            self._calls.put(_Call(BACKGROUND + 1, next(self._sequence), Future(), _stop))

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if call.function is _stop:
                return
            if not call.future.set_running_or_notify_cancel():
                continue
            try:
                result = call.function()
            except BaseException as exc:
                call.future.set_exception(exc)
            else:
                call.future.set_result(result)


def _stop() -> None:
    """The sentinel that ends a worker."""
