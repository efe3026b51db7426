"""The TTS `ModelManager` with real loads: every "model" is a real Piper voice, loaded off the
event loop, and the different models are symlinked copies of the packaged voice.

Time is a hand-advanced fake clock (the manager's injectable `clock`), so TTL tests never
sleep. The loader counts its calls and the most loads running at the same time.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parley_tts import PiperTTS
from parley_tts.manager import ModelManager, UnknownModelError
from parley_tts.voices import piper_voice_path

NAMES = ("a", "b", "c")
TTL = 60.0


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`a.onnx`, `b.onnx`, `c.onnx` (each with its `.onnx.json`): the packaged voice under
    three names. Symlinks where the filesystem has them, copies otherwise."""
    source = piper_voice_path("en_US-joe-medium")
    folder = tmp_path_factory.mktemp("voices")
    paths = {}
    for name in NAMES:
        for suffix in (".onnx", ".onnx.json"):
            target = folder / f"{name}{suffix}"
            original = Path(f"{source}.json") if suffix == ".onnx.json" else source
            try:
                target.symlink_to(original)
            except OSError:
                shutil.copyfile(original, target)
        paths[name] = folder / f"{name}.onnx"
    return paths


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Loader:
    """Loads real Piper voices in a worker thread; records calls, concurrency and unloads."""

    def __init__(self, voices: dict[str, Path]) -> None:
        self.voices = voices
        self.calls: list[str] = []
        self.active = 0
        self.max_active = 0
        self.unloaded: list[tuple[str, PiperTTS]] = []
        self.on_loaded: Callable[[str], None] = lambda name: None

    async def load(self, name: str) -> PiperTTS:
        self.calls.append(name)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            model = await asyncio.to_thread(PiperTTS, str(self.voices[name]))
        finally:
            self.active -= 1
        self.on_loaded(name)
        return model

    def unload(self, name: str, model: PiperTTS) -> None:
        self.unloaded.append((name, model))
        model.close()


Factory = Callable[..., tuple[ModelManager[PiperTTS], Loader, FakeClock]]


@pytest.fixture
def make_manager(voices: dict[str, Path]) -> Iterator[Factory]:
    """A manager over a, b, c with a recording loader and a fake clock; closed afterwards."""
    made: list[ModelManager[PiperTTS]] = []

    def make(**options: Any) -> tuple[ModelManager[PiperTTS], Loader, FakeClock]:
        loader = Loader(voices)
        clock = FakeClock()
        options.setdefault("idle_ttl_s", TTL)
        manager = ModelManager(list(NAMES), loader.load, loader.unload, clock=clock, **options)
        made.append(manager)
        return manager, loader, clock

    yield make
    for manager in made:
        manager.close()


async def touch(manager: ModelManager[PiperTTS], name: str) -> PiperTTS:
    """Use `name` once (loading it if needed) and release it."""
    async with manager.use(name) as model:
        return model


async def test_idle_ttl_evicts_exactly_the_models_idle_for_the_ttl(make_manager: Factory) -> None:
    manager, loader, clock = make_manager(max_resident=3)
    model_a = await touch(manager, "a")
    model_b = await touch(manager, "b")
    clock.advance(TTL / 2)
    assert await touch(manager, "b") is model_b  # resident: used again, not loaded again
    assert sorted(manager.resident()) == ["a", "b"]

    clock.advance(TTL / 2 - 0.001)  # a idle just under the ttl: nothing goes
    assert manager.evict_idle() == []
    assert loader.unloaded == []

    clock.advance(0.001)  # a idle exactly the ttl, b (used since) half of it
    assert manager.evict_idle() == ["a"]
    assert manager.resident() == ["b"]
    assert loader.unloaded == [("a", model_a)]
    assert manager.stats.evictions == {"ttl": 1, "lru": 0}

    clock.advance(TTL / 2)
    assert manager.evict_idle() == ["b"]
    assert manager.resident() == []
    assert loader.unloaded == [("a", model_a), ("b", model_b)]
    assert manager.stats.evictions == {"ttl": 2, "lru": 0}
    assert manager.stats.loads == 2
    assert loader.calls == ["a", "b"]


async def test_lru_cap_evicts_the_least_recently_used_idle_model(make_manager: Factory) -> None:
    manager, loader, clock = make_manager(max_resident=2)
    await touch(manager, "a")
    clock.advance(1)
    model_b = await touch(manager, "b")
    clock.advance(1)
    await touch(manager, "a")  # a is now more recent than b
    clock.advance(1)
    await touch(manager, "c")

    assert sorted(manager.resident()) == ["a", "c"]
    assert loader.unloaded == [("b", model_b)]
    assert manager.stats.evictions == {"ttl": 0, "lru": 1}
    assert manager.stats.loads == 3
    assert loader.calls == ["a", "b", "c"]  # the second use of a did not load it again


