"""Does a transcript sound like a finished turn? A text-only end-of-turn judge.

The silence timer alone must wait long enough for people who pause mid-sentence (650-700 ms
here). But the speculative path already has the transcript of the utterance a few hundred
milliseconds into the pause, and most finished turns say so in their words: a question mark,
a full stop after a complete thought. Most unfinished ones say so too: they stop on "and",
"the", "because", a filler, or Whisper's trailing ellipsis. When the words say the turn is
finished, the conversation commits at a short silence (`early_endpoint_ms`); otherwise it
waits for the full endpoint as before. A wrong "finished" costs a cut-off, which the
conversation notices (speech right after the commit) and answers by waiting longer next time.
"""

from __future__ import annotations

import re

#: Words no finished sentence ends on: articles, conjunctions, possessives, fillers.
HANGING = frozenset({
    "a", "an", "the", "and", "or", "but", "nor", "because", "if", "than",
    "my", "your", "our", "their", "um", "uh", "er", "erm", "hmm"
})  # fmt: skip
#: Words a statement rarely ends on, though a question may ("Where are you from?").
PREPOSITIONS = frozenset({
    "of", "to", "in", "on", "at", "by", "for", "from", "with", "about", "into", "onto",
    "over", "under", "after", "before", "until", "like"
})  # fmt: skip

_WORD = re.compile(r"[a-z']+")


def sounds_finished(transcript: str) -> bool:
    """True when `transcript` ends like a finished turn: terminal punctuation (`.`, `?`,
    `!`) after at least one word, no trailing ellipsis, and a last word that does not leave
    the sentence hanging (for a statement, no preposition either)."""
    text = transcript.strip()
    if not text or text[-1] not in ".?!" or text.endswith(("..", "…")):
        return False
    words = _WORD.findall(text.lower())
    if not words or words[-1] in HANGING:
        return False
    return text[-1] == "?" or words[-1] not in PREPOSITIONS
