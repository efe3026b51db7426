"""Which of llama-server's slots each session keeps (`RuntimeSettings.llm_slots`).

llama-server holds one conversation's KV cache per slot and gives a request the idle slot
whose cache shares most of its prompt. A session whose own slot is still busy (a dropped
speculation or an interrupted answer it has not yet noticed) takes another session's slot, and
both conversations must then be read again: about a second on 2 cores, on that session's next
turn (docs/benchmarks.md, runs 16–30). A request that names its session's slot (`id_slot`)
waits for that slot instead. vLLM has no slots: its prefix cache is shared by every request.
"""

from __future__ import annotations


class SlotPool:
    """The LLM server's slots `0 … size-1`, lent one per session, lowest free first. With none
    free (more sessions than slots, or `size` 0) a session gets None: the server chooses."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = set(range(size))

    def take(self) -> int | None:
        if not self._free:
            return None
        slot = min(self._free)
        self._free.remove(slot)
        return slot

    def give_back(self, slot: int | None) -> None:
        if slot is None:
            return
        if not 0 <= slot < self.size or slot in self._free:
            raise ValueError(f"slot {slot} is not lent out (pool of {self.size})")
        self._free.add(slot)

    @property
    def lent(self) -> int:
        return self.size - len(self._free)