async def test_a_model_in_use_is_never_evicted(make_manager: Factory) -> None:
    """Holding a and b with `max_resident=1`: the cap is exceeded rather than a request failed
    (b, loaded while a is held, is the only idle model when it lands, yet is handed out alive),
    neither TTL nor LRU touches them while held, and the surplus goes once released."""
    manager, loader, clock = make_manager(max_resident=1)
    async with manager.use("a") as model_a:
        clock.advance(1)
        async with manager.use("b") as model_b:
            assert sorted(manager.resident()) == ["a", "b"]  # over the cap of 1
            assert manager.loaded("b") is model_b
            assert manager.refs("a") == 1
            assert manager.refs("b") == 1
            clock.advance(TTL * 10)
            assert manager.evict_idle() == []
            assert sorted(manager.resident()) == ["a", "b"]
            assert loader.unloaded == []
            # both are usable while held
            for model in (model_a, model_b):
                assert [chunk async for chunk in model.synthesize("Hi.")]
        # b released while a is still held: b is the surplus
        assert manager.resident() == ["a"]
        assert loader.unloaded == [("b", model_b)]
        clock.advance(TTL * 10)
        assert manager.evict_idle() == []
    assert manager.refs("a") == 0
    assert manager.resident() == ["a"]  # within the cap again: a stays until idle
    assert manager.stats.evictions == {"ttl": 0, "lru": 1}
    clock.advance(TTL)
    assert manager.evict_idle() == ["a"]
    assert loader.unloaded == [("b", model_b), ("a", model_a)]
    assert manager.stats.loads == 2


async def test_use_never_hands_out_a_model_evicted_before_its_waiter_resumed(
    make_manager: Factory,
) -> None:
    """A release lands between c's load completing and its requester resuming, and evicts the
    idle, just-loaded c. The requester must still get a live model, not c's closed one."""
    manager, loader, clock = make_manager(max_resident=1)
    loaded = asyncio.Event()
    # set as c's load returns: wakes the holder of a before c's requester resumes
    loader.on_loaded = lambda name: loaded.set() if name == "c" else None

    async def hold_a_until_c_loaded() -> None:
        async with manager.use("a"):
            await loaded.wait()
            clock.advance(1)  # a released after c was admitted: c is the LRU idle one

    await touch(manager, "a")
    holder = asyncio.create_task(hold_a_until_c_loaded())
    await asyncio.sleep(0)
    assert manager.refs("a") == 1
    async with manager.use("c") as model_c:
        await holder
        assert manager.loaded("c") is model_c, "use() handed out a model that is not resident"
        assert all(model is not model_c for _, model in loader.unloaded), (
            "use() handed out a model that was already unloaded"
        )
        assert [chunk async for chunk in model_c.synthesize("Hi.")]


async def test_pinned_models_are_never_evicted(make_manager: Factory) -> None:
    """a is pinned and the least recently used: the LRU cap passes it over, and so does the
    TTL, however long it idles."""
    manager, loader, clock = make_manager(max_resident=2)
    await manager.preload(["a"], pin=True)
    assert manager.pinned == {"a"}
    clock.advance(1)
    model_b = await touch(manager, "b")
    clock.advance(1)
    model_c = await touch(manager, "c")
    assert sorted(manager.resident()) == ["a", "c"]
    assert loader.unloaded == [("b", model_b)]

    clock.advance(TTL * 100)
    assert manager.evict_idle() == ["c"]
    assert manager.resident() == ["a"]
    assert loader.unloaded == [("b", model_b), ("c", model_c)]
    assert manager.stats.evictions == {"ttl": 1, "lru": 1}
    assert loader.calls == ["a", "b", "c"]


async def test_concurrent_uses_of_one_unloaded_model_share_one_load(
    make_manager: Factory,
) -> None:
    manager, loader, _ = make_manager(max_resident=2)
    seen: list[PiperTTS] = []
    all_in, release = asyncio.Event(), asyncio.Event()

    async def user() -> None:
        async with manager.use("a") as model:
            seen.append(model)
            if len(seen) == 5:
                all_in.set()
            await release.wait()

    users = [asyncio.create_task(user()) for _ in range(5)]
    await asyncio.wait_for(all_in.wait(), timeout=30)
    assert manager.refs("a") == 5
    release.set()
    await asyncio.gather(*users)

    assert loader.calls == ["a"]
    assert manager.stats.loads == 1
    assert len({id(model) for model in seen}) == 1
    assert manager.refs("a") == 0
    assert manager.resident() == ["a"]


@pytest.mark.parametrize(("parallel", "names"), [(1, ["a", "b"]), (2, ["a", "b", "c"])])
async def test_max_parallel_loads_bounds_concurrent_loads(
    make_manager: Factory, parallel: int, names: list[str]
) -> None:
    manager, loader, _ = make_manager(max_resident=3, max_parallel_loads=parallel)
    await asyncio.gather(*(touch(manager, name) for name in names))

    assert sorted(loader.calls) == names
    assert loader.max_active == parallel  # reached, and never exceeded
    assert manager.stats.loads == len(names)
    assert sorted(manager.resident()) == names


async def test_unknown_model_names_the_known_ones(make_manager: Factory) -> None:
    manager, loader, _ = make_manager()
    with pytest.raises(UnknownModelError) as caught:
        async with manager.use("zz"):
            pass
    message = str(caught.value)
    assert "'zz'" in message
    for name in NAMES:
        assert repr(name) in message
    assert caught.value.known == list(NAMES)
    assert isinstance(caught.value, KeyError)
    with pytest.raises(UnknownModelError):
        await manager.preload(["zz"])
    assert loader.calls == []
    assert manager.resident() == []


async def test_a_managed_model_synthesizes_speech(make_manager: Factory) -> None:
    manager, _, _ = make_manager()
    async with manager.use("a") as model:
        assert isinstance(model, PiperTTS)
        chunks = [chunk async for chunk in model.synthesize("Hello from the model manager.")]
        rate = model.sample_rate
    audio = np.concatenate(chunks)
    assert audio.dtype == np.int16
    assert audio.ndim == 1
    assert audio.size > rate // 2  # over half a second of speech
    assert int(np.abs(audio).max()) > 1000  # not silence
