"""The agent: one `Conversation` per session, one `Reply` per answer."""

from parley_runtime.agent.conversation import Conversation, Services
from parley_runtime.agent.reply import Reply, heard_text

__all__ = ["Conversation", "Reply", "Services", "heard_text"]
