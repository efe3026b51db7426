"""The runtime's OpenAI-compatible chat client: what it asks the server for."""

from __future__ import annotations

from parley.local_llm import LLM_MODEL_NAME
from parley_runtime.llm import ChatClient
from tests.support.scripted_llm import ScriptedLLMServer

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


async def test_the_same_seed_samples_the_same_answer(llm_url: str) -> None:
    """What `parley bench compare` relies on to ask both stacks the same conversation: hot
    sampling, so that without the seed the answers would differ."""
    answers = {
        await answer(ChatClient(llm_url, LLM_MODEL_NAME, temperature=1.5, max_tokens=24, seed=3))
        for _ in range(3)
    }
    assert len(answers) == 1 and answers.pop().strip()
