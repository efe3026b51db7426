"""Conversation history under a token budget.

Tokens are estimated (about four characters per token, plus a few per message) rather than
counted with the server's tokenizer: the runtime talks to any OpenAI-compatible server and
the budget only has to be safe, not exact. Once the history passes the rollover mark, the
oldest turns are dropped; the system prompt always stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_PER_MESSAGE = 4


def estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4 + _PER_MESSAGE


@dataclass
class ChatHistory:
    system_prompt: str
    budget_tokens: int = 8192
    rollover_tokens: int = 7500
    turns: list[tuple[str, str]] = field(default_factory=list)

    def messages(self, user_text: str) -> list[dict[str, str]]:
        """The request for a new user turn: system prompt, as much history as fits, the turn."""
        fixed = estimate_tokens(self.system_prompt) + estimate_tokens(user_text)
        kept: list[tuple[str, str]] = []
        used = fixed
        for user, assistant in reversed(self.turns):
            cost = estimate_tokens(user) + estimate_tokens(assistant)
            if used + cost > self.budget_tokens:
                break
            kept.insert(0, (user, assistant))
            used += cost
        messages = [{"role": "system", "content": self.system_prompt}]
        for user, assistant in kept:
            messages.append({"role": "user", "content": user})
            messages.append({"role": "assistant", "content": assistant})
        messages.append({"role": "user", "content": user_text})
        return messages

    def add_turn(self, user_text: str, heard_text: str) -> None:
        """Record a finished turn with only what the user actually heard of the answer."""
        self.turns.append((user_text, heard_text))
        while len(self.turns) > 1 and self.tokens() > self.rollover_tokens:
            self.turns.pop(0)

    def tokens(self) -> int:
        return estimate_tokens(self.system_prompt) + sum(
            estimate_tokens(u) + estimate_tokens(a) for u, a in self.turns
        )
