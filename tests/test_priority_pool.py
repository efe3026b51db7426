"""The ASR's thread pool: urgent calls (final transcripts) overtake waiting background calls
(partial ones); equal priorities keep their order; a cancelled waiting call never runs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from parley_runtime.priority_pool import BACKGROUND, URGENT, PriorityThreadPool


@pytest.fixture
def pool() -> Iterator[PriorityThreadPool]:
    pool = PriorityThreadPool(1, name="test")
    yield pool
    pool.close()


def block(pool: PriorityThreadPool) -> threading.Event:
    """Occupy the one worker until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(5)

    pool.submit(URGENT, hold)
    assert started.wait(5)
    return release


def test_an_urgent_call_overtakes_waiting_background_calls(pool: PriorityThreadPool) -> None:
    order: list[str] = []
    release = block(pool)
    background = [pool.submit(BACKGROUND, lambda n=n: order.append(f"partial {n}")) for n in (1, 2)]
    urgent = [pool.submit(URGENT, lambda n=n: order.append(f"final {n}")) for n in (1, 2)]
    assert pool.waiting() == 4
    release.set()
    for future in background + urgent:
        future.result(5)
    assert order == ["final 1", "final 2", "partial 1", "partial 2"]


async def test_a_cancelled_waiting_call_never_runs(pool: PriorityThreadPool) -> None:
    ran: list[str] = []
    release = block(pool)
    task = asyncio.create_task(pool.run(URGENT, lambda: ran.append("cancelled")))
    kept = asyncio.create_task(pool.run(URGENT, lambda: ran.append("kept") or 7))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.01)
    release.set()
    assert await kept == 7
    assert ran == ["kept"]


def test_an_exception_reaches_the_caller_and_the_worker_goes_on(pool: PriorityThreadPool) -> None:
    def fail() -> None:
        raise ValueError("bad audio")

    with pytest.raises(ValueError, match="bad audio"):
        pool.submit(URGENT, fail).result(5)
    assert pool.submit(BACKGROUND, lambda: "still working").result(5) == "still working"


def test_close_drops_waiting_calls_and_refuses_new_ones() -> None:
    pool = PriorityThreadPool(1, name="test")
    release = block(pool)
    waiting = pool.submit(BACKGROUND, lambda: "never")
    pool.close()
    release.set()
    assert waiting.cancelled()
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(URGENT, lambda: None)
