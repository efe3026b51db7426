"""The runtime's OpenAI-compatible chat client: what it asks the server for, and the
session's prefill of its system prompt."""

from __future__ import annotations

import re
import uuid

import httpx

from parley.local_llm import LLM_MODEL_NAME
from parley_bench.peer import Peer
from parley_runtime.config import DEFAULT_SYSTEM_PROMPT, RuntimeSettings
from parley_runtime.llm import ChatClient
from tests.support.runtime_host import RuntimeHost
from tests.support.scripted_llm import ScriptedLLMServer
from tests.support.talk import turn

QUESTION = [{"role": "user", "content": "Name an animal that lives in the sea."}]


async def answer(client: ChatClient) -> str:
    try:
        return "".join([delta async for delta in client.stream(QUESTION)])
    finally:
        await client.aclose()


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


async def test_a_prefill_spares_the_first_question_the_system_prompt(llm_url: str) -> None:
    """Against llama.cpp: the question after a prefill reads only what follows the system
    prompt; the same question after a system prompt the server never saw reads it all."""

    async def tokens_read(system: str, prefill: bool) -> int:
        messages = [{"role": "system", "content": system}]
        client = ChatClient(llm_url, LLM_MODEL_NAME)
        try:
            if prefill:
                await client.prefill(messages)
            async with httpx.AsyncClient(base_url=llm_url, timeout=30) as http:
                body = {"messages": [*messages, *QUESTION], "max_tokens": 1}
                answer = (await http.post("/chat/completions", json=body)).json()
        finally:
            await client.aclose()
        return int(answer["timings"]["prompt_n"])

    def system(nonce: str) -> str:
        return f"You are assistant {nonce}. Answer in one short sentence, plainly and politely."

    cold = await tokens_read(system(uuid.uuid4().hex), prefill=False)
    warm = await tokens_read(system(uuid.uuid4().hex), prefill=True)
    assert warm < cold / 2, (warm, cold)


async def test_a_session_prefills_its_system_prompt_when_it_starts(
    runtime_host: RuntimeHost, scripted_llm: ScriptedLLMServer
) -> None:
    for prefill in (True, False):
        app = runtime_host.start(llm_url=scripted_llm.url, llm_prefill=prefill)
        before = len(scripted_llm.script.prefills)
        peer = Peer(app.url)
        try:
            await peer.connect()
            await peer.agent.wait_voiced_after(await turn(peer), 10)
        finally:
            await peer.close()
            runtime_host.stop(app)
        prefills = scripted_llm.script.prefills[before:]
        if not prefill:
            assert prefills == []
            continue
        system_prompt = app.app.state.settings.system_prompt
        (body,) = prefills
        assert body["messages"] == [{"role": "system", "content": system_prompt}]
        assert body["max_tokens"] == 1
