"""Split a token stream into speakable pieces: whole sentences, and a shorter first piece, so
the first audio does not wait for a long sentence to be written and synthesized.

The first piece ends at the earliest of a sentence end, a clause end (a comma, a semicolon,
...) or, when `first_words` is set, the end of its `first_words`-th word; none of them before
`min_chars`. A piece cut at a word ends mid-phrase (`ends_mid_phrase`): the voice reads it
without a closing intonation, and the caller closes the seam to the next piece. Pieces depend
only on the text, not on how the stream split it into deltas.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s|\n+")
_CLAUSE_END = re.compile(r"[,;:—]\s")
_WORD = re.compile(r"\s*\S+\s+")
_CLOSING = tuple(".!?…,;:—\"')]")
_MARKUP = re.compile(r"[*_#`~]+|\[(.*?)\]\(.*?\)")


def speakable(text: str) -> str:
    """Strip markdown a small model likes to emit; it should not be read aloud."""
    return " ".join(_MARKUP.sub(lambda m: m.group(1) or "", text).split())


def ends_mid_phrase(piece: str) -> bool:
    """The piece was cut between two words, not at punctuation."""
    return not piece.endswith(_CLOSING)


class SentenceChunker:
    def __init__(self, min_chars: int = 12, first_words: int = 0) -> None:
        self.min_chars = min_chars
        self.first_words = first_words
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
        ends = [self._sentence_end()]
        if self._emitted == 0:
            ends += [self._clause_end(), self._word_end()]
        found = [end for end in ends if end is not None]
        if not found:
            return None
        end = min(found)
        piece, self._buffer = speakable(self._buffer[:end]), self._buffer[end:]
        if not piece:
            return self._cut()
        self._emitted += 1
        return piece

    def _sentence_end(self) -> int | None:
        for match in _SENTENCE_END.finditer(self._buffer):
            if match.end() >= self.min_chars:
                return match.end()
        return None

    def _clause_end(self) -> int | None:
        clause = _CLAUSE_END.search(self._buffer, self.min_chars)
        return clause.end() if clause else None

    def _word_end(self) -> int | None:
        """The end of the `first_words`-th word, once the next one has begun."""
        if self.first_words <= 0:
            return None
        for count, word in enumerate(_WORD.finditer(self._buffer), start=1):
            if count >= self.first_words and word.end() >= self.min_chars:
                return word.end()
        return None
