"""The runtime's OpenAI-compatible chat client: what it asks the server for, the session's
prefill of its system prompt, and the llama-server slot each session keeps."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
import pytest

from parley.local_llm import LLM_MODEL_NAME
from parley_bench.peer import Peer
from parley_runtime.config import DEFAULT_SYSTEM_PROMPT, RuntimeSettings
from parley_runtime.llm import ChatClient, SlotPool
from tests.support.runtime_host import RuntimeHost
from tests.support.scripted_llm import ScriptedLLMServer
from tests.support.talk import LONG_QUESTIONS, turn

QUESTION = [{"role": "user", "content": "Name an animal that lives in the sea."}]


async def answer(client: ChatClient) -> str:
    try:
        return "".join([delta async for delta in client.stream(QUESTION)])
    finally:
        await client.aclose()


async def prefills(llm: ScriptedLLMServer, before: int, count: int) -> list[dict[str, Any]]:
    """The `count` prefills after the first `before`, once they have come."""
    for _ in range(100):
        if len(llm.script.prefills) >= before + count:
            return llm.script.prefills[before:]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(llm.script.prefills) - before} of {count} prefills came")


async def test_a_seed_is_sent_only_when_set(scripted_llm: ScriptedLLMServer) -> None:
    await answer(ChatClient(scripted_llm.url, "m", seed=7))
    assert scripted_llm.script.bodies[-1]["seed"] == 7
    await answer(ChatClient(scripted_llm.url, "m"))
    assert "seed" not in scripted_llm.script.bodies[-1]


async def test_a_frequency_penalty_is_sent_unless_zero(scripted_llm: ScriptedLLMServer) -> None:
    await answer(ChatClient(scripted_llm.url, "m", frequency_penalty=0.5))
    assert scripted_llm.script.bodies[-1]["frequency_penalty"] == 0.5
    await answer(ChatClient(scripted_llm.url, "m"))
    assert "frequency_penalty" not in scripted_llm.script.bodies[-1]


async def test_the_default_frequency_penalty_keeps_smollm2_from_repeating_itself(
    llm_url: str,
) -> None:
    """Against llama.cpp, seeded: after an answer that had begun to loop, SmolLM2 without a
    penalty says the same sentence again and again; with the runtime's default it does not."""
    conversation = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "What is the name of our planet?"},
        {"role": "assistant", "content": "The name of my planet is Aurora. I'm a human."},
        {"role": "user", "content": "What do birds use to fly?"},
    ]

    async def repeated_sentences(frequency_penalty: float) -> int:
        client = ChatClient(llm_url, LLM_MODEL_NAME, seed=0, frequency_penalty=frequency_penalty)
        try:
            said = "".join([delta async for delta in client.stream(conversation)])
        finally:
            await client.aclose()
        sentences = [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", said) if s.strip()]
        return len(sentences) - len(set(sentences))

    assert await repeated_sentences(0.0) > 0
    assert await repeated_sentences(RuntimeSettings().llm_frequency_penalty) == 0


async def test_the_same_seed_samples_the_same_answer(llm_url: str) -> None:
    """What `parley bench compare` relies on to ask both stacks the same conversation: hot
    sampling, so that without the seed the answers would differ."""
    answers = {
        await answer(ChatClient(llm_url, LLM_MODEL_NAME, temperature=1.5, max_tokens=24, seed=3))
        for _ in range(3)
    }
    assert len(answers) == 1 and answers.pop().strip()


async def test_a_prefill_spares_the_question_what_the_server_has_read(llm_url: str) -> None:
    """Against llama.cpp: the question after a prefill of the system prompt reads only what
    follows it, and after a prefill that also had the question's first words (a partial
    transcript), less again; after a system prompt the server never saw, it reads it all."""
    question = QUESTION[0]["content"]

    async def tokens_read(system: str, read_ahead: str | None) -> int:
        messages = [{"role": "system", "content": system}]
        client = ChatClient(llm_url, LLM_MODEL_NAME)
        try:
            if read_ahead is not None:
                words = [{"role": "user", "content": read_ahead}] if read_ahead else []
                await client.prefill([*messages, *words])
            async with httpx.AsyncClient(base_url=llm_url, timeout=30) as http:
                body = {"messages": [*messages, *QUESTION], "max_tokens": 1}
                answer = (await http.post("/chat/completions", json=body)).json()
        finally:
            await client.aclose()
        return int(answer["timings"]["prompt_n"])

    def system() -> str:
        nonce = uuid.uuid4().hex
        return f"You are assistant {nonce}. Answer in one short sentence, plainly and politely."

    cold = await tokens_read(system(), read_ahead=None)
    warm = await tokens_read(system(), read_ahead="")
    partial = await tokens_read(system(), read_ahead=" ".join(question.split()[:4]))
    assert partial < warm < cold / 2, (partial, warm, cold)


async def test_a_session_has_the_llm_read_ahead_of_each_turn(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer
) -> None:
    """With `llm_prefill`: the system prompt when the session starts, then at each partial
    transcript the request the turn will make, as far as the user's words go so far: the
    same conversation before them (the first turn as heard, in the second). Without: none."""
    for prefill in (True, False):
        app = runtime_host.start(llm_url=scripted_llm.url, llm_prefill=prefill)
        script = scripted_llm.script
        prefills_before, bodies_before = len(script.prefills), len(script.bodies)
        peer = Peer(app.url)
        try:
            await peer.connect()
            for question in LONG_QUESTIONS:
                await peer.agent.wait_voiced_after(await turn(peer, question), 10)
        finally:
            await peer.close()
            runtime_host.stop(app)
        prefills = script.prefills[prefills_before:]
        if not prefill:
            assert prefills == []
            continue
        system_prompt = app.app.state.settings.system_prompt
        assert prefills[0]["messages"] == [{"role": "system", "content": system_prompt}]
        assert all(body["max_tokens"] == 1 for body in prefills)
        partials = [
            e["text"] for _, e in peer.events if e["type"] == "transcript" and not e["final"]
        ]
        assert len(partials) >= 2, partials  # at least one a question
        read_ahead = [body["messages"] for body in prefills[1:]]
        assert [m[-1] for m in read_ahead] == [{"role": "user", "content": p} for p in partials]
        last_request = script.bodies[bodies_before:][-1]["messages"]
        assert len(last_request) == 4  # the system prompt, the first turn, the question
        assert read_ahead[-1][:-1] == last_request[:-1]


def test_a_slot_pool_lends_its_lowest_free_slot_and_none_once_all_are_out() -> None:
    pool = SlotPool(2)
    assert [pool.take(), pool.take(), pool.take()] == [0, 1, None]
    pool.give_back(0)
    pool.give_back(None)  # a session that had none
    assert (pool.lent, pool.take()) == (1, 0)
    pool.give_back(1)
    with pytest.raises(ValueError, match="slot 1 is not lent out"):
        pool.give_back(1)
    with pytest.raises(ValueError, match="slot 5 is not lent out"):
        pool.give_back(5)
    assert SlotPool(0).take() is None


async def test_a_slot_is_sent_only_when_given(scripted_llm: ScriptedLLMServer) -> None:
    client = ChatClient(scripted_llm.url, "m")
    try:
        assert [d async for d in client.stream(QUESTION, slot=3)]
        assert scripted_llm.script.bodies[-1]["id_slot"] == 3
        await client.prefill(QUESTION, slot=2)
        assert scripted_llm.script.prefills[-1]["id_slot"] == 2
        assert [d async for d in client.stream(QUESTION)]
        assert "id_slot" not in scripted_llm.script.bodies[-1]
    finally:
        await client.aclose()


async def test_a_sessions_slot_keeps_its_conversation_while_another_session_asks(
    llm_url: str,
) -> None:
    """Against llama.cpp as `LLMServer` starts it: a request naming its session's slot reads
    only what its conversation added since its last request, though another session asked in
    between. (llama-server's default moves an idle slot to its RAM cache and clears it when a
    request starts, and a named slot is not restored from there: every turn read it all.)"""
    client = ChatClient(llm_url, LLM_MODEL_NAME, max_tokens=8)
    conversations = {
        slot: [
            {"role": "system", "content": f"You are assistant {uuid.uuid4().hex}. Be brief."},
            {"role": "user", "content": question},
        ]
        for slot, question in ((2, "Name a river in Europe."), (3, "Name a kind of tree."))
    }
    read: dict[int, tuple[int, int]] = {}
    try:
        for slot, messages in conversations.items():
            said = "".join([d async for d in client.stream(messages, slot=slot)])
            messages += [
                {"role": "assistant", "content": said},
                {"role": "user", "content": "And another one?"},
            ]
        async with httpx.AsyncClient(base_url=llm_url, timeout=30) as http:
            for slot, messages in conversations.items():
                body = {"messages": messages, "max_tokens": 1, "id_slot": slot}
                answer = (await http.post("/chat/completions", json=body)).json()
                read[slot] = (answer["timings"]["prompt_n"], answer["usage"]["prompt_tokens"])
    finally:
        await client.aclose()
    for slot, (new, whole) in read.items():
        assert new < whole / 2, (slot, new, whole)


async def test_each_session_keeps_its_own_llm_slot_until_it_ends(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer
) -> None:
    app = runtime_host.start(llm_url=scripted_llm.url, llm_slots=2)
    before = len(scripted_llm.script.prefills)
    peers = [Peer(app.url) for _ in range(3)]
    try:
        for peer in peers:
            await peer.connect()
        slots = [body.get("id_slot") for body in await prefills(scripted_llm, before, 3)]
        assert sorted(slots, key=lambda slot: (slot is None, slot)) == [0, 1, None]

        await peers[1].agent.wait_voiced_after(await turn(peers[1], LONG_QUESTIONS[0]), 10)
        assert scripted_llm.script.bodies[-1]["id_slot"] == 1
        read_ahead = scripted_llm.script.prefills[before + 3 :]
        assert read_ahead and {body["id_slot"] for body in read_ahead} == {1}

        await peers[0].close()  # its slot is lent again
        peers[0] = Peer(app.url)
        await peers[0].connect()
        (again,) = await prefills(scripted_llm, before + 3 + len(read_ahead), 1)
        assert again["id_slot"] == 0
    finally:
        for peer in peers:
            await peer.close()
        runtime_host.stop(app)
