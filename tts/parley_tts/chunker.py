"""Split a token stream into speakable pieces: whole sentences, and for the first piece a
clause, so the first audio does not wait for a long sentence to finish."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s|\n+")
_CLAUSE_END = re.compile(r"[,;:—]\s")
_MARKUP = re.compile(r"[*_#`~]+|\[(.*?)\]\(.*?\)")


def speakable(text: str) -> str:
    """Strip markdown a small model likes to emit; it should not be read aloud."""
    return " ".join(_MARKUP.sub(lambda m: m.group(1) or "", text).split())


class SentenceChunker:
    def __init__(self, min_chars: int = 12, first_clause_chars: int = 40) -> None:
        self.min_chars = min_chars
        self.first_clause_chars = first_clause_chars
        self._buffer = ""
        self._emitted = 0

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        pieces = []
        while piece := self._cut():
            pieces.append(piece)
        return pieces

    def flush(self) -> list[str]:
        rest, self._buffer = speakable(self._buffer), ""
        return [rest] if rest else []

    def _cut(self) -> str | None:
        end = None
        for match in _SENTENCE_END.finditer(self._buffer):
            if match.end() >= self.min_chars:
                end = match.end()
                break
        if end is None and self._emitted == 0 and len(self._buffer) >= self.first_clause_chars:
            clause = _CLAUSE_END.search(self._buffer, self.min_chars)
            end = clause.end() if clause else None
        if end is None:
            return None
        piece, self._buffer = speakable(self._buffer[:end]), self._buffer[end:]
        if not piece:
            return self._cut()
        self._emitted += 1
        return piece
