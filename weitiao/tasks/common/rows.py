"""What the encoded rows of every text task share."""

from __future__ import annotations


class TokenRows:
    """Rows of token ids (the dataclass's `input_ids`): their lengths and their count, which batching
    and scoring read. A task's encoded class adds what its rows mean (`examples`, `subset`)."""

    input_ids: list[list[int]]

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)
