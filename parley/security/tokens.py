"""Bearer tokens: the configured sets, compared in constant time, and per-session secrets.

A set comes from a list (`PARLEY_API_TOKENS='["..."]'`) and/or a file of one token a line (a
mounted Secret). The file is read again when it changes (a rotated Secret reaches a running pod
without a restart); while it cannot be read the last tokens read stay in force. A set with a
file configured counts as configured even when the file holds no token: then no token is valid,
which is safer than falling back to the defaults of an unconfigured set.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def read_token_file(path: str) -> tuple[str, ...]:
    """The tokens in a file: one a line; blank lines and `#` comments skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return tuple(t for t in (line.strip() for line in lines) if t and not t.startswith("#"))


class TokenSet:
    def __init__(self, tokens: Iterable[str] = (), file: str = "") -> None:
        self._listed = tuple(t for t in tokens if t)
        self._file = file
        self._stamp: tuple[int, int] | None = None
        self._from_file: tuple[str, ...] = ()
        if file:
            self._from_file = read_token_file(file)  # unreadable at start: fail loudly
            self._stamp = _stamp(file)

    @property
    def configured(self) -> bool:
        return bool(self._listed or self._file)

    def tokens(self) -> tuple[str, ...]:
        return self._listed + self._file_tokens()

    def matches(self, presented: str | None) -> bool:
        """Whether `presented` is one of the tokens; every token is compared, each in
        constant time, so the answer's timing tells nothing about the tokens."""
        if not presented:
            return False
        candidate = presented.encode()
        found = False
        for token in self.tokens():
            found |= hmac.compare_digest(candidate, token.encode())
        return found

    def _file_tokens(self) -> tuple[str, ...]:
        if not self._file:
            return ()
        try:
            stamp = _stamp(self._file)
            if stamp != self._stamp:
                self._from_file, self._stamp = read_token_file(self._file), stamp
                log.info("read %d token(s) from %s", len(self._from_file), self._file)
        except OSError as exc:
            log.warning("cannot read the tokens in %s (%s); keeping the last ones", self._file, exc)
        return self._from_file


def _stamp(path: str) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_mtime_ns, status.st_size


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def new_secret() -> str:
    """A secret a client gets once and shows back (a session's): 256 random bits."""
    return secrets.token_urlsafe(32)


def same_secret(presented: str | None, secret: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), secret.encode())
