"""The LLM side: a streaming OpenAI-compatible chat client and the conversation history."""

from parley_runtime.llm.client import ChatClient, LLMError
from parley_runtime.llm.history import ChatHistory, estimate_tokens
from parley_runtime.llm.slots import SlotPool

__all__ = ["ChatClient", "ChatHistory", "LLMError", "SlotPool", "estimate_tokens"]
